"""The public protocol layer: the contract the device and the server share.

Everything here is pure (bytes, arrays and clocks in; values out) and is what a
port to another language must match (``models/CONFORMANCE.md``)::

    spec        the declarative feature spec (sources, aggregates, windows, bounds, weights)
    fold        folding one event at a time into decayed feature state (device) and the
                helpers the trainer's batch features share with it
    manifest    the signed manifest, its canonical bytes, persona cards
    signing     raw Ed25519 keys, key ids and detached signatures (hazardous)
    rotation    signing-key rotation statements: their format and signatures
    trust       the trusted key set: bundle signatures against it, rotating it, its record
    bundle      bundle verification (signature first, then files, expiry, rollback)
    assign      the assignment maths: onnxruntime and numpy assigners from a verified bundle
    envelope    sealing and opening sync contributions (HPKE)
    payload     a contribution's plaintext layout and its strict decoder
    hpke        the raw HPKE primitives under ``envelope`` (hazardous: use ``envelope``)
    framing     the batch framing of ``POST /v1/sync`` bodies

Both the device recipes (:mod:`edgepersona.sdk`) and the server
(:mod:`edgepersona.trainer`) import these names; nothing here imports either.
Names load lazily on first use, so the device pays only for what it touches.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .assign import (
        INPUT_NAME as INPUT_NAME,
        OUTPUT_NAMES as OUTPUT_NAMES,
        Assigner as Assigner,
        NumpyAssigner as NumpyAssigner,
        OnnxAssigner as OnnxAssigner,
        import_onnxruntime as import_onnxruntime,
        load_assigner as load_assigner,
        model_space as model_space,
        numpy_assign as numpy_assign,
        refuse_external_data as refuse_external_data,
        session_options as session_options,
    )
    from .bundle import (
        MANIFEST_NAME as MANIFEST_NAME,
        MAX_MANIFEST_BYTES as MAX_MANIFEST_BYTES,
        MODEL_NAME as MODEL_NAME,
        SIGNATURE_NAME as SIGNATURE_NAME,
        BundleSource as BundleSource,
        VerifiedBundle as VerifiedBundle,
        bundle_source as bundle_source,
        verify_bundle as verify_bundle,
    )
    from .envelope import (
        Opener as Opener,
        SealConfig as SealConfig,
        Sealer as Sealer,
        SealSuite as SealSuite,
        generate_collector_keypair as generate_collector_keypair,
    )
    from .fold import (
        FoldPlan as FoldPlan,
        FoldState as FoldState,
        PropertyValue as PropertyValue,
        check_event as check_event,
        decay_rate as decay_rate,
        distinct_key as distinct_key,
        numeric_property as numeric_property,
    )
    from .framing import (
        BATCH_MAGIC as BATCH_MAGIC,
        BATCH_VERSION as BATCH_VERSION,
        MAX_SLOT_BYTES as MAX_SLOT_BYTES,
        decode_batch as decode_batch,
        encode_batch as encode_batch,
        is_batch as is_batch,
        read_batch_head as read_batch_head,
    )
    from .manifest import (
        MANIFEST_SCHEMA_VERSION as MANIFEST_SCHEMA_VERSION,
        AssignerParams as AssignerParams,
        FileEntry as FileEntry,
        Manifest as Manifest,
        Metrics as Metrics,
        PersonaCard as PersonaCard,
        Privacy as Privacy,
        Trait as Trait,
        canonical_json as canonical_json,
        parse_manifest as parse_manifest,
    )
    from .payload import (
        Contribution as Contribution,
        day_bucket as day_bucket,
        decode_payload as decode_payload,
        encode_payload as encode_payload,
    )
    from .rotation import (
        MAX_STATEMENT_BYTES as MAX_STATEMENT_BYTES,
        ROTATION_CONTEXT as ROTATION_CONTEXT,
        RotationStatement as RotationStatement,
        build_rotation_statement as build_rotation_statement,
    )
    from .signing import (
        MANIFEST_CONTEXT as MANIFEST_CONTEXT,
        SignatureFile as SignatureFile,
        key_id as key_id,
        load_public_key as load_public_key,
        sign as sign,
    )
    from .spec import (
        AGGREGATES as AGGREGATES,
        SECONDS_PER_DAY as SECONDS_PER_DAY,
        SPEC_SCHEMA_VERSION as SPEC_SCHEMA_VERSION,
        Feature as Feature,
        FeatureSpec as FeatureSpec,
        Window as Window,
        describe_validation_error as describe_validation_error,
        load_spec_json as load_spec_json,
    )
    from .trust import (
        TrustedKeys as TrustedKeys,
        apply_rotation as apply_rotation,
        dump_trust as dump_trust,
        load_trust as load_trust,
    )

# The one table of public names: name -> the module that defines it (loaded on first use).
_EXPORTS: dict[str, tuple[str, ...]] = {
    'assign': (
        'INPUT_NAME',
        'OUTPUT_NAMES',
        'Assigner',
        'NumpyAssigner',
        'OnnxAssigner',
        'import_onnxruntime',
        'load_assigner',
        'model_space',
        'numpy_assign',
        'refuse_external_data',
        'session_options',
    ),
    'bundle': (
        'MANIFEST_NAME',
        'MAX_MANIFEST_BYTES',
        'MODEL_NAME',
        'SIGNATURE_NAME',
        'BundleSource',
        'VerifiedBundle',
        'bundle_source',
        'verify_bundle',
    ),
    'envelope': (
        'Opener',
        'SealConfig',
        'SealSuite',
        'Sealer',
        'generate_collector_keypair',
    ),
    'fold': (
        'FoldPlan',
        'FoldState',
        'PropertyValue',
        'check_event',
        'decay_rate',
        'distinct_key',
        'numeric_property',
    ),
    'framing': (
        'BATCH_MAGIC',
        'BATCH_VERSION',
        'MAX_SLOT_BYTES',
        'decode_batch',
        'encode_batch',
        'is_batch',
        'read_batch_head',
    ),
    'manifest': (
        'MANIFEST_SCHEMA_VERSION',
        'AssignerParams',
        'FileEntry',
        'Manifest',
        'Metrics',
        'PersonaCard',
        'Privacy',
        'Trait',
        'canonical_json',
        'parse_manifest',
    ),
    'payload': (
        'Contribution',
        'day_bucket',
        'decode_payload',
        'encode_payload',
    ),
    'rotation': (
        'MAX_STATEMENT_BYTES',
        'ROTATION_CONTEXT',
        'RotationStatement',
        'build_rotation_statement',
    ),
    'signing': (
        'MANIFEST_CONTEXT',
        'SignatureFile',
        'key_id',
        'load_public_key',
        'sign',
    ),
    'spec': (
        'AGGREGATES',
        'SECONDS_PER_DAY',
        'SPEC_SCHEMA_VERSION',
        'Feature',
        'FeatureSpec',
        'Window',
        'describe_validation_error',
        'load_spec_json',
    ),
    'trust': (
        'TrustedKeys',
        'apply_rotation',
        'dump_trust',
        'load_trust',
    ),
}
_LAZY = {name: module for module, names in _EXPORTS.items() for name in names}


def __getattr__(name: str) -> Any:
    """Import the module behind a public name on first access (PEP 562)."""
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return list(__all__)


__all__ = sorted([
    *_LAZY,
])
