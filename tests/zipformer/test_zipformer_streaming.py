"""streaming_forward, chunk by chunk with caches, equals the chunk-masked full forward."""
import pytest
import torch

from zipformer_tiny import tiny_encoder

pytestmark = pytest.mark.usefixtures("single_thread")


def stream(model, x: torch.Tensor, num_chunks: int) -> torch.Tensor:
    """Feeds fbank x (N, T, 80) window by window; returns the concatenated (N, T', C) output."""
    win, shift = model.chunk_input_frames
    states = model.get_init_states(x.shape[0])
    outs = []
    for k in range(num_chunks):
        seg = x[:, k * shift: k * shift + win]
        y, y_lens, states = model.streaming_forward(seg, torch.full((x.shape[0],), win), states)
        assert y.shape[1] == model.decode_chunk_size // 2 and y_lens.tolist() == [y.shape[1]] * x.shape[0]
        outs.append(y)
    return torch.cat(outs, dim=1)


@pytest.mark.parametrize("chunk,left", [(16, 32), (8, 16), (16, 64)])
def test_streaming_equals_masked_forward(chunk, left):
    model = tiny_encoder(seed=4, causal=True, chunk_size=(chunk,), left_context_frames=(left,))
    num_chunks = 7  # longer than the left context: caches must roll over correctly
    t = 2 * chunk * num_chunks + 13
    x = torch.randn(2, t, 80)
    with torch.no_grad():
        full, _ = model(x, torch.tensor([t, t]))
        streamed = stream(model, x, num_chunks)
    n = num_chunks * chunk // 2
    ref = full[:, :n]
    err = float((streamed - ref).norm() / ref.norm())
    assert err <= 1e-4, err
    # per-frame too, so an error confined to late chunks can't hide in the norm
    frame_err = ((streamed - ref).norm(dim=-1) / ref.norm(dim=-1)).max()
    assert frame_err <= 1e-4


def test_streaming_differs_with_wrong_left_context():
    """Sanity check that the comparison above is sensitive: a model masking with a different
    left context gives a different result."""
    chunk, num_chunks = 16, 6
    model = tiny_encoder(seed=4, causal=True, chunk_size=(chunk,), left_context_frames=(32,))
    t = 2 * chunk * num_chunks + 13
    x = torch.randn(1, t, 80)
    with torch.no_grad():
        streamed = stream(model, x, num_chunks)
        model.encoder.left_context_frames = [64]
        full, _ = model(x, torch.tensor([t]))
    assert not torch.allclose(streamed, full[:, : streamed.shape[1]], atol=1e-3)


def test_streaming_needs_causal_model():
    model = tiny_encoder(seed=4)
    with pytest.raises(ValueError, match="causal"):
        model.get_init_states(1)


def test_streaming_encode_whole_utterances():
    model = tiny_encoder(seed=7, causal=True, chunk_size=(16,), left_context_frames=(32,))
    x = torch.randn(2, 301, 80)
    lens = torch.tensor([301, 301])
    with torch.no_grad():
        full, full_lens = model(x, lens)
        streamed, streamed_lens = model.streaming_encode(x, lens)
    assert streamed.shape == full.shape and torch.equal(streamed_lens, full_lens)
    n = (301 - 13) // 32 * 8  # 25 Hz frames of chunks that saw no tail padding
    assert float((streamed[:, :n] - full[:, :n]).norm() / full[:, :n].norm()) <= 1e-4
