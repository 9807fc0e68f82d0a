#!/usr/bin/env bash
# Installs everything ast_hf needs on a fresh Debian machine (Python 3.11, CPU or GPU):
# system programs for real audio (espeak-ng speech, sox, ffmpeg for the pipeline and torchcodec), g++ (flex
# attention's CPU compiler), recorded drum sounds (hydrogen-drumkits), a headless browser for the web demo's test
# (chromium, chromium-driver), then the package with its training, ONNX, demo and test extras. Safe to run again:
# installed pieces are skipped.
#
# As root it installs the missing system packages with apt-get. As another user it cannot: it stops (exit 1, with
# the apt-get command) when espeak-ng, sox or ffmpeg is missing, and warns and goes on when only g++, the drum kits
# or the browser are, since those serve one test or benchmark each. pip then installs into the active Python when
# it may write there, with --user when only the user site is writable, and otherwise says to make a virtual
# environment. SETUP_SKIP_PIP=1 checks the system programs only.
set -euo pipefail
cd "$(dirname "$0")/.."

# Needed by the examples and most tests: espeak-ng speaks the data, sox and ffmpeg convert and decode audio.
required=()
for program in espeak-ng sox ffmpeg; do
    command -v "$program" >/dev/null 2>&1 || required+=("$program")
done
# Needed by one test or benchmark each; "package|what needs it" (the package name is what apt-get installs).
optional=()
# g++: torch compiles flex attention's CPU kernel with it (tests/test_modeling.py).
command -v g++ >/dev/null 2>&1 ||
    optional+=("g++|attn_implementation='flex_attention' on CPU and its test (tests/test_modeling.py) fail without it")
# hydrogen-drumkits: real recorded drum and percussion hits, the data of benchmarks/finetune_real.py (ast_hf.drumkits).
[ -f /usr/share/hydrogen/data/drumkits/ForzeeStereo/drumkit.xml ] ||
    optional+=("hydrogen-drumkits|benchmarks/finetune_real.py cannot run and tests/test_drumkits.py fails")
# chromium + chromium-driver: the real browser that tests/test_demo.py drives through selenium.
command -v chromium >/dev/null 2>&1 || optional+=("chromium|the browser test (tests/test_demo.py) will be skipped")
command -v chromedriver >/dev/null 2>&1 ||
    optional+=("chromium-driver|the browser test (tests/test_demo.py) will be skipped")

if [ "$(id -u)" -eq 0 ]; then
    missing=("${required[@]}")
    for item in "${optional[@]}"; do
        missing+=("${item%%|*}")
    done
    if [ "${#missing[@]}" -gt 0 ]; then
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -qq
        apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    fi
else
    if [ "${#required[@]}" -gt 0 ]; then
        echo "setup: ${required[*]} missing (needed by the examples and the tests); install as root:" \
             "sudo apt-get install -y ${required[*]}" >&2
        exit 1
    fi
    for item in "${optional[@]}"; do
        echo "setup: warning: ${item%%|*} missing: ${item#*|} (as root: sudo apt-get install -y ${item%%|*});" \
             "continuing" >&2
    done
fi

if [ "${SETUP_SKIP_PIP:-0}" = 1 ]; then
    echo "setup: SETUP_SKIP_PIP=1: system programs checked, pip step skipped" >&2
    exit 0
fi

pip_install=(python3 -m pip install -q --disable-pip-version-check --root-user-action=ignore)
if [ "$(id -u)" -ne 0 ]; then
    # Where pip may write for this user: "ok" (the active Python, a venv for instance), "user" (only ~/.local), or
    # the reason it may not write anywhere (pip refuses --user inside a venv and in an externally managed Python).
    where=$(python3 - <<'EOF'
import os, site, sys, sysconfig

venv = sys.prefix != sys.base_prefix
managed = not venv and os.path.exists(os.path.join(sysconfig.get_path("stdlib"), "EXTERNALLY-MANAGED"))
if managed:
    print(f"{sys.executable} is managed by the system's package manager (PEP 668)")
elif os.access(sysconfig.get_path("purelib"), os.W_OK):
    print("ok")
elif not venv and site.ENABLE_USER_SITE:
    print("user")
else:
    print(f"{sysconfig.get_path('purelib')} is not writable")
EOF
)
    if [ "$where" = user ]; then
        echo "setup: site-packages is not writable: installing with pip --user (into ~/.local)" >&2
        pip_install+=(--user)
    elif [ "$where" != ok ]; then
        echo "setup: pip cannot install here: $where; make a virtual environment and run setup.sh in it:" \
             "python3 -m venv ~/.venvs/ast_hf && . ~/.venvs/ast_hf/bin/activate && bash scripts/setup.sh" \
             "(Debian: the venv module is in apt package python3-venv)" >&2
        exit 1
    fi
fi
"${pip_install[@]}" "torchaudio==2.11.0" torch
"${pip_install[@]}" -e ".[dev]"
