"""Data: the lhotse datamodule (cuts, fbank, samplers, noise) and the LM text batches."""
