"""ScaledAdam, Eden, parameter grouping and clip_grad_norm."""
import copy
import io
import math

import pytest
import torch
from torch import nn

from zipformer_rwkv.training.optim import (
    Eden,
    ScaledAdam,
    clip_grad_norm,
    get_adamw_param_groups,
    get_parameter_groups_with_lrs,
)

pytestmark = pytest.mark.usefixtures("single_thread")


def _regression(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(128, 8, generator=g)
    y = x @ torch.randn(8, 3, generator=g) + 0.3
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(8, 16), nn.Tanh(), nn.Linear(16, 3))
    model.register_parameter("gain", nn.Parameter(torch.tensor(1.0)))  # a scalar parameter
    return model, x, y


def _loss(model, x, y):
    return ((model(x) * model.gain - y) ** 2).mean()


def _train(model, opt, sched, x, y, steps, start=0, spike_at=-1):
    losses = []
    for i in range(start, start + steps):
        loss = _loss(model, x, y) * (50.0 if i == spike_at else 1.0)
        opt.zero_grad()
        loss.backward()
        sched.step_batch(i)
        opt.step()
        losses.append(loss.item())
    return losses


def test_scaled_adam_decreases_loss():
    model, x, y = _regression()
    groups = get_parameter_groups_with_lrs(model, lr=0.08, include_names=True)
    opt = ScaledAdam(groups, lr=0.08, clipping_scale=2.0, clipping_update_period=10)
    sched = Eden(opt, lr_batches=100, lr_epochs=2, warmup_batches=10, warmup_start=0.1)
    losses = _train(model, opt, sched, x, y, 120)
    assert losses[-1] < 0.02 * losses[0], (losses[0], losses[-1])
    assert opt.num_skipped_steps == 0
    assert opt.last_grad_norm > 0


def test_scaled_adam_step_is_relative_to_param_rms():
    # One step of a big and a small tensor with the same gradient direction: the change is
    # proportional to each tensor's RMS (about lr * rms with Adam's normalised direction).
    big = nn.Parameter(torch.full((4, 4), 10.0))
    small = nn.Parameter(torch.full((4, 4), 0.1))
    opt = ScaledAdam([("big", big), ("small", small)], lr=0.01, betas=(0.0, 0.98))
    big.grad = torch.ones(4, 4)
    small.grad = torch.ones(4, 4)
    opt.step()
    d_big = (10.0 - big.detach()).mean().item()
    d_small = (0.1 - small.detach()).mean().item()
    assert d_big == pytest.approx(0.01 * 10.0, rel=1e-3)
    assert d_small == pytest.approx(0.01 * 0.1, rel=1e-3)


def test_foreach_path_matches_reference_loop():
    # the batched torch._foreach path against the per-tensor loop, over 2 size_update_periods,
    # with clipping engaged and a parameter that misses a gradient on some steps
    results = []
    for foreach in (False, True):
        model, x, y = _regression(seed=3)
        opt = ScaledAdam(get_parameter_groups_with_lrs(model, 0.05, include_names=True), lr=0.05,
                         clipping_scale=1.0, clipping_update_period=2, foreach=foreach)
        for i in range(9):
            opt.zero_grad()
            (_loss(model, x, y) * (30.0 if i == 6 else 1.0)).backward()
            if i % 3 == 1:
                model[0].bias.grad = None
            opt.step()
        results.append([p.detach().clone() for p in model.parameters()])
    for ref, fast in zip(*results):
        err = (fast - ref).norm() / ref.norm()
        assert err < 1e-5, err


def test_scalar_params_are_clamped_to_scalar_max():
    p = nn.Parameter(torch.tensor([9.99]))
    opt = ScaledAdam([p], lr=10.0, scalar_lr_scale=1.0, scalar_max=10.0)
    for _ in range(5):
        p.grad = torch.tensor([-1.0])
        opt.step()
    assert p.item() == 10.0


