"""The reviewed transcript list of the real-speech dev set (``review.tsv`` next to this file).

Each clip's source text was compared with what pocketsphinx heard (``local/pocketsphinx_baseline.py``)
and every difference was listened to / read by hand. Lines of ``review.tsv`` (tab-separated; ``#``
starts a comment):

  clip_id   fix    NEW TEXT   reason      the clip's transcript becomes NEW TEXT
  clip_id   drop   -          reason      the clip is left out of the set

Every line needs a reason. An id that names no clip is an error (a stale list is not silently ignored).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Tuple

from . import Clip, SourceError

REVIEW_TSV = Path(__file__).with_name("review.tsv")


@dataclass(frozen=True)
class Review:
    """One reviewed decision: ``action`` is ``fix`` (``text`` replaces the transcript) or ``drop``."""

    clip_id: str
    action: str
    text: str
    reason: str


def read_review(path: Path = REVIEW_TSV) -> Dict[str, Review]:
    """``{clip_id: Review}`` from a review TSV.

    Raises:
      SourceError: a malformed line (names the file and line number) or an id listed twice.
    """
    path = Path(path)
    out: Dict[str, Review] = {}
    for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        parts = [p.strip() for p in line.split("\t")]
        where = f"{path}:{lineno}"
        if len(parts) != 4 or not all(parts[:2]) or not parts[3]:
            raise SourceError(f"{where}: expected 'clip_id<TAB>fix|drop<TAB>text<TAB>reason', got {line!r}")
        cid, action, text, reason = parts
        if action not in ("fix", "drop"):
            raise SourceError(f"{where}: action must be fix or drop, got {action!r}")
        if action == "fix" and text in ("", "-"):
            raise SourceError(f"{where}: a fix needs the new text")
        if cid in out:
            raise SourceError(f"{where}: {cid} is listed twice")
        out[cid] = Review(cid, action, text if action == "fix" else "", reason)
    return out


def apply_review(clips: List[Clip], review: Dict[str, Review]) -> Tuple[List[Clip], List[Review]]:
    """(kept clips, with fixed texts; the reviews applied, in clip order).

    Raises:
      SourceError: a review names a clip id that is not among `clips`.
    """
    ids = {c.id for c in clips}
    unknown = sorted(set(review) - ids)
    if unknown:
        raise SourceError(f"review list names {len(unknown)} clip(s) that do not exist: {', '.join(unknown[:5])}")
    kept, applied = [], []
    for c in clips:
        r = review.get(c.id)
        if r is not None:
            applied.append(r)
            if r.action == "drop":
                continue
            c = Clip(c.id, c.source, c.speaker, r.text, c.origin, c.load)
        kept.append(c)
    return kept, applied
