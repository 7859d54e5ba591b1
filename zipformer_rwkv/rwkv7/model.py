"""RWKV-7 ("Goose", x070) language model with BlinkDL parameter names.

Equations: the RWKV-7 "Goose" paper (arXiv 2503.14456) as implemented in BlinkDL's RWKV-LM
(`RWKV-v7/rwkv_v7_demo.py`; `RWKV-v7/train_temp/src/model.py`, classes `RWKV_Tmix_x070` and
`RWKV_CMix_x070`) and in the `rwkv` pip package (`rwkv/model.py`, `RWKV_x070`); see README.md in this
directory. From-scratch initialisation follows `train_temp`; parameter names and stored shapes are
BlinkDL's, so that
`model.load_state_dict(torch.load("RWKV-x070-....pth", weights_only=True))` works as it is (see `load.py`).

Three ways to run it, all on the same code path:
  * `forward(idx | inputs_embeds, lengths=, state=)` — parallel over time (training, prefill), calls the
    WKV7 op `zipformer_rwkv.rwkv7.wkv7.wkv7` (chunked on CPU, Triton on GPU);
  * `step(token | embedding, state)` — one position for every sequence of a batch (generation, streaming),
    the WKV7 update done directly in fp32;
  * state tuning: `enable_state_tuning()` adds a trainable initial WKV state per layer.

Recurrent state (the per-layer triple of the `rwkv` package) is a list with one tuple per layer:
`(att_x_prev (N, C), wkv_state (N, H, K, K) float32 in BlinkDL [value, key] layout, ffn_x_prev (N, C))`.
"""
import math
from dataclasses import dataclass
from typing import List, Optional, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F

LayerState = Tuple[torch.Tensor, torch.Tensor, torch.Tensor]
State = List[LayerState]

# d = exp(-exp(-0.5) * sigmoid(w_raw)): the log-decay fed to WKV7 is -exp(-0.5) * sigmoid(w_raw), as in
# BlinkDL's `rwkv` package (RWKV_x070) and RWKV-LM's `rwkv7_clampw` kernel; it keeps d in (0.545, 1).
DECAY_SCALE = math.exp(-0.5)


@dataclass
class RWKV7Config:
    """Shape of an RWKV-7 model; `load.py` reads every field from a checkpoint's tensor shapes.

    Attributes:
      vocab_size: V, rows of `emb.weight` / `head.weight` (65536 for World/G1 files).
      n_layer: L, number of blocks.
      n_embd: C, model width (a multiple of `head_size`).
      head_size: K, channels per head (64 in every released model); H = C / K heads.
      d_decay: Dw, rank of the decay LoRA (`att.w1` is (C, Dw)).
      d_aaa: Da, rank of the in-context learning-rate LoRA (`att.a1`).
      d_mv: Dv, rank of the value-residual LoRA (`att.v1`, layers >= 1).
      d_gate: Dg, rank of the output-gate LoRA (`att.g1`).
      dim_ffn: F, channel-mix hidden width (`ffn.key.weight` is (F, C)); 0 means 4 * C.
      layer0_v_lora: keep `blocks.0.att.v0/v1/v2` (unused by the math; some BlinkDL files have them)
        as buffers so a file that has them loads strictly and saves back identical.
    """

    vocab_size: int = 65536
    n_layer: int = 12
    n_embd: int = 768
    head_size: int = 64
    d_decay: int = 64
    d_aaa: int = 64
    d_mv: int = 32
    d_gate: int = 128
    dim_ffn: int = 0
    layer0_v_lora: bool = False

    def __post_init__(self):
        if self.dim_ffn == 0:
            self.dim_ffn = 4 * self.n_embd
        if self.n_embd % self.head_size != 0:
            raise ValueError(f"n_embd={self.n_embd} is not a multiple of head_size={self.head_size}")

    @property
    def n_head(self) -> int:
        return self.n_embd // self.head_size

    @classmethod
    def with_default_dims(cls, n_layer: int, n_embd: int, vocab_size: int = 65536, **kw) -> "RWKV7Config":
        """A config whose LoRA ranks follow the formula the released models used (older
        RWKV-LM `train_temp` versions):
        Dw = Da = max(32, round(1.8 sqrt(C) / 32) * 32), Dv = max(32, round(1.3 sqrt(C) / 32) * 32),
        Dg = max(32, round(0.6 C^0.8 / 32) * 32)."""

        def r32(x: float) -> int:
            return max(32, int(round(x / 32)) * 32)

        dims = dict(
            d_decay=r32(1.8 * n_embd**0.5),
            d_aaa=r32(1.8 * n_embd**0.5),
            d_mv=r32(1.3 * n_embd**0.5),
            d_gate=r32(0.6 * n_embd**0.8),
        )
        dims.update(kw)
        return cls(vocab_size=vocab_size, n_layer=n_layer, n_embd=n_embd, **dims)


def _wkv7_seq(r, w, k, v, a, b, state):
    """Parallel WKV7 over (B, T, H, K) inputs; see `zipformer_rwkv.rwkv7.wkv7.wkv7` for the contract.

    Runs with autocast disabled: the op picks its own internal precision (fp32 state) for the given
    input dtype, as BlinkDL's CUDA kernels do.
    """
    from zipformer_rwkv.rwkv7.wkv7 import wkv7

    with torch.autocast(r.device.type, enabled=False):
        return wkv7(r, w, k, v, a, b, state)


