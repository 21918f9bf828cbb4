"""Where call records live: SQLite (one box) or PostgreSQL (several boxes), behind one small seam."""
