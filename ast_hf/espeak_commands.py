"""A spoken-command data set made on the spot with espeak-ng: the ten Speech Commands words (Warden 2018) said in
many English accents, voice variants, speeds and pitches, resampled to 16 kHz. It is the embedded default data of
the fine-tuning examples: real speech synthesis, no download, deterministic for a seed, and the evaluation accents
are never heard in training, so its accuracy measures generalisation to new speakers.

The result is an `audiofolder` tree (train/<word>/*.wav, validation/<word>/*.wav plus metadata.csv with the voice
of every clip), written once to a cache folder and reused.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import wave
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from .audio_io import espeak_speech
from .data_cache import default_cache_dir, staged_build, write_metadata

WORDS = ("yes", "no", "up", "down", "left", "right", "on", "off", "stop", "go")
# espeak-ng's English accents (its own gmw voices; mbrola voices need extra packages).
TRAIN_ACCENTS = ("en-us", "en-gb", "en-gb-x-rp", "en-gb-x-gbclan", "en-gb-x-gbcwmd", "en-us-nyc")
HELD_OUT_ACCENTS = ("en-gb-scotland", "en-029")
VARIANTS = ("", "m1", "m2", "m3", "m4", "m5", "m6", "m7", "f1", "f2", "f3", "f4", "f5", "klatt", "klatt2", "klatt3",
            "croak", "whisper", "Alex", "Andy", "annie", "benjamin", "david", "edward", "grandma", "linda", "max",
            "paul", "steph", "john")
SAMPLING_RATE = 16000
VERSION = 1  # bump when the recipe below changes, so that stale caches are not reused


@dataclass(frozen=True)
class CommandsSpec:
    """What to synthesise. `clips_per_word` training and `eval_clips_per_word` evaluation utterances per word."""

    clips_per_word: int = 300
    eval_clips_per_word: int = 50
    seed: int = 0
    train_accents: tuple[str, ...] = TRAIN_ACCENTS
    eval_accents: tuple[str, ...] = HELD_OUT_ACCENTS
    words: tuple[str, ...] = WORDS
    speed: tuple[int, int] = (110, 220)  # words per minute
    pitch: tuple[int, int] = (20, 80)  # espeak-ng 0..99
    noise: tuple[float, float] = (0.0, 0.01)  # std of added white noise, drawn per clip
    version: int = field(default=VERSION)

    def key(self) -> str:
        return hashlib.sha1(json.dumps(asdict(self), sort_keys=True).encode()).hexdigest()[:12]


def plan(spec: CommandsSpec) -> list[dict[str, object]]:
    """Every clip's split, word, voice, speed, pitch and noise, drawn from `spec.seed` alone."""
    rng = random.Random(spec.seed)
    rows = []
    for split, accents, count in (("train", spec.train_accents, spec.clips_per_word),
                                  ("validation", spec.eval_accents, spec.eval_clips_per_word)):
        for word in spec.words:
            for index in range(count):
                accent, variant = rng.choice(accents), rng.choice(VARIANTS)
                rows.append(dict(split=split, word=word, index=index,
                                 voice=accent + (f"+{variant}" if variant else ""),
                                 speed=rng.randint(*spec.speed), pitch=rng.randint(*spec.pitch),
                                 noise=round(rng.uniform(*spec.noise), 5), noise_seed=rng.randrange(2**31)))
    return rows


def _render(row: dict[str, object]) -> np.ndarray:
    audio = espeak_speech(str(row["word"]), str(row["voice"]), int(row["speed"]), int(row["pitch"]), SAMPLING_RATE)
    noise = np.random.default_rng(int(row["noise_seed"])).standard_normal(audio.shape[0]).astype(np.float32)
    return np.clip(audio + float(row["noise"]) * noise, -1.0, 1.0)


def _write_wav(path: Path, audio: np.ndarray) -> None:
    with wave.open(str(path), "wb") as handle:
        handle.setnchannels(1)
        handle.setsampwidth(2)
        handle.setframerate(SAMPLING_RATE)
        handle.writeframes((audio * 32767).round().astype(np.int16).tobytes())


def build_commands_dataset(spec: CommandsSpec | None = None, cache_dir: str | os.PathLike | None = None,
                           workers: int = 4, verbose: bool = True) -> Path:
    """Synthesise the data set (or reuse the cached copy) and return its root: `root/train`, `root/validation`,
    each an audiofolder (`<word>/<name>.wav` + metadata.csv). Safe against interruption: the tree is built in a
    temporary folder and renamed into place when complete."""
    spec = spec or CommandsSpec()
    root = Path(cache_dir or default_cache_dir()) / f"espeak_commands_{spec.key()}"
    if (root / "spec.json").is_file():
        return root
    rows = plan(spec)
    with staged_build(root, asdict(spec)) as staging:
        if verbose:
            print(f"synthesising {len(rows)} clips with espeak-ng into {root} (once; cached afterwards)", flush=True)
        with ThreadPoolExecutor(max_workers=workers) as pool:
            clips = list(pool.map(_render, rows))
        for split in ("train", "validation"):
            metadata = []
            for row, audio in zip(rows, clips, strict=True):
                if row["split"] != split:
                    continue
                name = f"{row['word']}/{row['word']}_{row['index']:04d}.wav"
                (staging / split / str(row["word"])).mkdir(parents=True, exist_ok=True)
                _write_wav(staging / split / name, audio)
                metadata.append(dict(file_name=name, label=row["word"], voice=row["voice"], speed=row["speed"],
                                     pitch=row["pitch"]))
            write_metadata(staging / split, metadata)
    return root


__all__ = ["CommandsSpec", "HELD_OUT_ACCENTS", "TRAIN_ACCENTS", "WORDS", "build_commands_dataset"]
