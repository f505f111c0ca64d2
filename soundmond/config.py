"""The configuration: one pydantic schema, loaded and validated once; unknown keys are rejected.

Errors name the YAML key path and line and say how to fix it, e.g.
`models.birds.min_confidence: Input should be less than or equal to 1 (line 42) - use a value between 0 and 1`.
Secrets (the MQTT password) never live in the YAML: they come from an environment variable or a systemd credential.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from soundmond.data import AlertType

DEFAULT_CONFIG_PATHS = (Path("config.yaml"), Path("/etc/soundmond/config.yaml"))
SECRET_KEYS = {"password", "api_key", "apikey", "token", "secret"}
BIRDNET_CHUNK_S = 3.0  # BirdNET V2.4 analyses 3-s chunks (the chunk grid's unit; the sidecar says it again)


@dataclass(frozen=True)
class Refusal:
    """What a cross-field validator refuses: `key` (below the model that validates, e.g. ("min_baseline_days",)),
    the problem and how to fix it. Printed as `key.path: problem (line N) - hint` like every config problem."""

    key: tuple[str, ...]
    problem: str
    hint: str

    def __str__(self) -> str:
        return f"{'.'.join(self.key)}: {self.problem} - {self.hint}"


class RefusedError(ValueError):
    """Raised by a validator with one or more `Refusal`s; `parse_config` turns each into a `ConfigProblem` naming
    its own key and hint (pydantic hands the exception through as the error's `ctx["error"]`)."""

    def __init__(self, *refusals: Refusal) -> None:
        self.refusals = refusals
        super().__init__("; ".join(str(r) for r in refusals))


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class StationConfig(_Section):
    id: Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.-]+$")] = "station-1"
    latitude: Annotated[float, Field(ge=-90, le=90)] | None = None
    longitude: Annotated[float, Field(ge=-180, le=180)] | None = None
    name: str | None = None


class FileSourceConfig(_Section):
    type: Literal["file"] = "file"
    path: Path = Path("recordings")
    realtime: bool = False  # the folder is always searched recursively
    # dB SPL (re 20 uPa) of a signal whose RMS is full scale (0 dBFS) on this recorder at its gain: a 94 dB SPL
    # calibrator read at -30 dBFS gives 124. Set: the acoustic indices add `leq_db_spl` = leq_dbfs + calibration_db.
    calibration_db: Annotated[float, Field(gt=0, le=250)] | None = None


class MicSourceConfig(_Section):
    type: Literal["mic"] = "mic"
    device: str | int | None = None
    sample_rate_hz: Annotated[int, Field(ge=8000, le=384000)] = 48000
    channels: Annotated[int, Field(ge=1, le=32)] = 1
    channel: Annotated[int, Field(ge=0)] | None = None
    block_ms: Annotated[int, Field(ge=5, le=1000)] = 100
    gain_db: Annotated[float, Field(ge=-40, le=60)] = 0.0
    remove_dc: bool = True
    stall_timeout_s: Annotated[float, Field(gt=0)] = 5.0
    flat_timeout_s: Annotated[float, Field(gt=0)] = 60.0
    reopen_backoff_s: Annotated[float, Field(gt=0)] = 1.0
    reopen_backoff_max_s: Annotated[float, Field(gt=0)] = 60.0
    queue_blocks: Annotated[int, Field(ge=4)] = 200
    # dB SPL (re 20 uPa) of a signal whose RMS is full scale (0 dBFS) on this recorder at its gain: a 94 dB SPL
    # calibrator read at -30 dBFS gives 124. Set: the acoustic indices add `leq_db_spl` = leq_dbfs + calibration_db.
    calibration_db: Annotated[float, Field(gt=0, le=250)] | None = None


SourceConfig = Annotated[FileSourceConfig | MicSourceConfig, Field(discriminator="type")]


