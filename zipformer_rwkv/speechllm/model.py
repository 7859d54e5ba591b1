"""The three model types that share one training loop (`--model-type ctc|lm|llm`).

* `CtcModel`  : Zipformer2 encoder + CTC head (encoder pre-training; icefall names `encoder_embed`,
                `encoder`, `ctc_output` live inside `encoder`/`ctc_output`).
* `LmModel`   : RWKV-7 on text tokens (LM pre-training).
* `SpeechLLM` : encoder -> `Adapter` -> RWKV-7, prompted as in `prompt.py`; loss = cross-entropy on
                the transcript and EOS only, plus an optional auxiliary CTC loss on the encoder; its
                structure beyond the encoder and RWKV-7 is a `SpeechLLMConfig`, its search a
                `search.DecodingOptions`.

Every `forward` returns `(loss, stats)`: `loss` is the per-unit mean used for backward and `stats`
holds float sums for logging, with `stats["frames"]` the number of units (encoder frames for CTC,
predicted tokens for the LM and the speech LLM) as in icefall's `MetricsTracker`.

Frozen parts (`freeze(...)`) get `requires_grad=False` and stay in eval mode: `train()` is overridden
so a `model.train()` after validation never wakes a frozen encoder's dropout (in zhu-han/SpeechLLM's
Zipformer+Qwen2 recipe, `src/train.py` calls `model.train()` after validation and so puts its frozen
encoder back into training mode).
"""
from dataclasses import asdict, dataclass, field, fields
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F

from zipformer_rwkv.decoding.ctc_prefix_score import CtcPrefixScorer
from zipformer_rwkv.decoding.search import DecodingOptions, Hypothesis, search
from zipformer_rwkv.speechllm.adapter import Adapter, CtcTokenAdapter
from zipformer_rwkv.speechllm.interleave import audio_chunks, generate_interleaved, position_frames, text_chunks
from zipformer_rwkv.speechllm.prompt import IGNORE_ID, PromptTemplate, assemble, assemble_interleaved
from zipformer_rwkv.zipformer.ctc import ctc_greedy_search, ctc_loss, make_ctc_output

Stats = Dict[str, float]


class FreezableModule(nn.Module):
    """An `nn.Module` whose frozen children stay in eval mode whatever `train()` is called with."""

    def __init__(self):
        super().__init__()
        self.frozen_modules: List[str] = []

    def freeze(self, name: str) -> None:
        """Freeze child `name`: no gradients, eval mode for the rest of the run."""
        module = getattr(self, name)
        for p in module.parameters():
            p.requires_grad_(False)
        if name not in self.frozen_modules:
            self.frozen_modules.append(name)
        module.eval()

    def train(self, mode: bool = True):
        super().train(mode)
        for name in self.frozen_modules:
            getattr(self, name).eval()
        return self


class CtcModel(FreezableModule):
    """Encoder + CTC head.

    Args:
      encoder: module with `forward(x (N, T, 80), x_lens (N,)) -> (out (N, T', C), out_lens (N,))`
        and attribute `encoder_out_dim` (C).
      vocab_size: CTC output size (BPE vocabulary, blank = 0).
    """

    def __init__(self, encoder: nn.Module, vocab_size: int):
        super().__init__()
        self.encoder = encoder
        self.ctc_output = make_ctc_output(encoder.encoder_out_dim, vocab_size)

    min_encoder_frames = 1  # encoder frames an utterance needs to be decoded

    def forward(
        self, feats: torch.Tensor, feat_lens: torch.Tensor, targets: List[List[int]]
    ) -> Tuple[torch.Tensor, Stats]:
        """feats (N, T, 80) fbank at 100 Hz, feat_lens (N,), targets: BPE ids per utterance."""
        enc, enc_lens = self.encoder(feats, feat_lens)
        loss_sum = ctc_loss(self.ctc_output(enc), enc_lens, targets, zero_infinity=True)
        frames = float(enc_lens.sum())
        return loss_sum / frames, {"frames": frames, "loss": loss_sum.item(), "ctc_loss": loss_sum.item()}

    @torch.no_grad()
    def decode(self, feats: torch.Tensor, feat_lens: torch.Tensor) -> List[List[int]]:
        """CTC greedy search; returns BPE ids per utterance."""
        enc, enc_lens = self.encoder(feats, feat_lens)
        return ctc_greedy_search(self.ctc_output(enc), enc_lens)


