"""Voice inventory of the built-in corpus, the per-split voice mixes and the presets (``egs/tts_en/README.md``).

``default`` preset: five recorded speakers (kal, ked, awb, rms, slt; kal and slt in both flite and
festival) plus espeak-ng's formant voices (accent x variant). Train uses "seen" voices; test only
speakers never heard in training (flite rms, festival ked_diphone, espeak accents absent from train);
dev is mostly the train mix with a quarter of unseen voices that are not the test's espeak accents.

``bank`` preset: the default voices plus the voice bank: Piper joe (neural), 28 Kokoro-82M voices
(neural; 16 train, 4 dev-only, 8 test-only), RHVoice bdl/clb (train) and alan (Scottish, test only),
MBROLA us1/us2/en1 (train) and us3 (test only), festival rab_diphone (British, dev only). A mix maps a
voice to its share of the split's utterances, so a preset sets how many utterances each voice gets.
"""
from __future__ import annotations

import random
from dataclasses import dataclass

# Native output rate (Hz) of each engine; every voice is stored at 16 kHz (synth.to_flac).
ENGINE_SAMPLE_RATES = {"espeak": 22050, "flite": 16000, "festival": 16000, "piper": 22050, "kokoro": 24000,
                       "rhvoice": 24000, "mbrola": 16000}
# Prosody controls per engine (values drawn by sample_params; every engine also gets gain_db).
PROSODY = {"espeak": ("rate", "pitch"), "mbrola": ("rate", "pitch"), "flite": ("duration_stretch", "f0_mean"),
           "festival": ("duration_stretch", "f0_mean", "sox_speed"), "rhvoice": ("sox_speed",),
           "piper": ("length_scale", "noise_scale", "noise_w_scale", "seed"), "kokoro": ("speed",)}


@dataclass(frozen=True)
class Voice:
    """A TTS voice: ``engine`` in ``ENGINE_SAMPLE_RATES``; ``name`` as the engine spells it.

    espeak: ``en-us+m1``; flite: ``rms``; festival: ``ked_diphone``; piper: ``en_US-joe-medium``;
    kokoro: ``af_heart``; rhvoice: ``bdl``; mbrola: ``us1`` (spoken by ``espeak-ng -v mb-us1``).
    """

    engine: str
    name: str

    @property
    def speaker(self) -> str:
        """Speaker id used in manifests, e.g. ``flite-rms``, ``espeak-en-gb-scotland-f5``, ``kokoro-af_heart``."""
        return f"{self.engine}-{self.name.replace('+', '-')}"

    @property
    def sample_rate(self) -> int:
        """The engine's native output rate in Hz (flite ``kal`` is 8000)."""
        return 8000 if (self.engine, self.name) == ("flite", "kal") else ENGINE_SAMPLE_RATES[self.engine]

    @property
    def prosody(self) -> tuple[str, ...]:
        """Names of the per-utterance prosody controls ``sample_params`` draws for this voice."""
        return PROSODY[self.engine]


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

# ---- the voice bank (preset "bank")
PIPER_JOE = Voice("piper", "en_US-joe-medium")
KOKORO_TRAIN = [Voice("kokoro", n) for n in (
    "af_alloy", "af_aoede", "af_bella", "af_heart", "af_jessica", "af_kore", "af_nicole",
    "am_adam", "am_echo", "am_eric", "am_fenrir", "am_liam", "bf_alice", "bf_emma", "bm_daniel", "bm_fable")]
KOKORO_DEV = [Voice("kokoro", n) for n in ("af_nova", "am_michael", "bf_isabella", "bm_george")]
KOKORO_TEST = [Voice("kokoro", n) for n in ("af_river", "af_sarah", "af_sky", "am_onyx", "am_puck", "am_santa",
                                            "bf_lily", "bm_lewis")]
