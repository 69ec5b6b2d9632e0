"""Export a fitted persona model as a self-contained ONNX graph.

The graph is built by hand with the ``onnx`` package rather than by
skl2onnx's KMeans converter: that converter computes distances as
``sqrt(|x|² - 2x·c + |c|²)`` without clamping, which goes negative under
float32 rounding and returns NaN next to a centroid. Here distances are a sum
of squares of differences, so they are never negative and never NaN, and the
whole preprocessing (clip → log1p → standardise → weight) is inside the graph:
the device feeds raw features.

Inputs and outputs (N = batch size, d = features, k = personas):

* ``features``: float32 [N, d], raw feature values;
* ``persona``: int64 [N], index of the nearest centroid;
* ``distances``: float32 [N, k], Euclidean distances in the weighted space;
* ``confidence``: float32 [N], ``1 - d1 / d2`` for the two smallest distances.
"""

from __future__ import annotations

import numpy as np

from edgepersona.sdk.protocol.assign import INPUT_NAME, OUTPUT_NAMES
from edgepersona.sdk.protocol.manifest import AssignerParams

__all__ = ["OPSET", "build_onnx"]

OPSET = 17
IR_VERSION = 8  # readable by onnxruntime 1.14 and later, including mobile builds


def build_onnx(params: AssignerParams, *, model_id: str, version: int) -> bytes:
    """Serialise the assignment graph for the given parameters.

    Args:
        params: the fitted assigner parameters.
        model_id: recorded in the graph's metadata.
        version: recorded in the graph's metadata.

    Returns:
        The ONNX model bytes (no external data).
    """
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    d, k = len(params.lower), len(params.centroids)
    f32 = np.float32

    def const(name: str, value: np.ndarray) -> onnx.TensorProto:
        return numpy_helper.from_array(value, name)

    mean_scaled = np.asarray(params.center) * np.asarray(params.scale)
    has_log = any(params.log1p)
    init = [
        const("lower", np.asarray(params.lower, dtype=f32)),
        const("upper", np.asarray(params.upper, dtype=f32)),
        const("scale", np.asarray(params.scale, dtype=f32)),
        # centroids shifted by center*scale: z - c = t*scale - (c + center*scale)
        const("centroids", (np.asarray(params.centroids) + mean_scaled).astype(f32)[None, :, :]),
        const("one", np.array([1.0], dtype=f32)),
        const("tiny", np.array([1e-12], dtype=f32)),
        const("axis1", np.array([1], dtype=np.int64)),
        const("axis2", np.array([2], dtype=np.int64)),
        const("top2", np.array([2], dtype=np.int64)),
        const("first", np.array(0, dtype=np.int64)),
        const("second", np.array(1, dtype=np.int64)),
    ]
    n = helper.make_node
    nodes = [
        n("Max", [INPUT_NAME, "lower"], ["floored"]),
        n("Min", ["floored", "upper"], ["clipped"]),
    ]
    if has_log:
        init.append(const("log_mask", np.asarray(params.log1p, dtype=bool)))
        nodes += [
            n("Add", ["clipped", "one"], ["plus_one"]),
            n("Log", ["plus_one"], ["logged"]),
            n("Where", ["log_mask", "logged", "clipped"], ["transformed"]),
        ]
    nodes += [
        n("Mul", ["transformed" if has_log else "clipped", "scale"], ["scaled"]),
        n("Unsqueeze", ["scaled", "axis1"], ["z3"]),
        n("Sub", ["z3", "centroids"], ["diff"]),
        n("Mul", ["diff", "diff"], ["squares"]),
        n("ReduceSum", ["squares", "axis2"], ["d2"], keepdims=0),
        n("Sqrt", ["d2"], [OUTPUT_NAMES[1]]),
        n("TopK", [OUTPUT_NAMES[1], "top2"], ["near_d", "near_i"], axis=1, largest=0, sorted=1),
        n("Gather", ["near_i", "first"], [OUTPUT_NAMES[0]], axis=1),
        n("Gather", ["near_d", "first"], ["d_first"], axis=1),
        n("Gather", ["near_d", "second"], ["d_second"], axis=1),
        # d1 <= d2 (TopK sorts), so the ratio is in [0, 1] without clamping.
        n("Max", ["d_second", "tiny"], ["d_second_safe"]),
        n("Div", ["d_first", "d_second_safe"], ["ratio"]),
        n("Sub", ["one", "ratio"], [OUTPUT_NAMES[2]]),
    ]
    graph = helper.make_graph(
        nodes, "edgepersona_assign",
        [helper.make_tensor_value_info(INPUT_NAME, TensorProto.FLOAT, ["N", d])],
        [helper.make_tensor_value_info(OUTPUT_NAMES[0], TensorProto.INT64, ["N"]),
         helper.make_tensor_value_info(OUTPUT_NAMES[1], TensorProto.FLOAT, ["N", k]),
         helper.make_tensor_value_info(OUTPUT_NAMES[2], TensorProto.FLOAT, ["N"])],
        initializer=init,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)],
                              producer_name="edgepersona", ir_version=IR_VERSION,
                              doc_string="raw features -> persona, distances, confidence")
    helper.set_model_props(model, {"model_id": model_id, "version": str(version)})
    onnx.checker.check_model(model, full_check=True)
    return bytes(model.SerializeToString())
