#!/usr/bin/env python3
"""Plot (PNG) and tabulate (markdown) the WER per voice (speaker), or per utterance length, of one test set.

Usage:
  # every recogs-test-*.txt under exp/*/*/ (the newest per model/method), voices from the cuts
  python local/plot_wer_per_voice.py --exp-dir exp --test-set test \
    --cuts data/fbank/tts_en_cuts_test.jsonl.gz --output exp/wer_per_voice_test.png
  # or explicit recogs files
  python local/plot_wer_per_voice.py --recogs exp/llm/greedy_search/recogs-test-X.txt \
    --cuts data/fbank/tts_en_cuts_test.jsonl.gz --output voices.png

The voice of an utterance is the `speaker` of its cut's first supervision (cut ids are matched
with the recogs files' `{cut_id}:\tref=[...]` lines); errors per utterance come from
kaldialign.edit_distance. Writes the PNG (grouped bars: one group per voice, one bar per
system, overall WER in the legend) and, beside it, a markdown table `{output stem}.md`.
"""
import argparse
import ast
import re
import sys
from collections import defaultdict
from pathlib import Path
from typing import Dict, List, Tuple

import kaldialign

Counts = Dict[str, List[int]]  # voice -> [errors, reference words]


def read_recogs(path: Path) -> Dict[str, Tuple[List[str], List[str]]]:
    """{cut_id: (ref_words, hyp_words)} from an icefall recogs file (`note=` lines ignored).

    Raises:
      ValueError: a line is malformed or a cut lacks its ref or hyp line (names file and line).
    """
    refs, hyps = {}, {}
    for n, line in enumerate(path.read_text(encoding="utf8").splitlines(), 1):
        if not line.strip():
            continue
        cut_id, sep, rest = line.partition(":\t")
        kind, eq, value = rest.partition("=")
        if not sep or not eq or kind not in ("ref", "hyp", "note"):
            raise ValueError(f"{path}:{n}: expected `cut_id:\\tref=[...]` or `hyp=[...]`, got {line!r}")
        if kind == "note":
            continue
        try:
            words = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            raise ValueError(f"{path}:{n}: {kind} is not a Python list of words: {value!r}") from None
        if not isinstance(words, list) or not all(isinstance(w, str) for w in words):
            raise ValueError(f"{path}:{n}: {kind} is not a list of strings: {value!r}")
        (refs if kind == "ref" else hyps)[cut_id] = words
    if set(refs) != set(hyps):
        odd = sorted(set(refs) ^ set(hyps))[:3]
        raise ValueError(f"{path}: cuts without both a ref and a hyp line, e.g. {odd}")
    if not refs:
        raise ValueError(f"{path}: no ref/hyp lines")
    return {c: (refs[c], hyps[c]) for c in refs}


LENGTH_BINS = ((5.0, "0-5 s"), (10.0, "5-10 s"), (float("inf"), ">10 s"))


def length_bin(duration: float) -> str:
    """The utterance-length group of a cut of `duration` seconds (LENGTH_BINS; labels sort in order)."""
    return next(label for limit, label in LENGTH_BINS if duration < limit)


def read_speakers(cut_manifests: List[Path], group_by: str = "voice") -> Dict[str, str]:
    """{cut_id: group} from lhotse cut manifests: the speaker of the first supervision ("unknown"
    where a cut has none) for `group_by="voice"`, the `length_bin` of the cut for "duration"."""
    from lhotse import load_manifest_lazy

    if group_by not in ("voice", "duration"):
        raise ValueError(f"--group-by must be voice or duration, got {group_by!r}")
    out = {}
    for path in cut_manifests:
        if not path.is_file():
            raise FileNotFoundError(f"cut manifest {path} not found")
        for cut in load_manifest_lazy(path):
            if group_by == "duration":
                out[cut.id] = length_bin(cut.duration)
                continue
            sup = cut.supervisions[0] if cut.supervisions else None
            out[cut.id] = (sup.speaker if sup is not None and sup.speaker else "unknown")
    return out


def wer_per_voice(recogs: Dict[str, Tuple[List[str], List[str]]], speakers: Dict[str, str],
                  source: str = "recogs") -> Counts:
    """{voice: [word errors, reference words]} (errors = kaldialign edit distance).

    Raises:
      ValueError: a cut id of `recogs` is not in `speakers` (names `source`).
    """
    counts: Counts = defaultdict(lambda: [0, 0])
    missing = [c for c in recogs if c not in speakers]
    if missing:
        raise ValueError(f"{source}: {len(missing)} cut ids not in the --cuts manifests, e.g. {missing[:3]}")
    for cut_id, (ref, hyp) in recogs.items():
        c = counts[speakers[cut_id]]
        c[0] += kaldialign.edit_distance(ref, hyp)["total"]
        c[1] += len(ref)
    return dict(counts)


