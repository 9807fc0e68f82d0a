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
        errors.append(f"soundfile: {' '.join(str(error).split())}")
        try:
            waveform, rate = torchaudio.load(path)  # (channels, N); needs torchcodec and FFmpeg
            clip = waveform.float().mean(dim=0)
        except Exception as second:  # torchaudio's backends raise many types on a file they cannot decode
            errors.append(f"torchaudio: {decoder_reason(second)}")
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
# The largest Ogg page: a 27-byte header, 255 lacing values and 255 segments of 255 bytes.
_OGG_MAX_PAGE = 27 + 255 + 255 * 255
# A file whose header states its length (an MP3 Xing/Info/VBRI frame count, an MP4 'moov', a FLAC STREAMINFO) is
# truncated when the decoder runs out more than max(_MISSING_SECONDS, _MISSING_FRACTION of that length) short of it.
# Whole files come within 0.055 s of it (an MP3's end padding at 8 kHz; measured at 8-48 kHz, 0.05-60 s, FFmpeg 5
# and torchcodec 0.17); a cut that loses less than this margin is not told from a header that rounds up.
_MISSING_SECONDS = 0.2
_MISSING_FRACTION = 0.05


def decoder_reason(error: Exception) -> str:
    """The part of a torchcodec/FFmpeg error a user can act on: its whole message on one line, without C++ source
    locations (never cut short: the end of a message is often the part that says what to do)."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    text = re.sub(r"\S*\.(cpp|h):\d+,?", "", " ".join(lines))  # C++ source locations
    text = re.sub(r"^\w+,\s*", "", " ".join(text.split()))  # the C++ function's name
    return text or type(error).__name__


def wav_truncation(source: str | os.PathLike | bytes | bytearray) -> str | None:
    """Why a RIFF/WAVE file (a path, or the file's bytes) is cut short, None when it is whole or not a WAV. FFmpeg
    decodes what is there without complaint and reports the shortened length, so the header's data size is the
    only witness."""
    if isinstance(source, (bytes, bytearray)):
        return _wav_truncation(bytes(source[:_WAV_HEAD_BYTES]), len(source))
    with open(source, "rb") as handle:
        return _wav_truncation(handle.read(_WAV_HEAD_BYTES), os.fstat(handle.fileno()).st_size)


def _wav_truncation(head: bytes, size: int) -> str | None:
    """wav_truncation for a file of `size` bytes that starts with `head`."""
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


def container_truncation(source: Any) -> str | None:
    """Why an audio file (a path, its bytes, or a seekable binary file object, left where it was) is cut short, as
    its container's own structure shows before anything is decoded; None when it looks whole or the format keeps no
    such record. Read from the file's head and tail only:

    - WAV: the "data" chunk is longer than what follows it (`wav_truncation`).
    - Ogg (Vorbis, Opus, FLAC in Ogg): the file ends inside a page, or its last page lacks the end-of-stream flag
      that every Ogg writer sets on a stream's last page.
    - MP4/M4A/MOV: a top-level box ('mdat', 'moov', ...) reaches past the end of the file.
    - MP3 with a Xing/Info or VBRI header: the whole file is smaller than the MP3 data the header counts.
    - FLAC: a metadata block reaches past the end of the file, or no audio frame follows the metadata although
      STREAMINFO counts samples.
    """
    return _container_facts(source)[0]


def _container_facts(source: Any) -> tuple[str | None, bool]:
    """(container_truncation's reason, whether the file's header states the stream's length) for `source`; the
    second is True for an MP3 with a Xing/Info/VBRI frame count, an MP4 and a FLAC whose STREAMINFO counts
    samples, the formats whose length FFmpeg takes from the header rather than estimating it (from the bit rate:
    MP3 without such a header, ADTS AAC) or measuring what is there (WAV, Ogg)."""
    if isinstance(source, (bytes, bytearray)):
        return _inspect_container(io.BytesIO(source), len(source))
    if isinstance(source, (str, os.PathLike)):
        with open(source, "rb") as handle:
            return _inspect_container(handle, os.fstat(handle.fileno()).st_size)
    try:
        position = source.tell()
        source.seek(0, os.SEEK_END)
        size = source.tell()
    except (AttributeError, OSError, ValueError):  # not seekable: FFmpeg will say so
        return None, False
    try:
        return _inspect_container(source, size)
    finally:
        source.seek(position)


def _read_at(handle: Any, offset: int, count: int) -> bytes:
    """Up to `count` bytes of `handle` from byte `offset` (fewer at the end of the file)."""
    handle.seek(offset)
    return handle.read(count) or b""


def _inspect_container(handle: Any, size: int) -> tuple[str | None, bool]:
    """_container_facts for an open binary file of `size` bytes."""
    head = _read_at(handle, 0, _WAV_HEAD_BYTES)
    if head[:4] == b"RIFF":
        return _wav_truncation(head, size), False
    if head[:4] == b"OggS":
        return _ogg_truncation(handle, size), False
    if head[4:8] == b"ftyp":
        return _mp4_truncation(handle, size), True
    start = 0
    if head[:3] == b"ID3" and len(head) >= 10:  # an ID3v2 tag (MP3, sometimes FLAC): 10 bytes + syncsafe size
        syncsafe = (head[6] & 0x7F) << 21 | (head[7] & 0x7F) << 14 | (head[8] & 0x7F) << 7 | head[9] & 0x7F
        start = 10 + syncsafe + (10 if head[5] & 0x10 else 0)  # + a footer when its flag is set
    body = head[start:start + 4096] if start + 4096 <= len(head) else _read_at(handle, start, 4096)
    if body[:4] == b"fLaC":
        return _flac_truncation(handle, start, size)
    frames, data_bytes = _mp3_info_header(body)
    if data_bytes and size < data_bytes:
        return (f"truncated: its MP3 header (Xing/Info/VBRI) counts {data_bytes} bytes of audio, the whole file "
                f"has {size}"), frames > 0
    return None, frames > 0


def _ogg_truncation(handle: Any, size: int) -> str | None:
    """Why an Ogg file is cut short: it ends inside a page, or its last page does not end the stream. Pages are
    walked from each "OggS" capture pattern in the last two page lengths of the file (one of them is a real page
    start) until a chain of pages reaches the end of the file or a page cut short; trailing bytes that are not a
    page (a tag appended by some tool) leave the file judged whole."""
    start = max(0, size - 2 * _OGG_MAX_PAGE)
    tail = _read_at(handle, start, size - start)
    candidate = tail.find(b"OggS")
    while candidate != -1:
        position, pages, end_of_stream = candidate, 0, False
        while position + 27 <= len(tail) and tail[position:position + 4] == b"OggS" and tail[position + 4] == 0:
            lacing = tail[position + 27:position + 27 + tail[position + 26]]
            page_end = position + 27 + len(lacing) + sum(lacing)
            if len(lacing) < tail[position + 26] or page_end > len(tail):
                if pages or start + candidate == 0:  # reached through whole pages: a real page, cut short
                    return (f"truncated: it ends inside an Ogg page (the file has {size} bytes, the page at byte "
                            f"{start + position} needs {start + page_end})")
                break
            position, pages, end_of_stream = page_end, pages + 1, bool(tail[position + 5] & 0x04)
        if position == len(tail) and pages:
            return None if end_of_stream else ("truncated: its last Ogg page does not end the stream (no "
                                               "end-of-stream flag), so pages are missing after it")
        # Past a chain of two or more pages (real ones: it ended in bytes that are no page) rather than one by one.
        candidate = tail.find(b"OggS", position if pages > 1 else candidate + 1)
    return None


def _mp4_truncation(handle: Any, size: int) -> str | None:
    """Why an MP4/M4A/MOV file is cut short: a top-level box reaches past the end of the file."""
    position = 0
    for _ in range(1_000_000):  # fragmented MP4 has a 'moof' and an 'mdat' per fragment
        if position + 8 > size:
            return None
        header = _read_at(handle, position, 16)
        box_size, kind = struct.unpack(">I4s", header[:8])
        if box_size == 1 and len(header) == 16:
            box_size = struct.unpack(">Q", header[8:16])[0]  # a 64-bit size follows the type
        if box_size == 0 or box_size < 8 or not all(32 <= byte < 127 for byte in kind):
            return None  # to the end of the file (size 0), or bytes that are no box: nothing more to tell
        if position + box_size > size:
            return (f"truncated: its '{kind.decode()}' box announces {box_size} bytes, the file holds "
                    f"{size - position} of it")
        position += box_size
    return None


def _flac_truncation(handle: Any, start: int, size: int) -> tuple[str | None, bool]:
    """(why a native FLAC file, "fLaC" at byte `start`, is cut short, whether STREAMINFO counts its samples)."""
    position, samples = start + 4, 0
    for _ in range(10_000):
        header = _read_at(handle, position, 4 + 18)  # a block header, and STREAMINFO up to its sample count
        if len(header) < 4:
            return f"truncated: it ends inside the FLAC metadata (the file has {size} bytes)", samples > 0
        last, kind, length = header[0] & 0x80, header[0] & 0x7F, int.from_bytes(header[1:4], "big")
        if kind == 0 and len(header) >= 22:  # STREAMINFO: the sample count is the low 36 bits of its bytes 10-17
            samples = int.from_bytes(header[17:22], "big") & 0xFFFFFFFFF
        if position + 4 + length > size:
            return (f"truncated: it ends inside the FLAC metadata (a block needs byte {position + 4 + length}, the "
                    f"file has {size})"), samples > 0
        position += 4 + length
        if last:
            break
    if samples and position >= size:
        return f"truncated: no audio follows its FLAC header, which counts {samples} samples", True
    return None, samples > 0


def _mp3_info_header(data: bytes) -> tuple[int, int]:
    """(frames, bytes) counted by the Xing/Info or VBRI header in the first MPEG audio Layer III frame of `data`
    (which starts at, or a little before, that frame), 0 for a count that is absent; (0, 0) when there is no such
    header or no MP3 frame."""
    position = data.find(b"\xff")
    while 0 <= position <= len(data) - 4 and position < 2048:
        b1, b2, b3 = data[position + 1], data[position + 2], data[position + 3]
        version, layer = (b1 >> 3) & 3, (b1 >> 1) & 3
        if b1 & 0xE0 == 0xE0 and version != 1 and layer == 1 and b2 >> 4 not in (0, 15) and (b2 >> 2) & 3 != 3:
            mono = b3 >> 6 == 3
            side_info = (17 if mono else 32) if version == 3 else (9 if mono else 17)
            xing = position + 4 + side_info
            if data[xing:xing + 4] in (b"Xing", b"Info") and len(data) >= xing + 8:
                flags, fields, counts = struct.unpack(">I", data[xing + 4:xing + 8])[0], xing + 8, []
                for flag in (1, 2):  # frame count, then byte count, each present when its flag is set
                    if flags & flag and len(data) >= fields + 4:
                        counts.append(struct.unpack(">I", data[fields:fields + 4])[0])
                        fields += 4
                    else:
                        counts.append(0)
                return counts[0], counts[1]
            vbri = position + 36
            if data[vbri:vbri + 4] == b"VBRI" and len(data) >= vbri + 18:
                data_bytes, frames = struct.unpack(">II", data[vbri + 10:vbri + 18])
                return frames, data_bytes
            return 0, 0
        position = data.find(b"\xff", position + 1)
    return 0, 0


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
        fails part way, where it holds a NaN or infinite sample (with that sample's time), when it holds no samples,
        or, once the decoder has run out, when it is truncated (see `open_audio`)."""
        total = 0
        for chunk in self._chunks():
            bad = torch.nonzero(~torch.isfinite(chunk))
            if bad.numel():
                first = total + int(bad[0, 0])  # the first non-finite sample of the recording
                at = first / self.sampling_rate
                raise AudioReadError(f"{self.name}: NaN or Inf samples, the first at {at:.3f} s (sample {first} at "
                                     f"{self.sampling_rate} Hz); clean or drop this recording.")
            total += chunk.shape[0]
            yield chunk
        if total == 0:
            raise AudioReadError(f"{self.name}: no audio samples (an empty recording).")


def open_audio(source: Any, sampling_rate: int, source_rate: int | None = None,
               chunk_seconds: float = CHUNK_SECONDS) -> AudioStream:
    """A recording of any length as an AudioStream of mono float32 at `sampling_rate`.

    source: a file path (any format FFmpeg reads: wav, flac, ogg, mp3, m4a, ...), encoded file bytes, a binary
        file-like object, a torchcodec `AudioDecoder` (what `datasets` 4+ gives for an Audio column), a dict
        {"array" or "raw": samples, "sampling_rate": rate} (datasets' and transformers' audio dicts), or a 1-D/2-D
        numpy array or torch tensor of samples at `source_rate`.
    Files are decoded with torchcodec (FFmpeg) `chunk_seconds` at a time, FFmpeg resampling (swresample) as it
    decodes and each chunk averaged over its channels, so only one chunk is in memory. An AudioDecoder is read the
    same way; when it decodes at another rate than `sampling_rate` (one made without `sample_rate=`), all of it is
    read and resampled with torchaudio in one go. Arrays are averaged over channels (a 2-D array's short side, at
    most 16, is taken for channels) and resampled with torchaudio in one go, since they are in memory already.

    An AudioReadError (a ValueError) names the file and the reason when it is missing, not audio, damaged or
    truncated; a TypeError names a source of another kind. A truncated file is told by what its container records
    (`container_truncation`, checked before decoding: WAV, Ogg Vorbis/Opus, MP4/M4A, MP3 with a Xing/Info/VBRI
    header, FLAC), by a decoder error part way (FLAC, ADTS AAC cut inside a frame), or, when the decoder runs out,
    by a decoded length more than max(0.2 s, 5 %) short of the length the header states (MP3 with a Xing/Info/VBRI
    frame count, MP4/M4A, FLAC), raised by `chunks()` at the end of the stream. Not detectable: an MP3 without such
    a header, ADTS AAC and WebM/Matroska cut at a frame boundary (their length is estimated from what is there, so
    a cut file is a shorter file), and a cut that loses less than that margin.
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
            raise AudioReadError(f"{path}: a directory, not an audio file; pass the audio files inside it (its name "
                                 "ends like an audio file's, but it is a folder).")
        if os.path.getsize(path) == 0:
            raise AudioReadError(f"{path}: an empty file (0 bytes).")
        return _decoded_stream(path, path, sampling_rate, chunk_seconds)
    if isinstance(source, (bytes, bytearray)):
        if not source:
            raise AudioReadError("<bytes>: empty (0 bytes).")
        return _decoded_stream(bytes(source), "<bytes>", sampling_rate, chunk_seconds)
    if hasattr(source, "get_samples_played_in_range") and hasattr(source, "metadata"):  # torchcodec AudioDecoder
        return _audio_decoder_stream(source, sampling_rate, chunk_seconds)
    if hasattr(source, "read") and hasattr(source, "seek"):
        return _decoded_stream(source, getattr(source, "name", None) or "<file object>", sampling_rate, chunk_seconds)
    raise TypeError(f"Cannot read audio from a {type(source).__name__}; pass a file path, file bytes, a binary file "
                    "object, a torchcodec AudioDecoder, a numpy array or torch tensor (with its sampling rate), or a "
                    "dict with 'array' and 'sampling_rate'.")


def _decoded_stream(source: Any, name: str, sampling_rate: int, chunk_seconds: float) -> AudioStream:
    """An AudioStream over torchcodec's decoder of `source` (a path, file bytes or a file object) at
    `sampling_rate`: FFmpeg resamples; the channels are averaged here (FFmpeg's own downmix to one channel adds
    them at -3 dB, so a stereo file would come out 1.41 times louder than its mean). A file whose container shows
    it cut short (`container_truncation`) is refused before decoding; one whose header states a length
    (`_container_facts`) is checked against it when the decoder runs out (`_decoder_pieces`)."""
    try:
        from torchcodec.decoders import AudioDecoder
    except ImportError as error:
        raise _decoder_unavailable(error) from error
    reason, states_length = _container_facts(source)
    if reason:
        raise AudioReadError(f"{name}: {reason}.")
    try:
        decoder = AudioDecoder(source, sample_rate=sampling_rate)
        duration = decoder.metadata.duration_seconds
    except Exception as error:  # noqa: BLE001 (FFmpeg raises RuntimeErrors of every kind for unreadable input)
        if _is_missing_ffmpeg(error):  # no file is readable here: not this file's fault
            raise _decoder_unavailable(error) from error
        raise AudioReadError(f"{name}: not readable audio ({decoder_reason(error)}).") from error
    announced = duration if states_length else None

    def chunks() -> Iterator[torch.Tensor]:
        for samples, _ in _decoder_pieces(decoder, name, chunk_seconds, announced):
            yield samples.mean(dim=0)

    return AudioStream(name, sampling_rate, duration, chunks)


def _audio_decoder_stream(decoder: Any, sampling_rate: int, chunk_seconds: float) -> AudioStream:
    """An AudioStream over a torchcodec AudioDecoder made elsewhere (datasets' Audio column): read in chunks like a
    file when it decodes at `sampling_rate`, else read whole, averaged over channels and resampled with torchaudio.
    Its source is not known here, so only decoder errors tell a damaged file."""
    import torchaudio

    name = "<AudioDecoder>"  # torchcodec keeps no path of its source

    def chunks() -> Iterator[torch.Tensor]:
        pieces = _decoder_pieces(decoder, name, chunk_seconds, None)
        for samples, rate in pieces:
            if rate == sampling_rate:
                yield samples.mean(dim=0)
                continue
            whole = torch.cat([samples, *(rest for rest, _ in pieces)], dim=1).mean(dim=0)  # (n,)
            yield torchaudio.functional.resample(whole, rate, sampling_rate)
            return

    return AudioStream(name, sampling_rate, decoder.metadata.duration_seconds, chunks)


def _decoder_pieces(decoder: Any, name: str, chunk_seconds: float,
                    announced: float | None) -> Iterator[tuple[torch.Tensor, int]]:
    """(samples (channels, n), rate) of torchcodec `decoder`, `chunk_seconds` at a time: consecutive
    `get_samples_played_in_range` calls continue where the last one stopped (sample for sample what one
    `get_all_samples` call returns, checked for wav/flac/ogg/mp3). Reading stops when the decoder runs out, not at
    the container's duration, which is an estimate for some formats (ADTS AAC, MP3 without a header); `announced`,
    the length a header states (None when there is none), is then compared with what was decoded. AudioReadErrors
    name `name`."""
    begin = decoder.metadata.begin_stream_seconds or 0.0
    duration = decoder.metadata.duration_seconds
    start, decoded, rate = begin, 0, None
    while True:
        try:
            samples = decoder.get_samples_played_in_range(start, start + chunk_seconds)
        except RuntimeError as error:
            if "No audio frames were decoded" in str(error):
                if decoded:
                    break  # past the end
                _check_length(name, 0.0, announced, begin)
                raise AudioReadError(f"{name}: no audio samples (an empty recording).") from error
            if decoded and "seek" in str(error):
                # A file FFmpeg cannot seek in (a FLAC without a seek table): past the container's duration this
                # is the end; before it, the rest is decoded in one go (memory then grows with the file).
                if duration is not None and start >= duration:
                    break
                try:
                    rest = decoder.get_all_samples().data[:, decoded:]  # (channels, n)
                except RuntimeError as again:
                    raise AudioReadError(f"{name}: decoding failed after {decoded / rate:.2f} s of audio "
                                         f"({decoder_reason(again)}); the file is damaged or truncated.") from again
                if rest.shape[1]:
                    decoded += rest.shape[1]
                    yield rest, rate
                break
            seconds = decoded / rate if rate else 0.0
            raise AudioReadError(f"{name}: decoding failed after {seconds:.2f} s of audio "
                                 f"({decoder_reason(error)}); the file is damaged or truncated.") from error
        if samples.data.shape[1] == 0:
            break
        rate = samples.sample_rate
        decoded += samples.data.shape[1]
        yield samples.data, rate
        start += chunk_seconds
    _check_length(name, decoded / rate if rate else 0.0, announced, begin)


def _check_length(name: str, decoded: float, announced: float | None, begin: float) -> None:
    """An AudioReadError when `decoded` seconds fall more than max(_MISSING_SECONDS, _MISSING_FRACTION) short of
    the `announced` length (from `begin`, where an MP3's encoder delay ends) that the file's header states."""
    if announced is None:
        return
    expected = announced - begin
    if expected - decoded > max(_MISSING_SECONDS, _MISSING_FRACTION * expected):
        raise AudioReadError(f"{name}: truncated: its header announces {announced:.2f} s of audio, the decoder found "
                             f"only {decoded:.2f} s (the rest of the file is missing, or its header is wrong).")


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
           "check_file_decoding", "container_truncation", "decode_audio", "decode_file_cell", "decoder_reason",
           "espeak_available", "espeak_speech", "open_audio", "read_audio_file", "wav_truncation"]
