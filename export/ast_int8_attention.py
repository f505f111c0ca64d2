"""The AST's two attention products as integer products: graph surgery on the dynamic int8 export.

`quantize_dynamic` quantizes every product with a constant weight (Q/K/V/output projections, the MLP, the classifier)
but leaves the attention's two activation-by-activation products in fp32: the scores `Q.K^T` and the context
`softmax.V`. On a CPU with VNNI they take about a third of an int8-512 window's time for an eighth of its arithmetic
(bench/RESULTS.md, 2026-12-06). This module rewrites each of them as `MatMulInteger` (uint8 x int8, the VNNI product)
with the activations quantized dynamically, keeping the softmax in fp32 between them:

- scores: `Q` (uint8, zero point 128, symmetric) and `K^T` (int8, symmetric) with scales from their own maximum
  magnitudes (`granularity`: one scale per tensor, or one per head); the 1/sqrt(sqrt(head size)) factors the export
  puts on `Q` and `K` are folded into the float rescale of the int32 result instead of two passes over the tensors;
- context (`probabilities`, default "row"): the fp32 softmax stays; its probabilities are quantized to uint8 with one
  scale per row (row max / 255: a blocked `QuantizeLinear`, ONNX opset 21, onnxruntime >= 1.19), so every row uses
  the full 8 bits whether its attention is peaked or spread over all 600 keys; the product's rows are multiplied by
  their scale afterwards. "exp" gets the same per-row range without the softmax (exp(S - row max), normalised after
  the product; more passes over the scores, slower); "fixed" (the fixed scale 1/255, no reduction) rounds a spread
  row's probabilities (about 1/600 each) to 0 and loses the model (top-1 agreement 0.19 on the full-size AST);
  `V` as `K` (int8, symmetric, per tensor or per head).

Each scale comes from max(max x, -min x) (two reductions, no |x| tensor), and Q, K and V are quantized before the
transposes that split them into heads, which then move a quarter of the bytes (per tensor: the same numbers, the
graph's outputs unchanged; 1.02x faster per window at 1 thread, bench/RESULTS.md, 2026-12-07, second session).

Each integer product is followed by `Cast` to float and one `Mul` by the product of the two scales, in the pattern
ONNX Runtime fuses into one `MatMulIntegerToFloat` kernel when the scales are per tensor (per head they stay three
ops: 11 % more kernel time in a full-size AST profile, for no better agreement, so the exporter uses "tensor").
Measured (bench/RESULTS.md, 2026-12-07): the int8-512 window 1.13-1.19x faster than with fp32 attention products,
agreement with the fp32 graph about that of the int8 weights alone.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from export.common import ExportError, ParityError

logger = logging.getLogger(__name__)

ATTENTION_CHOICES = ("fp32", "int8")  # the exporter's --attention; fp32 first: the default
GRANULARITY_CHOICES = ("tensor", "head")
Granularity = Literal["tensor", "head"]
PROBABILITY_CHOICES = ("row", "exp", "fixed")
Probabilities = Literal["row", "exp", "fixed"]
PROBABILITY_WHAT = {
    "row": "fp32 softmax; its probabilities as uint8 with one scale per row (row max / 255, zero point 0: blocked "
           "QuantizeLinear, opset 21); the product's rows times that scale",
    "exp": "softmax normalisation deferred: exp(S - row max) in (0, 1] as uint8 at scale 1/255, zero point 0; "
           "the product divided by the row sum of exp",
    "fixed": "fp32 softmax; its probabilities as uint8 at the fixed scale 1/255, zero point 0 (loses diffuse "
             "attention: every probability of a row spread over 600 keys is below half a step)",
}
BLOCKED_QUANTIZE_OPSET = 21  # QuantizeLinear's block_size (one scale per row of P)
ROW_BLOCK = 1 << 30  # the block of a per-row scale: longer than any row
PROBABILITY_SCALE = 1.0 / 255.0  # softmax outputs in [0, 1] -> uint8 0..255, zero point 0
Q_ZERO_POINT = 128  # symmetric uint8 for Q: one scalar zero point for every head (MatMulInteger takes a scalar)
# the exporter's choice (--attention int8): per tensor (fused by ONNX Runtime) - per head measured slower, no more
# accurate (bench/RESULTS.md, 2026-12-07)
ATTENTION_GRANULARITY: Granularity = "tensor"
# the rewrite may add at most this much to the int8 graph's max |sigmoid difference| from the fp32 graph (else the
# export fails: a broken rewrite, not the quantization's drift)
ATTENTION_MAX_EXTRA_PROB_DIFF = 0.02
TINY = 1e-12  # floor of a maximum magnitude (an all-zero tensor must not divide by zero)


@dataclass(frozen=True)
class AttentionProducts:
    """One attention layer's two fp32 products found in the graph."""

    scores: Any  # MatMul(Q, K^T) -> Softmax
    softmax: Any
    context: Any  # MatMul(Softmax, V)


