#!/usr/bin/env python3
"""Train any of the three model types with one icefall-style loop.

Usage (from the repository root):

  # 1. Zipformer2 encoder with CTC (encoder pre-training)
  python zipformer_rwkv/train.py --model-type ctc --world-size 1 --num-epochs 10 \
    --exp-dir exp/ctc --max-duration 300 --base-lr 0.045

  # 2. RWKV-7 language model on data/lm/train.txt (BPE tokens)
  python zipformer_rwkv/train.py --model-type lm --num-epochs 5 --exp-dir exp/lm \
    --rwkv-n-layer 4 --rwkv-n-embd 256 --max-tokens 8000

  # 3. Speech LLM from the two exported models (zipformer_rwkv/export.py), encoder frozen, LoRA
  python zipformer_rwkv/train.py --model-type llm --num-epochs 10 --exp-dir exp/llm \
    --encoder-checkpoint exp/ctc/pretrained.pt --rwkv-checkpoint exp/lm/pretrained.pt \
    --freeze-encoder true --llm-peft lora

  # multi-GPU (mp.spawn) or torchrun
  python zipformer_rwkv/train.py --world-size 4 ...
  torchrun --nproc-per-node 4 zipformer_rwkv/train.py ...

  # resume: re-running the same command continues from the newest checkpoint-N.pt / epoch-N.pt in
  # --exp-dir (same batches, same losses); or name the point: from epoch-3.pt, from checkpoint-4000.pt
  python zipformer_rwkv/train.py ...
  python zipformer_rwkv/train.py --start-epoch 4 ...
  python zipformer_rwkv/train.py --start-batch 4000 ...
  # start over in an --exp-dir that holds a run (its files move to --exp-dir/superseded-DATE/)
  python zipformer_rwkv/train.py --overwrite true ...

A mid-epoch checkpoint-N.pt is written every --save-every-n updates and, for crash recovery, after
every --save-every-minutes of training (each such time-based file replaces the previous one unless N is
a multiple of --save-every-n). Files past the point a run continues from (an earlier run's later
checkpoints) are moved into --exp-dir/superseded-DATE/, never deleted.

Files in --exp-dir: epoch-N.pt, checkpoint-N.pt (with model_avg), best-{train,valid}-loss.pt,
log/log-train-*, tensorboard/, bad-model-{rank}.pt after a failure.

Known failures (a full disk, an unusable checkpoint, bad data) stop with one line
`train.py: error: ...` naming the file/cut and the problem, also written to log/log-train-*;
`--debug true` adds the traceback. Other exceptions are bugs and keep theirs. A training cut whose
features/audio cannot be read is skipped, named in the log and counted (the epoch goes on) up to
--max-bad-cuts; non-finite-loss warnings name the batch's cuts.
"""
import argparse
import copy
import logging
import math
import os
import sys
import time
from pathlib import Path
from typing import Collection, List, Optional

import torch
import torch.multiprocessing as mp
from torch.nn.parallel import DistributedDataParallel as DDP

from zipformer_rwkv import recipe
from zipformer_rwkv.dataset.asr_datamodule import (
    AsrDataModule,
    make_cut_filter,
    set_train_epoch,
)
from zipformer_rwkv.dataset.lm_data import make_text_dataloader
from zipformer_rwkv.errors import (
    CheckpointError,
    DataError,
    MissingFileError,
    RecipeError,
    known_error_message,
    log_to_files,
)
from zipformer_rwkv.training.averaging import update_averaged_model
from zipformer_rwkv.training.checkpoint import (
    atomic_copy,
    atomic_torch_save,
    checkpoint_params,
    load_checkpoint,
    read_checkpoint,
    remove_checkpoints,
    save_checkpoint,
    save_checkpoint_with_global_batch_idx,
    unwrap_model,
)
from zipformer_rwkv.training.dist import cleanup_dist, get_local_rank, is_torchrun, setup_dist
from zipformer_rwkv.training.hooks import register_inf_check_hooks
from zipformer_rwkv.training.resume import (
    CheckpointTimer,
    batches_in_saved_sampler,
    choose_start,
    move_aside,
    sampler_to_save,
    superseded_files,
)
from zipformer_rwkv.training.rng import get_rng_state, set_rng_state
from zipformer_rwkv.utils import (
    AttributeDict,
    MetricsTracker,
    create_grad_scaler,
    explicit_options,
    fix_random_seed,
    get_env_info,
    setup_logger,
    str2bool,
    torch_autocast,
)
from zipformer_rwkv.zipformer import ENCODER_OPTIONS
from zipformer_rwkv.zipformer.encoder import encoder_out_length