class WindowConfig(_Section):
    length_s: Annotated[float, Field(ge=1.0, le=60.0)] = 5.0
    hop_s: Annotated[float, Field(gt=0.0, le=60.0)] = 5.0
    min_rms_dbfs: Annotated[float, Field(le=0)] | None = None  # quiet windows below this skip the models (counted)
    # Windows below this RMS level (and digital silence, whatever the floor) are "quiet": no model runs, the group is
    # "quiet", no species. Null: only digital zeros are quiet. Chosen by measurement (README "Quiet windows"): the
    # YAMNet head shipped before issue 15 called digital zeros and -90 dBFS white/pink noise "industrial" (p 0.5-0.8),
    # -80/-70 dBFS noise "natural" (the shipped one: "other", p 0.61), BirdNET names Dryobates minor (~0.5) on white
    # noise at every level; the quietest of the corpus's 469 natural 5-s windows is at -67.0 dBFS without DC (a Manx
    # shearwater BirdNET names at 1.0). -75 lies 8 dB under that and 15 dB over -90 dBFS hiss. YAMNet's `Silence`
    # score does not separate them (0.98 on that shearwater, 1.0 on the corpus's quiet forest nights): not used.
    quiet_below_dbfs: Annotated[float, Field(le=0)] | None = -75.0
    backlog_windows: Annotated[int, Field(ge=1, le=1000)] = 12
    backlog_policy: Literal["drop_oldest", "thin"] = "drop_oldest"

    @field_validator("hop_s")
    @classmethod
    def _hop_not_longer(cls, hop_s: float, info: ValidationInfo) -> float:
        length_s = info.data.get("length_s")
        if length_s is not None and hop_s > length_s:
            raise ValueError(f"must not be longer than windows.length_s ({length_s}): audio would go unanalysed")
        return hop_s


class TaggerConfig(_Section):
    family: Literal["yamnet", "ast", "hf"] = "yamnet"  # hf: a folder written by `python -m export hf --role tagger`
    path: Path = Path("models/yamnet")
    top_k: Annotated[int, Field(ge=1, le=50)] = 5
    threads: Annotated[int, Field(ge=1, le=64)] = 1
    pooling: Literal["mean", "max"] = "mean"


class LocationFilterConfig(_Section):
    enabled: bool = False
    week: Annotated[int, Field(ge=-1, le=48)] | Literal["auto"] = "auto"
    threshold: Annotated[float, Field(ge=0.0, le=1.0)] = 0.03


class BirdConfig(_Section):
    enabled: bool = True
    path: Path = Path("models/birdnet")
    threads: Annotated[int, Field(ge=1, le=64)] = 1
    # Seconds between the starts of BirdNET's 3-s chunks on the stream grid (`soundmond.models.grid`): 3 is
    # BirdNET-Analyzer's default grid (no overlap), smaller strides overlap the chunks (BirdNET's overlap = 3 - stride).
    stride_s: Annotated[float, Field(ge=0.1, le=3.0)] = 3.0  # BirdNET-Analyzer allows overlap 0 to 2.9 s
    # The older spelling, accepted alone as stride_s = 3 - chunk_overlap_s; refused together with stride_s.
    chunk_overlap_s: Annotated[float, Field(ge=0.0, le=2.9)] | None = None
    sensitivity: Annotated[float, Field(ge=0.5, le=1.5)] = 1.0
    min_confidence: Annotated[float, Field(ge=0.0, le=1.0)] = 0.25
    include: list[str] = Field(default_factory=list)
    exclude: list[str] = Field(default_factory=list)
    location_filter: LocationFilterConfig = LocationFilterConfig()
    # birdnet, or hf: a Hugging Face audio classifier (`python -m export hf --role birds`), species from its labels or
    # from `species_map` (a YAML file: label -> scientific name, or -> {scientific: ..., common: ...}, or -> null for
    # a label that is not a species)
    family: Literal["birdnet", "hf"] = "birdnet"
    species_map: Path | None = None

    @model_validator(mode="after")
    def _birdnet_only(self) -> BirdConfig:
        refusals = []
        if self.family != "birdnet" and self.location_filter.enabled:
            refusals.append(Refusal(("location_filter", "enabled"),
                                    f"the location filter is BirdNET's meta model; a {self.family} bird model has none",
                                    "set models.birds.location_filter.enabled: false, or use family: birdnet"))
        if self.family == "birdnet" and self.species_map is not None:
            refusals.append(Refusal(("species_map",), "BirdNET labels name their species already",
                                    "remove models.birds.species_map, or set models.birds.family: hf"))
        if refusals:
            raise RefusedError(*refusals)
        return self

    @model_validator(mode="after")
    def _stride_from_overlap(self) -> BirdConfig:
        if self.chunk_overlap_s is None:
            return self
        if "stride_s" in self.model_fields_set:
            raise RefusedError(Refusal(
                ("chunk_overlap_s",),
                f"set together with stride_s ({self.stride_s:g}); chunk_overlap_s is the older spelling of the same "
                "setting",
                f"remove chunk_overlap_s and keep stride_s (stride_s = 3 - overlap: {self.chunk_overlap_s:g} s overlap "
                f"is stride_s: {BIRDNET_CHUNK_S - self.chunk_overlap_s:g})",
            ))
        object.__setattr__(self, "stride_s", BIRDNET_CHUNK_S - self.chunk_overlap_s)  # frozen: set once, here
        return self


