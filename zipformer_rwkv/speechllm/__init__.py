"""The speech LLM: adapters from encoder frames to RWKV-7 inputs, prompt layouts (whole utterance
and chunk-interleaved), CTC forced alignment, and the three model types (CTC, LM, speech LLM).
README.md in this folder has the equations and layouts."""
