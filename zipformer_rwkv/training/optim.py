"""Optimizers, learning-rate schedules and parameter grouping for every model type.

- `ScaledAdam`: Adam whose step for each tensor is proportional to that tensor's RMS, which also
  learns each tensor's overall scale, with gradient clipping relative to recent gradient norms
  (the optimizer Zipformer2 is designed for; icefall's `zipformer/optim.py`).
- `Eden`: the per-batch / per-epoch schedule (icefall's `Eden`), driven with `step_batch(batch_idx)`
  and `step_epoch(epoch)`.
- `get_parameter_groups_with_lrs`: icefall's named parameter groups honouring per-module `lr_scale`
  attributes and `freeze_modules`.
- `get_adamw_param_groups`: AdamW groups with weight decay only on >=2-D `.weight` matrices, the
  RWKV-LM convention (`RWKV-v7/train_temp/src/model.py`, `configure_optimizers`).
- `clip_grad_norm`: clip with torch and return the total norm as a float for logging.
"""
import logging
import math
from typing import Dict, Iterable, List, Optional, Sequence, Tuple, Union

import torch
from torch import nn

ParamsLike = Union[Iterable[torch.Tensor], Iterable[Tuple[str, torch.Tensor]], Iterable[dict]]


# --------------------------------------------------------------------------------------------------
# parameter groups


def _module_lr_scales(model: nn.Module, names: Iterable[str]) -> Dict[str, float]:
    """Map each parameter name to the product of `lr_scale` of the modules on its path.

    The root module's own `lr_scale` (if any) counts too.
    """
    cache: Dict[str, float] = {"": float(getattr(model, "lr_scale", 1.0))}

    def scale_of(prefix: str) -> float:
        if prefix in cache:
            return cache[prefix]
        parent, _, _ = prefix.rpartition(".")
        module = model.get_submodule(prefix)
        value = scale_of(parent) * float(getattr(module, "lr_scale", 1.0))
        if not value > 0:
            raise ValueError(f"module '{prefix}' has a non-positive lr_scale product {value}")
        cache[prefix] = value
        return value

    return {name: scale_of(name.rpartition(".")[0]) for name in names}


def _trainable_named_parameters(
    model: nn.Module, freeze_modules: Sequence[str] = ()
) -> List[Tuple[str, nn.Parameter]]:
    """(name, param) for parameters with `requires_grad` that are not under a frozen module.

    Raises:
      ValueError: if an entry of `freeze_modules` names no module of `model` (likely a typo).
    """
    module_names = {name for name, _ in model.named_modules()}
    unknown = [m for m in freeze_modules if m not in module_names]
    if unknown:
        raise ValueError(f"freeze_modules {unknown} are not modules of {type(model).__name__}")
    prefixes = tuple(m + "." for m in freeze_modules)
    return [
        (name, p)
        for name, p in model.named_parameters()
        if p.requires_grad and not name.startswith(prefixes)
    ]


def get_parameter_groups_with_lrs(
    model: nn.Module,
    lr: float,
    include_names: bool = False,
    freeze_modules: Sequence[str] = (),
) -> List[dict]:
    """Parameter groups, one per distinct learning rate, as icefall's function of this name.

    A parameter's lr is `lr` times the product of the `lr_scale` attributes (default 1.0) of every
    module on its path from `model` down to the module that owns it. Parameters with
    `requires_grad=False` and parameters under a module named in `freeze_modules` (dotted names
    as in `model.named_modules()`, e.g. "encoder" or "llm.blocks.0") are left out.

    Args:
      model: the model (unwrap DDP first, or names get a `module.` prefix).
      lr: the base learning rate.
      include_names: if True, each group's "params" is a list of `(name, param)` pairs, the form
        `ScaledAdam` uses to name parameters in its log messages.
      freeze_modules: dotted module names whose parameters are not optimized.
    Returns:
      list of `{"params": [...], "lr": float}` dicts, in order of first appearance.
    Raises:
      ValueError: for an unknown name in `freeze_modules` or a non-positive lr_scale.
    """
    named = _trainable_named_parameters(model, freeze_modules)
    scales = _module_lr_scales(model, [n for n, _ in named])
    groups: Dict[float, list] = {}
    for name, p in named:
        groups.setdefault(lr * scales[name], []).append((name, p) if include_names else p)
    return [{"params": params, "lr": group_lr} for group_lr, params in groups.items()]


