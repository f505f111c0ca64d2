"""The model sidecar: `model.json` beside every exported `model.onnx`.

`python -m export` writes it and the daemon checks it at start-up, with this one schema. A sidecar records where
a model came from, what it expects and returns, the checksum of every file of the folder (so a swapped or damaged
file is refused), the parity measured against the original runtime at export time, and the model's licence.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Final, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from soundmond.errors import HintedError
from soundmond.identity import file_sha256

SIDECAR_NAME = "model.json"
SIDECAR_SCHEMA_VERSION: Final = 1

Family = Literal["ast", "yamnet", "birdnet", "hf"]  # hf: any exported Hugging Face audio classifier

LICENCES: dict[str, str] = {
    "ast": "BSD-3-Clause",
    "yamnet": "Apache-2.0",
    "birdnet": "CC BY-NC-SA 4.0",
}


class ModelFolderError(HintedError):
    """A model folder is missing, damaged or does not match what the configuration asks for."""

    def __init__(self, folder: Path | str, problem: str, hint: str = "") -> None:
        self.folder = Path(folder)
        super().__init__(problem, hint, where=folder)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class TensorSpec(_Strict):
    """One input or output of an ONNX graph. Dynamic dimensions are strings (e.g. "batch")."""

    name: str
    shape: list[int | str]
    dtype: str = "float32"


class SourceInfo(_Strict):
    """Where the exported model came from."""

    id: str = Field(description="hub id, local directory or file name of the original")
    revision: str | None = Field(default=None, description="hub revision (commit) when exported from a hub")
    sha256: str | None = Field(default=None, description="checksum of the original file, for TFLite sources")


class Parity(_Strict):
    """How closely the ONNX model reproduces the original runtime on real audio, measured at export time."""

    reference: str = Field(description="the original runtime, e.g. 'pytorch 2.13.0' or 'ai-edge-litert 2.3.0'")
    audio_files: list[str]
    chunks: int
    max_abs_logit_diff: float
    max_sigmoid_diff: float
    top1_agreement: float = Field(ge=0.0, le=1.0)
    top5_agreement: float = Field(ge=0.0, le=1.0, description="share of chunks whose top-5 set is identical")
    target_max_abs_logit_diff: float | None = Field(
        default=None, description="the target the export had to meet (fp32); None for int8 (reported only)"
    )


class Sidecar(_Strict):
    """The content of `model.json`."""

    schema_version: Literal[1] = SIDECAR_SCHEMA_VERSION
    family: Family
    source: SourceInfo
    licence: str
    sample_rate_hz: int = Field(gt=0)
    chunk_samples: int = Field(gt=0, description="audio samples one model input covers (one chunk / window)")
    hop_samples: int | None = Field(default=None, description="hop between frames for framed models (YAMNet)")
    frames: int | None = Field(default=None, description="spectrogram frames of the input (AST: 1024 or 512)")
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]
    labels_file: str
    label_count: int = Field(gt=0)
    output_kind: Literal["logits", "probabilities"] = Field(
        description="what the `logits` output holds: raw logits (apply a sigmoid) or probabilities"
    )
    quantization: Literal["none", "int8"] = "none"
    files: dict[str, str] = Field(description="file name -> sha256 of every file in the folder but model.json")
    tool_versions: dict[str, str]
    parity: Parity
    created_utc: str
    extra: dict[str, object] = Field(
        default_factory=dict,
        description="family-specific facts: AST feature settings and position-embedding resize, BirdNET meta model",
    )

    def output(self, name: str) -> TensorSpec:
        for spec in self.outputs:
            if spec.name == name:
                return spec
        raise KeyError(name)


def model_digest(sidecar: Sidecar, model_file: str = "model.onnx") -> str:
    """A sha256 naming the model exactly: the model file's own checksum, or - when its weights live in ONNX
    external-data files beside it (`model.onnx.data`) - the sha256 of the "name:sha256" lines of the graph and
    those files (the graph alone does not change when only the weights do)."""
    parts = sorted(n for n in sidecar.files if n == model_file or n.startswith(model_file + "."))
    if parts == [model_file]:
        return sidecar.files[model_file]
    return hashlib.sha256("".join(f"{n}:{sidecar.files[n]}\n" for n in parts).encode()).hexdigest()


def write_sidecar(folder: Path, sidecar: Sidecar) -> Path:
    path = folder / SIDECAR_NAME
    path.write_text(json.dumps(sidecar.model_dump(mode="json"), indent=2, sort_keys=False) + "\n")
    return path


def read_sidecar(folder: Path) -> Sidecar:
    """Read and validate `model.json` (no checksum verification: see `verify_folder`)."""
    path = Path(folder) / SIDECAR_NAME
    if not path.is_file():
        raise ModelFolderError(
            folder, f"no {SIDECAR_NAME}", "export the model with `python -m export <family> --out <folder>`"
        )
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelFolderError(folder, f"{SIDECAR_NAME} is not valid JSON ({exc})", "re-export the model") from exc
    try:
        return Sidecar.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise ModelFolderError(
            folder, f"{SIDECAR_NAME}: {where}: {first['msg']}", "re-export the model with this soundmond version"
        ) from exc


def verify_folder(folder: Path, expected_family: str | None = None) -> Sidecar:
    """Read the sidecar and check every listed file's checksum; refuse a folder that was tampered with."""
    folder = Path(folder)
    sidecar = read_sidecar(folder)
    if expected_family is not None and sidecar.family != expected_family:
        raise ModelFolderError(
            folder,
            f"holds a '{sidecar.family}' model but the configuration expects '{expected_family}'",
            "point the configuration at the right model folder",
        )
    for name, digest in sidecar.files.items():
        path = folder / name
        if not path.is_file():
            raise ModelFolderError(folder, f"{name} is missing", "re-export the model folder")
        actual = file_sha256(path)
        if actual != digest:
            raise ModelFolderError(
                folder,
                f"{name} does not match the checksum in {SIDECAR_NAME} (file changed or damaged)",
                "re-export the model folder; never edit its files by hand",
            )
    return sidecar
