"""Tiny stand-ins shared by the speech-LLM tests: a convolutional encoder (the model only needs
`forward(x, x_lens) -> (out, out_lens)` and `encoder_out_dim`), a 2-layer RWKV-7 over a V-token
vocabulary, a SpeechLLM on both, a 3-utterance batch, and a chunk-interleaved SpeechLLM on a tiny causal Zipformer2
(streaming)."""
import torch
import torch.nn as nn

from zipformer_rwkv.rwkv7 import RWKV7, RWKV7Config
from zipformer_rwkv.speechllm.model import SpeechLLM, SpeechLLMConfig
from zipformer_rwkv.speechllm.prompt import PromptTemplate

V = 40
EOS = 1


class TinyEncoder(nn.Module):
    """100 Hz fbank -> 25 Hz frames (stride-4 conv) with dropout, so train/eval mode matters."""

    encoder_out_dim = 16

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv1d(80, 16, kernel_size=4, stride=4)
        self.dropout = nn.Dropout(0.5)

    def forward(self, x, x_lens):
        y = self.dropout(self.conv(x.transpose(1, 2)).transpose(1, 2))
        return y, x_lens // 4


def make_llm(seed=0):
    torch.manual_seed(seed)
    llm = RWKV7(RWKV7Config.with_default_dims(n_layer=2, n_embd=64, vocab_size=V))
    with torch.no_grad():  # from-scratch init zeroes output projections; perturb so outputs depend on inputs
        for p in llm.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    return llm


def make_speech_llm(template=None, seed=0, ctc_vocab_size=0, **kw):
    """A SpeechLLM on TinyEncoder and a 2-layer RWKV-7; `kw` are SpeechLLMConfig fields (default here:
    2 frames per position, a single-Linear adapter)."""
    template = template or PromptTemplate(prefix=[5, 6], infix=[7], eos_id=EOS)
    config = SpeechLLMConfig(**{"adapter_downsample": 2, "adapter_hidden_dim": 0, **kw})
    return SpeechLLM(TinyEncoder(), make_llm(seed), template, config, ctc_vocab_size)


def batch(n=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    lens = torch.tensor([64, 40, 57][:n])
    feats = torch.randn(n, int(lens.max()), 80, generator=g)
    texts = [[10, 11, 12], [13], [14, 15, 16, 17, 18]][:n]
    return feats, lens, texts


def causal_speech_llm(adapter_type="ctc", chunk_frames=8, chunk=16, left=32, causal=True, seed=0, **enc):
    """A tiny causal Zipformer (`enc`: more ZipformerConfig fields) -> adapter -> 2-layer RWKV-7,
    interleaved every `chunk_frames` frames."""
    from zipformer.zipformer_tiny import tiny_encoder

    enc = tiny_encoder(seed=4, causal=causal, chunk_size=(chunk,), left_context_frames=(left,), **enc)
    config = SpeechLLMConfig(adapter_type=adapter_type, adapter_downsample=2, adapter_hidden_dim=0,
                             interleave_chunk_frames=chunk_frames, adapter_blank_threshold=0.5)
    torch.manual_seed(seed)
    model = SpeechLLM(enc, make_llm(seed), PromptTemplate(prefix=[5, 6], infix=[7], eos_id=EOS), config,
                      ctc_vocab_size=V)
    with torch.no_grad():  # a blank-heavy CTC head, so some frames are dropped and chunks can be empty
        model.ctc_output[1].bias[0] += 1.5
    return model.eval()
