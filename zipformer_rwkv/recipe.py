"""What train.py, decode.py and transcribe.py share: model options, model/tokenizer construction,
pretrained-weight loading, batch -> loss, and the optimizers.

`add_model_arguments(parser)` + `get_model(params)` build any `--model-type`:
  ctc : `CtcModel(encoder, vocab = BPE size)`
  lm  : `LmModel(RWKV7)` on BPE (from scratch) or World tokens (`--rwkv-checkpoint` a BlinkDL file)
  llm : `SpeechLLM(encoder, RWKV7, template)`, optionally from `--encoder-checkpoint` (icefall or our
        exported CTC model) and `--rwkv-checkpoint` (BlinkDL `.pth` or our exported LM), with
        `--freeze-encoder/--freeze-llm/--llm-peft`.
"""
import argparse
import logging
from pathlib import Path
from typing import Collection, Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn as nn

from zipformer_rwkv.decoding.search import DecodingOptions
from zipformer_rwkv.errors import CheckpointError, ConfigError
from zipformer_rwkv.speechllm.model import CtcModel, LmModel, SpeechLLM, SpeechLLMConfig, apply_llm_peft
from zipformer_rwkv.speechllm.prompt import PromptTemplate
from zipformer_rwkv.training.optim import Eden, ScaledAdam, get_adamw_param_groups, get_parameter_groups_with_lrs
from zipformer_rwkv.training.optim_set import OptimizerEntry, OptimizerSet
from zipformer_rwkv.utils import AttributeDict, add_dataclass_arguments, str2bool
from zipformer_rwkv.zipformer import encoder_out_length

MODEL_TYPES = ("ctc", "lm", "llm")

# Options that fix a model's structure: decode.py checks them against the checkpoint's params.
STRUCTURE_OPTIONS = (
    "model_type", "tokenizer", "bpe_model_sha256", "rwkv_config", "rwkv_n_layer", "rwkv_n_embd", "rwkv_head_size",
    "adapter_type", "adapter_downsample", "adapter_hidden_dim", "adapter_blank_threshold", "adapter_encoder_proj",
    "interleave_chunk_frames", "llm_peft", "lora_r", "lora_alpha", "lora_targets",
    "prompt_template", "ctc_loss_scale", "encoder_config", "num_encoder_layers", "downsampling_factor",
    "feedforward_dim", "num_heads", "encoder_dim", "query_head_dim", "value_head_dim", "pos_head_dim",
    "pos_dim", "encoder_unmasked_dim", "cnn_module_kernel", "causal", "chunk_size", "left_context_frames",
    "encoder_embed_channels", "utterance_cmn", "running_cmn",
)


def same_option(given: object, saved: object) -> bool:
    """True if an option value from the command line equals the checkpoint's, treating a
    single value as broadcast to every stack (`--query-head-dim 32` == the stored "32,32,32,32",
    the resolved form train.py saves)."""
    a, b = str(given).replace(" ", ""), str(saved).replace(" ", "")
    if a == b:
        return True
    la, lb = a.split(","), b.split(",")
    return (len(la) == 1 and set(lb) == set(la)) or (len(lb) == 1 and set(la) == set(lb))


def apply_checkpoint_structure(params: AttributeDict, saved: dict, explicit: Collection[str], source: str,
                               keys: Optional[Sequence[str]] = None) -> None:
    """Copy the structure options of a checkpoint into params.

    Args:
      saved: the checkpoint's options (`checkpoint_params`).
      explicit: options given on the command line (`utils.explicit_options`).
      keys: the options to copy (those the checkpoint has); None: `STRUCTURE_OPTIONS`, and
        the checkpoint must be one of train.py's (have model_type).
    Raises:
      ValueError: an option given explicitly differs from the checkpoint's value (lists all).
    """
    if keys is None:
        if "model_type" not in saved:
            raise ValueError(f"{source} has no training options (model_type); not written by train.py?")
        keys = STRUCTURE_OPTIONS
    mismatches = []
    for key in keys:
        if key not in saved:
            continue
        if key in explicit and params.get(key) is not None and not same_option(params[key], saved[key]):
            if key == "tokenizer" and params[key] == "auto":
                continue
            flag = "--" + key.replace("_", "-")
            mismatches.append(f"{flag}: checkpoint has {saved[key]!r}, command line {params[key]!r}")
        params[key] = saved[key]
    if mismatches:
        raise ValueError(f"{source} does not match the command line: " + "; ".join(mismatches))