def find_attention_products(graph: Any) -> list[AttentionProducts]:
    """The `MatMul -> Softmax -> MatMul` chains whose products have no constant operand, in graph order."""
    constants = {i.name for i in graph.initializer}
    consumers: dict[str, list[Any]] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    producer = {o: n for n in graph.node for o in n.output}
    found = []
    for node in graph.node:
        if node.op_type != "Softmax":
            continue
        scores = producer.get(node.input[0])
        after = consumers.get(node.output[0], [])
        if scores is None or scores.op_type != "MatMul" or len(after) != 1 or after[0].op_type != "MatMul":
            continue
        context = after[0]
        if context.input[0] != node.output[0]:
            continue
        if any(name in constants for name in (*scores.input, *context.input)):
            continue
        found.append(AttentionProducts(scores, node, context))
    return found


class _Builder:
    """Appends the new nodes and initializers of one rewrite, with names under a common prefix."""

    def __init__(self, graph: Any, prefix: str, heads: int | None) -> None:
        self.graph = graph
        self.prefix = prefix
        self.heads = heads
        self.nodes: list[Any] = []
        self._count = 0

    def name(self, what: str) -> str:
        self._count += 1
        return f"{self.prefix}/{what}_{self._count}"

    def const(self, what: str, value: np.ndarray) -> str:
        from onnx import numpy_helper

        name = self.name(what)
        self.graph.initializer.append(numpy_helper.from_array(value, name))
        return name

    def node(self, op: str, inputs: list[str], what: str, **attrs: Any) -> str:
        from onnx import helper

        out = self.name(what)
        self.nodes.append(helper.make_node(op, inputs, [out], name=out + "_node", **attrs))
        return out

    def symmetric_scale(self, x: str, granularity: Granularity) -> str:
        """max |x| / 127 over the tensor (a scalar) or over each head ([heads]: axis 1 of [batch, heads, rows,
        cols])."""
        # max(max x, -min x): two reads of x, where Abs then ReduceMax wrote |x| first (a third of a layer's
        # quantization time in the full-size AST's profile)
        axes = [] if granularity == "tensor" else [self.const("axes", np.array([0, 2, 3], dtype=np.int64))]
        high = self.node("ReduceMax", [x, *axes], "high", keepdims=0)
        low = self.node("Neg", [self.node("ReduceMin", [x, *axes], "low", keepdims=0)], "minus_low")
        peak = self.node("Max", [high, low, self.const("floor", np.array(TINY, dtype=np.float32))], "peak")
        return self.node("Mul", [peak, self.const("inv_127", np.array(1.0 / 127.0, dtype=np.float32))], "scale")

    def quantize_symmetric(self, x: str, transpose: Any | None, zero_point: int, dtype: type,
                           granularity: Granularity) -> tuple[str, str]:
        """(x quantized, its scale). With `transpose` (the Transpose whose output x is; per tensor only), the
        Transpose's input is quantized and the 8-bit result transposed: the same values, a quarter of the bytes
        moved by the transpose."""
        source = x if transpose is None else transpose.input[0]
        scale = self.symmetric_scale(source, granularity)
        x8 = self.quantize(source, scale, zero_point, dtype, granularity)
        if transpose is None:
            return x8, scale
        perm = [int(p) for a in transpose.attribute if a.name == "perm" for p in a.ints]
        return self.node("Transpose", [x8], "transposed", perm=perm), scale

    def quantize(self, x: str, scale: str, zero_point: int, dtype: type, granularity: Granularity) -> str:
        """QuantizeLinear of x (per tensor, or per head along axis 1)."""
        if granularity == "tensor":
            return self.node("QuantizeLinear", [x, scale, self.const("zp", np.array(zero_point, dtype=dtype))], "q")
        zp = self.const("zp", np.full(self.heads, zero_point, dtype=dtype))
        return self.node("QuantizeLinear", [x, scale, zp], "q", axis=1)

    def product(self, a8: str, b8: str, a_zero_point: str | None, a_scale: str, b_scale: str,
                granularity: Granularity, output: str) -> None:
        """output = float(MatMulInteger(a8, b8)) * a_scale * b_scale. Per tensor as ONNX Runtime's
        MatMulIntegerToFloat fusion wants it (Mul(Cast(MatMulInteger), Mul(a_scale, b_scale)): one kernel); per
        head the [heads] scales as one [1, heads, 1, 1] factor (a Reshape between, so that fusion, made for scalar or
        per-column scales, leaves it alone)."""
        from onnx import TensorProto, helper

        inputs = [a8, b8] + ([a_zero_point] if a_zero_point else [])
        i32 = self.node("MatMulInteger", inputs, "i32")
        f32 = self.node("Cast", [i32], "f32", to=TensorProto.FLOAT)
        factor = self.node("Mul", [a_scale, b_scale], "factor")
        if granularity == "head":
            factor = self.node("Reshape", [factor, self.const("head_shape", np.array([1, -1, 1, 1], dtype=np.int64))],
                               "factor_4d")
        self.nodes.append(helper.make_node("Mul", [f32, factor], [output], name=output + "_node"))


