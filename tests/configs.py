"""The config most daemon tests start from: the real model folders, a store in tmp_path flushed often."""

from __future__ import annotations

from pathlib import Path


def daemon_config(tmp_path: Path, yamnet_dir: Path, birdnet_dir: Path, extra: str = "") -> Path:
    """`tmp_path/config.yaml` with YAMNet + BirdNET from the given folders, the store in tmp_path (flushed every
    0.2 s), and `extra` YAML appended."""
    cfg = tmp_path / "config.yaml"
    cfg.write_text(
        f"models:\n  tagger: {{family: yamnet, path: {yamnet_dir}}}\n  birds: {{path: {birdnet_dir}}}\n"
        f"store: {{path: {tmp_path / 'soundmond.db'}, flush_interval_s: 0.2}}\n" + extra
    )
    return cfg
