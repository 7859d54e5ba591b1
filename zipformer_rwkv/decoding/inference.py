"""Load a trained model from its checkpoint(s) and decode with it: what decode.py, transcribe.py and
bench/bench_decode.py share (an entry script imports no other entry script).

- `load_model(checkpoint, ...)`: one file or a `DecodeCheckpoints` plan (several files averaged) ->
  (params, model in eval mode, tokenizers). The structure comes from the checkpoint; trainable-only
  files get their frozen weights from their base checkpoints (`recipe.get_model_for_checkpoint`).
- `decode_dataset`: decode every batch of a dataloader, with timing.
"""
import time
from pathlib import Path
from typing import Collection, Dict, Optional, Tuple, Union

import torch
from torch import nn

from zipformer_rwkv import recipe
from zipformer_rwkv.decoding.search import DecodingOptions
from zipformer_rwkv.training.checkpoint import checkpoint_params, load_state_dict_checked, read_checkpoint
from zipformer_rwkv.training.selection import DecodeCheckpoints, load_decode_model
from zipformer_rwkv.utils import AttributeDict

NOTE_SKIPPED, NOTE_TRUNCATED = recipe.NOTE_SKIPPED, recipe.NOTE_TRUNCATED


def load_model(
    checkpoint: Union[str, Path, DecodeCheckpoints],
    params: Optional[AttributeDict] = None,
    explicit: Collection[str] = (),
    use_averaged_model: bool = False,
    device: Union[str, torch.device] = "cpu",
) -> Tuple[AttributeDict, nn.Module, Dict[str, object]]:
    """Build a trained model from its checkpoint(s), ready to decode.

    Args:
      checkpoint: one file (epoch-N.pt, checkpoint-N.pt, pretrained.pt), or a `DecodeCheckpoints`
        plan (`selection.resolve_decode_checkpoints`: --epoch/--iter/--avg, averaged).
      params: command-line options (decode.py): the structure options of the (last) file
        (`recipe.STRUCTURE_OPTIONS`) are copied in, and an `explicit` one that contradicts them is an
        error. None: the file's own options (transcribe.py).
      explicit: names of the options given on the command line (`utils.explicit_options`).
      use_averaged_model: with one file, load its "model_avg" instead of "model" (a plan says itself
        how it averages).
      device: where the model goes.
    Returns:
      (params, model in eval mode on `device`, tokenizers as `recipe.get_tokenizers`).
    Raises:
      RecipeError / ValueError / FileNotFoundError: one line naming the file and the problem (not
      written by train.py, an entry missing, options contradicting the file, a base checkpoint of a
      trainable-only file missing or different, weights not matching).
    """
    if isinstance(checkpoint, DecodeCheckpoints):
        plan = checkpoint
    else:
        plan = DecodeCheckpoints("load", [Path(checkpoint)], str(checkpoint))
    source = str(plan.filenames[-1])
    saved = read_checkpoint(plan.filenames[-1])
    if params is None:
        if "model_type" not in saved:
            raise ValueError(f"{source} was not written by train.py (no model_type)")
        params = AttributeDict(checkpoint_params(saved))
    else:
        recipe.apply_checkpoint_structure(params, saved, set(explicit), source)
    key = "model_avg" if use_averaged_model and plan.method == "load" else "model"
    if key not in saved:
        raise ValueError(f"{source} has no {key}")
    model, tokenizers = recipe.get_model_for_checkpoint(params, saved, source)
    if plan.method == "load":
        load_state_dict_checked(model, saved[key], f"{source}[{key}]", allow_missing=bool(saved.get("trainable_only")))
    else:
        del saved  # the plan reads its files itself
        load_decode_model(model, plan)
    return params, model.to(device).eval(), tokenizers


# ------------------------------------------------------------------------------------ decoding


def decode_dataset(
    model: nn.Module, dl, tokenizers: Dict[str, object], device: torch.device,
    options: DecodingOptions = DecodingOptions(),
) -> Tuple[list, Dict[str, float]]:
    """Decode every batch of `dl` (K2SpeechRecognitionDataset batches: "inputs" (N, T, 80) fbank at
    100 Hz) with `recipe.recognize(model, tokenizers, feats, lens, options)`; decoding seconds are
    wall time around the search.

    Returns:
      results `(cut_id, ref_words, hyp_words, note)` and stats {"audio_seconds", "decode_seconds",
      "skipped", "truncated", "utterances"}.
    """
    results = []
    stats = dict(audio_seconds=0.0, decode_seconds=0.0, skipped=0, truncated=0, utterances=0)
    for batch in dl:
        feats = batch["inputs"].to(device)
        lens = recipe.batch_feature_lens(batch).to(device)
        refs = recipe.batch_texts(batch)
        cut_ids = [c.id for c in batch["supervisions"]["cut"]] if "cut" in batch["supervisions"] else \
            [f"utt-{len(results) + i}" for i in range(len(refs))]
        t0 = time.time()
        hyps, notes = recipe.recognize(model, tokenizers, feats, lens, options)
        stats["skipped"] += notes.count(NOTE_SKIPPED)
        stats["truncated"] += notes.count(NOTE_TRUNCATED)
        if device.type == "cuda":
            torch.cuda.synchronize()
        stats["decode_seconds"] += time.time() - t0
        stats["audio_seconds"] += float(lens.sum()) / 100.0
        stats["utterances"] += len(refs)
        for cid, ref, hyp, note in zip(cut_ids, refs, hyps, notes):
            results.append((cid, ref.split(), hyp.split(), note))
    return results, stats
