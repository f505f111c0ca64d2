"""Chunk detections in the formats bird people use, written as BirdNET-Analyzer writes them (its
`birdnet_analyzer/analyze/utils.py`: `RAVEN_TABLE_HEADER`, `CSV_HEADER`, `generate_raven_table`, `generate_csv`,
`generate_audacity`), so scripts that read BirdNET-Analyzer's results read soundmond's.

One row per `ChunkDetection` (one species in one 3-s chunk of the stream grid; `WindowResult.detections`), with the
chunk's times within its file. Conventions taken from BirdNET-Analyzer:

- times: `str(round(seconds, 1))` ("0.0", "3.0", "4.5"); confidence: 4 decimals ("0.8123");
- row order: by chunk start, then by confidence, highest first (within a chunk);
- file names: `<recording stem>.BirdNET.selection.table.txt` (raven), `<stem>.BirdNET.results.csv` (birdnet-csv),
  `<stem>.BirdNET.results.txt` (audacity), UTF-8, "\\n" line ends;
- raven: `Selection` counts from 1 per file, `View` "Spectrogram 1", `Channel` 1, `Low Freq (Hz)` and
  `High Freq (Hz)` the band of the model that made the detections (`model_band_hz`), the high edge capped at the
  file's Nyquist: BirdNET V2.4's 0-15000 Hz, written as BirdNET computes it ("15000" for a 48-kHz file, "11025.0" for
  a 22.05-kHz one); an hf model (`soundmond.models.hf`) 0 to its own Nyquist, or to the top of its mel filters
  ("8000" for a 16-kHz model), `Begin Path` the file as soundmond read it, `File Offset (s)` the
  chunk start. `Species Code`: BirdNET-Analyzer writes the eBird code from its own code list and, for a label it has
  no code for, the label itself ("Scientific name_Common name"); soundmond's model folder carries no eBird codes, so
  it always writes that fallback. A recording with no detection gets BirdNET-Analyzer's placeholder row (`nocall`,
  0-3 s, confidence 1.0), which its table-combining tools skip;
- birdnet-csv: `Start (s),End (s),Scientific name,Common name,Confidence,File` (a field holding a comma is quoted,
  which BirdNET-Analyzer does not do; no label of BirdNET V2.4 holds one);
- audacity: a label track, no header: `start<TAB>end<TAB>Scientific name, Common name<TAB>confidence`.

Where the files go (`soundmond analyze --format raven|birdnet-csv|audacity`, `where_problem`): with `--out DIR`, one
file per recording in DIR, named after the recording's stem (two recordings with the same stem are refused up front);
without it, birdnet-csv goes to stdout as one table (one header, then every recording's rows, as BirdNET-Analyzer's
combined CSV) and audacity to stdout only for a single recording (a label track has no file column); raven always
needs `--out` (one table per recording). A recording is written when its last window is analysed; one whose decoding
failed is not written. With `--store`, a recording the store already holds is skipped (no file) and one resumed after
a crash holds only the windows analysed in this run: `--reanalyze` analyses them whole.
"""

from __future__ import annotations

import csv
import io
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TextIO

from soundmond.capture.audio import find_audio_files
from soundmond.data import ChunkDetection, WindowResult
from soundmond.errors import HintedError


class BirdFormatError(HintedError):
    """A results file cannot be written."""


FORMATS: tuple[str, ...] = ("raven", "birdnet-csv", "audacity")

RAVEN_HEADER: tuple[str, ...] = (
    "Selection", "View", "Channel", "Begin Time (s)", "End Time (s)", "Low Freq (Hz)", "High Freq (Hz)",
    "Common Name", "Species Code", "Confidence", "Begin Path", "File Offset (s)",
)
CSV_HEADER: tuple[str, ...] = ("Start (s)", "End (s)", "Scientific name", "Common name", "Confidence", "File")
SUFFIXES: dict[str, str] = {
    "raven": ".BirdNET.selection.table.txt",
    "birdnet-csv": ".BirdNET.results.csv",
    "audacity": ".BirdNET.results.txt",
}
SIG_FMIN_HZ = 0  # BirdNET V2.4's frequency band (its SIG_FMIN / SIG_FMAX, and the default bandpass)
SIG_FMAX_HZ = 15000
BIRDNET_BAND_HZ: tuple[float, float] = (SIG_FMIN_HZ, SIG_FMAX_HZ)


