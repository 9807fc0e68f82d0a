"""Bad input to `ast_hf.audio_io.open_audio`: truncated compressed files (and whole ones that must not be taken for
truncated), NaN samples, messages of undecodable files kept whole, torchcodec AudioDecoder objects, directories.
Real espeak-ng speech throughout, encoded by the ffmpeg and sox programs."""

from __future__ import annotations

import io
import re
import shutil
import struct
import subprocess
import zlib
from pathlib import Path

import pytest
import soundfile
import torch
import torchaudio

from ast_hf.audio_io import AudioReadError, decode_audio, decoder_reason, espeak_speech, open_audio, read_audio_file

pytestmark = pytest.mark.skipif(not (shutil.which("ffmpeg") and shutil.which("sox") and shutil.which("espeak-ng")),
                                reason="needs the ffmpeg, sox and espeak-ng programs (bash scripts/setup.sh)")

FORMATS = {"wav": [], "flac": [], "mp3": [], "ogg": ["-c:a", "libvorbis"], "opus": ["-c:a", "libopus"],
           "m4a": ["-c:a", "aac"]}
# Clips as (seconds, rate, channels): a 0.05-s blip at both ends of the rates, a word, and a minute.
CLIPS = {"blip8k": (0.05, 8000, 1), "blip48k": (0.05, 48000, 2), "word16k": (0.72, 16000, 1),
         "word44k": (0.72, 44100, 2), "word22k": (0.72, 22050, 1), "minute": (60.0, 16000, 1)}


def ffmpeg(*args: str | Path) -> None:
    subprocess.run(["ffmpeg", "-nostdin", "-loglevel", "error", "-y", *map(str, args)], check=True)


