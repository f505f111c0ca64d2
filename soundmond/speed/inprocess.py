"""The models and the whole pipeline timed in this process: model folders (`--models`), daemon configs for one
configuration each (`PipelineSpec`), and `bench_pipeline`: the configurations as the daemon builds them (models, head,
aggregation, alert rules, store), interleaved window by window."""

from __future__ import annotations

import dataclasses
import functools
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import yaml

from soundmond.analysis import build_session
from soundmond.config import load_config
from soundmond.data import AudioWindow
from soundmond.models.grid import ChunkGrid, GridChunk
from soundmond.models.sidecar import ModelFolderError, read_sidecar
from soundmond.outputs.store import Store
from soundmond.speed.audio import decode_windows
from soundmond.speed.common import FIXTURE_AUDIO, REPO, TEST_MODELS, WINDOW_S, BenchError
from soundmond.speed.measure import summarize, timed


def find_model_dirs(models: Path | None) -> dict[str, Path]:
    """yamnet / birdnet folders (and any AST folders) in `--models` (default: ./models, else .cache/test-models)."""
    candidates = [models] if models is not None else [REPO / "models", TEST_MODELS]
    for root in candidates:
        if root is None or not root.is_dir():
            continue
        found: dict[str, Path] = {}
        for sub in sorted(p for p in root.iterdir() if p.is_dir()):
            try:
                family = read_sidecar(sub).family
            except (ModelFolderError, OSError, ValueError):
                continue
            found.setdefault(family, sub)
            if family != "birdnet":
                found[f"tagger:{sub.name}"] = sub
        if "birdnet" in found and ("yamnet" in found or models is not None):
            return found
    raise BenchError(
        f"no model folders in {models or 'models/ or .cache/test-models/'}: pass --models DIR holding yamnet/ and "
        "birdnet/ folders written by `python -m export yamnet|birdnet --out DIR/<family>`"
    )


def tag_runner(model: Any, waves: Sequence[npt.NDArray[np.float32]]) -> Callable[[int], Any]:
    """A `Variant.run` for a tagger: window i -> its probabilities."""
    def run(i: int) -> Any:
        return model.tag(waves[i]).probabilities

    return run


def grid_chunks(model: Any, waves: Sequence[npt.NDArray[np.float32]], hop_s: float) -> list[list[GridChunk]]:
    """The chunks of the bird model's stream grid that end in each of `waves` (48-kHz windows), the windows laid one
    `hop_s` after the other as in a live stream: the chunks a window costs at the configured stride and hop."""
    grid = ChunkGrid(model.sample_rate_hz, model.chunk_samples, model.stride_s)
    return [grid.chunks(AudioWindow(f"bench-{i}", "bench", i * hop_s, i * hop_s, model.sample_rate_hz, wave))
            for i, wave in enumerate(waves)]


def grid_birds_runner(model: Any, chunks: Sequence[Sequence[GridChunk]]) -> Callable[[int], Any]:
    """A `Variant.run` for BirdNET as the daemon runs it: window i -> its grid chunks (`grid_chunks`) in one call."""
    def run(i: int) -> Any:
        model.detect_chunks(chunks[i], start_unix_s=0.0)

    return run


def write_config(path: Path, *, tagger: Path, family: str, birds: Path | None, threads: int, store: Path,
                 head: Path | None = None, min_rms_dbfs: float | None = None, source: Path | None = None,
                 heartbeat_s: float = 60.0, side_by_side: bool = False,
                 sections: dict[str, Any] | None = None) -> Path:
    """A daemon config for one benchmark configuration (file source, no MQTT, store in `store`). `sections`: more of
    the configuration as the station has it (bird stride and thresholds, quiet floor, indices, evidence, privacy),
    merged in; an evidence folder goes beside the store, never into the station's own."""
    cfg: dict[str, Any] = {
        "station": {"id": "bench"},
        "source": {"type": "file", "path": str(source or FIXTURE_AUDIO), "realtime": False},
        "windows": {"length_s": WINDOW_S, "hop_s": WINDOW_S, "min_rms_dbfs": min_rms_dbfs},
        "models": {
            "tagger": {"family": family, "path": str(tagger), "threads": threads},
            "birds": {"enabled": birds is not None, "path": str(birds or tagger), "threads": threads},
            "head": {"path": str(head) if head else None},
            "side_by_side": side_by_side,
        },
        "store": {"path": str(store)},
        "mqtt": {"enabled": False, "heartbeat_interval_s": heartbeat_s},
        "logging": {"level": "INFO"},
    }
    for key, value in (sections or {}).items():
        if isinstance(value, dict) and isinstance(cfg.get(key), dict):
            for sub_key, sub_value in value.items():
                if isinstance(sub_value, dict) and isinstance(cfg[key].get(sub_key), dict):
                    cfg[key][sub_key] = {**cfg[key][sub_key], **sub_value}
                else:
                    cfg[key][sub_key] = sub_value
        else:
            cfg[key] = value
    if isinstance(cfg.get("evidence"), dict):
        cfg["evidence"] = {**cfg["evidence"], "path": str(store.parent / f"{store.stem}-evidence")}
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