class HeadConfig(_Section):
    path: Path | None = None  # None: the head shipped for the tagger family


class ModelsConfig(_Section):
    tagger: TaggerConfig = TaggerConfig()
    birds: BirdConfig = BirdConfig()
    head: HeadConfig = HeadConfig()
    # run the tagger and BirdNET on a window at the same time (two threads, each with its own `threads`) instead of
    # one after the other: on 2+ cores with 1 thread per model, both cores work (`soundmond bench`: side-by-side lever)
    side_by_side: bool = True


class _BaselineRule(_Section):
    """A span rule compared with the same span on previous days (see soundscape/alerts.py)."""

    span_s: Annotated[int, Field(ge=60)] = 3600
    baseline_days: Annotated[int, Field(ge=1, le=365)] = 7
    min_baseline_days: Annotated[int, Field(ge=1, le=365)] = 3

    @model_validator(mode="after")
    def _can_be_ready(self) -> _BaselineRule:
        if self.min_baseline_days > self.baseline_days:
            raise RefusedError(Refusal(
                ("min_baseline_days",),
                f"{self.min_baseline_days} days is more than baseline_days ({self.baseline_days}): the rule would "
                "never be ready",
                "make it at most baseline_days, or raise baseline_days",
            ))
        return self


class FrequencyAlertConfig(_BaselineRule):
    k: Annotated[float, Field(gt=0)] = 3.0
    min_std: Annotated[float, Field(gt=0)] = 1.0  # std floor: a constant baseline does not alert on +1
    low_min_mean: Annotated[float, Field(ge=0)] = 5.0  # LOW_FREQUENCY only for species with this baseline mean


class IndustrialRiseConfig(_BaselineRule):
    margin: Annotated[float, Field(gt=0, le=1)] = 0.2
    min_windows: Annotated[int, Field(ge=1)] = 30


class BirdActivityDropConfig(_BaselineRule):
    drop_fraction: Annotated[float, Field(gt=0, le=1)] = 0.5
    min_baseline_mean: Annotated[float, Field(ge=0)] = 10.0  # bird windows per span; below, a drop is noise


def _alert_name(v: object) -> object:
    """An alert type name, any case; an unknown one is refused with the list of known ones."""
    name = str(v).strip().upper()
    if name not in AlertType.__members__:
        raise RefusedError(Refusal((), f"unknown alert type {v!r}", f"use one of {', '.join(AlertType.__members__)}"))
    return name


AlertName = Annotated[AlertType, BeforeValidator(_alert_name)]