def add_model_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of every model type (encoder options come from `zipformer_rwkv.zipformer`)."""
    g = parser.add_argument_group("Model", "Model type, sizes and initial weights.")
    g.add_argument("--model-type", choices=MODEL_TYPES, default="llm",
                   help="ctc: Zipformer2 + CTC; lm: RWKV-7 on text; llm: Zipformer2 -> adapter -> RWKV-7")
    g.add_argument("--bpe-model", type=str, default="data/lang_bpe_500/bpe.model",
                   help="sentencepiece model: CTC targets and the tokenizer of from-scratch RWKV-7 models")
    g.add_argument("--tokenizer", choices=("auto", "bpe", "world"), default="auto",
                   help="RWKV-7 tokenizer; auto: world if the RWKV-7 vocabulary is 65536, else bpe")
    g.add_argument("--encoder-checkpoint", type=str, default="",
                   help="initial encoder weights: an icefall checkpoint/pretrained.pt or our exported ctc model")
    g.add_argument("--rwkv-checkpoint", type=str, default="",
                   help="initial RWKV-7 weights: a BlinkDL .pth (e.g. rwkv7-g1-0.1b) or our exported lm model")
    g.add_argument("--rwkv-n-layer", type=int, default=4, help="layers of a from-scratch RWKV-7")
    g.add_argument("--rwkv-n-embd", type=int, default=256, help="width of a from-scratch RWKV-7")
    g.add_argument("--rwkv-head-size", type=int, default=64, help="head size of a from-scratch RWKV-7")
    add_dataclass_arguments(g, SpeechLLMConfig)
    g.add_argument("--freeze-encoder", type=str2bool, default=False, help="llm: do not train the encoder")
    g.add_argument("--freeze-llm", type=str2bool, default=False,
                   help="llm: do not train RWKV-7 (implied for its base weights by --llm-peft != none)")
    g.add_argument("--llm-peft", choices=("none", "lora", "state", "lora+state"), default="none",
                   help="parameter-efficient RWKV-7 tuning: LoRA (peft) and/or trainable initial WKV states")
    g.add_argument("--lora-r", type=int, default=8, help="LoRA rank")
    g.add_argument("--lora-alpha", type=int, default=16, help="LoRA alpha (scaling alpha / r)")
    g.add_argument("--lora-targets", type=str, default="att.receptance,att.key,att.value,att.output,ffn.key,ffn.value",
                   help="comma-separated RWKV-7 Linear modules that get LoRA")
    from zipformer_rwkv.zipformer import add_model_arguments as add_encoder_arguments

    add_encoder_arguments(parser)


# ------------------------------------------------------------------------------------ tokenizers


def file_sha256(path: str) -> str:
    """Hex SHA-256 of a file's bytes."""
    import hashlib

    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def _bpe(params: AttributeDict):
    """The BPE tokenizer of `params.bpe_model`. Its identity travels with the model: the first load
    sets `params.bpe_model_sha256` (saved in every checkpoint); when params already hold one (decode.py
    and transcribe.py copy it from the checkpoint), another file is refused: a different BPE model with
    a vocabulary no larger than the model's would decode garbage without any other error.

    Raises:
      ConfigError: the file's SHA-256 differs from `params.bpe_model_sha256`.
    """
    from zipformer_rwkv.rwkv7 import get_tokenizer

    tokenizer = get_tokenizer("bpe", params.bpe_model)
    digest, want = file_sha256(params.bpe_model), params.get("bpe_model_sha256")
    if want and digest != want:
        raise ConfigError(f"--bpe-model {params.bpe_model} is not the BPE model the checkpoint was trained with "
                          f"(sha256 {digest[:12]}..., the checkpoint's {want[:12]}...); give the run's bpe.model")
    params.bpe_model_sha256 = digest
    return tokenizer