def test_clipping_engages_on_gradient_spike():
    model, x, y = _regression()
    opt = ScaledAdam(model.named_parameters(), lr=0.01, clipping_scale=2.0,
                     clipping_update_period=5)
    for _ in range(12):
        opt.zero_grad()
        _loss(model, x, y).backward()
        opt.step()
        assert opt.last_clip_factor == 1.0 or opt.last_clip_factor > 0.3
    normal_norm = opt.last_grad_norm
    opt.zero_grad()
    (1e4 * _loss(model, x, y)).backward()
    before = [p.detach().clone() for p in model.parameters()]
    opt.step()
    assert opt.last_grad_norm > 1e3 * normal_norm
    assert opt.last_clip_factor < 1e-3
    change = max((p.detach() - b).abs().max().item() for p, b in zip(model.parameters(), before))
    assert change < 0.1  # lr * rms-scale sized, not blown up

    # without clipping_scale nothing is clipped
    model2, _, _ = _regression()
    opt2 = ScaledAdam(model2.parameters(), lr=0.01)
    (1e4 * _loss(model2, x, y)).backward()
    opt2.step()
    assert opt2.last_clip_factor == 1.0


def test_non_finite_gradient_skips_step():
    model, x, y = _regression()
    opt = ScaledAdam(get_parameter_groups_with_lrs(model, 0.01, include_names=True), lr=0.01)
    _loss(model, x, y).backward()
    model[0].weight.grad[0, 0] = float("nan")
    before = copy.deepcopy(model.state_dict())
    opt.step()
    assert opt.num_skipped_steps == 1 and opt.last_clip_factor == 0.0
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k


def _save_load(obj_state):
    buf = io.BytesIO()
    torch.save(obj_state, buf)
    buf.seek(0)
    return torch.load(buf, weights_only=True)


def test_state_dict_round_trip_continues_identically():
    def make(model):
        opt = ScaledAdam(get_parameter_groups_with_lrs(model, 0.03, include_names=True), lr=0.03,
                         clipping_scale=2.0, clipping_update_period=3, size_update_period=4)
        return opt, Eden(opt, lr_batches=20, lr_epochs=2, warmup_batches=5)

    model, x, y = _regression()
    opt, sched = make(model)
    _train(model, opt, sched, x, y, 7)  # not a multiple of size/clipping periods
    saved = _save_load(
        {"model": model.state_dict(), "opt": opt.state_dict(), "sched": sched.state_dict()}
    )
    ref_losses = _train(model, opt, sched, x, y, 9, start=7, spike_at=9)

    model2, _, _ = _regression(seed=1)  # different init, overwritten below
    opt2, sched2 = make(model2)
    model2.load_state_dict(saved["model"])
    opt2.load_state_dict(saved["opt"])
    sched2.load_state_dict(saved["sched"])
    assert opt2.state_dict()["clipping"] == saved["opt"]["clipping"]
    assert len(saved["opt"]["clipping"]["norms"]) == 3
    losses = _train(model2, opt2, sched2, x, y, 9, start=7, spike_at=9)
    assert losses == ref_losses
    for (n, p), p2 in zip(model.named_parameters(), model2.parameters()):
        assert torch.equal(p, p2), n


@pytest.mark.parametrize("batch,epoch", [(0, 0), (3, 0), (10, 1), (250, 2.5), (7500, 7)])
def test_eden_matches_formula(batch, epoch):
    base_lr, B, E, W, w0 = 0.045, 100.0, 3.5, 10, 0.1
    p = nn.Parameter(torch.zeros(2, 2))
    q = nn.Parameter(torch.zeros(3))
    opt = torch.optim.SGD([{"params": [p], "lr": base_lr}, {"params": [q], "lr": base_lr / 2}],
                          lr=base_lr)
    sched = Eden(opt, lr_batches=B, lr_epochs=E, warmup_batches=W, warmup_start=w0)
    sched.step_epoch(epoch)
    sched.step_batch(batch)
    warm = 1.0 if batch >= W else w0 + (1 - w0) * batch / W
    expect = base_lr * ((batch**2 + B**2) / B**2) ** -0.25 * ((epoch**2 + E**2) / E**2) ** -0.25
    expect *= warm
    assert sched.get_last_lr()[0] == pytest.approx(expect, rel=1e-12)
    assert sched.get_last_lr()[1] == pytest.approx(expect / 2, rel=1e-12)
    assert opt.param_groups[0]["lr"] == pytest.approx(expect, rel=1e-12)


