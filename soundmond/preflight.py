"""The preflight: everything `soundmond run` would refuse, found before anything is loaded.

`soundmond check-config` prints it and `soundmond run` runs it first (and refuses with the same lines and exit code).
The configuration itself is validated by `load_config` (schema and cross-field rules); the preflight checks what the
file points at, in the order `run` meets it, each check fast and without an ONNX Runtime session:

1. config  (exit 2) species names in `models.birds.include` / `exclude` and `alerts.rare_species` are BirdNET labels
2. models  (exit 3) the tagger and BirdNET folders are present, their sidecar fits the configuration and every file
                    matches its checksum (`check_sidecar`: reads and hashes, opens no session); the head is present,
                    intact (its embedded checksum) and made for the configured tagger (family and label count in its
                    embedded meta), and needs no BirdNET output when birds are off
3. store   (exit 5) the store's folder exists or can be created, and can be written; so can evidence.path
4. source  (exit 2) a file source's path (or `run --source`) exists; a microphone that cannot be found now is only a
                    warning (a USB microphone may appear after boot; `run` exits 4 while it is missing and systemd
                    starts it again)

`quick=True` skips the model folders and the head (steps 1 and 2). Every problem is a `ConfigProblem`:
`key.path: problem (line N) - how to fix`, the line from the YAML when the key is in the file. The exit code is the one
of the first stage with a problem.
"""

from __future__ import annotations

import difflib
import errno
import os
import socket
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from soundmond.config import ConfigError, ConfigProblem, FileSourceConfig, LoadedConfig, MicSourceConfig
from soundmond.errors import ExitCode
from soundmond.head.loader import load_head
from soundmond.head.meta import (
    HeadError,
)
from soundmond.models.birds import is_sound_class, split_birdnet_label
from soundmond.models.hf import birdnet_only_warnings, check_hf_sidecar, species_names, stride_problem
from soundmond.models.sessions import check_sidecar, read_labels
from soundmond.models.sidecar import ModelFolderError

STORE_HINT = "create it, or give store.path a folder the service user may write"


@dataclass(frozen=True)
class Preflight:
    """What `run` would refuse (`problems`, in the order `run` meets them) and what it would only warn about."""

    problems: tuple[ConfigProblem, ...]
    warnings: tuple[ConfigProblem, ...]
    exit_code: ExitCode  # the code `run` gives for the first problem; OK when there is none

    @property
    def ok(self) -> bool:
        return not self.problems

    def refused(self, file: TextIO | None = None) -> ExitCode | None:
        """None when nothing is refused; else every problem on `file` (default stderr), one a line, and the exit code
        `run` gives for them."""
        if self.ok:
            return None
        for problem in self.problems:
            print(str(problem), file=file or sys.stderr)
        return self.exit_code


def preflight(loaded: LoadedConfig, *, quick: bool = False, source_override: Path | None = None,
              models_only: bool = False) -> Preflight:
    """Check what the configuration points at (see the module docstring). `source_override` (`run --source`)
    replaces the configured source: it is checked instead. `models_only` (`analyze`, which names its own inputs and
    writes no store): the species names, the model folders and the head."""
    species: list[ConfigProblem] = []
    models: list[ConfigProblem] = []
    if not quick:
        species, models = _model_problems(loaded)
    source: list[ConfigProblem] = []
    warnings: list[ConfigProblem] = []
    store: list[ConfigProblem] = []
    if not models_only:
        store = _store_problems(loaded) + _evidence_problems(loaded)
        if source_override is not None:
            source, warnings = _override_problems(source_override)
        else:
            source, warnings = _source_problems(loaded)
        metrics, busy = _metrics_problems(loaded)
        source += metrics
        warnings += busy
    warnings += birdnet_only_warnings(loaded)  # settings an hf bird model does not use: said, not silently ignored
    stages = [(ExitCode.USAGE, species), (ExitCode.MODELS, models), (ExitCode.FATAL, store), (ExitCode.USAGE, source)]
    code = next((code for code, found in stages if found), ExitCode.OK)
    return Preflight(tuple(p for _, found in stages for p in found), tuple(warnings), code)


# --- models -----------------------------------------------------------------------------------------------------------


def _model_problems(loaded: LoadedConfig) -> tuple[list[ConfigProblem], list[ConfigProblem]]:
    """(species-name problems, model folder and head problems)."""
    cfg = loaded.config.models
    species: list[ConfigProblem] = []
    models: list[ConfigProblem] = []
    label_count: int | None = None
    try:
        tagger_path = loaded.resolve(cfg.tagger.path)
        label_count = (
            check_hf_sidecar(tagger_path, key="models.tagger", role="tagger")
            if cfg.tagger.family == "hf"
            else check_sidecar(tagger_path, cfg.tagger.family, cfg.tagger)
        ).label_count
    except ModelFolderError as exc:
        models.append(loaded.problem("models.tagger.path", f"{exc.folder}: {exc.problem}", exc.hint))
    if cfg.birds.enabled:
        folder = loaded.resolve(cfg.birds.path)
        try:
            sidecar = (
                check_hf_sidecar(folder, key="models.birds", role="birds")
                if cfg.birds.family == "hf"
                else check_sidecar(folder, "birdnet", cfg.birds)
            )
            labels = read_labels(folder, sidecar)
        except ModelFolderError as exc:
            models.append(loaded.problem("models.birds.path", f"{exc.folder}: {exc.problem}", exc.hint))
        else:
            species = _bird_species_problems(loaded, labels, folder / sidecar.labels_file)
            if cfg.birds.family == "hf" and (stride := stride_problem(sidecar, cfg.birds)) is not None:
                species.append(loaded.problem(stride.key, stride.problem, stride.hint))
    models += _head_problems(loaded, label_count)
    return species, models


