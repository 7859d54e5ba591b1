"""The pieces learn: on 20 utterances of the tiny corpus, a CTC model and then a speech LLM on top of
it (`--adapter-type ctc`, encoder frozen, RWKV-7 from scratch) each fit those utterances to <= 10%
WER, decoded as decode.py does (`recipe.recognize`: CTC greedy; the speech LLM greedy on its own,
no CTC in its search). A broken adapter, loss mask, prompt or search fails this; the end-to-end
train.py tests only prove that the stages run. In-process, full-batch steps: about a minute."""
from pathlib import Path

import kaldialign
import pytest
import torch

from speech_llm_data import make_bpe, make_corpus
from test_train_decode import TINY_ENC, TINY_LM

pytestmark = pytest.mark.usefixtures("single_thread")


@pytest.fixture(scope="module")
def utterances(tmp_path_factory):
    from lhotse import load_manifest

    root = tmp_path_factory.mktemp("learn")
    bpe = make_bpe(root / "lang")
    conf = make_corpus(root / "corpus", n_dev=0, n_test=0)
    cuts = list(load_manifest(conf.parent / "fbank" / "tiny_cuts_train.jsonl.gz"))[:20]
    feats = [torch.from_numpy(c.load_features()) for c in cuts]
    lens = torch.tensor([f.size(0) for f in feats])
    texts = [c.supervisions[0].text for c in cuts]
    batch = {"inputs": torch.nn.utils.rnn.pad_sequence(feats, batch_first=True),
             "supervisions": {"text": texts, "sequence_idx": torch.arange(len(cuts)),
                              "start_frame": torch.zeros(len(cuts), dtype=torch.long), "num_frames": lens}}
    return bpe, batch


def _params(model_type: str, bpe: Path, *extra: str):
    from zipformer_rwkv.train import get_parser
    from zipformer_rwkv.utils import AttributeDict

    args = get_parser().parse_args(["--model-type", model_type, "--bpe-model", str(bpe), "--warmup-batches", "10",
                                    "--lr-batches", "1e9", "--lr-epochs", "1e9"] + TINY_ENC + TINY_LM + list(extra))
    params = AttributeDict(vars(args))
    params.update(decoding_method="greedy_search", beam_size=1, max_new_tokens=20, ctc_weight=0.0)
    return params


def _fit(params, model, tokenizers, batch, steps: int) -> None:
    """`steps` full-batch updates with train.py's optimizers, schedules and Zipformer batch count."""
    from zipformer_rwkv import recipe
    from zipformer_rwkv.zipformer import set_batch_count

    optimizer = recipe.get_optimizer(params, model)
    scaler = torch.amp.GradScaler("cpu", enabled=False)
    model.train()
    for step in range(1, steps + 1):
        set_batch_count(model, 100 * step)  # past the warm-up regularisation, as --ref-duration does
        loss, _ = recipe.compute_loss(params, model, batch, tokenizers, torch.device("cpu"))
        optimizer.zero_grad()
        loss.backward()
        optimizer.scheduler.step_batch(step)
        optimizer.step(scaler)


def _wer(params, model, tokenizers, batch) -> float:
    from zipformer_rwkv import recipe
    from zipformer_rwkv.decoding.search import DecodingOptions

    sup = batch["supervisions"]
    hyps, _ = recipe.recognize(model.eval(), tokenizers, batch["inputs"], sup["num_frames"],
                               DecodingOptions.from_args(params))
    errors = sum(kaldialign.edit_distance(r.split(), h.split())["total"] for r, h in zip(sup["text"], hyps))
    return 100.0 * errors / sum(len(r.split()) for r in sup["text"])


def test_ctc_then_speech_llm_fit_twenty_utterances(utterances):
    from zipformer_rwkv import recipe
    from zipformer_rwkv.utils import fix_random_seed

    bpe, batch = utterances
    fix_random_seed(0)  # torch, and Python's `random`, which Balancer/Whiten draw from
    p_ctc = _params("ctc", bpe, "--base-lr", "0.05")
    ctc, tok = recipe.get_model(p_ctc)
    assert _wer(p_ctc, ctc, tok, batch) > 50  # untrained: nothing right
    _fit(p_ctc, ctc, tok, batch, steps=150)
    ctc_wer = _wer(p_ctc, ctc, tok, batch)
    assert ctc_wer <= 10.0

    fix_random_seed(0)
    p_llm = _params("llm", bpe, "--tokenizer", "bpe", "--adapter-type", "ctc", "--ctc-loss-scale", "0.3",
                    "--freeze-encoder", "true", "--base-lr", "0.03", "--llm-lr", "3e-3")
    llm, tok = recipe.get_model(p_llm)
    missing = llm.load_state_dict(ctc.state_dict(), strict=False).missing_keys  # encoder + CTC head
    assert missing and all(k.startswith("llm.") for k in missing)
    llm.freeze("encoder")
    assert _wer(p_llm, llm, tok, batch) > 50  # a random RWKV-7 does not copy the CTC input
    _fit(p_llm, llm, tok, batch, steps=60)
    assert _wer(p_llm, llm, tok, batch) <= 10.0, f"speech LLM alone vs CTC greedy {ctc_wer:.1f}"
