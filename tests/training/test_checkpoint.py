"""Checkpoint save/load, atomic writes, averaging formulas and decode-time selection."""
import copy
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

import zipformer_rwkv.training.checkpoint as ckpt_mod
from zipformer_rwkv.training.averaging import (
    average_checkpoints,
    average_checkpoints_with_averaged_model,
    update_averaged_model,
)
from zipformer_rwkv.training.checkpoint import (
    find_checkpoints,
    load_checkpoint,
    remove_checkpoints,
    save_checkpoint,
    save_checkpoint_with_global_batch_idx,
)
from zipformer_rwkv.training.optim import Eden, ScaledAdam
from zipformer_rwkv.training.selection import load_decode_model, resolve_decode_checkpoints
from zipformer_rwkv.utils import AttributeDict, create_grad_scaler

pytestmark = pytest.mark.usefixtures("single_thread")


class _Tiny(nn.Module):
    def __init__(self):
        super().__init__()
        self.encoder = nn.Linear(3, 4)
        self.adapter = nn.Linear(4, 2)
        self.register_buffer("count", torch.zeros((), dtype=torch.int64))

    def forward(self, x):
        return self.adapter(torch.tanh(self.encoder(x)))


def _write(path: Path, **fields) -> Path:
    torch.save(fields, path)
    return path


# ------------------------------------------------------------------------------ averaging formulas


