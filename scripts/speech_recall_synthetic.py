"""Speech recall of the privacy threshold on synthetic speech (the corpus holds no speech recordings).

    for v in en en-us en-gb+f3 de fr es en+m3 en+f2 it nl; do for t in ...; do espeak-ng -v $v -s 150 -w sN.wav "$t"
    PYTHONPATH=. python scripts/speech_recall_synthetic.py SPEECH_DIR ../shared/data/corpus /work/main/models/yamnet

Each utterance (espeak-ng, 5.7-7.8 s, cut or zero-padded to one 5-s window) is scored alone and mixed over a corpus
bird recording at +10, 0 and -10 dB speech-to-bird RMS ratio; prints the share of windows above each threshold, with
the tagger's mean pooling (the daemon's default) as `soundmond.outputs.privacy` scores it.
"""

from __future__ import annotations

import csv
import sys
from pathlib import Path

import numpy as np
import soundfile as sf

from soundmond.capture.audio import resample
from soundmond.config import TaggerConfig
from soundmond.models.taggers import YamnetTagger
from soundmond.outputs.privacy import speech_indices

RATE = 16000
WINDOW = 5 * RATE
THRESHOLDS = (0.05, 0.1, 0.2, 0.3)


def mono16k(path: Path) -> np.ndarray:
    audio, rate = sf.read(path, dtype="float32", always_2d=True)
    x = resample(audio.mean(axis=1).astype(np.float32), rate, RATE)[:WINDOW]
    return np.pad(x, (0, WINDOW - x.size))


def rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(x))) + 1e-12)


def main(speech_dir: Path, corpus: Path, model: Path) -> None:
    tagger = YamnetTagger(model, TaggerConfig(path=model))
    index = list(speech_indices(tagger.labels))
    birds = [corpus / r["file"] for r in csv.DictReader(open(corpus / "labels.csv", encoding="utf-8"))
             if r["category"] == "bird"]
    scores: dict[str, list[float]] = {}
    for k, path in enumerate(sorted(speech_dir.glob("*.wav"))):
        speech, bird = mono16k(path), mono16k(birds[k % len(birds)])
        for snr in (None, 10, 0, -10):
            x = speech if snr is None else bird + speech * (rms(bird) / rms(speech)) * 10 ** (snr / 20)
            x = (x / max(1.0, float(np.abs(x).max()))).astype(np.float32)
            frames, _ = tagger.frame_outputs(x)
            scores.setdefault("alone" if snr is None else f"{snr:+d} dB", []).append(
                float(frames[:, index].mean(axis=0).max()))
    for name, values in scores.items():
        v = np.array(values)
        print(name, len(v), " ".join(f"recall@{t}={float(np.mean(v > t)):.3f}" for t in THRESHOLDS))


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3]))
