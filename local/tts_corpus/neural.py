"""Neural voices of the voice bank: Piper (VITS, ``en_US-joe-medium``) and Kokoro-82M (int8 ONNX).

Both run on onnxruntime pinned to one thread (each ``--nj`` worker is one core); a worker keeps its
sessions for all its jobs. Each returns float32 audio at the voice's native rate, peak-normalised to
0.9 (``synth.to_flac`` then applies ``gain_db`` and resamples to 16 kHz).

Piper's VITS graph draws Gaussian noise with ``RandomNormalLike`` nodes, whose generator state runs on
from call to call, so the same sentence would sound different each time. We replace each such node by
a slice of an extra graph input and feed noise from ``numpy.random.default_rng(params["seed"])``: the
audio of an utterance depends only on its text and params. Kokoro's graph has no random nodes.
"""
from __future__ import annotations

import functools

import numpy as np

from . import kokoro_g2p, voicebank

PAUSE_S = 0.2  # silence between the sentences piper splits a text into
NOISE_FRAMES_PER_ID = 16  # noise fed per Piper phoneme id: > any duration the model gives (~3-5 frames/id)
MAX_KOKORO_TOKENS = 510


def _session(model, ort):
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    return ort.InferenceSession(model, sess_options=opts, providers=["CPUExecutionProvider"])


def seeded_graph(model_path) -> tuple[bytes, list[str]]:
    """The ONNX model at ``model_path`` with every ``RandomNormalLike`` node replaced by
    ``Slice(noise_k, 0, Shape(x))``; returns (serialised model, names of the new float32 inputs
    ``noise_k``, each to be fed as (1, C, T) with C, T >= the replaced node's shape)."""
    import onnx
    from onnx import TensorProto, helper

    model = onnx.load(str(model_path))
    graph, names, nodes = model.graph, [], []
    for node in graph.node:
        if node.op_type != "RandomNormalLike":
            nodes.append(node)
            continue
        name = f"noise_{len(names)}"
        names.append(name)
        graph.input.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, [1, None, None]))
        nodes += [helper.make_node("Shape", [node.input[0]], [f"{name}_shape"]),
                  helper.make_node("Slice", [name, f"{name}_starts", f"{name}_shape"], [node.output[0]])]
        graph.initializer.append(helper.make_tensor(f"{name}_starts", TensorProto.INT64, [3], [0, 0, 0]))
    del graph.node[:]
    graph.node.extend(nodes)
    return model.SerializeToString(), names


@functools.lru_cache(maxsize=None)
def _piper(name: str):
    import onnxruntime as ort
    from piper import PiperVoice

    model_path, config_path = voicebank.piper_paths(name)
    blob, noise = seeded_graph(model_path)
    voice = PiperVoice.load(model_path, config_path=config_path)  # config and phonemiser; session replaced
    voice.session = _session(blob, ort)
    return voice, noise


def piper(name: str, text: str, params: dict) -> tuple[np.ndarray, int]:
    """Speak ``text`` with Piper voice ``name``; returns (float32 audio (T,), sample rate in Hz).

    ``params``: ``length_scale``, ``noise_scale``, ``noise_w_scale``, ``seed`` (voices.sample_params).
    Raises ``RuntimeError`` when the text has no phonemes or onnxruntime fails.
    """
    voice, noise = _piper(name)
    rng = np.random.default_rng(int(params.get("seed", 0)))
    scales = np.array([params.get("noise_scale", voice.config.noise_scale),
                       params.get("length_scale", voice.config.length_scale),
                       params.get("noise_w_scale", voice.config.noise_w_scale)], dtype=np.float32)
    rate = voice.config.sample_rate
    pieces = []
    for phonemes in voice.phonemize(text):
        ids = voice.phonemes_to_ids(phonemes)
        frames = NOISE_FRAMES_PER_ID * (len(ids) + 12)
        feeds = {"input": np.array([ids], dtype=np.int64), "input_lengths": np.array([len(ids)], dtype=np.int64),
                 "scales": scales}
        for n in noise:
            feeds[n] = rng.standard_normal((1, 192, frames), dtype=np.float32)
        pieces += [_run(voice.session, feeds).reshape(-1), np.zeros(int(PAUSE_S * rate), np.float32)]
    if not pieces:
        raise RuntimeError("piper: no phonemes in the text")
    return _normalise(np.concatenate(pieces[:-1])), rate


@functools.lru_cache(maxsize=None)
def _kokoro():
    import onnxruntime as ort

    return _session(str(voicebank.kokoro_model()), ort)


def kokoro(name: str, text: str, params: dict) -> tuple[np.ndarray, int]:
    """Speak ``text`` with Kokoro voice ``name`` (e.g. ``af_heart``); returns (float32 audio (T,), 24000).

    ``params``: ``speed`` (1.0 = normal). Raises ``RuntimeError`` for an empty or over-long
    (> 510 tokens) phoneme string, or for symbols the G2P could not map.
    """
    lang = kokoro_g2p.accent(name)
    phonemes = kokoro_g2p.phonemize(text, lang)
    tokens, dropped = kokoro_g2p.tokenize(phonemes, voicebank.kokoro_vocab())
    if dropped:
        raise RuntimeError(f"kokoro: phonemes outside its vocabulary: {dropped!r} in {phonemes!r}")
    if not tokens or len(tokens) > MAX_KOKORO_TOKENS:
        raise RuntimeError(f"kokoro: {len(tokens)} phoneme tokens (needs 1..{MAX_KOKORO_TOKENS})")
    style = voicebank.kokoro_style(name)[len(tokens) - 1]
    audio = _run(_kokoro(), {"tokens": np.array([[0, *tokens, 0]], dtype=np.int64),
                             "style": style.reshape(1, -1).astype(np.float32),
                             "speed": np.array([params.get("speed", 1.0)], dtype=np.float32)})
    return _normalise(np.asarray(audio, np.float32).reshape(-1)), 24000


def _run(session, feeds: dict) -> np.ndarray:
    """``session.run`` whose onnxruntime errors (not ``RuntimeError`` subclasses) become ``RuntimeError``."""
    try:
        return session.run(None, feeds)[0]
    except Exception as e:  # onnxruntime's Fail, InvalidArgument, ... derive from Exception only
        raise RuntimeError(f"onnxruntime: {str(e).splitlines()[0][:200]}") from None


def _normalise(audio: np.ndarray) -> np.ndarray:
    peak = float(np.max(np.abs(audio))) if audio.size else 0.0
    return audio * (0.9 / peak) if peak > 0 else audio
