"""Peak RSS of the daemon with a Wav2Vec2-base-sized hf bird model + YAMNet (issue 17), beside YAMNet + BirdNET.

Builds a random Wav2Vec2-base-shaped audio classifier (hidden 768, 12 layers, 50 labels like the seed's model),
exports it with `python -m export hf`, then runs `soundmond run --source <recordings>` sensor-like (without torch,
transformers, optimum: `soundmond.speed.processes.start_daemon`, as `soundmond bench` does) and reads its VmHWM.

    PYTHONPATH=. python scripts/hf_daemon_rss.py --models /work/main/models --source tests/fixtures/audio
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

from export import hf_model
from soundmond.speed.processes import daemon_figures, start_daemon, watch_daemons


def run_daemon(work: Path, birds_yaml: str, yamnet: Path, source: Path) -> dict[str, object]:
    work.mkdir(parents=True, exist_ok=True)
    cfg = work / "config.yaml"
    db = work / "store.db"
    cfg.write_text(f"models:\n  tagger: {{family: yamnet, path: {yamnet}}}\n  birds: {birds_yaml}\n"
                   f"store: {{path: {db}}}\n")
    log = work / "daemon.log"
    started = time.time()
    proc = start_daemon(cfg, source, log, sensor_like=True)
    (result,), _ = watch_daemons([proc], 0.1, 1800)
    out = daemon_figures(log, started, result, db)
    if result["returncode"] != 0:
        out["log_tail"] = log.read_text(errors="replace")[-2000:]
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", type=Path, required=True, help="folder with yamnet/ (and birdnet/ for comparison)")
    parser.add_argument("--source", type=Path, required=True, help="recordings the daemon replays")
    parser.add_argument("--int8", action="store_true", help="export the hf model with --int8")
    parser.add_argument("--keep", type=Path, default=None, help="export the hf model here (reused when it exists)")
    args = parser.parse_args()
    args.models, args.source = args.models.resolve(), args.source.resolve()  # the daemon runs in its work folder
    with tempfile.TemporaryDirectory(prefix="hf-rss-") as tmp:
        root = Path(tmp)
        labels = [f"Species {i:02d}" for i in range(50)]
        folder = args.keep.resolve() if args.keep else root / "w2v-base"
        if not (folder / "model.json").is_file():
            ck = hf_model.make_random_checkpoint(root / "ck", "wav2vec2", size="base", labels=labels)
            hf_model.run(argparse.Namespace(
                model=str(ck), revision=None, role="birds", int8=args.int8, licence=None, clip_s=None,
                out=folder, force=False, check_audio=None,
            ))
        report = {"hf_model_mb": round((folder / "model.onnx").stat().st_size / 1e6, 1), "int8": args.int8}
        report["yamnet+hf_wav2vec2_base"] = run_daemon(
            root / "hf", f"{{family: hf, path: {folder}}}", args.models / "yamnet", args.source
        )
        if (args.models / "birdnet").is_dir():
            report["yamnet+birdnet"] = run_daemon(
                root / "birdnet", f"{{path: {args.models / 'birdnet'}}}", args.models / "yamnet", args.source
            )
    json.dump(report, sys.stdout, indent=2)
    print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