class AlertsConfig(_Section):
    rare_species: list[str] = Field(default_factory=list)
    rare_occurrence_below: Annotated[float, Field(ge=0, le=1)] | None = 0.01
    low_confidence_below: Annotated[float, Field(ge=0, le=1)] = 0.5
    unknown_sound_below: Annotated[float, Field(ge=0, le=1)] = 0.3
    # ...and the head's own call is below this (its top group probability, calibrated at unseen sources by the
    # shipped head's temperature): a window the head calls industrial at 0.7 has been recognised. Measured on the
    # corpus (`analyze` of all 588 windows; the head saw these clips in training): 71 windows had tagger and birds
    # under 0.3, 15 of them misclassified by the head; at 0.6 the guard keeps 24 (7 misclassified) and lets 8
    # misclassified through; at 0.8, 50 (13) and 2, most of the 50 DCASE machines the head calls right at p 0.55-0.79.
    # Null: the models' scores alone.
    unknown_sound_head_below: Annotated[float, Field(ge=0, le=1)] | None = 0.6
    frequency: FrequencyAlertConfig = FrequencyAlertConfig()
    industrial_rise: IndustrialRiseConfig = IndustrialRiseConfig()
    bird_activity_drop: BirdActivityDropConfig = BirdActivityDropConfig()
    cooldown_s: Annotated[float, Field(ge=0)] = 3600.0
    clear_after_s: Annotated[float, Field(ge=0)] = 600.0
    silent_recorder_s: Annotated[float, Field(gt=0)] = 600.0  # quiet windows in a row for this long: RECORDER_SILENT
    # sound this long without a quiet window ends a quiet episode; shorter (a dead microphone's clicks) does not
    silent_recorder_break_s: Annotated[float, Field(gt=0)] = 60.0
    disabled: list[AlertName] = Field(default_factory=list)

    def rules(self) -> dict[str, _BaselineRule]:
        """The span rules by their key under `alerts`."""
        return {"frequency": self.frequency, "industrial_rise": self.industrial_rise,
                "bird_activity_drop": self.bird_activity_drop}


def alert_span_refusals(alerts: AlertsConfig, spans_s: Sequence[int]) -> list[Refusal]:
    """Every span rule whose `span_s` is longer than the longest aggregation span (it would have no figures)."""
    longest = max(spans_s, default=0)
    return [
        Refusal(("alerts", name, "span_s"),
                f"{rule.span_s} s is longer than the longest aggregation span ({longest} s)",
                "add it to aggregation.spans_s or shorten it")
        for name, rule in alerts.rules().items()
        if rule.span_s > longest
    ]


class IndicesConfig(_Section):
    # Acoustic indices per window (NDSI, ACI, ADI, AEI, BI, entropies, Leq: `soundmond.soundscape.indices`), stored,
    # published and aggregated per span. Cost measured on an AMD EPYC (2 vCPUs, numpy 2.4): 6.5 ms of CPU per 5-s
    # window at 48 kHz (3.6 ms at 22.05 kHz), 0.13 % of real time, against hundreds of ms for the models. Off: no
    # indices anywhere (their columns stay NULL, messages omit them).
    enabled: bool = True


class AggregationConfig(_Section):
    spans_s: list[Annotated[int, Field(ge=10)]] = Field(default_factory=lambda: [60, 3600, 86400])

    @field_validator("spans_s")
    @classmethod
    def _non_empty_sorted(cls, v: list[int]) -> list[int]:
        if not v:
            raise ValueError("give at least one span in seconds, e.g. [60, 3600, 86400]")
        return sorted(set(v))


class StoreConfig(_Section):
    path: Path = Path("var/soundmond.db")
    retention_days: Annotated[float, Field(gt=0)] = 90
    max_size_mb: Annotated[float, Field(gt=0)] = 2048
    batch_size: Annotated[int, Field(ge=1, le=10000)] = 50
    flush_interval_s: Annotated[float, Field(gt=0, le=60)] = 1.0
    outbox_max_rows: Annotated[int, Field(ge=100)] = 100_000
    outbox_full_policy: Literal["drop_oldest_detections", "refuse_new"] = "drop_oldest_detections"
    outbox_keep_sent_s: Annotated[float, Field(ge=0)] = 86400.0  # sent outbox rows kept this long for debugging


