"""Bad values and inputs that used to pass silently or end in an internal error (issue 10, part A): each now gets
correct handling or a ValueError/TypeError that names the value and the fix. Real inputs: espeak-ng speech, tiny
random models, a real `transformers.pipeline` over a real ten-minute file."""

from __future__ import annotations

import warnings
import wave

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import randomize, tiny_config
from transformers import pipeline

import ast_hf

# ---- config ---------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "fields, error, words",
    [
        (dict(hidden_size="64"), TypeError, "hidden_size='64' is a str; it must be an int"),
        (dict(patch_size=16.0), TypeError, "patch_size=16.0 is a float"),
        (dict(num_attention_heads=0), ValueError, "num_attention_heads=0 must be >= 1"),
        (dict(num_hidden_layers=-1), ValueError, "num_hidden_layers=-1 must be >= 1"),
        (dict(hidden_dropout_prob=1.5), ValueError, "hidden_dropout_prob=1.5 must be a probability"),
        (dict(hidden_act="gleu"), ValueError, "hidden_act='gleu'"),
    ],
)
def test_bad_config_values_are_named(fields, error, words):
    with pytest.raises(error, match=words.replace("(", r"\(").replace(")", r"\)")):
        ast_hf.ASTConfig(**fields)


@pytest.mark.parametrize(
    "fields, words",
    [
        # A stride beyond the patch leaves frames / mel bins that no patch covers.
        (dict(time_stride=20), "time_stride=20 is larger than patch_size=16: 4 frames"),
        (dict(frequency_stride=17), "frequency_stride=17 is larger than patch_size=16: 1 mel bins"),
        (dict(patch_size=8, max_length=128, num_mel_bins=128), "frequency_stride=10 is larger than patch_size=8"),
        (dict(num_mel_bins=8), "num_mel_bins=8 is smaller than patch_size=16"),
        (dict(hidden_size=100), "hidden_size=100 is not a multiple of num_attention_heads=12"),
    ],
)
def test_inconsistent_fields_are_named_when_a_model_is_built_or_the_config_saved(tmp_path, fields, words):
    """Fields that only conflict with each other are checked when it matters (config.validate(), which transformers
    runs in save_pretrained and the AST models when they are built): the config itself can be built and edited
    further; a model built from it, or its save_pretrained, raise."""
    config = ast_hf.ASTConfig(**fields)
    pattern = words.replace("(", r"\(").replace(")", r"\)")
    for build in (ast_hf.ASTModel, ast_hf.ASTForAudioClassification):
        with pytest.raises(ValueError, match=pattern):
            build(config)
    with pytest.raises(ValueError, match=pattern):
        config.save_pretrained(tmp_path)
    assert not (tmp_path / "config.json").exists()


def test_config_accepts_numpy_integers_and_the_largest_valid_stride(tmp_path):
    config = ast_hf.ASTConfig(hidden_size=np.int64(64), num_attention_heads=4, time_stride=16, frequency_stride=16)
    assert type(config.hidden_size) is int and config.patch_grid == (8, 64)
    config.save_pretrained(tmp_path)  # would fail to serialise a numpy integer
    assert ast_hf.ASTConfig.from_pretrained(tmp_path).hidden_size == 64


# ---- feature extractor ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "settings, error, words",
    [
        (dict(num_mel_bins=0), ValueError, "num_mel_bins=0 must be at least 1"),
        (dict(num_mel_bins="128"), TypeError, "num_mel_bins='128' must be an integer"),
        (dict(sampling_rate="16000"), TypeError, "sampling_rate='16000' is a str"),
        (dict(max_length=0), ValueError, "max_length=0 must be at least 1"),
        (dict(mean=float("nan")), ValueError, "mean=nan is not finite"),
        (dict(padding_side="left"), ValueError, "padding_side='left' is not supported"),
    ],
)
def test_bad_extractor_settings_are_refused_at_construction(settings, error, words):
    with pytest.raises(error, match=words):
        ast_hf.ASTFeatureExtractor(**settings)


def test_sampling_rate_as_a_string_is_a_type_error_not_a_rate_mismatch(speech):
    extractor = ast_hf.ASTFeatureExtractor(max_length=128)
    with pytest.raises(TypeError, match=r"sampling_rate='16000' is a str; pass a number \(sampling_rate=16000\)"):
        extractor(speech[0], sampling_rate="16000")
    # Numbers of another type that equal the rate are fine.
    reference = extractor(speech[0], sampling_rate=16000, return_tensors="np")["input_values"]
    for rate in (16000.0, np.int64(16000)):
        np.testing.assert_array_equal(extractor(speech[0], sampling_rate=rate, return_tensors="np")["input_values"],
                                      reference)


