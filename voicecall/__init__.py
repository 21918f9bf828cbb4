"""voicecall: a self-hosted, real-time AI phone agent (supervisor and telephony side)."""

__version__ = "0.1.0"
