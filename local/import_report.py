"""Bookkeeping of bad manifest lines for the data converters in `local/`.

Every problem found while importing a manifest is one line, naming the manifest file and line (or the
cut) and the problem. Each line is logged once, counted by reason, and written to a report file
(`data/manifests/{name}_skipped.txt`), so that nothing is lost silently.

Two kinds of line:
  SKIP  the entry was dropped (missing/corrupt/zero-length audio, empty or non-UTF-8 transcript,
        bad JSON, missing keys, duplicate id, segment outside the audio, ...);
  FIX   the entry was kept but changed (resampled to 16 kHz, first channel of a multi-channel file,
        duration clamped to the audio length).
"""
import logging
from collections import Counter
from pathlib import Path
from typing import List, Optional


class ImportReport:
    """Collects SKIP/FIX lines for one imported manifest.

    Args:
      name: what is being imported, e.g. "tts_en_train" (written in the report header).
    """

    def __init__(self, name: str) -> None:
        self.name = name
        self.lines: List[str] = []
        self.skipped: Counter = Counter()
        self.fixed: Counter = Counter()
        self.num_kept = 0

    def _add(self, kind: str, where: str, reason: str, detail: str, cut_id: Optional[str]) -> None:
        who = f" cut {cut_id}" if cut_id else ""
        line = f"{kind} {where}{who}: {reason}: {detail}" if detail else f"{kind} {where}{who}: {reason}"
        self.lines.append(line)
        logging.warning(line)

    def skip(self, where: str, reason: str, detail: str = "", cut_id: Optional[str] = None) -> None:
        """Record a dropped entry. `reason` is a short fixed key (it is counted), `detail` free text."""
        self.skipped[reason] += 1
        self._add("SKIP", where, reason, detail, cut_id)

    def fix(self, where: str, reason: str, detail: str = "", cut_id: Optional[str] = None) -> None:
        """Record an entry that was kept after a change (e.g. resampling)."""
        self.fixed[reason] += 1
        self._add("FIX", where, reason, detail, cut_id)

    @property
    def num_skipped(self) -> int:
        return sum(self.skipped.values())

    def summary(self) -> str:
        """One line: kept/skipped counts and the count of each reason."""
        parts = [f"{self.name}: kept {self.num_kept}, skipped {self.num_skipped}"]
        if self.skipped:
            parts.append("skipped by reason: " + ", ".join(f"{k}={v}" for k, v in sorted(self.skipped.items())))
        if self.fixed:
            parts.append("fixed: " + ", ".join(f"{k}={v}" for k, v in sorted(self.fixed.items())))
        return "; ".join(parts)

    def write(self, path: Path) -> None:
        """Write the report: a header, every SKIP/FIX line, then the summary (also when empty)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "w", encoding="utf-8") as f:
            f.write(f"# import report for {self.name}: one line per dropped (SKIP) or changed (FIX) entry\n")
            for line in self.lines:
                f.write(line + "\n")
            f.write(f"# {self.summary()}\n")