@pytest.mark.parametrize("scale", [1e19, 1e16, -3e17])
def test_audio_whose_power_spectrum_would_overflow_is_refused(speech, scale):
    clip = speech[1] / np.abs(speech[1]).max() * scale
    with pytest.raises(ValueError, match=r"Clip 0 peaks at .*expected in \[-1, 1\].*overflow float32"):
        ast_hf.ASTFeatureExtractor()(clip, sampling_rate=16000)


def test_loud_audio_below_the_bound_gives_finite_features_equal_to_the_scaled_log(speech):
    """Up to the bound (1e15) the features are finite and are the quiet clip's shifted by 2 log(scale), as the
    power spectrum scales with the square of the amplitude (frames above the log floor)."""
    extractor = ast_hf.ASTFeatureExtractor(do_normalize=False)
    clip = speech[1] / np.abs(speech[1]).max()
    quiet = extractor(clip, sampling_rate=16000, padding="longest", return_tensors="pt")["input_values"]
    for scale in (1e6, 1e12, 1e15):
        loud = extractor(clip * scale, sampling_rate=16000, padding="longest", return_tensors="pt")["input_values"]
        assert bool(torch.isfinite(loud).all())
        above_floor = quiet > np.log(np.finfo(np.float32).eps) + 1
        shift = (loud - quiet)[above_floor]
        torch.testing.assert_close(shift, torch.full_like(shift, 2 * np.log(scale)), rtol=1e-4, atol=2e-3)


def test_left_padding_side_is_refused_even_when_set_later(speech):
    extractor = ast_hf.ASTFeatureExtractor()
    extractor.padding_side = "left"
    with pytest.raises(ValueError, match="padding_side='left' is not supported"):
        extractor(speech[0], sampling_rate=16000)


# ---- model ----------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def model() -> ast_hf.ASTForAudioClassification:
    return randomize(ast_hf.ASTForAudioClassification(tiny_config()))


@pytest.fixture(scope="module")
def batch(speech):
    extractor = ast_hf.ASTFeatureExtractor(max_length=128)
    return extractor(speech[:3], sampling_rate=16000, padding="longest", max_length=400, return_tensors="pt",
                     return_attention_mask=True)


def test_empty_batch_and_non_finite_input_are_refused(model):
    with pytest.raises(ValueError, match=r"shape \(0, 128, 128\): a batch of 0 spectrograms"):
        model(torch.randn(0, 128, 128))
    spectrogram = torch.randn(2, 128, 128)
    spectrogram[1, 5, 7] = float("nan")
    with pytest.raises(ValueError, match="NaN or Inf"):
        model(spectrogram)


def test_left_padded_mask_is_refused_not_misread(model, batch):
    """The model counts a row's ones and masks the patches after that count: on a left-padded batch that would
    mask real patches and attend to padding. It is refused with the layout named."""
    values, mask = batch["input_values"], batch["attention_mask"]
    real = mask.sum(dim=1)
    short = int(real.argmin())
    padding = int(values.shape[1] - real[short])
    left_values = values.clone()
    left_values[short] = torch.roll(values[short], padding, dims=0)  # the same clip, padding first
    left_mask = mask.clone()
    left_mask[short] = torch.roll(mask[short], padding, dims=0)
    with torch.no_grad(), pytest.raises(ValueError, match=rf"row {short} is left-padded \({padding} padding frames"):
        model(left_values, attention_mask=left_mask)
    holes = mask.clone()
    holes[int(real.argmax()), 20:30] = 0
    with torch.no_grad(), pytest.raises(ValueError, match="has padding between real frames"):
        model(values, attention_mask=holes)
    with torch.no_grad(), pytest.raises(ValueError, match="values other than 0 and 1"):
        model(values, attention_mask=mask * 0.5)
    empty = mask.clone()
    empty[0] = 0
    with torch.no_grad(), pytest.raises(ValueError, match="row 0 has no real frame"):
        model(values, attention_mask=empty)
    # Right-padded masks of every dtype give the same logits.
    with torch.no_grad():
        reference = model(values, attention_mask=mask).logits
        for form in (mask.bool(), mask.float(), mask.numpy(), mask.tolist()):
            torch.testing.assert_close(model(values, attention_mask=form).logits, reference, rtol=0, atol=1e-6)