def _token_ce(
    logits: torch.Tensor, targets: torch.Tensor
) -> Tuple[torch.Tensor, float, float]:
    """Summed cross-entropy over positions whose target is not IGNORE_ID.

    logits (N, T, V), targets (N, T) -> (loss_sum, number of targets, number of correct argmaxes).
    """
    mask = targets != IGNORE_ID
    sel_logits = logits[mask].float()
    sel_targets = targets[mask]
    loss = F.cross_entropy(sel_logits, sel_targets, reduction="sum")
    correct = float((sel_logits.argmax(-1) == sel_targets).sum())
    return loss, float(mask.sum()), correct


class LmModel(FreezableModule):
    """RWKV-7 language model on text: reads `[EOS] + tokens`, predicts `tokens + [EOS]`.

    Args:
      llm: an `RWKV7`.
      eos_id: the tokenizer's EOS (also used as BOS).
    """

    def __init__(self, llm: nn.Module, eos_id: int):
        super().__init__()
        self.llm = llm
        self.eos_id = eos_id

    def forward(self, tokens: torch.Tensor, lengths: torch.Tensor) -> Tuple[torch.Tensor, Stats]:
        """tokens (N, L) int64 right-padded, lengths (N,) -> (mean CE per token, stats)."""
        n = tokens.size(0)
        bos = torch.full((n, 1), self.eos_id, dtype=tokens.dtype, device=tokens.device)
        inputs = torch.cat([bos, tokens], dim=1)
        targets = torch.cat([tokens, torch.full_like(bos, IGNORE_ID)], dim=1)
        pos = torch.arange(targets.size(1), device=tokens.device).unsqueeze(0)
        targets = torch.where(pos < lengths.unsqueeze(1), targets, IGNORE_ID)
        targets[torch.arange(n), lengths] = self.eos_id
        logits = self.llm(inputs, lengths=lengths + 1)
        loss, ntok, correct = _token_ce(logits, targets)
        return loss / ntok, {"frames": ntok, "loss": loss.item(), "correct": correct}


ADAPTER_TYPES = ("stack", "ctc")


