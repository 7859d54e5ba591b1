"""Tiny data for the train/decode tests: a BPE model, LM text, and a lhotse corpus of synthetic
audio (each word is a short chord, so the task is learnable) with precomputed fbank."""
import random
from pathlib import Path

import numpy as np

WORDS = ["red", "green", "blue", "cat", "dog", "bird", "one", "two", "three", "big", "small", "fast"]
SR = 16000


def sentences(n: int, seed: int):
    rng = random.Random(seed)
    return [" ".join(rng.choice(WORDS) for _ in range(rng.randint(2, 4))) for _ in range(n)]


def make_bpe(lang_dir: Path, vocab_size: int = 30) -> Path:
    """icefall-style sentencepiece model (<blk>=0, <sos/eos>=1, unk=2) trained on the word list."""
    import sentencepiece as spm

    lang_dir.mkdir(parents=True, exist_ok=True)
    text = lang_dir / "transcript_words.txt"
    text.write_text("\n".join(sentences(400, 0)) + "\n")
    spm.SentencePieceTrainer.train(
        input=str(text), model_prefix=str(lang_dir / "bpe"), vocab_size=vocab_size, model_type="unigram",
        character_coverage=1.0, user_defined_symbols=["<blk>", "<sos/eos>"], unk_id=2, bos_id=-1, eos_id=-1,
        minloglevel=2,
    )
    return lang_dir / "bpe.model"


def make_lm_text(lm_dir: Path) -> Path:
    lm_dir.mkdir(parents=True, exist_ok=True)
    (lm_dir / "train.txt").write_text("\n".join(sentences(120, 1)) + "\n")
    (lm_dir / "valid.txt").write_text("\n".join(sentences(16, 2)) + "\n")
    return lm_dir


def _audio(text: str, rng: np.random.Generator) -> np.ndarray:
    parts = []
    for w in text.split():
        i = WORDS.index(w)
        t = np.arange(int(0.3 * SR)) / SR
        tone = sum(np.sin(2 * np.pi * f * t) for f in (300 + 150 * i, 2400 - 120 * i))
        parts += [0.2 * tone, np.zeros(int(0.05 * SR))]
    x = np.concatenate([np.zeros(int(0.1 * SR))] + parts)
    return (x + 0.01 * rng.standard_normal(len(x))).astype(np.float32)


def make_corpus(root: Path, n_train: int = 24, n_dev: int = 6, n_test: int = 6) -> Path:
    """Writes root/{wav,fbank} and root/conf.yaml; returns the conf path (manifest dir = root/fbank)."""
    import soundfile as sf
    from lhotse import CutSet, Fbank, FbankConfig, LilcomChunkyWriter, Recording, SupervisionSegment

    rng = np.random.default_rng(0)
    (root / "wav").mkdir(parents=True, exist_ok=True)
    fbank_dir = root / "fbank"
    fbank_dir.mkdir(parents=True, exist_ok=True)
    for split, n, seed in (("train", n_train, 10), ("dev", n_dev, 11), ("test", n_test, 12)):
        cuts = []
        for i, text in enumerate(sentences(n, seed)):
            path = root / "wav" / f"{split}-{i}.wav"
            sf.write(path, _audio(text, rng), SR)
            rec = Recording.from_file(path, recording_id=f"{split}-{i}")
            cut = rec.to_cut()
            cut.supervisions = [SupervisionSegment(id=cut.id, recording_id=rec.id, start=0.0,
                                                   duration=rec.duration, text=text)]
            cuts.append(cut)
        cuts = CutSet.from_cuts(cuts).compute_and_store_features(
            Fbank(FbankConfig(num_mel_bins=80)), storage_path=str(fbank_dir / f"feats_{split}"),
            storage_type=LilcomChunkyWriter, num_jobs=1, progress_bar=False)
        cuts.to_file(fbank_dir / f"tiny_cuts_{split}.jsonl.gz")
    conf = root / "conf.yaml"
    conf.write_text(
        "corpus: tiny\nsource: tts\n"
        "train:\n  - {name: train, cuts: tiny_cuts_train.jsonl.gz, weight: 1.0}\n"
        "dev: {dev: tiny_cuts_dev.jsonl.gz}\ntest: {test: tiny_cuts_test.jsonl.gz}\nnoise: []\n"
    )
    return conf
