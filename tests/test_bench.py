"""`soundmond bench`: the short CI version runs and writes a complete report. No timing is ever asserted here (the
machine is shared); only that every figure the report promises is present."""

from __future__ import annotations

import argparse
import json
import logging
import subprocess
import sys
from importlib.util import find_spec
from pathlib import Path

import numpy as np
import pytest
from fakes import FixedHead, StaticTagger

from soundmond import speed
from soundmond.analysis import build_session
from soundmond.config import load_config
from soundmond.errors import ExitCode
from soundmond.speed.inprocess import write_config
from soundmond.speed.measure import cpu_features, cpu_name
from soundmond.speed.quick import station_sections
from soundmond.workbench import bench

REPO = Path(__file__).resolve().parent.parent


def run_bench(*args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "soundmond.cli", "bench", *args], cwd=REPO, capture_output=True,
                          text=True, timeout=timeout)


@pytest.fixture
def models(tmp_path: Path, yamnet_dir: Path, birdnet_dir: Path) -> Path:
    """A --models folder holding the test exports of YAMNet and BirdNET."""
    folder = tmp_path / "models"
    folder.mkdir()
    (folder / "yamnet").symlink_to(yamnet_dir)
    (folder / "birdnet").symlink_to(birdnet_dir)
    return folder


def test_agreement_figures() -> None:
    ref = np.array([[0.9, 0.1, 0.2, 0.0, 0.3, 0.05], [0.1, 0.8, 0.3, 0.2, 0.0, 0.4]])
    same = bench.agreement(ref, ref, probabilities=True)
    assert same == {"items": 2, "top1": 1.0, "top5": 1.0, "max_prob_diff": 0.0, "max_output_diff": 0.0}
    swapped = ref.copy()
    swapped[1, [1, 5]] = swapped[1, [5, 1]]  # top-1 changes in one row, the top-5 set does not
    moved = bench.agreement(ref, swapped, probabilities=True)
    assert moved["top1"] == 0.5 and moved["top5"] == 1.0 and moved["max_prob_diff"] == pytest.approx(0.4)


@pytest.mark.export
@pytest.mark.parametrize("frames", [128, 64])
def test_ast_flop_count_matches_torch_flop_counter(frames: int) -> None:
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    from torch.utils.flop_counter import FlopCounterMode

    config = transformers.ASTConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=40,
                                    max_length=frames, num_labels=7, attn_implementation="eager")
    model = transformers.ASTForAudioClassification(config).eval()
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(torch.zeros(1, frames, config.num_mel_bins))
    assert bench.ast_forward_gflop(config.to_dict(), frames) * 1e9 == counter.get_total_flops()


def test_full_size_ast_flops_per_window() -> None:
    full = {"hidden_size": 768, "num_hidden_layers": 12, "intermediate_size": 3072, "patch_size": 16,
            "num_mel_bins": 128, "frequency_stride": 10, "time_stride": 10, "num_labels": 527}
    # 12 x 101 patches + 2 tokens at 1024 frames, 12 x 50 + 2 at 512: attention grows with the square of the tokens
    assert bench.ast_forward_gflop(full, 1024) == pytest.approx(261.03, abs=0.01)
    assert bench.ast_forward_gflop(full, 512) == pytest.approx(115.86, abs=0.01)


def test_cpu_features_read_from_cpuinfo() -> None:
    x86 = "processor\t: 0\nflags\t\t: fpu sse avx2 fma avx512f avx512_vnni amx_int8\nmodel name\t: Xeon\n"
    assert cpu_features(x86) == ["avx2", "fma", "avx512f", "avx512_vnni", "amx_int8"]
    pi = "processor\t: 0\nFeatures\t: fp asimd evtstrm crc32 cpuid asimddp\n"
    assert cpu_features(pi) == ["asimd", "asimddp"]
    assert cpu_features("") == []


def test_cpu_name_names_the_generation() -> None:
    epyc = ("processor\t: 0\nvendor_id\t: AuthenticAMD\ncpu family\t: 23\nmodel\t\t: 1\nmodel name\t: AMD EPYC\n"
            "stepping\t: 2\n\nprocessor\t: 1\ncpu family\t: 25\nmodel name\t: other\n")
    assert cpu_name(epyc) == "AMD EPYC (cpu family 23, model 1, stepping 2)"  # the first processor only
    pi = "processor\t: 0\nFeatures\t: fp asimd\n\nRevision\t: d04170\nModel\t\t: Raspberry Pi 5 Model B Rev 1.0\n"
    assert cpu_name(pi) == "Raspberry Pi 5 Model B Rev 1.0"