@dataclass(frozen=True)
class SpeechLLMConfig:
    """Structure of a `SpeechLLM` around its encoder and RWKV-7: the adapter, the optional CTC head's
    loss, chunk interleaving and the prompt. Each field is the training option `--field-name`, its
    help the field's metadata (`recipe.add_model_arguments` adds them with
    `utils.add_dataclass_arguments`), saved flat in every checkpoint under the field's name.

    Raises:
      ValueError: an unknown adapter_type, adapter_downsample < 1, adapter_hidden_dim < -1,
        interleave_chunk_frames < 0 or ctc_loss_scale < 0.
    """

    adapter_type: str = field(default="stack", metadata=dict(choices=ADAPTER_TYPES, help=(
        "llm: stack = frame stacking + MLP projector (`Adapter`); ctc = the CTC head predicts RWKV-7's vocabulary, "
        "blank frames are dropped, label runs merged, and each position is the posterior-weighted sum of RWKV-7's "
        "embeddings (`CtcTokenAdapter`; needs --tokenizer bpe)")))
    adapter_downsample: int = field(default=4, metadata=dict(
        help="stack: encoder frames (25 Hz) stacked per RWKV-7 position (4: 6.25 Hz)"))
    adapter_hidden_dim: int = field(default=-1, metadata=dict(
        help="stack: hidden width of the adapter MLP; -1: the RWKV-7 width (n_embd); 0: a single Linear"))
    adapter_blank_threshold: float = field(default=0.95, metadata=dict(
        help="ctc: frames whose blank posterior is >= this are dropped"))
    adapter_encoder_proj: bool = field(default=False, metadata=dict(
        help="ctc: add a (zero-initialised) projection of the encoder state to each position"))
    interleave_chunk_frames: int = field(default=0, metadata=dict(help=(
        "llm: > 0: RWKV-7 reads each chunk of this many encoder frames (25 Hz: 16 = 0.64 s) and writes its text "
        "before the next (SpeechLLM-XL; `interleave.py`); the text is split by the CTC head's forced alignment, so "
        "it needs --tokenizer bpe and a CTC head; 0: whole utterance, then text")))
    ctc_loss_scale: float = field(default=0.0, metadata=dict(
        help="llm: weight of an auxiliary CTC loss (per encoder frame) on the encoder (0 disables it)"))
    prompt_template: str = field(default="", metadata=dict(help=(
        "speech LLM prompt with one <audio> marker (<eos> = EOS id); default 'User: <audio>\\n\\nAssistant:' "
        "(world) or '<audio><eos>' (bpe); `recipe.get_model` turns it into the `PromptTemplate`")))

    def __post_init__(self):
        if self.adapter_type not in ADAPTER_TYPES:
            raise ValueError(f"--adapter-type must be stack or ctc, got {self.adapter_type!r}")
        if self.adapter_downsample < 1:
            raise ValueError(f"--adapter-downsample must be >= 1, got {self.adapter_downsample}")
        if self.adapter_hidden_dim < -1:
            raise ValueError(f"--adapter-hidden-dim must be -1 (RWKV-7's width), 0 or a width, "
                             f"got {self.adapter_hidden_dim}")
        if self.interleave_chunk_frames < 0:
            raise ValueError(f"--interleave-chunk-frames must be >= 0, got {self.interleave_chunk_frames}")
        if self.ctc_loss_scale < 0:
            raise ValueError(f"--ctc-loss-scale must be >= 0, got {self.ctc_loss_scale}")

    @property
    def uses_ctc_head(self) -> bool:
        """True when the model keeps a CTC head: an auxiliary CTC loss, the ctc adapter, or chunk
        interleaving (its forced alignment)."""
        return self.ctc_loss_scale > 0 or self.adapter_type == "ctc" or self.interleave_chunk_frames > 0

    @property
    def min_encoder_frames(self) -> int:
        """Encoder frames an utterance needs to give RWKV-7 any input (stack: one adapter position)."""
        return self.adapter_downsample if self.adapter_type == "stack" else 1

    @classmethod
    def from_params(cls, params: Mapping[str, Any]) -> "SpeechLLMConfig":
        """The config of flat options (parsed arguments as an AttributeDict, or a checkpoint's
        options); an option absent (a checkpoint older than the option) takes the field's default.

        Raises:
          ValueError: as the constructor.
        """
        return cls(**{f.name: params[f.name] for f in fields(cls) if params.get(f.name) is not None})

    def to_params(self) -> Dict[str, Any]:
        """The flat options (field name -> value), as checkpoints store them."""
        return asdict(self)


