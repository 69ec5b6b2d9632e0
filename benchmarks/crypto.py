"""Crypto costs: sealing sync envelopes, opening them, verifying bundles.

* ``seal.<suite>`` / ``open.<suite>``: ``Sealer.seal`` and ``Opener.open`` of
  one 16-feature contribution, against ``raw_encrypt.<suite>`` /
  ``raw_decrypt.<suite>``: ``cryptography``'s ``hpke.Suite`` on a payload of
  the same size with an ``info`` of the same size (the recipe's overhead is the
  difference: header, encoding, checks, decoding).
* ``contribution``: building (validating) a ``Contribution``.
* ``verify.ed25519``: one raw Ed25519 verification of the signed manifest;
  ``verify.bundle``: the whole bundle check from memory (signature, manifest
  parse, digests); ``open.runtime``: ``PersonaRuntime.open`` (the check plus
  the onnxruntime session).
"""

from __future__ import annotations

from datetime import UTC, datetime
from functools import partial

from cryptography.hazmat.primitives import hpke
from cryptography.hazmat.primitives.asymmetric import mlkem, x25519

from edgepersona.sdk import Contribution, PersonaRuntime, Sealer, SealSuite
from edgepersona.sdk.protocol.bundle import bundle_source, verify_bundle
from edgepersona.sdk.protocol.envelope import Opener, generate_collector_keypair
from edgepersona.sdk.protocol.signing import MANIFEST_CONTEXT, SignatureFile
from edgepersona.sdk.protocol.trust import TrustedKeys

from ._fixtures import bench_bundle
from ._measure import Call, RunConfig, SuiteResult, time_interleaved

__all__ = ["run"]

Private = x25519.X25519PrivateKey | hpke.MLKEM768X25519PrivateKey
Public = x25519.X25519PublicKey | hpke.MLKEM768X25519PublicKey

APP_ID = "bench-app"
_HEADER = 12  # bytes of envelope header
_TAG = 16  # bytes of AEAD tag
_ENC = {SealSuite.X25519: 32, SealSuite.MLKEM768_X25519: 1120}  # bytes of HPKE encapsulated key
_INFO_LABEL = len(b"edgepersona/sync-envelope\x00") + 1 + len(APP_ID) + _HEADER  # bytes of info


def _contribution(features: tuple[float, ...]) -> Contribution:
    """A realistic contribution: 64-hex pseudonym, 16 features."""
    return Contribution(pseudonym="ab" * 32, pseudonym_epoch=671, sequence=12_345, day_bucket=20_100,
                        model_version=1, persona_index=3, features=features)


def _raw_keys(suite: SealSuite) -> tuple[Private, Public, hpke.Suite]:
    """A fresh recipient key pair and the matching raw HPKE suite."""
    private: Private
    if suite is SealSuite.X25519:
        private = x25519.X25519PrivateKey.generate()
        kem = hpke.KEM.X25519
    else:
        private = hpke.MLKEM768X25519PrivateKey(mlkem.MLKEM768PrivateKey.generate(),
                                                x25519.X25519PrivateKey.generate())
        kem = hpke.KEM.MLKEM768_X25519
    raw = hpke.Suite(kem, hpke.KDF.HKDF_SHA256, hpke.AEAD.CHACHA20_POLY1305)
    return private, private.public_key(), raw


def run(cfg: RunConfig) -> SuiteResult:
    """Seal/open per envelope against raw HPKE; Ed25519 and bundle verification."""
    result = SuiteResult("crypto")
    bundle = bench_bundle(cfg)
    features = tuple(float(v) for v in bundle.rows[0])
    contribution = _contribution(features)
    cases: dict[str, Call] = {"contribution": lambda: _contribution(features)}
    for suite in (SealSuite.X25519, SealSuite.MLKEM768_X25519):
        tag = suite.name.lower()
        private_file, public_file = generate_collector_keypair(suite)
        sealer, opener = Sealer(public_file, app_id=APP_ID), Opener(private_file)
        envelope = sealer.seal(contribution)
        payload_size = len(envelope) - _HEADER - _ENC[suite] - _TAG
        result.figures[f"envelope_bytes.{tag}"] = len(envelope)
        payload, info = b"\x01" * payload_size, b"\x02" * _INFO_LABEL
        private, public, raw = _raw_keys(suite)
        sealed = raw.encrypt(payload, public, info=info)
        cases[f"seal.{tag}"] = partial(sealer.seal, contribution)
        cases[f"raw_encrypt.{tag}"] = partial(raw.encrypt, payload, public, info=info)
        cases[f"open.{tag}"] = partial(opener.open, envelope, app_id=APP_ID)
        cases[f"raw_decrypt.{tag}"] = partial(raw.decrypt, sealed, private, info=info)
    n = cfg.pick(100, 5_000)
    for name, samples in time_interleaved(cases, n, block=cfg.pick(50, 250), warmup=20).items():
        result.add(name, samples, _label(name))
    for tag in ("x25519", "mlkem768_x25519"):
        seal = result.ratio(f"seal.{tag}", f"raw_encrypt.{tag}")
        opened = result.ratio(f"open.{tag}", f"raw_decrypt.{tag}")
        result.figures[f"ratio_median.seal_over_raw.{tag}"] = round(seal, 3)
        result.figures[f"ratio_median.open_over_raw.{tag}"] = round(opened, 3)
    _verification(cfg, result)
    return result


def _verification(cfg: RunConfig, result: SuiteResult) -> None:
    """Ed25519 verify of the manifest vs the whole bundle check vs opening a runtime."""
    bundle = bench_bundle(cfg)
    trusted = TrustedKeys([bundle.public_pem])
    manifest = bundle.files["manifest.json"]
    signature = SignatureFile.from_bytes(bundle.files["signature"])
    public = bundle.private.public_key()
    message = MANIFEST_CONTEXT + manifest
    now = datetime.now(UTC)
    cases: dict[str, Call] = {
        "verify.ed25519": lambda: public.verify(signature.signature, message),
        "verify.bundle": lambda: verify_bundle(bundle_source(bundle.files), trusted, now=now),
        "open.runtime": lambda: PersonaRuntime.open(bundle.files, trusted_keys=[bundle.public_pem]),
    }
    counts = {"verify.ed25519": cfg.pick(200, 3_000), "verify.bundle": cfg.pick(50, 1_000),
              "open.runtime": cfg.pick(10, 200)}
    for name, samples in time_interleaved(cases, counts, block=cfg.pick(50, 500), warmup=5).items():
        result.add(name, samples, _label(name))
    result.figures["ratio_median.ed25519_share_of_bundle_verify"] = round(
        result.ratio("verify.ed25519", "verify.bundle"), 3)
    result.figures["ratio_median.ed25519_share_of_runtime_open"] = round(
        result.ratio("verify.ed25519", "open.runtime"), 4)
    result.figures["manifest_bytes"] = len(manifest)


def _label(name: str) -> str:
    """Words for a measurement key."""
    kind, _, suite = name.partition(".")
    return {
        "contribution": "Contribution(...) construction and validation, 16 features",
        "seal": f"Sealer.seal, {suite}",
        "open": f"Opener.open, {suite}" if suite != "runtime" else "PersonaRuntime.open from memory",
        "raw_encrypt": f"hpke.Suite.encrypt, same sizes, {suite}",
        "raw_decrypt": f"hpke.Suite.decrypt, same sizes, {suite}",
        "verify": "Ed25519PublicKey.verify of the manifest" if suite == "ed25519"
        else "verify_bundle from memory (signature, manifest parse, digests)",
    }[kind]