def _bird_species_problems(loaded: LoadedConfig, labels: Sequence[str], labels_file: Path) -> list[ConfigProblem]:
    """`species_problems` with the names the configured bird model gives its labels (an hf model: its species map)."""
    birds = loaded.config.models.birds
    if birds.family != "hf":
        return species_problems(loaded, labels, labels_file)
    try:
        names = species_names(labels, loaded.resolve(birds.species_map) if birds.species_map else None)
    except ConfigError as exc:
        return [loaded.problem(p.key, p.problem, p.hint) for p in exc.problems]
    return species_problems(loaded, labels, labels_file, names)


def species_problems(
    loaded: LoadedConfig,
    labels: Sequence[str],
    labels_file: Path,
    naming: Sequence[tuple[str, str] | None] | None = None,
) -> list[ConfigProblem]:
    """Names in `models.birds.include` / `exclude` and `alerts.rare_species` that BirdNET does not know, one problem
    per name. The matching is the one that uses them: include / exclude match a label's scientific or common name or
    the whole label (`BirdnetModel`), rare species a species' scientific or common name (`AlertEngine`); case and
    surrounding spaces do not matter. `naming`: (scientific, common) per label, None for a non-species label (an hf
    bird model's); default: BirdNET's labels split, its sound classes not species."""
    if naming is None:
        parts = [split_birdnet_label(label) for label in labels]
        naming = [None if is_sound_class(s, c) else (s, c) for s, c in parts]
    else:
        parts = [n if n is not None else (label, label) for n, label in zip(naming, labels, strict=True)]
    filter_names = {n.casefold(): n for (s, c), label in zip(parts, labels, strict=True) for n in (s, c, label)}
    species_known = {n.casefold(): n for pair in naming if pair is not None for n in pair}
    cfg = loaded.config
    checks = [("models.birds.include", cfg.models.birds.include, filter_names),
              ("models.birds.exclude", cfg.models.birds.exclude, filter_names),
              ("alerts.rare_species", [n for n in cfg.alerts.rare_species if n.strip()], species_known)]
    problems = []
    for key, names, known in checks:
        for i, name in enumerate(names):
            if name.strip().casefold() in known:
                continue
            close = difflib.get_close_matches(name.strip().casefold(), known, n=1, cutoff=0.8)
            hint = f"did you mean {known[close[0]]!r}? " if close else ""
            hint += f"use scientific or common names as in {labels_file} (case does not matter)"
            problems.append(loaded.problem(f"{key}.{i}", f"unknown species {name!r}", hint))
    return problems


def _head_problems(loaded: LoadedConfig, tagger_label_count: int | None) -> list[ConfigProblem]:
    """The head `run` would load, loaded by the same code (`load_head`: an ONNX head is a few kB, its session opens in
    milliseconds), so check-config and run refuse it with the same words."""
    cfg = loaded.config.models
    configured = loaded.resolve(cfg.head.path) if cfg.head.path else None
    try:
        birdnet_embedding = cfg.birds.enabled and cfg.birds.family == "birdnet"  # an hf bird model gives none
        load_head(configured, cfg.tagger.family, tagger_label_count, birds_enabled=birdnet_embedding)
    except HeadError as exc:
        key = exc.config_keys[0] if configured is not None or len(exc.config_keys) == 1 else exc.config_keys[-1]
        where = f"{exc.path}: " if exc.where else ""  # a head no file was named for has no path to show
        return [loaded.problem(key, f"{where}{exc.problem}", exc.hint)]
    return []


# --- store and source -------------------------------------------------------------------------------------------------


def _store_problems(loaded: LoadedConfig) -> list[ConfigProblem]:
    """The store file, when it exists, is a writable file; its folder exists, or its nearest existing parent is a
    folder; and a file can be written there (a temporary file, removed at once: nothing else is created here, the
    store makes its folder when `run` opens it)."""
    path = Path(os.path.abspath(loaded.resolve(loaded.config.store.path)))
    if path.exists() and not path.is_file():
        return [loaded.problem("store.path", f"{path} exists and is not a file",
                               "give store.path the path of the SQLite database file")]
    if path.exists():
        try:  # opened for writing, nothing written
            with open(path, "r+b"):
                pass
        except OSError as exc:
            return [loaded.problem("store.path", f"{path} cannot be written ({exc.strerror or exc})", STORE_HINT)]
    existing = path.parent
    while not existing.exists() and existing.parent != existing:
        existing = existing.parent
    if not existing.is_dir():
        return [loaded.problem("store.path", f"cannot create the folder {path.parent}: {existing} is not a folder",
                               "give store.path a folder the service user may write (not under a file)")]
    try:  # a real write, not os.access: root passes every mode check, but not a read-only or virtual file system
        with tempfile.TemporaryFile(dir=existing, prefix=".soundmond-preflight-"):
            pass
    except OSError as exc:
        problem = f"cannot write in the folder {existing} ({exc.strerror or exc})"
        if existing != path.parent:
            problem = f"cannot create the folder {path.parent}: {problem}"
        return [loaded.problem("store.path", problem, STORE_HINT)]
    return []


