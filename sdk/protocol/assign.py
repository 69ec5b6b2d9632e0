"""Assigners: the signed ONNX graph through onnxruntime, or the same maths in numpy.

Both compute, for raw feature rows ``x``::

    z = (log1p?(clip(x, lower, upper)) - center) * scale
    distance_k = sqrt(Σ_j (z_j - c_kj)²)          # a sum of squares: never < 0, never NaN
    persona = argmin_k distance_k
    confidence = 1 - d1 / d2                       # d1 <= d2 the two smallest distances

Confidence is the relative margin between the nearest and the runner-up
centroid: 0 when the two are equally near (a coin flip), approaching 1 at a
centroid. The onnxruntime session uses one intra-op thread with spinning off
(an idle device must not burn CPU) and binds preallocated buffers, so a single
assignment allocates nothing per call.
"""

from __future__ import annotations

import functools
import os
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
import numpy.typing as npt

from edgepersona.sdk.errors import InputError, ModelIntegrityError

if TYPE_CHECKING:
    from edgepersona.sdk.protocol.bundle import VerifiedBundle
    from edgepersona.sdk.protocol.manifest import AssignerParams
    from edgepersona.sdk.protocol.manifest_view import AssignerView

__all__ = [
    "INPUT_NAME",
    "OUTPUT_NAMES",
    "Assigner",
    "NumpyAssigner",
    "OnnxAssigner",
    "import_onnxruntime",
    "load_assigner",
    "model_space",
    "numpy_assign",
    "refuse_external_data",
    "session_options",
]

F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]
INPUT_NAME = "features"
OUTPUT_NAMES = ("persona", "distances", "confidence")
_TINY = 1e-12
_CHUNK = 16_384  # rows per block: bounds the (rows, k, d) temporary
_F32_MAX = 3.0e38  # a little below float32's largest finite value
_F32_MIN = -_F32_MAX


class Assigner(Protocol):
    """What the runtime needs from an assigner."""

    backend: str

    def assign_one(self, row: F64) -> tuple[int, float, tuple[float, ...]]:
        """Assign one validated row; return (index, confidence, distances)."""
        ...

    def assign_many(self, rows: F64) -> tuple[I64, F64, F64]:
        """Assign validated rows; return (indices, confidences, distances)."""
        ...


def model_space(params: AssignerParams | AssignerView, rows: F64) -> F64:
    """Rows clipped to the bounds and transformed: what a device contributes when it syncs.

    Bounded by ``transform(lower)..transform(upper)`` per feature, so the
    sensitivity of a sum over users is known; no raw value leaves the device.

    Args:
        params: the manifest's assigner parameters.
        rows: raw features, shape (n, d), finite.

    Returns:
        ``log1p?(clip(rows, lower, upper))``, shape (n, d).
    """
    out = np.clip(rows, np.asarray(params.lower), np.asarray(params.upper))
    mask = np.asarray(params.log1p, dtype=bool)
    out[:, mask] = np.log1p(out[:, mask])
    return out


def numpy_assign(params: AssignerParams | AssignerView, rows: F64) -> tuple[I64, F64, F64]:
    """The reference maths in float64 (the trainer's predict and the device fallback).

    Args:
        params: the manifest's assigner parameters.
        rows: raw features, shape (n, d), finite.

    Returns:
        (persona indices, confidences, distances of shape (n, k)).
    """
    center, scale = np.asarray(params.center), np.asarray(params.scale)
    centroids = np.asarray(params.centroids)
    distances = np.empty((len(rows), len(centroids)))
    for start in range(0, len(rows), _CHUNK):
        z = (model_space(params, rows[start:start + _CHUNK]) - center) * scale
        distances[start:start + _CHUNK] = np.sqrt(
            ((z[:, None, :] - centroids[None, :, :]) ** 2).sum(axis=2))
    order = np.argsort(distances, axis=1, kind="stable")[:, :2]
    nearest = np.take_along_axis(distances, order, axis=1)
    confidence = 1.0 - nearest[:, 0] / np.maximum(nearest[:, 1], _TINY)
    return order[:, 0].astype(np.int64), np.clip(confidence, 0.0, 1.0), distances