class TlsConfig(_Section):
    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None
    insecure: bool = False


class MqttConfig(_Section):
    enabled: bool = False
    host: str = "localhost"
    port: Annotated[int, Field(ge=1, le=65535)] = 1883
    protocol: Literal["3.1.1", "5"] = "5"
    client_id: str | None = None
    topic_prefix: str | None = None  # default soundmond/<station_id>
    username: str | None = None
    password_env: str | None = "SOUNDMOND_MQTT_PASSWORD"
    password_credential: str | None = "mqtt_password"
    tls: TlsConfig | None = None
    keepalive_s: Annotated[int, Field(ge=5, le=3600)] = 60
    publish_windows: bool = False
    soundscape_interval_s: Annotated[float, Field(ge=1)] = 60.0
    heartbeat_interval_s: Annotated[float, Field(ge=1)] = 60.0
    reconnect_min_s: Annotated[float, Field(gt=0)] = 1.0
    reconnect_max_s: Annotated[float, Field(gt=0)] = 60.0
    # After a LOST connection, rows the broker acknowledged in the last resend_acked_s before the loss are published
    # once more on the next connection (at most once per row): a broker that crashes can lose messages it already
    # acknowledged (Mosquitto keeps deliveries in memory until its next autosave). Subscribers dedupe on event_id.
    # 0 turns it off.
    resend_acked_s: Annotated[float, Field(ge=0)] = 30.0
    # When a run ends (end of the files, SIGTERM), the publisher gets this long to publish every pending outbox row and
    # receive its PUBACK (reconnecting if need be); what is left is logged with its count and kept for the next start.
    drain_timeout_s: Annotated[float, Field(ge=0)] = 10.0
    home_assistant_discovery: bool = False
    discovery_prefix: str = "homeassistant"


class LoggingConfig(_Section):
    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"


class EvidenceConfig(_Section):
    """Evidence clips (soundmond.outputs.evidence): FLAC of what a detection or an alert heard. Off by default: keeping
    audio of a place is the operator's decision (consent, local law); `privacy` applies whenever it is on."""

    enabled: bool = False
    path: Path = Path("var/evidence")  # relative paths are resolved against the config file's folder
    pad_s: Annotated[float, Field(ge=0.0, le=30.0)] = 1.0  # audio kept before and after the chunk / window
    min_confidence: Annotated[float, Field(ge=0.0, le=1.0)] = 0.5  # detections below get no clip
    alerts: bool = True  # a clip for every alert raised by a window
    max_per_species_per_hour: Annotated[int, Field(ge=1)] = 10  # per species per UTC hour (alerts per type)
    max_mb: Annotated[float, Field(gt=0)] = 1024.0  # all clips together; the oldest written are deleted first
    retention_days: Annotated[float, Field(gt=0)] = 30.0  # a clip is deleted this long after it was written


class PrivacyConfig(_Section):
    """Speech privacy for evidence clips (soundmond.outputs.privacy): a window scoring human speech above
    `speech_threshold` never has its audio saved (`drop`), or its speech band is attenuated (`mute`)."""

    enabled: bool = True
    speech_threshold: Annotated[float, Field(ge=0.0, le=1.0)] = 0.1
    mode: Literal["drop", "mute"] = "drop"
    mute_band_hz: tuple[Annotated[float, Field(ge=0.0)], Annotated[float, Field(gt=0.0)]] = (300.0, 3400.0)
    mute_db: Annotated[float, Field(gt=0.0, le=200.0)] = 60.0

    @field_validator("mute_band_hz")
    @classmethod
    def _band_ordered(cls, v: tuple[float, float]) -> tuple[float, float]:
        if v[0] >= v[1]:
            raise ValueError("give [low, high] in Hz with low < high, e.g. [300, 3400]")
        return v