def _scalar_factor(graph: Any, producer: dict[str, Any], consumers: dict[str, list[Any]], name: str
                   ) -> tuple[str, float]:
    """`name` = Mul(x, constant scalar c) used only here -> (x, c); otherwise (name, 1.0)."""
    from onnx import numpy_helper

    node = producer.get(name)
    if node is None or node.op_type != "Mul" or len(consumers.get(name, [])) != 1:
        return name, 1.0
    values = {i.name: i for i in graph.initializer}
    for i, other in ((0, 1), (1, 0)):
        c = None
        if node.input[other] in values:
            c = numpy_helper.to_array(values[node.input[other]])
        elif node.input[other] in producer and producer[node.input[other]].op_type == "Constant":
            const = producer[node.input[other]]
            c = numpy_helper.to_array(const.attribute[0].t) if const.attribute[0].name == "value" else None
        if c is not None and c.size == 1 and np.isfinite(c).all():
            return node.input[i], float(c.reshape(()))
    return name, 1.0


def _only_transpose(producer: dict[str, Any], consumers: dict[str, list[Any]], name: str,
                    granularity: Granularity) -> Any | None:
    """The Transpose that makes `name` when nothing else reads it (so it can move after the quantization); None
    otherwise, and always per head (the head axis is only axis 1 after the transpose)."""
    node = producer.get(name)
    if granularity != "tensor" or node is None or node.op_type != "Transpose" or len(consumers.get(name, [])) != 1:
        return None
    return node