class NumpyAssigner:
    """Pure-numpy assignment from the signed manifest, in preallocated buffers.

    The same maths as :func:`numpy_assign`, one row at a time with every
    ufunc writing into buffers made once, so a call allocates only its result.
    For devices without onnxruntime, and the faster backend for small models.
    """

    backend = "numpy"

    def __init__(self, params: AssignerParams | AssignerView) -> None:
        self._params = params
        self._lower, self._upper = np.asarray(params.lower), np.asarray(params.upper)
        mask = np.asarray(params.log1p, dtype=bool)
        self._log_all, self._log_mask = bool(mask.all()), (mask if mask.any() else None)
        self._center, self._scale = np.asarray(params.center), np.asarray(params.scale)
        self._centroids = np.asarray(params.centroids)
        self._z = np.empty_like(self._center)
        self._diff = np.empty_like(self._centroids)
        self._d2 = np.empty(len(self._centroids))
        self._lock = threading.Lock()

    def assign_one(self, row: F64) -> tuple[int, float, tuple[float, ...]]:
        """Assign one row (see :func:`numpy_assign`); thread-safe."""
        with self._lock:
            z, diff = self._z, self._diff
            np.clip(row, self._lower, self._upper, out=z)
            if self._log_all:
                np.log1p(z, out=z)
            elif self._log_mask is not None:
                np.log1p(z, out=z, where=self._log_mask)
            np.subtract(z, self._center, out=z)
            np.multiply(z, self._scale, out=z)
            np.subtract(z, self._centroids, out=diff)
            np.multiply(diff, diff, out=diff)
            np.sum(diff, axis=1, out=self._d2)
            np.sqrt(self._d2, out=self._d2)
            distances = self._d2.tolist()
        return (*_nearest(distances), tuple(distances))

    def assign_many(self, rows: F64) -> tuple[I64, F64, F64]:
        """Assign many rows (see :func:`numpy_assign`)."""
        return numpy_assign(self._params, rows)


def _nearest(distances: list[float]) -> tuple[int, float]:
    """The first nearest index and ``1 - d1/d2`` clipped to [0, 1], as :func:`numpy_assign`."""
    d1 = min(distances)
    index = distances.index(d1)
    d2 = min(distances[:index] + distances[index + 1:])
    confidence = 1.0 - d1 / max(d2, _TINY)
    return index, min(max(confidence, 0.0), 1.0)


def import_onnxruntime() -> Any:
    """Import onnxruntime with its telemetry off.

    onnxruntime 1.31 otherwise writes a persistent device id and queued
    telemetry events (OS, CPU model, paths) under ``~/.cache/Microsoft`` and the
    temp folder as soon as it is imported. A privacy-first SDK does not let its
    runtime do that; the variable only matters before the first import.

    Returns:
        The ``onnxruntime`` module.

    Raises:
        ImportError: onnxruntime is not installed.
    """
    os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")
    import onnxruntime

    return onnxruntime


def session_options() -> Any:
    """Onnxruntime options for a device: one thread, no spinning, sequential."""
    ort = import_onnxruntime()

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.add_session_config_entry("session.inter_op.allow_spinning", "0")
    options.log_severity_level = 3
    return options


# Where a TensorProto can sit in an ONNX ModelProto: message -> {field number: message}
# (onnx.proto); a "tensor"'s fields 13 and 14 are external_data and data_location.
_TENSOR_PATHS = {
    "model": {7: "graph", 20: "training", 25: "function"},
    "graph": {1: "node", 5: "tensor", 15: "sparse"},
    "training": {1: "graph", 2: "graph"},
    "function": {7: "node", 11: "attribute"},
    "node": {5: "attribute"},
    "attribute": {5: "tensor", 6: "graph", 10: "tensor", 11: "graph", 22: "sparse", 23: "sparse"},
    "sparse": {1: "tensor", 2: "tensor"},
}


