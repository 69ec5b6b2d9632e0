"""Coverage-guided fuzzing of the sync envelope: open, payload decoding and key files.

Run: ``python fuzz/fuzz_envelope.py -atheris_runs=100000`` (or ``-max_total_time=120``).
Any exception other than the declared ones (InvalidEnvelope, InputError for
key files) is a crash; so is an envelope that opens to anything but what was
sealed.
"""

from __future__ import annotations

import sys

import atheris
from _harness import mutated

with atheris.instrument_imports(include=["edgepersona"]):
    from edgepersona.sdk import Contribution, InputError, InvalidEnvelope, Sealer, SealSuite
    from edgepersona.sdk.protocol.envelope import (
        Opener,
        decode_payload,
        encode_payload,
        generate_collector_keypair,
    )

APP_ID = "fuzz-app"
ORIGINAL = Contribution(pseudonym="ab" * 16, pseudonym_epoch=3, sequence=7, day_bucket=20_000,
                        model_version=2, persona_index=1, features=(0.5, 1.5, -2.0))
PAYLOAD = encode_payload(ORIGINAL)
SUITES = []
for _suite in SealSuite:
    _private, _public = generate_collector_keypair(_suite)
    SUITES.append((Opener(_private), Sealer(_public, app_id=APP_ID).seal(ORIGINAL), _private, _public))


def test_one_input(data: bytes) -> None:
    """One fuzz case: a target chosen by the first byte, its input mutated from a valid one."""
    fdp = atheris.FuzzedDataProvider(data)
    target = fdp.ConsumeIntInRange(0, 3)
    opener, envelope, private, public = SUITES[fdp.ConsumeIntInRange(0, len(SUITES) - 1)]
    if target == 0:
        try:
            opened = opener.open(mutated(fdp, envelope), app_id=APP_ID, model_versions={2})
        except InvalidEnvelope:
            return
        if opened != ORIGINAL:
            raise AssertionError(f"a mutated envelope opened to something else: {opened!r}")
    elif target == 1:
        try:
            decode_payload(mutated(fdp, PAYLOAD), 2, 1_024)  # the plaintext parser behind the AEAD
        except InvalidEnvelope:
            return
    else:
        key_file = mutated(fdp, public if target == 2 else private)
        try:
            Sealer(key_file, app_id=APP_ID) if target == 2 else Opener(key_file)
        except InputError:
            return


if __name__ == "__main__":
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()
