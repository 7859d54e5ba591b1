"""Decoding: greedy and beam search over a recurrent state, CTC prefix scores for joint search,
and the one loader from checkpoint to model shared by decode.py, transcribe.py and the benches."""