def refuse_external_data(model: bytes) -> None:
    """Refuse a graph with any tensor stored outside it, before onnxruntime parses it.

    onnxruntime resolves the external data of a graph loaded from bytes against
    the working directory (releases before early 2026 also let ``..`` and absolute
    paths through), so a signed graph could make the device read files. Bundles are
    self-contained by contract; this walks the protobuf wire format down to every
    tensor (initializers, node attributes, sub-graphs, functions, sparse tensors).
    Bytes that are not protobuf at all are left to onnxruntime, which refuses them.
    """
    external = ModelIntegrityError(
        "the bundle's graph keeps tensor data outside itself (external data); bundles must be"
        " self-contained: re-export it with `edgepersona train`")
    stack, view = [("model", 0, len(model))], memoryview(model)
    try:
        while stack:
            kind, pos, end = stack.pop()
            while pos < end:
                tag, pos = _varint(view, pos)
                field, wire = tag >> 3, tag & 7
                if kind == "tensor" and (field == 13 or (field == 14 and wire != 0)):
                    raise external
                if wire == 0:
                    value, pos = _varint(view, pos)
                    if kind == "tensor" and field == 14 and value != 0:
                        raise external
                elif wire in (1, 5):
                    pos += 8 if wire == 1 else 4
                elif wire == 2:
                    size, pos = _varint(view, pos)
                    child = _TENSOR_PATHS.get(kind, {}).get(field)
                    if child is not None:
                        stack.append((child, pos, pos + size))
                    pos += size
                elif wire in (3, 4):  # groups: valid protobuf, but no ONNX writer emits them
                    raise external
                else:
                    return
                if pos > end:
                    return
    except (ValueError, IndexError):  # an unterminated varint: not protobuf
        return


