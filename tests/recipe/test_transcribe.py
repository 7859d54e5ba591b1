"""transcribe.py: every file is tried, each failure one line, the exit status counts them; channel 0 as
the data import; --max-new-tokens and an untrained model_avg are not silent. (No model is trained
here: the model and the search are stand-ins.)"""
import sys

import numpy as np
import pytest
import soundfile as sf
import torch

from zipformer_rwkv import recipe, transcribe
from zipformer_rwkv.utils import AttributeDict

SR = 16000


def _tone(hz: float, seconds: float = 0.5) -> np.ndarray:
    return 0.3 * np.sin(2 * np.pi * hz * np.arange(int(SR * seconds)) / SR)


def _fake_model(monkeypatch, truncate_longer_than: int = 10**9):
    """load_model -> stand-ins; recognize -> "frames=T" (NOTE_TRUNCATED when T > the limit)."""
    params = AttributeDict(model_type="llm", adapter_downsample=2)
    monkeypatch.setattr(transcribe, "load_model", lambda args: (params, None, {}))

    def recognize(model, tokenizers, feats, feat_lens, options):
        t = int(feat_lens[0])
        return [f"frames={t}"], [recipe.NOTE_TRUNCATED if t > truncate_longer_than else ""]

    monkeypatch.setattr(recipe, "recognize", recognize)


def test_every_file_is_tried_and_failures_are_counted(tmp_path, monkeypatch, capsys):
    _fake_model(monkeypatch)
    good1, good2 = tmp_path / "a.wav", tmp_path / "d.wav"
    sf.write(good1, _tone(440), SR)
    sf.write(good2, _tone(440), SR)
    empty = tmp_path / "c.wav"
    sf.write(empty, np.zeros(0), SR)  # a header-only WAV
    junk = tmp_path / "e.wav"
    junk.write_bytes(b"RIFF not really")
    files = [good1, tmp_path / "b.wav", empty, good2, junk]
    monkeypatch.setattr(sys, "argv", ["transcribe.py", "--checkpoint", "x.pt", *map(str, files)])
    with pytest.raises(SystemExit) as info:
        transcribe.main()
    assert info.value.code == 3
    out, err = capsys.readouterr()
    assert [line.split("\t")[0] for line in out.splitlines()] == [str(good1), str(good2)]
    lines = err.strip().splitlines()
    assert lines[0] == f"transcribe.py: {tmp_path / 'b.wav'}: no such audio file"
    assert lines[1].startswith(f"transcribe.py: {empty}: no audio samples")
    assert lines[2].startswith(f"transcribe.py: {junk}: cannot read audio")
    assert lines[3] == "transcribe.py: 2 of 5 files transcribed, 3 failed, 0 hit --max-new-tokens"


def test_hitting_max_new_tokens_is_reported(tmp_path, monkeypatch, capsys):
    _fake_model(monkeypatch, truncate_longer_than=60)
    short, long = tmp_path / "short.wav", tmp_path / "long.wav"
    sf.write(short, _tone(440, 0.5), SR)
    sf.write(long, _tone(440, 1.0), SR)
    monkeypatch.setattr(sys, "argv", ["transcribe.py", "--checkpoint", "x.pt", "--max-new-tokens", "7",
                                      str(short), str(long)])
    transcribe.main()  # no failure: exit status 0
    out, err = capsys.readouterr()
    assert len(out.splitlines()) == 2
    assert f"transcribe.py: {long}: {recipe.NOTE_TRUNCATED}: stopped after --max-new-tokens 7" in err
    assert str(short) not in err and "1 hit --max-new-tokens" in err


def test_multichannel_audio_uses_channel_0_as_the_data_import(tmp_path):
    left, right = _tone(300), _tone(2000)
    stereo, mono = tmp_path / "stereo.wav", tmp_path / "left.wav"
    sf.write(stereo, np.stack([left, right], axis=1), SR)
    sf.write(mono, left, SR)
    assert torch.equal(transcribe.load_fbank(stereo), transcribe.load_fbank(mono))


