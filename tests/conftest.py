"""Shared fixtures: tiny AST configs and real speech synthesised with espeak-ng (no network needed)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import transformers

import ast_hf
from ast_hf.audio_io import espeak_available, espeak_speech

ROOT = Path(__file__).resolve().parents[1]


def load_script(folder: str, name: str):
    """FOLDER/NAME.py (conversion/ or examples/) imported as the module `FOLDER.NAME`, so that tests call its
    functions and main() (registered in sys.modules, which dataclasses defined in it need)."""
    spec = importlib.util.spec_from_file_location(f"{folder}.{name}", ROOT / folder / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def load_conversion_script(name: str):
    return load_script("conversion", name)


def load_example(name: str):
    return load_script("examples", name)


# The suite's tiny AST (as transformers' ModelTester builds one): 2 layers, 32 wide, 4 heads, a 12 x 12 stored grid.
TINY_FIELDS = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64, num_mel_bins=128,
                   max_length=128, frequency_stride=10, time_stride=10, num_labels=5)


def tiny_config(builtin: bool = False, **overrides):
    """The tiny config with `overrides`: an ast_hf.ASTConfig, or transformers' own ASTConfig with `builtin`."""
    config_class = transformers.ASTConfig if builtin else ast_hf.ASTConfig
    return config_class(**{**TINY_FIELDS, **overrides})


def tiny_model(builtin: bool = False, seed: int = 0, attn_implementation: str | None = None, **overrides):
    """An ASTForAudioClassification (ast_hf's, or transformers' built-in one with `builtin`) of `tiny_config`, every
    parameter random (`randomize`), in eval mode: the one model factory of the suite."""
    model_class = transformers.ASTForAudioClassification if builtin else ast_hf.ASTForAudioClassification
    model = model_class._from_config(tiny_config(builtin, **overrides), attn_implementation=attn_implementation)
    return randomize(model, seed=seed)


def randomize(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Give every parameter (zero-initialised tokens and positions included) random values."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.2)
    return model.eval()


def speak(text: str, voice: str = "en", speed: int = 160, pitch: int = 50) -> np.ndarray:
    """Real speech from espeak-ng (ast_hf.audio_io.espeak_speech), 16 kHz mono float32."""
    if not espeak_available():
        pytest.fail("espeak-ng is not installed; run `bash scripts/setup.sh` (it installs Debian's espeak-ng).")
    return espeak_speech(text, voice, speed, pitch)


@pytest.fixture(scope="session")
def speech() -> list[np.ndarray]:
    """Four real utterances of different lengths (about 0.5 to 3 s) at 16 kHz."""
    texts = [("yes", "en", 160), ("left right up down", "en-us", 140),
             ("the quick brown fox jumps over the lazy dog", "en-gb", 170), ("stop", "en+f3", 120)]
    return [speak(text, voice, speed) for text, voice, speed in texts]


@pytest.fixture(scope="session")
def commands_root(tmp_path_factory) -> Path:
    """The embedded espeak-ng command data at a small size: 4 training and 2 evaluation clips per word."""
    from ast_hf.espeak_commands import CommandsSpec, build_commands_dataset

    cache = tmp_path_factory.mktemp("cache")
    root = build_commands_dataset(CommandsSpec(clips_per_word=4, eval_clips_per_word=2), cache_dir=cache,
                                  verbose=False)
    assert build_commands_dataset(CommandsSpec(clips_per_word=4, eval_clips_per_word=2), cache_dir=cache) == root
    return root


# The word model of the tagging tests: a tiny AST trained in the fixture to tell four spoken words and silence apart.
WORDS = ["yes", "no", "up", "down"]
SILENCE = "_silence_"


def train_word_model(folder: Path, steps: int = 600, seed: int = 0) -> Path:
    """Train a tiny AST (128 frames, Speech Commands statistics) on espeak-ng's four WORDS in three voices at several
    speeds and pitches, plus quiet noise as SILENCE, and save model and extractor to `folder`. Its job is to find
    each word in a long recording and in a short file, not to generalise to unheard voices: it is tested on the
    voices it heard."""
    from ast_hf.presets import dataset_settings

    torch.manual_seed(seed)
    generator = np.random.default_rng(seed)
    labels = [*WORDS, SILENCE]
    clips, targets = [], []
    for index, word in enumerate(WORDS):
        for voice in ("en", "en-us", "en-gb"):
            for speed in (130, 165, 200):
                for pitch in (35, 65):
                    clips.append(speak(word, voice, speed, pitch))
                    targets.append(index)
    for level in np.linspace(0.0, 0.01, 18):
        clips.append((generator.standard_normal(16000) * level).astype(np.float32))
        targets.append(len(WORDS))
    preset = dataset_settings("speechcommands")
    extractor = ast_hf.ASTFeatureExtractor(max_length=128, mean=preset["mean"], std=preset["std"])
    model = ast_hf.ASTForAudioClassification(tiny_config(
        num_labels=len(labels), id2label=dict(enumerate(labels)), label2id={n: i for i, n in enumerate(labels)},
        hidden_size=64, intermediate_size=128, frequency_stride=16, time_stride=16))
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    targets = torch.tensor(targets)
    model.train()
    for _ in range(steps):
        rows = torch.from_numpy(generator.choice(len(clips), size=32, replace=False))
        # Half the clips anywhere in a 1.28 s window, as a word in a long recording falls anywhere in one, the other
        # half alone with up to 0.3 s before and after (a short file, run at its own length with the mask), each over
        # quiet noise of a random level (recordings are rarely digital silence).
        placed = []
        for n, i in enumerate(rows.tolist()):
            length = 20480 if n % 2 == 0 else min(20480, len(clips[i]) + int(generator.integers(0, 9600)))
            window = generator.standard_normal(length).astype(np.float32) * generator.uniform(0.0, 3e-3)
            begin = int(generator.integers(0, max(1, length - len(clips[i]))))
            window[begin:begin + len(clips[i])] += clips[i][:length - begin]
            placed.append(window)
        batch = extractor(placed, sampling_rate=16000, padding="longest", return_attention_mask=True,
                          return_tensors="pt")
        loss = model(**batch, labels=targets[rows]).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval().save_pretrained(folder)
    # Trained on masked batches of clips at their own length: the convention saved with its extractor.
    ast_hf.ASTFeatureExtractor(**{**extractor.to_dict(), "pad_to_max_length": False,
                                  "return_attention_mask": True}).save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def word_model(tmp_path_factory) -> Path:
    """A directory holding the trained word model (`train_word_model`)."""
    return train_word_model(tmp_path_factory.mktemp("word_model"))


def card_settings(card: str) -> dict:
    """The hyper-parameter table of a model card's "Training procedure" section, values read back as Python values
    (numbers, booleans, None; anything else a string)."""
    section = card.split("## Training procedure", 1)[1].split("\n## ", 1)[0]
    settings = {}
    for line in section.splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if len(cells) != 2 or cells[0] in ("hyper-parameter", "---"):
            continue
        name, text = cells
        value: object = {"True": True, "False": False, "None": None}.get(text, text)
        if isinstance(value, str):
            for kind in (int, float):
                try:
                    value = kind(text)
                    break
                except ValueError:
                    continue
        settings[name] = value
    return settings
