#!/usr/bin/env python3
"""Decode the dev and test sets with a trained model (icefall's decode.py options and result files).

Usage (from the repository root):

  # speech LLM: average epochs 6..10 through model_avg, greedy and beam search
  python zipformer_rwkv/decode.py --exp-dir exp/llm --epoch 10 --avg 5 --use-averaged-model true \
    --decoding-method greedy_search --max-duration 600
  python zipformer_rwkv/decode.py --exp-dir exp/llm --epoch 10 --avg 5 \
    --decoding-method beam_search --beam-size 4
  # joint CTC / RWKV-7 search (a model trained with --ctc-loss-scale > 0 and --tokenizer bpe)
  python zipformer_rwkv/decode.py --exp-dir exp/llm --epoch 10 --avg 5 \
    --decoding-method beam_search --beam-size 4 --ctc-weight 0.7
  # streaming (a causal, chunk-interleaved model: ./run.sh --streaming true): each utterance as a stream
  python zipformer_rwkv/decode.py --exp-dir exp/llm --epoch 10 --avg 5 --streaming true

  # CTC baseline (CTC greedy search) and LM perplexity
  python zipformer_rwkv/decode.py --exp-dir exp/ctc --epoch 10 --avg 5
  python zipformer_rwkv/decode.py --exp-dir exp/lm --epoch 5 --avg 2

The model structure (--model-type, encoder/RWKV-7 shapes, adapter, PEFT, prompt) is read from the
checkpoint; an option given on the command line that contradicts it is an error naming both values.
A trainable-only checkpoint (adapter/LoRA/state over a frozen base) gets its frozen weights from the
base checkpoints it names (inference.load_model).

Every dev set, then every test set, of the corpus conf (--conf) is decoded, as icefall decodes
dev-clean/dev-other and test-clean/test-other. Writes to exp_dir/{decoding_method}/:
recogs-{set}-{suffix}.txt, errs-{set}-{suffix}.txt, wer-summary-{set}-{suffix}.txt (lm:
ppl-{set}-{suffix}.txt on the dev/test transcripts and lm-valid) and log-decode-{suffix}-*; logs
the RTFx (audio seconds / decoding seconds).
"""
import argparse
import logging
import math
import sys
from pathlib import Path
from typing import Dict, List, Tuple

import torch
from lhotse import CutSet

from zipformer_rwkv import recipe
from zipformer_rwkv.dataset.asr_datamodule import AsrDataModule
from zipformer_rwkv.decoding.inference import decode_dataset, load_model
from zipformer_rwkv.decoding.search import DecodingOptions
from zipformer_rwkv.errors import RecipeError
from zipformer_rwkv.speechllm.streaming import check_streamable
from zipformer_rwkv.training.checkpoint import read_checkpoint
from zipformer_rwkv.training.selection import resolve_decode_checkpoints
from zipformer_rwkv.utils import (
    AttributeDict,
    explicit_options,
    setup_logger,
    store_transcripts,
    str2bool,
    write_error_stats,
    write_wer_summary,
)


def get_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--epoch", type=int, default=30, help="decode epoch-{epoch}.pt (with --avg)")
    parser.add_argument("--iter", type=int, default=0, help="if > 0, use checkpoint-N.pt files with N <= iter")
    parser.add_argument("--avg", type=int, default=15, help="number of checkpoints to average")
    parser.add_argument("--use-averaged-model", type=str2bool, default=True,
                        help="average through model_avg of epoch-{epoch-avg}.pt and epoch-{epoch}.pt")
    parser.add_argument("--exp-dir", type=Path, default=None, help="default: exp/{model_type}")
    DecodingOptions.add_arguments(parser)
    parser.add_argument("--lm-dir", type=Path, default=Path("data/lm"),
                        help="lm: also report perplexity on {lm_dir}/valid.txt if it exists")
    parser.add_argument("--num-threads", type=int, default=0, help="torch CPU threads; 0 = all cores")
    recipe.add_model_arguments(parser)
    AsrDataModule.add_arguments(parser)
    return parser


def decoding_suffix(params: AttributeDict) -> str:
    """icefall-style result-file suffix, e.g. `epoch-10_avg-5_beam-size-4_use-averaged-model`."""
    s = f"iter-{params.iter}_avg-{params.avg}" if params.iter > 0 else f"epoch-{params.epoch}_avg-{params.avg}"
    if params.model_type == "llm" and params.decoding_method == "beam_search":
        s += f"_beam-size-{params.beam_size}"
    if params.model_type == "llm":
        s += f"_max-new-tokens-{params.max_new_tokens}"
    if params.model_type == "llm" and params.ctc_weight > 0:
        s += f"_ctc-weight-{params.ctc_weight:g}"
    if params.get("streaming"):
        s += "_streaming"
    if params.use_averaged_model:
        s += "_use-averaged-model"
    return s


def eval_sets(data: AsrDataModule) -> Dict[str, CutSet]:
    """The conf's dev sets, then its test sets: name -> lazy CutSet.

    The real-speech dev set (conf `real_speech`) is left out, with a warning, when its manifest was not
    built (prepare.sh --real-dev false).

    Raises:
      ValueError: a name is both a dev and a test set (their result files would collide).
      FileNotFoundError: a manifest is missing.
    """
    dev, test = data.dev_cuts(skip_missing_real_speech=True), data.test_cuts()
    both = sorted(set(dev) & set(test))
    if both:
        raise ValueError(f"{data.args.conf}: {', '.join(both)} named both as dev and as test set")
    return {**dev, **test}


