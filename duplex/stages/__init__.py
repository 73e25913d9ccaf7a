"""Pipeline stages: one module each, each behind a small interface.

``vad`` (speech probability per frame), ``asr`` (streaming recognition),
``llm`` (token streams), ``tts`` (text to audio), ``chunker`` (LLM text to TTS-sized
pieces). Backends are chosen by configuration through :mod:`duplex.stages.factory`.
"""
