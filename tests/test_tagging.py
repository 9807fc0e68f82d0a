"""The "audio-tagging" pipeline on real recordings: files of every common format, rate and channel count, a long
recording of words at known offsets, windows checked against the model run by hand, transformers' built-in
checkpoints, bounded memory, and the errors for missing, empty, corrupt and truncated files."""

from __future__ import annotations

import io
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import soundfile
import torch
import torchaudio
import transformers
from conftest import SILENCE, speak, tiny_model
from transformers import pipeline

import ast_hf
from ast_hf.audio_io import AudioReadError
from ast_hf.configuration_ast import samples_for_frames
from ast_hf.tagging import merge_events, windows

LABELS = ["yes", "no", "up", "down", "left"]


def write_audio(path: Path, clip: np.ndarray, rate: int = 16000, channels: int = 1) -> Path:
    """`clip` (16 kHz mono) resampled to `rate` and written to `path` in the format its suffix names, with
    `channels` channels (the second one 0.8 times the first, so a wrong downmix shows). WAV/FLAC/Ogg through
    soundfile, MP3 and M4A through the ffmpeg program."""
    samples = torchaudio.functional.resample(torch.from_numpy(clip), 16000, rate).numpy() if rate != 16000 else clip
    frames = np.stack([samples * (1.0 - 0.2 * c) for c in range(channels)], axis=1)  # (N, channels)
    if path.suffix in (".wav", ".flac", ".ogg"):
        soundfile.write(path, frames, rate)
    else:
        wav = path.with_suffix(".source.wav")
        soundfile.write(wav, frames, rate)
        subprocess.run(["ffmpeg", "-loglevel", "error", "-y", "-i", str(wav), str(path)], check=True)
        wav.unlink()
    return path


def save_checkpoint(folder: Path, pad_to_max_length: bool = True, **config) -> ast_hf.ASTForAudioClassification:
    """A tiny random classifier of LABELS and its extractor (128 frames) in `folder`, saved as padded-trained or,
    with pad_to_max_length=False, as trained on masked batches."""
    model = tiny_model(id2label=dict(enumerate(LABELS)), label2id={n: i for i, n in enumerate(LABELS)}, **config)
    model.save_pretrained(folder)
    ast_hf.ASTFeatureExtractor(max_length=128, pad_to_max_length=pad_to_max_length,
                               return_attention_mask=not pad_to_max_length).save_pretrained(folder)
    return model


@pytest.fixture(scope="module")
def tagger(word_model):
    return pipeline("audio-tagging", model=str(word_model))


# ---------------------------------------------------------------------------------------------------------------
# Windows


@pytest.mark.parametrize("total", [1, 399, 1000, 2500, 3000, 3001, 7777])
@pytest.mark.parametrize("chunk", [7, 333, 10_000])
def test_windows_are_slices_of_the_recording(total, chunk):
    window, hop = 1000, 400
    audio = torch.arange(total, dtype=torch.float32)
    got = list(windows(audio.split(chunk), window, hop))
    # Hand-computed: starts every hop until a window reaches the end; the last is what remains.
    expected, start = [], 0
    while True:
        expected.append((start, min(start + window, total)))
        if start + window >= total:
            break
        start += hop
    assert [(start, start + len(samples)) for start, samples in got] == expected
    for start, samples in got:
        assert torch.equal(samples, audio[start:start + len(samples)])


def test_windows_refuse_a_hop_longer_than_the_window():
    with pytest.raises(ValueError, match="hop=11 samples"):
        list(windows([torch.zeros(100)], 10, 11))


