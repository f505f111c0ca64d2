"""The AST's ONNX graph fused with ONNX Runtime's transformer optimizer: one `Attention` op per layer (the Q/K/V
products, the scaled dot-product and softmax in one kernel), `SkipLayerNormalization` (residual add + LayerNorm) and
`BiasGelu`. Fusing happens before int8 quantization, so the int8 export quantizes the fused graph (`QAttention`).

The exporter traces the model with transformers' eager attention (`attn_implementation="eager"`: the classic
MatMul -> scale -> Softmax -> MatMul pattern); the SDPA trace scales Q and K separately, a pattern the optimizer does
not recognise. The eager trace scales the scores with a Mul by 1/sqrt(head size); the optimizer's BERT attention
pattern wants a Div, so that Mul becomes a Div by sqrt(head size) first (exact for the power-of-two head sizes of
the AST: 64 full size, 16 tiny).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from export.common import ExportError

logger = logging.getLogger(__name__)

# onnxruntime.transformers model type whose fusions match the AST encoder (a pre-LN ViT; its "vit" type is the same
# BertOnnxModel with the same fusions)
MODEL_TYPE = "bert"
# "none" first (the default): on ONNX Runtime 1.32 the fused graph ran no faster in fp32 and slower in int8 (QAttention)
# than the unfused one, whose MatMul + Add, LayerNorm and GELU ONNX Runtime fuses itself when a session loads it
# (bench/RESULTS.md, 2026-12-06, AMD EPYC with AVX-512 VNNI)
OPTIMIZE_CHOICES = ("none", "fused")


def scores_scale_as_div(model: Any) -> int:
    """Rewrite `Softmax(Mul(scores, c))` with a constant scalar c as `Softmax(Div(scores, 1 / c))` in place; returns
    how many it rewrote."""
    from onnx import numpy_helper

    graph = model.graph
    producer = {o: n for n in graph.node for o in n.output}
    consts = {i.name: numpy_helper.to_array(i) for i in graph.initializer}
    for node in graph.node:
        if node.op_type == "Constant" and node.attribute and node.attribute[0].name == "value":
            consts[node.output[0]] = numpy_helper.to_array(node.attribute[0].t)
    rewritten = 0
    for node in graph.node:
        if node.op_type != "Softmax":
            continue
        mul = producer.get(node.input[0])
        if mul is None or mul.op_type != "Mul":
            continue
        scale = consts.get(mul.input[1])
        if scale is None or scale.size != 1 or not np.isfinite(scale).all() or float(scale.reshape(())) == 0.0:
            continue
        divisor = (np.float32(1.0) / scale.astype(np.float32)).astype(np.float32).reshape(scale.shape)
        name = f"{mul.name}/soundmond_divisor"
        graph.initializer.append(numpy_helper.from_array(divisor, name))
        mul.op_type = "Div"
        mul.input[1] = name
        rewritten += 1
    return rewritten


def fuse_ast(src: Path, dst: Path, *, num_heads: int, hidden_size: int, layers: int) -> dict[str, Any]:
    """Fuse the AST graph at `src` into `dst` (one self-contained file); what was fused, checked against `layers`.

    opt_level 0: only the transformer fusions are saved; ONNX Runtime's own graph optimizations (constant folding,
    its MatMul + Add and int8 fusions, the CPU-specific layouts) still run when a session loads the file, as before."""
    import onnx
    from onnxruntime.transformers.fusion_options import FusionOptions
    from onnxruntime.transformers.optimizer import optimize_model

    model = onnx.load(str(src))
    divs = scores_scale_as_div(model)
    options = FusionOptions(MODEL_TYPE)
    fused = optimize_model(
        model,
        model_type=MODEL_TYPE,
        num_heads=num_heads,
        hidden_size=hidden_size,
        optimization_options=options,
        opt_level=0,
    )
    stats = {k: int(v) for k, v in fused.get_fused_operator_statistics().items() if v}
    logger.info("fused the AST graph: %s", stats)
    if stats.get("Attention", 0) != layers or stats.get("SkipLayerNormalization", 0) < layers:
        raise ExportError(
            f"the transformer optimizer fused {stats.get('Attention', 0)} attention blocks and "
            f"{stats.get('SkipLayerNormalization', 0)} residual LayerNorms for {layers} layers; the graph is not the "
            "AST pattern it knows (pass --optimize none to export it unfused)"
        )
    fused.save_model_to_file(str(dst), use_external_data_format=False)
    return {
        "optimizer": f"onnxruntime.transformers.optimizer (model_type {MODEL_TYPE}, opt_level 0)",
        "attention_trace": "eager",
        "scores_mul_to_div": divs,
        "fused_ops": stats,
    }


__all__ = ["MODEL_TYPE", "OPTIMIZE_CHOICES", "fuse_ast", "scores_scale_as_div"]