def test_average_checkpoints_formula_ints_and_shared(tmp_path):
    files = []
    for i, (a, n) in enumerate([([1.0, 2.0], 1), ([3.0, 5.0], 2), ([8.0, 2.0], 4)]):
        w = torch.tensor(a)
        # "tied" shares w's storage, as a tied embedding/head pair does
        files.append(_write(tmp_path / f"epoch-{i + 1}.pt",
                            model={"w": w, "tied": w, "n": torch.tensor([n, 3 * n])}))
    avg = average_checkpoints(files)
    assert torch.allclose(avg["w"], torch.tensor([4.0, 3.0]))
    assert torch.equal(avg["tied"], avg["w"])  # averaged once, not three times
    assert avg["tied"].data_ptr() == avg["w"].data_ptr()
    assert avg["n"].dtype == torch.int64 and avg["n"].tolist() == [7 // 3, 21 // 3]


def test_average_checkpoints_rejects_mismatch(tmp_path):
    a = _write(tmp_path / "a.pt", model={"w": torch.zeros(2)})
    b = _write(tmp_path / "b.pt", model={"w": torch.zeros(3)})
    with pytest.raises(RuntimeError, match="b.pt"):
        average_checkpoints([a, b])


def test_update_averaged_model_is_running_mean():
    period = 3
    model = nn.Linear(2, 2)
    model_avg = copy.deepcopy(model).to(torch.float64)
    seen = []
    for b in range(1, 4 * period + 1):
        with torch.no_grad():
            for p in model.parameters():
                p.copy_(torch.randn_like(p))
        if b % period == 0:
            seen.append({k: v.double().clone() for k, v in model.state_dict().items()})
            params = {"average_period": period, "batch_idx_train": b}
            update_averaged_model(params, model, model_avg)
    for k, v in model_avg.state_dict().items():
        expect = torch.stack([s[k] for s in seen]).mean(0)
        assert torch.allclose(v, expect, atol=1e-12), k


def test_average_with_averaged_model_formula(tmp_path):
    period = 10
    e_s, e_e = 23, 61  # rounded down to 20 and 60
    avg_s = {"w": torch.tensor([1.0, -2.0]), "n": torch.tensor([5])}
    avg_e = {"w": torch.tensor([3.0, 4.0]), "n": torch.tensor([5])}
    f_s = _write(tmp_path / "epoch-2.pt", model=avg_s, model_avg=avg_s, batch_idx_train=e_s,
                 average_period=period)
    f_e = _write(tmp_path / "epoch-5.pt", model=avg_e, model_avg=avg_e, batch_idx_train=e_e,
                 average_period=period)
    out = average_checkpoints_with_averaged_model(f_s, f_e)
    s, e = 20, 60
    expect = (avg_e["w"].double() * e - avg_s["w"].double() * s) / (e - s)
    assert torch.allclose(out["w"].double(), expect, atol=1e-6)
    assert out["n"].tolist() == [5]
    with pytest.raises(RuntimeError, match="not later"):
        average_checkpoints_with_averaged_model(f_e, f_s)
    no_avg = _write(tmp_path / "epoch-1.pt", model=avg_s, batch_idx_train=5, average_period=period)
    with pytest.raises(RuntimeError, match="model_avg"):
        average_checkpoints_with_averaged_model(no_avg, f_e)


def test_averaged_model_equals_mean_of_weights_between_checkpoints(tmp_path):
    # Train-like loop: weights change every batch, model_avg is updated every `period` batches,
    # and saved at batches 40 and 100; the formula must give the mean of samples 50..100.
    period = 10
    model = nn.Linear(2, 3)
    model_avg = copy.deepcopy(model).to(torch.float64)
    samples = []
    for b in range(1, 101):
        with torch.no_grad():
            for p in model.parameters():
                p.add_(torch.randn_like(p))
        if b % period == 0:
            params = {"average_period": period, "batch_idx_train": b}
            update_averaged_model(params, model, model_avg)
            samples.append((b, {k: v.double().clone() for k, v in model.state_dict().items()}))
            if b in (40, 100):
                save_checkpoint(tmp_path / f"checkpoint-{b}.pt", model, model_avg, params=params)
    out = average_checkpoints_with_averaged_model(tmp_path / "checkpoint-40.pt",
                                                  tmp_path / "checkpoint-100.pt")
    for k, v in out.items():
        expect = torch.stack([s[k] for b, s in samples if b > 40]).mean(0)
        assert torch.allclose(v.double(), expect, atol=1e-4), k


# ------------------------------------------------------------------------------ save / load


def _training_objects(seed=0):
    from lhotse import CutSet
    from lhotse.dataset import SimpleCutSampler
    from lhotse.testing.dummies import DummyManifest

    torch.manual_seed(seed)
    model = _Tiny()
    model_avg = copy.deepcopy(model).to(torch.float64)
    opt = ScaledAdam(model.named_parameters(), lr=0.02, clipping_scale=2.0)
    sched = Eden(opt, lr_batches=10, lr_epochs=2)
    scaler = create_grad_scaler("cpu", enabled=True, init_scale=4.0)
    sampler = SimpleCutSampler(DummyManifest(CutSet, begin_id=0, end_id=10), max_duration=3.0,
                               shuffle=True, seed=0)
    return model, model_avg, opt, sched, scaler, sampler


def test_round_trip_of_every_field_weights_only(tmp_path):
    model, model_avg, opt, sched, scaler, sampler = _training_objects()
    for step in range(3):
        loss = model(torch.randn(5, 3)).pow(2).sum()
        opt.zero_grad()
        scaler.scale(loss).backward()
        sched.step_batch(step)
        scaler.step(opt)
        scaler.update()
    update_averaged_model({"average_period": 1, "batch_idx_train": 3}, model, model_avg)
    sampler.set_epoch(2)
    it = iter(sampler)
    next(it)
    params = AttributeDict(batch_idx_train=3, cur_epoch=2, exp_dir=Path("exp/x"),
                           device=torch.device("cpu"), dtype=torch.float32, average_period=1,
                           best_valid_loss=float("inf"), env_info={"torch-version": "x"},
                           np_value=np.float32(0.5), np_array=np.arange(3), tags={"b", "a"},
                           callback=print)
    f = save_checkpoint_with_global_batch_idx(tmp_path, 3, model, model_avg, params, opt, sched,
                                              scaler, sampler)
    assert f == tmp_path / "checkpoint-3.pt"
    raw = torch.load(f, weights_only=True)  # every field loads without unpickling objects
    assert raw["model_avg"]["encoder.weight"].dtype == torch.float32
    assert model_avg.encoder.weight.dtype == torch.float64  # the in-memory average is untouched
    assert raw["exp_dir"] == "exp/x" and raw["device"] == "cpu" and raw["dtype"] == "torch.float32"
    assert raw["np_value"] == 0.5 and raw["np_array"].tolist() == [0, 1, 2]
    assert raw["tags"] == ["a", "b"] and "print" in raw["callback"]

    model2, avg2, opt2, sched2, scaler2, sampler2 = _training_objects(seed=1)
    rest = load_checkpoint(f, model2, avg2, opt2, sched2, scaler2, sampler2)
    assert rest["batch_idx_train"] == 3 and rest["cur_epoch"] == 2
    assert rest["env_info"] == {"torch-version": "x"}
    for k, v in model.state_dict().items():
        assert torch.equal(v, model2.state_dict()[k]), k
        assert torch.allclose(model_avg.state_dict()[k].float(), avg2.state_dict()[k].float())
    assert str(opt2.state_dict()) == str(opt.state_dict())
    assert sched2.state_dict() == sched.state_dict()
    assert scaler2.state_dict() == scaler.state_dict() and scaler2.get_scale() != 65536.0
    assert sampler2.state_dict() == sampler.state_dict()


def test_load_leaves_state_of_objects_not_given(tmp_path):
    model, model_avg, opt, sched, scaler, sampler = _training_objects()
    save_checkpoint(tmp_path / "epoch-1.pt", model, sampler=sampler, params={"cur_epoch": 1})
    rest = load_checkpoint(tmp_path / "epoch-1.pt", _Tiny())
    assert "sampler" in rest and rest["cur_epoch"] == 1
    _, _, _, _, _, sampler2 = _training_objects(seed=3)
    sampler2.load_state_dict(rest["sampler"])
    assert sampler2.state_dict() == sampler.state_dict()


def test_atomic_save_keeps_previous_checkpoint(tmp_path, monkeypatch):
    model = _Tiny()
    f = tmp_path / "epoch-1.pt"
    save_checkpoint(f, model, params={"batch_idx_train": 1})
    good = f.read_bytes()

    real_save = torch.save

    def crashing_save(obj, fobj, *args, **kwargs):
        fobj.write(b"partial bytes of a checkpoint")
        raise OSError("disk full (simulated)")

    monkeypatch.setattr(ckpt_mod.torch, "save", crashing_save)
    with torch.no_grad():
        model.encoder.weight.add_(1.0)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(f, model, params={"batch_idx_train": 2})
    monkeypatch.setattr(ckpt_mod.torch, "save", real_save)
    assert f.read_bytes() == good
    assert sorted(p.name for p in tmp_path.iterdir()) == ["epoch-1.pt"]  # no temp file left
    assert load_checkpoint(f, _Tiny())["batch_idx_train"] == 1


def test_killed_saver_leaves_previous_checkpoint(tmp_path):
    # A process killed in the middle of torch.save (SIGKILL) cannot clean up after itself;
    # the target file must still be the old one. The child blocks inside torch.save.
    import subprocess
    import sys
    import time

    f = tmp_path / "checkpoint-8.pt"
    save_checkpoint(f, _Tiny(), params={"batch_idx_train": 8})
    good = f.read_bytes()
    flag = tmp_path / "inside-save"
    code = f"""
import sys, time, torch
import zipformer_rwkv.training.checkpoint as c
from torch import nn
real = torch.save
def slow_save(obj, fobj, *a, **k):
    fobj.write(b"half a checkpoint")
    fobj.flush()
    open({str(flag)!r}, "w").close()
    time.sleep(60)
c.torch.save = slow_save
c.save_checkpoint({str(f)!r}, nn.Linear(3, 4), params={{"batch_idx_train": 9}})
"""
    proc = subprocess.Popen([sys.executable, "-c", code])
    try:
        deadline = time.time() + 60
        while not flag.exists() and time.time() < deadline and proc.poll() is None:
            time.sleep(0.05)
        assert flag.exists(), "child never reached torch.save"
    finally:
        proc.kill()
        proc.wait()
    assert f.read_bytes() == good
    assert load_checkpoint(f, _Tiny())["batch_idx_train"] == 8


def test_load_strips_ddp_prefix_and_reports_mismatches(tmp_path):
    model = _Tiny()
    ddp_state = {"module." + k: v for k, v in model.state_dict().items()}
    f = _write(tmp_path / "ddp.pt", model=ddp_state, batch_idx_train=7)
    model2 = _Tiny()
    assert load_checkpoint(f, model2)["batch_idx_train"] == 7
    assert torch.equal(model2.encoder.weight, model.encoder.weight)

    bad = dict(model.state_dict())
    bad["adapter.weight"] = torch.zeros(5, 4)
    bad["extra.weight"] = torch.zeros(1)
    del bad["encoder.bias"]
    f_bad = _write(tmp_path / "other-model.pt", model=bad)
    with pytest.raises(RuntimeError) as e:
        load_checkpoint(f_bad, _Tiny())
    msg = str(e.value)
    for needle in ("other-model.pt", "encoder.bias", "extra.weight", "adapter.weight", "(5, 4)"):
        assert needle in msg
    m3 = _Tiny()
    load_checkpoint(f_bad, m3, strict=False)  # warns, loads what fits
    assert torch.equal(m3.encoder.weight, model.encoder.weight)

    with pytest.raises(FileNotFoundError, match="nope.pt"):
        load_checkpoint(tmp_path / "nope.pt", _Tiny())
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(RuntimeError, match="junk.pt"):
        load_checkpoint(tmp_path / "junk.pt", _Tiny())
    with pytest.raises(ValueError, match="model"):
        save_checkpoint(tmp_path / "x.pt", model, params={"model": 1})


def test_trainable_only_checkpoint(tmp_path):
    model = _Tiny()
    model.encoder.requires_grad_(False)
    model_avg = copy.deepcopy(model).to(torch.float64)
    f = tmp_path / "epoch-1.pt"
    save_checkpoint(f, model, model_avg, params={"batch_idx_train": 1}, trainable_only=True,
                    base_checkpoints={"encoder": Path("pretrained/encoder.pt")})
    raw = torch.load(f, weights_only=True)
    assert sorted(raw["model"]) == ["adapter.bias", "adapter.weight"]
    assert sorted(raw["model_avg"]) == ["adapter.bias", "adapter.weight"]
    assert raw["base_checkpoints"] == {"encoder": "pretrained/encoder.pt"}
    fresh = _Tiny()
    enc_before = fresh.encoder.weight.clone()
    rest = load_checkpoint(f, fresh)  # strict: missing frozen keys are fine here
    assert rest["trainable_only"] is True
    assert torch.equal(fresh.adapter.weight, model.adapter.weight)
    assert torch.equal(fresh.encoder.weight, enc_before)


def test_one_list_of_non_option_keys_serves_save_transcribe_and_export(tmp_path, monkeypatch):
    from zipformer_rwkv import export
    from zipformer_rwkv.training.checkpoint import NON_OPTION_KEYS, checkpoint_params

    for key in NON_OPTION_KEYS:  # no params key can overwrite one
        with pytest.raises(ValueError, match=f"params key '{key}' collides"):
            save_checkpoint(tmp_path / "x.pt", _Tiny(), params={key: 1})
    model = _Tiny()
    model.encoder.requires_grad_(False)
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1)
    params = {"model_type": "llm", "batch_idx_train": 7, "rng_state": {"python": torch.zeros(2)}}
    f = tmp_path / "epoch-1.pt"
    save_checkpoint(f, model, copy.deepcopy(model).double(), params=params, optimizer=opt, trainable_only=True,
                    base_checkpoints={"encoder": "enc.pt"})
    saved = torch.load(f, weights_only=True)
    assert set(checkpoint_params(saved)) == set(params)  # what transcribe.py takes as options
    monkeypatch.setattr("sys.argv", ["export.py", "--exp-dir", str(tmp_path), "--epoch", "1"])
    export.main()
    out = torch.load(tmp_path / "pretrained.pt", weights_only=True)
    # weights and what describes them; the options; no training state (optimizer, RNG, model_avg)
    assert set(out) == {"model", "trainable_only", "base_checkpoints", "model_type", "batch_idx_train",
                        "exported_from"}
    assert out["trainable_only"] is True and out["base_checkpoints"] == {"encoder": "enc.pt"}
    assert sorted(out["model"]) == ["adapter.bias", "adapter.weight"]


