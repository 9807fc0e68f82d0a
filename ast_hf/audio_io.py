"""Audio in: the samples of a data set's audio cell, of an audio file, and of espeak-ng speech, as mono float32 at
the feature extractor's rate, for `stats.py`, the training collator, the converters' verification clip, the examples
and the tests. (The fine-tuning data check, `training/data.py`, decodes each file with torchcodec itself, because
it must use the decoder that datasets uses in training; `drumkits.py` builds its data set with soundfile.)
"""

from __future__ import annotations

import io
import os
import shutil
import subprocess
import wave
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch

# File name endings taken for audio when an audiofolder is checked.
AUDIO_SUFFIXES = (".wav", ".flac", ".mp3", ".ogg", ".opus", ".m4a", ".aac", ".aiff", ".aif", ".au", ".webm", ".wma")


class AudioReadError(ValueError):
    """An audio file that does not exist or cannot be decoded; the message names the file and the decoders tried."""


def decode_audio(cell: Any, sampling_rate: int) -> Any:
    """The samples of one audio cell: a dict with "array" (+ "sampling_rate"), a torchcodec AudioDecoder (datasets
    4+), or an array/tensor/list as it is. Multi-channel decoded audio is averaged to mono."""
    if hasattr(cell, "get_all_samples"):  # torchcodec AudioDecoder
        samples = cell.get_all_samples()
        cell = {"array": samples.data.mean(dim=0), "sampling_rate": samples.sample_rate}
    if isinstance(cell, Mapping):
        if "array" not in cell:
            raise ValueError(f"Audio cell has keys {sorted(cell)}; expected 'array' and 'sampling_rate'. Cast the "
                             f"column with datasets.Audio(sampling_rate={sampling_rate}).")
        if cell.get("sampling_rate", sampling_rate) != sampling_rate:
            raise ValueError(f"Audio at {cell['sampling_rate']} Hz; the feature extractor needs {sampling_rate} Hz. "
                             f"Cast the column with datasets.Audio(sampling_rate={sampling_rate}) first.")
        cell = cell["array"]
    return cell


def read_audio_file(path: str | os.PathLike, sampling_rate: int = 16000) -> torch.Tensor:
    """The samples of an audio file as a mono float32 tensor at `sampling_rate`; an AudioReadError that names the
    file and the decoders tried when it cannot be read."""
    import torchaudio

    path = str(path)
    if not os.path.isfile(path):
        raise AudioReadError(f"Audio file {path!r} does not exist.")
    errors = []
    try:
        import soundfile

        samples, rate = soundfile.read(path, dtype="float32", always_2d=True)  # (N, channels)
        clip = torch.from_numpy(samples.mean(axis=1))
    except (ImportError, RuntimeError, ValueError, TypeError) as error:  # soundfile's errors are RuntimeErrors
        errors.append(f"soundfile: {' '.join(str(error).split())[:120]}")
        try:
            waveform, rate = torchaudio.load(path)  # (channels, N); needs torchcodec and FFmpeg
            clip = waveform.float().mean(dim=0)
        except Exception as second:  # torchaudio's backends raise many types on a file they cannot decode
            errors.append(f"torchaudio: {' '.join(str(second).split())[:120]}")
            raise AudioReadError(f"Could not decode {path!r} as audio ({'; '.join(errors)}). Pass a WAV, FLAC, "
                                 "Ogg or MP3 file.") from second
    return torchaudio.functional.resample(clip, rate, sampling_rate) if rate != sampling_rate else clip


def espeak_available() -> bool:
    return shutil.which("espeak-ng") is not None


def espeak_speech(text: str, voice: str = "en", speed: int = 175, pitch: int = 50,
                  sampling_rate: int = 16000) -> np.ndarray:
    """`text` spoken by espeak-ng (real speech synthesis, no network), mono float32 in [-1, 1] at `sampling_rate`.
    The defaults are espeak-ng's own (voice en, 175 words per minute, pitch 50)."""
    import torchaudio

    if not espeak_available():
        raise RuntimeError("espeak-ng is not installed; run `bash scripts/setup.sh` (Debian package espeak-ng).")
    done = subprocess.run(["espeak-ng", "-v", voice, "-s", str(speed), "-p", str(pitch), "--stdout", text],
                          capture_output=True, check=True)
    # espeak-ng --stdout writes a WAV whose header has no length; `wave` reads it from an in-memory file.
    with wave.open(io.BytesIO(done.stdout)) as handle:
        rate = handle.getframerate()
        audio = np.frombuffer(handle.readframes(handle.getnframes()), dtype=np.int16).astype(np.float32) / 32768.0
    return torchaudio.functional.resample(torch.from_numpy(audio), rate, sampling_rate).numpy()


__all__ = ["AUDIO_SUFFIXES", "AudioReadError", "decode_audio", "espeak_available", "espeak_speech",
           "read_audio_file"]
