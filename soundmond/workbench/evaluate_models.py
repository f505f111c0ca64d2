"""The models `soundmond evaluate` scores: from its flags or from a daemon config (`--config`), BirdNET or a Hugging
Face classifier (`python -m export hf`) as the bird model, YAMNet, AST or an hf tagger with its head.

A bird model is wrapped in `SpeciesModel`: per class, the highest confidence over the chunks of one 5-s window as the
daemon computes it (BirdNET: sigmoid of the scaled logit per 3-s chunk; hf: the model's activation of the scaled
logits per clip of the model's length, clips every `stride_s`), which classes are species, and what BirdNET-only
parts (the meta model's location / season filter) do not apply, with the reason, for the report to say.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from soundmond.config import BirdConfig, ConfigError, ConfigProblem, WindowConfig, load_config
from soundmond.models.birds import BirdnetMetaModel, BirdnetModel
from soundmond.models.hf import HfBirdModel, check_hf_sidecar, label_names, stride_problem
from soundmond.models.sessions import sigmoid
from soundmond.models.sidecar import ModelFolderError, read_sidecar

logger = logging.getLogger(__name__)

TAGGER_FAMILIES = ("yamnet", "ast", "hf")
DEFAULT_QUIET_BELOW_DBFS: float | None = WindowConfig().quiet_below_dbfs  # the daemon's default quiet floor

HF_NO_META = ("BirdNET's location / season filter needs its meta model; an hf bird model has none (the species "
              "figures are unfiltered)")


@dataclass(frozen=True)
class EvalModels:
    """Where the models come from: folders, the bird model's settings (family, sensitivity, species map), the head."""

    birds: Path
    tagger: Path
    head: Path | None
    bird_config: BirdConfig
    species_map: Path | None = None
    source: str = "flags"  # "flags", or the config file the models were read from
    # the daemon's quiet floor (windows.quiet_below_dbfs): --config's, else the default
    quiet_below_dbfs: float | None = DEFAULT_QUIET_BELOW_DBFS


@dataclass
class SpeciesModel:
    """A bird model as `evaluate` scores it (see the module docstring)."""

    family: str  # birdnet / hf
    name: str  # what the report calls it: "BirdNET", "hf Wav2Vec2ForSequenceClassification"
    folder: Path
    model: Any  # the daemon's model (BirdnetModel / HfBirdModel): a head that needs BirdNET runs its `detect`
    names: list[str]  # scientific name per class
    species_mask: npt.NDArray[np.bool_]  # True: a species (BirdNET's sound classes, an hf map's null labels: False)
    window_scores: Callable[[npt.NDArray[np.float32]], npt.NDArray[np.float32]]
    method: str
    meta: BirdnetMetaModel | None = None
    no_filter_reason: str | None = None  # why the location filter cannot be evaluated
    info: dict[str, Any] = field(default_factory=dict)
    excluded: dict[str, str] = field(default_factory=dict)  # a name of a class that is not a species -> why

    def unknown_reason(self, species: str) -> str:
        """Why `species` (a labelled file's) is not one the model can name."""
        return self.excluded.get(species, f"not in {self.name}'s labels")

    @property
    def sample_rate_hz(self) -> int:
        return int(self.model.sample_rate_hz)


def models_from_args(args: Any) -> EvalModels:
    """The flags (`--birds`, `--tagger`, `--head`, `--species-map`), each falling back to `--config`'s models (resolved
    against the config's folder), else to models/birdnet and models/yamnet. Raises `ConfigError`."""
    threads = int(args.threads)
    if args.config is None:
        birds = args.birds or Path("models/birdnet")
        family = bird_family(birds)
        config = BirdConfig(family=family, path=birds, threads=threads, min_confidence=0.0)  # type: ignore[arg-type]
        return EvalModels(birds, args.tagger or Path("models/yamnet"), args.head, config, args.species_map,
                          quiet_below_dbfs=DEFAULT_QUIET_BELOW_DBFS)
    loaded = load_config(args.config)
    models = loaded.config.models
    birds = args.birds or loaded.resolve(models.birds.path)
    species_map = args.species_map or (loaded.resolve(models.birds.species_map) if models.birds.species_map else None)
    family = bird_family(birds) if args.birds else models.birds.family
    config = models.birds.model_copy(update={"family": family, "path": birds, "threads": threads,
                                             "min_confidence": 0.0, "species_map": species_map})
    head = args.head or (loaded.resolve(models.head.path) if models.head.path else None)
    return EvalModels(birds, args.tagger or loaded.resolve(models.tagger.path), head, config, species_map,
                      str(loaded.path or args.config), loaded.config.windows.quiet_below_dbfs)


def bird_family(folder: Path) -> str:
    """birdnet or hf, from the folder's model.json (BirdNET when it cannot be read: loading it then says why)."""
    try:
        return "hf" if read_sidecar(folder).family == "hf" else "birdnet"
    except (ModelFolderError, OSError, ValueError):
        return "birdnet"


