"""Property-based tests (hypothesis) over the feature extractor and the model (issue 10, part A).

For random batches of clips (0 to 5 s, float16/32/64 and int8/16/32/uint8 PCM, scales from 1e-6 to 1e6 of full
scale, speech, noise, tones and silence), padding modes and attention masks, either the output is finite and a
padded batch equals each clip alone (1e-4, as the parity tests), or a documented ValueError/TypeError is raised.
No other exception type may escape. Examples are bounded so that the file runs in well under a minute.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import tiny_model
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import ast_hf
from ast_hf.feature_extraction_ast import num_frames

SETTINGS = dict(deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
DTYPES = [np.float32, np.float64, np.float16, np.int16, np.int32, np.int8, np.uint8]
FULL_SCALE = {np.int16: 2**15 - 1, np.int32: 2**31 - 1, np.int8: 2**7 - 1}
MAX_SECONDS = 5


@st.composite
def clips(draw, min_samples: int = 0, max_samples: int = MAX_SECONDS * 16000) -> np.ndarray:
    """One clip: a random kind of signal at a random length, level (1e-6 to 1e6 of full scale) and dtype."""
    length = draw(st.integers(min_samples, max_samples))
    kind = draw(st.sampled_from(["speech", "noise", "tone", "silence", "dc"]))
    scale = 10.0 ** draw(st.floats(-6, 6))
    dtype = draw(st.sampled_from(DTYPES))
    rng = np.random.default_rng(draw(st.integers(0, 2**16)))
    if kind == "speech":
        source = SPEECH[draw(st.integers(0, len(SPEECH) - 1))]
        signal = np.resize(source.astype(np.float64), length) / np.abs(source).max()
    elif kind == "noise":
        signal = rng.uniform(-1, 1, length)
    elif kind == "tone":
        signal = np.sin(2 * np.pi * rng.uniform(20, 7900) * np.arange(length) / 16000)
    elif kind == "dc":
        signal = np.full(length, rng.uniform(-1, 1))
    else:
        signal = np.zeros(length)
    if dtype in FULL_SCALE:
        full = FULL_SCALE[dtype]
        return np.clip(np.round(signal * full * min(scale, 1.0)), -full - 1, full).astype(dtype)
    if dtype == np.uint8:
        return np.clip(np.round(128 + signal * 127 * min(scale, 1.0)), 0, 255).astype(np.uint8)
    with np.errstate(over="ignore"):  # float16 overflows above 65504: the extractor must refuse the Inf
        return (signal * scale).astype(dtype)


SPEECH: list[np.ndarray] = []


@pytest.fixture(scope="module", autouse=True)
def real_speech(speech):
    SPEECH[:] = speech


EXTRACTOR = ast_hf.ASTFeatureExtractor(max_length=256)


@settings(max_examples=40, **SETTINGS)
@given(batch=st.lists(clips(), min_size=1, max_size=4),
       padding=st.sampled_from(["longest", "max_length", False]),
       return_tensors=st.sampled_from(["pt", "np", None]),
       max_length=st.sampled_from([None, 1, 16, 300]),
       as_tensor=st.booleans())
def test_extractor_output_is_finite_and_a_batch_equals_each_clip_alone(batch, padding, return_tensors, max_length,
                                                                      as_tensor):
    inputs = [torch.from_numpy(clip) if as_tensor and clip.dtype != np.uint16 else clip for clip in batch]
    try:
        out = EXTRACTOR(inputs, sampling_rate=16000, padding=padding, return_tensors=return_tensors,
                        max_length=max_length, return_attention_mask=True, truncation=True)
    except (ValueError, TypeError) as error:
        assert_documented(error, batch, padding, return_tensors, max_length)
        return
    limit = max_length or EXTRACTOR.max_length
    frames = [min(num_frames(len(clip)), limit) for clip in batch]
    for i in range(len(batch)):
        values = np.asarray(out["input_values"][i])
        mask = np.asarray(out["attention_mask"][i])
        assert np.isfinite(values).all()
        assert int(mask.sum()) == frames[i] and bool(mask[: frames[i]].all())
        alone = EXTRACTOR(inputs[i], sampling_rate=16000, padding="longest", max_length=max_length,
                          return_tensors="np", truncation=True)["input_values"][0]
        np.testing.assert_allclose(values[: frames[i]], alone, rtol=0, atol=1e-4)


def assert_documented(error: Exception, batch, padding, return_tensors, max_length) -> None:
    """The refusals the extractor documents, each for the input that causes it."""
    message = str(error)
    empty = any(len(clip) == 0 for clip in batch)
    non_finite = any(not np.isfinite(clip.astype(np.float64)).all() for clip in batch)
    ragged = padding is False and return_tensors is not None
    assert isinstance(error, ValueError), message
    assert (empty and "is empty (0 samples)" in message) or (non_finite and "NaN or Inf" in message) \
        or (ragged and "needs clips of equal length" in message), message


MODEL_CONFIG = dict(max_length=64)


@pytest.fixture(scope="module")
def model():
    return tiny_model(attn_implementation="sdpa", **MODEL_CONFIG)


@settings(max_examples=15, **SETTINGS)
@given(batch=st.lists(clips(min_samples=2800, max_samples=24000), min_size=1, max_size=3))
def test_model_logits_are_finite_and_a_padded_batch_equals_each_clip_alone(model, batch):
    """Every clip here has at least 16 frames (one patch); the stored grid (64 frames) is shorter than most clips,
    so the positional embedding is interpolated per clip length."""
    extractor = ast_hf.ASTFeatureExtractor(max_length=400)
    try:
        features = extractor(batch, sampling_rate=16000, padding="longest", return_attention_mask=True,
                             return_tensors="pt")
    except ValueError as error:  # float16 audio scaled past 65504 is Inf, refused by the extractor
        assert "NaN or Inf" in str(error)
        return
    with torch.no_grad():
        together = model(**features).logits
        assert bool(torch.isfinite(together).all())
        for i, clip in enumerate(batch):
            alone = extractor(clip, sampling_rate=16000, padding="longest", return_tensors="pt")
            torch.testing.assert_close(together[i], model(**alone).logits[0], rtol=0, atol=1e-4)


@st.composite
def masks(draw, batch: int, frames: int) -> tuple[torch.Tensor, str]:
    """A (batch, frames) mask and its layout: right-padded, left-padded, with a hole, empty row or non-binary."""
    layout = draw(st.sampled_from(["right", "right", "left", "hole", "empty", "half"]))
    lengths = [draw(st.integers(1, frames)) for _ in range(batch)]
    mask = (torch.arange(frames)[None, :] < torch.tensor(lengths)[:, None]).long()
    row = draw(st.integers(0, batch - 1))
    if layout == "left" and lengths[row] < frames:
        mask[row] = torch.roll(mask[row], frames - lengths[row])
    elif layout == "hole" and lengths[row] >= 3:
        mask[row, 1] = 0
    elif layout == "empty":
        mask[row] = 0
    elif layout == "half":
        mask = mask * 0.5
    else:
        layout = "right"
    dtype = draw(st.sampled_from([torch.long, torch.int32, torch.bool, torch.float32]))
    return (mask.to(dtype) if layout != "half" else mask), layout


@settings(max_examples=40, **SETTINGS)
@given(data=st.data(), batch=st.integers(1, 3), frames=st.integers(1, 200),
       mels=st.one_of(st.just(128), st.integers(1, 160)),  # the model's mel count, or any other (refused)
       scale=st.floats(-6, 6), dtype=st.sampled_from([torch.float32, torch.float64, torch.bfloat16, torch.int64]),
       with_mask=st.booleans())
def test_model_on_any_spectrogram_and_mask_is_finite_or_refused(model, data, batch, frames, mels, scale, dtype,
                                                                with_mask):
    spectrogram = (torch.randn(batch, frames, mels, generator=torch.Generator().manual_seed(frames * mels))
                   * 10.0**scale).to(dtype)
    kwargs, layout = {}, "none"
    if with_mask:
        kwargs["attention_mask"], layout = data.draw(masks(batch, frames))
    try:
        with torch.no_grad():
            logits = model(spectrogram, **kwargs).logits
    except TypeError as error:
        assert dtype == torch.int64 and "float tensor" in str(error)
        return
    except ValueError as error:
        message = str(error)
        too_small = frames < 16 or mels < 16
        expected = {"left": "left-padded", "hole": "between real frames", "empty": "no real frame",
                    "half": "other than 0 and 1"}
        assert (too_small and "one patch needs 16 x 16" in message) or expected.get(layout, "-") in message \
            or (mels != 128 and "mel bins, but the model expects" in message), (layout, frames, mels, message)
        return
    assert dtype != torch.int64 and frames >= 16 and mels == 128 and layout in ("none", "right"), layout
    assert logits.shape == (batch, 5) and bool(torch.isfinite(logits).all())