def int8_attention(model: Any, *, num_heads: int, granularity: Granularity = "tensor",
                   probabilities: Probabilities = "row") -> dict[str, Any]:
    """Rewrite the attention products of an int8 (quantize_dynamic) AST graph in place; what it did.

    Raises `ExportError` when the graph holds no attention chain (MatMul -> Softmax -> MatMul on activations)."""
    from onnx import helper

    if probabilities not in PROBABILITY_CHOICES:
        raise ExportError(f"attention probabilities must be one of {', '.join(PROBABILITY_CHOICES)}, "
                          f"not {probabilities!r}")
    if granularity not in GRANULARITY_CHOICES:
        raise ExportError(f"attention granularity must be one of {', '.join(GRANULARITY_CHOICES)}, not {granularity!r}")
    graph = model.graph
    chains = find_attention_products(graph)
    if not chains:
        raise ExportError("no attention found to quantize (MatMul -> Softmax -> MatMul on activations); "
                          "--attention int8 needs the unfused graph (--optimize none)")
    producer = {o: n for n in graph.node for o in n.output}
    consumers: dict[str, list[Any]] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    replaced: dict[str, list[Any]] = {}  # first output of an old MatMul -> its new nodes
    # first outputs of the nodes removed: the scalar Muls folded into the rescale, and the softmax "exp" replaces
    dropped: set[str] = set()
    folded = 0  # scalar Muls folded
    transposed = 0  # Q, K, V transposed after quantization instead of before
    for index, chain in enumerate(chains):
        b = _Builder(graph, f"/soundmond_int8_attention/{index}", num_heads)
        # scores = (Q c1) . (K^T c2): quantize Q and K^T, fold c1 c2 into the rescale
        q, c1 = _scalar_factor(graph, producer, consumers, chain.scores.input[0])
        k, c2 = _scalar_factor(graph, producer, consumers, chain.scores.input[1])
        for original, bare in ((chain.scores.input[0], q), (chain.scores.input[1], k)):
            if bare != original:
                dropped.add(original)
                folded += 1
        q_t = _only_transpose(producer, consumers, q, granularity)
        k_t = _only_transpose(producer, consumers, k, granularity)
        q8, q_scale = b.quantize_symmetric(q, q_t, Q_ZERO_POINT, np.uint8, granularity)
        k8, k_scale = b.quantize_symmetric(k, k_t, 0, np.int8, granularity)
        q_zp = b.const("q_zp_scalar", np.array(Q_ZERO_POINT, dtype=np.uint8))
        q_scale_c = b.node("Mul", [q_scale, b.const("folded", np.array(c1 * c2, dtype=np.float32))], "scale_c")
        b.product(q8, k8, q_zp, q_scale_c, k_scale, granularity, chain.scores.output[0])
        replaced[chain.scores.output[0]] = b.nodes
        b.nodes = []
        v = chain.context.input[1]
        v_t = _only_transpose(producer, consumers, v, granularity)
        v8, v_scale = b.quantize_symmetric(v, v_t, 0, np.int8, granularity)
        dropped.update(t.output[0] for t in (q_t, k_t, v_t) if t is not None)
        transposed += sum(t is not None for t in (q_t, k_t, v_t))
        p_scale = b.const("p_scale", np.array(PROBABILITY_SCALE, dtype=np.float32))
        p_zp = b.const("p_zp", np.array(0, dtype=np.uint8))
        if probabilities == "fixed":
            p8 = b.node("QuantizeLinear", [chain.softmax.output[0], p_scale, p_zp], "p_u8")
            b.product(p8, v8, None, p_scale, v_scale, granularity, chain.context.output[0])
        elif probabilities == "row":
            # P / max_row P is in (0, 1] with max exactly 1 per row: the full uint8 range for every row, diffuse or
            # peaked; one blocked QuantizeLinear (a row is one block) and the row scale applied to the
            # [.., rows, head size] result
            last = b.const("last_axis", np.array([-1], dtype=np.int64))
            row_max = b.node("ReduceMax", [chain.softmax.output[0], last], "row_max", keepdims=1)
            row_scale = b.node("Mul", [row_max, p_scale], "row_scale")
            # no zero point: uint8, zero point 0; a block longer than the row is the row (scale dim ceil(N / block))
            p8 = b.node("QuantizeLinear", [chain.softmax.output[0], row_scale], "p_u8", axis=-1,
                        block_size=ROW_BLOCK)
            unscaled = b.name("unscaled")
            # the product's factor keeps 1/255 (a factor 1 would be optimised away, and with it ONNX Runtime's
            # MatMulIntegerToFloat fusion); the rows are then multiplied by their max
            b.product(p8, v8, None, p_scale, v_scale, granularity, unscaled)
            b.nodes.append(helper.make_node("Mul", [unscaled, row_max], [chain.context.output[0]],
                                            name=chain.context.name + "_int8"))
        else:
            # softmax with its normalisation deferred: E = exp(S - max_row S) in (0, 1], max exactly 1 in every
            # row, so the fixed scale 1/255 uses the full uint8 range per row whatever the attention's spread;
            # context = (E . V) / sum_row E, the division on the product's [.., rows, head size] result
            last = b.const("last_axis", np.array([-1], dtype=np.int64))
            scores = chain.softmax.input[0]
            row_max = b.node("ReduceMax", [scores, last], "row_max", keepdims=1)
            e = b.node("Exp", [b.node("Sub", [scores, row_max], "shifted")], "exp")
            row_sum = b.node("ReduceSum", [e, last], "row_sum", keepdims=1)
            e8 = b.node("QuantizeLinear", [e, p_scale, p_zp], "e_u8")
            unnormalised = b.name("unnormalised")
            b.product(e8, v8, None, p_scale, v_scale, granularity, unnormalised)
            b.nodes.append(helper.make_node("Div", [unnormalised, row_sum], [chain.context.output[0]],
                                            name=chain.context.name + "_int8"))
            dropped.add(chain.softmax.output[0])
        replaced[chain.context.output[0]] = b.nodes
    new_nodes = []
    for node in graph.node:
        if node.output[0] in dropped:
            continue
        new_nodes.extend(replaced.get(node.output[0], [node]))
    del graph.node[:]
    graph.node.extend(new_nodes)
    if probabilities == "row":
        for opset in model.opset_import:
            if opset.domain in ("", "ai.onnx") and opset.version < BLOCKED_QUANTIZE_OPSET:
                opset.version = BLOCKED_QUANTIZE_OPSET
    used = {name for node in graph.node for name in node.input}
    unused = [i for i in graph.initializer if i.name not in used]
    for initializer in unused:  # the folded scalars (ONNX Runtime warns of every unused initializer)
        graph.initializer.remove(initializer)
    return {
        "method": "MatMulInteger uint8 x int8 for Q.K^T and softmax.V (export.ast_int8_attention)",
        "needs": f"ONNX opset {BLOCKED_QUANTIZE_OPSET} (onnxruntime >= 1.19)" if probabilities == "row" else "",
        "granularity": granularity,
        "layers": len(chains),
        "q": f"uint8, zero point {Q_ZERO_POINT}, scale max|Q|/127 per {granularity}",
        "k_v": f"int8, symmetric, scale max|x|/127 per {granularity}",
        "probabilities": probabilities,
        "probabilities_what": PROBABILITY_WHAT[probabilities],
        "folded_scalar_muls": folded,
        "transposed_as_int8": transposed,
    }


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return np.asarray(1.0 / (1.0 + np.exp(-np.asarray(x, dtype=np.float64))))


