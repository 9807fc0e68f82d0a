"""Audio in: the samples of a data set's audio cell, of an audio file, and of espeak-ng speech, as mono float32 at
the feature extractor's rate, for `stats.py`, the training collator, the converters' verification clip, the examples
and the tests; and recordings of any length read chunk by chunk (`open_audio`) for the tagging pipeline.
(The fine-tuning data check, `training/data.py`, decodes each file with torchcodec itself, because it must use the
decoder that datasets uses in training; `drumkits.py` builds its data set with soundfile.)
"""

from __future__ import annotations

import io
import os
import re
import shutil
import struct
import subprocess
import wave
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import numpy as np
import torch

# File name endings taken for audio when an audiofolder is checked.
AUDIO_SUFFIXES = (".wav", ".flac", ".mp3", ".ogg", ".opus", ".m4a", ".aac", ".aiff", ".aif", ".au", ".webm", ".wma")


class AudioReadError(ValueError):
    """An audio file that does not exist or cannot be decoded; the message names the file and the decoders tried."""


class DecoderUnavailableError(ImportError):
    """No audio file can be decoded here: torchcodec is not installed, or it cannot load FFmpeg's libraries. The
    message is one line naming the missing piece and the command that installs it."""


def _decoder_unavailable(error: Exception) -> DecoderUnavailableError:
    """The one-line DecoderUnavailableError for torchcodec's failure `error` (an ImportError when torchcodec is not
    installed; its RuntimeError "Could not load libtorchcodec" when FFmpeg's libraries are missing or the torchcodec
    build does not match torch)."""
    if isinstance(error, ImportError):
        return DecoderUnavailableError(
            "Decoding audio files needs torchcodec, which is not installed: pip install torchcodec (it also needs "
            "FFmpeg's libraries: apt-get install ffmpeg).", name="torchcodec")
    import torch

    return DecoderUnavailableError(
        "Decoding audio files needs FFmpeg's shared libraries (FFmpeg 4 to 9), which torchcodec could not load: "
        "apt-get install ffmpeg (or conda install -c conda-forge ffmpeg); if FFmpeg is installed, install the "
        f"torchcodec release made for torch {torch.__version__.split('+')[0]} (pip install -U torchcodec).",
        name="torchcodec")


def _is_missing_ffmpeg(error: Exception) -> bool:
    """Whether torchcodec's `error` says it could not load its FFmpeg-linked core library (not a bad file)."""
    return "Could not load libtorchcodec" in str(error)


# A valid 16 kHz mono WAV of one silent sample: what check_file_decoding asks torchcodec to open.
_ONE_SAMPLE_WAV = (b"RIFF" + struct.pack("<I", 38) + b"WAVE"
                   + b"fmt " + struct.pack("<IHHIIHH", 16, 1, 1, 16000, 32000, 2, 16)  # PCM, mono, 16 kHz, 16 bit
                   + b"data" + struct.pack("<I", 2) + b"\x00\x00")


def check_file_decoding() -> None:
    """A DecoderUnavailableError naming what is missing when audio files cannot be decoded here (torchcodec, or
    FFmpeg's libraries); nothing otherwise. It opens a one-sample WAV in memory, so it checks the real decoder."""
    try:
        from torchcodec.decoders import AudioDecoder

        AudioDecoder(_ONE_SAMPLE_WAV)
    except ImportError as error:
        raise _decoder_unavailable(error) from error
    except Exception as error:  # noqa: BLE001 (torchcodec reports a library it cannot load as a RuntimeError)
        if _is_missing_ffmpeg(error):
            raise _decoder_unavailable(error) from error
        raise


def decode_audio(cell: Any, sampling_rate: int) -> Any:
    """The samples of one audio cell: a dict with "array" (+ "sampling_rate"), an undecoded {"path", "bytes"} cell
    (`datasets.Audio(decode=False)`, decoded here at `sampling_rate`), a torchcodec AudioDecoder (datasets 4+), or an
    array/tensor/list as it is. Multi-channel decoded audio is averaged to mono."""
    if isinstance(cell, Mapping) and "array" not in cell and ("path" in cell or "bytes" in cell):
        return decode_file_cell(cell, sampling_rate)
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