def test_segments_are_the_model_run_on_each_window_by_hand(tmp_path, speech):
    """Independent of the pipeline's code path: slice the samples, featurise each window alone, run the model."""
    model = save_checkpoint(tmp_path)
    tagger = pipeline("audio-tagging", model=str(tmp_path))
    recording = np.concatenate([speech[2], speech[1], speech[0]])  # about 6 s, windows of 1.28 s
    result = tagger(recording, sampling_rate=16000, top_k=5, hop=0.5, batch_size=3)
    extractor = ast_hf.ASTFeatureExtractor(max_length=128)
    window = samples_for_frames(128)
    assert result["segments"][-1]["end"] == pytest.approx(len(recording) / 16000)
    starts = [round(segment["start"] * 16000) for segment in result["segments"]]
    assert starts == list(range(0, starts[-1] + 1, 8000)) and starts[-1] + window >= len(recording)
    assert len(recording) - starts[-1] < window  # the last window is the remaining audio
    for start, segment in zip(starts, result["segments"], strict=True):
        clip = recording[start:start + window]
        with torch.no_grad():  # padded to max_length as this (padded-trained) checkpoint expects: the default call
            features = extractor(clip, sampling_rate=16000, return_tensors="pt")
            expected = model(**features).logits[0].softmax(-1)
        for item in segment["labels"]:
            assert item["score"] == pytest.approx(float(expected[LABELS.index(item["label"])]), abs=1e-5)
    # Single-label: the recording's score is the mean of the windows' probabilities.
    scores = torch.tensor(result["timeline"]["scores"])  # (windows, top labels)
    for column, item in enumerate(result["clip"]):
        assert item["score"] == pytest.approx(float(scores[:, column].mean()), abs=1e-6)
        assert result["timeline"]["labels"][column] == item["label"]


def test_multi_label_scores_are_sigmoids_and_the_recording_takes_the_maximum(tmp_path, speech):
    model = save_checkpoint(tmp_path, problem_type="multi_label_classification")
    tagger = pipeline("audio-tagging", model=str(tmp_path))
    recording = np.concatenate([speech[2], speech[1]])
    result = tagger(recording, sampling_rate=16000, top_k=5)
    extractor = ast_hf.ASTFeatureExtractor(max_length=128)
    first = recording[:samples_for_frames(128)]
    with torch.no_grad():
        expected = torch.sigmoid(model(**extractor(first, sampling_rate=16000, return_tensors="pt")).logits[0])
    for item in result["segments"][0]["labels"]:
        assert item["score"] == pytest.approx(float(expected[LABELS.index(item["label"])]), abs=1e-5)
    for item in result["clip"]:
        best = max(s["score"] for seg in result["segments"] for s in seg["labels"] if s["label"] == item["label"])
        assert item["score"] == pytest.approx(best, abs=1e-6)


@pytest.mark.parametrize("pad_to_max_length", [True, False])
def test_a_clip_shorter_than_a_window_is_fed_as_the_checkpoint_was_trained(tmp_path, speech, pad_to_max_length):
    """Padded-trained: the clip padded to max_length, no mask (as the extractor's default call gives it). Trained
    on masked batches: the clip at its own length with the mask (one patch at least)."""
    model = save_checkpoint(tmp_path, pad_to_max_length=pad_to_max_length)
    tagger = pipeline("audio-tagging", model=str(tmp_path))
    for clip in (speech[0], speech[0][:300]):  # 0.5 s, and less than one 25 ms frame
        result = tagger(clip, sampling_rate=16000)
        assert len(result["segments"]) == 1
        assert result["segments"][0]["end"] == pytest.approx(len(clip) / 16000)
        if pad_to_max_length:
            features = ast_hf.ASTFeatureExtractor(max_length=128)(clip, sampling_rate=16000, return_tensors="pt")
            assert features["input_values"].shape[1] == 128 and "attention_mask" not in features
        else:
            features = ast_hf.ASTFeatureExtractor(max_length=128)(clip, sampling_rate=16000, padding="longest",
                                                                   return_tensors="pt", return_attention_mask=True)
            if features["input_values"].shape[1] < 16:  # shorter than one patch: padded to one, the padding masked
                features = ast_hf.ASTFeatureExtractor(max_length=16)(clip, sampling_rate=16000, return_tensors="pt",
                                                                     return_attention_mask=True)
        with torch.no_grad():
            expected = model(**features).logits[0].softmax(-1)
        top = result["clip"][0]
        assert top["score"] == pytest.approx(float(expected.max()), abs=1e-5)
        assert top["label"] == LABELS[int(expected.argmax())]
        # An explicit argument overrides the checkpoint's convention.
        other = tagger(clip, sampling_rate=16000, pad_to_max_length=not pad_to_max_length)
        assert abs(other["clip"][0]["score"] - top["score"]) > 1e-4


