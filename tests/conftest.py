"""Shared fixtures: real model folders, exported once per machine and reused.

Model folders (`yamnet_dir`, `birdnet_dir`, `ast_tiny_dir`, session-scoped):
- If `SOUNDMOND_TEST_MODELS` names a folder, its `yamnet/` and `birdnet/` subfolders are used as they are (they must
  pass `verify_folder`; a folder that does not is an error, not a silent re-export).
- Otherwise they are exported with `python -m export <family>` into `<repo>/.cache/test-models/<family>` (gitignored)
  when missing or when the exporter's source changed since (a stamp file holds the exporter's source hash). BirdNET
  takes about 30 s, YAMNet a few seconds, the tiny random AST a few seconds (torch import).
Exports need the `export` extra (tensorflow, tf2onnx, torch, transformers); without it the tests using these
fixtures are skipped with a reason saying so.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from importlib.util import find_spec
from pathlib import Path

import pytest

from soundmond.models.sidecar import ModelFolderError, verify_folder

REPO = Path(__file__).resolve().parent.parent
FIXTURE_AUDIO = REPO / "tests" / "fixtures" / "audio"
CACHE = REPO / ".cache" / "test-models"
SHARED_CORPUS = REPO.parent / "shared" / "data" / "corpus"

_EXPORT_SOURCES = {
    "yamnet": ["export/yamnet_model.py", "export/tflite_tools.py", "export/common.py", "soundmond/models/sidecar.py"],
    "birdnet": ["export/birdnet_model.py", "export/tflite_tools.py", "export/common.py", "soundmond/models/sidecar.py"],
    "ast-tiny": ["export/ast_model.py", "export/ast_fusion.py", "export/ast_int8_attention.py", "export/common.py",
                 "soundmond/models/sidecar.py", "soundmond/models/features.py"],
}
_EXPORT_NEEDS = {"yamnet": ("tensorflow", "tf2onnx"), "birdnet": ("tensorflow", "tf2onnx"), "ast-tiny": ("torch",)}


def _source_hash(name: str) -> str:
    digest = hashlib.sha256()
    for rel in _EXPORT_SOURCES[name]:
        path = REPO / rel
        digest.update(rel.encode())
        digest.update(path.read_bytes() if path.is_file() else b"-")
    return digest.hexdigest()


def _export(name: str, args: list[str]) -> Path:
    """Export into the cache unless an up-to-date, intact folder is already there."""
    out = CACHE / name
    stamp = CACHE / f"{name}.stamp"
    wanted = _source_hash(name)
    if out.is_dir() and stamp.is_file() and stamp.read_text().strip() == wanted:
        try:
            verify_folder(out)
            return out
        except ModelFolderError:
            pass
    missing = [m for m in _EXPORT_NEEDS[name] if find_spec(m) is None]
    if missing:
        pytest.skip(f"exporting the {name} test model needs the export extra ({', '.join(missing)} not installed)")
    CACHE.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "export", *args, "--out", str(out), "--force"]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=900)
    if proc.returncode != 0:
        pytest.fail(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    stamp.write_text(wanted + "\n")
    return out


def _from_env(family: str) -> Path | None:
    root = os.environ.get("SOUNDMOND_TEST_MODELS")
    if not root:
        return None
    folder = Path(root) / family
    verify_folder(folder, family)  # raises with a clear message when the folder is wrong
    return folder


@pytest.fixture(scope="session")
def yamnet_dir() -> Path:
    return _from_env("yamnet") or _export("yamnet", ["yamnet"])


@pytest.fixture(scope="session")
def birdnet_dir() -> Path:
    return _from_env("birdnet") or _export("birdnet", ["birdnet"])


@pytest.fixture(scope="session")
def ast_tiny_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny AST with random weights (hidden 32, 2 layers), exported through the real AST exporter (512 frames)."""
    out = CACHE / "ast-tiny"
    stamp = CACHE / "ast-tiny.stamp"
    if out.is_dir() and stamp.is_file() and stamp.read_text().strip() == _source_hash("ast-tiny"):
        try:
            verify_folder(out, "ast")
            return out
        except ModelFolderError:
            pass
    if find_spec("torch") is None or find_spec("transformers") is None:
        pytest.skip("making the tiny AST test model needs the export extra (torch, transformers)")
    checkpoint = tmp_path_factory.mktemp("ast-checkpoint")
    code = (
        "import sys; from export.ast_model import make_random_checkpoint; "
        "make_random_checkpoint(sys.argv[1], 'tiny', max_length=1024, seed=0)"
    )
    proc = subprocess.run([sys.executable, "-c", code, str(checkpoint)], cwd=REPO, capture_output=True, text=True)
    if proc.returncode != 0:
        pytest.fail(f"make_random_checkpoint failed:\n{proc.stderr[-3000:]}")
    folder = _export("ast-tiny", ["ast", "--model", str(checkpoint), "--frames", "512"])
    shutil.rmtree(checkpoint, ignore_errors=True)
    return folder


@pytest.fixture(scope="session")
def fixture_audio() -> Path:
    return FIXTURE_AUDIO


@pytest.fixture(scope="session")
def shared_corpus() -> Path:
    if not (SHARED_CORPUS / "labels.csv").is_file():
        pytest.skip(f"needs the shared corpus at {SHARED_CORPUS}")
    return SHARED_CORPUS


# --- tiny random Hugging Face classifiers (`python -m export hf`), exported once per session: tests/hf_models.py ---


def _needs_hf_export() -> None:
    for module in ("torch", "transformers", "optimum.exporters.onnx"):
        pytest.importorskip(module, reason=f"exporting the hf test models needs the export extra ({module})")


@pytest.fixture(scope="session")
def hf_check_audio(tmp_path_factory: pytest.TempPathFactory) -> Path:
    import hf_models

    return hf_models.check_audio_folder(tmp_path_factory.mktemp("hf-check-audio"))


@pytest.fixture(scope="session")
def hf_checkpoints(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A tiny random checkpoint of each architecture (made-up bird labels: `export.hf_model.BIRD_LABELS`)."""
    _needs_hf_export()
    import hf_models

    return hf_models.make_checkpoints(tmp_path_factory.mktemp("hf-checkpoints"))


@pytest.fixture(scope="session")
def hf_exports(hf_checkpoints: dict[str, Path], hf_check_audio: Path,
               tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Each architecture exported as a bird model (fp32, parity checked)."""
    import hf_models

    root = tmp_path_factory.mktemp("hf-exports")
    return {arch: hf_models.export(ck, root / arch, hf_check_audio) for arch, ck in hf_checkpoints.items()}


@pytest.fixture(scope="session")
def hf_ast_tagger(hf_checkpoints: dict[str, Path], hf_check_audio: Path,
                  tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny AST exported as a tagger (`--role tagger --licence bsd-3-clause`)."""
    import hf_models

    out = tmp_path_factory.mktemp("hf-tagger") / "ast"
    return hf_models.export(hf_checkpoints["audio-spectrogram-transformer"], out, hf_check_audio, role="tagger",
                            licence="bsd-3-clause")