def test_labels_as_numpy_or_lists_give_the_tensor_loss(model, batch):
    values, mask = batch["input_values"], batch["attention_mask"]
    with torch.no_grad():
        logits = model(values, attention_mask=mask).logits
        expected = F.cross_entropy(logits, torch.tensor([0, 3, 4]))
        for labels in (np.array([0, 3, 4]), [0, 3, 4], torch.tensor([0, 3, 4], dtype=torch.int16),
                       torch.tensor([0, 3, 4], dtype=torch.uint8), np.array([0, 3, 4], dtype=np.int8)):
            out = model(values, attention_mask=mask, labels=labels)
            torch.testing.assert_close(out.loss, expected, msg=str(type(labels)))
        # Multi-hot labels of a small integer type stay multi-label (BCE), as before.
        multi_hot = torch.tensor([[1, 0, 0, 1, 0], [0, 0, 0, 0, 1], [1, 1, 0, 0, 0]], dtype=torch.uint8)
        torch.testing.assert_close(model(values, attention_mask=mask, labels=multi_hot).loss,
                                   F.binary_cross_entropy_with_logits(logits, multi_hot.float()))
        with pytest.raises(ValueError, match=r"class index 7 but the model has 5 labels \(indices 0\.\.4"):
            model(values, attention_mask=mask, labels=[0, 7, 1])
        with pytest.raises(TypeError, match="labels of type str cannot be read as a tensor"):
            model(values, attention_mask=mask, labels="yes")


def test_labels_that_do_not_fit_the_batch_get_clear_errors(model, batch):
    """A label count other than the batch's, and 1-D float labels with no problem_type, used to reach torch's own
    messages or one about a multi-label setting the user never made; one-clip regression warned about shapes."""
    values, mask = batch["input_values"], batch["attention_mask"]
    with pytest.raises(ValueError, match=r"labels have shape \(2,\) but the batch holds 3 clips"):
        model(values, attention_mask=mask, labels=torch.tensor([0, 1]))
    with pytest.raises(ValueError, match=r"1-D torch.float32 values, which are neither class indices .*labels.long"):
        model(values, attention_mask=mask, labels=torch.tensor([1.0, 0.0, 2.0]))
    regression = randomize(ast_hf.ASTForAudioClassification(tiny_config(num_labels=1))).eval()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # torch's "target size ... different to the input size" warning
        with torch.no_grad():
            logits = regression(values[:1], attention_mask=mask[:1]).logits  # (1, 1)
            loss = regression(values[:1], attention_mask=mask[:1], labels=torch.tensor([0.5])).loss
    torch.testing.assert_close(loss, (logits[0, 0] - 0.5) ** 2)
    with pytest.raises(ValueError, match=r"shape \(0, 16000\): a batch of 0 clips"):
        ast_hf.ASTFeatureExtractor()(np.zeros((0, 16000), np.float32), sampling_rate=16000)


# ---- pipeline over a long file --------------------------------------------------------------------------------------


def test_pipeline_warns_once_when_it_classifies_only_the_start_of_a_long_file(tmp_path, speech):
    """A ten-minute file through a real pipeline: the model sees its first max_length frames (1.28 s here); the
    user is told once, with the numbers, instead of getting scores for 0.2 % of the audio without a word."""
    model = randomize(ast_hf.ASTForAudioClassification(tiny_config()))
    model.save_pretrained(tmp_path / "model")
    ast_hf.ASTFeatureExtractor(max_length=128).save_pretrained(tmp_path / "model")
    speech_and_pause = np.concatenate([speech[2], np.zeros(8000, np.float32)])
    long_clip = np.tile(speech_and_pause, 600 * 16000 // len(speech_and_pause) + 1)[: 600 * 16000]
    path = tmp_path / "ten_minutes.wav"
    with wave.open(str(path), "wb") as handle:
        handle.setnchannels(1)
        handle.setsampwidth(2)
        handle.setframerate(16000)
        handle.writeframes((long_clip * 32767).astype(np.int16).tobytes())
    classifier = pipeline("audio-classification", model=str(tmp_path / "model"))
    with pytest.warns(UserWarning) as record:
        first = classifier(str(path))
    messages = [str(w.message) for w in record if "max_length" in str(w.message)]
    assert len(messages) == 1, messages
    assert "59998 frames (599.98 s) but max_length=128 frames (1.28 s)" in messages[0]
    assert "59870 frames (598.70 s) are dropped" in messages[0]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # once per extractor: a second long file does not warn again
        second = classifier(str(path))
    assert first == second
    # Asking for the cut explicitly is silent.
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ast_hf.ASTFeatureExtractor(max_length=128)(long_clip, sampling_rate=16000, truncation=True)
