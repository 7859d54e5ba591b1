#!/usr/bin/env python3
"""Convert a JSON-lines speech manifest into lhotse manifests (recordings, supervisions, cuts).

Usage (from the repository root):
  python local/import_manifest.py --manifest download/tts_en/{train,dev,test}.jsonl --format nemo \\
      --output-dir data/manifests --prefix tts_en --split train dev test
  python local/import_manifest.py --manifest my/wenet_data.list --format jsonl \\
      --output-dir data/manifests --prefix mycorpus --split test
  python local/import_manifest.py --manifest download/tts_en_noise/noise.jsonl --no-text \\
      --output-dir data/manifests --prefix tts_en_noise

Writes, in --output-dir (`_{split}` is left out when --split is empty):
  {prefix}_recordings_{split}.jsonl.gz, {prefix}_supervisions_{split}.jsonl.gz,
  {prefix}_cuts_{split}.jsonl.gz and the report {prefix}_{split}_skipped.txt.

Formats (one JSON object per line; relative audio paths are resolved against the manifest's folder):
  nemo   NeMo ASR manifests. Required: `audio_filepath`, `duration` (seconds), the transcript field
         (`--text-field`, default `text`). Optional: `offset` (seconds; the cut is that segment of the
         file), `lang` (-> supervision.language), `speaker` (-> supervision.speaker), `id` (-> cut id;
         default: the audio path relative to the manifest folder, plus `-{offset}-{duration}` in
         centiseconds for segments), `sampling_rate`/`sample_rate` (ignored: the file header is
         read). Lines with `"_skipme": true` are skipped (and reported). Other keys go to `cut.custom`.
  jsonl  SLAM-LLM / WeNet style. Required: `key` (-> cut id), the audio path in `source` (SLAM) or
         `wav` (WeNet), the transcript in `target` (SLAM) or `txt` (WeNet). Optional: `duration`,
         `speaker`, `lang`. Other keys go to `cut.custom`.

Bad lines are skipped and listed (see local/import_report.py, local/cut_builder.py): not UTF-8, bad
JSON, missing keys, missing/corrupt/zero-length audio, empty transcript, duplicate id, segment outside
the audio. Audio at another rate than 16 kHz is resampled (lazily, on load); multi-channel audio uses
channel 0. Exit status 1 when no entry at all could be imported.
"""
import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Iterator, List, Optional, Tuple, Union

from lhotse import CutSet, RecordingSet, SupervisionSet

from cut_builder import CutBuilder, Entry
from import_report import ImportReport

NEMO_CONSUMED = ("audio_filepath", "duration", "offset", "lang", "speaker", "id", "sampling_rate",
                 "sample_rate", "_skipme")


def get_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--manifest", type=Path, nargs="+", required=True,
                   help="input JSON-lines manifest(s); give as many --split names")
    p.add_argument("--format", choices=["nemo", "jsonl"], default="nemo")
    p.add_argument("--text-field", default="text", help="transcript key of NeMo manifests")
    p.add_argument("--no-text", action="store_true", help="audio-only set (noise): no transcripts")
    p.add_argument("--output-dir", type=Path, required=True)
    p.add_argument("--prefix", required=True, help="corpus name used in the output file names")
    p.add_argument("--split", nargs="*", default=[""], help="split name(s) used in the output file names")
    p.add_argument("--no-decode-check", action="store_true",
                   help="only read audio headers (faster; corrupt data is then found at fbank time)")
    return p


def _opt_str(v) -> Optional[str]:
    return None if v is None else str(v)


def _resolve(path: str, folder: Path) -> Path:
    p = Path(path).expanduser()
    return p if p.is_absolute() else folder / p


def _nemo_entry(d: dict, where: str, folder: Path, text_field: str,
                no_text: bool) -> Union[Entry, Tuple[str, str]]:
    required = ["audio_filepath", "duration"] + ([] if no_text else [text_field])
    missing = [k for k in required if k not in d]
    if missing:
        return ("missing_keys", "missing keys " + ", ".join(missing))
    if d.get("_skipme"):
        return ("skipme", "entry has _skipme set")
    try:
        duration = float(d["duration"])
        offset = float(d.get("offset") or 0.0)
    except (TypeError, ValueError):
        return ("bad_entry", "duration/offset is not a number")
    text = None if no_text else d[text_field]
    if text is not None and not isinstance(text, str):
        return ("bad_entry", f"{text_field} is not a string")
    consumed = set(NEMO_CONSUMED) | {text_field}
    return Entry(where=where, audio=_resolve(str(d["audio_filepath"]), folder), text=text,
                 cut_id=str(d["id"]) if d.get("id") not in (None, "") else None, offset=offset,
                 duration=duration, speaker=_opt_str(d.get("speaker")), language=_opt_str(d.get("lang")),
                 custom={k: v for k, v in d.items() if k not in consumed})