def model_band_hz(birds: object | None) -> tuple[float, float]:
    """(low, high) Hz the bird model hears: its `band_hz` (an hf model's), else BirdNET V2.4's band."""
    band = getattr(birds, "band_hz", None)
    if band is None:
        return BIRDNET_BAND_HZ
    low, high = band
    return low, high


def seconds_text(s: float) -> str:
    """A time as BirdNET-Analyzer writes it: rounded to 0.1 s, Python's str ("3.0")."""
    return str(round(float(s), 1))


def confidence_text(c: float) -> str:
    return f"{float(c):.4f}"


def high_freq_text(sample_rate_hz: int | None, fmax_hz: float = SIG_FMAX_HZ) -> str:
    """The Raven table's High Freq (Hz), as BirdNET-Analyzer computes it from the file's own sample rate: the
    model's upper band edge `fmax_hz`, capped at the file's Nyquist."""
    if sample_rate_hz is None:
        return str(fmax_hz)
    high: float = sample_rate_hz / 2
    if high > fmax_hz:
        return str(fmax_hz)
    return str(high)


def ordered(detections: Iterable[ChunkDetection]) -> list[ChunkDetection]:
    """BirdNET-Analyzer's row order: chunk start, then confidence (highest first). A chunk reported by two
    overlapping windows (same species, same start) is kept once."""
    seen: dict[tuple[str, int], ChunkDetection] = {}
    for d in detections:
        seen.setdefault((d.scientific_name, round(d.start_s * 1000.0)), d)
    return sorted(seen.values(), key=lambda d: (round(d.start_s, 6), -d.confidence))


def _common(d: ChunkDetection) -> str:
    return d.common_name or d.scientific_name


def raven_table(path: str, detections: Sequence[ChunkDetection], sample_rate_hz: int | None,
                band_hz: tuple[float, float] = BIRDNET_BAND_HZ) -> str:
    """A Raven selection table for one recording (header included); `band_hz`: the model's (`model_band_hz`)."""
    high, low = high_freq_text(sample_rate_hz, band_hz[1]), str(band_hz[0])
    lines = ["\t".join(RAVEN_HEADER)]
    for i, d in enumerate(ordered(detections), start=1):
        start = seconds_text(d.start_s)
        lines.append("\t".join([
            str(i), "Spectrogram 1", "1", start, seconds_text(d.end_s), low, high, _common(d),
            f"{d.scientific_name}_{_common(d)}", confidence_text(d.confidence), path, start,
        ]))
    if len(lines) == 1:  # BirdNET-Analyzer's placeholder, so tables combine
        lines.append("\t".join(["1", "Spectrogram 1", "1", "0", "3", low, high, "nocall", "nocall", "1.0", path, "0"]))
    return "\n".join(lines) + "\n"


def csv_rows(path: str, detections: Sequence[ChunkDetection]) -> list[list[str]]:
    """birdnet-csv rows for one recording (no header)."""
    return [
        [seconds_text(d.start_s), seconds_text(d.end_s), d.scientific_name, _common(d), confidence_text(d.confidence),
         path]
        for d in ordered(detections)
    ]


def csv_text(rows: Iterable[Sequence[str]], *, header: bool) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    if header:
        w.writerow(CSV_HEADER)
    w.writerows(rows)
    return buf.getvalue()


def audacity_labels(detections: Sequence[ChunkDetection]) -> str:
    """An Audacity label track for one recording."""
    return "".join(
        f"{seconds_text(d.start_s)}\t{seconds_text(d.end_s)}\t{d.scientific_name}, {_common(d)}\t"
        f"{confidence_text(d.confidence)}\n"
        for d in ordered(detections)
    )


def output_path(out_dir: Path, recording: Path | str, fmt: str) -> Path:
    return out_dir / (Path(recording).stem + SUFFIXES[fmt])


