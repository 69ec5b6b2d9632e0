"""A clean-room implementation of the device contract, written from models/CONFORMANCE.md alone.

It imports nothing from the SDK or the trainer: only the standard library, numpy,
onnxruntime and cryptography (``test_cleanroom.py`` scans the source to keep it
so). Passing every vector in ``models/vectors.json`` is the proof that the
document is enough to write a port.
"""