KOKORO_VOICES = KOKORO_TRAIN + KOKORO_DEV + KOKORO_TEST
RHVOICE_TRAIN = [Voice("rhvoice", n) for n in ("bdl", "clb")]
RHVOICE_ALAN = Voice("rhvoice", "alan")
MBROLA_TRAIN = [Voice("mbrola", n) for n in ("us1", "us2", "en1")]
MBROLA_US3 = Voice("mbrola", "us3")
FEST_RAB = Voice("festival", "rab_diphone")
# Kokoro makes ~1.1 s of audio per CPU-second (RESULTS.md): its 1.6 of 12.8 shares are 12.5% of train utts.
TRAIN_BANK_MIX = {**TRAIN_MIX, PIPER_JOE: 1.0, **{v: 0.1 for v in KOKORO_TRAIN},
                  **{v: 0.5 for v in RHVOICE_TRAIN}, **{v: 0.4 for v in MBROLA_TRAIN}}
DEV_BANK_UNSEEN = {**DEV_UNSEEN_MIX, **{v: 0.1 for v in KOKORO_DEV}, FEST_RAB: 0.2}
DEV_BANK_MIX = {**{v: 0.75 * w / sum(TRAIN_BANK_MIX.values()) for v, w in TRAIN_BANK_MIX.items()},
                **{v: 0.25 * w / sum(DEV_BANK_UNSEEN.values()) for v, w in DEV_BANK_UNSEEN.items()}}
TEST_BANK_MIX = {**TEST_MIX, **{v: 0.1 for v in KOKORO_TEST}, RHVOICE_ALAN: 0.2, MBROLA_US3: 0.2}
PRESETS = {"default": SPLIT_MIXES,
           "bank": {"train": TRAIN_BANK_MIX, "dev": DEV_BANK_MIX, "test": TEST_BANK_MIX}}

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
    ``f0_mean`` 85..140 Hz; the HTS voice ignores both, so it gets ``sox_speed`` 0.93..1.07 (sox
    ``speed``: tempo and pitch together), as do the RHVoice voices. mbrola (espeak-ng front-end):
    ``rate`` 130..190, ``pitch`` 30..70. piper: ``length_scale`` 0.85..1.2, ``noise_scale`` 0.4..0.8,
    ``noise_w_scale`` 0.5..1.0 and ``seed`` (its noise draw); kokoro: ``speed`` 0.85..1.15. Every voice:
    ``gain_db`` -10..0. Uses ``random.Random(key)`` (never ``hash()``, which is salted per process).
    """
    rng = random.Random(key)
    p: dict[str, float] = {}
    if voice.engine == "espeak":
        p["rate"], p["pitch"] = rng.randint(140, 200), rng.randint(25, 75)
    elif voice.engine == "mbrola":
        p["rate"], p["pitch"] = rng.randint(130, 190), rng.randint(30, 70)
    elif voice.engine == "piper":
        p["length_scale"] = round(rng.uniform(0.85, 1.2), 3)
        p["noise_scale"] = round(rng.uniform(0.4, 0.8), 3)
        p["noise_w_scale"] = round(rng.uniform(0.5, 1.0), 3)
        p["seed"] = rng.randrange(2**31)
    elif voice.engine == "kokoro":
        p["speed"] = round(rng.uniform(0.85, 1.15), 3)
    elif voice.engine == "rhvoice":
        p["sox_speed"] = round(rng.uniform(0.93, 1.07), 3)
    elif voice.engine == "flite":
        p["duration_stretch"] = round(rng.uniform(0.85, 1.2), 3)
        p["f0_mean"] = rng.randint(150, 230) if voice.name == "slt" else rng.randint(85, 150)
    elif voice.name.endswith("_hts"):
        p["sox_speed"] = round(rng.uniform(0.93, 1.07), 3)
    else:
        p["duration_stretch"] = round(rng.uniform(0.85, 1.2), 3)
        p["f0_mean"] = rng.randint(85, 140)
    p["gain_db"] = round(rng.uniform(-10.0, 0.0), 2)
    return p