def get_tokenizers(params: AttributeDict, llm_vocab_size: Optional[int] = None) -> Dict[str, object]:
    """{"bpe": BPE tokenizer (ctc, CTC aux loss, from-scratch LMs), "llm": the RWKV-7 tokenizer}.

    Sets `params.tokenizer` to the resolved kind ("bpe" or "world").
    Raises:
      ValueError: the RWKV-7 vocabulary does not fit the tokenizer.
    """
    out = {}
    need_bpe = params.model_type == "ctc" or uses_ctc_head(params) or params.tokenizer == "bpe"
    kind = params.tokenizer
    if params.model_type != "ctc" and kind == "auto":
        kind = "world" if llm_vocab_size == 65536 else "bpe"
    if kind == "bpe" or need_bpe:
        out["bpe"] = _bpe(params)
    if params.model_type != "ctc":
        params.tokenizer = kind
        if kind == "world":
            from zipformer_rwkv.rwkv7 import get_tokenizer

            out["llm"] = get_tokenizer("world")
        else:
            out["llm"] = out["bpe"]
        if llm_vocab_size is not None and out["llm"].vocab_size > llm_vocab_size:
            raise ValueError(
                f"RWKV-7 vocabulary ({llm_vocab_size}) is smaller than the {kind} tokenizer's "
                f"({out['llm'].vocab_size}); check --tokenizer/--bpe-model/--rwkv-checkpoint"
            )
    return out


# ------------------------------------------------------------------------------------ pretrained weights


def _read(path: str) -> dict:
    from zipformer_rwkv.training.checkpoint import read_checkpoint

    return read_checkpoint(path)


def load_rwkv(params: AttributeDict, load_pretrained: bool = True) -> nn.Module:
    """RWKV-7 from `--rwkv-checkpoint` (BlinkDL file, or our lm checkpoint with `llm.*` keys) or a
    from-scratch model of `--rwkv-n-layer/--rwkv-n-embd` with the BPE vocabulary.

    With `load_pretrained=False` and `params.rwkv_config` (recorded by training in every
    checkpoint), the model is built from that config without reading any file (decode.py).
    Sets `params.rwkv_config` to the model's config as a dict.
    """
    import dataclasses

    model = _build_rwkv(params, load_pretrained)
    params.rwkv_config = dataclasses.asdict(model.config)
    return model


def _build_rwkv(params: AttributeDict, load_pretrained: bool) -> nn.Module:
    from zipformer_rwkv.rwkv7 import RWKV7, RWKV7Config, config_from_state_dict, load_rwkv7_checkpoint

    if not load_pretrained and params.get("rwkv_config"):
        return RWKV7(RWKV7Config(**params.rwkv_config))
    path = params.rwkv_checkpoint
    if not path:
        vocab = _bpe(params).vocab_size
        config = RWKV7Config.with_default_dims(
            n_layer=params.rwkv_n_layer, n_embd=params.rwkv_n_embd, vocab_size=vocab, head_size=params.rwkv_head_size
        )
        return RWKV7(config)
    ckpt = _read(path)
    if "model" in ckpt and isinstance(ckpt["model"], dict):
        sd = {k[len("llm."):]: v for k, v in ckpt["model"].items() if k.startswith("llm.")}
        if not sd:
            raise CheckpointError(
                f"--rwkv-checkpoint {path}: its 'model' holds no llm.* tensors (not an lm/llm checkpoint)")
        if any(".lora_" in k or ".base_layer." in k for k in sd):
            raise CheckpointError(f"--rwkv-checkpoint {path}: holds LoRA layers; export a merged model first")
        model = RWKV7(config_from_state_dict(sd, path))
        if any(k.endswith("att.time_state") for k in sd):
            model.enable_state_tuning()
        model.load_state_dict(sd, strict=True)
        logging.info(f"Loaded RWKV-7 from {path}")
        return model
    return load_rwkv7_checkpoint(path)


def load_encoder_weights(model: nn.Module, path: str) -> List[str]:
    """Load `--encoder-checkpoint` into `model.encoder` (and `model.ctc_output` if shapes match).

    Accepts icefall files and our ctc/llm checkpoints (`zipformer_rwkv.zipformer.load_encoder_checkpoint`
    finds the encoder's key prefix); the encoder options must describe the file's architecture.
    Returns:
      the keys of `model.state_dict()` that were loaded (every `encoder.*`, and `ctc_output.*` when
      the file's head fits).
    Raises:
      FileNotFoundError, CheckpointMismatchError (a ValueError): as `load_encoder_checkpoint`.
    """
    from zipformer_rwkv.zipformer import load_encoder_checkpoint

    load_encoder_checkpoint(path, model.encoder)
    loaded = [f"encoder.{k}" for k in model.encoder.state_dict()]
    ckpt = _read(path)
    sd = ckpt.get("model", ckpt)
    head = {k[len("ctc_output."):]: v for k, v in sd.items() if k.startswith("ctc_output.")}
    if head and getattr(model, "ctc_output", None) is not None:
        own = model.ctc_output.state_dict()
        if all(k in own and own[k].shape == v.shape for k, v in head.items()):
            model.ctc_output.load_state_dict(head)
            loaded += [f"ctc_output.{k}" for k in head]
            logging.info(f"Loaded ctc_output from {path}")
    logging.info(f"Loaded encoder from {path}")
    return loaded