def _agreement(reference: np.ndarray, candidate: np.ndarray) -> dict[str, float]:
    top_r = np.argsort(-reference, axis=1)[:, :5]
    top_c = np.argsort(-candidate, axis=1)[:, :5]
    return {
        "top1": round(float(np.mean(top_r[:, 0] == top_c[:, 0])), 4),
        "top5": round(float(np.mean([set(a) == set(b) for a, b in zip(top_r, top_c, strict=True)])), 4),
        "max_prob_diff": float(f"{float(np.max(np.abs(_sigmoid(reference) - _sigmoid(candidate)))):.3g}"),
    }


def check_attention_drift(fp32_logits: np.ndarray, int8_logits: np.ndarray, attention_logits: np.ndarray
                          ) -> dict[str, Any]:
    """Agreement of the int8 graph before and after the rewrite with the fp32 graph ([windows, labels] logits: top-1,
    same top-5 set, max |sigmoid difference|); `ParityError` when the rewrite adds more than
    `ATTENTION_MAX_EXTRA_PROB_DIFF` to the max sigmoid difference."""
    before = _agreement(fp32_logits, int8_logits)
    after = _agreement(fp32_logits, attention_logits)
    if not np.isfinite(attention_logits).all() or (
        after["max_prob_diff"] > before["max_prob_diff"] + ATTENTION_MAX_EXTRA_PROB_DIFF
    ):
        raise ParityError(
            f"int8 attention drifts from the fp32 graph by {after['max_prob_diff']} in probability (int8 weights "
            f"alone: {before['max_prob_diff']}; allowed: + {ATTENTION_MAX_EXTRA_PROB_DIFF}) - export without "
            "--attention int8"
        )
    return {"int8_weights": before, "int8_weights_and_attention": after,
            "max_extra_prob_diff_allowed": ATTENTION_MAX_EXTRA_PROB_DIFF}
