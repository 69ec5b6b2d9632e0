"""Releases: training, persona cards, ONNX export, signed bundles, refits, keys, the conformance kit."""
