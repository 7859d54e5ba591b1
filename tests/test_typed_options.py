"""Typed options at the decoding and model boundaries: `DecodingOptions` (validation, its command-line
flags generated from the dataclass and equal to the hand-written ones they replace, the result-file
suffix), the generic `utils.add_dataclass_arguments`, and `SpeechLLMConfig` (params -> config -> model
gives the structure the flat options gave before)."""
import argparse
import dataclasses
from typing import Tuple

import pytest
import torch

from speech_llm_data import make_bpe
from zipformer_rwkv import decode, recipe, transcribe
from zipformer_rwkv.decoding.search import DecodingOptions
from zipformer_rwkv.speechllm.adapter import Adapter, CtcTokenAdapter
from zipformer_rwkv.speechllm.model import SpeechLLM, SpeechLLMConfig
from zipformer_rwkv.utils import AttributeDict, add_dataclass_arguments, str2bool
from zipformer_rwkv.zipformer.ctc import make_ctc_output

DECODING_DESTS = ("decoding_method", "beam_size", "ctc_weight", "max_new_tokens")
FULL_LINE = ["--decoding-method", "beam_search", "--beam-size", "7", "--ctc-weight", "0.3", "--max-new-tokens", "50"]


# ------------------------------------------------------------------------------------ DecodingOptions


def test_decoding_options_defaults_and_frozen():
    o = DecodingOptions()
    assert (o.decoding_method, o.beam_size, o.ctc_weight, o.max_new_tokens) == ("greedy_search", 4, 0.0, 200)
    with pytest.raises(dataclasses.FrozenInstanceError):
        o.beam_size = 8
    assert DecodingOptions("beam_search", beam_size=1, ctc_weight=1, max_new_tokens=1).ctc_weight == 1.0


@pytest.mark.parametrize("kw, match", [
    (dict(decoding_method="modified_beam_search"), "unknown decoding method 'modified_beam_search'"),
    (dict(beam_size=0), "--beam-size must be an integer >= 1, got 0"),
    (dict(beam_size=2.5), "--beam-size must be an integer >= 1"),
    (dict(beam_size=True), "--beam-size must be an integer >= 1"),
    (dict(max_new_tokens=0), "--max-new-tokens must be an integer >= 1, got 0"),
    (dict(ctc_weight=-0.5), r"--ctc-weight must be in \[0, 1\]"),
    (dict(ctc_weight=1.5), r"--ctc-weight must be in \[0, 1\]"),
    (dict(ctc_weight="0.5"), r"--ctc-weight must be in \[0, 1\]"),
])
def test_decoding_options_refuse_bad_values(kw, match):
    with pytest.raises(ValueError, match=match):
        DecodingOptions(**kw)


def _reference_decode_parser() -> argparse.ArgumentParser:
    """decode.py's decoding flags as they were written by hand before DecodingOptions."""
    p = argparse.ArgumentParser()
    p.add_argument("--decoding-method", type=str, default="greedy_search", choices=("greedy_search", "beam_search"))
    p.add_argument("--beam-size", type=int, default=4)
    p.add_argument("--ctc-weight", type=float, default=0.0)
    p.add_argument("--max-new-tokens", type=int, default=200)
    return p


def _reference_transcribe_parser() -> argparse.ArgumentParser:
    """transcribe.py's decoding flags as they were written by hand before DecodingOptions."""
    p = argparse.ArgumentParser()
    p.add_argument("--decoding-method", choices=("greedy_search", "beam_search"), default="greedy_search")
    p.add_argument("--beam-size", type=int, default=4)
    p.add_argument("--max-new-tokens", type=int, default=200)
    p.add_argument("--ctc-weight", type=float, default=0.0)
    return p


def _decoding_values(ns: argparse.Namespace) -> dict:
    return {k: getattr(ns, k) for k in DECODING_DESTS}


