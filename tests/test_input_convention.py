"""One answer per file: every entry point feeds a checkpoint the way it was trained.

A checkpoint's preprocessor_config.json says whether its model was trained on clips padded to `max_length` (the
padding seen, unmasked: the paper's recipes, every released AST, and any file without the field) or on clips at their
own length in masked batches (`pad_to_max_length`). For one saved checkpoint of each kind and a transformers
built-in one, the same 16 kHz WAV files (real speech, shorter than, exactly and longer than one window) are scored
through every entry point: `pipeline("audio-classification")`, `pipeline("audio-tagging")`, `ast-hf classify`, the
web demo served on 127.0.0.1 and called through gradio_client, the ONNX classifier, and the extractor loaded with
`AutoFeatureExtractor.from_pretrained` run into the model by hand. Clip classifiers (the first, ONNX, by hand) score
a file's first window, as they cut it to `max_length`; the window-by-window entry points (tagging, CLI, demo) give
the same scores for that window as their first segment, and for a file of at most one window as the clip.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest
import soundfile
import torch
import torchaudio
import transformers
from conftest import speak, tiny_model
from transformers import AutoFeatureExtractor, AutoModelForAudioClassification, pipeline

import ast_hf
from ast_hf import cli
from ast_hf.configuration_ast import samples_for_frames

LABELS = ["yes", "no", "up", "down", "left"]
WINDOW = samples_for_frames(128)  # samples of the tiny checkpoints' 128-frame window
TOLERANCE = 2e-5


def save_checkpoint(folder: Path, convention: str) -> Path:
    """A tiny random classifier of LABELS (128 frames) in `folder`: "padded" (ast_hf, saved padded-trained),
    "masked" (ast_hf, trained on masked batches) or "builtin" (transformers' own classes and extractor)."""
    builtin = convention == "builtin"
    model = tiny_model(builtin=builtin, id2label=dict(enumerate(LABELS)),
                       label2id={name: i for i, name in enumerate(LABELS)})
    model.save_pretrained(folder)
    if builtin:
        transformers.ASTFeatureExtractor(max_length=128).save_pretrained(folder)
    else:
        padded = convention == "padded"
        ast_hf.ASTFeatureExtractor(max_length=128, pad_to_max_length=padded,
                                   return_attention_mask=not padded).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    """Real speech as 16 kHz mono WAV: 0.5 s, exactly one window (1.295 s) and 3 s (more than two windows); and
    the 0.5 s clip as 44.1 kHz stereo FLAC."""
    folder = tmp_path_factory.mktemp("audio")
    words = np.concatenate([speak("left right up down", "en-us", 140), speak("yes no stop", "en-gb", 150)])
    assert len(words) > 2 * WINDOW
    clips = {"short": speak("yes", "en", 160)[:8000], "window": words[:WINDOW], "long": words[: 3 * 16000]}
    paths = {}
    for name, clip in clips.items():
        paths[name] = folder / f"{name}.wav"
        soundfile.write(paths[name], clip, 16000, subtype="FLOAT")  # float WAV: every entry point reads the same
    # A 44.1 kHz stereo FLAC whose channels differ: every entry point resamples and averages the channels alike
    # (transformers' own pipeline would downmix with FFmpeg at -3 dB: sqrt(2) times louder).
    at_44k = torchaudio.functional.resample(torch.from_numpy(clips["short"]), 16000, 44100).numpy()
    paths["stereo"] = folder / "stereo.flac"
    soundfile.write(paths["stereo"], np.stack([at_44k, 0.6 * at_44k], axis=1), 44100)
    return paths


def by_label(items: list[dict]) -> dict[str, float]:
    return {item["label"]: item["score"] for item in items}


def by_hand(folder: Path, path: Path) -> dict[str, float]:
    """The extractor loaded with the checkpoint (its default call) into the model, softmax over all labels. The
    samples are the file decoded as the entry points decode it (torchcodec, FFmpeg's resampler, the channel mean:
    tests/test_tagging.py checks that decoding against soundfile and torchaudio)."""
    from ast_hf.audio_io import open_audio

    extractor = AutoFeatureExtractor.from_pretrained(folder)
    model = AutoModelForAudioClassification.from_pretrained(folder).eval()
    samples = open_audio(str(path), 16000).samples()
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the long file is cut to the first window (warned)
        features = extractor(samples.numpy(), sampling_rate=16000, return_tensors="pt")
        scores = model(**features).logits[0].softmax(-1)
    return {LABELS[i]: float(score) for i, score in enumerate(scores)}


def assert_same(found: dict[str, float], expected: dict[str, float], where: str) -> None:
    for label, score in found.items():
        assert score == pytest.approx(expected[label], abs=TOLERANCE), (where, label, found, expected)


@pytest.mark.parametrize("convention", ["padded", "masked", "builtin"])
def test_every_entry_point_gives_the_same_scores_for_a_file(tmp_path, files, capsys, convention):
    folder = save_checkpoint(tmp_path / "model", convention)
    classifier = pipeline("audio-classification", model=str(folder))
    tagger = pipeline("audio-tagging", model=str(folder))
    for name, path in files.items():
        expected = by_hand(folder, path)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            assert_same(by_label(classifier(str(path), top_k=5)), expected, f"audio-classification {name}")
        tagged = tagger(str(path), top_k=5)
        assert_same(by_label(tagged["segments"][0]["labels"]), expected, f"audio-tagging first window {name}")
        if name != "long":
            assert len(tagged["segments"]) == 1
            assert_same(by_label(tagged["clip"]), expected, f"audio-tagging clip {name}")
        command = ["classify", str(path), "--model", str(folder), "--top-k", "5", "--json", "--no-progress"]
        assert cli.main(command) == 0
        printed = json.loads(capsys.readouterr().out)[0]
        assert printed["clip"] == tagged["clip"] and printed["segments"] == tagged["segments"]


def test_the_two_conventions_differ_on_a_short_clip_and_explicit_arguments_override(tmp_path, files):
    """What the tests above guard against: the same weights scored padded vs at their own length differ."""
    padded = save_checkpoint(tmp_path / "padded", "padded")
    masked = save_checkpoint(tmp_path / "masked", "masked")  # the same random weights (tiny_model's seed)
    short = str(files["short"])
    as_padded = by_label(pipeline("audio-classification", model=str(padded))(short, top_k=5))
    as_masked = by_label(pipeline("audio-classification", model=str(masked))(short, top_k=5))
    assert max(abs(as_padded[label] - as_masked[label]) for label in LABELS) > 1e-3
    # Overrides: the tagging pipeline's argument, and the extractor loaded with the other convention.
    tagger = pipeline("audio-tagging", model=str(padded))
    assert_same(by_label(tagger(short, top_k=5, pad_to_max_length=False)["clip"]), as_masked, "tagging override")
    extractor = ast_hf.ASTFeatureExtractor.from_pretrained(padded, pad_to_max_length=False)
    assert extractor.pad_to_max_length is False and extractor.return_attention_mask is True
    overridden = pipeline("audio-classification", model=str(padded), feature_extractor=extractor)
    assert_same(by_label(overridden(short, top_k=5)), as_masked, "audio-classification override")
    # Files without the field: transformers' extractor and older ast_hf files are read as padded-trained, older
    # ast_hf files that returned a mask (written by masked training) as masked.
    config = json.loads((masked / "preprocessor_config.json").read_text())
    del config["pad_to_max_length"]
    (masked / "preprocessor_config.json").write_text(json.dumps(config))
    assert ast_hf.ASTFeatureExtractor.from_pretrained(masked).pad_to_max_length is False
    config["return_attention_mask"] = False
    (masked / "preprocessor_config.json").write_text(json.dumps(config))
    assert ast_hf.ASTFeatureExtractor.from_pretrained(masked).pad_to_max_length is True


@pytest.mark.slow
@pytest.mark.parametrize("convention", ["padded", "masked"])
def test_onnx_classifier_follows_the_convention(tmp_path, files, convention):
    pytest.importorskip("onnxruntime")
    from ast_hf.onnx_export import OnnxAudioClassifier, export_onnx

    folder = save_checkpoint(tmp_path / "model", convention)
    export_onnx(folder, tmp_path / "onnx")
    onnx = OnnxAudioClassifier.from_directory(tmp_path / "onnx")
    assert onnx.feature_extractor.pad_to_max_length is (convention == "padded")
    for name, path in files.items():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            assert_same(by_label(onnx.classify(str(path), top_k=5)), by_hand(folder, path), f"onnx {name}")


@pytest.mark.slow
@pytest.mark.parametrize("convention", ["padded", "masked"])
def test_web_demo_shows_the_pipelines_scores(tmp_path, files, convention):
    """The demo served on 127.0.0.1 and called through its API (gradio_client), as the page calls it."""
    pytest.importorskip("gradio")
    gradio_client = pytest.importorskip("gradio_client")
    from ast_hf.demo_app import launch

    folder = save_checkpoint(tmp_path / "model", convention)
    demo = launch(str(folder), host="127.0.0.1", port=None, top_k=5, prevent_thread_lock=True)
    try:
        client = gradio_client.Client(demo.local_url, verbose=False)
        for name, path in files.items():
            shown, _, _ = client.predict(gradio_client.handle_file(str(path)), api_name="/tag")
            labels = {entry["label"]: entry["confidence"] for entry in shown["confidences"]}
            tagged = by_label(demo.tagger(str(path), top_k=5)["clip"])
            assert_same(labels, tagged, f"demo {name}")
            if name != "long":
                assert_same(labels, by_hand(folder, path), f"demo vs by hand {name}")
    finally:
        demo.close()
