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
