#!/usr/bin/env bash
# Installs everything ast_hf needs on a fresh Debian machine (Python 3.11, root, CPU or GPU):
# system programs for real audio (espeak-ng speech, sox, ffmpeg for the pipeline and torchcodec), recorded drum
# sounds (hydrogen-drumkits), a headless browser for the web demo's test (chromium, chromium-driver), then the
# package with its training, ONNX, demo and test extras. Safe to run again: installed
# pieces are skipped.
set -euo pipefail
cd "$(dirname "$0")/.."

# g++: torch compiles flex attention's CPU kernel with it (tests/test_modeling.py).
missing=()
for program in espeak-ng sox ffmpeg g++; do
    command -v "$program" >/dev/null 2>&1 || missing+=("$program")
done
# hydrogen-drumkits: real recorded drum and percussion hits, the data of benchmarks/finetune_real.py (ast_hf.drumkits).
[ -f /usr/share/hydrogen/data/drumkits/ForzeeStereo/drumkit.xml ] || missing+=(hydrogen-drumkits)
# chromium + chromium-driver: the real browser that tests/test_demo.py drives through selenium.
command -v chromium >/dev/null 2>&1 || missing+=(chromium)
command -v chromedriver >/dev/null 2>&1 || missing+=(chromium-driver)
if [ "${#missing[@]}" -gt 0 ]; then
    if [ "$(id -u)" -ne 0 ]; then
        echo "setup: need ${missing[*]}; run as root or install them with your package manager" >&2
        exit 1
    fi
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

python3 -m pip install -q --disable-pip-version-check --root-user-action=ignore "torchaudio==2.11.0" torch
python3 -m pip install -q --disable-pip-version-check --root-user-action=ignore -e ".[dev]"