class MetricsConfig(_Section):
    """Prometheus metrics over HTTP (`soundmond.outputs.metrics`): off unless `port` is set."""

    port: Annotated[int, Field(ge=1, le=65535)] | None = None
    bind: str = "127.0.0.1"  # the address the metrics server listens on; 0.0.0.0 exposes it to the network


class Config(_Section):
    station: StationConfig = StationConfig()
    source: SourceConfig = FileSourceConfig()
    windows: WindowConfig = WindowConfig()
    models: ModelsConfig = ModelsConfig()
    aggregation: AggregationConfig = AggregationConfig()
    indices: IndicesConfig = IndicesConfig()
    alerts: AlertsConfig = AlertsConfig()
    store: StoreConfig = StoreConfig()
    mqtt: MqttConfig = MqttConfig()
    logging: LoggingConfig = LoggingConfig()
    evidence: EvidenceConfig = EvidenceConfig()
    privacy: PrivacyConfig = PrivacyConfig()
    metrics: MetricsConfig = MetricsConfig()

    @model_validator(mode="after")
    def _alert_spans_aggregated(self) -> Config:
        refusals = alert_span_refusals(self.alerts, self.aggregation.spans_s)
        if refusals:
            raise RefusedError(*refusals)
        return self


@dataclass(frozen=True)
class ConfigProblem:
    key: str
    problem: str
    line: int | None
    hint: str

    def __str__(self) -> str:
        where = f" (line {self.line})" if self.line else ""
        return f"{self.key}: {self.problem}{where} - {self.hint}"


class ConfigError(Exception):
    """The configuration file cannot be used; `problems` lists every key that is wrong."""

    def __init__(self, path: Path | str, problems: list[ConfigProblem]) -> None:
        self.path = str(path)
        self.problems = problems
        super().__init__(f"{path}: " + "; ".join(str(p) for p in problems))


@dataclass(frozen=True)
class LoadedConfig:
    config: Config
    path: Path | None
    sha256: str  # of the file's bytes (reported in heartbeats)
    lines: Mapping[tuple[str, ...], int] = field(default_factory=dict, compare=False, repr=False)  # key path -> line

    def line(self, key: str) -> int | None:
        """The YAML line of a dotted key path (list items by index: `alerts.rare_species.0`); None when the key is
        not in the file."""
        return self.lines.get(tuple(key.split(".")))

    def problem(self, key: str, problem: str, hint: str) -> ConfigProblem:
        """A problem about `key`, with the key's line in this file."""
        return ConfigProblem(key, problem, self.line(key), hint)

    def resolve(self, p: Path) -> Path:
        """Relative paths in the config are relative to the config file's folder."""
        if p.is_absolute() or self.path is None:
            return p
        return (self.path.parent / p).resolve()


def key_lines(text: str) -> dict[tuple[str, ...], int]:
    """Map every key path of a YAML document to its 1-based line."""
    lines: dict[tuple[str, ...], int] = {}
    try:
        root = yaml.compose(text)
    except yaml.YAMLError:
        return lines

    def walk(node: yaml.Node, prefix: tuple[str, ...]) -> None:
        if isinstance(node, yaml.MappingNode):
            for key_node, value_node in node.value:
                path = (*prefix, str(key_node.value))
                lines[path] = key_node.start_mark.line + 1
                walk(value_node, path)
        elif isinstance(node, yaml.SequenceNode):
            for i, item in enumerate(node.value):
                path = (*prefix, str(i))
                lines[path] = item.start_mark.line + 1
                walk(item, path)

    if root is not None:
        walk(root, ())
    return lines


