"""Turn one manifest entry (audio file, optional segment, transcript) into a checked lhotse `MonoCut`.

Used by `local/import_manifest.py` for NeMo and SLAM/WeNet-style JSON-lines manifests. The checks and
what happens on failure (see `local/import_report.py`):
  - audio file missing, unreadable/corrupt, or decoding fails        -> SKIP
  - zero samples                                                     -> SKIP
  - segment (offset, duration) not inside the audio, duration <= 0   -> SKIP
  - empty transcript (when a transcript is required)                 -> SKIP
  - duplicate cut id                                                 -> SKIP (the first one is kept)
  - sampling rate other than 16 kHz (8, 22.05, 44.1 kHz, ...)        -> FIX: `cut.resample(16000)`, a
    lazy transform stored in the manifest and applied on load (lhotse uses scipy for it)
  - more than one channel                                            -> FIX: the cut uses channel 0 (the
    first channel); no mixdown, so no audio is copied into the manifest
"""
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Optional

import soundfile
from lhotse import MonoCut, Recording, SupervisionSegment

from import_report import ImportReport
from zipformer_rwkv.dataset.features import SAMPLE_RATE

TARGET_SAMPLING_RATE = SAMPLE_RATE
# Manifest durations are rounded (NeMo writes 2-3 decimals): a mismatch up to this many seconds
# between the manifest and the audio file is accepted and the audio file's length wins.
DURATION_TOLERANCE = 0.1


@dataclass
class Entry:
    """One manifest entry, already parsed from its format.

    Attributes:
      where: "manifest_path:line_number", used in report lines.
      audio: path of the audio file (already resolved against the manifest's folder).
      text: the transcript, or None for audio-only sets (noise).
      cut_id: the id to give the cut; None = derived from the audio path (and the offset).
      offset: segment start in seconds inside the audio file.
      duration: segment length in seconds; None = up to the end of the file.
      speaker, language: written to the supervision.
      custom: other manifest keys, kept in `cut.custom`.
    """

    where: str
    audio: Path
    text: Optional[str]
    cut_id: Optional[str] = None
    offset: float = 0.0
    duration: Optional[float] = None
    speaker: Optional[str] = None
    language: Optional[str] = None
    custom: Dict[str, Any] = field(default_factory=dict)


def _first_line(e: BaseException) -> str:
    lines = [x.strip() for x in str(e).strip().splitlines() if x.strip()]
    msg = " ... ".join(lines[:1] + lines[-1:]) if len(lines) > 1 else "".join(lines)
    return f"{type(e).__name__}: {msg}"[:400]


def _path_id(audio: Path, root: Optional[Path]) -> str:
    """An id from the audio path: relative to `root` when possible, without suffix, `/` -> `_`."""
    try:
        rel = audio.relative_to(root) if root is not None else Path(audio.name)
    except ValueError:
        rel = Path(audio.name)
    return re.sub(r"[/\\]+", "_", str(rel.with_suffix("")))


class CutBuilder:
    """Builds checked cuts from `Entry`s, reading each audio file once.

    Args:
      report: where SKIP/FIX lines go.
      root: folder that audio ids are made relative to (usually the manifest's folder).
      require_text: False for audio-only sets (noise); then no supervision is attached.
      decode_check: decode every audio file once to catch corrupt data behind a valid header.
    """

    def __init__(self, report: ImportReport, root: Optional[Path] = None, require_text: bool = True,
                 decode_check: bool = True) -> None:
        self.report = report
        self.root = root
        self.require_text = require_text
        self.decode_check = decode_check
        self._recordings: Dict[Path, Any] = {}  # path -> Recording, or an error string
        self._seen_ids: set = set()

    def _recording(self, audio: Path):
        """The Recording of `audio`, or (reason, detail) when it cannot be used."""
        if audio in self._recordings:
            return self._recordings[audio]
        if not audio.is_file():
            result = ("missing_audio", f"audio file not found: {audio}")
        else:
            try:
                try:
                    rec = Recording.from_file(audio, recording_id=_path_id(audio, self.root))
                except Exception as e:
                    soundfile.info(str(audio))  # libsndfile's message is clearer than lhotse's
                    raise e
                if rec.num_samples == 0:
                    result = ("zero_length_audio", f"audio file has no samples: {audio}")
                else:
                    if self.decode_check:
                        rec.load_audio()
                    result = rec
            except Exception as e:  # soundfile/audioread raise many types for broken files
                result = ("corrupt_audio", f"cannot read {audio} ({_first_line(e)})")
        self._recordings[audio] = result
        return result

    def __call__(self, e: Entry) -> Optional[MonoCut]:
        """Check `e` and return its cut, or None after recording a SKIP line."""
        rep = self.report
        if self.require_text:
            if e.text is None or not e.text.strip():
                rep.skip(e.where, "empty_text", "transcript is empty", e.cut_id)
                return None
        rec = self._recording(e.audio)
        if isinstance(rec, tuple):
            rep.skip(e.where, rec[0], rec[1], e.cut_id)
            return None

        offset = float(e.offset or 0.0)
        duration = rec.duration - offset if e.duration is None else float(e.duration)
        if offset < 0 or duration <= 0:
            rep.skip(e.where, "bad_segment", f"offset {offset} s, duration {duration} s", e.cut_id)
            return None
        excess = offset + duration - rec.duration
        if excess > DURATION_TOLERANCE:
            rep.skip(e.where, "bad_segment", f"segment {offset:.3f}+{duration:.3f} s goes past the end "
                     f"of {e.audio} ({rec.duration:.3f} s)", e.cut_id)
            return None
        if abs(excess) <= DURATION_TOLERANCE and (offset == 0 or excess > 0):
            duration = rec.duration - offset  # rounding in the manifest: use the file's length

        is_segment = offset > 0 or duration < rec.duration - DURATION_TOLERANCE
        cut_id = e.cut_id or rec.id
        if e.cut_id is None and is_segment:
            cut_id = f"{rec.id}-{round(offset * 100):06d}-{round(duration * 100):06d}"
        if cut_id in self._seen_ids:
            rep.skip(e.where, "duplicate_id", f"cut id {cut_id} already used", cut_id)
            return None
        self._seen_ids.add(cut_id)

        if rec.num_channels > 1:
            rep.fix(e.where, "multi_channel", f"{rec.num_channels} channels in {e.audio}: using channel 0",
                    cut_id)
        cut = MonoCut(id=cut_id, start=offset, duration=duration, channel=rec.channel_ids[0],
                      recording=rec, custom=dict(e.custom) or None)
        if rec.sampling_rate != TARGET_SAMPLING_RATE:
            rep.fix(e.where, "resampled", f"{e.audio} at {rec.sampling_rate} Hz, resampled to "
                    f"{TARGET_SAMPLING_RATE} Hz", cut_id)
            cut = cut.resample(TARGET_SAMPLING_RATE)
        if e.text is not None and e.text.strip():
            cut.supervisions = [SupervisionSegment(
                id=cut_id, recording_id=rec.id, start=0.0, duration=cut.duration, channel=cut.channel,
                text=" ".join(e.text.split()), language=e.language, speaker=e.speaker)]
        rep.num_kept += 1
        return cut