@pytest.mark.parametrize("script, reference, extra", [
    (decode, _reference_decode_parser, []),
    (transcribe, _reference_transcribe_parser, ["--checkpoint", "x.pt", "a.wav"]),
])
def test_generated_flags_equal_the_hand_written_ones(script, reference, extra):
    parser, ref = script.get_parser(), reference()
    actions = {a.dest: a for a in parser._actions}
    for a in ref._actions:
        if a.dest in DECODING_DESTS:
            got = actions[a.dest]
            assert got.option_strings == a.option_strings
            assert got.default == a.default and type(got.default) is type(a.default)
            assert (tuple(got.choices) if got.choices else None) == (tuple(a.choices) if a.choices else None)
    for line in ([], FULL_LINE):
        got = parser.parse_args(line + extra)
        want = ref.parse_args(line)  # the reference holds only the decoding flags
        assert _decoding_values(got) == _decoding_values(want)
        assert {k: type(v) for k, v in _decoding_values(got).items()} == \
            {k: type(v) for k, v in _decoding_values(want).items()}
    assert DecodingOptions.from_args(parser.parse_args(extra)) == DecodingOptions()
    assert DecodingOptions.from_args(parser.parse_args(FULL_LINE + extra)) == \
        DecodingOptions("beam_search", beam_size=7, ctc_weight=0.3, max_new_tokens=50)
    with pytest.raises(SystemExit):  # argparse still refuses an unknown method
        parser.parse_args(["--decoding-method", "sampling"] + extra)


def test_result_file_suffix_unchanged():
    """decode.decoding_suffix names the result files: the same names as before for the same flags."""
    args = decode.get_parser().parse_args(["--epoch", "10", "--avg", "5"] + FULL_LINE)
    assert decode.decoding_suffix(AttributeDict(vars(args))) == \
        "epoch-10_avg-5_beam-size-7_max-new-tokens-50_ctc-weight-0.3_use-averaged-model"
    args = decode.get_parser().parse_args(["--epoch", "10", "--avg", "5", "--use-averaged-model", "false"])
    assert decode.decoding_suffix(AttributeDict(vars(args))) == "epoch-10_avg-5_max-new-tokens-200"
    args = decode.get_parser().parse_args(["--epoch", "10", "--avg", "5", "--use-averaged-model", "false",
                                           "--streaming", "true"])
    assert DecodingOptions.from_args(args).streaming is True
    assert decode.decoding_suffix(AttributeDict(vars(args))) == "epoch-10_avg-5_max-new-tokens-200_streaming"


def test_from_args_takes_a_dict_and_defaults_absent_fields():
    assert DecodingOptions.from_args(AttributeDict(beam_size=3, model_type="llm")) == DecodingOptions(beam_size=3)
    with pytest.raises(ValueError, match="--beam-size"):
        DecodingOptions.from_args({"beam_size": 0})


# ------------------------------------------------------------------------------------ the generic helper


@dataclasses.dataclass
class _Example:
    flag: bool = False
    count: int = dataclasses.field(default=3, metadata=dict(help="how many"))
    scale: float = 0.5
    name: str = dataclasses.field(default="a", metadata=dict(choices=("a", "b")))
    dims: Tuple[int, ...] = (1, 2)


def test_add_dataclass_arguments_types_defaults_help_choices():
    p = argparse.ArgumentParser()
    add_dataclass_arguments(p, _Example)
    actions = {a.dest: a for a in p._actions if a.dest != "help"}
    assert list(actions) == ["flag", "count", "scale", "name", "dims"]
    assert [actions[k].type for k in actions] == [str2bool, int, float, str, str]
    assert actions["count"].help == "how many" and actions["name"].choices == ("a", "b")
    assert vars(p.parse_args([])) == dict(flag=False, count=3, scale=0.5, name="a", dims=(1, 2))
    got = p.parse_args("--flag true --count 5 --scale 2 --name b --dims 3,4".split())
    assert vars(got) == dict(flag=True, count=5, scale=2.0, name="b", dims="3,4")
    p = argparse.ArgumentParser()
    add_dataclass_arguments(p, _Example, names=["dims", "count"], defaults={"count": None}, helps={"dims": "d"})
    assert [a.dest for a in p._actions if a.dest != "help"] == ["dims", "count"]
    assert p.parse_args([]).count is None and p._actions[1].help == "d"


