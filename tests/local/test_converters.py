"""Manifest converters in local/: NeMo and SLAM/WeNet JSONL import, every bad-input case, LibriSpeech
layout, LM text and BPE. Audio is generated with soundfile (tones + noise)."""
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from lhotse import load_manifest

from import_manifest import import_manifest
from prepare_lm_text import build_lm_text, norm_key
from train_bpe_model import train_bpe

ROOT = Path(__file__).resolve().parents[2]


def tone(path: Path, sr: int = 16000, seconds: float = 1.5, channels: int = 1, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(int(sr * seconds)) / sr
    x = np.stack([0.3 * np.sin(2 * np.pi * (220 + 110 * c) * t) + 0.01 * rng.standard_normal(t.shape)
                  for c in range(channels)], axis=1).astype(np.float32)
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, x if channels > 1 else x[:, 0], sr)
    return x


def write_lines(path: Path, lines) -> Path:
    with open(path, "wb") as f:
        for line in lines:
            f.write((json.dumps(line) if isinstance(line, dict) else line).encode("utf-8")
                    if not isinstance(line, bytes) else line)
            f.write(b"\n")
    return path


def run_import(tmp_path, lines, fmt="nemo", **kw):
    m = write_lines(tmp_path / "in.jsonl", lines)
    cuts, report = import_manifest(m, fmt, tmp_path / "out", "c", "s", **kw)
    return cuts, report, (tmp_path / "out" / "c_s_skipped.txt").read_text(encoding="utf-8")


def test_nemo_import_fields_paths_and_custom(tmp_path):
    tone(tmp_path / "wav" / "a.flac", seconds=2.0)
    tone(tmp_path / "wav" / "long.flac", seconds=4.0)
    cuts, report, text = run_import(tmp_path, [
        {"audio_filepath": "wav/a.flac", "duration": 2.0, "text": "HELLO  WORLD", "speaker": "kal",
         "lang": "en", "engine": "flite", "id": "utt1"},
        {"audio_filepath": str(tmp_path / "wav" / "long.flac"), "duration": 1.5, "offset": 1.0,
         "text": "SEGMENT", "sampling_rate": 16000},
    ])
    assert report.num_kept == 2 and report.num_skipped == 0
    c = cuts["utt1"]
    assert c.duration == pytest.approx(2.0) and c.sampling_rate == 16000
    sup = c.supervisions[0]
    assert (sup.text, sup.speaker, sup.language) == ("HELLO WORLD", "kal", "en")
    assert c.custom == {"engine": "flite"}
    assert Path(c.recording.sources[0].source) == tmp_path / "wav" / "a.flac"
    seg = cuts["wav_long-000100-000150"]
    assert (seg.start, seg.duration) == (pytest.approx(1.0), pytest.approx(1.5))
    assert seg.load_audio().shape == (1, 24000)
    assert "sampling_rate" not in (seg.custom or {})
    for kind in ("recordings", "supervisions", "cuts"):
        assert len(load_manifest(tmp_path / "out" / f"c_{kind}_s.jsonl.gz")) == 2
    assert "kept 2, skipped 0" in text


def test_nemo_custom_text_field(tmp_path):
    tone(tmp_path / "a.wav")
    cuts, report, _ = run_import(tmp_path, [{"audio_filepath": "a.wav", "duration": 1.5, "answer": "HI"}],
                                 text_field="answer")
    assert cuts[0].supervisions[0].text == "HI"


@pytest.mark.parametrize("style", ["slam", "wenet"])
def test_jsonl_import(tmp_path, style):
    tone(tmp_path / "x.flac")
    keys = ("source", "target") if style == "slam" else ("wav", "txt")
    cuts, report, _ = run_import(tmp_path, [{"key": "k1", keys[0]: "x.flac", keys[1]: "SOME TEXT",
                                             "task": "asr"}], fmt="jsonl")
    assert len(cuts) == 1 and cuts["k1"].supervisions[0].text == "SOME TEXT"
    assert cuts["k1"].duration == pytest.approx(1.5) and cuts["k1"].custom == {"task": "asr"}


