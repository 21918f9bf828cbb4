"""Model worker processes (STT, LLM, TTS); each imports its model library lazily, in-process."""
