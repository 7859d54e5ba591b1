"""Our Zipformer2 state_dict() equals icefall's, name for name and shape for shape, in order.

The expected lists (tests/zipformer/fixtures/zipformer2_state_dicts.json.gz; configs small, medium, large and
medium causal) were dumped from `encoder_embed` + `encoder` built as icefall's
`egs/librispeech/ASR/zipformer/train.py` (`get_encoder_embed`, `get_encoder_model`) builds them, with
the classes of the PyPI `zipformer` 0.1.3 package (icefall's code extracted into a package) and
checked against icefall's own `Zipformer2`: same names, shapes and order.
"""
import gzip
import json
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from zipformer_rwkv.zipformer import ENCODER_CONFIGS, ZipformerEncoder

FIXTURE = Path(__file__).parent / "fixtures" / "zipformer2_state_dicts.json.gz"
CASES = {
    "small": (ENCODER_CONFIGS["small"], 21_989_779),
    "medium": (ENCODER_CONFIGS["medium"], 63_994_103),
    "large": (ENCODER_CONFIGS["large"], 146_625_594),
    "medium_causal": (replace(ENCODER_CONFIGS["medium"], causal=True), 64_556_023),
}


@pytest.fixture(scope="module")
def expected():
    with gzip.open(FIXTURE, "rt") as f:
        return json.load(f)


@pytest.mark.parametrize("name", list(CASES))
def test_state_dict_matches_icefall(name, expected):
    cfg, count = CASES[name]
    with torch.device("meta"):  # shapes only: no memory, no init cost
        model = ZipformerEncoder(cfg)
    ours = [[k, list(v.shape)] for k, v in model.state_dict().items()]
    ref = expected[name]
    assert len(ours) == len(ref)
    assert {k for k, _ in ours} == {k for k, _ in ref}
    assert ours == ref  # names, shapes and order
    assert sum(p.numel() for p in model.parameters()) == count
    assert model.encoder_out_dim == max(cfg.encoder_dim)
    assert not list(model.buffers())
