#!/usr/bin/env python3
"""Collect the decoding results of a run.sh exp dir into one markdown table.

Usage:
  python local/summarize_results.py --exp-dir exp                     # print the table
  python local/summarize_results.py --exp-dir exp --output exp/RESULTS.md

Reads, for every model folder `{exp_dir}/{model}/` (ctc, lm, llm, ...):
  {method}/wer-summary-{set}-{suffix}.txt   icefall's `settings<TAB>WER` files (decode.py; suffix
                                            `baseline`: local/pocketsphinx_baseline.py's row)
  {method}/ppl-{set}-{suffix}.txt           `settings<TAB>ppl<TAB>ntokens` files (decode.py, lm)
  {method}/log-decode-{suffix}-*            the `{set}: ... RTFx X` lines (newest log file)
  log/log-train-*                           `Number of model parameters: N (M trainable)`
and `{exp_dir}/timing.tsv` (stage, name, seconds; written by run.sh), and any
`{exp_dir}/wer_per_voice_*.md` tables (local/plot_wer_per_voice.py), which are appended.
"""
import argparse
import re
import sys
from collections import defaultdict
from pathlib import Path
from typing import Dict, List, Optional, Tuple

WER_RE = re.compile(r"^wer-summary-(?P<set>.+?)-(?P<suffix>(epoch|iter)-\d+_avg-\d+.*|baseline)\.txt$")
PPL_RE = re.compile(r"^ppl-(?P<set>.+?)-(?P<suffix>(epoch|iter)-\d+_avg-\d+.*)\.txt$")
RTFX_RE = re.compile(r"\] (?P<set>\S+): \d+ utterances, .* RTFx (?P<rtfx>[\d.]+)")
PARAMS_RE = re.compile(r"Number of model parameters: (\d+)(?: \((\d+) trainable\))?")


def set_order(name: str) -> Tuple[int, str]:
    """Sort key of a set name: dev sets (dev*, valid*, *dev, e.g. real_dev) first, then test sets
    (test*), then others (e.g. lm-valid), each group by name: dev-clean, dev-other, real_dev,
    test-clean, test-other."""
    rank = 0 if name.startswith(("dev", "valid")) or name.endswith("dev") else 1 if name.startswith("test") else 2
    return rank, name


def read_table_value(path: Path, column: int = 1) -> float:
    """The value in `column` of the first data row of a `settings<TAB>...` file.

    Raises:
      ValueError: the file has no data row or the value is not a number (names the file).
    """
    rows = [line.split("\t") for line in path.read_text(encoding="utf8").splitlines() if line.strip()]
    if len(rows) < 2 or len(rows[1]) <= column:
        raise ValueError(f"{path}: expected a header and a `name<TAB>value` row, got {rows!r}")
    try:
        return float(rows[1][column])
    except ValueError:
        raise ValueError(f"{path}: {rows[1][column]!r} is not a number") from None


def newest(paths) -> Optional[Path]:
    paths = [p for p in paths if p.is_file()]
    return max(paths, key=lambda p: p.stat().st_mtime) if paths else None


def param_count(model_dir: Path) -> Optional[Tuple[int, int]]:
    """(total, trainable) parameters from the newest training log, or None."""
    log = newest((model_dir / "log").glob("log-train-*")) if (model_dir / "log").is_dir() else None
    if log is None:
        return None
    m = PARAMS_RE.search(log.read_text(encoding="utf8", errors="replace"))
    if not m:
        return None
    total = int(m.group(1))
    return total, int(m.group(2)) if m.group(2) else total


def decode_rtfx(method_dir: Path, suffix: str) -> Dict[str, float]:
    """{set: RTFx} from the newest `log-decode-{suffix}-*` file."""
    log = newest(method_dir.glob(f"log-decode-{suffix}-*"))
    if log is None:
        return {}
    return {m.group("set"): float(m.group("rtfx")) for m in RTFX_RE.finditer(log.read_text(encoding="utf8"))}


