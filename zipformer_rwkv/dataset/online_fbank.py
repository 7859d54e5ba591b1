"""Fbank of an audio stream, frame by frame as the samples arrive, equal to the whole-signal fbank
of `features.fbank_extractor` (what training used) within float rounding.

Kaldi-style frames with `snip_edges=False` (lhotse's default): frame t (10 ms shift, 25 ms window)
reads samples [160 t - 120, 160 t + 280) at 16 kHz, reflected at both ends of the signal, and a
signal of n samples has (n + 80) // 160 frames. Every frame is computed from its own window only
(no dither, per-frame DC removal and pre-emphasis), so a frame whose window has fully arrived is
final: it is computed from a slice of the buffered samples with `snip_edges=True`; frame 0 (left
reflection) and the frames that reach past the last sample (right reflection) from lhotse's
`snip_edges=False` extractor on a short prefix / suffix. Only about one window of samples is kept.
"""
import warnings

import numpy as np
import torch
from lhotse import Fbank, FbankConfig

from zipformer_rwkv.dataset.features import FRAME_RATE, NUM_MEL_BINS, SAMPLE_RATE, fbank_extractor

SHIFT = SAMPLE_RATE // FRAME_RATE  # 160 samples
WINDOW = SAMPLE_RATE * 25 // 1000  # 400 samples
LEFT = (WINDOW - SHIFT) // 2  # 120: frame t starts at SHIFT * t - LEFT
RIGHT = WINDOW - LEFT  # 280: frame t ends at SHIFT * t + RIGHT


def num_frames(num_samples: int) -> int:
    """Fbank frames (100 Hz) of a signal of `num_samples` samples (16 kHz): (n + 80) // 160."""
    return (num_samples + SHIFT // 2) // SHIFT


class OnlineFbank:
    """80-dim log-mel fbank at 100 Hz of 16 kHz audio arriving in pieces of any size.

    `accept_waveform` returns the frames whose window is complete; `finish` the rest (the frames
    touching the end of the signal). The frames of all calls, concatenated, equal
    `fbank_extractor().extract(whole_signal)` (float32 rounding).
    """

    def __init__(self):
        self.whole = fbank_extractor()
        with warnings.catch_warnings():  # snip_edges=True is right here: windows are cut by hand
            warnings.simplefilter("ignore")
            self.sliced = Fbank(FbankConfig(num_mel_bins=NUM_MEL_BINS, sampling_rate=SAMPLE_RATE,
                                            frame_shift=1.0 / FRAME_RATE, snip_edges=True))
        self.buffer = np.zeros(0, dtype=np.float32)
        self.offset = 0  # stream index of buffer[0]
        self.received = 0  # samples so far
        self.next_frame = 0  # first frame not yet returned
        self.finished = False

    def accept_waveform(self, samples: np.ndarray) -> torch.Tensor:
        """Append samples (1-D float, [-1, 1], 16 kHz); return the newly complete frames (F, 80) float32.

        Raises:
          ValueError: after `finish`, or samples that are not 1-D.
        """
        if self.finished:
            raise ValueError("OnlineFbank: accept_waveform after finish")
        samples = np.asarray(samples, dtype=np.float32)
        if samples.ndim != 1:
            raise ValueError(f"OnlineFbank expects 1-D samples, got shape {samples.shape}")
        self.buffer = np.concatenate([self.buffer, samples])
        self.received += samples.size
        out = []
        if self.next_frame == 0 and self.received >= RIGHT + SHIFT:
            out.append(self._extract(self.whole, 0, RIGHT + SHIFT)[:1])  # left reflection: frame 0
            self.next_frame = 1
        ready = (self.received - RIGHT) // SHIFT + 1  # frames t with SHIFT * t + RIGHT <= received
        if self.next_frame >= 1 and ready > self.next_frame:
            start = SHIFT * self.next_frame - LEFT
            out.append(self._extract(self.sliced, start, SHIFT * (ready - 1) + RIGHT))
            self.next_frame = ready
        self._trim()
        return torch.cat(out) if out else torch.zeros(0, NUM_MEL_BINS)

    def finish(self) -> torch.Tensor:
        """End of the stream: the remaining frames (F, 80) float32 (right reflection); none for a
        stream shorter than one 25 ms window (lhotse's extractor cannot frame it either)."""
        if self.finished:
            raise ValueError("OnlineFbank: finish called twice")
        self.finished = True
        total = num_frames(self.received)
        if self.received < WINDOW or total <= self.next_frame:
            return torch.zeros(0, NUM_MEL_BINS)
        # a suffix starting on a frame boundary has the same frames from its frame 1 on
        first = max(self.next_frame - 1, 0)
        feats = self._extract(self.whole, SHIFT * first, self.received)
        return feats[self.next_frame - first: total - first]

    def _extract(self, extractor, start: int, end: int) -> torch.Tensor:
        """Frames of stream samples [start, end) (must be buffered)."""
        seg = self.buffer[start - self.offset: end - self.offset]
        return torch.from_numpy(np.ascontiguousarray(extractor.extract(seg, SAMPLE_RATE), dtype=np.float32))

    def _trim(self) -> None:
        """Drop samples no future frame (nor `finish`'s suffix) reads."""
        keep_from = max(SHIFT * (self.next_frame - 1), 0)
        if keep_from > self.offset:
            self.buffer = self.buffer[keep_from - self.offset:]
            self.offset = keep_from