class SpeechLLM(FreezableModule):
    """Encoder -> adapter -> RWKV-7 writing the transcript.

    Args:
      encoder: as for `CtcModel`.
      llm: an `RWKV7` (possibly with LoRA layers / `time_state`s added).
      template: prompt template (token ids around the audio, EOS).
      config: adapter, CTC loss, interleaving (`SpeechLLMConfig`; its `prompt_template` is not read
        here: `template` is the prompt).
      ctc_vocab_size: if > 0, add a CTC head (trained with `config.ctc_loss_scale`).
    Raises:
      TypeError: config is not a SpeechLLMConfig.
      ValueError: "ctc" adapter or interleaving without a CTC head over RWKV-7's vocabulary;
        interleaving with a template that has no infix.
    """

    def __init__(
        self,
        encoder: nn.Module,
        llm: nn.Module,
        template: PromptTemplate,
        config: SpeechLLMConfig = SpeechLLMConfig(),
        ctc_vocab_size: int = 0,
    ):
        super().__init__()
        if not isinstance(config, SpeechLLMConfig):
            raise TypeError(f"config must be a SpeechLLMConfig, got {type(config).__name__}")
        self.encoder = encoder
        self.llm = llm
        self.config = config
        width, enc_dim = llm.config.n_embd, encoder.encoder_out_dim
        if config.adapter_type == "stack":
            hidden = width if config.adapter_hidden_dim < 0 else config.adapter_hidden_dim
            self.adapter = Adapter(enc_dim, width, config.adapter_downsample, hidden)
        else:
            if ctc_vocab_size != llm.config.vocab_size:
                raise ValueError(f"--adapter-type ctc needs a CTC head over RWKV-7's vocabulary "
                                 f"({llm.config.vocab_size}), got {ctc_vocab_size} CTC outputs")
            self.adapter = CtcTokenAdapter(enc_dim, width, config.adapter_blank_threshold, config.adapter_encoder_proj,
                                           chunk_frames=config.interleave_chunk_frames)
        self.adapter_type = config.adapter_type
        self.ctc_output = make_ctc_output(enc_dim, ctc_vocab_size) if ctc_vocab_size > 0 else None
        self.ctc_loss_scale = config.ctc_loss_scale
        self.template = template
        self.interleave_chunk_frames = config.interleave_chunk_frames
        self.min_encoder_frames = config.min_encoder_frames
        if config.interleave_chunk_frames > 0:
            if ctc_vocab_size != llm.config.vocab_size:
                raise ValueError(f"--interleave-chunk-frames needs a CTC head over RWKV-7's vocabulary "
                                 f"({llm.config.vocab_size}) to align the text, got {ctc_vocab_size} CTC outputs")
            if not template.infix:
                raise ValueError("--interleave-chunk-frames needs a prompt template with tokens after <audio>")

    def encode(
        self, feats: torch.Tensor, feat_lens: torch.Tensor
    ) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, Optional[torch.Tensor]]:
        """feats (N, T, 80) fbank, feat_lens (N,) -> audio embeddings (N, A, C_llm), audio_lens (N,),
        encoder output (N, T', C) and its lengths (N,), and the CTC head's log-posteriors (N, T', V)
        (None without a head)."""
        with torch.set_grad_enabled(torch.is_grad_enabled() and "encoder" not in self.frozen_modules):
            enc, enc_lens = self.encoder(feats, feat_lens)
        audio, audio_lens, ctc_log_probs = self.adapt(enc, enc_lens)
        return audio, audio_lens, enc, enc_lens, ctc_log_probs

    def adapt(self, enc: torch.Tensor, enc_lens: torch.Tensor
              ) -> Tuple[torch.Tensor, torch.Tensor, Optional[torch.Tensor]]:
        """Encoder output (N, T', C) at 25 Hz, enc_lens (N,) -> audio embeddings (N, A, C_llm),
        audio_lens (N,) and the CTC head's log-posteriors (N, T', V) (None without a head): the CTC
        head, then the adapter (the ctc adapter reads the posteriors and RWKV-7's embeddings).
        `encode` and the streaming decoder (one chunk of frames at a time) share it."""
        ctc_log_probs = self.ctc_output(enc) if self.ctc_output is not None else None
        if self.adapter_type == "ctc":
            audio, audio_lens = self.adapter(enc, enc_lens, ctc_log_probs, self.llm.emb.weight)
        else:
            audio, audio_lens = self.adapter(enc, enc_lens)
        return audio, audio_lens, ctc_log_probs

    def forward(
        self,
        feats: torch.Tensor,
        feat_lens: torch.Tensor,
        texts: List[List[int]],
        ctc_targets: Optional[List[List[int]]] = None,
    ) -> Tuple[torch.Tensor, Stats]:
        """
        Args:
          feats: (N, T, 80) fbank at 100 Hz; feat_lens (N,) frames.
          texts: transcript token ids per utterance (LLM tokenizer, without EOS).
          ctc_targets: BPE ids per utterance for the auxiliary CTC loss (when it is enabled).
        Returns:
          loss = CE per predicted token (+ ctc_loss_scale * CTC per encoder frame), and stats.
        """
        audio, audio_lens, enc, enc_lens, ctc_log_probs = self.encode(feats, feat_lens)
        if self.interleave_chunk_frames > 0:
            audio_chunk, num_chunks = self._audio_chunks(audio, audio_lens, enc_lens, ctc_log_probs)
            t_chunks = text_chunks(ctc_log_probs, enc_lens, texts, num_chunks, self.interleave_chunk_frames)
            embeds, lengths, targets = assemble_interleaved(audio, audio_chunk, num_chunks, self.template,
                                                            self.llm.emb, texts, t_chunks)
        else:
            embeds, lengths, targets = assemble(audio, audio_lens, self.template, self.llm.emb, texts)
        logits = self.llm(inputs_embeds=embeds, lengths=lengths)
        ce, ntok, correct = _token_ce(logits, targets)
        loss = ce / ntok
        stats = {"frames": ntok, "ce_loss": ce.item(), "correct": correct}
        if self.ctc_output is not None and self.ctc_loss_scale > 0:
            if ctc_targets is None:
                raise ValueError("ctc_loss_scale > 0 but no CTC targets were given")
            ctc = ctc_loss(ctc_log_probs, enc_lens, ctc_targets, zero_infinity=True)
            loss = loss + self.ctc_loss_scale * ctc / float(enc_lens.sum())
            stats["ctc_loss"] = ctc.item() * ntok / float(enc_lens.sum())
        stats["loss"] = loss.item() * ntok
        return loss, stats

    def _audio_chunks(self, audio, audio_lens, enc_lens, ctc_log_probs):
        """(audio_chunk (N, A), num_chunks (N,)) of the adapter positions (`interleave.audio_chunks`)."""
        c = self.config
        frames = position_frames(audio_lens, audio.size(1), enc_lens, ctc_log_probs, c.adapter_type,
                                 c.adapter_downsample, c.adapter_blank_threshold, self.interleave_chunk_frames)
        return audio_chunks(frames, enc_lens, self.interleave_chunk_frames)

    @torch.no_grad()
    def prefill(self, audio: torch.Tensor, audio_lens: torch.Tensor) -> Tuple[torch.Tensor, list]:
        """Run prompt + audio embeddings through RWKV-7 in one parallel pass.

        Args:
          audio: (N, A, C_llm) adapter outputs from `encode`; audio_lens: (N,) valid positions.
        Returns:
          logits (N, V) for the first transcript token, and the recurrent state after each row's prompt.
        """
        embeds, lengths, _ = assemble(audio, audio_lens, self.template, self.llm.emb)
        last, state = self.llm.forward_features(inputs_embeds=embeds, lengths=lengths, last_only=True)
        return self.llm.logits(last), state

    @torch.no_grad()
    def generate(
        self, feats: torch.Tensor, feat_lens: torch.Tensor, options: DecodingOptions = DecodingOptions()
    ) -> List[Hypothesis]:
        """Prefill once, then decode token by token from the recurrent state (batched).

        Args:
          feats: (N, T, 80) fbank at 100 Hz; feat_lens: (N,) valid frames.
          options: the search (`DecodingOptions`, already validated). `ctc_weight` > 0: joint CTC /
            RWKV-7 search (`search.beam_search`) with the CTC head's prefix scores (needs the head, and
            the LLM vocabulary = the CTC vocabulary); greedy_search is then the joint search with a
            beam of 1. With chunk interleaving, all of it runs chunk by chunk
            (`interleave.generate_interleaved`).
        Returns:
          one `Hypothesis` per utterance (token ids of the LLM tokenizer, EOS removed).
        Raises:
          TypeError: options is not a DecodingOptions.
          ValueError: ctc_weight > 0 without a usable CTC head.
        """
        if not isinstance(options, DecodingOptions):
            raise TypeError(f"options must be a DecodingOptions, got {type(options).__name__}")
        method, beam_size, max_new_tokens = options.decoding_method, options.beam_size, options.max_new_tokens
        ctc_weight = options.ctc_weight
        audio, audio_lens, enc, enc_lens, ctc_log_probs = self.encode(feats, feat_lens)
        step, reorder, eos = self.llm.step, self.llm.reorder_state, self.template.eos_id
        ctc = None
        if ctc_weight != 0:
            if self.ctc_output is None:
                raise ValueError("--ctc-weight needs a speech LLM with a CTC head: train it with "
                                 "--ctc-loss-scale > 0 (the head starts from the encoder checkpoint's)")
            if ctc_log_probs.size(-1) != self.llm.emb.num_embeddings:
                raise ValueError(f"--ctc-weight needs one vocabulary for CTC and RWKV-7: the CTC head has "
                                 f"{ctc_log_probs.size(-1)} outputs, RWKV-7 {self.llm.emb.num_embeddings} "
                                 "(use --tokenizer bpe)")
            ctc = CtcPrefixScorer(ctc_log_probs, enc_lens, blank=0, eos_id=eos, pre_beam=max(8, 2 * beam_size))
        if self.interleave_chunk_frames > 0:
            audio_chunk, num_chunks = self._audio_chunks(audio, audio_lens, enc_lens, ctc_log_probs)
            # a chunk holds at most one token per frame: on a CTC alignment each token starts on its own frame
            return generate_interleaved(self.llm, self.template, audio, audio_chunk, num_chunks, method, beam_size,
                                        max_tokens_per_chunk=self.interleave_chunk_frames, ctc=ctc,
                                        ctc_weight=ctc_weight, chunk_frames=self.interleave_chunk_frames,
                                        max_new_tokens=max_new_tokens)
        logits, state = self.prefill(audio, audio_lens)
        return search(logits, state, step, reorder, eos, max_new_tokens, method, beam_size, ctc, ctc_weight)