def _jsonl_entry(d: dict, where: str, folder: Path,
                 no_text: bool) -> Union[Entry, Tuple[str, str]]:
    slam = "source" in d or "target" in d  # else WeNet
    audio_key, text_key = ("source", "target") if slam else ("wav", "txt")
    required = ["key", audio_key] + ([] if no_text else [text_key])
    missing = [k for k in required if k not in d]
    if missing:
        return ("missing_keys", "missing keys " + ", ".join(missing)
                + " (expected key + source/target or key + wav/txt)")
    text = None if no_text else d[text_key]
    if text is not None and not isinstance(text, str):
        return ("bad_entry", f"{text_key} is not a string")
    try:
        duration = float(d["duration"]) if d.get("duration") is not None else None
    except (TypeError, ValueError):
        return ("bad_entry", "duration is not a number")
    consumed = {"key", audio_key, text_key, "duration", "speaker", "lang"}
    return Entry(where=where, audio=_resolve(str(d[audio_key]), folder), text=text, cut_id=str(d["key"]),
                 duration=duration, speaker=_opt_str(d.get("speaker")), language=_opt_str(d.get("lang")),
                 custom={k: v for k, v in d.items() if k not in consumed})


def read_entries(manifest: Path, fmt: str, report: ImportReport, text_field: str = "text",
                 no_text: bool = False) -> Iterator[Entry]:
    """Parse `manifest` line by line, yielding Entries; bad lines go to `report` as SKIP lines.

    Raises:
      FileNotFoundError: the manifest itself does not exist.
    """
    if not manifest.is_file():
        raise FileNotFoundError(f"manifest not found: {manifest}")
    folder = manifest.parent
    with open(manifest, "rb") as f:
        for lineno, raw in enumerate(f, start=1):
            where = f"{manifest}:{lineno}"
            if not raw.strip():
                continue
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                report.skip(where, "not_utf8", f"line is not valid UTF-8 (byte {e.start})")
                continue
            try:
                d = json.loads(line)
            except json.JSONDecodeError as e:
                report.skip(where, "bad_json", str(e))
                continue
            if not isinstance(d, dict):
                report.skip(where, "bad_json", f"expected a JSON object, got {type(d).__name__}")
                continue
            if fmt == "nemo":
                entry = _nemo_entry(d, where, folder, text_field, no_text)
            else:
                entry = _jsonl_entry(d, where, folder, no_text)
            if isinstance(entry, tuple):
                report.skip(where, *entry)
                continue
            yield entry


def import_manifest(manifest: Path, fmt: str, output_dir: Path, prefix: str, split: str = "",
                    text_field: str = "text", no_text: bool = False,
                    decode_check: bool = True) -> Tuple[CutSet, ImportReport]:
    """Convert `manifest` and write the lhotse manifests and the report (see the module docstring).

    Returns:
      the imported cuts (eager CutSet) and the report.
    Raises:
      FileNotFoundError: the manifest is missing.
      ValueError: no entry of the manifest could be imported.
    """
    suffix = f"_{split}" if split else ""
    report = ImportReport(f"{prefix}{suffix}")
    build = CutBuilder(report, root=manifest.parent, require_text=not no_text, decode_check=decode_check)
    cuts: List = []
    for entry in read_entries(manifest, fmt, report, text_field=text_field, no_text=no_text):
        cut = build(entry)
        if cut is not None:
            cuts.append(cut)
    output_dir.mkdir(parents=True, exist_ok=True)
    report.write(output_dir / f"{prefix}{suffix}_skipped.txt")
    logging.info(report.summary())
    if not cuts:
        raise ValueError(f"{manifest}: no usable entry (see {output_dir / f'{prefix}{suffix}_skipped.txt'})")
    cutset = CutSet.from_cuts(cuts)
    recordings = {c.recording.id: c.recording for c in cuts}
    RecordingSet.from_recordings(recordings.values()).to_file(output_dir / f"{prefix}_recordings{suffix}.jsonl.gz")
    if not no_text:
        sups = [s for c in cuts for s in c.supervisions]
        SupervisionSet.from_segments(sups).to_file(output_dir / f"{prefix}_supervisions{suffix}.jsonl.gz")
    cutset.to_file(output_dir / f"{prefix}_cuts{suffix}.jsonl.gz")
    return cutset, report


def main(argv: Optional[List[str]] = None) -> int:
    logging.basicConfig(format="%(asctime)s %(levelname)s [%(filename)s:%(lineno)d] %(message)s",
                        level=logging.INFO)
    parser = get_parser()
    args = parser.parse_args(argv)
    if len(args.split) != len(args.manifest):
        parser.error(f"{len(args.manifest)} --manifest but {len(args.split)} --split names")
    for manifest, split in zip(args.manifest, args.split):
        try:
            import_manifest(manifest, args.format, args.output_dir, args.prefix, split,
                            text_field=args.text_field, no_text=args.no_text,
                            decode_check=not args.no_decode_check)
        except (FileNotFoundError, ValueError) as e:
            logging.error(str(e))
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