def _evidence_problems(loaded: LoadedConfig) -> list[ConfigProblem]:
    """With evidence clips on: `evidence.path` is a folder, or can be made under its nearest existing parent."""
    if not loaded.config.evidence.enabled:
        return []
    path = Path(os.path.abspath(loaded.resolve(loaded.config.evidence.path)))
    existing = path
    while not existing.exists() and existing.parent != existing:
        existing = existing.parent
    hint = "give evidence.path a folder the service user may write (not a file, not under one)"
    if not existing.is_dir():
        return [loaded.problem("evidence.path", f"{existing} is not a folder", hint)]
    try:
        with tempfile.TemporaryFile(dir=existing, prefix=".soundmond-preflight-"):
            pass
    except OSError as exc:
        return [loaded.problem("evidence.path", f"cannot write in the folder {existing} ({exc.strerror or exc})",
                               hint)]
    return []


def _metrics_problems(loaded: LoadedConfig) -> tuple[list[ConfigProblem], list[ConfigProblem]]:
    """(problems, warnings): with `metrics.port` set, the address must resolve and be one this machine can listen
    on; a port in use is only a warning here (it may be this station's own running daemon; `run` refuses it)."""
    cfg = loaded.config.metrics
    if cfg.port is None:
        return [], []
    hint = "give metrics.bind an address of this machine (127.0.0.1, 0.0.0.0, ::) and a free metrics.port"
    try:
        family, kind, proto, _, address = socket.getaddrinfo(cfg.bind, cfg.port, type=socket.SOCK_STREAM)[0]
    except (socket.gaierror, UnicodeError) as exc:
        return [loaded.problem("metrics.bind", f"{cfg.bind!r} is not an address ({exc})", hint)], []
    try:
        with socket.socket(family, kind, proto) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            probe.bind(address)
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            return [], [loaded.problem("metrics.port", f"{cfg.bind}:{cfg.port} is in use now (run refuses to start "
                                       "while it is)", hint)]
        return [loaded.problem("metrics.bind", f"cannot listen on {cfg.bind}:{cfg.port} ({exc.strerror or exc})",
                               hint)], []
    return [], []


def _source_problems(loaded: LoadedConfig) -> tuple[list[ConfigProblem], list[ConfigProblem]]:
    """(problems, warnings) of the configured source."""
    src = loaded.config.source
    if isinstance(src, FileSourceConfig):
        path = loaded.resolve(src.path)
        if path.exists():
            return [], []
        return [loaded.problem("source.path", f"no such file or folder: {path}",
                               "give source.path a recording or a folder of recordings (relative to the config "
                               "file's folder), or use `run --source`")], []
    assert isinstance(src, MicSourceConfig)
    return [], _device_warnings(loaded, src)


def _override_problems(path: Path) -> tuple[list[ConfigProblem], list[ConfigProblem]]:
    """(problems, warnings) of `run --source`."""
    if path.exists():
        return [], []
    return [ConfigProblem("--source", f"no such file or folder: {path}", None,
                          "give --source a recording or a folder of recordings")], []


def _device_warnings(loaded: LoadedConfig, src: MicSourceConfig) -> list[ConfigProblem]:
    """The microphone as PortAudio resolves it now (by index, or name substrings as `sounddevice` matches them)."""
    later = "`run` exits 4 while it is missing and systemd starts it again"
    try:
        import sounddevice as sd  # here, not at the top: PortAudio may be missing, and only a microphone needs it
    except (ImportError, OSError) as exc:
        return [loaded.problem("source.type", f"cannot look for the microphone: PortAudio is not available ({exc})",
                               "install it (Debian: apt-get install libportaudio2, or scripts/install-system-deps.sh)")]
    label = "the default input device" if src.device is None else f"input device {src.device!r}"
    try:
        info = sd.query_devices(src.device, kind="input")
    except (sd.PortAudioError, ValueError) as exc:
        detail = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        return [loaded.problem("source.device", f"{label} is not found right now ({detail})",
                               f"plug the microphone in, or set source.device from `soundmond devices`; {later}")]
    have = int(info["max_input_channels"])
    if have < src.channels:
        return [loaded.problem("source.channels" if loaded.line("source.channels") else "source.device",
                               f"{label} ({info['name']}) has {have} input channel(s), source.channels is "
                               f"{src.channels}", f"set source.device from `soundmond devices`, or lower "
                               f"source.channels; {later}")]
    return []
