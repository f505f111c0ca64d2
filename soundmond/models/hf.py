"""Hugging Face audio classifiers exported by `python -m export hf`: as a bird model or as a tagger.

A folder holds `model.onnx` (outputs `logits` and `embedding`), `labels.txt` and `model.json` (family `hf`, with
`extra.hf` - role, activation, input name - and `extra.features`, the numpy front-end: `soundmond.models.hf_features`).

Clips: the model's clip is `chunk_samples` (5 s by default for waveform models, the extractor's length for AST and
Whisper). In the daemon a bird model gets the stream grid's chunks of that length (`detect_chunks`, a chunk every
`models.birds.stride_s`, as BirdNET; a file's last chunk is zero-padded when it holds at least half a clip of audio, and
its detections end where the file's audio does, as BirdNET-Analyzer reports its last chunk). On a window (`detect`,
`HfTagger.tag`, `top`): a window no longer than the clip is one model input, as the transformers pipeline feeds a whole
clip (waveform models take it at its own length, AST / Whisper features pad it); a longer window is split into clips
every `hop` samples from its start, plus one clip aligned to its end when they stop short of it. All clips go through
ONNX Runtime in one batched call.

Scores per clip: the exported activation of `sensitivity * logits` (softmax for single-label models, as the pipeline,
sigmoid for multi-label ones; sensitivity 1 gives the pipeline's scores exactly). A bird model's species confidence
is the max over clips (like BirdNET); a tagger pools with `models.tagger.pooling`.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt
import yaml

from soundmond.config import BirdConfig, ConfigError, ConfigProblem, LoadedConfig, TaggerConfig
from soundmond.data import BirdOutput, ChunkDetection, SpeciesScore, TaggerOutput
from soundmond.models.grid import GridChunk
from soundmond.models.hf_features import Features, features_from_settings
from soundmond.models.sessions import (
    MODEL_FILE,
    check_output_finite,
    check_session_io,
    check_window,
    frame_starts,
    has_dynamic_batch,
    make_session,
    pool_frames,
    read_labels,
    run_session,
    sigmoid,
    top_labels,
)
from soundmond.models.sidecar import ModelFolderError, Sidecar, model_digest, read_sidecar, verify_folder
from soundmond.protocols import Float32Array

logger = logging.getLogger(__name__)

FAMILY = "hf"
MIN_WAVEFORM_SAMPLES = 1600  # 0.1 s at 16 kHz: shorter clips are zero-padded (the conv front-end needs ~400)
_BINOMIAL = re.compile(r"^[A-Z][a-z]+ [a-z]+(-[a-z]+)?( [a-z]+)?$")


def softmax(x: npt.NDArray[np.floating]) -> npt.NDArray[np.float32]:
    z = np.asarray(x, dtype=np.float64)
    z = np.exp(z - z.max(axis=-1, keepdims=True))
    return (z / z.sum(axis=-1, keepdims=True)).astype(np.float32)


@dataclass(frozen=True)
class ClipOutputs:
    """One window's model outputs per clip."""

    starts: tuple[int, ...]  # clip start offsets in the window, samples
    logits: npt.NDArray[np.float32]  # [clips, labels]
    embedding: npt.NDArray[np.float32]  # [clips, d]


