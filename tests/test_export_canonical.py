"""Byte-identical exports (export/canonical.py): what differs between two tf2onnx conversions of one TFLite file
(counter numbers, initializer order, which name an equal constant or node kept) no longer reaches the bytes, and the
model computes exactly what it did."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

from export.canonical import canonicalise


def conversion(counter: int, swapped: bool, kept_name: str) -> onnx.ModelProto:
    """One 'conversion' of y = (x + a) * b + c: tf2onnx-like names with counter `counter`, initializers in either
    order, and the constant equal to `a` kept under `kept_name` for the second Add."""
    a = numpy_helper.from_array(np.array([1.0, 2.0], np.float32), f"const_fold_opt__{counter}")
    b = numpy_helper.from_array(np.array([3.0, 4.0], np.float32), "model/dense/kernel")
    c = numpy_helper.from_array(np.array([1.0, 2.0], np.float32), kept_name)  # equal to a
    nodes = [
        helper.make_node("Add", ["x", a.name], [f"model/add__{counter + 1}:0"], name=f"model/add__{counter + 1}"),
        helper.make_node("Mul", [f"model/add__{counter + 1}:0", b.name], ["model/mul:0"], name="model/mul"),
        helper.make_node("Add", ["model/mul:0", c.name], ["y"], name=f"Add__{counter + 7}"),
    ]
    inits = [b, a, c] if swapped else [a, c, b]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="test")


def run(model: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return np.asarray(session.run(None, {"x": x})[0])


def test_two_conversions_become_the_same_bytes_and_compute_the_same() -> None:
    x = np.array([0.5, -1.0], np.float32)
    first, second = conversion(263, False, "slice_axes__12"), conversion(1531, True, "model/frame/free")
    expected = run(first, x)
    assert first.SerializeToString() != second.SerializeToString()
    a, b = canonicalise(first), canonicalise(second)
    assert a.SerializeToString() == b.SerializeToString()
    assert np.array_equal(run(a, x), expected) and np.array_equal(run(b, x), expected)
    assert [i.name for i in a.graph.input] == ["x"] and [o.name for o in a.graph.output] == ["y"]
    assert len(a.graph.initializer) == 2  # the two equal constants are one
    assert {n.name for n in a.graph.node} == {"tf2onnx__0", "model/mul", "tf2onnx__1"}
    assert canonicalise(onnx.ModelProto.FromString(a.SerializeToString())).SerializeToString() == \
        a.SerializeToString()  # idempotent


def test_the_exported_yamnet_is_canonical(yamnet_dir: Path) -> None:
    """The exporter writes the canonical form: canonicalising it again changes no byte (two exports on two machines
    give the same file, hence the same model identity in a store)."""
    data = (yamnet_dir / "model.onnx").read_bytes()
    assert canonicalise(onnx.load_from_string(data)).SerializeToString() == data