def decode_file_cell(cell: Mapping[str, Any], sampling_rate: int) -> np.ndarray:
    """Decode an undecoded audio cell ({"path", "bytes"}) to mono float32 samples at `sampling_rate`.

    A WAV or FLAC file already at `sampling_rate` is read with libsndfile (soundfile), which gives the same samples
    as FFmpeg for PCM and float data and skips the cost of opening an FFmpeg decoder per clip (1.7 ms on a 2-core
    EPYC, a quarter of a small model's training step); anything else, or another rate, is decoded and resampled by
    torchcodec (FFmpeg), as `datasets.Audio(sampling_rate=...)` does. Channels are averaged.

    Args:
        cell: {"path": ..., "bytes": ...}: file bytes, or else a path.
        sampling_rate: The rate to decode at.

    Returns:
        A 1-D float32 array.
    """
    source = cell.get("bytes") if cell.get("bytes") is not None else cell.get("path")
    try:
        import soundfile

        with soundfile.SoundFile(io.BytesIO(source) if isinstance(source, bytes) else source) as handle:  # one open
            if handle.samplerate == sampling_rate and handle.format in ("WAV", "FLAC"):
                samples = handle.read(dtype="float32", always_2d=True)  # (N, channels)
                return samples.mean(axis=1, dtype=np.float32) if samples.shape[1] > 1 else samples[:, 0]
    except (ImportError, RuntimeError, ValueError, TypeError):  # not for libsndfile: FFmpeg below
        pass
    from torchcodec.decoders import AudioDecoder

    decoded = AudioDecoder(source, sample_rate=sampling_rate).get_all_samples().data  # (channels, N)
    return decoded.mean(dim=0).numpy()


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


# Seconds decoded at a time when a file is streamed: large enough that FFmpeg's per-call overhead vanishes, small
# enough that a chunk (480,000 float32 samples at 16 kHz, 1.9 MB) is nothing next to the model.
CHUNK_SECONDS = 30.0
# A 2-D array with at most this many rows (or columns) is read as (channels, samples) (or (samples, channels)).
MAX_CHANNELS = 16
# WAV data sizes that mean "unknown length" (streamed writers such as `espeak-ng --stdout` put these in the header).
_UNKNOWN_WAV_SIZES = (0, 0xFFFFFFFF, 0x7FFFFFFF, 0x7FFFF000)
_WAV_HEAD_BYTES = 1 << 16  # where a WAV's "data" chunk header is looked for


