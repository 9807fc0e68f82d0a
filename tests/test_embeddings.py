"""Embeddings: the "audio-feature-extraction" pipeline against the encoder run by hand on each window, padded
batches against clips alone, pools and layers against the hidden states, real files of every format, transformers'
built-in checkpoints, the HEAR API's contract (as hear-validator checks it), `ast-hf embed`'s files read back with
datasets and numpy, --freeze_encoder in both example scripts, and the linear probe's metric recomputed from its
saved weights."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile
import torch
import torchaudio
import transformers
from conftest import load_example, tiny_model
from transformers import pipeline

import ast_hf
from ast_hf import hear
from ast_hf.configuration_ast import samples_for_frames
from ast_hf.embeddings import column_centres

ROOT = Path(__file__).resolve().parents[1]


def save_checkpoint(folder: Path, pad_to_max_length: bool = True, **overrides) -> ast_hf.ASTForAudioClassification:
    model = tiny_model(**overrides)
    model.save_pretrained(folder)
    ast_hf.ASTFeatureExtractor(max_length=model.config.max_length, pad_to_max_length=pad_to_max_length,
                               return_attention_mask=not pad_to_max_length).save_pretrained(folder)
    return model


def by_hand(encoder, clip: np.ndarray, pad_to_max_length: bool, layer=None):
    """One window (at most max_length frames) through the encoder without the pipeline: (vector of each pool,
    columns (t, D) of the real audio, centres in seconds)."""
    extractor = ast_hf.ASTFeatureExtractor(max_length=encoder.config.max_length)
    if pad_to_max_length:
        features = extractor(clip, sampling_rate=16000, return_tensors="pt")
    else:
        features = extractor(clip, sampling_rate=16000, padding="longest", return_attention_mask=True,
                             return_tensors="pt")
    frames = 1 + (len(clip) - 400) // 160
    with torch.no_grad():
        output = encoder(**features, output_hidden_states=True)
    state = output.last_hidden_state[0] if layer is None else output.hidden_states[layer][0]  # (2 + f*t, D)
    f, t = encoder.config.patch_grid_for(features["input_values"].shape[1])
    grid = state[2:].reshape(f, t, -1)
    real = (frames - 16) // encoder.config.time_stride + 1
    columns = grid[:, :real].mean(dim=0)  # (real, D)
    pools = {"cls_dist": (state[0] + state[1]) / 2, "cls": state[0], "mean": state[2:].reshape(f, t, -1)[:, :real]
             .reshape(-1, state.shape[-1]).mean(dim=0)}
    return pools, columns, column_centres(real, 16, encoder.config.time_stride)


@pytest.mark.parametrize("pad_to_max_length", [True, False])
def test_a_long_recording_is_each_window_run_by_hand(tmp_path, speech, pad_to_max_length):
    """6 s of speech, windows of 128 frames that tile the 12-column grid (a new window every 120 frames, 1.2 s):
    the recording's vector is the windows' vectors weighted by their samples, its moments the windows' columns at
    their centre times, every moment once, evenly spaced."""
    model = save_checkpoint(tmp_path, pad_to_max_length=pad_to_max_length)
    encoder = model.audio_spectrogram_transformer
    embedder = pipeline("audio-feature-extraction", model=str(tmp_path))
    recording = np.concatenate([speech[2], speech[1], speech[0]])
    result = embedder(recording, sampling_rate=16000, timestamps=True, batch_size=3)
    window, hop = samples_for_frames(128), 120 * 160
    starts = list(range(0, len(recording), hop))
    starts = [s for i, s in enumerate(starts) if i == 0 or starts[i - 1] + window < len(recording)]
    assert result["windows"] == len(starts) and result["duration"] == pytest.approx(len(recording) / 16000)
    vectors, weights, columns, times = [], [], [], []
    for start in starts:
        clip = recording[start:start + window]
        pools, cols, centres = by_hand(encoder, clip, pad_to_max_length)
        vectors.append(pools["cls_dist"])
        weights.append(len(clip))
        columns.append(cols)
        times.append(centres + start / 16000)
    weights = torch.tensor(weights, dtype=torch.float32)
    expected = (torch.stack(vectors) * weights[:, None]).sum(0) / weights.sum()
    np.testing.assert_allclose(result["embedding"], expected.numpy(), atol=1e-5)
    np.testing.assert_allclose(result["timestamp_embeddings"], torch.cat(columns).numpy(), atol=1e-5)
    np.testing.assert_allclose(result["timestamps"], torch.cat(times).numpy(), atol=1e-9)
    assert np.diff(result["timestamps"]) == pytest.approx(0.1)  # evenly spaced across windows
    assert result["timestamps"][-1] <= len(recording) / 16000


def test_a_clip_in_a_padded_batch_gets_what_it_gets_alone(tmp_path, speech):
    """Masked convention: clips of 0.5 to 3 s and one shorter than a patch, batched across inputs (windows padded
    to the batch's longest, the padding masked), against each clip alone; every pool, layers, timestamps."""
    save_checkpoint(tmp_path, pad_to_max_length=False)
    embedder = pipeline("audio-feature-extraction", model=str(tmp_path))
    clips = [speech[0], speech[2], speech[3], speech[1][:1000], speech[1]]
    for options in ({}, {"pool": "mean"}, {"pool": "cls", "layer": [1, -1]}):
        batched = embedder(clips, sampling_rate=16000, timestamps=True, batch_size=4, **options)
        for clip, together in zip(clips, batched, strict=True):
            alone = embedder(clip, sampling_rate=16000, timestamps=True, batch_size=1, **options)
            np.testing.assert_allclose(together["embedding"], alone["embedding"], atol=2e-5)
            np.testing.assert_allclose(together["timestamp_embeddings"], alone["timestamp_embeddings"], atol=2e-5)
            np.testing.assert_array_equal(together["timestamps"], alone["timestamps"])
    short = embedder(speech[1][:1000], sampling_rate=16000, timestamps=True)  # 62 ms: one padded patch
    assert short["timestamps"] == pytest.approx([500 / 16000])


def test_pools_and_layers_are_the_hidden_states(tmp_path, speech):
    model = save_checkpoint(tmp_path)
    encoder = model.audio_spectrogram_transformer
    embedder = pipeline("audio-feature-extraction", model=str(tmp_path))
    clip = speech[1][:samples_for_frames(128)]  # exactly one window
    for pool in ("cls_dist", "cls", "mean"):
        for layer in (None, 0, 1, 2, -1):
            got = embedder(clip, sampling_rate=16000, pool=pool, layer=layer)["embedding"]
            pools, _, _ = by_hand(encoder, clip, True, layer=None if layer is None else layer % 3)
            np.testing.assert_allclose(got, pools[pool].numpy(), atol=1e-5, err_msg=f"{pool} {layer}")
    both = embedder(clip, sampling_rate=16000, layer=[2, 0])["embedding"]
    expected = torch.cat([by_hand(encoder, clip, True, layer=i)[0]["cls_dist"] for i in (2, 0)])
    np.testing.assert_allclose(both, expected.numpy(), atol=1e-5)
    # The classifier head's input: the pooled output the head sees.
    features = ast_hf.ASTFeatureExtractor(max_length=128)(clip, sampling_rate=16000, return_tensors="pt")
    with torch.no_grad():
        pooled = encoder(**features).pooler_output[0]
    np.testing.assert_allclose(embedder(clip, sampling_rate=16000)["embedding"], pooled.numpy(), atol=1e-6)
    assert isinstance(embedder(clip, sampling_rate=16000, return_tensors="pt")["embedding"], torch.Tensor)
    assert isinstance(embedder(clip, sampling_rate=16000, return_tensors=False)["embedding"], list)


def test_overlapping_windows_give_each_moment_once_from_the_nearest_window(tmp_path, speech):
    save_checkpoint(tmp_path)
    embedder = pipeline("audio-feature-extraction", model=str(tmp_path))
    recording = np.concatenate([speech[2], speech[1]])
    tiled = embedder(recording, sampling_rate=16000, timestamps=True)
    overlapped = embedder(recording, sampling_rate=16000, timestamps=True, hop=0.6)
    assert overlapped["windows"] > tiled["windows"]
    times = overlapped["timestamps"]
    assert np.all(np.diff(times) > 0)  # once each, in order
    assert np.diff(times) == pytest.approx(0.1)  # 0.6 s is a whole number of columns: the same grid
    np.testing.assert_allclose(times, tiled["timestamps"], atol=1e-9)
    # A moment near a window's edge comes from the window centred nearer to it, so it differs from the tiled run.
    assert not np.allclose(overlapped["timestamp_embeddings"], tiled["timestamp_embeddings"], atol=1e-4)


@pytest.mark.slow
def test_files_of_every_format_embed_as_their_samples(tmp_path, speech):
    save_checkpoint(tmp_path / "model")
    embedder = pipeline("audio-feature-extraction", model=str(tmp_path / "model"))
    word = np.concatenate([speech[2], speech[0]])
    at_44k = torchaudio.functional.resample(torch.from_numpy(word), 16000, 44100).numpy()
    stereo = np.stack([at_44k, 0.8 * at_44k], axis=1)
    reference = embedder(stereo.mean(axis=1), sampling_rate=44100, timestamps=True)  # the channels averaged
    for suffix in (".wav", ".flac", ".ogg", ".mp3"):
        path = tmp_path / f"clip{suffix}"
        if suffix == ".mp3":
            soundfile.write(tmp_path / "source.wav", stereo, 44100)
            subprocess.run(["ffmpeg", "-loglevel", "error", "-y", "-i", str(tmp_path / "source.wav"), str(path)],
                           check=True)
        else:
            soundfile.write(path, stereo, 44100)
        got = embedder(str(path), timestamps=True)
        scale = np.abs(reference["embedding"]).max()
        tolerance = 0.05 if suffix in (".wav", ".flac") else 0.25
        assert np.abs(got["embedding"] - reference["embedding"]).max() < tolerance * scale, suffix
        assert got["duration"] == pytest.approx(len(word) / 16000, abs=0.06)
        by_bytes = embedder(path.read_bytes())
        np.testing.assert_allclose(by_bytes["embedding"], got["embedding"], atol=1e-6)


def test_builtin_checkpoints_embed_with_the_same_weights(tmp_path, speech):
    builtin = tiny_model(builtin=True)
    builtin.save_pretrained(tmp_path / "classifier")
    transformers.ASTFeatureExtractor(max_length=128).save_pretrained(tmp_path / "classifier")
    builtin.audio_spectrogram_transformer.save_pretrained(tmp_path / "encoder")
    transformers.ASTFeatureExtractor(max_length=128).save_pretrained(tmp_path / "encoder")
    clip = speech[1][:samples_for_frames(128)]  # one window
    features = transformers.ASTFeatureExtractor(max_length=128)(clip, sampling_rate=16000, return_tensors="pt")
    with torch.no_grad():
        expected = builtin.audio_spectrogram_transformer(**features).pooler_output[0].numpy()
    for name in ("classifier", "encoder"):
        embedder = pipeline("audio-feature-extraction", model=str(tmp_path / name))
        assert isinstance(embedder.model, ast_hf.ASTModel)
        np.testing.assert_allclose(embedder(clip, sampling_rate=16000)["embedding"], expected, atol=1e-5)


def test_bad_input_gets_one_clear_error(tmp_path, speech):
    save_checkpoint(tmp_path / "model")
    embedder = pipeline("audio-feature-extraction", model=str(tmp_path / "model"))
    (tmp_path / "empty.wav").write_bytes(b"")
    with pytest.raises(ValueError, match="empty file"):
        embedder(str(tmp_path / "empty.wav"))
    with pytest.raises(ValueError, match=r"layer=3 is out of range: this model has 2 layers"):
        embedder(speech[0], sampling_rate=16000, layer=3)
    with pytest.raises(TypeError, match="integer indices"):
        embedder(speech[0], sampling_rate=16000, layer="last")
    with pytest.raises(ValueError, match="pool='max' is not one of"):
        embedder(speech[0], sampling_rate=16000, pool="max")
    with pytest.raises(ValueError, match="longer than the window"):
        embedder(speech[0], sampling_rate=16000, hop=5.0)
    with pytest.raises(TypeError, match="Unknown argument"):
        embedder(speech[0], sampling_rate=16000, top_k=3)
    other = transformers.Wav2Vec2Model(transformers.Wav2Vec2Config(
        hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64, conv_dim=(8, 8),
        conv_stride=(5, 2), conv_kernel=(10, 3), num_conv_pos_embeddings=8, num_conv_pos_embedding_groups=2))
    other.save_pretrained(tmp_path / "wav2vec2")
    transformers.Wav2Vec2FeatureExtractor().save_pretrained(tmp_path / "wav2vec2")
    with pytest.raises(TypeError, match="got Wav2Vec2Model. Pass an AST checkpoint"):
        pipeline("audio-feature-extraction", model=str(tmp_path / "wav2vec2"))
    from ast_hf import training

    for refuse in (lambda path: hear.load_model(path),
                   lambda path: training.check_model_source(training.ModelArguments(model_name_or_path=path))):
        with pytest.raises(ValueError, match="config.json says model_type 'wav2vec2', not an Audio Spectrogram"):
            refuse(str(tmp_path / "wav2vec2"))
        with pytest.raises(ValueError, match="no such directory"):
            refuse(str(tmp_path / "missing" / "model"))
    with pytest.raises(ValueError, match="not a rate of the HEAR API; pass one of 16000, 22050, 44100, 48000"):
        hear.load_model(str(tmp_path / "model"), sample_rate=8000)
    model = hear.load_model(str(tmp_path / "model"))
    with pytest.raises(ValueError, match=r"\(n_sounds, n_samples\)"):
        hear.get_scene_embeddings(torch.zeros(16000), model)
    with pytest.raises(TypeError, match="torch tensor"):
        hear.get_scene_embeddings(np.zeros((1, 16000), dtype=np.float32), model)


@pytest.mark.parametrize("sample_rate", [16000, 44100])
def test_hear_api_meets_the_validators_contract(tmp_path, speech, sample_rate):
    """What hear-validator checks (float32, shapes, attributes, timestamps in ms at regular intervals within 1 ms,
    ending within two intervals of the end and never after it), for the lengths it uses; and the scene embedding
    is the pipeline's vector of the same audio."""
    save_checkpoint(tmp_path / "model")
    model = hear.load_model(str(tmp_path / "model"), sample_rate=sample_rate)
    assert isinstance(model, torch.nn.Module) and model.sample_rate == sample_rate
    assert model.scene_embedding_size == model.timestamp_embedding_size == 32
    for length in (1.07, 1.98, 4.0, 2.74):
        audio = torch.rand(2, int(length * sample_rate)) * 2 - 1
        embeddings, timestamps = hear.get_timestamp_embeddings(audio, model)
        assert embeddings.dtype == torch.float32 and embeddings.ndim == 3 and embeddings.shape[0] == 2
        assert embeddings.shape[:2] == timestamps.shape and embeddings.shape[2] == 32
        diff = np.diff(timestamps.numpy())
        assert np.max(np.abs(diff - diff.mean())) <= 1
        assert timestamps.max() <= 1000 * length and timestamps.max() >= 1000 * length - 2 * diff.mean()
        scene = hear.get_scene_embeddings(audio, model)
        assert scene.dtype == torch.float32 and scene.shape == (2, 32)
    word = torchaudio.functional.resample(torch.from_numpy(speech[2]), 16000, sample_rate)
    scene = hear.get_scene_embeddings(word[None], model)[0]
    embedder = pipeline("audio-feature-extraction", model=str(tmp_path / "model"))
    np.testing.assert_allclose(scene.numpy(), embedder(word.numpy(), sampling_rate=sample_rate)["embedding"],
                               atol=1e-5)
    both = hear.load_model(str(tmp_path / "model"), layer=[0, 2], pool="mean")
    assert both.scene_embedding_size == 64
    assert hear.get_scene_embeddings(torch.zeros(3, 8000), both).shape == (3, 64)


@pytest.mark.slow
def test_embed_command_writes_files_datasets_and_numpy_read(tmp_path, speech):
    save_checkpoint(tmp_path / "model")
    folder = tmp_path / "clips"
    (folder / "sub").mkdir(parents=True)
    soundfile.write(folder / "a.wav", speech[2], 16000)
    soundfile.write(folder / "sub" / "b.flac", np.stack([speech[1]] * 2, axis=1), 16000)
    (folder / "broken.wav").write_bytes(b"RIFF....WAVEfmt ")
    command = [sys.executable, "-m", "ast_hf.cli", "embed", str(folder), "--model", str(tmp_path / "model"),
               "--timestamps", "--no-progress"]
    done = subprocess.run([*command, "--output", str(tmp_path / "out.parquet")], capture_output=True, text=True)
    assert done.returncode == 1, done.stderr  # one file could not be read; the others are written
    assert "broken.wav" in done.stderr and "2 file(s) done, 1 failed" in done.stderr
    import datasets

    table = datasets.load_dataset("parquet", data_files=str(tmp_path / "out.parquet"), split="train")
    assert table.column_names == ["path", "size", "mtime_ns", "duration", "windows", "embedding", "timestamps",
                                  "timestamp_embeddings"]
    embedder = pipeline("audio-feature-extraction", model=str(tmp_path / "model"))
    for row in table:
        expected = embedder(row["path"], timestamps=True)
        np.testing.assert_allclose(row["embedding"], expected["embedding"], atol=1e-6)
        np.testing.assert_allclose(np.array(row["timestamp_embeddings"]), expected["timestamp_embeddings"], atol=1e-6)
        np.testing.assert_allclose(row["timestamps"], expected["timestamps"])
    done = subprocess.run([*command[:4], str(folder / "a.wav"), str(folder / "sub"), *command[5:],
                           "--layer", "0", "2", "--pool", "mean", "--output", str(tmp_path / "out.npz")],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    arrays = np.load(tmp_path / "out.npz")  # no allow_pickle: plain arrays
    assert arrays["embeddings"].shape == (2, 64) and list(arrays["paths"]) == [str(folder / "a.wav"),
                                                                               str(folder / "sub" / "b.flac")]
    assert arrays["timestamp_embeddings"].shape[0] == arrays["timestamps"].shape[0] == arrays["file_index"].shape[0]
    np.testing.assert_allclose(arrays["embeddings"][0], embedder(str(folder / "a.wav"), pool="mean",
                                                                 layer=[0, 2])["embedding"], atol=1e-6)
    bad = subprocess.run([*command, "--output", str(tmp_path / "out.txt")], capture_output=True, text=True)
    assert bad.returncode == 2 and "name a file ending in .parquet, .npz" in bad.stderr
    bad = subprocess.run([*command, "--output", str(tmp_path / "x.npz"), "--layer", "7"], capture_output=True,
                         text=True)
    assert bad.returncode == 2 and "layer=7 is out of range" in bad.stderr


@pytest.mark.slow
@pytest.mark.parametrize("script", ["run_audio_classification.py", "run_audio_classification_no_trainer.py"])
def test_freeze_encoder_trains_only_the_head(commands_root, tmp_path, script):
    start = tmp_path / "start"
    model = save_checkpoint(start, pad_to_max_length=False, max_length=64, frequency_stride=16, time_stride=16)
    out = tmp_path / "out"
    done = subprocess.run([sys.executable, str(ROOT / "examples" / script), "--model_name_or_path", str(start),
                           "--max_length", "64", "--train_dir", str(commands_root / "train"), "--freeze_encoder",
                           "--num_train_epochs", "2", "--per_device_train_batch_size", "8", "--learning_rate", "1e-2",
                           "--report_to", "none", "--do_eval", "false", "--output_dir", str(out),
                           *(["--save_strategy", "no"] if script == "run_audio_classification.py" else [])],
                          capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "--freeze_encoder: training" in done.stdout + done.stderr and "stay as loaded" in done.stdout + done.stderr
    card = (out / "README.md").read_text()
    assert "the encoder was frozen" in card and "| freeze_encoder | True |" in card
    trained = ast_hf.ASTForAudioClassification.from_pretrained(out)
    for (name, before), after in zip(model.audio_spectrogram_transformer.state_dict().items(),
                                     trained.audio_spectrogram_transformer.state_dict().values(), strict=True):
        assert torch.equal(before, after), name
    assert trained.config.num_labels == 10  # a new head for the ten words, trained
    assert trained.classifier.dense.weight.abs().sum() > 0


@pytest.mark.slow
def test_linear_probe_metric_is_the_saved_probe_on_the_pipelines_vectors(commands_root, word_model, tmp_path):
    probe = load_example("linear_probe")
    out = tmp_path / "probe"
    metrics = probe.main(["--model", str(word_model), "--train_dir", str(commands_root / "train"),
                          "--validation_dir", str(commands_root / "validation"), "--output_dir", str(out)])
    saved = np.load(out / "probe.npz")
    assert json.loads((out / "probe.json").read_text())["eval_accuracy"] == pytest.approx(metrics["eval_accuracy"])
    embedder = pipeline("audio-feature-extraction", model=str(word_model))
    files = sorted(p for p in (commands_root / "validation").rglob("*") if p.suffix in (".wav", ".flac"))
    vectors = np.stack([embedder(str(p))["embedding"] for p in files])
    scores = ((vectors - saved["mean"]) / saved["scale"]) @ saved["coef"].T + saved["intercept"]
    predicted = saved["labels"][scores.argmax(axis=1)]
    truth = np.array([p.parent.name for p in files])
    assert metrics["eval_accuracy"] == pytest.approx(float((predicted == truth).mean()), abs=1e-9)
    assert metrics["eval_clips"] == len(files)


@pytest.mark.slow
def test_real_recordings_ffmpeg_cannot_seek_in_are_read_to_their_end(tmp_path):
    """The one-shot FLACs of Debian's hydrogen-drumkits (some without a seek table, where a chunked read that seeks
    past the end fails): every file streams to the samples FFmpeg decodes in one go, and the pipelines take them."""
    from torchcodec.decoders import AudioDecoder

    from ast_hf.audio_io import open_audio
    from ast_hf.drumkits import DRUMKITS_DIR

    files = sorted(p for p in DRUMKITS_DIR.rglob("*") if p.suffix.lower() in (".flac", ".wav"))
    assert len(files) > 500, "hydrogen-drumkits is not installed; run `bash scripts/setup.sh`"
    for path in files:
        streamed = torch.cat(list(open_audio(str(path), 16000).chunks()))
        whole = AudioDecoder(str(path), sample_rate=16000).get_all_samples().data.mean(dim=0)
        assert torch.equal(streamed, whole), path
    save_checkpoint(tmp_path / "model")
    hits = [str(p) for p in files if "EE_Hat_Ring" in p.name][:3] or [str(p) for p in files[:3]]
    vectors = pipeline("audio-feature-extraction", model=str(tmp_path / "model"))(hits)
    assert len(vectors) == len(hits)
    tags = pipeline("audio-tagging", model=str(tmp_path / "model"))(hits)
    assert all(tag["duration"] > 0 for tag in tags)