# ---------------------------------------------------------------------------------------------------------------
# Real recordings with a trained model


@pytest.mark.slow
def test_every_format_rate_and_channel_count_is_heard_alike(tagger, tmp_path):
    """The word "down" (a voice the model heard) as wav/flac/ogg/mp3 at 8, 22.05, 44.1 and 48 kHz, mono and
    stereo: FFmpeg resamples and downmixes while decoding; every file scores as the same samples passed as an array
    at that rate (resampled by torchaudio), and every file above 8 kHz gives the word. (At 8 kHz nothing above
    4 kHz is left of the speech, and this small model, trained on 16 kHz audio, may hear another word.)"""
    word = speak("down", "en-us", 165, 50)  # a voice and speed it heard
    assert tagger(word, sampling_rate=16000)["clip"][0]["label"] == "down"
    for rate in (8000, 22050, 44100, 48000):
        at_rate = torchaudio.functional.resample(torch.from_numpy(word), 16000, rate).numpy()
        reference = tagger(at_rate, sampling_rate=rate, top_k=5)
        for suffix in (".wav", ".flac", ".ogg", ".mp3"):
            for channels in (1, 2):
                path = write_audio(tmp_path / f"down_{rate}_{channels}{suffix}", word, rate, channels)
                result = tagger(str(path), top_k=5)
                if rate > 8000:
                    assert result["clip"][0]["label"] == "down", (path.name, result["clip"])
                # Lossy formats change the features a little; FLAC/WAV only by the resampler (FFmpeg's, torchaudio's).
                tolerance = 0.03 if suffix in (".wav", ".flac") else 0.25
                scores = {item["label"]: item["score"] for item in result["clip"]}
                for item in reference["clip"]:
                    assert scores[item["label"]] == pytest.approx(item["score"], abs=tolerance), path.name
                assert result["duration"] == pytest.approx(len(word) / 16000, abs=0.06)
    m4a = write_audio(tmp_path / "down.m4a", word, 44100, 2)
    assert tagger(str(m4a))["clip"][0]["label"] == "down"


@pytest.mark.slow
def test_file_objects_bytes_dicts_and_lists(tagger, tmp_path):
    word = speak("yes", "en", 165, 35)
    path = write_audio(tmp_path / "yes.flac", word, 44100, 2)
    by_path = tagger(str(path))
    with open(path, "rb") as handle:
        by_handle = tagger(handle)
    by_bytes = tagger(path.read_bytes())
    by_bytesio = tagger(io.BytesIO(path.read_bytes()))
    stereo_48k = torchaudio.functional.resample(torch.from_numpy(word), 16000, 48000)
    by_dict = tagger({"array": torch.stack([stereo_48k, stereo_48k]).numpy(), "sampling_rate": 48000})
    by_tensor = tagger(stereo_48k.repeat(2, 1).T, sampling_rate=48000)  # (samples, channels)
    for result in (by_path, by_handle, by_bytes, by_bytesio, by_dict, by_tensor):
        assert result["clip"][0]["label"] == "yes"
    assert by_handle == by_path == by_bytes == by_bytesio
    both = tagger([str(path), {"array": word, "sampling_rate": 16000}])
    assert isinstance(both, list) and [r["clip"][0]["label"] for r in both] == ["yes", "yes"]
    assert list(tagger(item for item in [str(path)]))[0] == by_path


