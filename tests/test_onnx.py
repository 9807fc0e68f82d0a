"""ONNX export: real torch.onnx exports of tiny ASTs, run by onnxruntime and compared with the PyTorch model."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import transformers
from conftest import tiny_model

import ast_hf

pytest.importorskip("onnxruntime", reason="the ONNX export needs onnx, onnxscript and onnxruntime")
pytest.importorskip("onnxscript", reason="the ONNX export needs onnx, onnxscript and onnxruntime")
from ast_hf.onnx_export import OnnxAudioClassifier, _load_model_and_extractor, export_onnx  # noqa: E402
from ast_hf.patch_grid import position_embeddings_per_clip  # noqa: E402

LABELS = ["yes", "no", "up", "down", "left"]
TOLERANCE = 1e-4
# One layer: every layer is the same graph, and an export costs seconds per layer. The tiny config's stored grid is
# 12 x 12 patches (max_length 128 frames).
LAYERS = 1


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """An ast_hf checkpoint directory (with a non-default extractor) exported with int8 quantization."""
    source = tmp_path_factory.mktemp("checkpoint")
    model = tiny_model(num_hidden_layers=LAYERS, id2label=dict(enumerate(LABELS)),
                       label2id={name: i for i, name in enumerate(LABELS)})
    model.save_pretrained(source)
    extractor = ast_hf.ASTFeatureExtractor(max_length=128, mean=-5.0, std=3.0)
    extractor.save_pretrained(source)
    output = tmp_path_factory.mktemp("onnx")
    result = export_onnx(source, output, quantize="int8")
    return ast_hf.ASTForAudioClassification.from_pretrained(source).eval(), extractor, output, result


def pytorch_logits(model, input_values, attention_mask=None) -> np.ndarray:
    with torch.no_grad():
        return model(torch.as_tensor(input_values), attention_mask=attention_mask).logits.numpy()


def test_export_writes_a_self_describing_directory(exported):
    model, extractor, output, result = exported
    assert result == {
        "onnx": str(output / "model.onnx"), "quantized": str(output / "model_quantized.onnx"),
        "config": str(output / "config.json"), "preprocessor_config": str(output / "preprocessor_config.json"),
        "opset": 18, "inputs": ["input_values", "attention_mask"], "outputs": ["logits"],
        "max_abs_difference": result["max_abs_difference"],
    }
    assert result["max_abs_difference"] <= TOLERANCE
    assert ast_hf.ASTConfig.from_pretrained(output).id2label == dict(enumerate(LABELS))
    saved = ast_hf.ASTFeatureExtractor.from_pretrained(output)
    assert (saved.mean, saved.std, saved.max_length) == (-5.0, 3.0, 128)
    assert json.loads((output / "config.json").read_text())["num_hidden_layers"] == LAYERS
    assert not [path for path in output.iterdir() if path.name.startswith(".")]  # no staging directory left

    classifier = OnnxAudioClassifier.from_directory(output)
    inputs, outputs = classifier.session.get_inputs(), classifier.session.get_outputs()
    assert [(i.name, i.type, i.shape) for i in inputs] == [("input_values", "tensor(float)", ["batch", "time", 128]),
                                                           ("attention_mask", "tensor(int64)", ["batch", "time"])]
    assert [(o.name, o.shape) for o in outputs] == [("logits", ["batch", len(LABELS)])]
    assert classifier.id2label == dict(enumerate(LABELS))


@pytest.mark.parametrize("frames", [16, 60, 128, 300])  # one patch, shorter than, as long as, longer than the grid
def test_onnx_logits_match_pytorch_at_any_length(exported, frames):
    model, _, output, _ = exported
    input_values = torch.randn(3, frames, 128, generator=torch.Generator().manual_seed(frames))
    classifier = OnnxAudioClassifier.from_directory(output)
    expected = pytorch_logits(model, input_values)
    difference = np.abs(classifier(input_values.numpy()) - expected).max()
    print(f"{frames} frames: max |onnx - torch| = {difference:.2e}")
    assert difference <= TOLERANCE
    one_clip = np.abs(classifier(input_values[:1]) - expected[:1]).max()  # batch size 1, a torch tensor
    assert one_clip <= TOLERANCE


def test_padded_batch_of_speech_gives_each_clip_its_own_logits(exported, speech):
    model, extractor, output, _ = exported
    batch = extractor(speech, sampling_rate=16000, padding="longest", truncation=False, return_attention_mask=True,
                      return_tensors="np")
    lengths = batch["attention_mask"].sum(axis=1)
    assert lengths.min() < 128 < lengths.max()  # clips shorter and longer than the stored grid, in one batch
    logits = OnnxAudioClassifier.from_directory(output)(batch["input_values"], batch["attention_mask"])
    same_batch = np.abs(logits - pytorch_logits(model, batch["input_values"], batch["attention_mask"])).max()
    alone = max(np.abs(logits[i] - pytorch_logits(model, batch["input_values"][i:i + 1, :length])[0]).max()
                for i, length in enumerate(lengths))
    print(f"padded batch of {len(speech)} clips, {lengths.tolist()} frames: max |onnx - torch| = {same_batch:.2e} "
          f"(same padded batch), {alone:.2e} (each clip alone)")
    assert same_batch <= TOLERANCE and alone <= TOLERANCE


def test_int8_model_agrees_with_float32_pytorch_on_speech(exported, speech):
    model, extractor, output, _ = exported
    quantized = OnnxAudioClassifier.from_directory(output, quantized=True)
    assert (output / "model_quantized.onnx").stat().st_size < (output / "model.onnx").stat().st_size
    clips = speech + [clip[::-1].copy() for clip in speech]  # reversed speech: more real spectra, same lengths
    agree, probability_difference = [], 0.0
    for clip in clips:
        features = extractor(clip, sampling_rate=16000, padding="longest", truncation=False,
                             return_attention_mask=True, return_tensors="np")
        expected = torch.from_numpy(pytorch_logits(model, features["input_values"])).softmax(-1)
        got = torch.from_numpy(quantized(features["input_values"], features["attention_mask"])).softmax(-1)
        agree.append(bool(expected.argmax() == got.argmax()))
        probability_difference = max(probability_difference, float((expected - got).abs().max()))
    print(f"int8 vs float32 PyTorch on {len(clips)} clips: top-1 agreement {np.mean(agree):.2f}, max probability "
          f"difference {probability_difference:.3f}")
    assert np.mean(agree) >= 0.75 and probability_difference < 0.1


def test_builtin_transformers_checkpoint_exports(tmp_path):
    builtin = tiny_model(builtin=True, num_hidden_layers=LAYERS)
    builtin.save_pretrained(tmp_path / "builtin")
    transformers.ASTFeatureExtractor(max_length=128).save_pretrained(tmp_path / "builtin")
    result = export_onnx(tmp_path / "builtin", tmp_path / "onnx")
    assert result["quantized"] is None and not (tmp_path / "onnx" / "model_quantized.onnx").exists()
    assert ast_hf.ASTFeatureExtractor.from_pretrained(tmp_path / "onnx").max_length == 128
    input_values = torch.randn(2, 128, 128, generator=torch.Generator().manual_seed(0))  # the built-in's one length
    logits = OnnxAudioClassifier.from_directory(tmp_path / "onnx")(input_values)
    difference = np.abs(logits - pytorch_logits(builtin, input_values)).max()
    print(f"transformers' built-in AST: max |onnx - torch| = {difference:.2e}")
    assert difference <= TOLERANCE
    # A built-in instance is exported through an ast_hf copy with the same weights.
    copy, _ = _load_model_and_extractor(builtin, ast_hf.ASTFeatureExtractor(max_length=128))
    assert type(copy) is ast_hf.ASTForAudioClassification
    np.testing.assert_array_equal(pytorch_logits(copy.eval(), input_values), pytorch_logits(builtin, input_values))


@pytest.mark.slow
def test_export_into_an_existing_directory_replaces_its_files(tmp_path, speech):
    """A model instance exported twice into one directory: the second export (another model, no quantization)
    replaces model.onnx and the config and removes the first one's model_quantized.onnx; other files stay."""
    (tmp_path / "notes.txt").write_text("kept")
    export_onnx(tiny_model(num_hidden_layers=LAYERS, seed=1), tmp_path, quantize="int8")
    model = tiny_model(num_hidden_layers=LAYERS, seed=2, num_labels=3)
    extractor = ast_hf.ASTFeatureExtractor(max_length=128)
    export_onnx(model, tmp_path, feature_extractor=extractor)
    assert sorted(path.name for path in tmp_path.iterdir() if path.suffix in (".onnx", ".json", ".txt")) == [
        "config.json", "model.onnx", "notes.txt", "preprocessor_config.json"]
    features = extractor(speech[1], sampling_rate=16000, truncation=True, return_tensors="np")
    logits = OnnxAudioClassifier.from_directory(tmp_path)(features["input_values"])
    assert logits.shape == (1, 3)
    assert np.abs(logits - pytorch_logits(model, features["input_values"])).max() <= TOLERANCE