@pytest.fixture(scope="module")
def sources(tmp_path_factory) -> dict[str, Path]:
    """Each CLIP as a PCM WAV made by sox from espeak-ng speech (48 kHz): cut or repeated to length, resampled,
    and, for two channels, the speech on the left and half of it on the right."""
    folder = tmp_path_factory.mktemp("sources")
    speech = folder / "speech.wav"
    soundfile.write(speech, espeak_speech("hello there, general audio", sampling_rate=48000), 48000)
    paths = {}
    for name, (seconds, rate, channels) in CLIPS.items():
        paths[name] = folder / f"{name}.wav"
        remix = ["remix", "1", "1v0.5"] if channels == 2 else []
        subprocess.run(["sox", speech, "-b", "16", paths[name], "repeat", str(int(seconds // 1.5)), "trim", "0",
                        str(seconds), *remix, "rate", str(rate)], check=True)
    return paths


@pytest.fixture(scope="module")
def encoded(sources, tmp_path_factory) -> dict[tuple[str, str], Path]:
    """Every CLIP in every FORMAT, encoded by ffmpeg to a seekable file (so MP3s get their Xing/Info header)."""
    folder = tmp_path_factory.mktemp("encoded")
    paths = {}
    for clip, source in sources.items():
        for extension, arguments in FORMATS.items():
            paths[clip, extension] = folder / f"{clip}.{extension}"
            ffmpeg("-i", source, *arguments, paths[clip, extension])
    return paths


def cut(path: Path, size: int, folder: Path) -> Path:
    """The first `size` bytes of `path`, as a file of the same name in `folder`."""
    target = folder / path.name
    target.write_bytes(path.read_bytes()[:size])
    return target


# ---------------------------------------------------------------------------------------------------------------
# Truncated files


@pytest.mark.parametrize("extension", FORMATS)
def test_whole_files_are_not_taken_for_truncated(encoded, extension):
    for clip, (seconds, _, _) in CLIPS.items():
        samples = open_audio(str(encoded[clip, extension]), 16000).samples()
        # Codecs move a clip's length a little (AAC adds its priming; FFmpeg's Vorbis at 16 kHz drops 0.016 s).
        assert seconds - 0.03 <= samples.shape[0] / 16000 <= seconds + 0.1, (clip, extension)
        assert bool(torch.isfinite(samples).all())


@pytest.mark.parametrize("extension", ["ogg", "flac"])
def test_whole_files_written_by_sox_are_not_taken_for_truncated(sources, tmp_path, extension):
    for clip in ("blip8k", "word44k", "minute"):
        path = tmp_path / f"{clip}.{extension}"
        subprocess.run(["sox", sources[clip], path], check=True)
        seconds = CLIPS[clip][0]
        assert open_audio(str(path), 16000).samples().shape[0] / 16000 == pytest.approx(seconds, abs=0.03)


@pytest.mark.parametrize("extension", FORMATS)
@pytest.mark.parametrize("clip", ["word16k", "word44k", "minute"])
@pytest.mark.parametrize("keep", ["half", "300 bytes"])
def test_cut_files_are_named_as_truncated(encoded, tmp_path, extension, clip, keep):
    whole = encoded[clip, extension]
    path = cut(whole, whole.stat().st_size // 2 if keep == "half" else 300, tmp_path)
    with pytest.raises(AudioReadError, match="truncated") as error:
        open_audio(str(path), 16000).samples()
    assert str(path) in str(error.value)
    assert isinstance(error.value, ValueError)


def test_a_user_cut_mp3_word_is_not_read_as_a_few_milliseconds(encoded, tmp_path):
    # The user's report: the first 600 bytes of a 0.73-s MP3 word decoded as 2 ms of audio without a word of warning.
    path = cut(encoded["word44k", "mp3"], 600, tmp_path)
    name = re.escape(str(path))
    with pytest.raises(AudioReadError, match=rf"{name}: truncated: its MP3 header \(Xing/Info/VBRI\) counts \d+"):
        open_audio(str(path), 16000).samples()
    for source in (path.read_bytes(), io.BytesIO(path.read_bytes())):  # bytes and file objects are checked too
        with pytest.raises(AudioReadError, match="truncated"):
            open_audio(source, 16000).samples()


def without_xing_byte_count(data: bytes) -> bytes:
    """An MP3 whose Xing/Info header counts frames only (as some encoders write it): the byte-count flag cleared."""
    tag = max(data.find(b"Xing"), data.find(b"Info"))
    flags = struct.unpack(">I", data[tag + 4:tag + 8])[0]
    assert tag > 0 and flags & 3 == 3
    return data[:tag + 4] + struct.pack(">I", flags & ~2) + data[tag + 8:]


def test_an_mp3_shorter_than_its_xing_frame_count_fails_at_the_end_of_the_stream(encoded, tmp_path):
    data = without_xing_byte_count(encoded["minute", "mp3"].read_bytes())
    (tmp_path / "whole.mp3").write_bytes(data)
    assert open_audio(str(tmp_path / "whole.mp3"), 16000).samples().shape[0] / 16000 == pytest.approx(60, abs=0.1)
    path = tmp_path / "half.mp3"
    path.write_bytes(data[:len(data) // 2])
    stream = open_audio(str(path), 16000, chunk_seconds=5.0)  # nothing in the file's structure gives it away
    chunks = stream.chunks()
    decoded = sum(next(chunks).shape[0] for _ in range(6))  # the first half decodes as usual ...
    assert decoded == 30 * 16000
    name = re.escape(str(path))
    with pytest.raises(AudioReadError, match=rf"{name}: truncated: its header announces 60\.\d\d s of audio, the "
                                             r"decoder found only 30\.\d\d s"):
        list(chunks)  # ... and the end of the stream tells


def test_an_mp3_without_a_header_cut_in_half_is_a_shorter_file(sources, tmp_path):
    # The documented limit: without a Xing/Info/VBRI header FFmpeg estimates an MP3's length from its size, so half a
    # file is indistinguishable from a file half as long.
    whole = tmp_path / "minute.mp3"
    ffmpeg("-i", sources["minute"], "-write_xing", "0", whole)
    (tmp_path / "cut").mkdir()
    path = cut(whole, whole.stat().st_size // 2, tmp_path / "cut")
    assert open_audio(str(path), 16000).samples().shape[0] / 16000 == pytest.approx(30, abs=0.2)


# ---------------------------------------------------------------------------------------------------------------
# NaN and Inf samples


def test_nan_and_inf_are_reported_at_their_own_time(sources):
    speech = torch.from_numpy(soundfile.read(sources["minute"], dtype="float32")[0][:16000 * 3].copy())
    with_nan = speech.clone()
    with_nan[5000] = float("nan")
    with pytest.raises(AudioReadError, match=r"<array>: NaN or Inf samples, the first at 0\.312 s \(sample 5000 "):
        open_audio(with_nan.numpy(), 16000, source_rate=16000).samples()
    with_inf = torch.stack([speech, speech])  # (channels, samples)
    with_inf[1, 40000] = float("inf")
    with pytest.raises(AudioReadError, match=r"the first at 2\.500 s \(sample 40000"):
        open_audio({"array": with_inf, "sampling_rate": 16000}, 16000).samples()


# ---------------------------------------------------------------------------------------------------------------
# Messages kept whole


def png_bytes() -> bytes:
    """A real 8 x 8 RGB PNG image (signature, IHDR, IDAT, IEND with their CRCs)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    rows = b"".join(b"\x00" + bytes([16 * row, 0, 255 - 16 * row] * 8) for row in range(8))  # filter 0 + RGB
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 8, 8, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b""))


def test_an_image_named_wav_gets_the_decoders_whole_message(tmp_path):
    from torchcodec.decoders import AudioDecoder

    path = tmp_path / "picture.wav"
    path.write_bytes(png_bytes())
    with pytest.raises(Exception) as direct:  # noqa: PT011 (whatever torchcodec raises, its text is the reference)
        AudioDecoder(str(path))
    reason = decoder_reason(direct.value)
    assert len(reason) > 160 and "\n" not in reason and ".cpp" not in reason
    with pytest.raises(AudioReadError) as error:
        open_audio(str(path), 16000)
    assert str(error.value) == f"{path}: not readable audio ({reason})."
    with pytest.raises(AudioReadError) as error:
        read_audio_file(path)
    message = str(error.value)
    assert reason in message and "\n" not in message
    assert message.endswith(". Pass a WAV, FLAC, Ogg or MP3 file.")


# ---------------------------------------------------------------------------------------------------------------
# torchcodec AudioDecoder objects (datasets 4+) and directories


@pytest.mark.parametrize("extension", ["mp3", "flac", "m4a"])
def test_an_audio_decoder_at_the_rate_gives_the_files_samples(encoded, extension):
    from torchcodec.decoders import AudioDecoder

    path = str(encoded["word44k", extension])
    expected = open_audio(path, 16000).samples()
    stream = open_audio(AudioDecoder(path, sample_rate=16000), 16000)
    assert stream.name == "<AudioDecoder>"
    assert torch.equal(stream.samples(), expected)
    assert torch.equal(torch.as_tensor(decode_audio(AudioDecoder(path, sample_rate=16000), 16000)), expected)


def test_an_audio_decoder_at_its_own_rate_is_resampled(encoded):
    from torchcodec.decoders import AudioDecoder

    path = encoded["word44k", "flac"]
    samples = open_audio(AudioDecoder(str(path)), 16000, chunk_seconds=0.25).samples()
    # Independent reference: libsndfile's samples, averaged, resampled by torchaudio.
    stereo, rate = soundfile.read(path, dtype="float32")
    assert rate == 44100 and stereo.shape[1] == 2
    reference = torchaudio.functional.resample(torch.from_numpy(stereo.mean(axis=1)), 44100, 16000)
    torch.testing.assert_close(samples, reference, rtol=0, atol=1e-6)
    # And close to FFmpeg's own resampling of the file.
    torch.testing.assert_close(samples, open_audio(str(path), 16000).samples(), rtol=0, atol=0.01)


def test_a_directory_with_an_audio_name_is_refused_clearly(tmp_path):
    (tmp_path / "takes.wav").mkdir()
    with pytest.raises(AudioReadError, match=r"takes.wav: a directory, not an audio file; pass the audio files"):
        open_audio(str(tmp_path / "takes.wav"), 16000)