def get_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--world-size", type=int, default=1, help="processes (GPUs) for DDP")
    parser.add_argument("--master-port", type=int, default=12354, help="DDP rendezvous port")
    parser.add_argument("--tensorboard", type=str2bool, default=True, help="write TensorBoard logs")
    parser.add_argument("--num-epochs", type=int, default=30)
    parser.add_argument("--start-epoch", type=int, default=1,
                        help="resume from exp-dir/epoch-{start_epoch-1}.pt when > 1")
    parser.add_argument("--start-batch", type=int, default=0,
                        help="resume mid-epoch from exp-dir/checkpoint-{start_batch}.pt when > 0")
    parser.add_argument("--exp-dir", type=Path, default=None, help="default: exp/{model_type}")
    parser.add_argument("--ref-duration", type=float, default=600,
                        help="seconds of audio per reference batch (Zipformer batch count for schedules)")
    parser.add_argument("--inf-check", type=str2bool, default=False, help="install inf/nan hooks")
    parser.add_argument("--save-every-n", type=int, default=4000, help="save checkpoint-N.pt every N batches")
    parser.add_argument("--save-every-minutes", type=float, default=5.0,
                        help="also save checkpoint-N.pt after this many minutes of training (the newest "
                             "such file replaces the previous one); 0: off")
    parser.add_argument("--overwrite", type=str2bool, default=False,
                        help="start over although --exp-dir holds checkpoints (they are moved to "
                             "--exp-dir/superseded-DATE/); false: continue from the newest one")
    parser.add_argument("--keep-last-k", type=int, default=30, help="keep the last k checkpoint-N.pt")
    parser.add_argument("--average-period", type=int, default=200, help="batches between model_avg updates")
    parser.add_argument("--use-fp16", type=str2bool, default=False, help="fp16 autocast + grad scaler")
    parser.add_argument("--use-bf16", type=str2bool, default=False, help="bf16 autocast")
    parser.add_argument("--log-interval", type=int, default=50, help="batches between progress lines")
    parser.add_argument("--valid-interval", type=int, default=3000, help="batches between validations")
    parser.add_argument("--max-bad-cuts", type=int, default=100,
                        help="skip training cuts whose features/audio cannot be read (each logged), but "
                             "stop once more than this many were")
    parser.add_argument("--max-bad-batches", type=int, default=20,
                        help="stop after this many non-finite losses in a row (dumping bad-model-{rank}.pt)")
    parser.add_argument("--num-threads", type=int, default=0,
                        help="torch CPU threads per process; 0: CPU cores / world size")
    parser.add_argument("--log-level", type=str, default="info")
    parser.add_argument("--debug", type=str2bool, default=False,
                        help="show the traceback of known failures too (bad data, full disk, checkpoint "
                             "mismatch), which are otherwise one 'train.py: error:' line and a log entry")
    parser.add_argument("--lm-dir", type=Path, default=Path("data/lm"),
                        help="lm: folder with train.txt and valid.txt (one sentence per line)")
    parser.add_argument("--max-tokens", type=int, default=8000, help="lm: tokens per batch (with padding)")
    parser.add_argument("--max-sentence-tokens", type=int, default=256, help="lm: truncate longer sentences")
    parser.add_argument("--min-utt-duration", type=float, default=1.0, help="drop shorter training cuts (s)")
    parser.add_argument("--max-utt-duration", type=float, default=20.0, help="drop longer training cuts (s)")
    recipe.add_model_arguments(parser)
    recipe.add_optimizer_arguments(parser)
    AsrDataModule.add_arguments(parser)
    return parser


def get_params() -> AttributeDict:
    """Training state and constants that are not options (icefall's get_params)."""
    return AttributeDict(
        best_train_loss=float("inf"), best_valid_loss=float("inf"),
        best_train_epoch=-1, best_valid_epoch=-1,
        batch_idx_train=0, cur_epoch=1, feature_dim=80,
        reset_interval=200, num_bad_batches=0, num_bad_cuts=0, env_info=get_env_info(),
    )


# ------------------------------------------------------------------------------------ data