def decoder_reason(error: Exception) -> str:
    """The part of a torchcodec/FFmpeg error a user can act on: its message without C++ source locations."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    text = re.sub(r"\S*\.(cpp|h):\d+,?", "", " ".join(lines))  # C++ source locations
    text = re.sub(r"^\w+,\s*", "", " ".join(text.split()))  # the C++ function's name
    return (text or type(error).__name__)[:160]


def wav_truncation(source: str | os.PathLike | bytes | bytearray) -> str | None:
    """Why a RIFF/WAVE file (a path, or the file's bytes) is cut short, None when it is whole or not a WAV. FFmpeg
    decodes what is there without complaint and reports the shortened length, so the header's data size is the
    only witness."""
    if isinstance(source, (bytes, bytearray)):
        head, size = bytes(source[:_WAV_HEAD_BYTES]), len(source)
    else:
        with open(source, "rb") as handle:
            head, size = handle.read(_WAV_HEAD_BYTES), os.fstat(handle.fileno()).st_size
    if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
        return None
    position = 12
    while position + 8 <= len(head):
        chunk_id, chunk_size = head[position:position + 4], struct.unpack("<I", head[position + 4:position + 8])[0]
        if chunk_id == b"data":
            if chunk_size in _UNKNOWN_WAV_SIZES:
                return None
            present = size - (position + 8)
            if present < chunk_size:
                return (f"truncated: its header announces {chunk_size} bytes of samples, the file holds "
                        f"{max(present, 0)}")
            return None
        position += 8 + chunk_size + (chunk_size & 1)
    return None


class AudioStream:
    """One recording, read as mono float32 chunks at `sampling_rate` (`chunks()`), so that memory does not grow
    with its length. `name` names it in messages, `duration` is its length in seconds when the container says
    (None when unknown)."""

    def __init__(self, name: str, sampling_rate: int, duration: float | None,
                 chunks: Callable[[], Iterator[torch.Tensor]]) -> None:
        self.name = name
        self.sampling_rate = sampling_rate
        self.duration = duration
        self._chunks = chunks

    def samples(self) -> torch.Tensor:
        """The whole recording as one 1-D float32 tensor (for clip classifiers, which cut it to one window)."""
        return torch.cat(list(self.chunks()))

    def chunks(self) -> Iterator[torch.Tensor]:
        """The samples in order, as 1-D float32 tensors; an AudioReadError naming the recording where decoding
        fails part way, or when it holds no samples."""
        total = 0
        for chunk in self._chunks():
            if not bool(torch.isfinite(chunk).all()):
                raise AudioReadError(f"{self.name}: NaN or Inf samples after {total / self.sampling_rate:.2f} s.")
            total += chunk.shape[0]
            yield chunk
        if total == 0:
            raise AudioReadError(f"{self.name}: no audio samples (an empty recording).")


def open_audio(source: Any, sampling_rate: int, source_rate: int | None = None,
               chunk_seconds: float = CHUNK_SECONDS) -> AudioStream:
    """A recording of any length as an AudioStream of mono float32 at `sampling_rate`.

    source: a file path (any format FFmpeg reads: wav, flac, ogg, mp3, m4a, ...), encoded file bytes, a binary
        file-like object, a dict {"array" or "raw": samples, "sampling_rate": rate} (datasets' and transformers'
        audio dicts), or a 1-D/2-D numpy array or torch tensor of samples at `source_rate`.
    Files are decoded with torchcodec (FFmpeg) `chunk_seconds` at a time, FFmpeg resampling (swresample) as it
    decodes and each chunk averaged over its channels, so only one chunk is in memory. Arrays are averaged over
    channels (a 2-D array's short side, at most 16, is taken for channels) and resampled with torchaudio in one go,
    since they are in memory already. An AudioReadError (a ValueError) names the file and the reason when it is
    missing, not audio or truncated; a TypeError names a source of another kind.
    """
    if isinstance(source, Mapping):
        key = "array" if "array" in source else "raw" if "raw" in source else None
        if key is None or "sampling_rate" not in source:
            raise ValueError(f"An audio dict needs 'array' (or 'raw') and 'sampling_rate'; got keys {sorted(source)}.")
        return open_audio(source[key], sampling_rate, source_rate=source["sampling_rate"])
    if isinstance(source, (np.ndarray, torch.Tensor)):
        return _array_stream(source, sampling_rate, source_rate)
    if source_rate is not None:  # arrays returned above
        raise ValueError(f"sampling_rate={source_rate} was given with a {type(source).__name__}; files carry their "
                         "own rate (it is read from the file). Pass sampling_rate only with an array or tensor.")
    if isinstance(source, (str, os.PathLike)):
        path = os.fspath(source)
        if not os.path.exists(path):
            raise AudioReadError(f"{path}: no such file.")
        if os.path.isdir(path):
            raise AudioReadError(f"{path}: a directory, not an audio file.")
        if os.path.getsize(path) == 0:
            raise AudioReadError(f"{path}: an empty file (0 bytes).")
        reason = wav_truncation(path)
        if reason:
            raise AudioReadError(f"{path}: {reason}.")
        return _decoded_stream(path, path, sampling_rate, chunk_seconds)
    if isinstance(source, (bytes, bytearray)):
        if not source:
            raise AudioReadError("<bytes>: empty (0 bytes).")
        reason = wav_truncation(source)
        if reason:
            raise AudioReadError(f"<bytes>: {reason}.")
        return _decoded_stream(bytes(source), "<bytes>", sampling_rate, chunk_seconds)
    if hasattr(source, "read") and hasattr(source, "seek"):
        return _decoded_stream(source, getattr(source, "name", None) or "<file object>", sampling_rate, chunk_seconds)
    raise TypeError(f"Cannot read audio from a {type(source).__name__}; pass a file path, file bytes, a binary file "
                    "object, a numpy array or torch tensor (with its sampling rate), or a dict with 'array' and "
                    "'sampling_rate'.")


def _decoded_stream(source: Any, name: str, sampling_rate: int, chunk_seconds: float) -> AudioStream:
    """An AudioStream over torchcodec's decoder: consecutive `get_samples_played_in_range` calls continue where the
    last one stopped (sample for sample what one `get_all_samples` call returns, checked for wav/flac/ogg/mp3).
    FFmpeg resamples; the channels are averaged here (FFmpeg's own downmix to one channel adds them at -3 dB, so a
    stereo file would come out 1.41 times louder than its mean). Reading stops when the decoder runs out, not at
    the container's duration, which is an estimate for some formats (ADTS AAC, MP3 without a header)."""
    try:
        from torchcodec.decoders import AudioDecoder
    except ImportError as error:
        raise _decoder_unavailable(error) from error
    try:
        decoder = AudioDecoder(source, sample_rate=sampling_rate)
        duration = decoder.metadata.duration_seconds
    except Exception as error:  # noqa: BLE001 (FFmpeg raises RuntimeErrors of every kind for unreadable input)
        if _is_missing_ffmpeg(error):  # no file is readable here: not this file's fault
            raise _decoder_unavailable(error) from error
        raise AudioReadError(f"{name}: not readable audio ({decoder_reason(error)}).") from error
    begin = decoder.metadata.begin_stream_seconds or 0.0

    def chunks() -> Iterator[torch.Tensor]:
        start, decoded = begin, 0
        while True:
            try:
                samples = decoder.get_samples_played_in_range(start, start + chunk_seconds).data  # (channels, n)
            except RuntimeError as error:
                if "No audio frames were decoded" in str(error):
                    if decoded:
                        return  # past the end
                    raise AudioReadError(f"{name}: no audio samples (an empty recording).") from error
                if decoded and "seek" in str(error):
                    # A file FFmpeg cannot seek in (a FLAC without a seek table): past the container's duration this
                    # is the end; before it, the rest is decoded in one go (memory then grows with the file).
                    if duration is not None and start >= duration:
                        return
                    try:
                        rest = decoder.get_all_samples().data[:, decoded:]  # (channels, n)
                    except RuntimeError as again:
                        raise AudioReadError(f"{name}: decoding failed after {decoded / sampling_rate:.2f} s of "
                                             f"audio ({decoder_reason(again)}); the file is damaged or "
                                             "truncated.") from again
                    if rest.shape[1]:
                        yield rest.mean(dim=0)
                    return
                raise AudioReadError(f"{name}: decoding failed after {decoded / sampling_rate:.2f} s of audio "
                                     f"({decoder_reason(error)}); the file is damaged or truncated.") from error
            if samples.shape[1] == 0:
                return
            decoded += samples.shape[1]
            yield samples.mean(dim=0)
            start += chunk_seconds

    return AudioStream(name, sampling_rate, duration, chunks)


def _array_stream(samples: Any, sampling_rate: int, source_rate: int | None) -> AudioStream:
    """An in-memory clip as an AudioStream: mono, at `sampling_rate`, one chunk."""
    import torchaudio

    clip = torch.as_tensor(samples)
    if not (clip.is_floating_point() or clip.dtype in (torch.int8, torch.int16, torch.int32)):
        raise TypeError(f"Audio samples of dtype {clip.dtype} are not supported; pass float audio in [-1, 1] or "
                        "int8/int16/int32 PCM.")
    if not clip.is_floating_point():
        clip = clip.float() / float(-torch.iinfo(clip.dtype).min)  # PCM full scale to [-1, 1)
    if clip.ndim == 2:
        if clip.shape[0] <= MAX_CHANNELS and clip.shape[0] < clip.shape[1]:
            clip = clip.mean(dim=0)  # (channels, N)
        elif clip.shape[1] <= MAX_CHANNELS and clip.shape[1] < clip.shape[0]:
            clip = clip.mean(dim=1)  # (N, channels)
        else:
            raise ValueError(f"Audio of shape {tuple(clip.shape)} has no channel axis of at most {MAX_CHANNELS}; pass "
                             "(samples,), (channels, samples) or (samples, channels).")
    elif clip.ndim != 1:
        raise ValueError(f"Audio of shape {tuple(clip.shape)}; pass (samples,), (channels, samples) or "
                         "(samples, channels).")
    clip = clip.float()
    if source_rate is None:
        source_rate = sampling_rate
    elif isinstance(source_rate, float) and source_rate.is_integer():
        source_rate = int(source_rate)
    if isinstance(source_rate, bool) or not isinstance(source_rate, (int, np.integer)):
        raise TypeError(f"sampling_rate={source_rate!r} must be an integer number of samples per second.")
    if source_rate <= 0:
        raise ValueError(f"sampling_rate={source_rate} must be positive (samples per second).")
    if source_rate != sampling_rate:
        clip = torchaudio.functional.resample(clip, int(source_rate), sampling_rate)
    return AudioStream("<array>", sampling_rate, clip.shape[0] / sampling_rate, lambda: iter([clip]))


__all__ = ["AUDIO_SUFFIXES", "CHUNK_SECONDS", "AudioReadError", "AudioStream", "DecoderUnavailableError",
           "check_file_decoding", "decode_audio", "decode_file_cell", "decoder_reason", "espeak_available",
           "espeak_speech", "open_audio", "read_audio_file", "wav_truncation"]
