"""Debug hooks that find where non-finite values appear (icefall `--inf-check`)."""
import logging
from typing import Any, List

import torch
from torch import nn
from torch.utils.hooks import RemovableHandle


def _tensors(x: Any) -> List[torch.Tensor]:
    if isinstance(x, torch.Tensor):
        return [x]
    if isinstance(x, (list, tuple)):
        return [t for item in x for t in _tensors(item)]
    if isinstance(x, dict):
        return [t for item in x.values() for t in _tensors(item)]
    return []


def _is_bad(t: torch.Tensor) -> bool:
    return t.is_floating_point() and not bool(torch.isfinite(t).all())


def register_inf_check_hooks(model: nn.Module) -> List[RemovableHandle]:
    """Warn (logging.warning) with the module/parameter name whenever a non-finite value shows up.

    - forward: each module's floating outputs (tensors, or tensors inside tuples/lists/dicts);
      the first warning in a forward pass names the module where inf/nan first appears.
    - backward: the gradient w.r.t. each module output (via a tensor hook registered on the
      output in the forward hook, which avoids full-backward-hook in-place restrictions), and
      each parameter's gradient.
    Costs a device sync per module: use for debugging only.

    Returns:
      handles; call `h.remove()` on each to uninstall the module and parameter hooks.
    """
    handles: List[RemovableHandle] = []
    for name, module in model.named_modules():
        name = name or "<top-level>"

        def forward_hook(mod: nn.Module, _inputs: Any, output: Any, name: str = name) -> None:
            for i, t in enumerate(_tensors(output)):
                if _is_bad(t):
                    kind = type(mod).__name__
                    logging.warning(f"The output {i} of {name} ({kind}) is not finite")
                if t.requires_grad:
                    t.register_hook(lambda g, i=i: _check_grad(g, f"output {i} of {name}"))

        handles.append(module.register_forward_hook(forward_hook))
    for name, p in model.named_parameters():
        if p.requires_grad:
            handles.append(p.register_hook(lambda g, name=name: _check_grad(g, f"param {name}")))
    return handles


def _check_grad(grad: torch.Tensor, what: str) -> None:
    if grad is not None and _is_bad(grad):
        logging.warning(f"The gradient of {what} is not finite")