def collect(exp_dir: Path):
    """Rows {(model, method, suffix): {"wer": {set: x}, "ppl": {set: x}, "rtfx": {set: x}}} and sets."""
    rows: Dict[Tuple[str, str, str], Dict[str, Dict[str, float]]] = defaultdict(lambda: defaultdict(dict))
    sets = set()
    for f in sorted(exp_dir.glob("*/*/*.txt")):
        method_dir = f.parent
        model, method = method_dir.parent.name, method_dir.name
        if model.endswith(".prev"):
            continue
        for kind, regex, col in (("wer", WER_RE, 1), ("ppl", PPL_RE, 1)):
            m = regex.match(f.name)
            if m:
                key = (model, method, m.group("suffix"))
                rows[key][kind][m.group("set")] = read_table_value(f, col)
                sets.add(m.group("set"))
    for (model, method, suffix), row in rows.items():
        row["rtfx"] = decode_rtfx(exp_dir / model / method, suffix)
    return rows, sorted(sets, key=set_order)


def read_timing(exp_dir: Path) -> List[Tuple[str, str, int]]:
    path = exp_dir / "timing.tsv"
    if not path.is_file():
        return []
    out = []
    for line in path.read_text(encoding="utf8").splitlines():
        parts = line.split("\t")
        if len(parts) == 3 and parts[2].isdigit():
            out.append((parts[0], parts[1], int(parts[2])))
    return out


def _fmt(x: Optional[float], digits: int = 2) -> str:
    return "-" if x is None else f"{x:.{digits}f}"


def _hms(seconds: int) -> str:
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


def make_markdown(exp_dir: Path) -> str:
    """The whole RESULTS.md text for `exp_dir`.

    Raises:
      FileNotFoundError: `exp_dir` does not exist.
    """
    if not exp_dir.is_dir():
        raise FileNotFoundError(f"--exp-dir {exp_dir} does not exist")
    rows, sets = collect(exp_dir)
    wer_sets = [s for s in sets if any(s in r["wer"] for r in rows.values())]
    lines = [f"## Results in {exp_dir}", ""]
    wer_rows = {k: v for k, v in rows.items() if v["wer"]}
    if wer_rows:
        lines += ["WER (%)", ""]
        head = ["model", "decoding", "checkpoint"] + [f"{s} WER" for s in wer_sets] + \
               [f"{s} RTFx" for s in wer_sets] + ["params (trainable)"]
        lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for (model, method, suffix), r in sorted(wer_rows.items()):
            p = param_count(exp_dir / model)
            cells = [model, method, suffix] + [_fmt(r["wer"].get(s)) for s in wer_sets] + \
                    [_fmt(r["rtfx"].get(s), 1) for s in wer_sets] + \
                    [f"{p[0] / 1e6:.2f} M ({p[1] / 1e6:.2f} M)" if p else "-"]
            lines.append("| " + " | ".join(cells) + " |")
        lines.append("")
    ppl_rows = {k: v for k, v in rows.items() if v["ppl"]}
    if ppl_rows:
        ppl_sets = [s for s in sets if any(s in r["ppl"] for r in ppl_rows.values())]
        head = ["model", "checkpoint"] + [f"{s} ppl" for s in ppl_sets] + ["params"]
        lines += ["Language-model perplexity (BPE tokens, EOS included)", "",
                  "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for (model, method, suffix), r in sorted(ppl_rows.items()):
            p = param_count(exp_dir / model)
            cells = [model, suffix] + [_fmt(r["ppl"].get(s)) for s in ppl_sets] + \
                    [f"{p[0] / 1e6:.2f} M" if p else "-"]
            lines.append("| " + " | ".join(cells) + " |")
        lines.append("")
    timing = read_timing(exp_dir)
    if timing:
        lines += ["Wall time per run.sh stage", "", "| stage | name | wall time |", "|---|---|---|"]
        lines += [f"| {s} | {name} | {_hms(sec)} |" for s, name, sec in timing]
        lines += [f"| all | | {_hms(sum(t[2] for t in timing))} |", ""]
    for md in sorted(exp_dir.glob("wer_per_voice_*.md")) + sorted(exp_dir.glob("wer_per_length_*.md")):
        lines += [md.read_text(encoding="utf8").rstrip(), ""]
    if not wer_rows and not ppl_rows:
        lines += [f"(no wer-summary-*.txt or ppl-*.txt files under {exp_dir}/*/*/)", ""]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--exp-dir", type=Path, default=Path("exp"), help="run.sh --exp-dir")
    parser.add_argument("--output", type=Path, default=None, help="also write the table here")
    args = parser.parse_args()
    try:
        text = make_markdown(args.exp_dir)
    except (ValueError, FileNotFoundError) as e:
        sys.exit(f"summarize_results.py: error: {e}")
    print(text)
    if args.output is not None:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(text + "\n", encoding="utf8")


if __name__ == "__main__":
    main()