def check_hf_sidecar(folder: Path, *, key: str, role: str) -> Sidecar:
    """Read and verify an hf folder's `model.json` for `key` (models.birds / models.tagger) used as `role`, without
    opening a session (`soundmond check-config` uses it too); `ModelFolderError` with a hint naming the key."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ModelFolderError(
            folder, "no such model folder", f"set {key}.path to a folder written by `python -m export hf`"
        )
    sidecar = read_sidecar(folder)
    if sidecar.family != FAMILY:
        raise ModelFolderError(
            folder,
            f"holds a '{sidecar.family}' model but {key}.family is 'hf'",
            f"set {key}.family: {sidecar.family}, or point {key}.path at a folder from `python -m export hf`",
        )
    verify_folder(folder, FAMILY)
    hf = sidecar.extra.get("hf")
    settings = sidecar.extra.get("features")
    if not isinstance(hf, dict) or not isinstance(settings, dict):
        raise ModelFolderError(folder, "model.json has no extra.hf / extra.features", "re-export the model")
    if hf.get("role") != role:
        raise ModelFolderError(
            folder,
            f"was exported as a {hf.get('role')} model but {key} uses it as {role}",
            f"re-export it with `python -m export hf --role {role}`",
        )
    return sidecar


def birdnet_only_warnings(loaded: LoadedConfig) -> list[ConfigProblem]:
    """What a config with an hf bird model sets that only BirdNET uses, one warning each (check-config prints them,
    `run` logs them): `alerts.rare_occurrence_below` (BirdNET's meta model gives the expected occurrence; an hf model
    has none, so only `alerts.rare_species` raises RARE_SPECIES) and location-filter settings (`enabled: true` is
    refused by the config). Nothing for BirdNET or with birds disabled."""
    cfg = loaded.config
    birds = cfg.models.birds
    if not birds.enabled or birds.family != FAMILY:
        return []
    warnings = []
    below = cfg.alerts.rare_occurrence_below
    if below is not None:
        warnings.append(loaded.problem(
            "alerts.rare_occurrence_below",
            f"{below:g} does not apply to an hf bird model: it has no meta model, so a species' expected occurrence "
            "is unknown and RARE_SPECIES is raised only for the species in alerts.rare_species",
            "set alerts.rare_occurrence_below: null (this warning goes), or use models.birds.family: birdnet",
        ))
    if birds.location_filter.model_fields_set - {"enabled"}:
        warnings.append(loaded.problem(
            "models.birds.location_filter",
            "week / threshold are BirdNET's meta-model settings; an hf bird model has no meta model and ignores them",
            "remove models.birds.location_filter",
        ))
    return warnings


def stride_problem(sidecar: Sidecar, config: BirdConfig) -> ConfigProblem | None:
    """`models.birds.stride_s` longer than the model's clip (a short-clip model: audio between clips would never be
    analysed), as a problem naming the key; None when it fits."""
    clip_s = sidecar.chunk_samples / sidecar.sample_rate_hz
    if config.stride_s <= clip_s + 1e-9:
        return None
    return ConfigProblem("models.birds.stride_s", f"{config.stride_s:g} s is longer than the hf model's {clip_s:g}-s "
                         "clip: the audio between clips would never be analysed", None,
                         f"set models.birds.stride_s to at most {clip_s:g}")


class HfClassifier:
    """The checked folder, its numpy features and its ONNX Runtime session (shared by `HfBirdModel`, `HfTagger`)."""

    def __init__(self, folder: Path | str, *, threads: int, key: str, role: str) -> None:
        self.folder = Path(folder)
        sidecar = self.sidecar = check_hf_sidecar(self.folder, key=key, role=role)
        hf = sidecar.extra["hf"]
        settings = sidecar.extra["features"]
        if not isinstance(hf, dict) or not isinstance(settings, dict):  # pragma: no cover - check_hf_sidecar did
            raise ModelFolderError(self.folder, "model.json has no extra.hf / extra.features", "re-export the model")
        try:
            self.features: Features = features_from_settings(settings)
            self.activation = str(hf["activation"])
            self.input_name = str(hf["input"])
        except (KeyError, ValueError, TypeError) as exc:
            raise ModelFolderError(self.folder, f"extra.features / extra.hf unusable ({exc})", "re-export") from exc
        if self.activation not in ("softmax", "sigmoid"):
            raise ModelFolderError(self.folder, f"unknown activation {self.activation!r}", "re-export the model")
        self.kind = str(settings["kind"])
        self.sample_rate_hz = sidecar.sample_rate_hz
        if self.features.sampling_rate != self.sample_rate_hz:
            raise ModelFolderError(self.folder, "extra.features.sampling_rate != sample_rate_hz", "re-export")
        self.labels: list[str] = read_labels(self.folder, sidecar)
        if len(self.labels) != sidecar.label_count:
            raise ModelFolderError(
                self.folder, f"{len(self.labels)} labels but label_count {sidecar.label_count}", "re-export the model"
            )
        self.chunk_samples = sidecar.chunk_samples
        warmup = self.features(np.zeros(self.chunk_samples, dtype=np.float32))[None]
        self._session = make_session(self.folder / MODEL_FILE, threads, warmup={self.input_name: warmup})
        check_session_io(self.folder, self._session, sidecar, self.input_name, ("logits", "embedding"))
        logits_shape = sidecar.output("logits").shape
        if logits_shape[-1] != sidecar.label_count:
            raise ModelFolderError(self.folder, f"logits shape {logits_shape} != label_count", "re-export the model")
        self._dynamic = has_dynamic_batch(self._session, self.input_name)
        self.model_sha256 = model_digest(sidecar, MODEL_FILE)
        self.architecture = str(hf.get("architecture", "?"))
        nyquist = self.sample_rate_hz / 2
        top = min(float(settings.get("max_frequency_hz", nyquist)), nyquist)
        # (low, high) Hz the model hears: 0 to its Nyquist, or to the top of its mel filters (Whisper's fmax)
        self.band_hz: tuple[float, float] = (0, int(top) if top.is_integer() else top)

    def clip_starts(self, n_samples: int, hop: int) -> list[int]:
        return frame_starts(n_samples, self.chunk_samples, hop)

    def clip_outputs(self, samples: Float32Array, hop: int | None = None) -> ClipOutputs:
        """Per-clip logits and embeddings of one window (clips every `hop` samples, default: the clip length)."""
        wave = check_window(self.architecture, samples)
        if wave.size <= self.chunk_samples:
            starts, clips = [0], [wave]
        else:
            starts = self.clip_starts(wave.size, hop or self.chunk_samples)
            clips = [wave[s : s + self.chunk_samples] for s in starts]
        if self.kind == "waveform" and clips[0].size < MIN_WAVEFORM_SAMPLES:
            clips = [np.pad(clips[0], (0, MIN_WAVEFORM_SAMPLES - clips[0].size))]
        logits, embedding = self.run_clips(clips)
        return ClipOutputs(tuple(starts), logits, embedding)

    def run_clips(
        self, clips: Sequence[npt.NDArray[np.float32]]
    ) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.float32]]:
        """[clips, labels] logits and [clips, d] embeddings of clips of equal length, in one batched call."""
        batch = np.stack([self.features(clip) for clip in clips])
        logits, embedding = run_session(self._session, self.input_name, batch, ("logits", "embedding"), self._dynamic)
        check_output_finite(self.architecture, logits, embedding)
        return logits, embedding

    def scores(self, logits: npt.NDArray[np.float32], sensitivity: float = 1.0) -> npt.NDArray[np.float32]:
        """[clips, labels] scores: the model's activation of `sensitivity * logits`."""
        scaled = sensitivity * np.asarray(logits, dtype=np.float64)
        return softmax(scaled) if self.activation == "softmax" else sigmoid(scaled)