# base_checkpoints names of a trainable-only checkpoint -> the training option that named that file
BASE_CHECKPOINT_OPTIONS = {"encoder": "encoder_checkpoint", "llm": "rwkv_checkpoint"}


def _load_llm_base(model: nn.Module, path: str, params: AttributeDict, source: str) -> List[str]:
    """Copy the RWKV-7 of `path` (as `--rwkv-checkpoint` reads it) into `model.llm`, whose LoRA layers
    (peft keeps a wrapped Linear's weight as `<name>.base_layer.weight`) are left as they are.
    Returns the keys of `model.state_dict()` it loaded. Raises CheckpointError: another structure."""
    import dataclasses

    base = _build_rwkv(AttributeDict(rwkv_checkpoint=path), load_pretrained=True)
    recorded = params.get("rwkv_config")
    if recorded and dataclasses.asdict(base.config) != dict(recorded):
        diff = {k: (v, recorded.get(k)) for k, v in dataclasses.asdict(base.config).items() if recorded.get(k) != v}
        raise CheckpointError(f"{source}: its base checkpoint llm={path} is another RWKV-7 than the one it was "
                              f"trained on ({', '.join(f'{k} {a} vs {b}' for k, (a, b) in diff.items())})")
    own = model.llm.state_dict()
    state, loaded = {}, []
    for k, v in base.state_dict().items():
        target = k if k in own else ".base_layer.".join(k.rsplit(".", 1))
        if target not in own or tuple(own[target].shape) != tuple(v.shape):
            raise CheckpointError(f"{source}: its base checkpoint llm={path} does not fit the model "
                                  f"('{k}' {tuple(v.shape)})")
        state[target] = v
        loaded.append(f"llm.{target}")
    model.llm.load_state_dict(state, strict=False)
    logging.info(f"Loaded RWKV-7 base weights from {path}")
    return loaded


def get_model_for_checkpoint(params: AttributeDict, saved: dict,
                             source: str) -> Tuple[nn.Module, Dict[str, object]]:
    """Build the model that a checkpoint's weights are loaded into (`params` already holds the
    checkpoint's structure options); the caller then loads `saved["model"]` (or "model_avg").

    A full checkpoint holds every weight: the model is built without reading any other file. A
    trainable-only one (`saved["trainable_only"]`: adapter, LoRA, tuned state on a frozen base, as
    RWKV-ASR publishes them) holds only what was trained; the frozen weights are loaded here from its
    base checkpoints: `saved["base_checkpoints"]` ({"encoder": path, "llm": path}), else the
    `--encoder-checkpoint` / `--rwkv-checkpoint` it was trained with. Relative paths are taken from
    the current folder.

    Args:
      params: the options (structure from the checkpoint). saved: the checkpoint dict.
      source: the checkpoint's name for messages.
    Returns:
      (model, tokenizers) as `get_model`.
    Raises:
      CheckpointError: a base checkpoint is missing, unreadable or of another structure than the one
        recorded, or some frozen weights are neither in the checkpoint nor in a base checkpoint.
    """
    from zipformer_rwkv.errors import RecipeError

    model, tokenizers = get_model(params, load_pretrained=False)
    if not saved.get("trainable_only"):
        return model, tokenizers
    bases = {k: str(v) for k, v in (saved.get("base_checkpoints") or {}).items() if v}
    if not bases:
        bases = {k: str(params[o]) for k, o in BASE_CHECKPOINT_OPTIONS.items() if params.get(o)}
    unknown = sorted(set(bases) - set(BASE_CHECKPOINT_OPTIONS))
    if unknown:
        known = sorted(BASE_CHECKPOINT_OPTIONS)
        raise CheckpointError(f"{source}: unknown base checkpoints {unknown} (known: {known})")
    covered = set(saved.get("model") or {})
    for name, path in bases.items():
        if not hasattr(model, name):
            continue  # e.g. an encoder base of an lm
        if not Path(path).is_file():
            raise CheckpointError(f"{source} holds only the trained weights, and its base checkpoint {name}={path} "
                                  "does not exist (relative paths are taken from the current folder)")
        try:
            if name == "encoder":
                covered.update(load_encoder_weights(model, path))
            else:
                covered.update(_load_llm_base(model, path, params, source))
        except CheckpointError:
            raise
        except (RecipeError, ValueError) as e:  # the encoder loader's message lists keys on more lines
            lines = [line.strip() for line in str(e).splitlines() if line.strip()] or [type(e).__name__]
            why = "; ".join([lines[0]] + [line for line in lines[1:] if line.startswith("the checkpoint holds")])
            raise CheckpointError(f"{source}: its base checkpoint {name}={path} does not fit: {why}") from None
    missing = [k for k in model.state_dict() if k not in covered]
    if missing:
        raise CheckpointError(f"{source} holds only the trained weights, and its base checkpoints {bases or '(none)'} "
                              f"do not hold {len(missing)} others, e.g. {missing[:3]}")
    return model, tokenizers