@pytest.mark.slow
def test_a_long_recording_finds_each_word_in_its_windows(tagger, tmp_path):
    """Four words at known offsets in 12 s of near-silence: the window centred best on each word names it, every
    window that holds a whole word has it among its top 3, every window that holds none is silence, and the events
    put each word where it was said."""
    rate = 16000
    offsets = {"up": 1.0, "yes": 4.1, "down": 7.3, "no": 10.2}
    recording = np.random.default_rng(0).standard_normal(12 * rate).astype(np.float32) * 1e-4
    spans = {}
    for (word, offset), voice in zip(offsets.items(), ("en", "en-us", "en-gb", "en"), strict=True):
        clip = speak(word, voice, 165, 50)  # voices and a speed the model heard
        begin = int(offset * rate)
        recording[begin:begin + len(clip)] += clip
        spans[word] = (offset, offset + len(clip) / rate)
    # FLAC: lossless, so the test is about the windows; lossy formats are compared with arrays above.
    path = write_audio(tmp_path / "words.flac", recording, 48000, 2)
    result = tagger(str(path), top_k=3, events=True, threshold=0.5)
    assert result["duration"] == pytest.approx(12.0, abs=0.05)
    for word, (begin, end) in spans.items():
        centred = min(result["segments"], key=lambda s: abs((s["start"] + s["end"]) / 2 - (begin + end) / 2))
        assert centred["labels"][0]["label"] == word, (word, centred)
    for segment in result["segments"]:
        inside = [w for w, (a, b) in spans.items() if segment["start"] <= a and b <= segment["end"]]
        touching = [w for w, (a, b) in spans.items() if a < segment["end"] and segment["start"] < b]
        if inside:
            assert inside[0] in [item["label"] for item in segment["labels"]], (segment, spans)
        elif not touching:
            assert segment["labels"][0]["label"] == SILENCE, segment
    words = [event for event in result["events"] if event["label"] != SILENCE]
    assert [event["label"] for event in words] == list(offsets)
    for event in words:
        begin, end = spans[event["label"]]
        assert event["start"] <= begin and end <= event["end"] and event["end"] - event["start"] <= 4.0
        assert event["score"] >= 0.5


def test_files_are_averaged_over_channels_and_read_to_their_end(tmp_path, speech):
    """The samples a file yields: the mean of its channels (FFmpeg's own downmix would add them at -3 dB), and all
    of them even where the container's duration is an estimate (ADTS AAC)."""
    from ast_hf.audio_io import open_audio

    clip = np.concatenate([speech[2], speech[1]])
    stereo = np.stack([clip, 0.5 * clip, -0.25 * clip, clip], axis=1)  # (N, 4): mean 0.5625 x clip
    soundfile.write(tmp_path / "four.wav", stereo, 16000, subtype="FLOAT")
    decoded = torch.cat(list(open_audio(str(tmp_path / "four.wav"), 16000, chunk_seconds=1.3).chunks()))
    np.testing.assert_allclose(decoded.numpy(), 0.5625 * clip, atol=1e-6)
    wav = write_audio(tmp_path / "long.wav", np.tile(clip, 6))
    subprocess.run(["ffmpeg", "-loglevel", "error", "-y", "-i", str(wav), "-c:a", "aac", "-b:a", "32k",
                    str(tmp_path / "long.aac")], check=True)
    total = sum(len(chunk) for chunk in open_audio(str(tmp_path / "long.aac"), 16000, chunk_seconds=4.0).chunks())
    # AAC adds encoder delay and padding (about 0.1 s); what matters is that no tail is lost.
    assert 6 * len(clip) - 0.02 * 16000 < total < 6 * len(clip) + 0.15 * 16000, (total / 16000, 6 * len(clip) / 16000)