def test_averaged_model_of_a_run_shorter_than_average_period_is_refused(tmp_path):
    path = tmp_path / "epoch-1.pt"
    torch.save({"model_type": "ctc", "model": {}, "model_avg": {}, "batch_idx_train": 150,
                "average_period": 200}, path)
    args = transcribe.get_parser().parse_args(["--checkpoint", str(path), "--use-averaged-model", "true", "a.wav"])
    with pytest.raises(ValueError, match=r"epoch-1.pt: model_avg is still the initial weights \(150 updates"):
        transcribe.load_model(args)


# ------------------------------------------------------------------------------------ --streaming


class _Ids:
    """Tokenizer stand-in: ids as text."""

    @staticmethod
    def decode(ids):
        return " ".join(map(str, ids))


def _streaming_model(monkeypatch, causal=True):
    from tiny_models import causal_speech_llm

    model = causal_speech_llm("ctc", chunk_frames=8, chunk=16, causal=causal)
    monkeypatch.setattr(transcribe, "load_model", lambda args: (AttributeDict(model_type="llm"), model,
                                                                {"llm": _Ids()}))
    return model


def _run(monkeypatch, capsys, files, stdin=b""):
    import io

    monkeypatch.setattr(sys, "stdin", type("Stdin", (), {"buffer": io.BytesIO(stdin)})())
    monkeypatch.setattr(sys, "argv", ["transcribe.py", "--checkpoint", "x.pt", "--streaming", "true",
                                      "--max-new-tokens", "3", *map(str, files)])
    transcribe.main()
    return capsys.readouterr().out.splitlines()


def test_streaming_stdin_pcm_equals_the_wav_file_and_the_batch_decoder(tmp_path, monkeypatch, capsys):
    from zipformer_rwkv.decoding.search import DecodingOptions
    from zipformer_rwkv.speechllm.streaming import streaming_generate

    model = _streaming_model(monkeypatch)
    wav = tmp_path / "a.wav"
    rng = np.random.default_rng(0)
    sf.write(wav, 0.2 * rng.standard_normal(int(SR * 1.9)), SR, subtype="PCM_16")
    from_file = _run(monkeypatch, capsys, [wav])
    pcm = sf.read(wav, dtype="int16")[0].tobytes()
    from_stdin = _run(monkeypatch, capsys, ["-"], stdin=pcm)
    assert [line.split("\t", 1)[1] for line in from_stdin] == [line.split("\t", 1)[1] for line in from_file]
    # partial lines after each 0.32 s chunk (path, seconds, transcript so far), then the final line
    partial, final = from_file[:-1], from_file[-1].split("\t")
    assert len(partial) == 5 and [p.split("\t")[1] for p in partial] == ["0.32s", "0.64s", "0.96s", "1.28s", "1.60s"]
    assert len(final) == 2 and final[0] == str(wav)
    feats = transcribe.load_fbank(wav)
    hyp = streaming_generate(model, feats.unsqueeze(0), torch.tensor([feats.shape[0]]),
                             DecodingOptions(max_new_tokens=3))[0]
    assert final[1] == _Ids.decode(hyp.tokens) and final[1]
    assert all(final[1].startswith(p.split("\t")[2]) for p in partial)


def test_streaming_refuses_a_non_causal_checkpoint_and_stdin_needs_streaming(tmp_path, monkeypatch, capsys):
    _streaming_model(monkeypatch, causal=False)
    with pytest.raises(SystemExit) as info:
        _run(monkeypatch, capsys, ["-"], stdin=b"\0\0" * 16000)
    assert info.value.code == "transcribe.py: error: --streaming needs a causal encoder: this checkpoint was " \
        "trained without --causal (train one with ./run.sh --streaming true)"
    monkeypatch.setattr(sys, "argv", ["transcribe.py", "--checkpoint", "x.pt", "-"])
    with pytest.raises(SystemExit, match="needs --streaming true"):
        transcribe.main()