# --- tagger -----------------------------------------------------------------------------------------------------------


class HfTagger:
    """`models.tagger.family: hf`: scores pooled over the window's clips (`pooling`), embeddings averaged."""

    family = FAMILY

    def __init__(self, folder: Path | str, config: TaggerConfig) -> None:
        self.config = config
        self.model = HfClassifier(folder, threads=config.threads, key="models.tagger", role="tagger")
        self.folder = self.model.folder
        self.sidecar = self.model.sidecar
        self.sample_rate_hz = self.model.sample_rate_hz
        self.labels: Sequence[str] = self.model.labels
        self.model_sha256 = self.model.model_sha256
        logger.info(
            "hf tagger %s loaded from %s (%d labels, %s, clip %.2f s)",
            self.model.architecture,
            self.folder,
            len(self.labels),
            self.model.activation,
            self.model.chunk_samples / self.sample_rate_hz,
        )

    def tag(self, samples: Float32Array) -> TaggerOutput:
        out = self.model.clip_outputs(samples)
        probabilities = pool_frames(self.model.scores(out.logits), self.config.pooling)
        return TaggerOutput(
            probabilities=probabilities,
            embedding=out.embedding.mean(axis=0).astype(np.float32),
            top=top_labels(probabilities, self.labels, self.config.top_k),
        )


# --- bird model -------------------------------------------------------------------------------------------------------


def label_names(label: str) -> tuple[str, str]:
    """(scientific, common) of a label without a species map: 'Turdus merula_Eurasian Blackbird' (BirdNET style) is
    split; a binomial 'Turdus merula' is the scientific name; anything else ('Eurasian Blackbird') is used as both."""
    scientific, sep, common = label.partition("_")
    if sep and _BINOMIAL.match(scientific.strip()) and common.strip():
        return scientific.strip(), common.strip()
    return label.strip(), label.strip()


