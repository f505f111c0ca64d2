"""Speech scores of YAMNet on every 5-s window of the corpus (for `privacy.speech_threshold`).

    PYTHONPATH=. python scripts/speech_calibration.py ../shared/data/corpus /work/main/models/yamnet out.json

Writes one row per window: file, group, category, window index, the speech score with the tagger's mean pooling (what
the daemon uses by default) and with max pooling over YAMNet's frames. The speech score is the largest probability of
the AudioSet "Speech" class and its descendants (`soundmond.outputs.privacy.SPEECH_LABELS`).
"""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path

import numpy as np
import soundfile as sf

from soundmond.capture.audio import resample
from soundmond.config import TaggerConfig
from soundmond.models.taggers import YamnetTagger
from soundmond.outputs.privacy import SPEECH_LABELS

WINDOW_S = 5.0


def main(corpus: Path, model: Path, out: Path) -> None:
    tagger = YamnetTagger(model, TaggerConfig(path=model))
    index = [i for i, name in enumerate(tagger.labels) if name in SPEECH_LABELS]
    rows = []
    for row in csv.DictReader(open(corpus / "labels.csv", encoding="utf-8")):
        audio, rate = sf.read(corpus / row["file"], dtype="float32", always_2d=True)
        mono = resample(audio.mean(axis=1).astype(np.float32), rate, 16000)
        n = int(WINDOW_S * 16000)
        for k in range(max(1, len(mono) // n)):
            window = mono[k * n:(k + 1) * n]
            if len(window) < n:
                window = np.pad(window, (0, n - len(window)))
            frames, _ = tagger.frame_outputs(window)
            rows.append({"file": row["file"], "group": row["group"], "category": row["category"], "window": k,
                         "speech_mean": float(frames[:, index].mean(axis=0).max()),
                         "speech_max": float(frames[:, index].max())})
    out.write_text(json.dumps(rows), encoding="utf-8")


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3]))
