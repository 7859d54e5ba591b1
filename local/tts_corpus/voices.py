"""Voice inventory of the built-in corpus and the per-split voice mixes (``egs/tts_en/README.md``, "Voices").

Only five recorded speakers exist (kal, ked, awb, rms, slt; kal and slt in both flite and festival),
plus espeak-ng's formant voices (accent x variant). Train uses "seen" voices; test only speakers never
heard in training (flite rms, festival ked_diphone, espeak accents absent from train); dev is mostly
the train mix with a quarter of unseen voices that are not the test's espeak accents.
"""
from __future__ import annotations

import random
from dataclasses import dataclass


@dataclass(frozen=True)
class Voice:
    """A TTS voice: ``engine`` in {espeak, flite, festival}; ``name`` as the engine spells it."""

    engine: str
    name: str

    @property
    def speaker(self) -> str:
        """Speaker id used in manifests, e.g. ``flite-rms``, ``espeak-en-gb-scotland-f5``."""
        return f"{self.engine}-{self.name.replace('+', '-')}"


def _espeak(*names: str) -> list[Voice]:
    return [Voice("espeak", n) for n in names]


TRAIN_ESPEAK = _espeak("en-us+m1", "en-us+m3", "en-us+f1", "en-us+f2", "en-gb+m5", "en-gb+f4", "en-gb-x-rp+m7",
                       "en-gb-x-rp+f3", "en-us-nyc+m2", "en-gb-x-gbclan+m4", "en-us+klatt2", "en-gb+klatt4")
FLITE_KAL16, FLITE_AWB, FLITE_SLT, FLITE_RMS = (Voice("flite", n) for n in ("kal16", "awb", "slt", "rms"))
FEST_KAL, FEST_KED, FEST_SLT_HTS = (Voice("festival", n) for n in
                                    ("kal_diphone", "ked_diphone", "cmu_us_slt_arctic_hts"))

# Relative shares (hours of a measured pilot run of this corpus) per split.
TRAIN_MIX: dict[Voice, float] = {**{v: 2.8 / len(TRAIN_ESPEAK) for v in TRAIN_ESPEAK},
                                 FLITE_KAL16: 0.8, FLITE_AWB: 1.2, FLITE_SLT: 1.2,
                                 FEST_KAL: 0.8, FEST_SLT_HTS: 1.2}
DEV_UNSEEN_MIX = {FLITE_RMS: 0.4, FEST_KED: 0.4, Voice("espeak", "en-gb-x-gbcwmd+m2"): 0.2}
DEV_MIX = {**{v: 0.75 * w / sum(TRAIN_MIX.values()) for v, w in TRAIN_MIX.items()},
           **{v: 0.25 * w for v, w in DEV_UNSEEN_MIX.items()}}
TEST_MIX = {FLITE_RMS: 0.4, FEST_KED: 0.4, Voice("espeak", "en-gb-scotland+f5"): 0.1,
            Voice("espeak", "en-029+m6"): 0.1}
SPLIT_MIXES = {"train": TRAIN_MIX, "dev": DEV_MIX, "test": TEST_MIX}

# Voices for babble noise (local/prepare_noise.py): in no split. flite kal is the 8 kHz narrowband diphone.
NOISE_VOICES = _espeak("en-us+f4", "en-us+m6", "en-gb+m2", "en-gb-x-rp+f1", "en-us-nyc+f2", "en-gb-x-gbclan+f5",
                       "en-029+m1", "en-gb-scotland+m3") + [Voice("flite", "kal")]


def allocate(mix: dict[Voice, float], num_utts: int, rng: random.Random) -> list[Voice]:
    """Assign voices to ``num_utts`` utterances in proportion to ``mix`` (largest remainder), shuffled.

    Returns a list of length ``num_utts``; deterministic for a given ``rng`` state.
    """
    total = sum(mix.values())
    exact = {v: num_utts * w / total for v, w in mix.items()}
    counts = {v: int(x) for v, x in exact.items()}
    for v in sorted(mix, key=lambda v: (counts[v] - exact[v], v.speaker))[:num_utts - sum(counts.values())]:
        counts[v] += 1
    out = [v for v in mix for _ in range(counts[v])]
    rng.shuffle(out)
    return out


def sample_params(voice: Voice, key: str) -> dict[str, float]:
    """Seeded per-utterance prosody for ``voice``; ``key`` is e.g. ``"42/flite-rms/<utt_id>"``.

    espeak: ``rate`` 140..200 wpm, ``pitch`` 25..75; flite: ``duration_stretch`` 0.85..1.2 and
    ``f0_mean`` 85..150 Hz (slt 150..230); festival diphones: ``duration_stretch`` 0.85..1.2 and
    ``f0_mean`` 85..140 Hz; the HTS voice ignores both, so it gets sox ``speed`` 0.93..1.07. Every voice:
    ``gain_db`` -10..0. Uses ``random.Random(key)`` (never ``hash()``, which is salted per process).
    """
    rng = random.Random(key)
    p: dict[str, float] = {}
    if voice.engine == "espeak":
        p["rate"], p["pitch"] = rng.randint(140, 200), rng.randint(25, 75)
    elif voice.engine == "flite":
        p["duration_stretch"] = round(rng.uniform(0.85, 1.2), 3)
        p["f0_mean"] = rng.randint(150, 230) if voice.name == "slt" else rng.randint(85, 150)
    elif voice.name.endswith("_hts"):
        p["speed"] = round(rng.uniform(0.93, 1.07), 3)
    else:
        p["duration_stretch"] = round(rng.uniform(0.85, 1.2), 3)
        p["f0_mean"] = rng.randint(85, 140)
    p["gain_db"] = round(rng.uniform(-10.0, 0.0), 2)
    return p