def test_merge_events_by_hand():
    def segment(start, *labels):
        return {"start": start, "end": start + 1.0, "labels": [{"label": n, "score": s} for n, s in labels]}

    segments = [segment(0.0, ("a", 0.9), ("b", 0.6)), segment(0.5, ("a", 0.7), ("b", 0.2)),
                segment(1.0, ("b", 0.8), ("a", 0.55)), segment(1.5, ("b", 0.4), ("a", 0.3))]
    assert merge_events(segments, 0.5, single_label=True) == [
        {"start": 0.0, "end": 1.5, "label": "a", "score": 0.9}, {"start": 1.0, "end": 2.0, "label": "b", "score": 0.8}]
    assert merge_events(segments, 0.5, single_label=False) == [
        {"start": 0.0, "end": 2.0, "label": "a", "score": 0.9}, {"start": 0.0, "end": 1.0, "label": "b", "score": 0.6},
        {"start": 1.0, "end": 2.0, "label": "b", "score": 0.8}]
    assert merge_events(segments, 0.95, single_label=True) == []


# ---------------------------------------------------------------------------------------------------------------
# transformers' built-in checkpoints


def test_builtin_checkpoints_tag_with_the_builtin_models_scores(tmp_path, speech):
    """A checkpoint of transformers' own AST (MIT/ast-* format) runs in the pipeline; every full window's scores
    equal transformers' built-in model with its own extractor on that window."""
    builtin = tiny_model(builtin=True, id2label=dict(enumerate(LABELS)), label2id={n: i for i, n in enumerate(LABELS)})
    builtin.save_pretrained(tmp_path)
    builtin_extractor = transformers.ASTFeatureExtractor(max_length=128)
    builtin_extractor.save_pretrained(tmp_path)
    tagger = pipeline("audio-tagging", model=str(tmp_path))
    assert type(tagger.model).__module__ == "ast_hf.modeling_ast"
    recording = np.concatenate([speech[2], speech[1]])
    result = tagger(recording, sampling_rate=16000, top_k=5)
    window = samples_for_frames(128)
    full = [s for s in result["segments"] if round((s["end"] - s["start"]) * 16000) == window]
    assert len(full) >= 3
    for segment in full:
        start = round(segment["start"] * 16000)
        features = builtin_extractor(recording[start:start + window], sampling_rate=16000, return_tensors="pt")
        with torch.no_grad():
            expected = builtin(**features).logits[0].softmax(-1)
        for item in segment["labels"]:
            assert item["score"] == pytest.approx(float(expected[LABELS.index(item["label"])]), abs=1e-4)


# ---------------------------------------------------------------------------------------------------------------
# Errors