def test_soak_growth_is_measured_after_warmup() -> None:
    t = list(range(100))
    flat = bench.growth([100.0] * 20 + [200.0] * 80, t, warmup_s=20)  # the rise during warm-up does not count
    assert flat["growth"] == 0.0
    leak = bench.growth([100.0 + i for i in range(100)], t, warmup_s=0)
    assert leak["growth"] is not None and leak["growth"] > 0.5


@pytest.mark.parametrize(("seconds", "warns"), [(4.5, True), (0.2, False)])
def test_startup_check_warns_when_models_cannot_keep_up(
    seconds: float, warns: bool, caplog: pytest.LogCaptureFixture, tmp_path: Path
) -> None:
    cfg_path = tmp_path / "config.yaml"
    cfg_path.write_text("windows: {min_rms_dbfs: -10}\n")  # a gate that would skip the test noise
    loaded = load_config(cfg_path)  # otherwise defaults: 5-s windows every 5 s, YAMNet, 1 thread
    clock = [0.0]

    def takes_time() -> None:
        clock[0] += seconds  # the window "takes" this long on the fake clock

    tagger = StaticTagger(on_tag=takes_time)
    session = build_session(loaded, models=(tagger, None, FixedHead(), {}))
    with caplog.at_level(logging.INFO, logger="soundmond.speed"):
        load = speed.startup_rtf_check(session, loaded.config, clock=lambda: clock[0])
    assert load == pytest.approx(seconds / 5.0)
    assert tagger.calls == 2  # both windows ran the models: the gate did not skip them
    assert session.analyzer.min_rms_dbfs == -10 and session.analyzer.windows_skipped_quiet == 0
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert bool(warnings) == warns
    if warns:
        assert "may not keep up" in warnings[0].getMessage() and "soundmond bench --quick" in warnings[0].getMessage()


def test_startup_check_on_the_real_models(tmp_path: Path, yamnet_dir: Path, birdnet_dir: Path) -> None:
    cfg_path = _quick_config(tmp_path, yamnet_dir, birdnet_dir)
    cfg_path.write_text(cfg_path.read_text() + "windows: {min_rms_dbfs: -10}\n")  # would gate the test noise
    loaded = load_config(cfg_path)
    session = build_session(loaded)
    try:
        load = speed.startup_rtf_check(session, loaded.config)
    finally:
        session.close()
    assert load is not None and load > 0  # the models ran: an ungated window is not "skipped_quiet" (about 0 ms)
    assert session.analyzer.min_rms_dbfs == -10 and session.analyzer.windows_skipped_quiet == 0


def test_importing_the_runtime_speed_checks_imports_no_workbench() -> None:
    code = ("import sys, soundmond.speed; print('\\n'.join(sorted(m for m in sys.modules "
            "if m.startswith('soundmond.workbench') or m.split('.')[0] in "
            "{'sklearn', 'skops', 'scipy', 'matplotlib', 'httpx', 'torch', 'tensorflow', 'transformers'})))")
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120,
                          check=False)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.split() == []


