"""RWKV-7 language model: model (`model.py`), BlinkDL checkpoint loading (`load.py`), tokenizers
(`tokenizer.py`) and the WKV7 ops (`wkv7/`).

Import-light: `import zipformer_rwkv.rwkv7.wkv7` does not pull in the model; the names below are
loaded on first access.
"""
import importlib

_EXPORTS = {
    "RWKV7": "model",
    "RWKV7Config": "model",
    "load_rwkv7_checkpoint": "load",
    "config_from_state_dict": "load",
    "detect_model_size": "load",
    "RWKV7CheckpointError": "load",
    "RWKVWorldTokenizer": "tokenizer",
    "BpeTokenizer": "tokenizer",
    "get_tokenizer": "tokenizer",
}

__all__ = list(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        module = importlib.import_module(f"{__name__}.{_EXPORTS[name]}")
        return getattr(module, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