# ------------------------------------------------------------------------------------ model


def get_model(params: AttributeDict, load_pretrained: bool = True) -> Tuple[nn.Module, Dict[str, object]]:
    """Build the model of `params.model_type` and its tokenizers.

    Args:
      params: parsed options (`add_model_arguments`) plus `feature_dim` etc.
      load_pretrained: load `--encoder-checkpoint`/`--rwkv-checkpoint` weights; False (decode.py,
        which loads its own checkpoint over the model) builds RWKV-7 from `params.rwkv_config`.
    Returns:
      (model, tokenizers) with tokenizers as `get_tokenizers`.
    """
    if params.model_type not in MODEL_TYPES:
        raise ValueError(f"--model-type must be one of {MODEL_TYPES}, got {params.model_type!r}")
    if params.model_type == "ctc":
        from zipformer_rwkv.zipformer import get_encoder_model

        tok = get_tokenizers(params)
        model = CtcModel(get_encoder_model(params), tok["bpe"].vocab_size)
        if load_pretrained and params.encoder_checkpoint:
            load_encoder_weights(model, params.encoder_checkpoint)
        return model, tok

    llm = load_rwkv(params, load_pretrained)
    tok = get_tokenizers(params, llm.config.vocab_size)
    eos = tok["llm"].eos_id
    if params.model_type == "lm":
        apply_llm_peft(llm, params.llm_peft, params.lora_r, params.lora_alpha, _targets(params))
        return LmModel(llm, eos), tok

    from zipformer_rwkv.zipformer import get_encoder_model

    config = SpeechLLMConfig.from_params(params)
    enc = tok["llm"].encode
    if config.prompt_template:
        template = PromptTemplate.from_string(config.prompt_template.replace("\\n", "\n"), enc, eos,
                                              " " if params.tokenizer == "world" else "")
    else:
        template = PromptTemplate.default(params.tokenizer, enc, eos)
    ctc_vocab_size = tok["bpe"].vocab_size if config.uses_ctc_head else 0
    model = SpeechLLM(get_encoder_model(params), llm, template, config, ctc_vocab_size)
    if load_pretrained and params.encoder_checkpoint:
        load_encoder_weights(model, params.encoder_checkpoint)
    apply_llm_peft(model.llm, params.llm_peft, params.lora_r, params.lora_alpha, _targets(params))
    if params.freeze_encoder:
        model.freeze("encoder")
    if params.freeze_llm or (params.llm_peft != "none" and not any(p.requires_grad for p in model.llm.parameters())):
        model.freeze("llm")
    return model, tok


def uses_ctc_head(params: AttributeDict) -> bool:
    """True when a speech LLM of these options keeps a CTC head (`SpeechLLMConfig.uses_ctc_head`)."""
    return SpeechLLMConfig.from_params(params).uses_ctc_head


def min_encoder_frames(params: AttributeDict) -> int:
    """Encoder frames an utterance needs to give the model any input (llm stack: one adapter position)."""
    if params.model_type == "llm":
        return SpeechLLMConfig.from_params(params).min_encoder_frames
    return 1