def wkv7_one_step(
    state: torch.Tensor, r: torch.Tensor, w: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
    a: torch.Tensor, b: torch.Tensor,
) -> Tuple[torch.Tensor, torch.Tensor]:
    """One WKV7 update for a batch of single positions, computed in float32 (see README.md here).

    `S <- S (diag(exp(w)) + a^T b) + v^T k`, `y = S r`, with S[i, j] indexed [value, key].

    Args:
      state: (B, H, K, K) float32 (or float64) previous state.
      r, w, k, v, a, b: (B, H, K); w is the log-decay (<= 0), a = -kk, b = kk * a_gate.
    Returns:
      y (B, H, K) in r's dtype and the new state (B, H, K, K) in the state's dtype.
    """
    f, (B, H, K) = state.dtype, r.shape
    r, w, k, v, a, b = (t.to(f) for t in (r, w, k, v, a, b))
    sa = state @ a.unsqueeze(-1)  # (B, H, K, 1): sum_j S[i, j] a_j
    # S diag(d) + [sa | v] @ [b ; k]: the two rank-1 updates as one batched matmul (fewer small ops)
    left = torch.cat([sa, v.unsqueeze(-1)], dim=-1).view(B * H, K, 2)
    right = torch.stack([b, k], dim=-2).view(B * H, 2, K)
    decayed = (state * torch.exp(w).unsqueeze(-2)).view(B * H, K, K)
    state = torch.baddbmm(decayed, left, right).view(B, H, K, K)
    y = (state @ r.unsqueeze(-1)).squeeze(-1)
    return y, state


def _state_dtype(dtype: torch.dtype) -> torch.dtype:
    """WKV states are float32, or float64 for a float64 model (reference checks)."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def _token_shift(x: torch.Tensor, x_prev: Optional[torch.Tensor]) -> torch.Tensor:
    """(N, T, C) -> the previous position's input, x_prev (N, C) (or zeros) at t = 0."""
    first = torch.zeros_like(x[:, :1]) if x_prev is None else x_prev.to(x.dtype).unsqueeze(1)
    return torch.cat([first, x[:, :-1]], dim=1)


class _Workspace:
    """Named scratch tensors that every block of one inference forward reuses.

    On CPU a fresh multi-MB tensor per op costs page faults (freed large blocks go back to the OS): at
    T = 1024 that was ~10 % of a 0.1B prefill. Blocks ask for the same names with the same shapes, so
    the memory is touched fresh once per forward instead of once per layer.
    """

    def __init__(self) -> None:
        self.bufs = {}

    def get(self, name: str, shape: Tuple[int, ...], like: torch.Tensor) -> torch.Tensor:
        t = self.bufs.get(name)
        if t is None or t.shape != shape or t.dtype != like.dtype or t.device != like.device:
            t = self.bufs[name] = like.new_empty(shape)
        return t


def _buffer(ws: Optional[_Workspace], name: str, shape: Tuple[int, ...], like: torch.Tensor) -> torch.Tensor:
    """ws's scratch tensor `name` of `shape` (like's dtype/device), or a new one without a workspace."""
    return like.new_empty(shape) if ws is None else ws.get(name, tuple(shape), like)


def _shift_delta(x: torch.Tensor, x_prev: Optional[torch.Tensor], out: Optional[torch.Tensor] = None) -> torch.Tensor:
    """(N, T, C) -> x_{t-1} - x_t (x_prev (N, C), or zeros, before position 0), without the shifted copy;
    written into `out` (N, T, C) when given."""
    xx = torch.empty_like(x) if out is None else out
    torch.sub(x[:, :-1], x[:, 1:], out=xx[:, 1:])
    if x_prev is None:
        torch.neg(x[:, 0], out=xx[:, 0])
    else:
        torch.sub(x_prev.to(x.dtype), x[:, 0], out=xx[:, 0])
    return xx