def where_problem(fmt: str, out_dir: Path | None, paths: Sequence[Path], *, summary: bool) -> str | None:
    """Why this format cannot go where it was asked to (`problem - how to fix`), or None when it can."""
    if fmt not in FORMATS:
        if out_dir is not None:
            return (f"--out is for the bird formats ({', '.join(FORMATS)}) and parquet; {fmt} goes to stdout - "
                    "redirect stdout to a file instead")
        if fmt == "csv" and summary:
            return ("--summary would mix JSON into the CSV table on stdout - use the default jsonl format for the "
                    "records and the summary, or leave out --summary")
        return None
    recordings = [f for p in paths if p.exists() for f in find_audio_files(p)]
    if out_dir is None:
        if fmt == "raven":
            return "raven writes one selection table per recording - give the folder for them with --out DIR"
        if fmt == "audacity" and len(recordings) > 1:
            return (f"an Audacity label track has no file column and these paths hold {len(recordings)} recordings - "
                    "give --out DIR (one label file per recording) or analyse one recording")
        if summary:
            return (f"--summary would mix JSON into the {fmt} table on stdout - give --out DIR for the table "
                    "(the summary then goes to stdout alone)")
        return None
    if out_dir.exists() and not out_dir.is_dir():
        return f"--out {out_dir} is a file - give a folder (created if missing)"
    by_name: dict[Path, Path] = {}
    for r in recordings:
        name = output_path(out_dir, r, fmt)
        if name in by_name and by_name[name].resolve() != r.resolve():
            return (f"{by_name[name]} and {r} would both write {name.name} - analyse them in separate runs with "
                    "different --out folders")
        by_name[name] = r
    return None


class BirdFormatWriter:
    """Collects each recording's chunk detections window by window and writes them in `fmt` when the recording is
    done (the next recording starts, or `close`). Windows must come recording by recording, as `FileSource` yields
    them."""

    def __init__(self, fmt: str, out_dir: Path | None, stdout: TextIO,
                 band_hz: tuple[float, float] = BIRDNET_BAND_HZ) -> None:
        """`band_hz`: the bird model's band (`model_band_hz`), the raven table's Low / High Freq."""
        if fmt not in FORMATS:
            raise ValueError(f"unknown bird format {fmt!r} (known: {', '.join(FORMATS)})")
        self.fmt = fmt
        self.out_dir = out_dir
        self.stdout = stdout
        self.band_hz = band_hz
        self.written: list[Path] = []
        self._source: str | None = None
        self._rate: int | None = None
        self._detections: list[ChunkDetection] = []
        self._header_done = False

    def add(self, result: WindowResult, sample_rate_hz: int | None) -> None:
        if result.source != self._source:
            self._flush()
            self._source, self._rate, self._detections = result.source, sample_rate_hz, []
        self._detections.extend(result.detections)

    def discard(self, source: str) -> None:
        """The recording being collected failed (decoding error): nothing is written for it."""
        if source == self._source:
            self._source, self._detections = None, []

    def close(self) -> None:
        """Write the last recording (and, for a birdnet-csv table on stdout that got no recording, its header)."""
        self._flush()
        self._source, self._detections = None, []
        if self.fmt == "birdnet-csv" and self.out_dir is None and not self._header_done:
            self.stdout.write(csv_text((), header=True))
            self._header_done = True

    def _flush(self) -> None:
        if self._source is None:
            return
        path, dets = self._source, self._detections
        if self.fmt == "raven":
            text = raven_table(path, dets, self._rate, self.band_hz)
        elif self.fmt == "birdnet-csv":
            header = self.out_dir is not None or not self._header_done
            text = csv_text(csv_rows(path, dets), header=header)
            self._header_done = True
        else:
            text = audacity_labels(dets)
        if self.out_dir is None:
            self.stdout.write(text)
            self.stdout.flush()
            return
        target = output_path(self.out_dir, path, self.fmt)
        tmp = target.with_name(target.name + ".tmp")
        try:
            self.out_dir.mkdir(parents=True, exist_ok=True)
            tmp.write_text(text, encoding="utf-8", newline="\n")
            os.replace(tmp, target)  # a reader never sees half a table
        except OSError as exc:
            raise BirdFormatError(f"cannot write {target.name} ({exc.strerror or exc})",
                                  "check that --out names a folder you can write to, with free space",
                                  where=self.out_dir) from exc
        self.written.append(target)
