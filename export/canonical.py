"""Byte-identical exports: tf2onnx names the tensors and nodes it makes with a process-wide counter
(`const_fold_opt__263`, `Mean_Squeeze__1798:0`), emits some initializers in an order that varies from run to run,
and folds equal constants (and equal nodes) into one under whichever name it met first, so two conversions of the
same TFLite file gave ONNX files that compute the same thing but differ in their bytes, hence in their sha256. The
sha256 names the model in a store's replay key and window ids (`soundmond.identity.models_identity`) and in a head's
`trained_on`: a fresh `setup.sh` on another machine made every file of an existing store "analysed with other
models", and no user could have the model file a shipped head names.

`canonicalise(model)`:
- names every initializer by its content (`const_<sha256 of dtype, shape and value, 16 hex>`; two equal constants
  become one) and orders them by first use;
- renames every other name ending in a counter (`<stem>__<digits>`, with or without an output index `:<n>`) to
  `tf2onnx__<k>` (the index kept), k counting them in the order the graph first uses them (graph inputs, then each
  node's name, inputs and outputs in node order, subgraphs included); the stem goes because of two equal nodes
  tf2onnx keeps either one's name.
The graph's inputs and outputs, every other name and every value are kept: the model computes exactly what it did.
The node order is tf2onnx's own (the same in every run compared: YAMNet 252 nodes, BirdNET 420 + 57, 2026-12-07).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterator

from onnx import AttributeProto, GraphProto, ModelProto, TensorProto, numpy_helper

_COUNTER = re.compile(r"^(.*)__\d+$")


def _subgraphs(graph: GraphProto) -> Iterator[GraphProto]:
    for node in graph.node:
        for attr in node.attribute:
            if attr.type == AttributeProto.GRAPH:
                yield attr.g
            elif attr.type == AttributeProto.GRAPHS:
                yield from attr.graphs


def _graphs(graph: GraphProto) -> Iterator[GraphProto]:
    yield graph
    for sub in _subgraphs(graph):
        yield from _graphs(sub)


def _names_in_use_order(graph: GraphProto) -> Iterator[str]:
    yield from (v.name for v in graph.input)
    for node in graph.node:
        yield node.name
        yield from node.input
        yield from node.output
        for attr in node.attribute:
            if attr.type == AttributeProto.GRAPH:
                yield from _names_in_use_order(attr.g)
            elif attr.type == AttributeProto.GRAPHS:
                for g in attr.graphs:
                    yield from _names_in_use_order(g)
    yield from (v.name for v in graph.output)


def _split(name: str) -> tuple[str, str]:
    """("stem__123", ":0") for "stem__123:0"; the output index is kept apart."""
    base, sep, index = name.rpartition(":")
    return (base, sep + index) if sep and index.isdigit() else (name, "")


def _content_name(tensor: TensorProto) -> str:
    value = numpy_helper.to_array(tensor)
    digest = hashlib.sha256(f"{tensor.data_type}:{list(tensor.dims)}:".encode() + value.tobytes())
    return f"const_{digest.hexdigest()[:16]}"


def canonicalise(model: ModelProto) -> ModelProto:
    """The same model with content-named initializers and counter names renumbered (module docstring); in place, and
    returned. External data must be loaded (`onnx.load` does by default)."""
    keep = {v.name for v in model.graph.input} | {v.name for v in model.graph.output}
    mapping: dict[str, str] = {}
    for graph in _graphs(model.graph):
        for tensor in graph.initializer:
            if tensor.name not in keep:
                mapping[tensor.name] = _content_name(tensor)
    counters: dict[str, str] = {}
    for name in _names_in_use_order(model.graph):
        base, index = _split(name)
        if not name or name in mapping or name in keep or not _COUNTER.match(base):
            continue
        if base not in counters:  # the stem goes too: of two equal nodes tf2onnx keeps either one's name
            counters[base] = f"tf2onnx__{len(counters)}"
        mapping[name] = counters[base] + index
    others = {n for n in _names_in_use_order(model.graph) if n not in mapping}
    if clash := others & set(mapping.values()):
        raise ValueError(f"canonical names clash with existing ones: {sorted(clash)[:3]}")

    def rename(name: str) -> str:
        return mapping.get(name, name)

    for graph in _graphs(model.graph):
        for node in graph.node:
            node.name = rename(node.name)
            node.input[:] = [rename(n) for n in node.input]
            node.output[:] = [rename(n) for n in node.output]
        for value in graph.value_info:
            value.name = rename(value.name)
        order = {n: k for k, n in enumerate(dict.fromkeys(_names_in_use_order(graph)))}
        unique: dict[str, TensorProto] = {}
        for tensor in graph.initializer:
            name = rename(tensor.name)
            if name not in unique:  # equal constants under one name
                copy = TensorProto()
                copy.CopyFrom(tensor)
                copy.name = name
                unique[name] = copy
        del graph.initializer[:]
        graph.initializer.extend(sorted(unique.values(), key=lambda t: (order.get(t.name, len(order)), t.name)))
    return model


__all__ = ["canonicalise"]