@dataclasses.dataclass
class PipelineSpec:
    """One daemon configuration: tagger folder (+ family), BirdNET folder or None, threads per session, head, gate,
    and whether the tagger and BirdNET run side by side (`models.side_by_side`) or one after the other."""

    name: str
    family: str
    tagger: Path
    birds: Path | None
    threads: int
    head: Path | None = None
    min_rms_dbfs: float | None = None
    side_by_side: bool = False
    sections: dict[str, Any] | None = None  # the station's own settings carried over (`write_config`)

    def config(self, path: Path, store: Path, source: Path | None = None, heartbeat_s: float = 60.0) -> Path:
        return write_config(path, tagger=self.tagger, family=self.family, birds=self.birds, threads=self.threads,
                            store=store, head=self.head, min_rms_dbfs=self.min_rms_dbfs, source=source,
                            heartbeat_s=heartbeat_s, side_by_side=self.side_by_side, sections=self.sections)


def bench_pipeline(specs: Sequence[PipelineSpec], files: Sequence[Path], tmp: Path, repeats: int = 1
                   ) -> list[dict[str, Any]]:
    """Each spec as the daemon builds it (`build_session`: models, head, aggregation, alert rules) plus a synchronous
    store write per window; the specs interleaved window by window. RTF = compute / audio seconds."""
    base = 1.7e9  # consecutive start times: files carry unrelated dates (names, mtimes) the aggregator would refuse
    windows = [dataclasses.replace(w, start_unix_s=base + k * WINDOW_S) for k, w in enumerate(decode_windows(files))]
    if not windows:
        raise BenchError("no audio windows to run the pipeline on")
    audio_s = sum(w.duration_s for w in windows)
    loaded_specs = []
    for k, spec in enumerate(specs):
        loaded = load_config(spec.config(tmp / f"pipeline-{k}.yaml", tmp / f"pipeline-{k}.db"))
        session, load_s = timed(functools.partial(build_session, loaded))
        store = Store(tmp / f"pipeline-{k}.db", loaded.config.store)
        loaded_specs.append((spec, session, store, load_s))
    times: dict[str, list[float]] = {s.name: [] for s in specs}
    for r in range(repeats):
        for w0 in windows:
            w = dataclasses.replace(w0, window_id=f"{w0.window_id}-{r}",
                                    start_unix_s=w0.start_unix_s + r * len(windows) * WINDOW_S) if r else w0
            now = w.start_unix_s + w.duration_s
            for spec, session, store, _ in loaded_specs:
                t0 = time.perf_counter()
                analysis, alerts = session.process(w, now)
                store.write_batch([analysis.result], alerts, [], now=now)
                times[spec.name].append((time.perf_counter() - t0) * 1000.0)
    rows = []
    for spec, session, store, load_s in loaded_specs:
        t = times[spec.name]
        rows.append({
            "config": spec.name, "threads": spec.threads, "side_by_side": spec.side_by_side,
            "gate_dbfs": spec.min_rms_dbfs,
            "windows": len(windows), "audio_s": round(audio_s, 1), "repeats": repeats,
            "ms_per_window": summarize(t),
            "rtf": round(sum(t) / 1000.0 / (audio_s * repeats), 4),
            "load_s": round(load_s, 2),
            "windows_skipped_quiet": session.analyzer.windows_skipped_quiet,
        })
        store.close()
        session.close()
    return rows