def test_branch_free_position_embeddings_equal_the_eager_rule():
    """The form traced under export (position_embeddings_per_clip) against the eager model's branches."""
    embeddings = tiny_model().audio_spectrogram_transformer.embeddings
    stored = embeddings.position_embeddings
    for time_patches in ([5], [12], [20], [31], [3, 12, 13, 20]):  # the stored grid has 12 time patches
        grid = (12, max(time_patches))
        lengths = torch.tensor(time_patches)
        eager = embeddings.position_embeddings_for(grid, lengths if len(time_patches) > 1 else None)
        traced = position_embeddings_per_clip(stored, embeddings.grid, grid, lengths)
        eager = eager.expand(len(time_patches), -1, -1)  # (1 or B, 2 + f*t, D) -> (B, 2 + f*t, D)
        for row, length in enumerate(time_patches):
            torch.testing.assert_close(traced[row, :2], eager[row, :2], rtol=0, atol=0)  # CLS, distillation
            real_columns = [table[row, 2:].reshape(12, grid[1], -1)[:, :length] for table in (traced, eager)]
            torch.testing.assert_close(*real_columns, rtol=0, atol=1e-6)
        if len(time_patches) == 1:  # no mask: every clip has the batch's length
            no_mask = position_embeddings_per_clip(stored, embeddings.grid, grid, None)
            torch.testing.assert_close(no_mask, traced, rtol=0, atol=0)