def get_adamw_param_groups(
    model: nn.Module,
    weight_decay: float,
    lr: float,
    freeze_modules: Sequence[str] = (),
    name_lr_scales: Optional[Dict[str, float]] = None,
) -> List[dict]:
    """AdamW groups with weight decay only on matrices (RWKV-LM's `configure_optimizers` rule).

    A parameter is decayed iff its name ends with ".weight" and it has at least two dimensions
    of size > 1 (so `emb.weight`, `head.weight` and Linear weights decay; LayerNorm/GroupNorm
    weights, biases, RWKV-7 `x_*`, `w0`, `k_k`, `r_k` and the LoRA-like `w1/w2/a1/...` do not).
    The lr of each parameter is `lr` times its modules' `lr_scale` product (as in
    `get_parameter_groups_with_lrs`) times `name_lr_scales[suffix]` for the first suffix of
    `name_lr_scales` that the name ends with (RWKV-LM uses `{"att.w0": 2.0}`).

    Args:
      model: the model. weight_decay: AdamW decay for the decayed group. lr: base lr.
      freeze_modules: dotted module names to leave out; params with requires_grad=False are
        always left out.
      name_lr_scales: optional extra lr factors keyed by parameter-name suffix.
    Returns:
      list of `{"params": [...], "lr": float, "weight_decay": float, "names": [...]}` dicts.
    """
    named = _trainable_named_parameters(model, freeze_modules)
    scales = _module_lr_scales(model, [n for n, _ in named])
    name_lr_scales = name_lr_scales or {}
    groups: Dict[Tuple[float, float], dict] = {}
    for name, p in named:
        decay = name.endswith(".weight") and p.squeeze().ndim >= 2
        extra = next((s for suffix, s in name_lr_scales.items() if name.endswith(suffix)), 1.0)
        key = (lr * scales[name] * extra, weight_decay if decay else 0.0)
        group = groups.setdefault(
            key, {"params": [], "names": [], "lr": key[0], "weight_decay": key[1]}
        )
        group["params"].append(p)
        group["names"].append(name)
    return list(groups.values())


def clip_grad_norm(
    parameters: Union[torch.Tensor, Iterable[torch.Tensor]],
    max_norm: float,
    norm_type: float = 2.0,
) -> float:
    """Total gradient norm (before clipping), clipping to `max_norm` when it is finite and > 0.

    Gradients are left untouched when the norm is not finite (inf/nan), so the caller can skip
    the step; `max_norm <= 0` or `inf` only measures.

    Returns:
      the total `norm_type`-norm of all gradients as a Python float (0.0 if there are none).
    """
    if isinstance(parameters, torch.Tensor):
        parameters = [parameters]
    grads = [p.grad for p in parameters if p.grad is not None]
    if not grads:
        return 0.0
    norms = [torch.linalg.vector_norm(g.detach().float(), norm_type) for g in grads]
    total = float(torch.linalg.vector_norm(torch.stack([n.cpu() for n in norms]), norm_type))
    if math.isfinite(total) and 0 < max_norm < math.inf and total > max_norm:
        coef = max_norm / (total + 1e-6)
        for g in grads:
            g.detach().mul_(coef)
    return total


# --------------------------------------------------------------------------------------------------
# ScaledAdam


def _split_named_params(params: ParamsLike) -> Tuple[List[dict], List[List[str]]]:
    """Normalise params (tensors, (name, tensor) pairs, or groups of either) into torch groups.

    Returns:
      (groups with plain tensors in "params", per-group lists of parameter names)
    """
    params = list(params)
    if not params:
        raise ValueError("ScaledAdam got an empty parameter list")
    if not isinstance(params[0], dict):
        params = [{"params": params}]
    groups, names = [], []
    for gi, group in enumerate(params):
        group = dict(group)
        tensors, group_names = [], []
        for i, item in enumerate(group["params"]):
            if isinstance(item, (tuple, list)) and len(item) == 2 and isinstance(item[0], str):
                group_names.append(item[0])
                tensors.append(item[1])
            elif isinstance(item, torch.Tensor):
                group_names.append(f"group{gi}.param{i}")
                tensors.append(item)
            else:
                raise TypeError(
                    f"ScaledAdam params must be tensors or (name, tensor) pairs, got {type(item)}"
                )
        group["params"] = tensors
        groups.append(group)
        names.append(group_names)
    return groups, names