# ------------------------------------------------------------------------------ file selection


def test_find_and_remove_checkpoints(tmp_path):
    for i in (8, 100, 12, 40):
        (tmp_path / f"checkpoint-{i}.pt").write_bytes(b"")
    (tmp_path / "checkpoint-x.pt").write_bytes(b"")
    (tmp_path / "epoch-1.pt").write_bytes(b"")
    names = lambda fs: [Path(f).name for f in fs]  # noqa: E731
    assert names(find_checkpoints(tmp_path)) == [
        "checkpoint-100.pt", "checkpoint-40.pt", "checkpoint-12.pt", "checkpoint-8.pt"]
    assert names(find_checkpoints(tmp_path, iteration=12)) == [
        "checkpoint-100.pt", "checkpoint-40.pt", "checkpoint-12.pt"]
    assert names(find_checkpoints(tmp_path, iteration=-40)) == [
        "checkpoint-40.pt", "checkpoint-12.pt", "checkpoint-8.pt"]
    remove_checkpoints(tmp_path, topk=2)
    assert names(find_checkpoints(tmp_path)) == ["checkpoint-100.pt", "checkpoint-40.pt"]
    assert (tmp_path / "epoch-1.pt").exists()


def test_resolve_decode_checkpoints(tmp_path):
    for e in range(1, 6):
        (tmp_path / f"epoch-{e}.pt").write_bytes(b"")
    plan = resolve_decode_checkpoints(tmp_path, epoch=5, iter=0, avg=3, use_averaged_model=False)
    assert plan.method == "average"
    assert [f.name for f in plan.filenames] == ["epoch-3.pt", "epoch-4.pt", "epoch-5.pt"]
    plan = resolve_decode_checkpoints(tmp_path, epoch=5, iter=0, avg=2, use_averaged_model=True)
    assert plan.method == "averaged_model"
    assert [f.name for f in plan.filenames] == ["epoch-3.pt", "epoch-5.pt"]
    plan = resolve_decode_checkpoints(tmp_path, epoch=4, iter=0, avg=1, use_averaged_model=False)
    assert plan.method == "load" and [f.name for f in plan.filenames] == ["epoch-4.pt"]

    with pytest.raises(ValueError, match="--avg"):
        resolve_decode_checkpoints(tmp_path, epoch=5, iter=0, avg=6, use_averaged_model=False)
    with pytest.raises(ValueError, match="--avg"):
        resolve_decode_checkpoints(tmp_path, epoch=5, iter=0, avg=5, use_averaged_model=True)
    with pytest.raises(FileNotFoundError, match="epoch-7.pt"):
        resolve_decode_checkpoints(tmp_path, epoch=7, iter=0, avg=3, use_averaged_model=False)

    for i in (10, 20, 30):
        (tmp_path / f"checkpoint-{i}.pt").write_bytes(b"")
    plan = resolve_decode_checkpoints(tmp_path, epoch=0, iter=25, avg=2, use_averaged_model=False)
    assert [f.name for f in plan.filenames] == ["checkpoint-20.pt", "checkpoint-10.pt"]
    plan = resolve_decode_checkpoints(tmp_path, epoch=0, iter=30, avg=2, use_averaged_model=True)
    assert [f.name for f in plan.filenames] == ["checkpoint-10.pt", "checkpoint-30.pt"]
    with pytest.raises(ValueError, match="found 2"):
        resolve_decode_checkpoints(tmp_path, epoch=0, iter=25, avg=3, use_averaged_model=False)