def load_species_map(path: Path, labels: Sequence[str]) -> dict[str, tuple[str, str] | None]:
    """label -> (scientific, common), or None for a label that is not a species, from a YAML species map.

    Entries: `label: Scientific name` (common name = the label), `label: {scientific: ..., common: ...}`, or
    `label: null`. Labels the map does not name keep `label_names`. Unknown labels and bad entries are one
    `ConfigError` listing all of them.
    """
    key = "models.birds.species_map"
    try:
        data = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise ConfigError(path, [ConfigProblem(key, f"cannot read {path} ({exc})".splitlines()[0], None,
                                               "give a readable YAML file: label -> scientific name")]) from exc
    if not isinstance(data, dict):
        raise ConfigError(path, [ConfigProblem(key, f"{path} is not a mapping", None,
                                               "write one `label: Scientific name` per line")])
    known = set(labels)
    problems: list[ConfigProblem] = []
    out: dict[str, tuple[str, str] | None] = {}
    for raw_label, entry in data.items():
        label = str(raw_label)
        if label not in known:
            problems.append(ConfigProblem(key, f"{label!r} is not one of the model's labels", None,
                                          "use the labels exactly as in the model folder's labels.txt"))
            continue
        if entry is None:
            out[label] = None
        elif isinstance(entry, str) and entry.strip():
            out[label] = (entry.strip(), label)
        elif isinstance(entry, dict) and isinstance(entry.get("scientific"), str) and set(entry) <= {
            "scientific",
            "common",
        }:
            out[label] = (entry["scientific"].strip(), str(entry.get("common") or label).strip())
        else:
            problems.append(ConfigProblem(key, f"{label!r}: {entry!r} is not a name, {{scientific, common}} or null",
                                          None, "write `label: Scientific name` or `label: null`"))
    if problems:
        raise ConfigError(path, problems)
    return out


def species_names(labels: Sequence[str], species_map: Path | None) -> list[tuple[str, str] | None]:
    """(scientific, common) per label, None for labels that are not species: the species map, else `label_names`."""
    mapped = load_species_map(species_map, labels) if species_map is not None else {}
    return [mapped[label] if label in mapped else label_names(label) for label in labels]