def test_jsonl_missing_keys_reported(tmp_path):
    tone(tmp_path / "x.flac")
    with pytest.raises(ValueError, match="no usable entry"):
        run_import(tmp_path, [{"key": "k1", "source": "x.flac"}], fmt="jsonl")
    text = (tmp_path / "out" / "c_s_skipped.txt").read_text()
    assert "in.jsonl:1" in text and "missing keys target" in text


GOOD = {"audio_filepath": "good.flac", "duration": 1.5, "text": "GOOD"}


def _bad_cases(tmp: Path):
    """(name, manifest line, expected reason key, expected text in the report line)."""
    (tmp / "corrupt.flac").write_bytes(b"not audio at all" * 50)
    sf.write(tmp / "empty.wav", np.zeros(0, dtype=np.float32), 16000)
    return [
        ("missing audio", {**GOOD, "audio_filepath": "nope.flac"}, "missing_audio", "nope.flac"),
        ("corrupt audio", {**GOOD, "audio_filepath": "corrupt.flac"}, "corrupt_audio", "corrupt.flac"),
        ("zero-length audio", {**GOOD, "audio_filepath": "empty.wav"}, "zero_length_audio", "empty.wav"),
        ("empty transcript", {**GOOD, "text": "   "}, "empty_text", "transcript is empty"),
        ("non-UTF-8 transcript", b'{"audio_filepath": "good.flac", "duration": 1.5, "text": "CAF\xc9"}',
         "not_utf8", "not valid UTF-8"),
        ("bad JSON", '{"audio_filepath": "good.flac", "duration": ', "bad_json", "Expecting value"),
        ("missing keys", {"audio_filepath": "good.flac", "text": "X"}, "missing_keys", "missing keys duration"),
        ("not an object", "[1, 2]", "bad_json", "expected a JSON object"),
        ("segment past the end", {**GOOD, "offset": 1.0, "duration": 2.0}, "bad_segment", "past the end"),
        ("duplicate id", {**GOOD, "id": "good"}, "duplicate_id", "already used"),
        ("_skipme", {**GOOD, "_skipme": True}, "skipme", "_skipme"),
    ]


def test_every_bad_input_is_one_counted_report_line(tmp_path):
    tone(tmp_path / "good.flac")
    cases = _bad_cases(tmp_path)
    lines = [{**GOOD, "id": "good"}] + [c[1] for c in cases]
    cuts, report, text = run_import(tmp_path, lines)
    assert [c.id for c in cuts] == ["good"]
    assert report.num_skipped == len(cases)
    report_lines = [ln for ln in text.splitlines() if ln.startswith("SKIP")]
    assert len(report_lines) == len(cases)
    for i, (name, _, reason, needle) in enumerate(cases):
        line = report_lines[i]
        assert line.startswith(f"SKIP {tmp_path / 'in.jsonl'}:{i + 2}"), (name, line)
        assert f": {reason}:" in line and needle in line, (name, line)
    for reason in {c[2] for c in cases}:
        assert f"{reason}={sum(c[2] == reason for c in cases)}" in text.splitlines()[-1]


@pytest.mark.parametrize("sr", [8000, 22050, 44100])
def test_other_sampling_rates_are_resampled(tmp_path, sr):
    tone(tmp_path / "a.flac", sr=sr, seconds=1.5)
    cuts, report, text = run_import(tmp_path, [{**GOOD, "audio_filepath": "a.flac"}])
    c = cuts[0]
    assert c.sampling_rate == 16000 and report.fixed["resampled"] == 1
    assert f"at {sr} Hz, resampled to 16000 Hz" in text
    audio = c.load_audio()
    assert audio.shape == (1, 24000)
    # energy of the 220 Hz tone survives the resampling
    spec = np.abs(np.fft.rfft(audio[0]))
    assert abs(np.argmax(spec) * 16000 / 24000 - 220) < 2


def test_stereo_uses_first_channel(tmp_path):
    x = tone(tmp_path / "st.flac", channels=2)
    cuts, report, text = run_import(tmp_path, [{**GOOD, "audio_filepath": "st.flac"}])
    assert report.fixed["multi_channel"] == 1 and "2 channels" in text and "using channel 0" in text
    audio = cuts[0].load_audio()
    assert audio.shape == (1, x.shape[0])
    np.testing.assert_allclose(audio[0], x[:, 0], atol=1e-4)


