"""RWKV-7 model and BlinkDL checkpoint loading (zipformer_rwkv/rwkv7/model.py, load.py).

The reference is BlinkDL's own inference code, the `rwkv` PyPI package (`RWKV_x070`, strategy
"cpu fp32"), run in a subprocess (it configures torch globally at import time) on a random tiny
checkpoint written in BlinkDL's exact format: bf16 tensors, BlinkDL's key names and stored shapes
(as in RWKV-LM's `RWKV-v7/rwkv_v7_demo.py`), built here from that list and not from our model.
Metric as BlinkDL (RWKV-LM `RWKV-v7/rwkv_v7_numpy.py`) and johanwind/wind_rwkv use it:
max|logits - ref| / std(ref) <= 1e-5.
"""
import json
import os
import subprocess
import sys
import textwrap

import pytest
import torch

from zipformer_rwkv.rwkv7.load import (
    MODEL_SIZES,
    RWKV7CheckpointError,
    config_from_state_dict,
    detect_model_size,
    load_rwkv7_checkpoint,
)
from zipformer_rwkv.rwkv7.model import RWKV7, RWKV7Config

L, C, V = 3, 128, 300
DIMS = dict(d_decay=32, d_aaa=32, d_mv=32, d_gate=64)
TOL = 1e-5


def blinkdl_state_dict(n_layer, n_embd, vocab, d_decay, d_aaa, d_mv, d_gate, layer0_v=True, seed=0, device="cpu"):
    """A random state dict with BlinkDL's key names, stored shapes and bf16 dtype."""
    g = torch.Generator().manual_seed(seed)
    H, N = n_embd // 64, 64
    meta = device == "meta"

    def t(*shape, scale=1.0, shift=0.0, uniform=False):
        if meta:
            return torch.empty(*shape, device="meta", dtype=torch.bfloat16)
        x = torch.rand(*shape, generator=g) if uniform else torch.randn(*shape, generator=g)
        return (x * scale + shift).to(torch.bfloat16)

    sd = {"emb.weight": t(vocab, n_embd, scale=0.5)}
    sd["blocks.0.ln0.weight"], sd["blocks.0.ln0.bias"] = t(n_embd, scale=0.1, shift=1), t(n_embd, scale=0.1)
    for i in range(n_layer):
        p = f"blocks.{i}."
        for ln in ("ln1", "ln2"):
            sd[p + ln + ".weight"], sd[p + ln + ".bias"] = t(n_embd, scale=0.1, shift=1), t(n_embd, scale=0.1)
        a = p + "att."
        for mu in ("x_r", "x_w", "x_k", "x_v", "x_a", "x_g"):
            sd[a + mu] = t(1, 1, n_embd, uniform=True)
        sd[a + "w0"] = t(1, 1, n_embd, scale=1.0, shift=-1.0)
        for name, d in (("w", d_decay), ("a", d_aaa), ("v", d_mv), ("g", d_gate)):
            if name == "v" and i == 0 and not layer0_v:
                continue
            if name != "g":
                sd[a + name + "0"] = t(1, 1, n_embd, scale=0.5)
            sd[a + name + "1"] = t(n_embd, d, scale=n_embd**-0.5)
            sd[a + name + "2"] = t(d, n_embd, scale=d**-0.5)
        sd[a + "k_k"] = t(1, 1, n_embd, scale=0.1, shift=0.7)
        sd[a + "k_a"] = t(1, 1, n_embd, scale=0.1, shift=1.0)
        sd[a + "r_k"] = t(H, N, scale=0.1)
        for lin in ("receptance", "key", "value", "output"):
            sd[a + lin + ".weight"] = t(n_embd, n_embd, scale=n_embd**-0.5)
        sd[a + "ln_x.weight"], sd[a + "ln_x.bias"] = t(n_embd, scale=0.1, shift=0.5), t(n_embd, scale=0.1)
        f = p + "ffn."
        sd[f + "x_k"] = t(1, 1, n_embd, uniform=True)
        sd[f + "key.weight"] = t(4 * n_embd, n_embd, scale=n_embd**-0.5)
        sd[f + "value.weight"] = t(n_embd, 4 * n_embd, scale=(4 * n_embd) ** -0.5)
    sd["ln_out.weight"], sd["ln_out.bias"] = t(n_embd, scale=0.1, shift=1), t(n_embd, scale=0.1)
    sd["head.weight"] = t(vocab, n_embd, scale=n_embd**-0.5)
    return sd