def get_dataloaders(params: AttributeDict, args, tokenizers, world_size: int, rank: int, sampler_state=None):
    """(train_dl, valid_dl); each train_dl has `.sampler` with set_epoch/state_dict."""
    if params.model_type == "lm":
        enc = tokenizers["llm"].encode
        common = dict(max_tokens=params.max_tokens, world_size=world_size, rank=rank,
                      seed=params.seed, max_len=params.max_sentence_tokens)
        train_dl = make_text_dataloader(params.lm_dir / "train.txt", enc, shuffle=True,
                                        sampler_state_dict=sampler_state, **common)
        valid_dl = make_text_dataloader(params.lm_dir / "valid.txt", enc, shuffle=False, **common)
        return train_dl, valid_dl
    data = AsrDataModule(args)
    keep = train_cut_filter(params, tokenizers)
    train_dl = data.train_dataloaders(data.train_cuts().filter(keep), sampler_state_dict=sampler_state)
    valid_dl = data.valid_dataloaders(data.valid_cuts())
    return train_dl, valid_dl


def train_cut_filter(params: AttributeDict, tokenizers):
    """The predicate applied to the training cuts: --min/--max-utt-duration, and enough encoder
    frames (ctc: tokens + 1; llm: one adapter position)."""
    if params.model_type == "llm":  # at least one audio position after the adapter
        ds, num_tokens = recipe.min_encoder_frames(params), (lambda text: 0)
    else:  # CTC needs at least as many encoder frames as tokens
        ds, num_tokens = 1, (lambda text: len(tokenizers["bpe"].encode(text)))
    return make_cut_filter(params.min_utt_duration, params.max_utt_duration, num_tokens=num_tokens,
                           output_frames=lambda n: encoder_out_length(n) // ds, extra_frames=1)


class EmptyEpochError(RecipeError, RuntimeError):
    """An epoch yielded no training batch (the message says why); raised before epoch-N.pt is saved."""


def empty_epoch_message(params: AttributeDict, args, tokenizers, train_dl, world_size: int) -> str:
    """Why epoch `params.cur_epoch` had no batch: the data counts and the batching options."""
    head = f"no training batches in epoch {params.cur_epoch}: "
    if params.model_type == "lm":
        n = len(train_dl.sentences)
        return (head + f"{params.lm_dir / 'train.txt'} has {n} non-empty sentences and --max-tokens "
                f"{params.max_tokens} (world size {world_size}) made no batch of them; check the LM text "
                f"(prepare.sh stage 4)")
    data = AsrDataModule(args)
    manifests = ", ".join(str(Path(params.manifest_dir) / s.cuts) for s in data.conf.train)
    keep = train_cut_filter(params, tokenizers)
    level = logging.root.manager.disable
    logging.disable(logging.WARNING)  # the filter already logged each excluded cut during the epoch
    try:
        n_all, n_kept, kept_s = 0, 0, 0.0
        for c in data.train_cuts():
            n_all += 1
            if keep(c):
                n_kept, kept_s = n_kept + 1, kept_s + c.duration
    finally:
        logging.disable(level)
    fix = ("widen --min/--max-utt-duration or check the transcripts" if n_kept == 0 else
           f"use --drop-last false or a --max-duration below {kept_s:.1f} s")
    return (head + f"the training manifests ({manifests}) hold {n_all} cuts; {n_kept} ({kept_s:.1f} s) "
            f"survived the filters (--min-utt-duration {params.min_utt_duration}, --max-utt-duration "
            f"{params.max_utt_duration}, enough encoder frames for the text); with --max-duration "
            f"{params.max_duration} and --drop-last {params.drop_last} (world size {world_size}) the "
            f"sampler made no batch of them: {fix}")


def batch_audio_seconds(params: AttributeDict, batch: dict) -> float:
    """Seconds of audio (or, for lm, number of tokens) in a batch, for throughput and ETA."""
    if params.model_type == "lm":
        return float(batch["lengths"].sum())
    return float(recipe.batch_feature_lens(batch).sum()) / 100.0


# ------------------------------------------------------------------------------------ checkpoints


def load_checkpoint_if_available(params, model, model_avg, optimizer, scaler) -> Optional[dict]:
    """icefall's resume rule: checkpoint-{start_batch}.pt if start_batch > 0, else
    epoch-{start_epoch-1}.pt if start_epoch > 1. Copies the training state into params."""
    if params.start_batch > 0:
        filename = params.exp_dir / f"checkpoint-{params.start_batch}.pt"
    elif params.start_epoch > 1:
        filename = params.exp_dir / f"epoch-{params.start_epoch - 1}.pt"
    else:
        return None
    if not filename.is_file():
        raise MissingFileError(f"cannot resume: {filename} does not exist")
    saved_type = read_checkpoint(filename, mmap=True).get("model_type", params.model_type)
    if saved_type != params.model_type:  # checked before the strict load, which would fail less clearly
        raise CheckpointError(f"{filename} is a --model-type {saved_type} checkpoint, "
                              f"this run is --model-type {params.model_type}")
    saved = load_checkpoint(filename, model, model_avg, optimizer=optimizer,
                            scheduler=optimizer.scheduler, scaler=scaler)
    for key in ("best_train_epoch", "best_valid_epoch", "batch_idx_train", "best_train_loss",
                "best_valid_loss", "num_bad_batches", "num_bad_cuts"):
        if key in saved:
            params[key] = saved[key]
    if params.start_batch > 0:
        params.cur_epoch = saved["cur_epoch"]
    logging.info(f"Resumed from {filename} (batch_idx_train={params.batch_idx_train})")
    return saved


def save_epoch_checkpoint(params, model, model_avg, optimizer, scaler, sampler, rank: int) -> None:
    filename = params.exp_dir / f"epoch-{params.cur_epoch}.pt"
    save_checkpoint(filename, model, model_avg, params=_saved_params(params), optimizer=optimizer,
                    scheduler=optimizer.scheduler, scaler=scaler, sampler=sampler, rank=rank)
    if rank == 0:
        for kind in ("train", "valid"):
            if params[f"best_{kind}_epoch"] == params.cur_epoch:
                atomic_copy(filename, params.exp_dir / f"best-{kind}-loss.pt")


def _saved_params(params: AttributeDict) -> dict:
    out = {k: v for k, v in params.items() if k not in ("exp_dir",)}
    out["exp_dir"] = str(params.exp_dir)
    out["rng_state"] = get_rng_state()
    return out


# ------------------------------------------------------------------------------------ loop


def compute_validation_loss(params, model, valid_dl, tokenizers, device, world_size) -> MetricsTracker:
    model.eval()
    tot = MetricsTracker()
    with torch.no_grad():
        for batch in valid_dl:
            _, stats = recipe.compute_loss(params, model, batch, tokenizers, device)
            info = MetricsTracker()
            for k, v in stats.items():
                info[k] = v
            tot = tot + info
    if world_size > 1:
        tot.reduce(device)
    loss = tot["loss"] / max(tot["frames"], 1)
    if loss < params.best_valid_loss:
        params.best_valid_epoch, params.best_valid_loss = params.cur_epoch, loss
    model.train()
    return tot


def _all_finite(loss: torch.Tensor, world_size: int) -> bool:
    flag = torch.tensor([float(torch.isfinite(loss.detach()).all())], device=loss.device)
    if world_size > 1:
        torch.distributed.all_reduce(flag, op=torch.distributed.ReduceOp.MIN)
    return bool(flag.item() > 0)


def train_one_epoch(params, model, model_avg, optimizer, scaler, train_dl, valid_dl, tokenizers,
                    device, tb_writer, world_size: int, rank: int, epoch_audio: float,
                    rng_state: Optional[dict] = None, timer: Optional[CheckpointTimer] = None,
                    done_before: int = 0) -> int:
    """One epoch (icefall's train_one_epoch) with non-finite-loss skipping and checkpointing.

    Returns the number of batches this process received (0: nothing was trained).

    `rng_state` (mid-epoch resume) is restored after the DataLoader iterator is created, which
    is where an uninterrupted run stood when it saved the state. `timer`: when a time-based
    checkpoint is due (rank 0). `done_before`: batches of this epoch consumed before a mid-epoch
    resume (the saved sampler state counts them).
    """
    model.train()
    tot = MetricsTracker()
    t_start, done_audio = time.time(), 0.0
    batches = iter(train_dl)
    if rng_state is not None:
        set_rng_state(rng_state)
    grad_norm, num_batches = 0.0, 0
    for batch_idx, batch in enumerate(batches):
        num_batches += 1
        if not _usable_after_bad_cuts(params, batch, world_size):
            continue
        if params.batch_idx_train % 10 == 0 or batch_idx == 0:
            set_encoder_schedules(params, model, params.batch_idx_train, world_size)
        params.batch_idx_train += 1
        try:
            with torch_autocast(device, enabled=params.use_autocast, dtype=params.dtype):
                loss, stats = recipe.compute_loss(params, model, batch, tokenizers, device)
            if not _all_finite(loss, world_size):
                params.num_bad_batches += 1
                logging.warning(f"Non-finite loss at batch {params.batch_idx_train} (cuts "
                                f"{_batch_fingerprint(batch, 20)}): skipped ({params.num_bad_batches} in a "
                                f"row, {params.max_bad_batches} allowed)")
                optimizer.zero_grad()
                if params.num_bad_batches >= params.max_bad_batches:
                    raise FloatingPointError(f"{params.num_bad_batches} non-finite losses in a row")
                continue
            params.num_bad_batches = 0
            logging.debug(f"batch {params.batch_idx_train} loss {loss.item():.10f} "
                          f"data {_batch_fingerprint(batch)}")
            scaler.scale(loss).backward()
            optimizer.scheduler.step_batch(params.batch_idx_train)
            grad_norm = optimizer.step(scaler)
            scaler.update()
            optimizer.zero_grad()
        except Exception as e:
            path = params.exp_dir / f"bad-model-{rank}.pt"
            atomic_torch_save({"model": unwrap_model(model).state_dict(),
                               "batch_idx_train": params.batch_idx_train}, path)
            logging.error(f"Training stopped at batch {params.batch_idx_train}: {e}; model saved to {path}")
            raise
        info = MetricsTracker()
        for k, v in stats.items():
            info[k] = v
        tot = tot * (1 - 1 / params.reset_interval) + info
        done_audio += batch_audio_seconds(params, batch) * world_size

        if rank == 0 and params.batch_idx_train % params.average_period == 0:
            update_averaged_model(params, model, model_avg)
        every_n = params.batch_idx_train % params.save_every_n == 0
        if every_n or (rank == 0 and timer is not None and timer.due()):  # (only rank 0 writes)
            sampler = sampler_to_save(params.model_type, train_dl, done_before + num_batches)
            path = save_checkpoint_with_global_batch_idx(
                params.exp_dir, params.batch_idx_train, model, model_avg, _saved_params(params),
                optimizer, optimizer.scheduler, scaler, sampler, rank)
            if rank == 0 and timer is not None:  # a time-based file replaces the previous one
                replaced = timer.saved(None if every_n else path)
                if replaced is not None:
                    replaced.unlink(missing_ok=True)
            remove_checkpoints(params.exp_dir, params.keep_last_k, rank)
        if params.use_fp16:
            _grad_scale_watchdog(params, model, scaler, rank)

        if batch_idx % params.log_interval == 0:
            elapsed = time.time() - t_start
            rate = done_audio / max(elapsed, 1e-9)
            left_epoch = max(epoch_audio - done_audio, 0.0)
            left_all = left_epoch + epoch_audio * (params.num_epochs - params.cur_epoch)
            unit = "tokens" if params.model_type == "lm" else "audio s"
            lr = optimizer.scheduler.get_last_lr()
            logging.info(
                f"Epoch {params.cur_epoch}, batch {batch_idx}, loss[{_fmt(info)}], tot_loss[{_fmt(tot)}], "
                f"batch size: {int(stats['utterances'])}, lr: {', '.join(f'{x:.2e}' for x in lr)}, "
                f"grad_norm: {grad_norm:.3g}, {rate:.1f} {unit}/s, "
                f"ETA epoch {_hms(left_epoch / rate if rate else 0)}, all {_hms(left_all / rate if rate else 0)}"
            )
            if tb_writer is not None:
                info.write_summary(tb_writer, "train/current_", params.batch_idx_train)
                tot.write_summary(tb_writer, "train/tot_", params.batch_idx_train)
                tb_writer.add_scalar("train/learning_rate", lr[0], params.batch_idx_train)
                tb_writer.add_scalar("train/grad_norm", grad_norm, params.batch_idx_train)
                tb_writer.add_scalar("train/frames_per_second", rate * (100 if unit != "tokens" else 1),
                                     params.batch_idx_train)

        if params.batch_idx_train % params.valid_interval == 0:
            _validate(params, model, valid_dl, tokenizers, device, world_size, tb_writer)

    if num_batches == 0:
        return 0
    loss = tot["loss"] / max(tot["frames"], 1)
    params.train_loss = loss
    if loss < params.best_train_loss:
        params.best_train_epoch, params.best_train_loss = params.cur_epoch, loss
    return num_batches


def _validate(params, model, valid_dl, tokenizers, device, world_size, tb_writer) -> None:
    t0 = time.time()
    valid = compute_validation_loss(params, model, valid_dl, tokenizers, device, world_size)
    extra = ""
    if params.model_type != "ctc":
        ce = valid["ce_loss"] if "ce_loss" in valid else valid["loss"]
        extra = f", ppl={math.exp(min(ce / max(valid['frames'], 1), 50)):.3f}"
    logging.info(f"Epoch {params.cur_epoch}, validation: {_fmt(valid)}{extra} ({time.time() - t0:.1f} s)")
    if tb_writer is not None:
        valid.write_summary(tb_writer, "train/valid_", params.batch_idx_train)


def _grad_scale_watchdog(params, model, scaler, rank) -> None:
    """icefall: double a small scale every 400 batches; warn < 0.01 (and add inf-check hooks);
    stop below 1e-5."""
    scale = scaler.get_scale()
    if params.batch_idx_train % 100 == 0 and (scale < 8.0 or (scale < 32.0 and params.batch_idx_train % 400 == 0)):
        scaler.update(scale * 2.0)
    if scale < 0.01:
        if not params.get("inf_check_installed"):
            register_inf_check_hooks(model)
            params.inf_check_installed = True
        logging.warning(f"Grad scale is small: {scale}")
    if scale < 1.0e-05:
        path = params.exp_dir / f"bad-model-{rank}.pt"
        atomic_torch_save({"model": unwrap_model(model).state_dict()}, path)
        raise RuntimeError(f"grad scale is too small ({scale}), exiting; model saved to {path}")


def _sum_over_ranks(n: int, world_size: int, device: torch.device) -> int:
    if world_size == 1:
        return n
    t = torch.tensor([n], dtype=torch.int64, device=device)
    torch.distributed.all_reduce(t)
    return int(t.item())


def set_encoder_schedules(params, model: torch.nn.Module, batch_idx_train: int, world_size: int) -> None:
    """Set the Zipformer's ScheduledFloats (dropout, layer skipping, Balancer/Whiten) as icefall's
    train.py does: from the global batch index rounded down to 10 (so a resumed run sets the same
    values), counted in reference durations: count * max_duration * world_size / ref_duration.
    Nothing to do for the LM."""
    if params.model_type == "lm":
        return
    from zipformer_rwkv.zipformer import set_batch_count

    count = batch_idx_train // 10 * 10
    set_batch_count(unwrap_model(model), count * params.max_duration * world_size / params.ref_duration)


def _batch_fingerprint(batch: dict, max_cuts: int = 3) -> str:
    """Identifies a batch in logs: its first `max_cuts` cut ids, or a checksum of LM tokens."""
    if "tokens" in batch:
        t = batch["tokens"]
        return f"tokens{tuple(t.shape)}:{int((t * torch.arange(1, t.numel() + 1).view(t.shape)).sum())}"
    cuts = batch["supervisions"].get("cut") or []
    more = f",...+{len(cuts) - max_cuts}" if len(cuts) > max_cuts else ""
    return ",".join(c.id for c in cuts[:max_cuts]) + more


def _usable_after_bad_cuts(params, batch: dict, world_size: int) -> bool:
    """Log and count the cuts the dataset dropped as unreadable (`batch["bad_cuts"]`); False when
    none of the batch is left (it is skipped).

    Raises:
      DataError: more than --max-bad-cuts in the run so far, or (DDP) a batch with no cut left,
        which the other ranks could not skip in step.
    """
    bad = batch.pop("bad_cuts", None) or []
    for cut_id, why in bad:
        params.num_bad_cuts += 1
        logging.warning(f"Skipped cut {cut_id} at batch {params.batch_idx_train + 1}: unreadable ({why}); "
                        f"{params.num_bad_cuts} so far, --max-bad-cuts {params.max_bad_cuts}")
        if params.num_bad_cuts > params.max_bad_cuts:
            raise DataError(f"{params.num_bad_cuts} unreadable cuts, more than --max-bad-cuts "
                            f"{params.max_bad_cuts}; the last: {cut_id}: {why}")
    if "tokens" in batch or batch.get("inputs") is not None:
        return True
    if world_size > 1:
        raise DataError(f"every cut of a batch was unreadable ({[c for c, _ in bad]}); with --world-size > 1 "
                        "the ranks cannot skip it in step: fix or filter these cuts")
    return False


def _fmt(m: MetricsTracker) -> str:
    return ", ".join(f"{k}={v:.4g}" for k, v in m.norm_items() if k != "utterances")


def _hms(s: float) -> str:
    s = int(s)
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"


def _epoch_audio(params, train_dl, world_size) -> float:
    """Audio seconds (lm: tokens) of one epoch over all ranks, for the ETA."""
    if params.model_type == "lm":
        return float(sum(len(s) for s in train_dl.sentences))
    cuts = train_dl.sampler.cuts[0] if hasattr(train_dl.sampler, "cuts") else None
    try:
        return float(sum(c.duration for c in cuts)) if cuts is not None else 0.0
    except Exception:  # lazily filtered/muxed sets that cannot be iterated twice
        return 0.0


def set_autocast_params(params: AttributeDict) -> None:
    """Sets `params.use_autocast` and `params.dtype` (float16 / bfloat16) from --use-fp16 / --use-bf16,
    for `torch_autocast(device, enabled=params.use_autocast, dtype=params.dtype)` around the loss.

    Raises:
      ValueError: both options are true.
    """
    if params.use_fp16 and params.use_bf16:
        raise ValueError("--use-fp16 and --use-bf16 are exclusive")
    params.use_autocast = params.use_fp16 or params.use_bf16
    params.dtype = torch.float16 if params.use_fp16 else torch.bfloat16


def run(rank: int, world_size: int, args) -> None:
    """One training process (rank) of `world_size` (mp.spawn target, or called directly).

    A known failure (`errors.RecipeError`) is written to this rank's training log, then re-raised
    for `main` to print as one line.
    """
    try:
        _train(rank, world_size, args)
    except RecipeError as e:
        log_to_files(f"Training stopped: {e}")
        raise


def _train(rank: int, world_size: int, args) -> None:
    params = get_params()
    params.update(vars(args))
    if params.exp_dir is None:
        params.exp_dir = Path("exp") / params.model_type
    params.exp_dir = Path(params.exp_dir)
    set_autocast_params(params)
    if world_size > 1 or is_torchrun():
        setup_dist(rank, world_size, params.master_port)
        rank, world_size = torch.distributed.get_rank(), torch.distributed.get_world_size()
    torch.set_num_threads(params.num_threads or max(1, (os.cpu_count() or 1) // world_size))
    fix_random_seed(params.seed)
    setup_logger(params.exp_dir / "log" / "log-train", params.log_level)
    logging.info(f"Training started: {params}")
    device = torch.device("cuda", get_local_rank()) if torch.cuda.is_available() else torch.device("cpu")

    model, tokenizers = recipe.get_model(params)
    num_param = sum(p.numel() for p in model.parameters())
    num_train = sum(p.numel() for p in model.parameters() if p.requires_grad)
    logging.info(f"Number of model parameters: {num_param} ({num_train} trainable)")
    model.to(device)
    model_avg = copy.deepcopy(model).to(torch.float64) if rank == 0 else None
    optimizer = recipe.get_optimizer(params, model)
    scaler = create_grad_scaler(device, enabled=params.use_fp16, init_scale=1.0)
    params.start_epoch, params.start_batch = choose_start(params.exp_dir, params.start_epoch,
                                                          params.start_batch, params.overwrite)
    saved = load_checkpoint_if_available(params, model, model_avg, optimizer, scaler)
    if world_size > 1:
        torch.distributed.barrier()  # every rank has found and read its checkpoint
    if rank == 0:
        move_aside(superseded_files(params.exp_dir, params.batch_idx_train), params.exp_dir)
    if world_size > 1:
        model = DDP(model, device_ids=[device.index] if device.type == "cuda" else None,
                    find_unused_parameters=True)
    if params.inf_check:
        register_inf_check_hooks(model)

    sampler_state = saved.get("sampler") if saved and params.start_batch > 0 else None
    done_before = batches_in_saved_sampler(params.model_type, saved) if sampler_state else 0
    train_dl, valid_dl = get_dataloaders(params, args, tokenizers, world_size, rank, sampler_state)
    epoch_audio = _epoch_audio(params, train_dl, world_size)
    tb_writer = None
    if params.tensorboard and rank == 0:
        from torch.utils.tensorboard import SummaryWriter

        tb_writer = SummaryWriter(log_dir=str(params.exp_dir / "tensorboard"))

    first_epoch = params.cur_epoch if params.start_batch > 0 else params.start_epoch
    timer = CheckpointTimer(params.save_every_minutes) if rank == 0 else None
    for epoch in range(first_epoch, params.num_epochs + 1):
        optimizer.scheduler.step_epoch(epoch - 1)
        fix_random_seed(params.seed + epoch - 1)
        resumed = saved is not None and params.start_batch > 0 and epoch == first_epoch
        resume_rng = saved.get("rng_state") if resumed else None
        set_train_epoch(train_dl, epoch - 1)
        if tb_writer is not None:
            tb_writer.add_scalar("train/epoch", epoch, params.batch_idx_train)
        params.cur_epoch = epoch
        num_batches = train_one_epoch(params, model, model_avg, optimizer, scaler, train_dl, valid_dl,
                                      tokenizers, device, tb_writer, world_size, rank, epoch_audio, resume_rng,
                                      timer, done_before if resumed else 0)
        if not resumed and _sum_over_ranks(num_batches, world_size, device) == 0:
            # (a mid-epoch resume may legitimately find the epoch finished)
            raise EmptyEpochError(empty_epoch_message(params, args, tokenizers, train_dl, world_size))
        _validate(params, model, valid_dl, tokenizers, device, world_size, tb_writer)
        save_epoch_checkpoint(params, model, model_avg, optimizer, scaler, train_dl.sampler, rank)
        if timer is not None:
            timer.saved()
    checksum = sum(float(p.detach().double().sum()) for p in unwrap_model(model).parameters())
    logging.info(f"Done! Parameter checksum on rank {rank}: {checksum!r}")
    if tb_writer is not None:
        tb_writer.close()
    if world_size > 1:
        torch.distributed.barrier()
        cleanup_dist()


def take_encoder_structure(params: dict, explicit: Collection[str]) -> List[str]:
    """A speech LLM builds the encoder its `--encoder-checkpoint` holds: the Zipformer's structure
    options saved in that file (ours, and icefall's epoch-N.pt, which keeps its params at the top
    level) replace the command line's, as decode.py takes a model's from its own checkpoint. A file
    with none (icefall's pretrained.pt: weights only) leaves the command line's.

    Args:
      params: the parsed options (vars(args)); changed in place.
      explicit: options given on the command line (`utils.explicit_options`).
    Returns:
      the options taken from the file.
    Raises:
      ValueError: an explicit option differs from the file's (all of them named).
    """
    path = params.get("encoder_checkpoint")
    if params.get("model_type") != "llm" or not path:
        return []
    saved = checkpoint_params(read_checkpoint(path, mmap=True))
    keys = [k for k in ENCODER_OPTIONS if saved.get(k) is not None]
    recipe.apply_checkpoint_structure(params, saved, explicit, f"--encoder-checkpoint {path}", keys)
    return keys


def main() -> None:
    torch.set_num_threads(1)  # icefall; run() sets --num-threads per process
    parser = get_parser()
    args = parser.parse_args()
    world_size = args.world_size
    for path, what in ((args.encoder_checkpoint, "--encoder-checkpoint"), (args.rwkv_checkpoint, "--rwkv-checkpoint")):
        if path and not Path(path).is_file():
            sys.exit(f"train.py: error: {what} {path} does not exist")
    try:
        take_encoder_structure(vars(args), explicit_options(parser, sys.argv[1:]))
    except (ValueError, RecipeError) as e:
        sys.exit(f"train.py: error: {e}")
    try:
        if is_torchrun():
            run(int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"]), args)
        elif world_size > 1:
            mp.spawn(run, args=(world_size, args), nprocs=world_size, join=True)
        else:
            run(rank=0, world_size=1, args=args)
    except Exception as e:  # a known failure is one line (and in the log); a bug keeps its traceback
        msg = known_error_message(e)
        if msg is None or args.debug:
            raise
        sys.exit(f"train.py: error: {msg}")


if __name__ == "__main__":
    main()
