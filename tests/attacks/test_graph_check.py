"""The SDK refuses any graph with external data before onnxruntime sees a byte of it.

onnxruntime resolves external tensor data of a graph loaded from bytes against
the working directory (and older releases let ``..`` and absolute paths out),
so the SDK walks the protobuf itself: every place a tensor can sit is covered,
and a differential property against the ``onnx`` parser checks that no mutated
graph the parser reads as "uses external data" gets past the walk.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import onnx
import onnxruntime
import pytest
from hypothesis import given, settings, strategies as st
from onnx.external_data_helper import _get_all_tensors, uses_external_data

from edgepersona.sdk import ModelIntegrityError
from edgepersona.sdk.protocol.assign import OnnxAssigner, refuse_external_data
from edgepersona.sdk.protocol.manifest import parse_manifest

from . import graphs

LOCATIONS = (graphs.TRAVERSAL, "/etc/passwd", "weights.bin", "*/_ORT_MEM_ADDR_/*")


@pytest.fixture(scope="module")
def model_bytes(bundle_files: Mapping[str, bytes]) -> bytes:
    return bundle_files["model.onnx"]


def test_the_exported_graph_passes(model_bytes: bytes) -> None:
    refuse_external_data(model_bytes)


@pytest.mark.parametrize("location", LOCATIONS)
@pytest.mark.parametrize("place", sorted(graphs.EVERY_PLACE))
def test_external_data_anywhere_is_refused_before_onnxruntime(
        place: str, location: str, model_bytes: bytes, bundle_files: Mapping[str, bytes],
        monkeypatch: pytest.MonkeyPatch) -> None:
    hostile = graphs.EVERY_PLACE[place](model_bytes, location)
    sessions: list[Any] = []
    monkeypatch.setattr(onnxruntime, "InferenceSession", lambda *a, **k: sessions.append(a))
    params = parse_manifest(bundle_files["manifest.json"]).assigner
    with pytest.raises(ModelIntegrityError, match="external data"):
        OnnxAssigner(hostile, params)
    assert sessions == []


def test_protobuf_groups_are_refused() -> None:
    # field 7 (graph) as a start-group tag: valid protobuf, never written by an ONNX exporter
    with pytest.raises(ModelIntegrityError):
        refuse_external_data(bytes([7 << 3 | 3, 7 << 3 | 4]))


@pytest.mark.parametrize("garbage", [b"", b"\xff" * 11, b"\x08", b"\x3a\x05ab", b"\x0f",
                                     b"\x08\x07garbage" * 50])
def test_bytes_that_are_not_protobuf_are_left_to_onnxruntime(garbage: bytes) -> None:
    refuse_external_data(garbage)  # onnxruntime refuses them with its own message


def _external_per_onnx(data: bytes) -> bool | None:
    """Whether the onnx parser reads any tensor as external; None if it cannot parse."""
    try:
        model = onnx.load_from_string(data)
    except Exception:  # the protobuf runtime raises DecodeError and others
        return None
    tensors = list(_get_all_tensors(model))
    tensors += [s.values for s in model.graph.sparse_initializer]
    return any(uses_external_data(t) or t.external_data for t in tensors)


@settings(max_examples=150)
@given(data=st.data(), place=st.sampled_from(sorted(graphs.EVERY_PLACE)))
def test_no_mutated_graph_the_onnx_parser_reads_as_external_passes_the_walk(
        data: st.DataObject, place: str, model_bytes: bytes) -> None:
    base = bytearray(data.draw(st.sampled_from(
        [model_bytes, graphs.EVERY_PLACE[place](model_bytes, graphs.TRAVERSAL)])))
    for _ in range(data.draw(st.integers(0, 4))):
        where = data.draw(st.integers(0, len(base) - 1))
        base[where] = data.draw(st.integers(0, 255))
    mutated = bytes(base)
    try:
        refuse_external_data(mutated)
        refused = False
    except ModelIntegrityError:
        refused = True
    if _external_per_onnx(mutated):
        assert refused
