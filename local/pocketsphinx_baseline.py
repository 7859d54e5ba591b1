#!/usr/bin/env python3
"""The classic yardstick: pocketsphinx (CMU Sphinx HMM recogniser, default en-us model) on cut manifests.

Usage (from the repository root):
  python local/pocketsphinx_baseline.py --cuts data/fbank/tts_en_cuts_real_dev.jsonl.gz --exp-dir exp
  python local/pocketsphinx_baseline.py --cuts data/fbank/tts_en_cuts_test.jsonl.gz --name test --exp-dir exp

Decodes every cut's audio (16 kHz mono; another rate is resampled by lhotse) with
`pocketsphinx.Decoder()` (pip `pocketsphinx`, the en-us acoustic model, language model and dictionary it
ships), one process, one utterance at a time. The hypothesis is normalised like the references
(upper case, `[A-Z']` words: tts_corpus.text.normalize_transcript) and scored with decode.py's code
(zipformer_rwkv.utils.write_error_stats), into {exp-dir}/pocketsphinx/en-us/:
  recogs-{name}-baseline.txt, errs-{name}-baseline.txt, wer-summary-{name}-baseline.txt (key
  `pocketsphinx_en-us`) and log-decode-baseline-* with the line
  `{name}: N utterances, X s of audio decoded in Y s: RTFx Z; C CPU-s: W s of audio per CPU-second`
  (RTFx = audio seconds / wall decoding seconds, model loading excluded; the CPU figure is unaffected by
  other processes sharing the cores), which local/summarize_results.py reads.
--name defaults to the manifest's split ({corpus}_cuts_{name}.jsonl.gz). pocketsphinx is only this
yardstick: training and decoding never import it. Exit status 1 with one line for a missing manifest,
a cut without audio or pocketsphinx not installed.
"""
from __future__ import annotations

import argparse
import importlib.metadata
import logging
import re
import sys
import time
from pathlib import Path

import numpy as np

from tts_corpus.text import normalize_transcript

SUFFIX = "baseline"
METHOD = "en-us"


def set_name(cuts: Path) -> str:
    """`real_dev` from `.../tts_en_cuts_real_dev.jsonl.gz` (else the file name without extensions)."""
    name = Path(cuts).name.split(".")[0]
    m = re.match(r"^.+?_cuts_(.+)$", name)
    return m.group(1) if m else name


def make_decoder():
    """A pocketsphinx Decoder with the packaged en-us model, quiet.

    Raises:
      RuntimeError: pocketsphinx is not installed.
    """
    try:
        from pocketsphinx import Decoder
    except ImportError:
        raise RuntimeError("pocketsphinx is not installed (pip install pocketsphinx)") from None
    return Decoder(loglevel="FATAL")


def recognize(decoder, samples: np.ndarray) -> str:
    """Words pocketsphinx hears in `samples` (float in [-1, 1], (T,), 16 kHz), normalised."""
    pcm = (np.clip(samples, -1.0, 1.0) * 32767.0).astype("<i2")
    decoder.start_utt()
    decoder.process_raw(pcm.tobytes(), full_utt=True)
    decoder.end_utt()
    hyp = decoder.hyp()
    return normalize_transcript(hyp.hypstr if hyp is not None else "")


def run(cuts_path: Path, exp_dir: Path, name: str) -> float:
    """Decode and score `cuts_path`; returns the WER (%). See the module docstring for the files."""
    from lhotse import load_manifest_lazy

    from zipformer_rwkv.utils import setup_logger, store_transcripts, write_error_stats, write_wer_summary

    if not Path(cuts_path).is_file():
        raise FileNotFoundError(f"cut manifest not found: {cuts_path}")
    out_dir = Path(exp_dir) / "pocketsphinx" / METHOD
    out_dir.mkdir(parents=True, exist_ok=True)
    setup_logger(out_dir / f"log-decode-{SUFFIX}")
    t0 = time.time()
    decoder = make_decoder()
    logging.info(f"pocketsphinx {importlib.metadata.version('pocketsphinx')} en-us loaded in {time.time() - t0:.1f} s")
    results, audio_s, decode_s, cpu_s = [], 0.0, 0.0, 0.0
    for cut in load_manifest_lazy(cuts_path):
        try:
            x = cut.resample(16000).load_audio()[0]
        except Exception as e:  # lhotse raises many kinds for a missing/corrupt file
            raise ValueError(f"{cuts_path}: cut {cut.id}: cannot load its audio ({e})") from None
        ref = " ".join(s.text or "" for s in cut.supervisions).split()
        t, c = time.time(), time.process_time()
        hyp = recognize(decoder, x)
        decode_s += time.time() - t
        cpu_s += time.process_time() - c
        audio_s += cut.duration
        results.append((cut.id, ref, hyp.split()))
    if not results:
        raise ValueError(f"{cuts_path}: no cuts")
    results.sort()
    store_transcripts(out_dir / f"recogs-{name}-{SUFFIX}.txt", results)
    with open(out_dir / f"errs-{name}-{SUFFIX}.txt", "w", encoding="utf8") as f:
        wer = write_error_stats(f, f"{name}-pocketsphinx", results)
    write_wer_summary(out_dir / f"wer-summary-{name}-{SUFFIX}.txt", {f"pocketsphinx_{METHOD}": wer})
    logging.info(f"{name}: {len(results)} utterances, {audio_s:.1f} s of audio decoded in {decode_s:.1f} s: "
                 f"RTFx {audio_s / max(decode_s, 1e-9):.1f}; {cpu_s:.1f} CPU-s: "
                 f"{audio_s / max(cpu_s, 1e-9):.1f} s of audio per CPU-second")
    logging.info(f"pocketsphinx WER on {name}: {wer:.2f}% (results in {out_dir})")
    return wer


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cuts", type=Path, required=True, help="lhotse cut manifest with recordings")
    p.add_argument("--exp-dir", type=Path, default=Path("exp"))
    p.add_argument("--name", default=None, help="set name in the result files (default: from --cuts)")
    args = p.parse_args(argv)
    try:
        run(args.cuts, args.exp_dir, args.name or set_name(args.cuts))
    except (FileNotFoundError, ValueError, RuntimeError) as e:
        print(f"pocketsphinx_baseline.py: error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