def test_export_errors(tmp_path):
    model = tiny_model(num_hidden_layers=LAYERS)
    (tmp_path / "file").write_text("not a directory")
    with pytest.raises(ValueError, match="exists and is a file"):
        export_onnx(model, tmp_path / "file")
    for quantize in ("int4", "INT8", True):
        with pytest.raises(ValueError, match=f"quantize={quantize!r} is not supported"):
            export_onnx(model, tmp_path / "out", quantize=quantize)
    for opset in (17, 24, "18", 18.0):
        with pytest.raises(ValueError, match=f"opset={opset!r} is not supported; pass an int from 18 to 23"):
            export_onnx(model, tmp_path / "out", opset=opset)
    with pytest.raises(TypeError, match="model has type ASTModel; export_onnx exports an AST classifier"):
        export_onnx(model.audio_spectrogram_transformer, tmp_path / "out")
    with pytest.raises(TypeError, match="model has type Linear"):
        export_onnx(torch.nn.Linear(2, 2), tmp_path / "out")
    vit = transformers.ViTConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=4)
    vit.save_pretrained(tmp_path / "vit")
    with pytest.raises(ValueError, match="holds a 'vit' model .*not an AST"):
        export_onnx(tmp_path / "vit", tmp_path / "out")
    with pytest.raises(ValueError, match="model is torch.float16; export a float32 model"):
        export_onnx(tiny_model(num_hidden_layers=LAYERS).half(), tmp_path / "out")
    with pytest.raises(ValueError, match="computes 64 mel bins but the model was built for 128"):
        export_onnx(model, tmp_path / "out", feature_extractor=ast_hf.ASTFeatureExtractor(num_mel_bins=64))
    assert not (tmp_path / "out").exists()  # every error comes before anything is written


def test_onnx_classifier_errors(exported, tmp_path):
    model, _, output, _ = exported
    classifier = OnnxAudioClassifier.from_directory(output)
    features = np.zeros((2, 40, 128), dtype=np.float32)
    with pytest.raises(ValueError, match=r"input_values has shape \(40, 128\); the model takes \(batch, frames, 128"):
        classifier(features[0])
    with pytest.raises(TypeError, match="input_values must be float features, got int64"):
        classifier(features.astype(np.int64))
    with pytest.raises(ValueError, match="one patch needs 16 x 16. Pad the audio to at least 16 frames"):
        classifier(features[:, :10])
    with pytest.raises(ValueError, match=r"attention_mask has shape \(2, 30\) but input_values has \(2, 40\)"):
        classifier(features, np.ones((2, 30), dtype=np.int64))
    left_padded = np.ones((2, 40), dtype=np.int64)
    left_padded[1, :5] = 0
    with pytest.raises(ValueError, match="attention_mask row 1 is left-padded"):
        classifier(features, left_padded)
    with pytest.raises(TypeError, match="attention_mask has type list; pass a numpy array"):
        classifier(features, [[1] * 40] * 2)
    with pytest.raises(FileNotFoundError, match="Export with quantize='int8' to write it"):
        OnnxAudioClassifier.from_directory(tmp_path, quantized=True)
    # A provider this onnxruntime lacks is an error, not onnxruntime's silent fall-back to the CPU; listing the CPU
    # as well allows the fall-back.
    import onnxruntime

    if "CUDAExecutionProvider" not in onnxruntime.get_available_providers():
        with pytest.raises(ValueError, match=r"cannot use \['CUDAExecutionProvider'\] here .* onnxruntime-gpu"):
            OnnxAudioClassifier.from_directory(output, providers=["CUDAExecutionProvider"])
        fallback = OnnxAudioClassifier.from_directory(output, providers=["CUDAExecutionProvider",
                                                                          "CPUExecutionProvider"])
        assert fallback.session.get_providers() == ["CPUExecutionProvider"]