def tagger_family(folder: Path) -> str:
    """The tagger family of `folder` (yamnet, ast, or an hf folder exported with --role tagger); `ModelFolderError`
    for anything else."""
    family = read_sidecar(folder).family
    if family not in TAGGER_FAMILIES:
        raise ModelFolderError(folder, f"is a {family} folder, not a tagger",
                               "pass a YAMNet, AST or hf (`python -m export hf --role tagger`) folder as --tagger")
    if family == "hf":
        check_hf_sidecar(folder, key="--tagger", role="tagger")
    return family


def load_species_model(models: EvalModels) -> SpeciesModel:
    """The bird model of `models`, loaded by the daemon's own classes. Raises `ModelFolderError`, `ConfigError`."""
    cfg = models.bird_config
    if cfg.family == "hf":
        _check_stride(models)
        return _hf(HfBirdModel(models.birds, cfg, models.species_map), models.species_map)
    if models.species_map is not None:
        raise ConfigError("--species-map", [ConfigProblem(
            "--species-map", f"{models.birds} is a BirdNET folder: its labels name their species already", None,
            "leave out --species-map, or pass an hf bird folder (`python -m export hf`) as --birds")])
    return _birdnet(BirdnetModel(models.birds, cfg))


def _check_stride(models: EvalModels) -> None:
    """An hf clip shorter than the bird stride, refused with what `evaluate` itself takes: the stride comes only from
    a daemon config (`--config`; 3 s without one), so that is where the hint points."""
    sidecar = check_hf_sidecar(models.birds, key="--birds", role="birds")
    problem = stride_problem(sidecar, models.bird_config)
    if problem is None:
        return
    clip = f"{sidecar.chunk_samples / sidecar.sample_rate_hz:g}"
    if models.source == "flags":
        hint = (f"evaluate takes the stride from a daemon config: pass --config FILE whose models.birds has "
                f"stride_s: {clip} (or less); without --config it is {models.bird_config.stride_s:g} s")
        raise ConfigError("--birds", [ConfigProblem("--birds", f"{models.birds}: {problem.problem}", None, hint)])
    raise ConfigError(models.source, [ConfigProblem(
        problem.key, problem.problem, None, f"set models.birds.stride_s to at most {clip} in {models.source}")])


def _birdnet(birds: BirdnetModel) -> SpeciesModel:
    def window_scores(window: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        logits, _ = birds.chunk_outputs(window)
        return sigmoid(birds.logit_scale * logits.astype(np.float64)).max(axis=0).astype(np.float32)

    meta = None
    reason = None
    try:
        meta = BirdnetMetaModel(birds.folder, birds.sidecar)
    except ModelFolderError as exc:
        reason = f"{exc}"
        logger.warning("%s: the location filter cannot be evaluated", exc)
    non_species = ~np.asarray(birds.sound_class_mask)
    return SpeciesModel(
        "birdnet", "BirdNET", birds.folder, birds, list(birds.scientific_names),
        non_species, window_scores,
        "file score = max over 5-s windows and 3-s BirdNET chunks of sigmoid(sensitivity-scaled logit); non-species "
        "classes excluded; no confidence threshold; macro/weighted F1 over the labelled species",
        meta, reason,
        {"family": "birdnet", "folder": str(birds.folder), "model_sha256": birds.model_sha256,
         "source": birds.sidecar.source.id},
        {name: "one of BirdNET's non-species classes"
         for name, species in zip(birds.scientific_names, non_species, strict=True) if not species},
    )


def _hf(birds: HfBirdModel, species_map: Path | None) -> SpeciesModel:
    def window_scores(window: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        _, scores = birds.clip_scores(window)
        return scores.max(axis=0).astype(np.float32)

    clip_s = birds.chunk_samples / birds.sample_rate_hz
    arch = birds.model.architecture
    return SpeciesModel(
        "hf", f"hf {arch}", birds.folder, birds, list(birds.scientific_names), birds.species_mask.copy(),
        window_scores,
        f"file score = max over 5-s windows and the model's {clip_s:g}-s clips (every {birds.config.stride_s:g} s) of "
        f"its {birds.model.activation} of the sensitivity-scaled logits, as the transformers pipeline scores a clip; "
        "labels a species map sets to null excluded; no confidence threshold; macro/weighted F1 over the labelled "
        "species",
        None, HF_NO_META,
        {"family": "hf", "architecture": arch, "folder": str(birds.folder), "model_sha256": birds.model_sha256,
         "source": birds.sidecar.source.id, "activation": birds.model.activation, "clip_s": clip_s,
         "species_map": str(species_map) if species_map else None},
        _hf_excluded(birds, species_map),
    )


def _hf_excluded(birds: HfBirdModel, species_map: Path | None) -> dict[str, str]:
    """The names of the labels the species map sets to null (the label, and its scientific name when it has one)
    -> why a labelled file of that species is left out."""
    out: dict[str, str] = {}
    for label, species in zip(birds.labels, birds.species_mask, strict=True):
        if not species:
            why = f"the species map {species_map} sets its label {label!r} to null"
            for name in dict.fromkeys((label, label_names(label)[0])):
                out[name] = why
    return out