def _hint(error_type: str, key: str, msg: str) -> str:
    leaf = key.rsplit(".", 1)[-1]
    if error_type == "extra_forbidden":
        if leaf.lower() in SECRET_KEYS:
            return (
                "secrets never go in the YAML: set mqtt.password_env (an environment variable name) or "
                "mqtt.password_credential (a systemd LoadCredential name) instead"
            )
        return "remove it or check its spelling against the commented config.yaml"
    if error_type in ("missing",):
        return "add this key"
    if error_type.startswith(("greater", "less")):
        return "use a value within the allowed range"
    if error_type in ("literal_error", "union_tag_invalid"):
        return "use one of the allowed values"
    if error_type.endswith(("_type", "_parsing")):
        return "use a value of the right type"
    return "fix the value"


def _problems_from(exc: ValidationError, lines: dict[tuple[str, ...], int]) -> list[ConfigProblem]:
    problems = []
    for err in exc.errors():
        # drop the discriminator tag pydantic inserts for tagged unions (e.g. source.mic.device)
        loc = [str(p) for p in err["loc"] if p not in ("file", "mic") or err["loc"][0] != "source"]
        if err["type"] == "union_tag_invalid":
            loc.append(str((err.get("ctx") or {}).get("discriminator", "type")).strip("'"))
        error = (err.get("ctx") or {}).get("error")
        if isinstance(error, RefusedError):
            for refusal in error.refusals:
                path = [*loc, *refusal.key]
                problems.append(ConfigProblem(".".join(path) or "(top level)", refusal.problem,
                                              _nearest_line(path, lines), refusal.hint))
            continue
        key = ".".join(loc) or "(top level)"
        msg = err["msg"].removeprefix("Value error, ")
        problems.append(ConfigProblem(key, msg, _nearest_line(loc, lines), _hint(err["type"], key, msg)))
    return problems


def _nearest_line(loc: Sequence[str], lines: Mapping[tuple[str, ...], int]) -> int | None:
    """The line of the key, or of its nearest parent in the file (a default value has no line of its own)."""
    for n in range(len(loc), 0, -1):
        line = lines.get(tuple(loc[:n]))
        if line:
            return line
    return None


def parse_config(text: str, path: Path | str = "<config>") -> Config:
    """Validate YAML text; raise `ConfigError` listing every problem with its key path and line."""
    try:
        data: Any = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark is not None else None
        raise ConfigError(
            path, [ConfigProblem("(yaml)", f"not valid YAML: {getattr(exc, 'problem', exc)}", line,
                                 "check indentation and quoting around that line")]
        ) from exc
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(path, [ConfigProblem("(top level)", "the file must be a mapping of sections", 1,
                                               "start from the commented config.yaml")])
    try:
        return Config.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(path, _problems_from(exc, key_lines(text))) from exc


def load_config(path: Path | str | None = None) -> LoadedConfig:
    """Load the config from `path`, or the first default location that exists, or built-in defaults."""
    if path is None:
        for candidate in DEFAULT_CONFIG_PATHS:
            if candidate.is_file():
                path = candidate
                break
    if path is None:
        return LoadedConfig(Config(), None, hashlib.sha256(b"").hexdigest())
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ConfigError(path, [ConfigProblem("(file)", f"cannot read {path} ({exc.strerror})", None,
                                               "give the path of a readable config.yaml")]) from exc
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(path, [ConfigProblem("(file)", f"{path} is not UTF-8 text", None,
                                               "save it as UTF-8")]) from exc
    config = parse_config(text, path)
    return LoadedConfig(config, path.resolve(), hashlib.sha256(raw).hexdigest(), key_lines(text))


def read_secret(env_name: str | None, credential_name: str | None) -> str | None:
    """A secret from systemd's $CREDENTIALS_DIRECTORY/<name> first, else the environment variable. Never logged."""
    cred_dir = os.environ.get("CREDENTIALS_DIRECTORY")
    if credential_name and cred_dir:
        cred = Path(cred_dir) / credential_name
        if cred.is_file():
            return cred.read_text().rstrip("\r\n")
    if env_name:
        value = os.environ.get(env_name)
        if value:
            return value
    return None
