"""Built-in offline English speech corpus (``egs/tts_en``): public-domain text read by Debian TTS voices.

Modules: ``rdata`` (reader for R's XDR serialisation, used for the Jane Austen novels), ``debian``
(fetch/extract Debian packages), ``text`` (sentences, normalisation, disjoint splits), ``voices``
(voice inventory and per-split mixes), ``synth`` (espeak-ng / flite / festival + sox workers).
Voices, text sources and measured speeds: ``egs/tts_en/README.md``.
"""
