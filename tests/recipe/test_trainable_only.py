"""Trainable-only checkpoints (adapter, LoRA, tuned WKV state over a frozen base, the form RWKV-ASR
publishes): transcribe.py and decode.py load the frozen weights from the base checkpoints the file
names, and refuse in one line when a base is missing, differs from the one trained on, or leaves
weights unset."""
import pytest
import torch

from speech_llm_data import make_bpe
from test_train_decode import TINY_ENC, TINY_LM
from zipformer_rwkv import decode, recipe, train, transcribe
from zipformer_rwkv.decoding import inference
from zipformer_rwkv.errors import CheckpointError
from zipformer_rwkv.training.checkpoint import save_checkpoint
from zipformer_rwkv.training.selection import resolve_decode_checkpoints
from zipformer_rwkv.utils import AttributeDict

pytestmark = pytest.mark.usefixtures("single_thread")


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """Base encoder (a ctc checkpoint) and base RWKV-7 (an lm checkpoint), and a speech LLM trained on
    them (frozen encoder, LoRA + state tuning) saved trainable-only as exp/epoch-1.pt."""
    root = tmp_path_factory.mktemp("trainable_only")
    bpe = make_bpe(root / "lang")

    def params_for(*argv):
        params = train.get_params()
        params.update(vars(train.get_parser().parse_args(["--bpe-model", str(bpe)] + [str(a) for a in argv])))
        return params

    torch.manual_seed(0)
    enc, lm = root / "base" / "encoder.pt", root / "base" / "lm.pt"
    p_ctc = params_for("--model-type", "ctc", *TINY_ENC)
    save_checkpoint(enc, recipe.get_model(p_ctc)[0], params=p_ctc)
    p_lm = params_for("--model-type", "lm", *TINY_LM)
    save_checkpoint(lm, recipe.get_model(p_lm)[0], params=p_lm)
    p_llm = params_for("--model-type", "llm", *TINY_ENC, *TINY_LM, "--encoder-checkpoint", enc,
                       "--rwkv-checkpoint", lm, "--freeze-encoder", "true", "--llm-peft", "lora+state")
    model, _ = recipe.get_model(p_llm)
    with torch.no_grad():  # "training": every trainable weight moves away from its initial value
        for p in model.parameters():
            if p.requires_grad:
                p.add_(torch.randn_like(p))
    exp = root / "exp"
    save_checkpoint(exp / "epoch-1.pt", model, params=p_llm, trainable_only=True,
                    base_checkpoints={"encoder": enc, "llm": lm})
    return dict(root=root, exp=exp, ckpt=exp / "epoch-1.pt", enc=enc, lm=lm, bpe=bpe, model=model.eval(),
                params_for=params_for)


def _assert_same_weights(got, want):
    want_sd, got_sd = want.state_dict(), got.state_dict()
    assert list(got_sd) == list(want_sd)
    differ = [k for k, v in want_sd.items() if not torch.equal(v, got_sd[k])]
    assert not differ, f"{len(differ)} tensors differ, e.g. {differ[:3]}"


def _variant(run, name, **changes):
    """A copy of the trainable-only checkpoint with some entries changed."""
    saved = torch.load(run["ckpt"], weights_only=True)
    saved.update(changes)
    path = run["exp"] / name
    torch.save(saved, path)
    return path


def _transcribe_load(path):
    args = transcribe.get_parser().parse_args(["--checkpoint", str(path), "a.wav"])
    return transcribe.load_model(args)


def test_file_holds_only_the_trained_weights(run):
    raw = torch.load(run["ckpt"], weights_only=True)
    assert raw["trainable_only"] is True
    assert not any(k.startswith("encoder.") for k in raw["model"])
    assert any(".lora_" in k for k in raw["model"]) and any(k.endswith("time_state") for k in raw["model"])
    assert not any(k.endswith("base_layer.weight") for k in raw["model"])  # the frozen RWKV-7 weights