def test_cli_exit_status_and_missing_manifest(tmp_path):
    r = subprocess.run([sys.executable, str(ROOT / "local/import_manifest.py"), "--manifest",
                        str(tmp_path / "absent.jsonl"), "--output-dir", str(tmp_path), "--prefix", "x"],
                       capture_output=True, text=True)
    assert r.returncode == 1 and "manifest not found" in r.stderr and "Traceback" not in r.stderr


def make_fake_librispeech(root: Path, parts=("train-clean-100", "dev-clean", "test-clean")) -> Path:
    """A tiny tree in LibriSpeech layout: {part}/{spk}/{chapter}/{spk}-{chapter}-{utt}.flac + trans.txt."""
    corpus = root / "LibriSpeech"
    for p_idx, part in enumerate(parts):
        for spk in (100 + p_idx, 200 + p_idx):
            d = corpus / part / str(spk) / "10"
            lines = []
            for u in range(3):
                uid = f"{spk}-10-{u:04d}"
                tone(d / f"{uid}.flac", seconds=1.2 + 0.3 * u, seed=spk + u)
                lines.append(f"{uid} {part.upper().replace('-', ' ')} SPEAKER {spk} NUMBER {u}")
            (d / f"{spk}-10.trans.txt").write_text("\n".join(lines) + "\n")
    return corpus


def test_librispeech_fake_tree(tmp_path):
    corpus = make_fake_librispeech(tmp_path)
    out = tmp_path / "manifests"
    r = subprocess.run([sys.executable, str(ROOT / "local/prepare_librispeech.py"), "--corpus-dir", str(corpus),
                        "--output-dir", str(out), "--parts", "train-clean-100 dev-clean", "--nj", "1"],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    cuts = load_manifest(out / "librispeech_cuts_dev-clean.jsonl.gz")
    assert len(cuts) == 6
    c = next(c for c in cuts if c.supervisions[0].id == "101-10-0001")
    assert c.supervisions[0].text == "DEV CLEAN SPEAKER 101 NUMBER 1"
    assert c.supervisions[0].speaker == "101" and c.duration == pytest.approx(1.5)
    r = subprocess.run([sys.executable, str(ROOT / "local/prepare_librispeech.py"), "--corpus-dir", str(corpus),
                        "--output-dir", str(out), "--parts", "train-other-500"], capture_output=True, text=True)
    assert r.returncode == 1 and "train-other-500 not found" in r.stderr


def test_lm_text_excludes_dev_test_and_dedups(tmp_path):
    a = tmp_path / "a.txt"
    a.write_text("HELLO THERE\nA DEV SENTENCE\nhello,  there!\nKEEP ME\n\n")
    b = tmp_path / "b.txt"
    b.write_text("a dev sentence.\nANOTHER ONE\n")
    lines = build_lm_text([a, b], exclude={norm_key("A DEV SENTENCE")})
    assert lines == ["HELLO THERE", "KEEP ME", "ANOTHER ONE"]
    (tmp_path / "bad.txt").write_bytes(b"OK\n\xff\xfe\n")
    with pytest.raises(ValueError, match="bad.txt:2: not valid UTF-8"):
        build_lm_text([tmp_path / "bad.txt"], set())


def test_bpe_icefall_special_ids(tmp_path):
    words = "THE QUICK BROWN FOX JUMPS OVER LAZY DOG AND RUNS AWAY FROM HOME".split()
    rng = np.random.default_rng(0)
    (tmp_path / "t.txt").write_text("\n".join(" ".join(rng.choice(words, 6)) for _ in range(200)) + "\n")
    sp = train_bpe(tmp_path / "lang", 40, tmp_path / "t.txt")
    assert [sp.id_to_piece(i) for i in range(3)] == ["<blk>", "<sos/eos>", "<unk>"]
    assert sp.unk_id() == 2 and sp.bos_id() == -1 and sp.eos_id() == -1 and sp.get_piece_size() == 40
    tokens = (tmp_path / "lang" / "tokens.txt").read_text().splitlines()
    assert tokens[0] == "<blk> 0" and len(tokens) == 40
    with pytest.raises(ValueError, match="smaller --vocab-size"):
        train_bpe(tmp_path / "lang2", 5000, tmp_path / "t.txt")