def test_bad_files_are_named_with_the_reason(tmp_path, speech):
    save_checkpoint(tmp_path / "model")
    tagger = pipeline("audio-tagging", model=str(tmp_path / "model"))
    good = write_audio(tmp_path / "good.wav", speech[1])
    truncated = tmp_path / "truncated.wav"
    truncated.write_bytes(good.read_bytes()[:len(good.read_bytes()) // 2])
    flac = write_audio(tmp_path / "good.flac", speech[2])
    truncated_flac = tmp_path / "truncated.flac"
    truncated_flac.write_bytes(flac.read_bytes()[:len(flac.read_bytes()) // 2])
    (tmp_path / "empty.mp3").write_bytes(b"")
    (tmp_path / "text.wav").write_text("this is not audio\n" * 50)
    soundfile.write(tmp_path / "silent_nothing.wav", np.zeros((0, 1), dtype=np.float32), 16000)
    cases = {tmp_path / "missing.wav": "no such file", truncated: "truncated", truncated_flac: "truncated",
             tmp_path / "empty.mp3": "empty file", tmp_path / "text.wav": "not readable audio",
             tmp_path / "silent_nothing.wav": "no audio samples", tmp_path: "a directory"}
    for path, reason in cases.items():
        with pytest.raises(AudioReadError, match=reason) as error:
            tagger(str(path))
        assert str(path) in str(error.value)
    assert isinstance(AudioReadError("x"), ValueError)


def test_bad_arguments_are_refused_with_the_fix(tmp_path, speech):
    save_checkpoint(tmp_path)
    tagger = pipeline("audio-tagging", model=str(tmp_path))
    for kwargs, message in (({"hop": 0}, "hop=0"), ({"hop": 5.0}, "longer than the window"),
                            ({"top_k": 0}, "top_k=0"), ({"threshold": 2}, "threshold=2"),
                            ({"topk": 3}, "Unknown argument"), ({"sampling_rate": "16000"}, "sampling_rate"),
                            ({"hop": float("inf")}, "finite"), ({"batch_size": -1}, "batch_size=-1"),
                            ({"batch_size": 2.5}, "batch_size=2.5"), ({"sampling_rate": 0}, "must be positive")):
        with pytest.raises((ValueError, TypeError), match=message):
            tagger(speech[1], **kwargs)
    with pytest.raises(ValueError, match="files carry their own rate"):
        tagger(str(write_audio(tmp_path / "clip.wav", speech[1])), sampling_rate=8000)
    with pytest.raises(TypeError, match="list of numbers"):
        tagger([0.1, 0.2, 0.3])
    with pytest.raises(TypeError, match="Cannot read audio from a int"):
        tagger(3)
    with pytest.raises(ValueError, match="channel axis"):
        tagger(np.zeros((40, 40), dtype=np.float32), sampling_rate=16000)
    with pytest.raises(TypeError, match="Audio Spectrogram Transformer"):
        pipeline("audio-tagging", model=transformers.ViTForImageClassification(transformers.ViTConfig(
            hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=37, image_size=32)),
            feature_extractor=ast_hf.ASTFeatureExtractor())


# ---------------------------------------------------------------------------------------------------------------
# Memory


MEMORY_SCRIPT = textwrap.dedent("""
    import json, resource, sys
    import ast_hf
    from transformers import pipeline
    tagger = pipeline("audio-tagging", model=sys.argv[1])
    result = tagger(sys.argv[2], batch_size=4)
    print(json.dumps({"peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                      "windows": len(result["segments"]), "duration": result["duration"]}))
""")


def peak_memory(model: Path, audio: Path) -> dict:
    done = subprocess.run([sys.executable, "-c", MEMORY_SCRIPT, str(model), str(audio)], capture_output=True,
                          text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.slow
def test_an_hour_long_file_needs_no_more_memory_than_a_minute(tmp_path):
    """Streaming decode: peak memory (ru_maxrss of a fresh process) for a 1-hour 44.1 kHz file within 300 MB of a
    1-minute one (a 1-hour file decoded whole at 16 kHz would be 230 MB of float32 alone)."""
    model = tmp_path / "model"
    tiny_model(max_length=1024, frequency_stride=16, time_stride=16).save_pretrained(model)
    ast_hf.ASTFeatureExtractor().save_pretrained(model)
    figures = {}
    for name, seconds in (("minute", 60), ("hour", 3600)):
        path = tmp_path / f"{name}.wav"
        subprocess.run(["sox", "-n", "-r", "44100", "-c", "1", "-b", "16", str(path), "synth", str(seconds),
                        "pinknoise", "vol", "0.1"], check=True)
        figures[name] = peak_memory(model, path)
    print(f"peak memory: 1 minute {figures['minute']['peak_mb']:.0f} MB, 1 hour {figures['hour']['peak_mb']:.0f} MB")
    assert figures["hour"]["duration"] == pytest.approx(3600, abs=0.01)
    assert figures["hour"]["windows"] == 702  # 10.255 s windows every 5.1275 s: the 702nd reaches the end
    assert figures["hour"]["peak_mb"] - figures["minute"]["peak_mb"] < 300