# ------------------------------------------------------------------------------------ decoding


def save_results(params, test_set: str, results: list) -> float:
    """Write recogs/errs/wer-summary files; returns the WER (%)."""
    out_dir = params.exp_dir / params.decoding_method
    suffix = params.suffix
    results = sorted(results)
    store_transcripts(out_dir / f"recogs-{test_set}-{suffix}.txt", results)
    with open(out_dir / f"errs-{test_set}-{suffix}.txt", "w", encoding="utf8") as f:
        wer = write_error_stats(f, f"{test_set}-{params.decoding_method}", [r[:3] for r in results])
    key = params.decoding_method + (f"_beam_size_{params.beam_size}" if params.decoding_method == "beam_search" else "")
    if params.model_type == "llm" and params.ctc_weight > 0:
        key += f"_ctc_weight_{params.ctc_weight:g}"
    if params.get("streaming"):
        key += "_streaming"
    write_wer_summary(out_dir / f"wer-summary-{test_set}-{suffix}.txt", {key: wer})
    logging.info(f"Wrote results for {test_set} to {out_dir}: WER {wer}%")
    return wer


@torch.no_grad()
def lm_perplexity(params, model, texts: List[str], tokenizer, device, batch_tokens: int = 4000) -> Tuple[float, int]:
    """(perplexity, number of predicted tokens) of `model` (an LmModel) on `texts`, EOS included."""
    from zipformer_rwkv.dataset.lm_data import TextBatches, TokenBatchSampler

    seqs = [tokenizer.encode(t) for t in texts if t.strip()]
    seqs = [s for s in seqs if s]
    if not seqs:
        raise ValueError("no text to compute the perplexity on")
    sampler = TokenBatchSampler([len(s) for s in seqs], max(batch_tokens, max(map(len, seqs))), shuffle=False)
    total, count = 0.0, 0.0
    for batch in TextBatches(seqs, sampler):
        _, stats = model(batch["tokens"].to(device), batch["lengths"].to(device))
        total += stats["loss"]
        count += stats["frames"]
    return math.exp(total / count), int(count)


def main() -> None:
    try:
        decode()
    except (RecipeError, ValueError, FileNotFoundError) as e:  # bad options / files: one clear line
        sys.exit(f"decode.py: error: {e}")


def decode() -> None:
    parser = get_parser()
    args = parser.parse_args()
    explicit = explicit_options(parser, sys.argv[1:])
    options = DecodingOptions.from_args(args)  # a bad decoding option fails here, before any file is read
    params = AttributeDict(vars(args))
    if params.exp_dir is None:
        params.exp_dir = Path("exp") / params.model_type
    params.exp_dir = Path(params.exp_dir)
    plan = resolve_decode_checkpoints(params.exp_dir, params.epoch, params.iter, params.avg, params.use_averaged_model)
    # the structure options now (the suffix and the log need them); the weights with load_model below
    recipe.apply_checkpoint_structure(params, read_checkpoint(plan.filenames[-1], mmap=True), explicit,
                               str(plan.filenames[-1]))
    params.suffix = decoding_suffix(params)
    out_dir = params.exp_dir / params.decoding_method
    out_dir.mkdir(parents=True, exist_ok=True)
    setup_logger(out_dir / f"log-decode-{params.suffix}")
    if params.num_threads:
        torch.set_num_threads(params.num_threads)
    logging.info(f"Decoding: {params}")
    device = torch.device("cuda", 0) if torch.cuda.is_available() else torch.device("cpu")

    params, model, tokenizers = load_model(plan, params, device=device)
    if options.streaming:
        check_streamable(model, options)  # e.g. a non-causal checkpoint: one error line, before any data
    logging.info(f"Number of model parameters: {sum(p.numel() for p in model.parameters())}")

    data = AsrDataModule(args)
    if params.model_type == "lm":
        try:
            sets = {name: [c.supervisions[0].text for c in cuts] for name, cuts in eval_sets(data).items()}
        except FileNotFoundError as e:
            logging.warning(f"no dev/test transcripts for the perplexity ({e})")
            sets = {}
        if (params.lm_dir / "valid.txt").is_file():
            sets["lm-valid"] = (params.lm_dir / "valid.txt").read_text(encoding="utf8").splitlines()
        for name, texts in sets.items():
            ppl, n = lm_perplexity(params, model, texts, tokenizers["llm"], device)
            (out_dir / f"ppl-{name}-{params.suffix}.txt").write_text(f"settings\tppl\tntokens\nlm\t{ppl:.4f}\t{n}\n")
            logging.info(f"{name}: perplexity {ppl:.4f} over {n} tokens")
        return

    for test_set, cuts in eval_sets(data).items():
        results, stats = decode_dataset(model, data.test_dataloaders(cuts), tokenizers, device, options)
        save_results(params, test_set, results)
        rtfx = stats["audio_seconds"] / max(stats["decode_seconds"], 1e-9)
        logging.info(
            f"{test_set}: {stats['utterances']} utterances, {stats['audio_seconds']:.1f} s of audio decoded in "
            f"{stats['decode_seconds']:.1f} s: RTFx {rtfx:.1f}; skipped (too short) {stats['skipped']}, "
            f"hit --max-new-tokens {stats['truncated']}"
        )
    logging.info("Done!")


if __name__ == "__main__":
    main()
