"""BirdNET: species from 3-s chunks, and its location / season (meta) model."""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

from soundmond.config import BirdConfig, ConfigError, ConfigProblem
from soundmond.data import BirdOutput, ChunkDetection, LabelScore, SpeciesScore
from soundmond.models.grid import GridChunk
from soundmond.models.sessions import (
    BIRDNET_SAMPLE_RATE_HZ,
    MODEL_FILE,
    ModelOutputError,
    check_output_finite,
    check_session_io,
    check_sidecar,
    check_window,
    frame_array,
    make_session,
    read_labels,
    run_session,
    sigmoid,
)
from soundmond.models.sidecar import ModelFolderError, Sidecar, model_digest
from soundmond.protocols import Float32Array

logger = logging.getLogger(__name__)

# BirdNET V2.4 classes that are not species at all but sound classes (scientific part == common part). They are
# never reported as bird species; `BirdnetModel.detect_full` returns them separately as `sound_classes`. Rule used at
# load: a label whose scientific and common parts are equal, or whose scientific part is not "Genus species", is a
# sound class. The list below is what that rule finds in V2.4 (checked at load: a model whose rule result differs is
# logged). Note: two crickets (Gryllus assimilis, Miogryllus saussurei) are real species labelled this way; they are
# insects, not birds, so treating them as non-bird sound classes is correct for the bird list.
# BirdNET also holds real non-bird species (frogs, insects, a few mammals) with proper names: those stay species
# (they are natural sounds with a species name); exclude them with `models.birds.exclude` if unwanted.
BIRDNET_SOUND_CLASSES_V24: frozenset[str] = frozenset(
    {
        "Dog",
        "Engine",
        "Environmental",
        "Fireworks",
        "Gryllus assimilis",
        "Gun",
        "Human non-vocal",
        "Human vocal",
        "Human whistle",
        "Miogryllus saussurei",
        "Noise",
        "Power tools",
        "Siren",
    }
)

# --- BirdNET --------------------------------------------------------------------------------------------------------