def _targets(params: AttributeDict) -> List[str]:
    return [t.strip() for t in params.lora_targets.split(",") if t.strip()]


# ------------------------------------------------------------------------------------ batches


def batch_texts(batch: dict) -> List[str]:
    """Transcripts of a lhotse K2SpeechRecognitionDataset batch, one per cut (supervisions joined)."""
    sup = batch["supervisions"]
    texts = [""] * batch["inputs"].size(0)
    for seq, text in zip(sup["sequence_idx"].tolist(), sup["text"]):
        texts[seq] = (texts[seq] + " " + text).strip() if texts[seq] else text
    return texts


def batch_feature_lens(batch: dict) -> torch.Tensor:
    """(N,) valid fbank frames per cut of a K2SpeechRecognitionDataset batch."""
    sup = batch["supervisions"]
    n = batch["inputs"].size(0)
    lens = torch.zeros(n, dtype=torch.long)
    for seq, start, num in zip(sup["sequence_idx"].tolist(), sup["start_frame"].tolist(), sup["num_frames"].tolist()):
        lens[seq] = max(int(lens[seq]), start + num)
    return lens


NOTE_TRUNCATED = "hit --max-new-tokens (no EOS)"
NOTE_SKIPPED = "skipped: encoder output too short for the model"


@torch.no_grad()
def recognize(
    model: nn.Module,
    tokenizers: Dict[str, object],
    feats: torch.Tensor,
    feat_lens: torch.Tensor,
    options: DecodingOptions = DecodingOptions(),
) -> Tuple[List[str], List[str]]:
    """Transcribe a batch with a ctc or llm model (decode.py and transcribe.py both use this).

    Args:
      model: a `CtcModel` (CTC greedy search whatever the options) or a `SpeechLLM`, in eval mode.
      tokenizers: as `get_tokenizers` ("bpe" for ctc, "llm" for llm).
      feats: (N, T, 80) fbank at 100 Hz; feat_lens: (N,) valid frames.
      options: how a speech LLM searches (`DecodingOptions`).
    Returns:
      hypothesis texts and notes, one each per utterance. An utterance whose encoder output is too
      short (ctc: < 1 frame, llm: < one adapter position) gets "" and NOTE_SKIPPED; an llm hypothesis
      that reached --max-new-tokens without EOS gets NOTE_TRUNCATED; other notes are "".
    Raises:
      TypeError: model is neither a CtcModel nor a SpeechLLM, or options not a DecodingOptions.
      ValueError: --ctc-weight or --streaming given for a ctc model, or options the llm cannot use
        (`SpeechLLM.generate`, `streaming.check_streamable`).
    """
    if not isinstance(options, DecodingOptions):
        raise TypeError(f"options must be a DecodingOptions, got {type(options).__name__}")
    if not isinstance(model, (CtcModel, SpeechLLM)):
        raise TypeError(f"recognize needs a CtcModel or a SpeechLLM, got {type(model).__name__}")
    if isinstance(model, CtcModel) and options.ctc_weight != 0:
        raise ValueError("--ctc-weight is for speech LLM (llm) checkpoints; a ctc model decodes by CTC alone")
    if options.streaming:
        from zipformer_rwkv.speechllm.streaming import check_streamable

        check_streamable(model, options)
    n = feats.size(0)
    hyps, notes = [""] * n, [""] * n
    ok = (encoder_out_length(feat_lens) >= model.min_encoder_frames).nonzero().flatten()
    for i in set(range(n)) - set(ok.tolist()):
        notes[i] = NOTE_SKIPPED
    if len(ok) == 0:
        return hyps, notes
    sub_lens = feat_lens[ok]
    sub = feats[ok, : int(sub_lens.max())]
    if isinstance(model, CtcModel):
        for i, ids in zip(ok.tolist(), model.decode(sub, sub_lens)):
            hyps[i] = tokenizers["bpe"].decode(ids)
        return hyps, notes
    if options.streaming:
        from zipformer_rwkv.speechllm.streaming import streaming_generate

        out = streaming_generate(model, sub, sub_lens, options)
    else:
        out = model.generate(sub, sub_lens, options)
    for i, h in zip(ok.tolist(), out):
        if h is None:  # a stream too short for the encoder
            notes[i] = NOTE_SKIPPED
            continue
        hyps[i] = tokenizers["llm"].decode(h.tokens)
        if h.truncated:
            notes[i] = NOTE_TRUNCATED
    return hyps, notes


