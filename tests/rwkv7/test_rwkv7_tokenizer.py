"""Tokenizers (zipformer_rwkv/rwkv7/tokenizer.py): RWKV World greedy longest match and icefall BPE."""
import random

import pytest

from zipformer_rwkv.rwkv7.tokenizer import BpeTokenizer, RWKVWorldTokenizer, get_tokenizer, world_vocab_path

TEXTS = [
    "Hello world!",
    "User: 你好，世界\n\nAssistant:",
    "naïve café 🎉 ∑x² — «quotes»",
    "  \t\n multiple   spaces\r\n",
    "THE QUICK BROWN FOX JUMPED OVER THE LAZY DOG'S BACK",
]


@pytest.fixture(scope="module")
def world():
    return RWKVWorldTokenizer()


def test_world_matches_rwkv_package(world):
    pytest.importorskip("rwkv")
    from rwkv.rwkv_tokenizer import TRIE_TOKENIZER

    ref = TRIE_TOKENIZER(str(world_vocab_path()))
    for text in TEXTS:
        assert world.encode(text) == ref.encode(text), text


def test_world_known_ids(world):
    # ids 1..256 are the single bytes (id = byte + 1); multi-byte tokens read from the vocab file
    assert world.encode("\x00") == [1] and world.encode_bytes(b"\xff\xfe") == [256, 255]
    assert world.encode("Hello world!") == [33155, 40213, 34]
    assert world.id_to_bytes[33155] == b"Hello" and world.id_to_bytes[40213] == b" world"
    assert world.eos_id == 0 and world.vocab_size == 65536 and len(world.id_to_bytes) == 65529
    # greedy longest match: "Hello" is a token, so it is never split
    assert world.decode([0, 33155, 0]) == "Hello"


def test_world_round_trip_random_unicode(world):
    rng = random.Random(0)
    pools = [(0x20, 0x7E), (0xA0, 0x24F), (0x400, 0x4FF), (0x4E00, 0x9FFF), (0x1F300, 0x1F64F), (0, 0x10FFFF)]
    for _ in range(200):
        chars = []
        for _ in range(rng.randint(0, 40)):
            lo, hi = rng.choice(pools)
            c = rng.randint(lo, hi)
            if 0xD800 <= c <= 0xDFFF:  # surrogates are not encodable as UTF-8
                c = 0x41
            chars.append(chr(c))
        text = "".join(chars)
        ids = world.encode(text)
        assert all(1 <= i <= 65529 for i in ids)
        assert world.decode(ids) == text


def test_world_decode_errors_and_partial_utf8(world):
    with pytest.raises(ValueError, match="65535"):
        world.decode([65535])
    ids = world.encode("é")  # 2 bytes, may be one token or two single-byte tokens
    half = world.encode_bytes("é".encode()[:1])
    assert world.decode(half) == "\ufffd" and world.decode(ids) == "é"


def test_world_bad_vocab_file(tmp_path):
    bad = tmp_path / "vocab.txt"
    bad.write_text("1 'a' 1\n2 'bc' 5\n")
    with pytest.raises(ValueError, match=r"vocab\.txt:2"):
        RWKVWorldTokenizer(bad)


def test_bpe_tokenizer(tmp_path):
    spm = pytest.importorskip("sentencepiece")
    text = tmp_path / "text.txt"
    rng = random.Random(1)
    words = ["HELLO", "WORLD", "SPEECH", "RECOGNITION", "MODEL", "RWKV", "ZIPFORMER", "DATA"]
    text.write_text("\n".join(" ".join(rng.choices(words, k=8)) for _ in range(200)))
    prefix = tmp_path / "unigram_30"
    spm.SentencePieceTrainer.train(  # settings of icefall's librispeech local/train_bpe_model.py
        input=str(text), vocab_size=30, model_type="unigram", model_prefix=str(prefix),
        character_coverage=1.0, user_defined_symbols=["<blk>", "<sos/eos>"], unk_id=2, bos_id=-1, eos_id=-1,
    )
    tok = get_tokenizer("bpe", f"{prefix}.model")
    assert isinstance(tok, BpeTokenizer) and tok.eos_id == 1 and tok.vocab_size == 30
    ids = tok.encode("HELLO SPEECH MODEL")
    assert ids and min(ids) > 2
    assert tok.decode(ids + [1]) == "HELLO SPEECH MODEL"
    assert tok.decode([0] + ids) == "HELLO SPEECH MODEL"


def test_factory_errors(tmp_path, world):
    assert isinstance(get_tokenizer("world", world.vocab_file), RWKVWorldTokenizer)
    with pytest.raises(ValueError, match="unknown tokenizer kind"):
        get_tokenizer("gpt2")
    with pytest.raises(ValueError, match="needs the path"):
        get_tokenizer("bpe")
    with pytest.raises(FileNotFoundError, match="missing.model"):
        get_tokenizer("bpe", tmp_path / "missing.model")