def _wer(c: List[int]) -> float:
    return 100.0 * c[0] / max(c[1], 1)


def find_recogs(exp_dir: Path, test_set: str) -> Dict[str, Path]:
    """{"{model}/{method}": newest recogs-{test_set}-*.txt} under exp_dir/*/*/ (*.prev skipped);
    joint CTC decoding results (`_ctc-weight-X` in the name) get their own `{model}/{method}+ctc X`."""
    found: Dict[str, Path] = {}
    for f in exp_dir.glob(f"*/*/recogs-{test_set}-*.txt"):
        model, method = f.parent.parent.name, f.parent.name
        if model.endswith(".prev"):
            continue
        joint = re.search(r"_ctc-weight-([\d.]*\d)", f.name)
        label = f"{model}/{method}" + (f"+ctc {joint.group(1)}" if joint else "")
        if label not in found or f.stat().st_mtime > found[label].stat().st_mtime:
            found[label] = f
    return dict(sorted(found.items()))


def markdown(test_set: str, table: Dict[str, Counts], voices: List[str], group: str = "voice") -> str:
    head = [group, "words"] + list(table)
    title = "voice" if group == "voice" else "utterance length"
    lines = [f"WER (%) per {title} on {test_set}", "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for v in voices:
        words = next((t[v][1] for t in table.values() if v in t), 0)
        lines.append("| " + " | ".join([v, str(words)] + [f"{_wer(t[v]):.2f}" if v in t else "-"
                                                        for t in table.values()]) + " |")
    totals = {k: [sum(c[0] for c in t.values()), sum(c[1] for c in t.values())] for k, t in table.items()}
    words = next(iter(totals.values()))[1]
    lines.append("| " + " | ".join(["**all**", str(words)] + [f"{_wer(c):.2f}" for c in totals.values()]) + " |")
    return "\n".join(lines)


def plot(output: Path, test_set: str, table: Dict[str, Counts], voices: List[str], group: str = "voice") -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    x = np.arange(len(voices))
    width = 0.8 / len(table)
    fig, ax = plt.subplots(figsize=(max(6.0, 0.6 * len(voices) * max(1, len(table)) + 2), 4.5))
    for i, (label, counts) in enumerate(table.items()):
        total = [sum(c[0] for c in counts.values()), sum(c[1] for c in counts.values())]
        ax.bar(x + (i - (len(table) - 1) / 2) * width, [_wer(counts[v]) if v in counts else 0 for v in voices],
               width, label=f"{label} (all: {_wer(total):.2f}%)")
    ax.set_xticks(x)
    ax.set_xticklabels(voices, rotation=30, ha="right", fontsize=8)
    ax.set_ylabel("WER (%)")
    ax.set_title(f"WER per {'voice' if group == 'voice' else 'utterance length'} on {test_set}")
    ax.legend(fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    output.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(output, dpi=100)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--exp-dir", type=Path, default=None, help="find recogs files under EXP/*/*/")
    parser.add_argument("--recogs", type=Path, nargs="*", default=[], help="recogs files (labels: model/method)")
    parser.add_argument("--test-set", default="test", help="set name in recogs-{set}-*.txt")
    parser.add_argument("--cuts", type=Path, nargs="+", required=True, help="cut manifests with speakers")
    parser.add_argument("--group-by", choices=("voice", "duration"), default="voice",
                        help="voice: the cut's speaker; duration: 0-5 s, 5-10 s, >10 s")
    parser.add_argument("--output", type=Path, required=True, help="PNG to write (plus {stem}.md)")
    args = parser.parse_args()
    try:
        files = {f"{p.parent.parent.name}/{p.parent.name}": p for p in args.recogs}
        if args.exp_dir is not None:
            files.update(find_recogs(args.exp_dir, args.test_set))
        if not files:
            raise FileNotFoundError(f"no recogs-{args.test_set}-*.txt files (give --exp-dir or --recogs)")
        speakers = read_speakers(args.cuts, args.group_by)
        table = {label: wer_per_voice(read_recogs(p), speakers, str(p)) for label, p in files.items()}
    except (ValueError, FileNotFoundError) as e:
        sys.exit(f"plot_wer_per_voice.py: error: {e}")
    voices = sorted({v for t in table.values() for v in t})
    if args.group_by == "duration":
        voices = [label for _, label in LENGTH_BINS if label in voices]
    text = markdown(args.test_set, table, voices, args.group_by)
    print(text)
    plot(args.output, args.test_set, table, voices, args.group_by)
    args.output.with_suffix(".md").write_text(text + "\n", encoding="utf8")
    print(f"wrote {args.output} and {args.output.with_suffix('.md')}")


if __name__ == "__main__":
    main()
