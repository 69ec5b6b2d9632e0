"""Attacks on the device's trust in bundles, keys and stored state, as python-tuf tests its client.

``repository.py`` is an in-memory bundle repository that can publish any
version, expiry, signature, key and file set; the tests point a real
``PersonaClient`` at what it serves and check that every attack is refused
with its specific error while the device's trusted state does not move.
"""
