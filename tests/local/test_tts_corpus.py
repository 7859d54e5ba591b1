"""Tests for the built-in TTS corpus (local/make_tts_corpus.py, local/prepare_noise.py, local/tts_corpus/).

End-to-end tests build the tiny corpus (~180 utts) in temp dirs; the Debian text packages are cached in
the repo's download/deb (git-ignored) so they are fetched once.
"""
import hashlib
import json
import os
import random
import re
import shutil
import struct

import numpy as np
import pytest
import soundfile as sf

import make_tts_corpus
import prepare_noise
from tts_corpus import rdata, synth, text, voices
from tts_corpus.debian import DebianPackageError
from tts_corpus.voices import Voice
from zipformer_rwkv.utils import repo_root

DEB_DIR = repo_root() / "download" / "deb"
TOOLS = ("sox", "espeak-ng", "flite", "festival", "dpkg-deb")
needs_tools = pytest.mark.skipif(any(shutil.which(t) is None for t in TOOLS),
                                 reason=f"needs Debian tools {TOOLS} (local/install_deps.sh)")
SPLITS = ("train", "dev", "test")


def read_jsonl(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def build_tiny(out_dir, nj, extra=()):
    try:
        return make_tts_corpus.main(["--out-dir", str(out_dir), "--size", "tiny", "--nj", str(nj), "--seed", "7",
                                     "--deb-dir", str(DEB_DIR), *extra])
    except DebianPackageError as e:
        pytest.skip(f"Debian text packages unavailable: {e}")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    out = tmp_path_factory.mktemp("tts_en")
    summary = build_tiny(out, nj=2)
    return out, summary


# ---------------------------------------------------------------- text
def test_normalize_transcript():
    assert text.normalize_transcript("\"Well, Mister Knightley,\" said she; 'tis o'clock!") == \
        "WELL MISTER KNIGHTLEY SAID SHE TIS O'CLOCK"
    assert text.normalize_transcript("An éclat -- to-morrow  ") == "AN ECLAT TO MORROW"
    assert text.normalize_transcript("the ladies' maids") == "THE LADIES MAIDS"
    assert text.normalize_transcript("...") == ""


def test_clean_sentence():
    assert text.clean_sentence('"I cannot tell, Mr. Weston--indeed I cannot," said _she_.') == \
        "I cannot tell, Mister Weston, indeed I cannot, said she."
    assert text.clean_sentence("we were at last able to buy a car.") == "We were at last able to buy a car."
    assert text.clean_sentence("He was born in 1760, in the spring.") is None  # digits
    assert text.clean_sentence("A quick, low pulse, &c. and she was sorry.") is None  # symbol
    assert text.clean_sentence("Too short here.") is None  # 3 words
    assert text.clean_sentence(" ".join(["word"] * 31) + ".") is None  # 31 words
    assert text.clean_sentence(" ".join(["word"] * 30) + ".") is not None
    assert text.clean_sentence("It does not end with a stop") is None


def test_paragraphs_and_sentence_split():
    lines = ["EMMA", "", "CHAPTER I", "", "Mr. Woodhouse was fond of society. She", "went out!",
             "", "Chapter 2", "", '"Nay, read on.--You will see." And so on?']
    paras = text.paragraphs(lines)
    assert paras == ["EMMA", "Mr. Woodhouse was fond of society. She went out!",
                     '"Nay, read on.--You will see." And so on?']
    assert text.split_sentences(paras[1]) == ["Mister Woodhouse was fond of society.", "She went out!"]
    assert text.split_sentences(paras[2]) == ['"Nay, read on.', '-- You will see.', "And so on?"]


def test_split_pool_disjoint_and_too_small():
    pool = [text.Sentence(f"S {i}.", f"S{i}", "x") for i in range(50)]
    parts = text.split_pool(pool, 20, 5, 5)
    assert [len(parts[k]) for k in ("train", "dev", "test", "rest")] == [20, 5, 5, 20]
    assert len({s.transcript for p in parts.values() for s in p}) == 50
    assert text.split_pool(pool, 10, 5, 5)["dev"] == parts["dev"]  # dev/test independent of num_train
    with pytest.raises(ValueError, match="only 50"):
        text.split_pool(pool, 41, 5, 5)


# ---------------------------------------------------------------- R reader
def _xdr_strsxp(items, names=None):
    def i32(x):
        return struct.pack(">i", x)

    def charsxp(s):
        return i32(9 | (1 << 15)) + (i32(-1) if s is None else i32(len(s.encode())) + s.encode())

    flags = 16 | ((1 << 9) if names else 0)
    body = i32(flags) + i32(len(items)) + b"".join(charsxp(s) for s in items)
    if names:  # attribute pairlist: tag "names" (SYMSXP) -> STRSXP
        body += i32(2 | (1 << 10)) + i32(1) + charsxp("names") + i32(16) + i32(len(names)) + \
            b"".join(charsxp(s) for s in names) + i32(254)
    return b"X\n" + i32(3) + i32(0x040201) + i32(0x030500) + i32(5) + b"UTF-8" + body


def test_rdata_unserialize_strings_na_and_names():
    obj = rdata.unserialize(_xdr_strsxp(["It is a truth", None, "caf\u00e9"], names=["a", "b", "c"]))
    assert list(obj) == ["It is a truth", None, "caf\u00e9"]
    assert list(obj.attributes["names"]) == ["a", "b", "c"]
    with pytest.raises(rdata.RDataError, match="truncated"):
        rdata.unserialize(_xdr_strsxp(["abc"])[:-2], "x.rdb")
    with pytest.raises(rdata.RDataError, match="not XDR"):
        rdata.unserialize(b"RDX2\n", "x.rdb")


# ---------------------------------------------------------------- voices
def _recorded(voice):  # the recorded speaker behind a voice (kal/slt exist in flite and festival)
    return {"kal16": "kal", "kal_diphone": "kal", "cmu_us_slt_arctic_hts": "slt",
            "ked_diphone": "ked"}.get(voice.name, voice.name)


def test_voice_mixes_test_unseen_dev_mixed_noise_apart():
    train = set(voices.TRAIN_MIX)
    test_v, dev_v = set(voices.TEST_MIX), set(voices.DEV_MIX)
    assert not train & test_v
    assert not {_recorded(v) for v in train if v.engine != "espeak"} & {_recorded(v) for v in test_v}
    espeak_accent = {v.name.split("+")[0] for v in train if v.engine == "espeak"}
    assert all(v.name.split("+")[0] not in espeak_accent for v in test_v if v.engine == "espeak")
    assert dev_v & train and dev_v - train
    assert not set(voices.NOISE_VOICES) & (train | test_v | dev_v)


def test_allocate_proportions_and_determinism():
    mix = {Voice("flite", "rms"): 3.0, Voice("flite", "awb"): 1.0}
    got = voices.allocate(mix, 10, random.Random(1))
    assert len(got) == 10 and got.count(Voice("flite", "rms")) in (7, 8)
    assert got == voices.allocate(mix, 10, random.Random(1))
    assert voices.sample_params(Voice("espeak", "en-us"), "a") == voices.sample_params(Voice("espeak", "en-us"), "a")


# ---------------------------------------------------------------- synthesis & skips
@needs_tools
def test_run_job_reports_failures(tmp_path):
    def utt(i, t):
        return synth.Utterance(f"u{i}", t, str(tmp_path / f"u{i}.flac"), {"gain_db": -3.0})
    ok = synth.run_job(synth.SynthJob(Voice("espeak", "en-us"), (utt(0, "Hello there, how are you today?"),
                                                                 utt(1, "..."))))
    assert ok[0].reason is None and ok[0].duration > 0.5
    assert sf.info(str(tmp_path / "u0.flac")).samplerate == 16000
    assert ok[1].duration is None and re.match("too short|silent output", ok[1].reason)
    assert not (tmp_path / "u1.flac").exists()
    bad = synth.run_job(synth.SynthJob(Voice("espeak", "zz-nonexistent"), (utt(2, "Hello there friend."),)))
    assert bad[0].duration is None and "espeak-ng failed" in bad[0].reason
    bad = synth.run_job(synth.SynthJob(Voice("flite", "nosuch"), (utt(3, "Hello there friend."),)))
    assert "flite has no voice" in bad[0].reason
    # festival stops at the first error: that utterance is skipped, the rest restart and succeed
    fest = synth.run_job(synth.SynthJob(Voice("festival", "kal_diphone"),
                                        (utt(4, "The first sentence is fine."),
                                         synth.Utterance("u5", "Second.", "/nonexistent/dir/u5.flac", {}),
                                         utt(6, "The third one is fine too."))))
    assert [r.utt_id for r in fest] == ["u4", "u5", "u6"]
    assert fest[0].duration and fest[2].duration and fest[1].duration is None


@needs_tools
def test_skipped_sentences_listed_and_counted(tmp_path, monkeypatch):
    bad_espeak, bad_fest = Voice("espeak", "zz-nonexistent"), Voice("festival", "no_such_voice")
    monkeypatch.setattr(make_tts_corpus, "SPLIT_MIXES", {
        "train": {Voice("espeak", "en-us+m1"): 1.0, bad_espeak: 1.0},
        "dev": {Voice("espeak", "en-us+m1"): 1.0}, "test": {bad_fest: 1.0}})
    summary = build_tiny(tmp_path, nj=1, extra=["--num-train-utts", "6", "--num-dev-utts", "2",
                                                "--num-test-utts", "2"])
    rows = [ln.split("\t") for ln in (tmp_path / "skipped.txt").read_text().splitlines()[1:]]
    assert {r[2] for r in rows} == {bad_espeak.speaker, bad_fest.speaker}
    assert len(rows) == 5 and summary["skipped_total"] == 5
    assert summary["splits"]["train"] == {**summary["splits"]["train"], "utts": 3, "skipped": 3}
    assert summary["splits"]["test"]["utts"] == 0 and summary["splits"]["test"]["skipped"] == 2
    assert all(r[3] for r in rows)  # a reason on every line
    manifest_ids = {e["id"] for s in SPLITS for e in read_jsonl(tmp_path / f"{s}.jsonl")}
    assert not manifest_ids & {r[0] for r in rows}
    assert not any((tmp_path / r[1] / f"{r[0]}.flac").exists() for r in rows)


# ---------------------------------------------------------------- end to end
@needs_tools
def test_tiny_corpus_files_and_manifests(tiny):
    out, summary = tiny
    for split, n in zip(SPLITS, (120, 30, 30)):
        entries = read_jsonl(out / f"{split}.jsonl")
        assert len(entries) + summary["splits"][split]["skipped"] == n
        assert len(entries) >= n - 2  # the engines speak (nearly) everything
        for e in entries:
            assert {"audio_filepath", "duration", "text", "id", "speaker", "engine", "voice", "source"} <= set(e)
            info = sf.info(str(out / e["audio_filepath"]))
            assert (info.samplerate, info.channels, info.subtype) == (16000, 1, "PCM_16")
            assert info.frames / 16000 == pytest.approx(e["duration"], abs=1e-6)
            assert e["duration"] >= 0.3
            assert re.fullmatch(r"[A-Z']+( [A-Z']+)*", e["text"]), e["text"]
            assert 5 <= len(e["text"].split()) <= 30
            assert e["id"].startswith(e["speaker"]) and e["audio_filepath"] == f"{split}/{e['id']}.flac"
    assert summary["splits"]["train"]["hours"] > 0.05


@needs_tools
def test_tiny_corpus_splits_disjoint_speakers_and_reserved_book(tiny):
    out, _ = tiny
    texts = {s: [e["text"] for e in read_jsonl(out / f"{s}.jsonl")] for s in SPLITS}
    lm = out.joinpath("lm_text.txt").read_text().splitlines()
    assert len(lm) > 40000 and all(re.fullmatch(r"[A-Z']+( [A-Z']+)*", t) for t in lm[:2000])
    sets = {**{s: set(t) for s, t in texts.items()}, "lm": set(lm)}
    assert all(len(set(t)) == len(t) for t in texts.values())
    names = list(sets)
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            assert not sets[a] & sets[b], (a, b)
    speakers = {s: {e["speaker"] for e in read_jsonl(out / f"{s}.jsonl")} for s in SPLITS}
    assert not speakers["test"] & speakers["train"]
    assert speakers["dev"] & speakers["train"] and speakers["dev"] - speakers["train"]
    reserved = text.reserved_transcripts(DEB_DIR)
    assert len(reserved) > 4000
    assert not reserved & set().union(*sets.values())
    sources = {e["source"] for s in SPLITS for e in read_jsonl(out / f"{s}.jsonl")}
    assert not any("sensesensibility" in s for s in sources)
    assert any(s.startswith("austen:") for s in sources) and any(s.startswith("wordnet:") for s in sources)


@needs_tools
def test_tiny_corpus_deterministic(tiny, tmp_path):
    out, _ = tiny
    build_tiny(tmp_path, nj=1)  # same seed, other worker count
    for name in ("train.jsonl", "dev.jsonl", "test.jsonl", "lm_text.txt", "skipped.txt"):
        assert (out / name).read_bytes() == (tmp_path / name).read_bytes(), name
    for e in read_jsonl(out / "test.jsonl")[:10] + read_jsonl(out / "train.jsonl")[:10]:
        a, b = (hashlib.md5((d / e["audio_filepath"]).read_bytes()).hexdigest() for d in (out, tmp_path))
        assert a == b, e["id"]


def test_cli_rejects_bad_sizes(tmp_path):
    with pytest.raises(SystemExit, match="must be >= 0"):
        make_tts_corpus.main(["--out-dir", str(tmp_path), "--num-dev-utts", "-1", "--deb-dir", str(DEB_DIR)])


# ---------------------------------------------------------------- noise
@needs_tools
def test_noise_tiny(tiny, tmp_path):
    out, _ = tiny
    summary = prepare_noise.main(["--out-dir", str(tmp_path), "--text", str(out / "lm_text.txt"),
                                  "--size", "tiny", "--nj", "2"])
    entries = read_jsonl(tmp_path / "noise.jsonl")
    kinds = [e["noise_type"] for e in entries]
    assert {k: kinds.count(k) for k in set(kinds)} == {"white": 2, "pink": 2, "brown": 2, "babble": 3}
    assert summary["files"] == 9
    for e in entries:
        audio, sr = sf.read(str(tmp_path / e["audio_filepath"]), dtype="float32")
        assert sr == 16000 and audio.ndim == 1 and e["text"] == ""
        assert len(audio) / sr == pytest.approx(e["duration"], abs=1e-6) and 5.0 <= e["duration"] <= 8.0
        assert 1e-3 < np.sqrt(np.mean(audio ** 2)) < 0.5
    white = sf.read(str(tmp_path / "white-0000.flac"))[0]
    brown = sf.read(str(tmp_path / "brown-0000.flac"))[0]
    # brown noise is dominated by low frequencies: neighbouring samples correlate far more than white
    corr = [np.corrcoef(x[:-1], x[1:])[0, 1] for x in (white, brown)]
    assert corr[1] > corr[0] + 0.3


def test_noise_missing_text(tmp_path):
    with pytest.raises(SystemExit, match="no such file"):
        prepare_noise.main(["--out-dir", str(tmp_path), "--text", str(tmp_path / "nope.txt")])


# ---------------------------------------------------------------- private apt downloads
FAKE_APT = """#!/bin/sh
# fake apt-get: logs its arguments; `download P...` writes P_1.0_all.deb (fails on 'absent')
echo "$*" >> "$FAKE_APT_LOG"
for a in "$@"; do last=$a; done
case " $* " in
  *" download "*) for a in "$@"; do
      case "$a" in -*|download) ;; absent) echo "E: Unable to locate package absent" >&2; exit 100 ;;
        *) : > "${a}_1.0_all.deb" ;; esac; done ;;
esac
"""


def test_private_download_uses_its_own_apt_config_and_skips_present_debs(tmp_path, monkeypatch):
    from tts_corpus.debian import private_download

    (tmp_path / "bin").mkdir()
    fake = tmp_path / "bin" / "apt-get"
    fake.write_text(FAKE_APT)
    fake.chmod(0o755)
    log = tmp_path / "apt.log"
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}:{os.environ['PATH']}")
    monkeypatch.setenv("FAKE_APT_LOG", str(log))
    dest, apt_dir = tmp_path / "debs", tmp_path / "apt"
    debs = private_download(["mbrola", "blanket"], dest, apt_dir, "trixie", "main contrib")
    assert debs == [dest / "mbrola_1.0_all.deb", dest / "blanket_1.0_all.deb"]
    assert (apt_dir / "sources.list").read_text() == (
        "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian "
        "trixie main contrib\n")
    calls = log.read_text().splitlines()
    assert len(calls) == 2 and calls[0].endswith(" update") and calls[1].endswith(" download mbrola blanket")
    for call in calls:  # every call reads the private config only
        assert f"-o=Dir::Etc::SourceList={apt_dir / 'sources.list'}" in call
        assert "-o=Dir::Etc::SourceParts=/dev/null" in call and f"-o=Dir::State::Lists={apt_dir / 'lists'}" in call
    # present .debs are not fetched again; only the missing one is
    assert private_download(["blanket"], dest, apt_dir, "trixie") == [dest / "blanket_1.0_all.deb"]
    assert len(log.read_text().splitlines()) == 2
    private_download(["blanket", "festlex-oald"], dest, apt_dir, "trixie")
    assert log.read_text().splitlines()[-1].endswith(" download festlex-oald")
    with pytest.raises(DebianPackageError) as e:
        private_download(["absent"], dest, apt_dir, "trixie")
    assert str(e.value) == "apt-get download absent failed: E: Unable to locate package absent"
