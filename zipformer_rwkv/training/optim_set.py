"""Several optimizer+scheduler pairs driven as one (ScaledAdam for the Zipformer side, AdamW for RWKV-7).

`OptimizerSet` has what the training loop and `save_checkpoint` need from "the optimizer" and
`OptimizerSet.scheduler` what they need from "the scheduler" (`state_dict`, `load_state_dict`,
`step_batch`, `step_epoch`, `get_last_lr`), so one loop serves every `--model-type`.
"""
import math
from dataclasses import dataclass
from typing import Dict, List, Optional

import torch

from zipformer_rwkv.training.optim import clip_grad_norm


@dataclass
class OptimizerEntry:
    """One optimizer, its Eden-style scheduler and, for plain optimizers, a grad-norm clip.

    Attributes:
      max_grad_norm: clip this optimizer's gradients to this L2 norm before stepping (None: the
        optimizer clips itself, as ScaledAdam does with `clipping_scale`).
    """

    optimizer: torch.optim.Optimizer
    scheduler: object
    max_grad_norm: Optional[float] = None


class OptimizerSet:
    """Named `OptimizerEntry`s stepped together.

    Args:
      entries: e.g. {"scaled_adam": ..., "adamw": ...}; at least one.
    """

    def __init__(self, entries: Dict[str, OptimizerEntry]):
        if not entries:
            raise ValueError("OptimizerSet needs at least one optimizer (no trainable parameters?)")
        self.entries = entries
        self.scheduler = _SchedulerView(self)

    def zero_grad(self) -> None:
        for e in self.entries.values():
            e.optimizer.zero_grad(set_to_none=True)

    def step(self, scaler: torch.amp.GradScaler) -> float:
        """Unscale, clip and step every optimizer through `scaler`; returns the total grad norm
        before clipping (inf/nan if some gradient was not finite; then plain optimizers skip)."""
        norms: List[float] = []
        for e in self.entries.values():
            if e.max_grad_norm is not None:
                scaler.unscale_(e.optimizer)
                params = [p for g in e.optimizer.param_groups for p in g["params"]]
                norm = clip_grad_norm(params, e.max_grad_norm)
                norms.append(norm)
                if not math.isfinite(norm) and not scaler.is_enabled():
                    continue  # fp32: skip the step (the scaler does this itself in fp16)
            scaler.step(e.optimizer)
            if e.max_grad_norm is None:  # GradScaler.step unscaled the gradients first
                norms.append(float(getattr(e.optimizer, "last_grad_norm", 0.0)))
        return math.sqrt(sum(n * n for n in norms))

    def state_dict(self) -> dict:
        return {name: e.optimizer.state_dict() for name, e in self.entries.items()}

    def load_state_dict(self, state: dict) -> None:
        if set(state) != set(self.entries):
            raise ValueError(f"optimizer state has {sorted(state)}, this run uses {sorted(self.entries)}")
        for name, e in self.entries.items():
            e.optimizer.load_state_dict(state[name])


class _SchedulerView:
    """The schedulers of an `OptimizerSet` seen as one scheduler."""

    def __init__(self, opts: OptimizerSet):
        self.opts = opts

    def step_batch(self, batch: int) -> None:
        for e in self.opts.entries.values():
            e.scheduler.step_batch(batch)

    def step_epoch(self, epoch: int) -> None:
        for e in self.opts.entries.values():
            e.scheduler.step_epoch(epoch)

    def get_last_lr(self) -> List[float]:
        """The lr of the first group of each optimizer."""
        return [e.scheduler.get_last_lr()[0] for e in self.opts.entries.values()]

    def state_dict(self) -> dict:
        return {name: e.scheduler.state_dict() for name, e in self.opts.entries.items()}

    def load_state_dict(self, state: dict) -> None:
        if set(state) != set(self.opts.entries):
            raise ValueError(f"scheduler state has {sorted(state)}, this run uses {sorted(self.opts.entries)}")
        for name, e in self.opts.entries.items():
            e.scheduler.load_state_dict(state[name])
