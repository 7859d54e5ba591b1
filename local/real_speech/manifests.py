"""Write the real-speech clips as 16 kHz mono FLAC plus a NeMo-style manifest (``real_dev.jsonl``), which
prepare.sh stage 1 turns into lhotse manifests with ``local/import_manifest.py`` like every other split."""
from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Dict, List

import numpy as np
import soundfile as sf
from scipy.signal import resample_poly

from tts_corpus.text import normalize_transcript

from . import Clip, SourceError

SAMPLING_RATE = 16000
# characters whose words normalize_transcript would drop or split (digits, "&", "%", ...): such a text
# must be spelled out in the review list first, or a word would silently vanish from the reference
_UNSPOKEN_RE = re.compile(r"[0-9&%$#@+=/*]")


def to_16k(x: np.ndarray, sr: int) -> np.ndarray:
    """`x` (float32, (T,) at `sr` Hz) resampled to 16 kHz with a polyphase filter (scipy)."""
    if sr == SAMPLING_RATE:
        return x.astype(np.float32)
    g = math.gcd(SAMPLING_RATE, int(sr))
    return resample_poly(x, SAMPLING_RATE // g, int(sr) // g).astype(np.float32)


def transcript(clip: Clip, strict: bool = True) -> str:
    """The scoring transcript of `clip` (``normalize_transcript``: upper case, ``[A-Z']`` words); with
    `strict` false, digits and symbols are not an error (for the review pass over raw source texts).

    Raises:
      SourceError: the text holds digits or symbols that would be lost, or no word at all.
    """
    bad = _UNSPOKEN_RE.findall(clip.text)
    if bad and strict:
        raise SourceError(f"{clip.origin}: text {clip.text!r} holds {''.join(sorted(set(bad)))!r}: spell it out "
                          f"with a 'fix' line for {clip.id} in local/real_speech/review.tsv")
    text = normalize_transcript(clip.text)
    if not text and not strict:
        return "<NO_WORD>"  # shown as is in the review pass
    if not text:
        raise SourceError(f"{clip.origin}: text {clip.text!r} has no word")
    return text


def write_clips(clips: List[Clip], out_dir: Path, name: str = "real_dev", strict: bool = True) -> Path:
    """Write ``out_dir/audio/{source}/{id}.flac`` (16 kHz, 16-bit) and ``out_dir/{name}.jsonl`` with
    ``audio_filepath`` (relative), ``duration`` (seconds), ``text`` (normalised), ``speaker``, ``lang``,
    ``id``, ``source``, ``raw_text`` per clip, in clip order (`strict`: see ``transcript``). Returns the
    manifest path.

    Raises:
      SourceError: a clip is undecodable, silent-length (< 0.1 s) or not finite, or its text is unusable.
    """
    out_dir = Path(out_dir)
    lines = []
    for c in clips:
        text = transcript(c, strict)
        x, sr = c.load()
        if x.size < 0.1 * sr or not np.isfinite(x).all():
            raise SourceError(f"{c.origin}: audio shorter than 0.1 s or not finite")
        y = np.clip(to_16k(x, sr), -1.0, 1.0)
        rel = Path("audio") / c.source / f"{c.id}.flac"
        (out_dir / rel).parent.mkdir(parents=True, exist_ok=True)
        sf.write(out_dir / rel, y, SAMPLING_RATE, subtype="PCM_16")
        lines.append({"audio_filepath": str(rel), "duration": round(len(y) / SAMPLING_RATE, 4), "text": text,
                      "speaker": c.speaker, "lang": "en", "id": c.id, "source": c.source, "raw_text": c.text})
    path = out_dir / f"{name}.jsonl"
    tmp = path.with_suffix(".partial")
    with open(tmp, "w", encoding="utf-8") as f:
        for d in lines:
            f.write(json.dumps(d, ensure_ascii=False) + "\n")
    tmp.rename(path)
    return path


def summary(manifest: Path) -> Dict[str, Dict[str, float]]:
    """Per source: ``{"utterances", "words", "seconds", "speakers"}`` of a written manifest."""
    out: Dict[str, Dict[str, float]] = {}
    spk: Dict[str, set] = {}
    for line in Path(manifest).read_text(encoding="utf-8").splitlines():
        d = json.loads(line)
        s = out.setdefault(d["source"], {"utterances": 0, "words": 0, "seconds": 0.0, "speakers": 0})
        s["utterances"] += 1
        s["words"] += len(d["text"].split())
        s["seconds"] += d["duration"]
        spk.setdefault(d["source"], set()).add(d["speaker"])
    for k, v in out.items():
        v["speakers"] = len(spk[k])
    return out