def test_eden_incremental_steps_and_state_round_trip():
    p = nn.Parameter(torch.zeros(2))
    opt = torch.optim.SGD([p], lr=1.0)
    sched = Eden(opt, lr_batches=10, lr_epochs=2, warmup_batches=4, warmup_start=0.5)
    assert sched.get_last_lr() == [0.5]  # set at construction: batch 0, epoch 0
    for _ in range(20):
        sched.step_batch()
    sched.step_epoch()
    assert (sched.batch, sched.epoch) == (20, 1)
    expect = ((400 + 100) / 100) ** -0.25 * ((1 + 4) / 4) ** -0.25
    assert sched.get_last_lr()[0] == pytest.approx(expect)
    state = _save_load(sched.state_dict())
    opt2 = torch.optim.SGD([nn.Parameter(torch.zeros(2))], lr=1.0)
    sched2 = Eden(opt2, lr_batches=10, lr_epochs=2, warmup_batches=4, warmup_start=0.5)
    sched2.load_state_dict(state)
    assert sched2.get_last_lr() == sched.get_last_lr() and opt2.param_groups[0]["lr"] == \
        sched.get_last_lr()[0]


class _Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.encoder = nn.Sequential(nn.Linear(4, 4), nn.Linear(4, 4))
        self.encoder.lr_scale = 0.5
        self.encoder[1].lr_scale = 0.2
        self.adapter = nn.Linear(4, 4)
        self.llm = nn.ModuleDict({"emb": nn.Embedding(10, 4), "ln": nn.LayerNorm(4)})
        self.llm["ln"].weight.requires_grad_(False)


def test_parameter_groups_with_lrs():
    net = _Net()
    groups = get_parameter_groups_with_lrs(net, lr=1.0, include_names=True)
    by_name = {n: g["lr"] for g in groups for n, _ in g["params"]}
    assert by_name["encoder.0.weight"] == pytest.approx(0.5)
    assert by_name["encoder.1.bias"] == pytest.approx(0.1)
    assert by_name["adapter.weight"] == 1.0
    assert "llm.ln.weight" not in by_name and "llm.ln.bias" in by_name
    frozen = get_parameter_groups_with_lrs(net, lr=1.0, freeze_modules=["encoder"])
    n_params = sum(len(g["params"]) for g in frozen)
    assert n_params == 2 + 1 + 1  # adapter w/b, emb, ln.bias
    assert all(isinstance(p, nn.Parameter) for g in frozen for p in g["params"])
    with pytest.raises(ValueError, match="encodr"):
        get_parameter_groups_with_lrs(net, lr=1.0, freeze_modules=["encodr"])


def test_adamw_groups_decay_only_matrices():
    net = _Net()
    groups = get_adamw_param_groups(net, weight_decay=0.01, lr=1e-3,
                                    name_lr_scales={"adapter.bias": 2.0})
    info = {n: (g["weight_decay"], g["lr"]) for g in groups for n in g["names"]}
    assert info["adapter.weight"] == (0.01, 1e-3)
    assert info["llm.emb.weight"][0] == 0.01
    assert info["adapter.bias"] == (0.0, 2e-3)
    assert info["llm.ln.bias"][0] == 0.0 and "llm.ln.weight" not in info
    assert info["encoder.1.weight"] == (0.01, pytest.approx(1e-4))
    opt = torch.optim.AdamW(groups)  # torch accepts the extra "names" key
    assert len(opt.param_groups) == len(groups)


def test_clip_grad_norm_returns_norm_and_clips():
    a = nn.Parameter(torch.zeros(3))
    b = nn.Parameter(torch.zeros(4))
    a.grad = torch.tensor([3.0, 0.0, 0.0])
    b.grad = torch.tensor([0.0, 4.0, 0.0, 0.0])
    assert clip_grad_norm([a, b], max_norm=0) == pytest.approx(5.0)
    assert a.grad[0].item() == 3.0  # max_norm 0 only measures
    assert clip_grad_norm([a, b], max_norm=1.0) == pytest.approx(5.0)
    total = math.sqrt(a.grad.pow(2).sum() + b.grad.pow(2).sum())
    assert total == pytest.approx(1.0, rel=1e-4)
    b.grad[0] = float("inf")
    assert math.isinf(clip_grad_norm([a, b], max_norm=1.0))
    assert torch.isfinite(a.grad).all()  # left untouched