def linear_rows(x: torch.Tensor, weight: torch.Tensor, out: Optional[torch.Tensor] = None) -> torch.Tensor:
    """x @ weight.T for x (M, IN) and weight (OUT, IN), like `F.linear` without bias (no autograd).

    For a few rows (M <= 8: decoding) on CPU the product is one `bmm` over 16 row blocks of the weight
    instead of one `mm`. MKL's matrix-vector `mm` read the 0.1B head (201 MB) at ~13 GB/s on one thread
    and did not use a second; the blocked `bmm` reads faster and splits over threads. Measured in
    decoding steps (README "Speed"; RWKV7.step, batch 1): a 4 x 256 model 3.4 -> 3.0 ms at 1 thread,
    3.2 -> 2.4 ms at 2; the 0.1B shape 44 -> 36 / 35 -> 30 ms over blocking only its head and FFN.
    (A cache-hot loop over one small weight says the opposite -- 6.7 vs 14 us for 256 x 256 -- and is
    not what decoding does.) Same values up to float rounding. Returns (M, OUT), in `out` when given.
    """
    M, OUT = x.shape[0], weight.shape[0]
    if M > 8 or OUT % 16 or x.device.type != "cpu" or not weight.is_contiguous():
        return torch.mm(x, weight.t(), out=out)
    y = torch.bmm(weight.view(16, OUT // 16, -1), x.t().expand(16, -1, M)).view(OUT, M).t()
    return y if out is None else out.copy_(y)


def project(layer: nn.Module, x: torch.Tensor, out: Optional[torch.Tensor] = None) -> torch.Tensor:
    """layer(x) for x (M, IN) on the inference path: `linear_rows` on the weight of a plain bias-free
    `nn.Linear`; any other module (a peft LoRA wrapper, a quantised linear) is called as it is, so its
    adaptation is never skipped by reading only the base `.weight`. Written into `out` when given."""
    if type(layer) is nn.Linear and layer.bias is None:
        return linear_rows(x, layer.weight, out=out)
    y = layer(x)
    return y if out is None else out.copy_(y)


def _use_inference_path(x: torch.Tensor) -> bool:
    """No autograd and no autocast: the modules may take their in-place inference paths."""
    return not torch.is_grad_enabled() and not torch.is_autocast_enabled(x.device.type)


def _last_valid(x: torch.Tensor, lengths: Optional[torch.Tensor], old: Optional[torch.Tensor]) -> torch.Tensor:
    """x (N, T, C) at position lengths-1 of each row; rows with length 0 keep `old` (or zeros)."""
    if lengths is None:
        return x[:, -1]
    idx = (lengths - 1).clamp(min=0)
    last = x[torch.arange(x.shape[0], device=x.device), idx]
    keep = old if old is not None else torch.zeros_like(last)
    return torch.where((lengths > 0).unsqueeze(-1), last, keep.to(last.dtype))


class RWKV7TimeMix(nn.Module):
    """Time-mix (attention replacement) of block `layer_id`, parameters `blocks.{i}.att.*`."""

    def __init__(self, config: RWKV7Config, layer_id: int):
        super().__init__()
        self.layer_id = layer_id
        self.n_head, self.head_size = config.n_head, config.head_size
        C = config.n_embd

        def vec() -> nn.Parameter:
            return nn.Parameter(torch.zeros(1, 1, C))

        def mat(rows: int, cols: int) -> nn.Parameter:
            return nn.Parameter(torch.zeros(rows, cols))

        self.x_r, self.x_w, self.x_k, self.x_v, self.x_a, self.x_g = (vec() for _ in range(6))
        self.w0, self.w1, self.w2 = vec(), mat(C, config.d_decay), mat(config.d_decay, C)
        self.a0, self.a1, self.a2 = vec(), mat(C, config.d_aaa), mat(config.d_aaa, C)
        if layer_id > 0:
            self.v0, self.v1, self.v2 = vec(), mat(C, config.d_mv), mat(config.d_mv, C)
        elif config.layer0_v_lora:  # present in some files, never used
            self.register_buffer("v0", torch.zeros(1, 1, C))
            self.register_buffer("v1", torch.zeros(C, config.d_mv))
            self.register_buffer("v2", torch.zeros(config.d_mv, C))
        self.g1, self.g2 = mat(C, config.d_gate), mat(config.d_gate, C)
        self.k_k, self.k_a = vec(), vec()
        self.r_k = nn.Parameter(torch.zeros(self.n_head, self.head_size))
        self.receptance = nn.Linear(C, C, bias=False)
        self.key = nn.Linear(C, C, bias=False)
        self.value = nn.Linear(C, C, bias=False)
        self.output = nn.Linear(C, C, bias=False)
        self.ln_x = nn.GroupNorm(self.n_head, C, eps=64e-5)
        self.register_parameter("time_state", None)  # (H, K, K) after RWKV7.enable_state_tuning()

    def forward(
        self,
        x: torch.Tensor,
        v_first: Optional[torch.Tensor],
        x_prev: Optional[torch.Tensor],
        wkv_state: Optional[torch.Tensor],
        valid: Optional[torch.Tensor] = None,
        ws: Optional[_Workspace] = None,
    ) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Time-mix over a block of positions.

        Args:
          x: (N, T, C), output of `ln1`.
          v_first: (N, T, C) value of layer 0 (ignored, and returned, for layer 0).
          x_prev: (N, C) the `ln1` output before position 0, or None (zeros).
          wkv_state: (N, H, K, K) float32 initial state, or None (zeros).
          valid: (N, T) bool, False at right-padding; padded positions become identity updates
            (log-decay 0, k = a = b = 0) so the state after the batch equals the state after each
            sequence's last real position.
        Returns:
          out (N, T, C), v_first (N, T, C), the final WKV state (N, H, K, K) float32.
        """
        if _use_inference_path(x):
            return self._forward_inference(x, v_first, x_prev, wkv_state, valid, ws=ws)
        N, T, C = x.shape
        H, K = self.n_head, self.head_size
        xx = _token_shift(x, x_prev) - x
        xr, xw, xk = torch.addcmul(x, xx, self.x_r), torch.addcmul(x, xx, self.x_w), torch.addcmul(x, xx, self.x_k)
        xv, xa, xg = torch.addcmul(x, xx, self.x_v), torch.addcmul(x, xx, self.x_a), torch.addcmul(x, xx, self.x_g)

        r = self.receptance(xr)
        w = self.w0 + torch.tanh(xw @ self.w1) @ self.w2
        k = self.key(xk)
        v = self.value(xv)
        a = torch.sigmoid(self.a0 + (xa @ self.a1) @ self.a2)
        g = torch.sigmoid(xg @ self.g1) @ self.g2

        kk = F.normalize((k * self.k_k).view(N, T, H, K), dim=-1, p=2.0, eps=1e-12)
        k = k * (1 + (a - 1) * self.k_a)
        if self.layer_id == 0:
            v_first = v
        else:
            v = v + (v_first - v) * torch.sigmoid(self.v0 + (xv @ self.v1) @ self.v2)
        w = -DECAY_SCALE * torch.sigmoid(w.to(_state_dtype(w.dtype)))  # log-decay, in fp32 (fp64)

        dt = r.dtype
        r_, w_, k_, v_ = (t.reshape(N, T, H, K).to(dt) for t in (r, w, k, v))
        a_, b_ = (-kk).to(dt), (kk * a.view(N, T, H, K)).to(dt)
        y, wkv_state = self._wkv(r_, w_, k_, v_, a_, b_, wkv_state, valid)

        y = self.ln_x(y.reshape(N * T, C)).view(N, T, C)
        bonus = (r_ * k_ * self.r_k).sum(dim=-1, keepdim=True) * v_  # (N, T, H, K)
        y = y + bonus.reshape(N, T, C)
        return self.output(y * g), v_first, wkv_state

    def _wkv(self, r_, w_, k_, v_, a_, b_, wkv_state, valid):
        """WKV7 over (N, T, H, K) inputs (w_ = log-decay) from `wkv_state` (N, H, K, K) fp32, or
        from `time_state` / zeros when None. Padded positions (valid False) become identity updates
        (w = 0, k = a = b = 0), so the carried state ignores them. Returns y (N, T, H, K) in r_'s
        dtype and the new state."""
        N, T, H, K = r_.shape
        dt = r_.dtype
        if valid is not None:
            m = valid.view(N, T, 1, 1)
            zero = torch.zeros((), dtype=dt, device=r_.device)
            w_, k_, a_, b_ = (torch.where(m, t, zero) for t in (w_, k_, a_, b_))
        if wkv_state is None and self.time_state is not None:
            wkv_state = self.time_state.to(_state_dtype(dt)).unsqueeze(0).expand(N, H, K, K)
        if T == 1:
            if wkv_state is None:
                wkv_state = r_.new_zeros(N, H, K, K, dtype=_state_dtype(dt))
            y, wkv_state = wkv7_one_step(wkv_state, *(t[:, 0] for t in (r_, w_, k_, v_, a_, b_)))
            return y.to(dt).unsqueeze(1), wkv_state
        return _wkv7_seq(r_, w_, k_, v_, a_, b_, wkv_state)

    def _forward_inference(
        self,
        x: torch.Tensor,
        v_first: Optional[torch.Tensor],
        x_prev: Optional[torch.Tensor],
        wkv_state: Optional[torch.Tensor],
        valid: Optional[torch.Tensor],
        positions: Optional[torch.Tensor] = None,
        ws: Optional[_Workspace] = None,
    ) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """`forward` without autograd (same arguments, results and math): fewer, in-place passes.

        The six token-shift lerps are one broadcast addcmul into a (6, N, T, C) buffer, the LoRA biases go
        into `addmm`, activations run in place, the value residual is one `lerp` and the bonus one
        `addcmul_` into the GroupNorm output; everything works on (N*T, C) rows.

        positions: (N, S) int64, or None. When given, the output is computed only at those positions of
        each row, (N, S, C) (the receptance, gate, GroupNorm, bonus and output projection only there; the
        WKV state still takes every position); v_first and the state are as without it.
        ws: scratch tensors shared with the other blocks (see `_Workspace`); the returned output is one
        of them (valid until the next block runs), v_first (layer 0) has a name of its own.
        """
        N, T, C = x.shape
        H, K = self.n_head, self.head_size
        NT = N * T

        def buf(name: str, *shape: int) -> torch.Tensor:
            return _buffer(ws, name, shape, x)

        xx = _shift_delta(x, x_prev, out=buf("xx", N, T, C))
        xs = buf("xs", 6, N, T, C)
        for i, mu in enumerate((self.x_r, self.x_w, self.x_k, self.x_v, self.x_a, self.x_g)):
            torch.addcmul(x, xx, mu, out=xs[i])  # 6 plain addcmuls: a broadcast one is ~3x slower on CPU
        xr, xw, xk, xv, xa, xg = xs.view(6, NT, C).unbind(0)

        if positions is None:
            r = project(self.receptance, xr, out=buf("r", NT, C))
        else:  # r only where outputs are wanted (the WKV state does not depend on r)
            rows = torch.arange(N, device=x.device).unsqueeze(1)
            r = buf("r", NT, C).zero_()
            x_at = xr.view(N, T, C)[rows, positions].reshape(-1, C)
            r.view(N, T, C)[rows, positions] = project(self.receptance, x_at).view(N, -1, C)
            xg = xg.view(N, T, C)[rows, positions].reshape(-1, C)
        k = project(self.key, xk, out=buf("k", NT, C))
        v = project(self.value, xv, out=buf("v_first" if self.layer_id == 0 else "v", NT, C))
        w = torch.addmm(self.w0.view(1, C), torch.tanh(xw @ self.w1), self.w2, out=buf("w", NT, C))
        a = torch.addmm(self.a0.view(1, C), xa @ self.a1, self.a2, out=buf("a", NT, C)).sigmoid_()
        g = torch.mm(torch.sigmoid_(xg @ self.g1), self.g2, out=buf("g", xg.shape[0], C))

        kk = torch.mul(k, self.k_k.view(1, C), out=buf("kk", NT, C)).view(NT, H, K)
        kk.div_(torch.linalg.vector_norm(kk, dim=-1, keepdim=True).clamp_min_(1e-12))  # = F.normalize
        # k * (1 + (a - 1) k_a)
        k.mul_(torch.addcmul(1 - self.k_a.view(1, C), a, self.k_a.view(1, C), out=buf("tmp", NT, C)))
        if self.layer_id == 0:
            v_first = v.view(N, T, C)
        else:
            gate = torch.addmm(self.v0.view(1, C), xv @ self.v1, self.v2, out=buf("tmp", NT, C)).sigmoid_()
            v.lerp_(v_first.reshape(NT, C), gate)
        sdt = _state_dtype(w.dtype)
        w = (w.to(sdt) if w.dtype != sdt else w).sigmoid_().mul_(-DECAY_SCALE)  # log-decay in fp32 (fp64)

        dt = r.dtype
        r_, w_, k_, v_ = (t.view(N, T, H, K) for t in (r, w.to(dt), k, v))
        # WKV7 with a = kk, b = -kk * a_in: the product a b^T is that of (-kk, kk * a_in) exactly
        # (sign flips are exact), one pass fewer
        a_ = kk.view(N, T, H, K)
        b_ = torch.addcmul(torch.zeros((), dtype=kk.dtype, device=kk.device), a_, a.view(N, T, H, K), value=-1.0,
                           out=buf("b", N, T, H, K))
        y, wkv_state = self._wkv(r_, w_, k_, v_, a_, b_, wkv_state, valid)

        if positions is not None:
            y, r_, k_, v_ = (t[rows, positions] for t in (y, r_, k_, v_))  # (N, S, H, K)
        S = y.shape[1]
        # GroupNorm(H groups) = a LayerNorm over each head's K channels, then the per-channel affine (the
        # native group_norm kernel is several times slower on (rows, C) inputs)
        y = F.layer_norm(y.reshape(N * S, H, K), (K,), eps=self.ln_x.eps).view(N * S, C)
        y = y.mul_(self.ln_x.weight).add_(self.ln_x.bias)
        rk = torch.mul(r_, k_).mul_(self.r_k).sum(dim=-1, keepdim=True)  # (N, S, H, 1)
        y.view(N, S, H, K).addcmul_(rk, v_)  # + bonus
        out = project(self.output, y.mul_(g), out=buf("att_out", N * S, C))
        return out.view(N, S, C), v_first, wkv_state


class RWKV7ChannelMix(nn.Module):
    """Channel-mix (squared-ReLU MLP, no receptance gate), parameters `blocks.{i}.ffn.*`."""

    def __init__(self, config: RWKV7Config):
        super().__init__()
        self.x_k = nn.Parameter(torch.zeros(1, 1, config.n_embd))
        self.key = nn.Linear(config.n_embd, config.dim_ffn, bias=False)
        self.value = nn.Linear(config.dim_ffn, config.n_embd, bias=False)

    def forward(self, x: torch.Tensor, x_prev: Optional[torch.Tensor], ws: Optional[_Workspace] = None) -> torch.Tensor:
        """x (N, T, C) output of `ln2`, x_prev (N, C) or None -> (N, T, C); ws: see `_Workspace` (the
        output is then one of its tensors)."""
        if _use_inference_path(x):  # same math, in-place passes
            N, T, C = x.shape
            xx = _shift_delta(x, x_prev, out=_buffer(ws, "ffn_xx", (N, T, C), x))
            kx = torch.addcmul(x, xx, self.x_k, out=xx).view(N * T, C)
            h = project(self.key, kx, out=_buffer(ws, "ffn_h", (N * T, self.key.weight.shape[0]), x))
            out = project(self.value, torch.relu_(h).square_(), out=_buffer(ws, "ffn_out", (N * T, C), x))
            return out.view(N, T, C)
        xx = _token_shift(x, x_prev) - x
        h = torch.relu(self.key(torch.addcmul(x, xx, self.x_k))) ** 2
        return self.value(h)


class RWKV7Block(nn.Module):
    """`blocks.{i}`: (ln0 in block 0) -> x + att(ln1 x) -> x + ffn(ln2 x)."""

    def __init__(self, config: RWKV7Config, layer_id: int):
        super().__init__()
        C = config.n_embd
        if layer_id == 0:
            self.ln0 = nn.LayerNorm(C)
        self.ln1 = nn.LayerNorm(C)
        self.ln2 = nn.LayerNorm(C)
        self.att = RWKV7TimeMix(config, layer_id)
        self.ffn = RWKV7ChannelMix(config)

    def forward(
        self,
        x: torch.Tensor,
        v_first: Optional[torch.Tensor],
        state: Optional[LayerState],
        valid: Optional[torch.Tensor],
        lengths: Optional[torch.Tensor],
        ws: Optional[_Workspace] = None,
    ) -> Tuple[torch.Tensor, torch.Tensor, LayerState]:
        """x (N, T, C) -> (x (N, T, C), v_first (N, T, C), this layer's new state).

        ws (inference only, see `_Workspace`): scratch tensors shared by the blocks; x must then be the
        block's own tensor (the previous block's output): the residual additions run in place.
        """
        att_prev, wkv_state, ffn_prev = state if state is not None else (None, None, None)
        if hasattr(self, "ln0"):
            x = self.ln0(x)
        h = self.ln1(x)
        out, v_first, wkv_state = self.att(h, v_first, att_prev, wkv_state, valid, ws=ws)
        att_prev = _last_valid(h, lengths, att_prev)
        x = x + out if ws is None else x.add_(out)
        h = self.ln2(x)
        out = self.ffn(h, ffn_prev, ws=ws)
        x = x + out if ws is None else x.add_(out)
        ffn_prev = _last_valid(h, lengths, ffn_prev)
        return x, v_first, (att_prev, wkv_state, ffn_prev)

    def forward_last(
        self,
        x: torch.Tensor,
        v_first: Optional[torch.Tensor],
        state: Optional[LayerState],
        lengths: Optional[torch.Tensor],
        valid: Optional[torch.Tensor],
        ws: Optional[_Workspace] = None,
    ) -> Tuple[torch.Tensor, LayerState]:
        """`forward` (inference only) with the block output wanted only at each row's last valid position.

        The time-mix output is computed at that position and the one before (the channel mix's token
        shift needs it), the channel mix at that position only; the WKV state takes every position.
        Returns the residual stream at position lengths - 1 (T - 1 without lengths), (N, C) (rows of
        length 0: the value at position 0, meaningless), and this layer's new state.
        """
        att_prev, wkv_state, ffn_prev = state if state is not None else (None, None, None)
        if hasattr(self, "ln0"):
            x = self.ln0(x)
        N, T, C = x.shape
        h = self.ln1(x)
        if lengths is None:
            last = torch.full((N,), T - 1, dtype=torch.long, device=x.device)
        else:
            last = (lengths - 1).clamp(min=0)
        pos = torch.stack([(last - 1).clamp(min=0), last], dim=1)  # (N, 2)
        out, _, wkv_state = self.att._forward_inference(h, v_first, att_prev, wkv_state, valid, positions=pos, ws=ws)
        rows = torch.arange(N, device=x.device).unsqueeze(1)
        x2 = x[rows, pos] + out  # (N, 2, C)
        h2 = self.ln2(x2)
        before = ffn_prev.to(h2.dtype) if ffn_prev is not None else torch.zeros_like(h2[:, 0])
        shift = torch.where((last > 0).unsqueeze(-1), h2[:, 0], before)  # ln2 output before the last position
        x_last = x2[:, 1] + self.ffn(h2[:, 1:], shift, ws=ws)[:, 0]
        att_prev = _last_valid(h, lengths, att_prev)
        if lengths is None:
            ffn_prev = h2[:, 1]
        else:
            keep = ffn_prev.to(h2.dtype) if ffn_prev is not None else torch.zeros_like(h2[:, 1])
            ffn_prev = torch.where((lengths > 0).unsqueeze(-1), h2[:, 1], keep)
        return x_last, (att_prev, wkv_state, ffn_prev)


class RWKV7(nn.Module):
    """RWKV-7 language model: `emb`, `blocks.{i}`, `ln_out`, `head` (untied), BlinkDL names.

    Parameters are created in float32 and initialised like BlinkDL's `train_temp` (skipped on the meta
    device, where `load.py` builds the model before assigning a checkpoint's tensors).

    Args:
      config: the model's shape.
    """

    def __init__(self, config: RWKV7Config):
        super().__init__()
        self.config = config
        self.emb = nn.Embedding(config.vocab_size, config.n_embd)
        self.blocks = nn.ModuleList(RWKV7Block(config, i) for i in range(config.n_layer))
        self.ln_out = nn.LayerNorm(config.n_embd)
        self.head = nn.Linear(config.n_embd, config.vocab_size, bias=False)
        self.grad_checkpoint = False  # torch.utils.checkpoint per block in training when True
        if not self.emb.weight.is_meta:
            self.init_weights()

    # ------------------------------------------------------------------ initialisation
    @torch.no_grad()
    def init_weights(self) -> None:
        """From-scratch initialisation of BlinkDL's `RWKV-v7/train_temp/src/model.py`, in place."""
        cfg = self.config
        L, C, V, K = cfg.n_layer, cfg.n_embd, cfg.vocab_size, cfg.head_size
        n = torch.arange(C, dtype=torch.float64)
        ddd = n / C
        linear = n / (C - 1) - 0.5
        z = ((n % K) - (K - 1) / 2) / ((K - 1) / 2)
        zigzag = z * z.abs()

        def vec(t: torch.Tensor) -> torch.Tensor:
            return t.view(1, 1, C)

        def ortho(p: torch.Tensor, gain: float) -> None:
            # QR in float64 on a CPU copy, then copied into p (any device/dtype)
            tmp = torch.empty(p.shape, dtype=torch.float64)
            nn.init.orthogonal_(tmp, gain=gain)
            p.copy_(tmp)

        def lora_gain(p: torch.Tensor) -> float:
            rows, cols = p.shape
            return 0.1 * (math.sqrt(rows / cols) if rows > cols else 1.0)

        nn.init.uniform_(self.emb.weight, -1e-4, 1e-4)
        ortho(self.head.weight, 0.5 * (math.sqrt(V / C) if V > C else 1.0))
        norms = [m for b in self.blocks for m in (getattr(b, "ln0", None), b.ln1, b.ln2) if m is not None]
        for ln in [self.ln_out] + norms:
            ln.weight.fill_(1.0)
            ln.bias.zero_()
        for layer, block in enumerate(self.blocks):
            att, ffn = block.att, block.ffn
            r01 = layer / max(L - 1, 1)
            r10 = 1.0 - layer / L
            for name, p in (("x_r", 0.2), ("x_w", 0.9), ("x_k", 0.7), ("x_v", 0.7), ("x_a", 0.9), ("x_g", 0.2)):
                getattr(att, name).copy_(vec(1.0 - ddd ** (p * r10)))
            ffn.x_k.copy_(vec(1.0 - ddd ** (r10**4)))
            www = -6 + 6 * (n / (C - 1)) ** (1 + r01**0.3)
            att.w0.copy_(vec(www + 0.5 + 2.5 * zigzag))
            att.a0.copy_(vec(-0.19 + 0.3 * zigzag + 0.4 * linear))
            if isinstance(getattr(att, "v0", None), nn.Parameter):
                att.v0.copy_(vec(0.73 - 0.4 * linear))
            att.k_k.copy_(vec(0.71 - 0.1 * linear))
            att.k_a.fill_(1.02)
            att.r_k.fill_(-0.04)
            for first, second in (("w1", "w2"), ("a1", "a2"), ("v1", "v2"), ("g1", "g2")):
                p1, p2 = getattr(att, first, None), getattr(att, second, None)
                if isinstance(p1, nn.Parameter):
                    p1.zero_()
                    ortho(p2, lora_gain(p2))
            ortho(att.receptance.weight, 1.0)
            ortho(att.key.weight, 0.1)
            ortho(att.value.weight, 1.0)
            att.output.weight.zero_()
            att.ln_x.weight.fill_(((layer + 1) / L) ** 0.7)
            att.ln_x.bias.zero_()
            ortho(ffn.key.weight, 1.0)
            ffn.value.weight.zero_()
            if att.time_state is not None:
                att.time_state.zero_()

    # ------------------------------------------------------------------ state tuning
    def enable_state_tuning(self) -> List[nn.Parameter]:
        """Add a trainable initial WKV state `blocks.{i}.att.time_state` (H, K, K) per layer (zeros).

        The name and the BlinkDL [value, key] layout are those of RWKV-PEFT (JL-er/RWKV-PEFT), so a
        merged `.pth` holding `time_state` keys loads back here. When `forward` gets no explicit
        `state`, every sequence starts from these states (token-shift states still start at zero).
        Idempotent.

        Returns:
          the per-layer `time_state` parameters (e.g. to give to the optimizer).
        """
        out = []
        for block in self.blocks:
            att = block.att
            if att.time_state is None:
                ref = att.r_k
                att.time_state = nn.Parameter(
                    torch.zeros(att.n_head, att.head_size, att.head_size, device=ref.device, dtype=ref.dtype)
                )
            out.append(att.time_state)
        return out

    # ------------------------------------------------------------------ parallel forward
    def forward_features(
        self,
        idx: Optional[torch.Tensor] = None,
        *,
        inputs_embeds: Optional[torch.Tensor] = None,
        lengths: Optional[torch.Tensor] = None,
        state: Optional[State] = None,
        last_only: bool = False,
    ) -> Tuple[torch.Tensor, State]:
        """Hidden states after `ln_out` (before `head`) and the state after each sequence's last position.

        Args:
          idx: (N, T) int64 token ids, or None.
          inputs_embeds: (N, T, C) float embeddings instead of ids (e.g. adapter outputs concatenated
            with `self.emb(ids)`); `blocks.0.ln0` is applied to them like to token embeddings.
          lengths: (N,) int64 valid positions per row for right-padded batches, or None (all valid).
            Padding never affects real positions nor the returned state.
          state: per-layer `(att_x_prev (N, C), wkv_state (N, H, K, K) fp32, ffn_x_prev (N, C))` to
            continue from, or None (zeros, or the `time_state`s after `enable_state_tuning`).
          last_only: return only each row's hidden state at its last valid position (lengths - 1, or
            T - 1), (N, C): prefill. Without autograd the last block then computes its output projection
            and channel mix at those positions only (the state is unchanged by this).
        Returns:
          hidden (N, T, C) (or (N, C) with last_only) and the new state (same structure as `state`).
        Raises:
          ValueError: on missing/both inputs or mismatched shapes.
        """
        x = self._embed(idx, inputs_embeds)
        N, T, _ = x.shape
        valid = None
        if lengths is not None:
            if lengths.shape != (N,):
                raise ValueError(f"lengths must have shape ({N},), got {tuple(lengths.shape)}")
            lengths = lengths.to(x.device)
            if int(lengths.max()) > T or int(lengths.min()) < 0:
                raise ValueError(f"lengths must lie in [0, {T}], got {lengths.tolist()}")
            valid = torch.arange(T, device=x.device).unsqueeze(0) < lengths.unsqueeze(1)
        if state is not None and len(state) != len(self.blocks):
            raise ValueError(f"state has {len(state)} layers, the model has {len(self.blocks)}")
        v_first = None
        new_state: State = []
        ws = _Workspace() if _use_inference_path(x) else None
        for i, block in enumerate(self.blocks):
            layer_state = state[i] if state is not None else None
            if last_only and i == len(self.blocks) - 1 and ws is not None:
                x, s = block.forward_last(x, v_first, layer_state, lengths, valid, ws=ws)
                new_state.append(s)
                return self.ln_out(x), new_state
            if self.grad_checkpoint and self.training and torch.is_grad_enabled():
                x, v_first, s = torch.utils.checkpoint.checkpoint(
                    block, x, v_first, layer_state, valid, lengths, use_reentrant=False
                )
            else:
                x, v_first, s = block(x, v_first, layer_state, valid, lengths, ws=ws)
            new_state.append(s)
        if last_only:
            last = (lengths - 1).clamp(min=0) if lengths is not None else torch.full((N,), T - 1, device=x.device)
            x = x[torch.arange(N, device=x.device), last]
        return self.ln_out(x), new_state

    def forward(
        self,
        idx: Optional[torch.Tensor] = None,
        *,
        inputs_embeds: Optional[torch.Tensor] = None,
        lengths: Optional[torch.Tensor] = None,
        state: Optional[State] = None,
        return_state: bool = False,
    ):
        """Logits for every position; arguments as `forward_features`.

        Returns:
          logits (N, T, V), or `(logits, new_state)` when `return_state` is True.
        """
        hidden, new_state = self.forward_features(idx, inputs_embeds=inputs_embeds, lengths=lengths, state=state)
        logits = self.logits(hidden)
        return (logits, new_state) if return_state else logits

    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """`head` on hidden states (..., C) from `forward_features` -> (..., V). Without autograd it goes
        through `project` (few-row decoding steps read the head faster, see `linear_rows`)."""
        if not _use_inference_path(hidden):
            return self.head(hidden)
        return project(self.head, hidden.reshape(-1, hidden.shape[-1])).view(*hidden.shape[:-1], -1)

    def _embed(self, idx: Optional[torch.Tensor], inputs_embeds: Optional[torch.Tensor]) -> torch.Tensor:
        if (idx is None) == (inputs_embeds is None):
            raise ValueError("pass exactly one of idx (N, T) and inputs_embeds (N, T, C)")
        if idx is not None:
            if idx.ndim != 2:
                raise ValueError(f"idx must be (N, T) token ids, got shape {tuple(idx.shape)}")
            return self.emb(idx)
        if inputs_embeds.ndim != 3 or inputs_embeds.shape[-1] != self.config.n_embd:
            raise ValueError(
                f"inputs_embeds must be (N, T, {self.config.n_embd}), got shape {tuple(inputs_embeds.shape)}"
            )
        return inputs_embeds

    # ------------------------------------------------------------------ recurrent mode
    def init_state(self, batch_size: int, device: Optional[torch.device] = None) -> State:
        """Initial recurrent state for `batch_size` sequences.

        Token-shift states are zeros in the parameters' dtype; WKV states are float32 zeros, or the
        `time_state`s when state tuning is enabled (float64 for a float64 model).
        """
        p = self.ln_out.weight
        sdt = _state_dtype(p.dtype)
        device = p.device if device is None else device
        C, H, K = self.config.n_embd, self.config.n_head, self.config.head_size
        state = []
        for block in self.blocks:
            ts = block.att.time_state
            if ts is None:
                wkv = torch.zeros(batch_size, H, K, K, device=device, dtype=sdt)
            else:
                wkv = ts.detach().to(device=device, dtype=sdt).unsqueeze(0).repeat(batch_size, 1, 1, 1)
            zeros = torch.zeros(batch_size, C, device=device, dtype=p.dtype)
            state.append((zeros, wkv, zeros.clone()))
        return state

    def step(self, x: torch.Tensor, state: Optional[State] = None) -> Tuple[torch.Tensor, State]:
        """Advance every sequence of a batch by one position (O(1) per token).

        Args:
          x: (N,) int64 token ids or (N, C) float embeddings.
          state: from `init_state`, `step` or `forward(..., return_state=True)`; None = `init_state(N)`.
        Returns:
          logits (N, V) and the new state (the input state is not modified).
        """
        if x.ndim == 1:
            inputs = dict(idx=x.unsqueeze(1))
        elif x.ndim == 2:
            inputs = dict(inputs_embeds=x.unsqueeze(1))
        else:
            raise ValueError(f"step takes (N,) ids or (N, C) embeddings, got shape {tuple(x.shape)}")
        if state is None:
            state = self.init_state(x.shape[0], device=x.device)
        logits, state = self.forward(**inputs, state=state, return_state=True)
        return logits[:, 0], state

    @staticmethod
    def reorder_state(state: State, index: torch.Tensor) -> State:
        """Select/reorder the batch rows of every state tensor (beam search): `t.index_select(0, index)`."""
        return [tuple(t.index_select(0, index) for t in layer) for layer in state]