def birdnet_week(when_unix_s: float) -> int:
    """BirdNET's week (1-48) of a UTC time: 4 weeks per month, week = (month - 1) * 4 + min(4, (day - 1) // 7 + 1)."""
    date = dt.datetime.fromtimestamp(when_unix_s, tz=dt.timezone.utc)
    return (date.month - 1) * 4 + min(4, (date.day - 1) // 7 + 1)


def logit_scale(sensitivity: float) -> float:
    """BirdNET-Analyzer's (and birdnetlib's) sigmoid scale for a user's sensitivity: clip(1 - (sensitivity - 1), 0.5,
    1.5). A higher sensitivity gives a flatter sigmoid, so more detections: `models.birds.sensitivity` means what it
    means in BirdNET-Analyzer, BirdNET-Pi and BirdNET-Go (1.0 is the same in all)."""
    return max(0.5, min(1.0 - (sensitivity - 1.0), 1.5))


def split_birdnet_label(label: str) -> tuple[str, str]:
    """'Turdus merula_Eurasian Blackbird' -> ('Turdus merula', 'Eurasian Blackbird')."""
    scientific, sep, common = label.partition("_")
    return scientific.strip(), (common.strip() if sep else scientific.strip())


def is_sound_class(scientific: str, common: str) -> bool:
    """True for BirdNET classes that are not bird species (Engine, Siren, Dog, Human vocal, ...): see
    `BIRDNET_SOUND_CLASSES_V24`."""
    parts = scientific.split()
    binomial = len(parts) == 2 and parts[0][:1].isupper() and parts[0][1:].islower() and parts[1].islower()
    return scientific == common or not binomial


@dataclass(frozen=True, eq=False)
class BirdDetection:
    """`BirdOutput` plus what BirdNET says about its non-species sound classes (Engine, Siren, Dog, ...)."""

    output: BirdOutput
    sound_classes: tuple[LabelScore, ...]  # sound classes above min_confidence, best first
    week: int | None  # the week used for occurrence (None when the station's location is unknown)


class BirdnetMetaModel:
    """BirdNET's location / season model (the `meta.onnx` of a BirdNET folder): occurrence per class at
    (latitude, longitude, week), week 1-48 or -1 for the whole year. Used by `BirdnetModel` (which tabulates every
    week of its station once and releases the session) and by `soundmond evaluate` (any place, any week)."""

    def __init__(self, folder: Path, sidecar: Sidecar, threads: int = 1) -> None:
        meta = sidecar.extra.get("meta_model")
        if not isinstance(meta, dict):
            raise ModelFolderError(folder, "no meta model in model.json", "re-export the BirdNET folder")
        file = str(meta.get("file", "meta.onnx"))
        if file not in sidecar.files:
            raise ModelFolderError(folder, f"meta model {file} is not in model.json's checksums", "re-export")
        self.label_count = sidecar.label_count
        self.session = make_session(folder / file, threads)
        self.input = str(meta.get("input") or self.session.get_inputs()[0].name)
        self.output = str(meta.get("output") or self.session.get_outputs()[0].name)

    def occurrence(self, latitude: float, longitude: float, week: int) -> npt.NDArray[np.float32]:
        x = np.array([[latitude, longitude, week]], dtype=np.float32)
        (out,) = self.session.run([self.output], {self.input: x})
        occurrence = np.asarray(out, dtype=np.float32).reshape(-1)
        check_output_finite("BirdNET meta model", occurrence)
        if occurrence.shape[0] != self.label_count:
            raise ModelOutputError(f"meta model returned {occurrence.shape[0]} values for {self.label_count} classes")
        return occurrence


class BirdnetModel:
    """BirdNET V2.4 on 48-kHz mono audio.

    Two ways in. `detect_chunks` (the daemon and `analyze`): the chunks of the stream grid that end in a window
    (`soundmond.models.grid`, every `stride_s` seconds from the start of the stream), each species kept per chunk
    (`BirdOutput.detections`) and its max over the window's chunks (`BirdOutput.species`). `detect` (training
    features, evaluation, the head's embedding when no grid chunk ends in a window): 3-s chunks every `stride_s`
    seconds from the window's own start; when they stop short of the end one more chunk aligned to the window's end is
    added (a 5-s window at stride 3 gives chunks at 0 s and 2 s), so no chunk is zero-padded unless the whole window
    is shorter than 3 s. Each chunk is its own ONNX Runtime call: batching a window's chunks gained about 2 % on 2
    cores (`soundmond bench`, levers) but doubles the float64 spectrogram intermediates (about 45 MB of peak RSS).
    Confidence = sigmoid(logit_scale(sensitivity) * logit) as BirdNET-Analyzer computes it, per species the max
    over chunks. The kept species are those above
    `min_confidence`, in `include` (when given), not in `exclude`, and - when the location filter is on and the
    station's latitude / longitude are set - with meta-model occurrence >= `location_filter.threshold` at that week.
    `SpeciesScore.occurrence` is filled whenever latitude / longitude are known, even with the filter off.
    Non-species classes (`BIRDNET_SOUND_CLASSES_V24`) are never species; `detect_full` reports them separately.
    """

    sample_rate_hz = BIRDNET_SAMPLE_RATE_HZ

    def __init__(
        self,
        folder: Path | str,
        config: BirdConfig,
        latitude: float | None = None,
        longitude: float | None = None,
    ) -> None:
        self.folder = Path(folder)
        self.config = config
        self.logit_scale = logit_scale(config.sensitivity)
        self.sidecar = check_sidecar(self.folder, "birdnet", config)
        labels = read_labels(self.folder, self.sidecar)
        self.labels = labels
        names = [split_birdnet_label(label) for label in labels]
        self.scientific_names = [s for s, _ in names]
        self.common_names = [c for _, c in names]
        sound = np.array([is_sound_class(s, c) for s, c in names])
        found = {s for (s, _), flag in zip(names, sound, strict=True) if flag}
        if found != BIRDNET_SOUND_CLASSES_V24:
            logger.warning(
                "%s: non-species classes differ from BirdNET V2.4's (%s)",
                self.folder,
                sorted(found ^ BIRDNET_SOUND_CLASSES_V24),
            )
        self.sound_class_mask = sound
        self.chunk_samples = self.sidecar.chunk_samples
        self.stride_s = config.stride_s
        self.hop_samples = min(self.chunk_samples, round(config.stride_s * self.sample_rate_hz))

        self._keep = self._name_mask(config)

        self.latitude = latitude
        self.longitude = longitude
        self.location_known = latitude is not None and longitude is not None
        self.filter_on = config.location_filter.enabled and self.location_known
        if config.location_filter.enabled and not self.location_known:
            logger.warning(
                "models.birds.location_filter.enabled is true but station.latitude / station.longitude are not set: "
                "species are not filtered by location"
            )
        # Before the species session, so the meta session's memory is gone again when the bigger one loads.
        self._occurrence_table = self._tabulate_occurrence() if self.location_known else {}

        self._session = make_session(self.folder / MODEL_FILE, config.threads)
        check_session_io(self.folder, self._session, self.sidecar, "audio", ("logits", "embedding"))
        self.model_sha256 = model_digest(self.sidecar, MODEL_FILE)
        logger.info(
            "BirdNET loaded from %s (%d classes, %d non-species, chunk stride %.2f s, location filter %s)",
            self.folder,
            len(labels),
            int(sound.sum()),
            config.stride_s,
            "on" if self.filter_on else "off",
        )

    def _name_mask(self, config: BirdConfig) -> npt.NDArray[np.bool_]:
        """Species allowed by include / exclude; unknown names are a configuration error listing them all."""
        index: dict[str, list[int]] = {}
        for i, (s, c) in enumerate(zip(self.scientific_names, self.common_names, strict=True)):
            index.setdefault(s.casefold(), []).append(i)
            index.setdefault(c.casefold(), []).append(i)
            index.setdefault(self.labels[i].casefold(), []).append(i)
        problems = []
        masks = {}
        for key, names in (("include", config.include), ("exclude", config.exclude)):
            unknown = [n for n in names if n.strip().casefold() not in index]
            if unknown:
                problems.append(
                    ConfigProblem(
                        f"models.birds.{key}",
                        "unknown species: " + ", ".join(repr(n) for n in unknown),
                        None,
                        f"use scientific or common names as in {self.folder / self.sidecar.labels_file} "
                        "(case does not matter)",
                    )
                )
            mask = np.zeros(len(self.labels), dtype=bool)
            for n in names:
                mask[index.get(n.strip().casefold(), [])] = True
            masks[key] = mask
        if problems:
            raise ConfigError("configuration", problems)
        keep = ~self.sound_class_mask & ~masks["exclude"]
        if config.include:
            keep &= masks["include"]
        return keep

    def _tabulate_occurrence(self) -> dict[int, npt.NDArray[np.float32]]:
        """The meta model's occurrence at the station for every week the config allows (-1..48: 50 x classes
        float32, about 1.3 MB), computed once; the meta session (about 75 MB resident) is released afterwards."""
        try:
            meta = BirdnetMetaModel(self.folder, self.sidecar)
        except ModelFolderError:
            if self.config.location_filter.enabled:
                raise
            logger.warning("%s: no meta model; occurrence unknown", self.folder)
            return {}
        assert self.latitude is not None and self.longitude is not None
        return {week: meta.occurrence(self.latitude, self.longitude, week) for week in range(-1, 49)}

    def week_for(self, start_unix_s: float) -> int:
        week = self.config.location_filter.week
        return birdnet_week(start_unix_s) if week == "auto" else int(week)

    def occurrence(self, week: int) -> npt.NDArray[np.float32] | None:
        """Meta-model occurrence [classes] at the station for `week` (1-48, -1 = all year), tabulated at load."""
        return self._occurrence_table.get(week)

    def chunk_outputs(self, samples: Float32Array) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.float32]]:
        """Per-chunk ([chunks, classes] logits, [chunks, 1024] embeddings) of one window (chunks from its start)."""
        wave = check_window("BirdNET", samples)
        return self._run(frame_array(wave, self.chunk_samples, self.hop_samples))

    def _run(self, chunks: npt.NDArray[np.float32]) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.float32]]:
        logits, embedding = run_session(self._session, "audio", chunks, ("logits", "embedding"), dynamic=False)
        check_output_finite("BirdNET", logits, embedding)
        return logits, embedding

    def _kept(self, confidence: npt.NDArray[np.float32], occurrence: npt.NDArray[np.float32] | None
              ) -> npt.NDArray[np.intp]:
        """Indices of the kept species (filters of the class docstring), best first."""
        keep = self._keep & (confidence >= self.config.min_confidence)
        if self.filter_on and occurrence is not None:
            keep &= occurrence >= self.config.location_filter.threshold
        idx = np.flatnonzero(keep)
        return idx[np.argsort(-confidence[idx], kind="stable")]

    def _species(self, confidence: npt.NDArray[np.float32], occurrence: npt.NDArray[np.float32] | None
                 ) -> tuple[SpeciesScore, ...]:
        return tuple(
            SpeciesScore(
                scientific_name=self.scientific_names[i],
                common_name=self.common_names[i],
                confidence=float(confidence[i]),
                occurrence=None if occurrence is None else float(occurrence[i]),
            )
            for i in self._kept(confidence, occurrence)
        )

    def detect_full(self, samples: Float32Array, *, start_unix_s: float) -> BirdDetection:
        logits, embedding = self.chunk_outputs(samples)
        return self._detection(logits, embedding, start_unix_s, ())

    def _detection(self, logits: npt.NDArray[np.float32], embedding: npt.NDArray[np.float32], start_unix_s: float,
                   chunks: Sequence[GridChunk]) -> BirdDetection:
        per_chunk = sigmoid(self.logit_scale * logits)
        confidence = per_chunk.max(axis=0)
        species_conf = np.where(self.sound_class_mask, 0.0, confidence)
        top_score = float(species_conf.max())
        week = self.week_for(start_unix_s) if self.location_known else None
        occurrence = self.occurrence(week) if week is not None else None
        detections = tuple(
            ChunkDetection(
                scientific_name=s.scientific_name, common_name=s.common_name, confidence=s.confidence,
                start_s=chunk.start_s, end_s=chunk.end_s, start_unix_s=chunk.start_unix_s,
                end_unix_s=chunk.end_unix_s, occurrence=s.occurrence,
            )
            for chunk, conf in zip(chunks, per_chunk, strict=False)
            for s in self._species(conf, occurrence)
        )
        sound_idx = np.flatnonzero(self.sound_class_mask & (confidence >= self.config.min_confidence))
        sound_idx = sound_idx[np.argsort(-confidence[sound_idx], kind="stable")]
        sounds = tuple(LabelScore(self.scientific_names[i], float(confidence[i])) for i in sound_idx)
        output = BirdOutput(species=self._species(confidence, occurrence), top_score=top_score,
                            embedding=embedding.mean(axis=0).astype(np.float32), detections=detections)
        return BirdDetection(output=output, sound_classes=sounds, week=week)

    def detect(self, samples: Float32Array, *, start_unix_s: float) -> BirdOutput:
        """Chunks from the window's own start (see the class docstring); no per-chunk detections."""
        return self.detect_full(samples, start_unix_s=start_unix_s).output

    def detect_chunks(self, chunks: Sequence[GridChunk], *, start_unix_s: float) -> BirdOutput:
        """The grid chunks that end in one window (`start_unix_s`: the window's start, for the location filter's
        week): per-chunk `detections` and per-species max `species`. No chunk: nothing detected, no embedding."""
        if not chunks:
            return BirdOutput(species=(), top_score=0.0, embedding=None)
        batch = np.stack([check_window("BirdNET", c.samples) for c in chunks])
        if batch.shape[1] != self.chunk_samples:
            raise ValueError(f"BirdNET: chunks of {batch.shape[1]} samples given, the model takes {self.chunk_samples}")
        logits, embedding = self._run(batch)
        return self._detection(logits, embedding, start_unix_s, chunks).output
