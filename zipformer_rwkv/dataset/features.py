"""The acoustic front end every stage shares, in one place: 16 kHz audio, 80-bin log-mel fbank
at 100 Hz (25 ms windows, 10 ms shift; lhotse's Kaldi-compatible `Fbank`).

Data preparation (local/compute_fbank.py, local/cut_builder.py), on-the-fly features in the
datamodule and transcribe.py all take these, so a model never meets features made otherwise.
The encoder's output length for a number of fbank frames is the model's business:
`zipformer_rwkv.zipformer.encoder.encoder_out_length`.
"""
from lhotse import Fbank, FbankConfig

SAMPLE_RATE = 16000
"""Audio sampling rate (Hz); other rates are resampled to it."""

NUM_MEL_BINS = 80
"""Feature dimension: log-mel filterbank bins."""

FRAME_RATE = 100
"""Feature frames per second (10 ms shift)."""


def fbank_extractor() -> Fbank:
    """lhotse `Fbank` with `NUM_MEL_BINS` bins at `FRAME_RATE` for `SAMPLE_RATE` audio."""
    return Fbank(FbankConfig(num_mel_bins=NUM_MEL_BINS, sampling_rate=SAMPLE_RATE, frame_shift=1.0 / FRAME_RATE))