def _bench_args(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    speed.add_bench_arguments(parser)
    return parser.parse_args(list(argv))


def test_full_bench_without_its_libraries_names_what_to_install(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    import soundmond.speed.command as command

    real = command.find_spec
    monkeypatch.setattr(command, "find_spec", lambda name: None if name in ("torch", "sklearn") else real(name))
    assert speed.run_bench(_bench_args("--out", str(tmp_path / "out"))) == ExitCode.USAGE
    (line,) = capsys.readouterr().err.splitlines()
    assert "torch" in line and "sklearn" in line and "pip install 'soundmond[export,workbench]'" in line
    assert not (tmp_path / "out").exists()
    # the YAMNet soak needs none of them; without the workbench itself, neither runs
    monkeypatch.setitem(sys.modules, "soundmond.workbench.bench.runs", None)
    assert speed.run_bench(_bench_args("--soak", "--out", str(tmp_path / "out"))) == ExitCode.USAGE
    (line,) = capsys.readouterr().err.splitlines()
    assert line.startswith("soundmond bench: the soak needs soundmond.workbench.bench.runs (not installed)")
    assert "pip install 'soundmond[workbench]'" in line


def _quick_config(tmp_path: Path, yamnet_dir: Path, birdnet_dir: Path) -> Path:
    cfg = tmp_path / "config.yaml"
    cfg.write_text(
        f"models:\n  tagger: {{family: yamnet, path: {yamnet_dir}}}\n  birds: {{path: {birdnet_dir}}}\n"
        f"store: {{path: {tmp_path / 'soundmond.db'}}}\n"
    )
    return cfg


@pytest.mark.slow
def test_quick_bench_writes_a_complete_report(tmp_path: Path, yamnet_dir: Path, birdnet_dir: Path,
                                              fixture_audio: Path) -> None:
    out = tmp_path / "out"
    proc = run_bench("--quick", "--config", str(_quick_config(tmp_path, yamnet_dir, birdnet_dir)), "--corpus",
                     str(fixture_audio), "--windows", "2", "--repeats", "1", "--out", str(out))
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads((out / "bench-quick.json").read_text())
    assert report["mode"] == "quick"
    assert {"cpu", "cores", "loadavg_start", "loadavg_end", "versions", "date_utc"} <= set(report["machine"])
    models = report["models"]
    assert {(r["model"], r["threads"]) for r in models} >= {("tagger", 1), ("birds", 1)}
    for r in models:
        assert r["ms"]["n"] == 2 and r["load_s"] is not None and r["rtf"] > 0
    assert report["pipeline"] and all(r["rtf"] > 0 and r["windows"] > 0 for r in report["pipeline"])
    (daemon,) = report["daemon"]
    assert daemon["returncode"] == 0, daemon.get("log_tail")
    assert daemon["peak_rss_mb"] > 0 and daemon["start_to_running_s"] > 0 and daemon["windows"] > 0
    assert daemon["wall_rtf"] > 0
    verdict = report["verdict"]
    assert verdict["text"] and isinstance(verdict["keeps_up"], bool) and isinstance(verdict["suggestions"], list)
    md = (out / "bench-quick.md").read_text()
    assert "**Verdict:" in md and "## Whole pipeline" in md and "peak RSS MB" in md
    # what the configured stride costs: two 5-s windows of a stream hold the 3-s chunks 0-3 s, then 3-6 and 6-9 s
    stride = report["birds_stride"]
    assert (stride["stride_s"], stride["chunks_per_window"]) == (3.0, 1.5) and stride["ms_per_window"] > 0
    assert "models.birds.stride_s 3 s: 1.50 chunks per 5-s hop" in md


@pytest.mark.slow
@pytest.mark.export
def test_full_bench_short_with_tiny_ast_writes_a_complete_report(tmp_path: Path, models: Path,
                                                                 fixture_audio: Path) -> None:
    missing = [m for m in ("torch", "transformers", "ai_edge_litert") if find_spec(m) is None]
    if missing:
        pytest.skip(f"the full benchmark needs the export extra ({', '.join(missing)} missing)")
    out = tmp_path / "out"
    proc = run_bench("--ast-size", "tiny", "--short", "--models", str(models), "--corpus", str(fixture_audio),
                     "--windows", "1", "--agree-windows", "2", "--repeats", "1", "--pipeline-files", "1",
                     "--throughput-files", "2", "--out", str(out), timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads((out / "bench.json").read_text())

    ast_keys = {r["key"] for r in report["ast"]["rows"]}
    assert ast_keys == {"notebook", "fp32-1024", "int8-1024", "fp32-512", "int8-512", "int8att-512"}
    for r in report["ast"]["rows"]:
        assert r["ms"]["n"] >= 1 and r["load_s"] is not None
        if r["key"] != "notebook":
            assert r["speedup_vs_baseline"] > 0
            assert set(r["agreement_vs_fp32_original"]) == {"items", "top1", "top5", "max_prob_diff",
                                                            "max_output_diff"}
        assert r["gflop_per_window"] > 0 and r["gflop_per_s"] > 0
    gflop = {r["key"]: r["gflop_per_window"] for r in report["ast"]["rows"]}
    assert gflop["notebook"] == gflop["fp32-1024"] == gflop["int8-1024"] > gflop["fp32-512"] == gflop["int8-512"]
    assert gflop["int8att-512"] == gflop["int8-512"]
    att = next(r for r in report["ast"]["rows"] if r["key"] == "int8att-512")
    assert att["agreement_vs_onnx_fp32_same_frames"]["items"] == 2  # quantization alone, against fp32-512
    assert isinstance(report["machine"]["cpu_features"], list)
    assert "RANDOM weights" in report["ast"]["model"]
    gemm = report["gemm"]
    assert gemm["fp32_gflop_per_s"] > 0 and gemm["int8_gop_per_s"] > 0 and gemm["int8_speedup"] > 0
    for family in ("birdnet", "yamnet"):
        rows = {r["key"]: r for r in report[family]["rows"]}
        assert set(rows) == {"tflite", "onnx"}, family
        assert rows["onnx"]["agreement_vs_fp32_original"]["items"] > 0
    assert report["birdnet"]["onnx_over_tflite"] > 0
    assert len(report["birdnet"]["batching_lever"]) == 2
    assert [r["ms"]["n"] > 0 for r in report["birdnet"]["spinning_lever"]] == [True, True]
    memory = report["birdnet"]["session_memory"]
    assert {(m["mem_pattern"], m["chunks_per_call"]) for m in memory} == {(False, 1), (False, 2), (True, 1), (True, 2)}
    assert all(m["peak_rss_mb"] > 50 for m in memory), memory  # a loaded BirdNET session is tens of MB at least

    configs = {r["config"] for r in report["pipeline"]}
    for base in ("AST int8-512 + BirdNET + head", "AST fp32-1024 + BirdNET + head", "YAMNet + BirdNET + head"):
        assert {f"{base}, 1 thread", f"{base}, 2 threads", f"{base}, 1 thread each, side by side"} <= configs
    assert {r["config"] for r in report["pipeline"] if r["side_by_side"]} == {
        c for c in configs if c.endswith("side by side")}
    assert any(r["gate_dbfs"] is not None for r in report["pipeline"])
    daemons = {(d["config"], d["sensor_like"]): d for d in report["daemon"]}
    bases = ("AST int8-512 + BirdNET + head", "YAMNet + BirdNET + head")
    assert set(daemons) == {(f"{base}, {how}", e) for base in bases
                            for how in ("2 threads", "1 thread each, side by side") for e in (True, False)}
    for d in daemons.values():
        assert d["returncode"] == 0 and d["peak_rss_mb"] > 0 and d["start_to_running_s"] > 0 and d["windows"] > 0
    assert {(t["workers"], t["threads_per_session"]) for t in report["throughput"]} >= {(1, 2)}
    assert all(t["audio_hours_per_hour"] > 0 for t in report["throughput"])
    levers = {lv["lever"].split(" (")[0] for lv in report["levers"]}
    assert levers >= {"threads per session", "tagger and BirdNET side by side, 1 thread each",
                      "side by side on 1 thread each vs one after the other on 2 threads",
                      "512-frame export", "int8", "RMS gate at -35.0 dBFS",
                      "shared decode/resample between models", "BirdNET chunks of a window in one call",
                      "BirdNET chunks of a window in one call: peak RSS of a BirdNET-only process",
                      "ORT memory-pattern planning: peak RSS of a BirdNET-only process, 2 chunks per call",
                      "ORT idle-thread spinning, two BirdNET sessions in turn"}
    targets = {t["target"] for t in report["target_checks"]}
    assert len(targets) == 7 and all(t["value"] is not None for t in report["target_checks"])
    budget = report["budget"]  # the budget and one-core section (tests/test_bench_budget.py checks its figures)
    assert [t["limit"] for t in budget["targets"]] == [0.03, 300.0, 0.08, 450.0]
    assert all(t["value"] is not None for t in budget["targets"])
    assert all(r["daemon"]["affinity"]["pinned_as_asked"] for r in budget["one_core"]["runs"])
    md = (out / "bench.md").read_text()
    assert "GFLOP per window / GFLOP/s reached" in md and "SIMD:" in md and "x fp32**" in md
    for heading in ("### AST tagger", "### BirdNET V2.4", "### YAMNet", "## Whole pipeline", "## Daemon process",
                    "## Batch throughput", "## Levers", "## Budget: this turn's features on", "## One core",
                    "## Targets"):
        assert heading in md


@pytest.mark.slow
def test_soak_samples_rss_and_fds(tmp_path: Path, models: Path, fixture_audio: Path) -> None:
    out = tmp_path / "out"
    proc = run_bench("--soak", "--soak-seconds", "80", "--models", str(models), "--corpus", str(fixture_audio),
                     "--out", str(out))
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads((out / "soak.json").read_text())
    assert report["loops"] == 2 and report["daemon"]["returncode"] == 0
    assert report["daemon"]["audio_s"] >= 80
    assert report["rss_mb"]["samples"] >= 2 and report["open_fds"]["samples"] >= 2
    assert isinstance(report["flat"], bool)
    assert "open fds" in (out / "soak.md").read_text()


@pytest.mark.slow
def test_batch_bench_measures_the_dataset_job_with_one_and_two_workers(
        tmp_path: Path, yamnet_dir: Path, birdnet_dir: Path, fixture_audio: Path) -> None:
    pytest.importorskip("pyarrow", reason="the dataset job needs the parquet extra")
    out = tmp_path / "out"
    proc = run_bench("--batch", "--config", str(_quick_config(tmp_path, yamnet_dir, birdnet_dir)), "--corpus",
                     str(fixture_audio), "--batch-files", "2", "--out", str(out))
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads((out / "bench-batch.json").read_text())
    assert report["mode"] == "batch" and report["audio"]["files"] == 2 and report["audio"]["audio_h"] > 0
    assert {"cpu", "cores", "loadavg_start", "loadavg_end"} <= set(report["machine"])
    assert [(r["engine"], r["workers"]) for r in report["batch"]] == [("local pool, 1 worker", 1),
                                                                      ("local pool, 2 workers", 2)]
    for r in report["batch"]:
        assert (r["files"], r["analysed"], r["failed"]) == (2, 2, [])
        assert r["audio_h"] == pytest.approx(report["audio"]["audio_h"], rel=1e-3)
        assert r["wall_s"] > 0 and r["audio_h_per_h"] > 0 and r["core_h"] > 0
        assert 1 <= len(r["rtf_per_worker"]) <= r["workers"] and all(x > 0 for x in r["rtf_per_worker"])
    md = (out / "bench-batch.md").read_text()
    assert "## Dataset job" in md and "hours of audio per hour" in md and "| local pool, 2 workers | 2 |" in md


def test_batch_bench_refuses_bad_worker_counts_and_a_missing_pyarrow(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    for bad in ("0", "one"):
        with pytest.raises(SystemExit) as exited:
            _bench_args("--batch", "--batch-workers", bad)
        assert exited.value.code == 2
        assert "give worker counts" in capsys.readouterr().err
    monkeypatch.setitem(sys.modules, "pyarrow", None)
    assert speed.run_bench(_bench_args("--batch", "--out", str(tmp_path / "out"))) == ExitCode.USAGE
    assert "pip install 'soundmond[parquet]'" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_quick_bench_refuses_what_run_would_refuse(tmp_path: Path, yamnet_dir: Path, birdnet_dir: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    cfg = _quick_config(tmp_path, yamnet_dir, birdnet_dir)
    cfg.write_text(cfg.read_text().replace(str(yamnet_dir), str(tmp_path / "no-such-model")))
    parser = argparse.ArgumentParser()
    speed.add_bench_arguments(parser)
    args = parser.parse_args(["--quick", "--config", str(cfg), "--out", str(tmp_path / "out")])
    assert speed.run_bench(args) == ExitCode.MODELS  # what `soundmond run` gives for it
    err = capsys.readouterr().err
    assert "models.tagger.path:" in err and "no such model folder" in err and "(line 2)" in err
    assert "Traceback" not in err and not (tmp_path / "out").exists()  # no verdict on a config that cannot run


def test_quick_bench_audio_never_comes_from_the_current_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from soundmond.speed import audio

    monkeypatch.setattr(audio, "DEFAULT_CORPUS", tmp_path / "no-corpus")
    monkeypatch.setattr(audio, "FIXTURE_AUDIO", tmp_path / "no-fixtures")
    (tmp_path / "empty.wav").write_bytes(b"")  # would crash a scan of the current folder
    monkeypatch.chdir(tmp_path)
    assert audio.audio_folder(None) == (None, "synthetic")
    assert audio.audio_folder(None, tmp_path / "recordings") == (None, "synthetic")  # a fallback that is not there
    (tmp_path / "recordings").mkdir()
    assert audio.audio_folder(None, tmp_path / "recordings") == (tmp_path / "recordings", "source.path")
    windows = audio.load_windows(None, 2)
    assert windows.source == "synthetic" and windows.files == ["noise-0", "noise-1"] and windows.paths == []


def test_the_quick_bench_daemon_runs_with_the_stations_own_features(tmp_path: Path) -> None:
    """`bench --quick` measures the daemon as the station runs it: its bird stride and thresholds, quiet floor,
    indices, evidence clips (written beside the bench's store, never into the station's folder) and privacy."""
    station = tmp_path / "station.yaml"
    station.write_text("models:\n  birds:\n    stride_s: 1.5\n    min_confidence: 0.4\nindices:\n  enabled: false\n"
                       "evidence:\n  enabled: true\n  path: /srv/station/evidence\n  pad_s: 2.0\n"
                       "privacy:\n  mode: mute\n")
    sections = station_sections(load_config(station).config)
    written = write_config(tmp_path / "bench.yaml", tagger=tmp_path / "yamnet", family="yamnet",
                           birds=tmp_path / "birdnet", threads=1, store=tmp_path / "bench.db", sections=sections)
    cfg = load_config(written).config
    assert cfg.models.birds.stride_s == 1.5 and cfg.models.birds.min_confidence == 0.4
    assert cfg.models.birds.path == tmp_path / "birdnet" and cfg.models.tagger.threads == 1  # the bench's own
    assert not cfg.indices.enabled and cfg.evidence.enabled and cfg.evidence.pad_s == 2.0
    assert cfg.evidence.path == tmp_path / "bench-evidence" and cfg.privacy.mode == "mute"
    assert not cfg.mqtt.enabled and cfg.store.path == tmp_path / "bench.db"


@pytest.mark.export
def test_hf_birds_bench_measures_the_daemons_peak_rss(tmp_path: Path, models: Path, fixture_audio: Path,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    """`bench --hf-birds` with the tiny random Wav2Vec2 (the plumbing; `--hf-size base` is the real measurement):
    fresh sensor-like daemons, YAMNet + BirdNET and YAMNet + the hf model fp32 / int8, each with a real peak RSS."""
    for module in ("torch", "transformers", "optimum"):
        pytest.importorskip(module, reason="--hf-birds exports its model with the export extra")
    out = tmp_path / "out"
    args = _bench_args("--hf-birds", "--hf-size", "tiny", "--models", str(models), "--corpus", str(fixture_audio),
                       "--pipeline-files", "1", "--out", str(out))
    assert speed.run_bench(args) == ExitCode.OK, capsys.readouterr().err[-3000:]
    report = json.loads((out / "bench-hf-birds.json").read_text())
    assert report["mode"] == "hf-birds" and report["hf_birds"]["size"] == "tiny"
    assert report["hf_birds"]["quantization"] == {"fp32": "none", "int8": "int8"}
    rows = {d["bird_model"]: d for d in report["daemon"]}
    assert set(rows) == {"birdnet", "hf fp32", "hf int8"}
    for d in rows.values():
        assert d["returncode"] == 0 and d["sensor_like"] is True and d["windows"] > 0
        assert d["peak_rss_mb"] > 50  # a real process with numpy, onnxruntime and YAMNet loaded
    hf = rows["hf fp32"]
    assert "hf Wav2Vec2-tiny fp32" in hf["config"] and 0 < hf["bird_model_mb"] < rows["birdnet"]["bird_model_mb"]
    md = (out / "bench-hf-birds.md").read_text()
    assert "## hf bird model: the daemon's peak RSS" in md
    assert f"| {hf['config']} | {hf['bird_model_mb']} | {hf['peak_rss_mb']} | " in md
    assert "## Daemon process" in md