def apply_llm_peft(
    llm: nn.Module, peft: str, lora_r: int = 8, lora_alpha: int = 16,
    lora_targets: Sequence[str] = ("att.receptance", "att.key", "att.value", "att.output", "ffn.key", "ffn.value"),
) -> None:
    """Freeze an RWKV-7 and add trainable LoRA layers and/or initial WKV states (the LoRA targets
    and `time_state` of JL-er/RWKV-PEFT).

    Args:
      peft: "none" (nothing changes), "lora", "state" or "lora+state".
      lora_targets: module-name suffixes inside each block (`att.key` matches `blocks.{i}.att.key`).
    Raises:
      ValueError: unknown mode or a target that matches no module.
    """
    modes = {"none": (), "lora": ("lora",), "state": ("state",), "lora+state": ("lora", "state")}
    if peft not in modes:
        raise ValueError(f"--llm-peft must be one of {sorted(modes)}, got {peft!r}")
    if peft == "none":
        return
    for p in llm.parameters():
        p.requires_grad_(False)
    if "lora" in modes[peft]:
        from peft import LoraConfig, inject_adapter_in_model

        names = [n for n, _ in llm.named_modules()]
        for t in lora_targets:
            if not any(n.endswith("." + t) for n in names):
                raise ValueError(f"--lora-targets: {t!r} matches no RWKV-7 module (e.g. att.key, ffn.value)")
        config = LoraConfig(r=lora_r, lora_alpha=lora_alpha, lora_dropout=0.0, target_modules=list(lora_targets))
        inject_adapter_in_model(config, llm)  # adds trainable lora_A/lora_B, base weights stay frozen
    if "state" in modes[peft]:
        for p in llm.enable_state_tuning():
            p.requires_grad_(True)
