"""Shared fixtures: tiny AST configs and real speech synthesised with espeak-ng (no network needed)."""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
import wave
from pathlib import Path

import numpy as np
import pytest
import torch
import torchaudio

import ast_hf

ROOT = Path(__file__).resolve().parents[1]


def load_conversion_script(name: str):
    """conversion/NAME.py imported as a module (not registered in sys.modules), so that tests call its main()."""
    spec = importlib.util.spec_from_file_location(name, ROOT / "conversion" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def tiny_config(**overrides) -> ast_hf.ASTConfig:
    """A 2-layer, 32-wide AST; the stored grid is small so tests stay fast."""
    fields = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
                  num_mel_bins=128, max_length=128, frequency_stride=10, time_stride=10, num_labels=5)
    fields.update(overrides)
    return ast_hf.ASTConfig(**fields)


def randomize(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Give every parameter (zero-initialised tokens and positions included) random values."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.2)
    return model.eval()


def read_wav(path: Path) -> tuple[np.ndarray, int]:
    with wave.open(str(path)) as handle:
        rate = handle.getframerate()
        pcm = np.frombuffer(handle.readframes(handle.getnframes()), dtype=np.int16)
        if handle.getnchannels() > 1:
            pcm = pcm.reshape(-1, handle.getnchannels())[:, 0]
    return pcm.astype(np.float32) / 32768.0, rate


def speak(text: str, out: Path, voice: str = "en", speed: int = 160, pitch: int = 50) -> np.ndarray:
    """Real speech from espeak-ng, resampled to 16 kHz mono float32."""
    if shutil.which("espeak-ng") is None:
        pytest.fail("espeak-ng is not installed; run `bash scripts/setup.sh` (it installs Debian's espeak-ng).")
    subprocess.run(["espeak-ng", "-v", voice, "-s", str(speed), "-p", str(pitch), "-w", str(out), text],
                   check=True, capture_output=True)
    audio, rate = read_wav(out)
    return torchaudio.functional.resample(torch.from_numpy(audio), rate, 16000).numpy()


@pytest.fixture(scope="session")
def speech(tmp_path_factory) -> list[np.ndarray]:
    """Four real utterances of different lengths (about 0.5 to 3 s) at 16 kHz."""
    folder = tmp_path_factory.mktemp("speech")
    texts = [("yes", "en", 160), ("left right up down", "en-us", 140),
             ("the quick brown fox jumps over the lazy dog", "en-gb", 170), ("stop", "en+f3", 120)]
    return [speak(text, folder / f"{i}.wav", voice, speed) for i, (text, voice, speed) in enumerate(texts)]


@pytest.fixture(scope="session")
def commands_root(tmp_path_factory) -> Path:
    """The embedded espeak-ng command data at a small size: 4 training and 2 evaluation clips per word."""
    from ast_hf.espeak_commands import CommandsSpec, build_commands_dataset

    cache = tmp_path_factory.mktemp("cache")
    root = build_commands_dataset(CommandsSpec(clips_per_word=4, eval_clips_per_word=2), cache_dir=cache,
                                  verbose=False)
    assert build_commands_dataset(CommandsSpec(clips_per_word=4, eval_clips_per_word=2), cache_dir=cache) == root
    return root
