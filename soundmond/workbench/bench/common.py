"""The constants the full benchmark's modules share (its cache, the TFLite original, configurations, targets). The
ones the quick run shares too (paths, window length, RTF limits, `BenchError`) are `soundmond.speed.common`'s."""

from __future__ import annotations

from soundmond.speed.common import REPO

BENCH_CACHE = REPO / ".cache" / "bench-models"
YAMNET_TFLITE = REPO.parent / "shared" / "models" / "yamnet" / "yamnet.tflite"
SIDE_BY_SIDE_SUFFIX = ", 1 thread each, side by side"  # pipeline configurations with models.side_by_side on
PIPELINE_BASES = ("AST int8-512 + BirdNET + head", "YAMNet + BirdNET + head")  # the targets' two configurations
# int8att-512: int8-512 with the attention's two products as integer products too (export --attention int8; opt-in,
# not the exporter's default: bench/RESULTS.md, 2026-12-07)
AST_VARIANTS = ("fp32-1024", "int8-1024", "fp32-512", "int8-512", "int8att-512")
AST_EXPORT_SOURCES = ("export/ast_model.py", "export/ast_fusion.py", "export/ast_int8_attention.py", "export/common.py",
                      "soundmond/models/sidecar.py", "soundmond/models/features.py")
TARGETS = {
    "ast_onnx_fp32_speedup_min": 1.8,
    "ast_best_int8_speedup_min": 8.0,
    "pipeline_rtf_ast_max": 0.08,
    "pipeline_rtf_yamnet_max": 0.03,
    "birdnet_onnx_vs_tflite_max": 1.3,
    "daemon_peak_rss_ast_mb_max": 450.0,
    "daemon_peak_rss_yamnet_mb_max": 300.0,
    "soak_growth_max": 0.05,
}