class ScaledAdam(torch.optim.Optimizer):
    """Adam with updates scaled by each tensor's RMS and a learned per-tensor scale.

    An own implementation of the algorithm of icefall's `egs/librispeech/ASR/zipformer/optim.py`,
    described in the Zipformer paper (Yao et al., ICLR 2024, arXiv 2310.11230). For a parameter
    tensor p with more than one element:

    - Adam direction `g / (sqrt(v_hat) + eps)` with `v = beta2 v + (1-beta2) g^2`, scaled by
      `lr * rms(p)` where rms(p) = sqrt(mean(p^2)) clamped below at `param_min_rms` and refreshed
      every `size_update_period` steps: each tensor changes by a fixed *relative* amount.
    - A learned overall scale: the gradient w.r.t. log-scale, `sum(g * p)`, is collected for
      `size_update_period` steps and fed to a scalar Adam with lr `lr * scalar_lr_scale`; the
      resulting log-scale step s adds `s * p` to the update. The scale is not allowed to shrink
      while rms(p) <= param_min_rms nor grow while rms(p) >= param_max_rms.
    - Momentum `beta1` on the combined update (the update is `(1-beta1)`-weighted into `delta`,
      `p += delta`).

    Single-element tensors (scalars) get plain Adam with lr `lr * scalar_lr_scale`, clamped to
    `[-scalar_max, scalar_max]`.

    Clipping (if `clipping_scale` is set): the gradient norm, measured as
    `sqrt(sum_p rms(p)^2 |g_p|^2)` (the size of the update it causes), is compared with
    `clipping_scale * median(norms of recent steps)`; larger gradients are scaled down to the
    threshold. The median covers the last `clipping_update_period` steps; it is refreshed every
    step during the first `clipping_update_period` steps and every `clipping_update_period` steps
    after that (with a log line giving quartiles and the percentage of clipped steps). The first
    step is never clipped. A step whose gradient norm is not finite is skipped (parameters and
    state unchanged) with a warning naming the parameters with non-finite gradients.

    Args:
      params: tensors, `(name, tensor)` pairs (as from `model.named_parameters()`) or groups
        (dicts with "params" of either kind, e.g. `get_parameter_groups_with_lrs(...,
        include_names=True)`); group keys override the defaults below.
      lr: learning rate (schedulers overwrite each group's "lr").
      clipping_scale: threshold factor over the median grad norm; None disables clipping.
      betas, eps: as Adam. scalar_lr_scale: lr factor for scalars and the learned scales.
      param_min_rms, param_max_rms: limits for each tensor's RMS. scalar_max: bound on scalars.
      size_update_period: steps between RMS refreshes / learned-scale updates.
      clipping_update_period: steps between refreshes of the clipping threshold.
      foreach: update the tensors of a group with batched `torch._foreach_*` kernels (two
        device syncs per step); False runs the per-tensor reference loop (same maths); None
        (default) = foreach for CUDA tensors only, as torch.optim does (on CPU it is no faster).

    Attributes read by the training loop after `step()`:
      last_grad_norm (float): plain L2 norm of all gradients (before clipping) for logging.
      last_clip_factor (float): factor applied to the gradients (1.0 = not clipped, 0.0 = skipped).
      num_skipped_steps (int): steps skipped for a non-finite gradient norm.
    """

    def __init__(
        self,
        params: ParamsLike,
        lr: float = 3e-2,
        clipping_scale: Optional[float] = None,
        betas: Tuple[float, float] = (0.9, 0.98),
        scalar_lr_scale: float = 0.1,
        eps: float = 1.0e-8,
        param_min_rms: float = 1.0e-5,
        param_max_rms: float = 3.0,
        scalar_max: float = 10.0,
        size_update_period: int = 4,
        clipping_update_period: int = 100,
        foreach: Optional[bool] = None,
    ):
        if not lr > 0:
            raise ValueError(f"lr must be > 0, got {lr}")
        if clipping_scale is not None and not clipping_scale > 0:
            raise ValueError(f"clipping_scale must be > 0 or None, got {clipping_scale}")
        if not (0 <= betas[0] < 1 and 0 <= betas[1] < 1):
            raise ValueError(f"betas must be in [0, 1), got {betas}")
        if size_update_period < 1 or clipping_update_period < 1:
            raise ValueError("size_update_period and clipping_update_period must be >= 1")
        groups, self.parameters_names = _split_named_params(params)
        defaults = dict(
            lr=lr,
            betas=betas,
            scalar_lr_scale=scalar_lr_scale,
            eps=eps,
            param_min_rms=param_min_rms,
            param_max_rms=param_max_rms,
            scalar_max=scalar_max,
            size_update_period=size_update_period,
        )
        super().__init__(groups, defaults)
        self.clipping_scale = clipping_scale
        self.clipping_update_period = clipping_update_period
        self.foreach = foreach
        self._clip = {"step": 0, "norms": [], "threshold": None, "num_clipped": 0}
        self.last_grad_norm = 0.0
        self.last_clip_factor = 1.0
        self.num_skipped_steps = 0

    # ---------------------------------------------------------------- state dict
    def state_dict(self) -> dict:
        """Torch's optimizer state plus the clipping history under key "clipping"."""
        sd = super().state_dict()
        sd["clipping"] = {
            "step": self._clip["step"],
            "norms": list(self._clip["norms"]),
            "threshold": self._clip["threshold"],
            "num_clipped": self._clip["num_clipped"],
            "num_skipped_steps": self.num_skipped_steps,
        }
        return sd

    def load_state_dict(self, state_dict: dict) -> None:
        state_dict = dict(state_dict)
        clip = state_dict.pop("clipping", None)
        super().load_state_dict(state_dict)
        if clip is not None:
            self.num_skipped_steps = int(clip.get("num_skipped_steps", 0))
            self._clip = {
                "step": int(clip["step"]),
                "norms": [float(x) for x in clip["norms"]],
                "threshold": clip["threshold"],
                "num_clipped": int(clip["num_clipped"]),
            }

    # ---------------------------------------------------------------- step
    def _init_state(self, group: dict, p: torch.Tensor, state: dict) -> None:
        state["step"] = 0
        state["delta"] = torch.zeros_like(p, memory_format=torch.preserve_format)
        state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
        if p.numel() > 1:
            rms = p.detach().float().pow(2).mean().sqrt().clamp(min=group["param_min_rms"])
            state["param_rms"] = rms.to(p.dtype)
            state["scale_exp_avg_sq"] = torch.zeros((), dtype=p.dtype, device=p.device)
            state["scale_grads"] = torch.zeros(
                group["size_update_period"], dtype=p.dtype, device=p.device
            )

    def _grad_norms(self) -> Tuple[float, float]:
        """(norm scaled by each tensor's rms for clipping, plain L2 norm); one device sync."""
        grads, rms = [], []
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is not None:
                    grads.append(p.grad.detach())
                    state = self.state[p]
                    rms.append(state["param_rms"].float() if p.numel() > 1 else None)
        if not grads:
            return 0.0, 0.0
        sq = torch.stack([n.float() for n in torch._foreach_norm(grads)]) ** 2
        ones = torch.ones((), device=sq.device)
        scale = torch.stack([ones if r is None else r.to(sq.device) for r in rms]) ** 2
        both = torch.stack([(sq * scale).sum(), sq.sum()]).sqrt()
        scaled_norm, plain_norm = both.tolist()
        return scaled_norm, plain_norm

    def _nonfinite_names(self) -> List[str]:
        out = []
        for group, names in zip(self.param_groups, self.parameters_names):
            for p, name in zip(group["params"], names):
                if p.grad is not None and not torch.isfinite(p.grad).all():
                    out.append(name)
        return out

    def _clip_factor(self, norm: float) -> float:
        """Update the clipping history with this step's `norm`; return the factor to apply."""
        c = self._clip
        step, period = c["step"], self.clipping_update_period
        if c["norms"] and (step < period or step % period == 0):
            norms = sorted(c["norms"])
            c["threshold"] = self.clipping_scale * norms[len(norms) // 2]
            if step % period == 0:
                q = [norms[min(len(norms) - 1, int(f * len(norms)))] for f in (0, 0.25, 0.5, 0.75)]
                q.append(norms[-1])
                logging.info(
                    f"Clipping_scale={self.clipping_scale}, grad-norm quartiles "
                    + " ".join(f"{x:.3e}" for x in q)
                    + f", threshold={c['threshold']:.3e}, "
                    f"percent-clipped={100.0 * c['num_clipped'] / len(norms):.1f}"
                )
                c["num_clipped"] = 0
        c["norms"] = (c["norms"] + [norm])[-period:]
        c["step"] = step + 1
        threshold = c["threshold"]
        if threshold is None or norm <= threshold:
            return 1.0
        c["num_clipped"] += 1
        return threshold / norm

    @torch.no_grad()
    def step(self, closure=None):
        """One optimizer step (see the class docstring). Returns the closure's loss, if any."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is not None:
                    if p.grad.is_sparse:
                        raise RuntimeError("ScaledAdam does not support sparse gradients")
                    if not self.state[p]:
                        self._init_state(group, p, self.state[p])
        scaled_norm, self.last_grad_norm = self._grad_norms()
        if not (math.isfinite(scaled_norm) and math.isfinite(self.last_grad_norm)):
            self.num_skipped_steps += 1
            self.last_clip_factor = 0.0
            bad = self._nonfinite_names()
            logging.warning(
                f"ScaledAdam: non-finite gradient norm, step skipped; parameters with "
                f"non-finite gradients: {bad[:10]}{' ...' if len(bad) > 10 else ''}"
            )
            return loss
        factor = 1.0
        if self.clipping_scale is not None:
            factor = self._clip_factor(scaled_norm)
        self.last_clip_factor = factor
        for group in self.param_groups:
            buckets: Dict[int, List[torch.Tensor]] = {}  # tensors by their step count
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                use_foreach = p.is_cuda if self.foreach is None else self.foreach
                if p.numel() > 1 and use_foreach:
                    buckets.setdefault(state["step"], []).append(p)
                    continue
                grad = p.grad if factor == 1.0 else p.grad * factor
                if p.numel() > 1:
                    self._step_tensor(group, p, grad, state)
                else:
                    self._step_scalar(group, p, grad, state)
                state["step"] += 1
            for step, ps in buckets.items():
                self._step_tensors_foreach(group, ps, step, factor)
        return loss

    def _step_tensors_foreach(
        self, group: dict, ps: List[torch.Tensor], step: int, factor: float
    ) -> None:
        """`_step_tensor` for many tensors at once (all with the same step count)."""
        beta1, beta2 = group["betas"]
        period = group["size_update_period"]
        states = [self.state[p] for p in ps]
        grads = [p.grad for p in ps]
        if factor != 1.0:
            grads = torch._foreach_mul(grads, factor)
        deltas = [s["delta"] for s in states]
        torch._foreach_mul_(deltas, beta1)

        k = step % period
        dots = [(g * p).sum() for g, p in zip(grads, ps)]
        torch._foreach_copy_([s["scale_grads"][k] for s in states], dots)
        if k == period - 1:
            self._scale_update_foreach(group, ps, states)
        if k == 0:
            rms = self._rms(ps).clamp_(min=group["param_min_rms"])
            torch._foreach_copy_([s["param_rms"] for s in states], list(rms.unbind()))

        sqs = [s["exp_avg_sq"] for s in states]
        torch._foreach_mul_(sqs, beta2)
        torch._foreach_addcmul_(sqs, grads, grads, value=1 - beta2)
        denom = torch._foreach_div(sqs, 1 - beta2 ** (step + 1))
        torch._foreach_sqrt_(denom)
        torch._foreach_add_(denom, group["eps"])
        directions = torch._foreach_div(grads, denom)
        rms_values = torch.stack([s["param_rms"].float() for s in states]).tolist()
        coef = -(1 - beta1) * group["lr"]
        torch._foreach_mul_(directions, [coef * r for r in rms_values])
        torch._foreach_add_(deltas, directions)
        torch._foreach_add_(ps, deltas)
        for s in states:
            s["step"] += 1

    @staticmethod
    def _rms(ps: List[torch.Tensor]) -> torch.Tensor:
        """(len(ps),) float32 RMS of each tensor."""
        norms = torch.stack([n.float() for n in torch._foreach_norm(ps)])
        numel = torch.tensor([p.numel() for p in ps], dtype=torch.float32, device=norms.device)
        return norms / numel.sqrt()

    def _scale_update_foreach(
        self, group: dict, ps: List[torch.Tensor], states: List[dict]
    ) -> None:
        """`_scale_update` for many tensors at once."""
        beta1, beta2 = group["betas"]
        period = group["size_update_period"]
        scale_grads = torch.stack([s["scale_grads"] for s in states])  # (n, period)
        decay = beta2**period
        sq = torch.stack([s["scale_exp_avg_sq"] for s in states])
        sq = sq * decay + scale_grads.pow(2).mean(dim=1) * (1 - decay)
        torch._foreach_copy_([s["scale_exp_avg_sq"] for s in states], list(sq.unbind()))
        bias_correction2 = 1 - beta2 ** (states[0]["step"] + 1)
        denom = (sq / bias_correction2).sqrt() + group["eps"]
        scale_step = -group["lr"] * group["scalar_lr_scale"] * scale_grads.sum(dim=1) / denom
        rms = self._rms(ps)
        too_small = (rms <= group["param_min_rms"]) & (scale_step < 0)
        too_large = (rms >= group["param_max_rms"]) & (scale_step > 0)
        scale_step = torch.where(too_small | too_large, torch.zeros_like(scale_step), scale_step)
        coefs = (scale_step * (1 - beta1)).tolist()
        torch._foreach_add_([s["delta"] for s in states], torch._foreach_mul(ps, coefs))

    def _adam_direction(self, group: dict, grad: torch.Tensor, state: dict) -> torch.Tensor:
        beta2 = group["betas"][1]
        exp_avg_sq = state["exp_avg_sq"]
        exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
        bias_correction2 = 1 - beta2 ** (state["step"] + 1)
        return grad / (exp_avg_sq / bias_correction2).sqrt().add_(group["eps"])

    def _step_scalar(self, group: dict, p: torch.Tensor, grad: torch.Tensor, state: dict) -> None:
        beta1 = group["betas"][0]
        delta = state["delta"]
        delta.mul_(beta1)
        lr = group["lr"] * group["scalar_lr_scale"]
        delta.add_(self._adam_direction(group, grad, state), alpha=-(1 - beta1) * lr)
        p.add_(delta)
        p.clamp_(min=-group["scalar_max"], max=group["scalar_max"])

    def _step_tensor(self, group: dict, p: torch.Tensor, grad: torch.Tensor, state: dict) -> None:
        beta1 = group["betas"][0]
        period = group["size_update_period"]
        step = state["step"]
        delta = state["delta"]
        delta.mul_(beta1)

        # learned scale: gradient of the loss w.r.t. log(scale) is sum(grad * p)
        state["scale_grads"][step % period] = (grad * p).sum()
        if step % period == period - 1:
            self._scale_update(group, p, state)
        if step % period == 0:
            rms = p.float().pow(2).mean().sqrt().clamp_(min=group["param_min_rms"])
            state["param_rms"].copy_(rms)

        direction = self._adam_direction(group, grad, state)
        delta.add_(direction * (state["param_rms"] * (-(1 - beta1) * group["lr"])))
        p.add_(delta)

    def _scale_update(self, group: dict, p: torch.Tensor, state: dict) -> None:
        """Adam step on the tensor's log-scale from the last `size_update_period` gradients."""
        beta1, beta2 = group["betas"]
        period = group["size_update_period"]
        scale_grads = state["scale_grads"]
        decay = beta2**period
        sq = state["scale_exp_avg_sq"]
        sq.mul_(decay).add_(scale_grads.pow(2).mean() * (1 - decay))
        bias_correction2 = 1 - beta2 ** (state["step"] + 1)
        denom = (sq / bias_correction2).sqrt() + group["eps"]
        scale_step = -group["lr"] * group["scalar_lr_scale"] * scale_grads.sum() / denom
        rms = p.float().pow(2).mean().sqrt().to(p.dtype)
        too_small = (rms <= group["param_min_rms"]) & (scale_step < 0)
        too_large = (rms >= group["param_max_rms"]) & (scale_step > 0)
        scale_step = torch.where(too_small | too_large, torch.zeros_like(scale_step), scale_step)
        state["delta"].add_(p * (scale_step * (1 - beta1)))


# --------------------------------------------------------------------------------------------------
# learning-rate schedules


class LRScheduler:
    """Base class of the batch/epoch-driven schedules (icefall's LRScheduler interface).

    Each optimizer group's initial "lr" is remembered as its "base_lr"; `get_lr()` returns the
    new lr of every group from `self.batch` and `self.epoch`, which the training loop sets with
    `step_batch(batch_idx_train)` each step and `step_epoch(epoch)` at each epoch start.
    """

    def __init__(self, optimizer: torch.optim.Optimizer, verbose: bool = False):
        if not isinstance(optimizer, torch.optim.Optimizer):
            raise TypeError(f"{type(optimizer).__name__} is not an Optimizer")
        self.optimizer = optimizer
        self.verbose = verbose
        for group in optimizer.param_groups:
            group.setdefault("base_lr", group["lr"])
        self.base_lrs = [group["base_lr"] for group in optimizer.param_groups]
        self.epoch = 0
        self.batch = 0
        self._set_lrs()

    def get_lr(self) -> List[float]:
        raise NotImplementedError

    def get_last_lr(self) -> List[float]:
        """The lr of each group as last set."""
        return list(self._last_lr)

    def state_dict(self) -> dict:
        return {"base_lrs": list(self.base_lrs), "epoch": self.epoch, "batch": self.batch}

    def load_state_dict(self, state_dict: dict) -> None:
        if len(state_dict["base_lrs"]) != len(self.base_lrs):
            raise ValueError(
                f"scheduler state has {len(state_dict['base_lrs'])} groups, "
                f"optimizer has {len(self.base_lrs)}"
            )
        self.base_lrs = list(state_dict["base_lrs"])
        self.epoch = state_dict["epoch"]
        self.batch = state_dict["batch"]
        self._set_lrs()

    def step_batch(self, batch: Optional[int] = None) -> None:
        """Set the batch count (`batch`, or the previous one + 1) and update the lrs."""
        self.batch = self.batch + 1 if batch is None else batch
        self._set_lrs()

    def step_epoch(self, epoch: Optional[Union[int, float]] = None) -> None:
        """Set the epoch count (`epoch`, or the previous one + 1) and update the lrs."""
        self.epoch = self.epoch + 1 if epoch is None else epoch
        self._set_lrs()

    def _set_lrs(self) -> None:
        values = self.get_lr()
        for group, lr in zip(self.optimizer.param_groups, values):
            group["lr"] = lr
        self._last_lr = values
        if self.verbose:
            logging.info(f"epoch={self.epoch}, batch={self.batch}: lr={values}")

    def _warmup(self) -> float:
        if self.batch >= self.warmup_batches:
            return 1.0
        return self.warmup_start + (1.0 - self.warmup_start) * self.batch / self.warmup_batches


class Eden(LRScheduler):
    """Eden schedule (icefall's `zipformer/optim.py` `Eden`; Zipformer paper, arXiv 2310.11230):

    lr = base_lr * ((b^2 + B^2) / B^2)^-0.25 * ((e^2 + E^2) / E^2)^-0.25 * warmup(b),
    warmup(b) = warmup_start + (1 - warmup_start) * b / warmup_batches for b < warmup_batches,
    else 1; b = batch count, e = epoch count (icefall passes `epoch - 1`, so the first epoch is 0).

    Args:
      optimizer: any torch optimizer; each group's lr at construction is its base_lr.
      lr_batches: B (icefall default 7500). lr_epochs: E (icefall 3.5; 6 for small data).
      warmup_batches: batches of linear warmup. warmup_start: factor at batch 0 (recipe: 0.1).
    """

    def __init__(
        self,
        optimizer: torch.optim.Optimizer,
        lr_batches: Union[int, float],
        lr_epochs: Union[int, float],
        warmup_batches: Union[int, float] = 500.0,
        warmup_start: float = 0.5,
        verbose: bool = False,
    ):
        if not (lr_batches > 0 and lr_epochs > 0):
            raise ValueError(f"lr_batches and lr_epochs must be > 0, got {lr_batches}, {lr_epochs}")
        self.lr_batches = lr_batches
        self.lr_epochs = lr_epochs
        self.warmup_batches = warmup_batches
        self.warmup_start = warmup_start
        super().__init__(optimizer, verbose)

    def get_lr(self) -> List[float]:
        b, e = self.batch, self.epoch
        B, E = self.lr_batches, self.lr_epochs
        factor = ((b**2 + B**2) / B**2) ** -0.25 * ((e**2 + E**2) / E**2) ** -0.25
        factor *= self._warmup()
        return [x * factor for x in self.base_lrs]