class HfBirdModel:
    """`models.birds.family: hf`: species from a Hugging Face classifier's labels (or `species_map`).

    Confidence per label = max over the window's clips of the model's activation of `sensitivity * logits`; kept:
    species (labels the map does not set to null) above `min_confidence`, in `include` when given, not in `exclude`.
    BirdNET-only settings (location filter, meta model) do not apply (the config refuses them); `occurrence` is None.
    """

    def __init__(self, folder: Path | str, config: BirdConfig, species_map: Path | None = None) -> None:
        self.config = config
        self.model = HfClassifier(folder, threads=config.threads, key="models.birds", role="birds")
        self.folder = self.model.folder
        self.sidecar = self.model.sidecar
        self.sample_rate_hz = self.model.sample_rate_hz
        self.labels = self.model.labels
        self.model_sha256 = self.model.model_sha256
        self.chunk_samples = self.model.chunk_samples
        self.band_hz = self.model.band_hz  # the raven table's Low / High Freq (`soundmond.outputs.birdformats`)
        if (problem := stride_problem(self.sidecar, config)) is not None:
            raise ConfigError("configuration", [problem])
        self.stride_s = config.stride_s  # the stream grid's stride (`soundmond.models.grid`), as for BirdNET
        self.hop_samples = min(self.chunk_samples, max(1, round(config.stride_s * self.sample_rate_hz)))
        names = species_names(self.labels, species_map)
        self.species_mask = np.array([n is not None for n in names])
        self.scientific_names = [n[0] if n else label for n, label in zip(names, self.labels, strict=True)]
        self.common_names = [n[1] if n else label for n, label in zip(names, self.labels, strict=True)]
        self._keep = self._name_mask(config)
        logger.info(
            "hf bird model %s loaded from %s (%d labels, %d species, %s, clip %.2f s)",
            self.model.architecture,
            self.folder,
            len(self.labels),
            int(self.species_mask.sum()),
            self.model.activation,
            self.chunk_samples / self.sample_rate_hz,
        )

    def _name_mask(self, config: BirdConfig) -> npt.NDArray[np.bool_]:
        index: dict[str, list[int]] = {}
        for i, names in enumerate(zip(self.scientific_names, self.common_names, self.labels, strict=True)):
            for name in names:
                index.setdefault(name.casefold(), []).append(i)
        problems = []
        masks = {}
        for key, wanted in (("include", config.include), ("exclude", config.exclude)):
            unknown = [n for n in wanted if n.strip().casefold() not in index]
            if unknown:
                problems.append(ConfigProblem(
                    f"models.birds.{key}", "unknown species: " + ", ".join(repr(n) for n in unknown), None,
                    f"use labels, scientific or common names of {self.folder / self.sidecar.labels_file}",
                ))
            mask = np.zeros(len(self.labels), dtype=bool)
            for n in wanted:
                mask[index.get(n.strip().casefold(), [])] = True
            masks[key] = mask
        if problems:
            raise ConfigError("configuration", problems)
        keep = self.species_mask & ~masks["exclude"]
        if config.include:
            keep &= masks["include"]
        return keep

    def clip_scores(self, samples: Float32Array) -> tuple[tuple[int, ...], npt.NDArray[np.float32]]:
        """(clip start offsets in samples, [clips, labels] scores) of one window: for per-chunk detections."""
        out = self.model.clip_outputs(samples, self.hop_samples)
        return out.starts, self.model.scores(out.logits, self.config.sensitivity)

    def _species(self, confidence: npt.NDArray[np.float32]) -> tuple[SpeciesScore, ...]:
        idx = np.flatnonzero(self._keep & (confidence >= self.config.min_confidence))
        idx = idx[np.argsort(-confidence[idx], kind="stable")]
        return tuple(SpeciesScore(self.scientific_names[i], self.common_names[i], float(confidence[i])) for i in idx)

    def _output(self, logits: npt.NDArray[np.float32], embedding: npt.NDArray[np.float32],
                chunks: Sequence[GridChunk]) -> BirdOutput:
        per_clip = self.model.scores(logits, self.config.sensitivity)
        confidence = per_clip.max(axis=0)
        detections = tuple(
            ChunkDetection(
                scientific_name=s.scientific_name, common_name=s.common_name, confidence=s.confidence,
                start_s=chunk.start_s, end_s=chunk.audio_end_s, start_unix_s=chunk.start_unix_s,
                end_unix_s=chunk.start_unix_s + (chunk.audio_end_s - chunk.start_s),
            )
            for chunk, scores in zip(chunks, per_clip, strict=False)
            for s in self._species(scores)
        )
        return BirdOutput(
            species=self._species(confidence),
            top_score=float(np.where(self.species_mask, confidence, 0.0).max()),
            embedding=embedding.mean(axis=0).astype(np.float32),
            detections=detections,
        )

    def detect(self, samples: Float32Array, *, start_unix_s: float) -> BirdOutput:
        """One window, in clips from its own start (no per-chunk detections)."""
        out = self.model.clip_outputs(samples, self.hop_samples)
        return self._output(out.logits, out.embedding, ())

    def detect_chunks(self, chunks: Sequence[GridChunk], *, start_unix_s: float) -> BirdOutput:
        """The stream grid's chunks (of `chunk_samples`) that end in one window: per-chunk detections and per-species
        max. No chunk: nothing detected, no embedding."""
        if not chunks:
            return BirdOutput(species=(), top_score=0.0, embedding=None)
        if any(np.asarray(c.samples).size != self.chunk_samples for c in chunks):
            raise ValueError(f"{self.model.architecture}: grid chunks must have {self.chunk_samples} samples")
        logits, embedding = self.model.run_clips([np.asarray(c.samples, dtype=np.float32) for c in chunks])
        return self._output(logits, embedding, chunks)

    def top(self, samples: Float32Array, k: int = 5) -> list[tuple[str, float]]:
        """The pipeline's answer: the `k` best labels with their scores (max over clips), no filters."""
        out = self.model.clip_outputs(samples, self.hop_samples)
        confidence = self.model.scores(out.logits, self.config.sensitivity).max(axis=0)
        return [(ls.label, ls.score) for ls in top_labels(confidence, self.labels, k)]

