"""Inter-process layer: shared-memory rings, doorbells, typed control channels and wire messages.

Everything here imports only the standard library, numpy-free, plus msgspec, so any process
(supervisor, telephony, workers) can import it without pulling in a model library.
"""
