"""ZipRWKV-Speech: Zipformer2 encoder + adapter + RWKV-7 language model for speech recognition."""