def test_add_dataclass_arguments_refuses_what_it_cannot_map():
    with pytest.raises(TypeError, match="needs a dataclass"):
        add_dataclass_arguments(argparse.ArgumentParser(), dict)
    with pytest.raises(KeyError, match="no field 'size'"):
        add_dataclass_arguments(argparse.ArgumentParser(), _Example, names=["size"])

    @dataclasses.dataclass
    class Bad:
        x: list = dataclasses.field(default_factory=list)

    with pytest.raises(TypeError, match="no command-line type"):
        add_dataclass_arguments(argparse.ArgumentParser(), Bad)


def test_encoder_flags_still_default_to_none():
    """The encoder's flags use the same helper: every architecture option is None unless given."""
    from zipformer_rwkv.zipformer import add_model_arguments

    p = argparse.ArgumentParser()
    add_model_arguments(p)
    args = p.parse_args([])
    assert args.encoder_config == "medium" and args.causal is None and args.pos_dim is None
    assert args.num_encoder_layers is None
    args = p.parse_args("--causal true --pos-dim 16 --num-encoder-layers 1,2".split())
    assert (args.causal, args.pos_dim, args.num_encoder_layers) == (True, 16, "1,2")


# ------------------------------------------------------------------------------------ SpeechLLMConfig


def test_speech_llm_config_validation():
    for kw, match in [(dict(adapter_type="frames"), "stack or ctc"), (dict(adapter_downsample=0), "downsample"),
                      (dict(adapter_hidden_dim=-2), "hidden-dim"), (dict(interleave_chunk_frames=-1), "interleave"),
                      (dict(ctc_loss_scale=-0.1), "ctc-loss-scale")]:
        with pytest.raises(ValueError, match=match):
            SpeechLLMConfig(**kw)
    from tiny_models import EOS, TinyEncoder, make_llm
    from zipformer_rwkv.speechllm.prompt import PromptTemplate

    with pytest.raises(TypeError, match="SpeechLLMConfig"):  # the flat options are no config
        SpeechLLM(TinyEncoder(), make_llm(), PromptTemplate([5], [7], EOS), dict(adapter_downsample=2))


def test_speech_llm_config_defaults_are_the_training_flags_defaults():
    """Every field is a structure option (saved in checkpoints, checked at decode), and the config of
    an empty command line is the dataclass's defaults."""
    assert set(f.name for f in dataclasses.fields(SpeechLLMConfig)) <= set(recipe.STRUCTURE_OPTIONS)
    p = argparse.ArgumentParser()
    recipe.add_model_arguments(p)
    parsed = vars(p.parse_args([]))
    assert set(f.name for f in dataclasses.fields(SpeechLLMConfig)) <= set(parsed)  # each field is a flag
    assert SpeechLLMConfig.from_params(AttributeDict(parsed)) == SpeechLLMConfig()
    assert vars(p.parse_args(["--adapter-type", "ctc", "--adapter-encoder-proj", "true",
                              "--interleave-chunk-frames", "16"]))["adapter_encoder_proj"] is True


def test_speech_llm_config_from_an_old_checkpoints_options():
    """Options saved before adapter_type / interleave_chunk_frames existed take their defaults."""
    old = AttributeDict(adapter_downsample=2, adapter_hidden_dim=0, ctc_loss_scale=0.3, prompt_template="")
    cfg = SpeechLLMConfig.from_params(old)
    assert cfg == SpeechLLMConfig(adapter_downsample=2, adapter_hidden_dim=0, ctc_loss_scale=0.3)
    assert cfg.to_params()["adapter_type"] == "stack" and cfg.to_params()["interleave_chunk_frames"] == 0


TINY = ("--model-type llm --num-encoder-layers 1,1 --downsampling-factor 1,2 --feedforward-dim 64,64 "
        "--num-heads 2,2 --encoder-dim 32,32 --encoder-unmasked-dim 16,16 --cnn-module-kernel 15,15 "
        "--query-head-dim 8 --value-head-dim 8 --pos-head-dim 4 --pos-dim 16 --encoder-embed-channels 16 "
        "--rwkv-n-layer 2 --rwkv-n-embd 64").split()