def test_transcribe_loads_the_base_checkpoints(run):
    _, model, _ = _transcribe_load(run["ckpt"])
    _assert_same_weights(model, run["model"])


def test_decode_loads_the_base_checkpoints(run):
    plan = resolve_decode_checkpoints(run["exp"], epoch=1, iter=0, avg=1, use_averaged_model=False)
    params = AttributeDict(vars(decode.get_parser().parse_args(["--bpe-model", str(run["bpe"])])))
    _, model, _ = inference.load_model(plan, params)  # as decode.py
    _assert_same_weights(model, run["model"])


def test_bench_decode_loads_the_base_checkpoints(run):
    import bench_decode

    common = ["--bpe-model", str(run["bpe"]), "--num-workers", "0"]
    _, model, _, _ = bench_decode.load_system(run["exp"], 1, 1, False, common, torch.device("cpu"))
    _assert_same_weights(model, run["model"])


def test_without_base_checkpoints_the_recorded_options_name_them(run):
    path = _variant(run, "no-base-entry.pt", base_checkpoints={})
    _, model, _ = _transcribe_load(path)  # --encoder-checkpoint / --rwkv-checkpoint of the run
    _assert_same_weights(model, run["model"])


def test_missing_base_is_refused_in_one_line(run, monkeypatch, capsys):
    gone = run["root"] / "moved" / "encoder.pt"
    path = _variant(run, "missing-base.pt", base_checkpoints={"encoder": str(gone), "llm": str(run["lm"])})
    with pytest.raises(CheckpointError, match=rf"missing-base.pt holds only the trained weights, and its base "
                                              rf"checkpoint encoder={gone} does not exist"):
        _transcribe_load(path)
    monkeypatch.setattr("sys.argv", ["transcribe.py", "--checkpoint", str(path), "a.wav"])
    with pytest.raises(SystemExit) as e:
        transcribe.main()
    assert str(e.value).startswith("transcribe.py: error: ") and "\n" not in str(e.value)


def test_base_of_another_structure_is_refused(run):
    torch.manual_seed(1)
    wide = run["root"] / "other" / "lm-wide.pt"
    p_lm = run["params_for"]("--model-type", "lm", "--rwkv-n-layer", "2", "--rwkv-n-embd", "128")
    save_checkpoint(wide, recipe.get_model(p_lm)[0], params=p_lm)
    path = _variant(run, "other-llm.pt", base_checkpoints={"encoder": str(run["enc"]), "llm": str(wide)})
    with pytest.raises(CheckpointError, match=r"other-llm.pt: its base checkpoint llm=.*lm-wide.pt is another "
                                              r"RWKV-7 than the one it was trained on \(n_embd 128 vs 64"):
        _transcribe_load(path)

    small = run["root"] / "other" / "encoder-small.pt"
    enc_opts = [o.replace("32,32", "16,16") if o == "32,32" else o for o in TINY_ENC]
    p_ctc = run["params_for"]("--model-type", "ctc", *enc_opts)
    save_checkpoint(small, recipe.get_model(p_ctc)[0], params=p_ctc)
    path = _variant(run, "other-encoder.pt", base_checkpoints={"encoder": str(small), "llm": str(run["lm"])})
    with pytest.raises(CheckpointError, match=r"other-encoder.pt: its base checkpoint encoder=.*encoder-small.pt "
                                              r"does not fit: ") as e:
        _transcribe_load(path)
    assert "\n" not in str(e.value)


def test_frozen_weights_no_base_holds_are_refused(run):
    path = _variant(run, "no-base.pt", base_checkpoints={}, encoder_checkpoint="", rwkv_checkpoint="")
    with pytest.raises(CheckpointError, match=r"no-base.pt holds only the trained weights, and its base "
                                              r"checkpoints \(none\) do not hold \d+ others, e.g. \['encoder\."):
        _transcribe_load(path)
