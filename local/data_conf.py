#!/usr/bin/env python3
"""Query or create a corpus conf (egs/NAME/conf.yaml) from shell scripts (prepare.sh).

Usage:
  python local/data_conf.py get CONF corpus|source|splits|train|dev|test|noise|real_speech|augment
      prints the value; lists are printed space-separated (split names, noise cut files);
      real_speech is the real-speech dev set's name, or empty; augment is true or false (the conf's
      augment.enabled)
  python local/data_conf.py shell CONF
      prints shell assignments conf_corpus=..., conf_source=..., conf_splits=..., conf_train=...,
      conf_dev=..., conf_test=..., conf_noise=..., conf_real_speech=..., conf_augment=... (quoted, lists
      space-separated) for `eval`
  python local/data_conf.py init CONF --corpus NAME --manifest-dir DIR [--source nemo|jsonl]
      writes a conf for a corpus imported from manifests DIR/*.jsonl (or *.list): names starting
      with "train" are training sources (weight 1.0 each), "dev"/"valid" dev sets, all others test sets.

See zipformer_rwkv/dataset/asr_datamodule.py:load_data_conf for the format.
"""
import argparse
import shlex
import sys
from pathlib import Path

import yaml

from zipformer_rwkv.dataset.asr_datamodule import load_data_conf

KEYS = ["corpus", "source", "splits", "train", "dev", "test", "noise", "real_speech", "augment"]


def init_conf(conf: Path, corpus: str, manifest_dir: Path, source: str) -> None:
    """Write `conf` for the manifests in `manifest_dir` (see module docstring).

    Raises:
      FileNotFoundError: no *.jsonl / *.list manifest in `manifest_dir`.
      ValueError: none of them is a training set.
    """
    names = sorted(p.stem for p in list(manifest_dir.glob("*.jsonl")) + list(manifest_dir.glob("*.list")))
    if not names:
        raise FileNotFoundError(f"no *.jsonl or *.list manifests in {manifest_dir}")
    d = {"corpus": corpus, "source": source, "train": [], "dev": {}, "test": {},
         "noise": ["musan_cuts.jsonl.gz", "tts_en_noise_cuts.jsonl.gz"]}
    for n in names:
        cuts = f"{corpus}_cuts_{n}.jsonl.gz"
        if n.startswith("train"):
            d["train"].append({"name": n, "cuts": cuts, "weight": 1.0})
        elif n.startswith(("dev", "valid")):
            d["dev"][n] = cuts
        else:
            d["test"][n] = cuts
    if not d["train"]:
        raise ValueError(f"{manifest_dir}: no manifest named train*.jsonl among {names}")
    conf.parent.mkdir(parents=True, exist_ok=True)
    with open(conf, "w", encoding="utf-8") as f:
        f.write(f"# written by local/data_conf.py init from {manifest_dir}; edit weights/sets as needed\n")
        yaml.safe_dump(d, f, sort_keys=False)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    g = sub.add_parser("get")
    g.add_argument("conf", type=Path)
    g.add_argument("key", choices=KEYS)
    sh = sub.add_parser("shell")
    sh.add_argument("conf", type=Path)
    i = sub.add_parser("init")
    i.add_argument("conf", type=Path)
    i.add_argument("--corpus", required=True)
    i.add_argument("--manifest-dir", type=Path, required=True)
    i.add_argument("--source", default="nemo", choices=["nemo", "jsonl"])
    args = p.parse_args()
    try:
        if args.cmd == "init":
            init_conf(args.conf, args.corpus, args.manifest_dir, args.source)
            return 0
        c = load_data_conf(args.conf)
    except (FileNotFoundError, ValueError) as e:
        print(f"{p.prog}: {e}", file=sys.stderr)
        return 1
    values = {"corpus": c.corpus, "source": c.source, "splits": c.splits(),
              "train": [s.name for s in c.train], "dev": list(c.dev), "test": list(c.test),
              "noise": c.noise, "real_speech": c.real_speech or "",
              "augment": "true" if c.augment.enabled else "false"}
    values = {k: " ".join(v) if isinstance(v, list) else v for k, v in values.items()}
    if args.cmd == "get":
        print(values[args.key])
    else:
        for k in KEYS:
            print(f"conf_{k}={shlex.quote(values[k])}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