@pytest.fixture(scope="module")
def bpe(tmp_path_factory):
    return make_bpe(tmp_path_factory.mktemp("typed") / "lang")


def _shapes(module) -> dict:
    return {k: tuple(v.shape) for k, v in module.state_dict().items()}


@pytest.mark.parametrize("flags, adapter, ctc_outputs", [
    # default: frame stacking by 4, MLP hidden width = RWKV-7's (-1), no CTC head
    ("", lambda: Adapter(32, 64, 4, 64), 0),
    ("--adapter-downsample 2 --adapter-hidden-dim 0 --ctc-loss-scale 0.3", lambda: Adapter(32, 64, 2, 0), 30),
    ("--adapter-hidden-dim 48 --interleave-chunk-frames 4", lambda: Adapter(32, 64, 4, 48), 30),
    ("--adapter-type ctc --adapter-blank-threshold 0.9 --adapter-encoder-proj true",
     lambda: CtcTokenAdapter(32, 64, 0.9, True), 30),
    ("--adapter-type ctc --prompt-template <audio>:<eos>", lambda: CtcTokenAdapter(32, 64, 0.95, False), 30),
])
def test_params_to_config_to_model_keeps_the_structure(bpe, flags, adapter, ctc_outputs):
    """recipe.get_model: params -> SpeechLLMConfig -> SpeechLLM gives the adapter, CTC head and
    options that the flat options gave before (the old constructor was called with
    `Adapter(enc_dim, n_embd, adapter_downsample, n_embd if adapter_hidden_dim < 0 else it)` /
    `CtcTokenAdapter(enc_dim, n_embd, adapter_blank_threshold, adapter_encoder_proj)` and a CTC head
    over the BPE vocabulary when a CTC loss, the ctc adapter or interleaving needs one)."""
    from zipformer_rwkv.train import get_parser

    args = get_parser().parse_args(TINY + ["--bpe-model", str(bpe), "--tokenizer", "bpe"] + flags.split())
    params = AttributeDict(vars(args))
    torch.manual_seed(0)
    model, tok = recipe.get_model(params, load_pretrained=False)
    assert isinstance(model, SpeechLLM) and tok["llm"].vocab_size == 30
    cfg = SpeechLLMConfig.from_params(params)
    assert model.config == cfg
    assert cfg.to_params() == {k: params[k] for k in cfg.to_params()}  # the flat options a checkpoint stores
    want = adapter()
    assert type(model.adapter) is type(want) and _shapes(model.adapter) == _shapes(want)
    if ctc_outputs:
        assert _shapes(model.ctc_output) == _shapes(make_ctc_output(32, ctc_outputs))
    else:
        assert model.ctc_output is None
    assert model.ctc_loss_scale == params.ctc_loss_scale
    assert model.interleave_chunk_frames == params.interleave_chunk_frames
    assert model.min_encoder_frames == (params.adapter_downsample if params.adapter_type == "stack" else 1)
    assert recipe.min_encoder_frames(params) == model.min_encoder_frames
    if params.adapter_type == "ctc":
        assert model.adapter.blank_threshold == params.adapter_blank_threshold
    if params.prompt_template:
        assert model.template.infix == tok["llm"].encode(":") + [tok["llm"].eos_id]


def test_recognize_refuses_untyped_options(bpe):
    from zipformer_rwkv.train import get_parser

    params = AttributeDict(vars(get_parser().parse_args(TINY + ["--bpe-model", str(bpe)])))
    model, tok = recipe.get_model(params, load_pretrained=False)
    feats, lens = torch.randn(1, 100, 80), torch.tensor([100])
    with pytest.raises(TypeError, match="DecodingOptions"):
        recipe.recognize(model.eval(), tok, feats, lens, params)
    with pytest.raises(TypeError, match="DecodingOptions"):
        model.generate(feats, lens, params)
    hyps, notes = recipe.recognize(model, tok, feats, lens, DecodingOptions(max_new_tokens=2))
    assert len(hyps) == 1 and notes[0] in ("", recipe.NOTE_TRUNCATED)