def test_load_decode_model_averages(tmp_path):
    weights = []
    for e in (1, 2, 3):
        m = _Tiny()
        weights.append(m.adapter.weight.detach().clone())
        save_checkpoint(tmp_path / f"epoch-{e}.pt", m)
    plan = resolve_decode_checkpoints(tmp_path, epoch=3, iter=0, avg=2, use_averaged_model=False)
    target = _Tiny()
    load_decode_model(target, plan)
    assert torch.allclose(target.adapter.weight, (weights[1] + weights[2]) / 2, atol=1e-6)


class _Evil:
    """Unpickling this would create a marker file (a stand-in for any code execution)."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (Path.touch, (Path(self.marker),))


def test_crafted_reduce_pickle_runs_nothing(tmp_path):
    marker = tmp_path / "executed"
    path = tmp_path / "epoch-3.pt"
    torch.save({"model": {"w": torch.zeros(1)}, "exp_dir": Path("exp"), "x": _Evil(marker)}, path)
    with pytest.raises(RuntimeError, match="epoch-3.pt"):
        ckpt_mod.read_checkpoint(path)
    with pytest.raises(Exception):
        ckpt_mod.safe_torch_load(path)
    assert not marker.exists()


def test_unreadable_checkpoints_are_one_line_known_failures(tmp_path):
    from zipformer_rwkv.errors import CheckpointError, known_error_message

    evil = tmp_path / "epoch-3.pt"
    torch.save({"model": {}, "x": _Evil(tmp_path / "executed")}, evil)
    good = tmp_path / "good.pt"
    save_checkpoint(good, _Tiny())
    truncated = tmp_path / "checkpoint-8.pt"
    truncated.write_bytes(good.read_bytes()[:700])
    for path, why in ((evil, "a Python object that weights_only loading refuses"), (truncated, "truncated")):
        with pytest.raises(CheckpointError) as info:
            ckpt_mod.read_checkpoint(path)
        msg = known_error_message(info.value)
        assert msg.startswith(f"cannot read checkpoint {path}: ") and why in msg and "\n" not in msg, msg
    assert not (tmp_path / "executed").exists()


def _disk_full_after_half(fsrc, fdst, *args):
    fdst.write(fsrc.read(10))
    raise OSError(28, "No space left on device")


def test_best_loss_copy_is_atomic(tmp_path, monkeypatch):
    """best-valid-loss.pt is replaced by a complete copy or not at all (a full disk mid-copy
    used to leave it half-written, with the earlier good copy gone)."""
    from types import SimpleNamespace

    from zipformer_rwkv import train

    params = AttributeDict(exp_dir=tmp_path, cur_epoch=1, best_train_epoch=1, best_valid_epoch=1)
    opt = SimpleNamespace(state_dict=lambda: {}, scheduler=None)
    train.save_epoch_checkpoint(params, _Tiny(), None, opt, None, None, rank=0)
    good = (tmp_path / "best-valid-loss.pt").read_bytes()
    assert good == (tmp_path / "epoch-1.pt").read_bytes()

    import shutil

    monkeypatch.setattr(shutil, "_USE_CP_SENDFILE", False)  # so any copy goes through copyfileobj
    monkeypatch.setattr(shutil, "copyfileobj", _disk_full_after_half)
    params.cur_epoch = params.best_valid_epoch = 2
    with pytest.raises(OSError):
        train.save_epoch_checkpoint(params, _Tiny(), None, opt, None, None, rank=0)
    assert (tmp_path / "best-valid-loss.pt").read_bytes() == good
    assert not [p.name for p in tmp_path.iterdir() if ".tmp-" in p.name]


def _torch_zip_writer_short_write(obj, fobj, *args, **kwargs):
    """What torch.save does on a full disk: the zip writer's check fails after a short write."""
    fobj.write(b"PK partial")
    raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 704 vs 598")


def _enospc_during_torch_save(obj, fobj, *args, **kwargs):
    try:
        _torch_zip_writer_short_write(obj, fobj)
    except RuntimeError:
        raise OSError(28, "No space left on device")


@pytest.mark.parametrize("writer", [_torch_zip_writer_short_write, _enospc_during_torch_save])
def test_full_disk_while_saving_is_one_line_naming_the_file(tmp_path, monkeypatch, writer):
    from zipformer_rwkv.errors import CheckpointWriteError, known_error_message

    f = tmp_path / "checkpoint-40.pt"
    save_checkpoint(f, _Tiny(), params={"batch_idx_train": 40})
    good = f.read_bytes()
    monkeypatch.setattr(ckpt_mod.torch, "save", writer)
    with pytest.raises(CheckpointWriteError) as info:
        save_checkpoint(f, _Tiny(), params={"batch_idx_train": 80})
    msg = known_error_message(info.value)
    assert msg is not None and "\n" not in msg
    assert str(f) in msg and "disk full" in msg
    assert f.read_bytes() == good
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint-40.pt"]