def rel_err(x, ref):
    return ((x.double() - ref.double()).abs().max() / ref.double().std()).item()


_REF_SCRIPT = textwrap.dedent(
    """
    import json, sys, torch
    from rwkv.model import RWKV
    path, tokens, out = sys.argv[1], json.loads(sys.argv[2]), sys.argv[3]
    model = RWKV(model=path, strategy="cpu fp32")
    seq, seq_state = model.forward(tokens, None, full_output=True)
    state, one = None, []
    for tok in tokens:
        logits, state = model.forward([tok], state)
        one.append(logits)
    torch.save({"seq": seq, "one": torch.stack(one), "state": seq_state}, out)
    """
)


def run_reference(pth_path, tokens, out_path):
    """Logits of the `rwkv` package (sequence mode and token by token) and its final state."""
    env = dict(os.environ, RWKV_V7_ON="1", RWKV_JIT_ON="1", RWKV_CUDA_ON="0", CUDA_VISIBLE_DEVICES="")
    stem = str(pth_path)[: -len(".pth")]  # the package appends ".pth" itself
    proc = subprocess.run(
        [sys.executable, "-c", _REF_SCRIPT, stem, json.dumps(tokens), str(out_path)],
        env=env, capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return torch.load(out_path, weights_only=True)


@pytest.mark.parametrize("layer0_v", [True, False])
def test_matches_blinkdl_rwkv_package(tmp_path, layer0_v):
    pytest.importorskip("rwkv")
    path = tmp_path / "tiny.pth"
    torch.save(blinkdl_state_dict(L, C, V, **DIMS, layer0_v=layer0_v, seed=1 + layer0_v), path)
    tokens = torch.randint(0, V, (37,), generator=torch.Generator().manual_seed(3)).tolist()
    ref = run_reference(path, tokens, tmp_path / "ref.pt")

    model = load_rwkv7_checkpoint(path)
    assert model.config.layer0_v_lora == layer0_v and detect_model_size(model.config) == "custom"
    with torch.no_grad():
        logits, state = model(torch.tensor([tokens]), return_state=True)
        assert rel_err(logits[0], ref["seq"]) <= TOL
        s, steps = None, []
        for tok in tokens:
            out, s = model.step(torch.tensor([tok]), s)
            steps.append(out[0])
        assert rel_err(torch.stack(steps), ref["one"]) <= TOL
    # state per layer (att_x_prev, wkv, ffn_x_prev) as the package's flat list
    ours = [x[0] for layer in state for x in layer]
    assert len(ours) == len(ref["state"])
    for mine, theirs in zip(ours, ref["state"]):
        assert mine.shape == theirs.shape
        assert rel_err(mine, theirs) <= 1e-4


def tiny_model(seed=0, **kw):
    torch.manual_seed(seed)
    model = RWKV7(RWKV7Config(vocab_size=V, n_layer=L, n_embd=C, **DIMS, **kw))
    with torch.no_grad():  # the init zeroes output projections; perturb so every path matters
        for p in model.parameters():
            p.add_(0.1 * torch.randn_like(p))
    return model


def test_step_equals_forward_and_state_continuation():
    model = tiny_model().double()
    idx = torch.randint(0, V, (2, 17))
    with torch.no_grad():
        full, full_state = model(idx, return_state=True)
        # the same sequence in two parallel pieces, carrying the state
        first, st = model(idx[:, :10], return_state=True)
        second, st = model(idx[:, 10:], state=st, return_state=True)
        assert rel_err(torch.cat([first, second], 1), full) <= 1e-10
        s, outs = model.init_state(2), []
        for t in range(idx.shape[1]):
            out, s = model.step(idx[:, t], s)
            outs.append(out)
    assert rel_err(torch.stack(outs, 1), full) <= 1e-10
    for a, b in zip(full_state, s):
        for x, y in zip(a, b):
            assert rel_err(x, y) <= 1e-10


def test_right_padding_matches_one_by_one():
    model = tiny_model(seed=1)
    lengths = [19, 7, 1, 12]
    T = max(lengths)
    seqs = [torch.randint(0, V, (n,)) for n in lengths]
    idx = torch.full((len(seqs), T), 5, dtype=torch.long)  # pad id: a real token, must still not leak
    for i, s in enumerate(seqs):
        idx[i, : len(s)] = s
    start = model.init_state(len(seqs))
    with torch.no_grad():
        for st in start:  # nonzero incoming state, so "identity update" is really checked
            st[1].normal_()
            st[0].normal_()
        logits, state = model(idx, lengths=torch.tensor(lengths), state=start, return_state=True)
        for i, s in enumerate(seqs):
            one_state = RWKV7.reorder_state(start, torch.tensor([i]))
            ref, ref_state = model(s[None], state=one_state, return_state=True)
            assert rel_err(logits[i, : len(s)], ref[0]) <= TOL
            for a, b in zip(state, ref_state):
                for x, y in zip(a, b):
                    assert rel_err(x[i], y[0]) <= TOL


def test_embedding_input_equals_token_input():
    model = tiny_model(seed=2).double()
    idx = torch.randint(0, V, (3, 9))
    with torch.no_grad():
        by_ids = model(idx)
        by_embeds = model(inputs_embeds=model.emb(idx))
        assert torch.allclose(by_ids, by_embeds, atol=0, rtol=0)
        out, _ = model.step(model.emb(idx[:, 0]))
    assert rel_err(out, by_ids[:, 0]) <= 1e-10
    with pytest.raises(ValueError, match="exactly one"):
        model(idx, inputs_embeds=model.emb(idx))


def test_state_tuning_gradient_and_init_state():
    model = tiny_model(seed=3)
    params = model.enable_state_tuning()
    assert len(params) == L and params[0].shape == (C // 64, 64, 64)
    assert "blocks.1.att.time_state" in model.state_dict()
    idx = torch.randint(0, V, (2, 18))
    base = model(idx).detach()
    model(idx).logsumexp(-1).sum().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in params)
    with torch.no_grad():
        for p in params:
            p.normal_()
        tuned = model(idx)
        assert rel_err(tuned, base) > 1e-3  # the initial state is actually used
        out, _ = model.step(idx[:, 0], model.init_state(2))  # init_state starts from time_state
    assert rel_err(out, tuned[:, 0]) <= TOL


def test_reorder_state():
    model = tiny_model()
    _, state = model(torch.randint(0, V, (3, 5)), return_state=True)
    new = RWKV7.reorder_state(state, torch.tensor([2, 2, 0]))
    assert torch.equal(new[1][1][0], state[1][1][2]) and torch.equal(new[0][0][2], state[0][0][0])
    assert new[0][1].shape == (3, C // 64, 64, 64)


def test_init_weights_follow_rwkv_lm_train_temp():
    model = RWKV7(RWKV7Config(vocab_size=V, n_layer=4, n_embd=C, **DIMS))
    att0, att3 = model.blocks[0].att, model.blocks[3].att
    assert torch.all(att0.output.weight == 0) and torch.all(model.blocks[2].ffn.value.weight == 0)
    assert torch.allclose(att3.ln_x.weight, torch.full((C,), 1.0))
    assert torch.allclose(att0.ln_x.weight, torch.full((C,), 0.25**0.7))
    assert att0.x_r[0, 0, 0] == 1.0 and torch.allclose(att0.k_a, torch.full_like(att0.k_a, 1.02))
    w2 = att0.w2  # orthogonal rows, gain 0.1
    assert torch.allclose(w2 @ w2.T, 0.01 * torch.eye(w2.shape[0]), atol=1e-5)
    decay = torch.exp(-0.6065306597 * torch.sigmoid(att0.w0))
    assert decay.min() > 0.545 and decay.max() < 1
    assert torch.isfinite(model(torch.randint(0, V, (1, 4)))).all()


def test_loader_errors(tmp_path):
    sd = blinkdl_state_dict(2, C, V, **DIMS)
    missing = dict(sd)
    del missing["blocks.1.att.k_a"]
    torch.save(missing, tmp_path / "missing.pth")
    with pytest.raises(RWKV7CheckpointError, match=r"missing\.pth.*missing keys: blocks\.1\.att\.k_a"):
        load_rwkv7_checkpoint(tmp_path / "missing.pth")
    bad = dict(sd, **{"blocks.1.att.w0": torch.zeros(1, C)})
    torch.save(bad, tmp_path / "shape.pth")
    with pytest.raises(RWKV7CheckpointError, match=r"shape\.pth.*wrong shapes: blocks\.1\.att\.w0"):
        load_rwkv7_checkpoint(tmp_path / "shape.pth")
    extra = dict(sd, **{"blocks.1.ffn.s_emb.weight": torch.zeros(3, 3)})
    torch.save(extra, tmp_path / "de.pth")
    with pytest.raises(RWKV7CheckpointError, match="DeepEmbed"):
        load_rwkv7_checkpoint(tmp_path / "de.pth")
    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(RWKV7CheckpointError, match=r"junk\.pth"):
        load_rwkv7_checkpoint(tmp_path / "junk.pth")
    with pytest.raises(FileNotFoundError, match="nope"):
        load_rwkv7_checkpoint(tmp_path / "nope.pth")


def test_loader_dtype_safetensors_and_state_tuning_keys(tmp_path):
    from safetensors.torch import save_file

    sd = blinkdl_state_dict(2, C, V, **DIMS, layer0_v=False)
    sd["blocks.0.att.time_state"] = torch.randn(2, 64, 64).to(torch.bfloat16)
    sd["blocks.1.att.time_state"] = torch.randn(2, 64, 64).to(torch.bfloat16)
    save_file(sd, str(tmp_path / "m.safetensors"))
    model = load_rwkv7_checkpoint(tmp_path / "m.safetensors", dtype=torch.bfloat16)
    assert model.emb.weight.dtype == torch.bfloat16 and not model.training
    assert torch.equal(model.blocks[1].att.time_state, sd["blocks.1.att.time_state"])
    model32 = load_rwkv7_checkpoint(tmp_path / "m.safetensors")
    assert model32.head.weight.dtype == torch.float32
    assert torch.equal(model32.head.weight, sd["head.weight"].float())
    # round trip: our state dict has exactly the file's keys
    assert set(model32.state_dict()) == set(sd)


@pytest.mark.parametrize("size", list(MODEL_SIZES))
def test_size_table_detection_on_meta(size):
    n_layer, n_embd, dw, da, dv, dg = MODEL_SIZES[size]
    sd = blinkdl_state_dict(n_layer, n_embd, 65536, dw, da, dv, dg, layer0_v=False, device="meta")
    cfg = config_from_state_dict(sd)
    assert detect_model_size(cfg) == size
    with torch.device("meta"):
        model = RWKV7(cfg)
    assert {k: tuple(v.shape) for k, v in model.state_dict().items()} == {k: tuple(v.shape) for k, v in sd.items()}
    n_params = sum(p.numel() for p in model.parameters())
    per_layer = 19 * n_embd + 12 * n_embd**2 + 2 * n_embd * (dw + da + dv + dg)
    expected = 2 * 65536 * n_embd + 4 * n_embd + n_layer * per_layer
    # RWKV-LM README's parameter formula counts layer-0 v0/v1/v2, which this file lacks
    assert n_params == expected - (n_embd + 2 * n_embd * dv)
    assert detect_model_size(RWKV7Config(n_layer=n_layer, n_embd=n_embd, d_decay=dw + 32)) == "custom"


def test_autocast_bf16_and_bf16_params():
    model = tiny_model(seed=4)
    idx = torch.randint(0, V, (2, 21))
    with torch.no_grad():
        ref, ref_state = model(idx, lengths=torch.tensor([21, 13]), return_state=True)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out, state = model(idx, lengths=torch.tensor([21, 13]), return_state=True)
        assert out.dtype == torch.bfloat16 and state[0][1].dtype == torch.float32  # (x_prev, wkv, x_prev)
        assert ((out.float() - ref).norm() / ref.norm()).item() < 0.05
        low = tiny_model(seed=4).to(torch.bfloat16)
        out16, state16 = low(idx, return_state=True)
        step16, _ = low.step(idx[:, 0])
    assert out16.dtype == torch.bfloat16 and state16[1][1].dtype == torch.float32
    real, real16 = torch.cat([ref[0], ref[1, :13]]), torch.cat([out16[0], out16[1, :13]])  # unpadded positions
    assert ((real16.float() - real).norm() / real.norm()).item() < 0.05
    assert ((step16.float() - ref[:, 0]).norm() / ref[:, 0].norm()).item() < 0.05


def test_grad_checkpoint_same_gradients():
    model = tiny_model(seed=5, layer0_v_lora=True).double()
    idx = torch.randint(0, V, (2, 19))
    grads = []
    for flag in (False, True):
        model.zero_grad()
        model.grad_checkpoint = flag
        model(idx, lengths=torch.tensor([19, 11])).logsumexp(-1).sum().backward()
        grads.append([p.grad.clone() for p in model.parameters()])
    for a, b in zip(*grads):
        assert torch.allclose(a, b, rtol=1e-9, atol=1e-12)
    # every parameter takes part (DDP without find_unused_parameters); unused layer-0 v0/v1/v2 are buffers
    unused = [n for (n, _), g in zip(model.named_parameters(), grads[0]) if not g.abs().sum() > 0]
    assert unused == [] and "blocks.0.att.v1" in dict(model.named_buffers())


def test_state_tuning_gradient_matches_finite_difference():
    model = tiny_model(seed=6).double()
    params = model.enable_state_tuning()
    with torch.no_grad():
        for p in params:
            p.normal_(std=0.1)
    idx = torch.randint(0, V, (2, 18))
    lengths = torch.tensor([18, 9])

    def loss():
        return model(idx, lengths=lengths).logsumexp(-1)[0, -1] + model(idx, lengths=lengths)[1, 8].sum()

    loss().backward()
    for layer, (h, i, j) in ((0, (1, 3, 5)), (2, (0, 60, 2))):
        p, eps = params[layer], 1e-6
        with torch.no_grad():
            p[h, i, j] += eps
            up = loss()
            p[h, i, j] -= 2 * eps
            down = loss()
            p[h, i, j] += eps
        fd = (up - down) / (2 * eps)
        assert abs(fd.item() - p.grad[h, i, j].item()) <= 1e-6 * max(1.0, abs(fd.item()))


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_inference_path_equals_autograd_path(dtype):
    """The no-grad path (fused lerps, addmm, in-place activations) computes the same logits and state as
    the autograd path, with padding and an incoming state."""
    model = tiny_model(seed=7).to(dtype)
    idx = torch.randint(0, V, (2, 23))
    lengths = torch.tensor([23, 9])
    start = model.init_state(2)
    for st in start:
        st[0].normal_()
        st[1].normal_()
        st[2].normal_()
    ref, ref_state = model(idx, lengths=lengths, state=start, return_state=True)  # autograd path
    with torch.no_grad():
        out, state = model(idx, lengths=lengths, state=start, return_state=True)
        step, _ = model.step(idx[:, 0], start)
    tol = 1e-12 if dtype == torch.float64 else 1e-5
    assert rel_err(out, ref.detach()) <= tol and rel_err(step, ref[:, 0].detach()) <= tol
    for a, b in zip(state, ref_state):
        for x, y in zip(a, b):
            assert rel_err(x, y.detach()) <= tol


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_last_only_prefill(dtype):
    """forward_features(last_only=True) = the full hidden states at each row's last valid position, with
    the same state, without autograd (last block computed at two positions) and with it; T = 1 too."""
    model = tiny_model(seed=8).to(dtype)
    idx = torch.randint(0, V, (3, 14))
    lengths = torch.tensor([14, 1, 6])
    start = model.init_state(3)
    for st in start:
        for t in st:
            t.normal_()
    tol = 1e-12 if dtype == torch.float64 else 1e-5
    for kw in (dict(lengths=lengths, state=start), dict(state=start), dict()):
        with torch.no_grad():
            full, full_state = model.forward_features(idx, **kw)
            last, state = model.forward_features(idx, last_only=True, **kw)
            one, _ = model.forward_features(idx[:, :1], last_only=True, state=kw.get("state"))
            one_full, _ = model.forward_features(idx[:, :1], state=kw.get("state"))
        pos = kw["lengths"] - 1 if "lengths" in kw else torch.full((3,), 13)
        assert last.shape == (3, C) and rel_err(last, full[torch.arange(3), pos]) <= tol
        assert rel_err(one, one_full[:, 0]) <= tol
        for a, b in zip(state, full_state):
            for x, y in zip(a, b):
                assert rel_err(x, y) <= tol
    grad_last, _ = model.forward_features(idx, lengths=lengths, last_only=True)  # autograd path: gather
    assert rel_err(grad_last.detach(), full[torch.arange(3), lengths - 1]) <= tol


@pytest.mark.parametrize("rows", [1, 3, 8, 9])
def test_linear_rows_blocked_equals_linear(rows):
    """The blocked-bmm product of `linear_rows` (<= 8 rows) is x @ W.T; weights whose rows do not split
    into 16 blocks, and more than 8 rows, take the plain mm."""
    from zipformer_rwkv.rwkv7 import model as rwkv_model

    g = torch.Generator().manual_seed(rows)
    x = torch.randn(rows, 40, dtype=torch.float64, generator=g)
    for out_features in (48, 40):
        w = torch.randn(out_features, 40, dtype=torch.float64, generator=g)
        ref = x @ w.t()
        assert rel_err(rwkv_model.linear_rows(x, w), ref) <= 1e-13
        out = torch.empty(rows, out_features, dtype=torch.float64)
        assert rwkv_model.linear_rows(x, w, out=out) is out and rel_err(out, ref) <= 1e-13


def test_step_with_blocked_linears_equals_forward(monkeypatch):
    """Decoding through the blocked products (every weight, the 320-row head included) gives the parallel
    logits."""
    torch.manual_seed(5)
    model = RWKV7(RWKV7Config(vocab_size=320, n_layer=2, n_embd=C, **DIMS)).double()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.1 * torch.randn_like(p))
    idx = torch.randint(0, 320, (2, 9))
    with torch.no_grad():
        full = model(idx)
        calls = []
        real_bmm = torch.bmm
        monkeypatch.setattr(torch, "bmm", lambda *a, **k: calls.append(1) or real_bmm(*a, **k))
        s, outs = None, []
        for t in range(idx.shape[1]):
            out, s = model.step(idx[:, t], s)
            outs.append(out)
    assert calls, "the blocked path was not taken"
    assert rel_err(torch.stack(outs, 1), full) <= 1e-10


def test_lora_is_applied_on_the_inference_path():
    """With peft LoRA injected (non-zero lora_B, as after training), the no-grad inference path (validation,
    prefill, decoding) gives the autograd path's logits: it must call the LoRA-wrapped projections, not read
    their base `.weight` and skip the adaptation."""
    pytest.importorskip("peft")
    from zipformer_rwkv.speechllm.model import apply_llm_peft

    model = tiny_model(seed=7).double()
    idx = torch.randint(0, V, (2, 11), generator=torch.Generator().manual_seed(7))
    with torch.no_grad():
        base = model(idx)
    apply_llm_peft(model, "lora", lora_r=4, lora_alpha=8)
    model.double()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.copy_(0.1 * torch.randn_like(p))
    with torch.enable_grad():
        ref = model(idx)  # autograd path: the modules are called
    assert rel_err(ref.detach(), base) > 1e-3  # LoRA changed the model
    with torch.no_grad():
        assert rel_err(model(idx), ref.detach()) <= 1e-10
        hidden, _ = model.forward_features(idx, last_only=True)
        assert rel_err(model.logits(hidden), ref.detach()[:, -1]) <= 1e-10
        s, outs = None, []
        for t in range(idx.shape[1]):
            out, s = model.step(idx[:, t], s)
            outs.append(out)
    assert rel_err(torch.stack(outs, 1), ref.detach()) <= 1e-10
