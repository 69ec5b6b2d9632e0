"""ONNX graphs that try to make the device read files: tensors with external data.

Each builder takes the bundle's real ``model.onnx`` and hides one tensor
whose data lives "outside" (``data_location = EXTERNAL`` with a ``location``
such as ``../../etc/passwd``) in one of the places a TensorProto can sit: an
initializer, a node attribute, a sub-graph, a sparse initializer, a function
or training info. Built with the ``onnx`` package (a trainer dependency), so
the bytes are exactly what a real exporter would write.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper
from onnx.external_data_helper import set_external_data

TRAVERSAL = "../../etc/passwd"
GraphEdit = Callable[[bytes, str], bytes]


def _external_tensor(name: str, location: str) -> TensorProto:
    """A 2-float tensor whose 8 bytes are said to live in ``location``."""
    tensor = numpy_helper.from_array(np.zeros(2, dtype=np.float32), name)
    set_external_data(tensor, location, offset=0, length=8)
    tensor.ClearField("raw_data")
    tensor.data_location = TensorProto.EXTERNAL
    return tensor


def _edited(model_bytes: bytes, edit: Callable[[onnx.ModelProto], None]) -> bytes:
    model = onnx.load_from_string(model_bytes)
    edit(model)
    return bytes(model.SerializeToString())


def external_initializer(model_bytes: bytes, location: str) -> bytes:
    """The graph's first initializer moved to external data at ``location``."""
    def edit(model: onnx.ModelProto) -> None:
        tensor = model.graph.initializer[0]
        size = len(tensor.raw_data)
        set_external_data(tensor, location, offset=0, length=size)
        tensor.ClearField("raw_data")
        tensor.data_location = TensorProto.EXTERNAL

    return _edited(model_bytes, edit)


def external_flag_only(model_bytes: bytes, location: str) -> bytes:
    """``data_location = EXTERNAL`` with no ``external_data`` entries at all."""
    del location

    def edit(model: onnx.ModelProto) -> None:
        model.graph.initializer[0].data_location = TensorProto.EXTERNAL

    return _edited(model_bytes, edit)


def external_constant(model_bytes: bytes, location: str) -> bytes:
    """A Constant node whose ``value`` attribute is an external tensor."""
    def edit(model: onnx.ModelProto) -> None:
        node = helper.make_node("Constant", [], ["leak"], value=_external_tensor("leak_t", location))
        model.graph.node.insert(0, node)

    return _edited(model_bytes, edit)


def external_in_subgraph(model_bytes: bytes, location: str) -> bytes:
    """An If node whose then-branch holds an external initializer."""
    def edit(model: onnx.ModelProto) -> None:
        out = helper.make_tensor_value_info("branch_out", TensorProto.FLOAT, [2])
        branch = helper.make_graph([helper.make_node("Identity", ["leak_t"], ["branch_out"])],
                                   "then", [], [out], [_external_tensor("leak_t", location)])
        plain = helper.make_graph([helper.make_node("Identity", ["zero"], ["branch_out"])],
                                  "else", [], [out])
        cond = numpy_helper.from_array(np.array(True), "cond")
        model.graph.initializer.append(cond)
        model.graph.node.append(helper.make_node("If", ["cond"], ["leak"], then_branch=branch,
                                                 else_branch=plain))

    return _edited(model_bytes, edit)


def external_sparse_initializer(model_bytes: bytes, location: str) -> bytes:
    """A sparse initializer whose values are external."""
    def edit(model: onnx.ModelProto) -> None:
        indices = numpy_helper.from_array(np.array([0, 1], dtype=np.int64), "leak_i")
        sparse = helper.make_sparse_tensor(_external_tensor("leak_v", location), indices, [4])
        model.graph.sparse_initializer.append(sparse)

    return _edited(model_bytes, edit)


def external_in_function(model_bytes: bytes, location: str) -> bytes:
    """A model-local function whose Constant node holds an external tensor."""
    def edit(model: onnx.ModelProto) -> None:
        node = helper.make_node("Constant", [], ["y"], value=_external_tensor("leak_t", location))
        model.functions.append(helper.make_function("local", "Leak", [], ["y"], [node],
                                                    [helper.make_opsetid("", 17)]))

    return _edited(model_bytes, edit)


def external_in_training_info(model_bytes: bytes, location: str) -> bytes:
    """Training info whose initialization graph holds an external initializer."""
    def edit(model: onnx.ModelProto) -> None:
        init = helper.make_graph([], "init", [], [], [_external_tensor("leak_t", location)])
        model.training_info.append(onnx.TrainingInfoProto(initialization=init))

    return _edited(model_bytes, edit)


EVERY_PLACE: dict[str, GraphEdit] = {
    "initializer": external_initializer,
    "flag_only": external_flag_only,
    "constant_attribute": external_constant,
    "if_subgraph": external_in_subgraph,
    "sparse_initializer": external_sparse_initializer,
    "function": external_in_function,
    "training_info": external_in_training_info,
}