def compute_loss(
    params: AttributeDict, model: nn.Module, batch: dict, tokenizers: Dict[str, object], device: torch.device
) -> Tuple[torch.Tensor, Dict[str, float]]:
    """Loss of one batch for any model type (DDP-wrapped models welcome).

    Returns:
      (loss to backpropagate: mean per unit, stats sums with "frames" = number of units and
      "utterances").
    """
    if params.model_type == "lm":
        loss, stats = model(batch["tokens"].to(device), batch["lengths"].to(device))
        stats["utterances"] = float(batch["tokens"].size(0))
        return loss, stats
    feats = batch["inputs"].to(device)
    lens = batch_feature_lens(batch).to(device)
    texts = batch_texts(batch)
    if params.model_type == "ctc":
        loss, stats = model(feats, lens, [tokenizers["bpe"].encode(t) for t in texts])
    else:
        core = model.module if hasattr(model, "module") else model
        ids = [core.template.encode_text(t, tokenizers["llm"].encode) for t in texts]
        ctc = [tokenizers["bpe"].encode(t) for t in texts] if params.ctc_loss_scale > 0 else None
        loss, stats = model(feats, lens, ids, ctc)
    stats["utterances"] = float(len(texts))
    return loss, stats


# ------------------------------------------------------------------------------------ optimizers


def get_optimizer(params: AttributeDict, model: nn.Module) -> OptimizerSet:
    """ScaledAdam (+Eden, `--base-lr`) for the Zipformer side (encoder, CTC head, adapter) and
    AdamW (+Eden, `--llm-lr`, weight decay on >= 2-D weights, `att.w0` lr x2) for RWKV-7."""
    entries = {}
    has_llm = hasattr(model, "llm")
    other = [n for n, p in model.named_parameters() if p.requires_grad and not n.startswith("llm.")]
    if other:
        groups = get_parameter_groups_with_lrs(
            model, lr=params.base_lr, include_names=True, freeze_modules=["llm"] if has_llm else []
        )
        opt = ScaledAdam(groups, lr=params.base_lr, clipping_scale=2.0)
        sched = Eden(opt, params.lr_batches, params.lr_epochs, params.warmup_batches, warmup_start=0.1)
        entries["scaled_adam"] = OptimizerEntry(opt, sched)
    if has_llm and any(p.requires_grad for p in model.llm.parameters()):
        groups = get_adamw_param_groups(
            model.llm, weight_decay=params.llm_weight_decay, lr=params.llm_lr,
            name_lr_scales={"att.w0": 2.0, "att.time_state": params.state_lr_scale},
        )
        for g in groups:
            g.pop("names", None)
        opt = torch.optim.AdamW(groups, lr=params.llm_lr, betas=(0.9, 0.99), eps=1e-8)
        sched = Eden(opt, params.lr_batches, params.lr_epochs, params.warmup_batches, warmup_start=0.1)
        entries["adamw"] = OptimizerEntry(opt, sched, max_grad_norm=params.max_grad_norm)
    return OptimizerSet(entries)


def add_optimizer_arguments(parser: argparse.ArgumentParser) -> None:
    g = parser.add_argument_group("Optimizer")
    g.add_argument("--base-lr", type=float, default=0.045, help="ScaledAdam lr (encoder, CTC head, adapter)")
    g.add_argument("--llm-lr", type=float, default=1e-3, help="AdamW lr for RWKV-7 parameters (incl. LoRA)")
    g.add_argument("--llm-weight-decay", type=float, default=0.01, help="AdamW weight decay on >= 2-D weights")
    g.add_argument("--state-lr-scale", type=float, default=1.0, help="lr factor of the state-tuning parameters")
    g.add_argument("--max-grad-norm", type=float, default=1.0, help="grad-norm clip of the AdamW part")
    g.add_argument("--lr-batches", type=float, default=7500, help="Eden: batches after which lr decays")
    g.add_argument("--lr-epochs", type=float, default=3.5, help="Eden: epochs after which lr decays")
    g.add_argument("--warmup-batches", type=float, default=500, help="Eden: linear warm-up batches (from 0.1)")