def _varint(view: memoryview, pos: int) -> tuple[int, int]:
    """One protobuf varint (at most 10 bytes) at ``pos``: (value, next position)."""
    value = 0
    for shift in range(0, 70, 7):
        byte = view[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, pos
    raise ValueError("varint")


class OnnxAssigner:
    """Runs the verified ONNX graph; single rows go through preallocated I/O bindings."""

    backend = "onnxruntime"

    def __init__(self, model_bytes: bytes, params: AssignerParams | AssignerView) -> None:
        """Create the session and check the graph matches the manifest.

        Args:
            model_bytes: the verified graph.
            params: the manifest's assigner parameters (widths and bounds).

        Raises:
            ModelIntegrityError: the graph uses external data, onnxruntime rejects
                it, or its signature (inputs, outputs, widths) differs from the manifest.
        """
        refuse_external_data(model_bytes)
        ort = import_onnxruntime()
        width, k = len(params.lower), len(params.centroids)
        self._lower = np.asarray(params.lower, dtype=np.float64)
        self._upper = np.asarray(params.upper, dtype=np.float64)
        try:
            self._session = ort.InferenceSession(
                model_bytes, sess_options=session_options(), providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime raises several unrelated types
            raise ModelIntegrityError(f"onnxruntime cannot load the bundle's graph: {exc}") from None
        self._check_signature(width, k)
        self._lock = threading.Lock()
        self._row = np.zeros((1, width), dtype=np.float32)
        self._index = np.zeros((1,), dtype=np.int64)
        self._distances = np.zeros((1, k), dtype=np.float32)
        self._confidence = np.zeros((1,), dtype=np.float32)
        self._binding = self._session.io_binding()
        self._binding.bind_ortvalue_input(INPUT_NAME, ort.OrtValue.ortvalue_from_numpy(self._row))
        for name, buffer in zip(OUTPUT_NAMES, (self._index, self._distances, self._confidence),
                                strict=True):
            self._binding.bind_ortvalue_output(name, ort.OrtValue.ortvalue_from_numpy(buffer))
        self._run = _bound_run(self._session, self._binding)

    def _check_signature(self, width: int, k: int) -> None:
        """Refuse a graph whose inputs or outputs do not match what the manifest says."""
        inputs, outputs = self._session.get_inputs(), self._session.get_outputs()
        names = tuple(o.name for o in outputs)
        shape = inputs[0].shape if len(inputs) == 1 else None
        if (len(inputs) != 1 or inputs[0].name != INPUT_NAME or inputs[0].type != "tensor(float)"
                or shape is None or len(shape) != 2 or shape[1] != width
                or names != OUTPUT_NAMES or outputs[1].shape[1] != k):
            raise ModelIntegrityError(
                f"the bundle's graph does not match its manifest (expected input {INPUT_NAME!r}"
                f" float[N,{width}] and outputs {OUTPUT_NAMES} over {k} personas)")

    def assign_one(self, row: F64) -> tuple[int, float, tuple[float, ...]]:
        """Assign one row through the bound buffers (thread-safe)."""
        values = row.tolist()
        if not _F32_MIN < min(values) <= max(values) < _F32_MAX:
            # Beyond float32 (or NaN): clip in float64 first so the cast cannot overflow;
            # the graph clips to the same bounds anyway, so in-range rows skip this.
            row = row.clip(self._lower, self._upper)
        with self._lock:
            self._row[0] = row
            self._run()
            # .item() is int()/float() of element 0 without making a numpy scalar first
            return self._index.item(), self._confidence.item(), tuple(self._distances[0].tolist())

    def assign_many(self, rows: F64) -> tuple[I64, F64, F64]:
        """Assign many rows in one run."""
        index, distances, confidence = self._session.run(
            None, {INPUT_NAME: np.clip(rows, self._lower, self._upper).astype(np.float32)})
        return (np.asarray(index, dtype=np.int64), np.asarray(confidence, dtype=np.float64),
                np.asarray(distances, dtype=np.float64))


def _bound_run(session: Any, binding: Any) -> Callable[[], object]:
    """The session's run on the binding, as directly as onnxruntime allows.

    ``InferenceSession.run_with_iobinding`` checks for WebGPU graph capture on
    every call before it calls the C++ session (about 1 µs, a tenth of a run);
    a CPU session never captures, so call the C++ method with the C++ binding
    when this onnxruntime exposes them, and the public method otherwise.
    """
    c_session, c_binding = getattr(session, "_sess", None), getattr(binding, "_iobinding", None)
    c_run = getattr(c_session, "run_with_iobinding", None)
    if c_run is None or c_binding is None:
        return functools.partial(session.run_with_iobinding, binding)
    return functools.partial(c_run, c_binding, None)


def load_assigner(verified: VerifiedBundle, backend: str = "auto") -> Assigner:
    """Build the assigner for a verified bundle.

    ``fastest`` builds both assigners from the verified bundle (the ONNX graph
    and the manifest's parameters), checks that they give the same persona on
    a few rows spread over the bounds, times both on those rows, interleaved,
    and keeps the one with the lower median (onnxruntime if they disagree, or
    numpy alone without onnxruntime). It costs a few milliseconds at open.

    Args:
        verified: the verified bundle.
        backend: ``onnxruntime``, ``numpy``, ``auto`` (onnxruntime when
            importable) or ``fastest``.

    Returns:
        The assigner.

    Raises:
        InputError: an unknown backend, or ``onnxruntime`` asked for but not installed.
        ModelIntegrityError: the graph does not load or does not match the manifest.
    """
    manifest = verified.view
    if backend not in ("auto", "onnxruntime", "numpy", "fastest"):
        raise InputError(
            f"backend must be 'auto', 'onnxruntime', 'numpy' or 'fastest', got {backend!r}")
    if backend != "numpy":
        try:
            import_onnxruntime()
        except ImportError:
            if backend == "onnxruntime":
                raise InputError("backend 'onnxruntime' requested but onnxruntime is not"
                                 " installed; use backend='numpy'") from None
            backend = "numpy"
    if backend == "numpy":
        return NumpyAssigner(manifest.assigner)
    graph = OnnxAssigner(verified.model_bytes, manifest.assigner)
    return _faster(graph, NumpyAssigner(manifest.assigner), manifest.assigner) \
        if backend == "fastest" else graph


def _faster(graph: Assigner, numpy: Assigner, params: AssignerParams | AssignerView,
            rounds: int = 64) -> Assigner:
    """Of two verified assigners that agree, the one with the lower median time per row."""
    lower, upper = np.asarray(params.lower), np.asarray(params.upper)
    rows = [lower + (upper - lower) * f for f in np.linspace(0.0, 1.0, 8)]
    if any(graph.assign_one(r)[0] != numpy.assign_one(r)[0] for r in rows):
        return graph
    times: dict[Assigner, list[int]] = {graph: [], numpy: []}
    for i in range(rounds):
        for assigner in (graph, numpy) if i % 2 else (numpy, graph):
            start = time.perf_counter_ns()
            for row in rows:
                assigner.assign_one(row)
            times[assigner].append(time.perf_counter_ns() - start)
    return min(times, key=lambda a: sorted(times[a])[rounds // 2])
