"""The extractor's window_type: every Kaldi window against torchaudio's Kaldi fbank, saved config, clear errors."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torchaudio
import transformers
from test_feature_extraction import KALDI, noise_clips

from ast_hf import ASTFeatureExtractor
from ast_hf.kaldi_fbank import WINDOW_TYPES, batched_kaldi_fbank, kaldi_mel_banks, kaldi_window


def torchaudio_fbank(clip: np.ndarray | torch.Tensor, window_type: str) -> torch.Tensor:
    """The parity test's call of kaldi.fbank (test_feature_extraction.KALDI) with only window_type changed."""
    waveform = torch.as_tensor(clip, dtype=torch.float32)[None]
    return torchaudio.compliance.kaldi.fbank(waveform, **{**KALDI, "window_type": window_type})


def test_window_types_are_kaldis():
    assert WINDOW_TYPES == ("hanning", "hamming", "povey", "rectangular", "blackman")
    assert set(WINDOW_TYPES) == {
        torchaudio.compliance.kaldi.HANNING, torchaudio.compliance.kaldi.HAMMING, torchaudio.compliance.kaldi.POVEY,
        torchaudio.compliance.kaldi.RECTANGULAR, torchaudio.compliance.kaldi.BLACKMAN,
    }


@pytest.mark.parametrize("window_type", WINDOW_TYPES)
def test_window_by_hand(window_type):
    window = kaldi_window(window_type).double()
    n = torch.arange(400, dtype=torch.float64)
    hann = 0.5 - 0.5 * torch.cos(2 * torch.pi * n / 399)
    expected = {
        "hanning": hann,
        "hamming": 0.54 - 0.46 * torch.cos(2 * torch.pi * n / 399),
        "povey": hann**0.85,
        "rectangular": torch.ones(400, dtype=torch.float64),
        "blackman": 0.42 - 0.5 * torch.cos(2 * torch.pi * n / 399) + 0.08 * torch.cos(4 * torch.pi * n / 399),
    }[window_type]
    assert window.shape == (400,) and kaldi_window(window_type).dtype == torch.float32
    torch.testing.assert_close(window, expected, rtol=0, atol=1e-6)


@pytest.mark.parametrize("window_type", WINDOW_TYPES)
def test_each_window_equals_torchaudio_kaldi_fbank(speech, window_type):
    """Real speech, one clip at a time and as a batch, with block boundaries inside clips: within 1e-4 of
    torchaudio's Kaldi fbank with the same window_type. The windows are far enough apart that a wrong window
    would fail by more than 0.01."""
    extractor = ASTFeatureExtractor(window_type=window_type, do_normalize=False)
    clips = speech + noise_clips()
    batch = extractor(clips, sampling_rate=16000, padding="longest", return_tensors="pt")["input_values"]
    blocks = batched_kaldi_fbank([torch.from_numpy(c) for c in clips], kaldi_mel_banks(128, 16000),
                                 kaldi_window(window_type), block_frames=37)
    for i, clip in enumerate(clips):
        reference = torchaudio_fbank(clip, window_type)
        frames = reference.shape[0]
        alone = extractor(clip, sampling_rate=16000, padding="longest", return_tensors="pt")["input_values"][0]
        assert alone.shape == reference.shape
        torch.testing.assert_close(alone, reference, rtol=0, atol=1e-4)
        torch.testing.assert_close(batch[i, :frames], reference, rtol=0, atol=1e-4)
        torch.testing.assert_close(blocks[i, :frames], reference, rtol=0, atol=1e-4)
        if window_type != "hanning":
            assert float((reference - torchaudio_fbank(clip, "hanning")).abs().max()) > 1e-2


@pytest.mark.parametrize("window_type", WINDOW_TYPES)
def test_normalised_default_call_uses_the_window(speech, window_type):
    extractor = ASTFeatureExtractor(window_type=window_type, max_length=128)
    values = extractor(speech[2], sampling_rate=16000, truncation=True, return_tensors="pt")["input_values"][0]
    expected = (torchaudio_fbank(speech[2], window_type)[:128] - extractor.mean) / (2 * extractor.std)
    torch.testing.assert_close(values, expected, rtol=0, atol=1e-4)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="the device path needs a CUDA GPU")
@pytest.mark.parametrize("window_type", WINDOW_TYPES)
def test_each_window_on_the_gpu(window_type):
    # Without the espeak-ng fixture, so that it runs on a GPU machine that lacks espeak-ng: noise and a
    # harmonic tone with a falling pitch and a loudness envelope (a vowel-like signal), 16 kHz.
    t = np.arange(24000) / 16000
    tone = sum(np.sin(2 * np.pi * k * (180 - 40 * t) * t) / k for k in range(1, 12)) * np.hanning(len(t)) * 0.2
    clips = noise_clips() + [tone.astype(np.float32)]
    extractor = ASTFeatureExtractor(window_type=window_type, do_normalize=False)
    batch = extractor(clips, sampling_rate=16000, padding="longest", return_tensors="pt", device="cuda")
    assert batch["input_values"].device.type == "cuda"
    # cuFFT's float32 rounding differs from the CPU FFT's: torchaudio's own fbank run on the GPU differs from its
    # CPU result by up to 3.7e-4 on these log-mel values (up to 16; measured on an H200, every window), and ours on
    # the GPU by as much (2.1e-4 to 3.6e-4). Hence 1e-3 here, where the CPU path is tested to 1e-4 (9.5e-7 measured).
    for i, clip in enumerate(clips):
        reference = torchaudio_fbank(clip, window_type)
        torch.testing.assert_close(batch["input_values"][i, : reference.shape[0]].cpu(), reference, rtol=0,
                                   atol=1e-3)


def test_changing_window_type_on_an_extractor_takes_effect(speech):
    extractor = ASTFeatureExtractor(do_normalize=False)
    extractor(speech[0], sampling_rate=16000)  # builds the hanning constants
    extractor.window_type = "hamming"
    values = extractor(speech[0], sampling_rate=16000, padding="longest", return_tensors="pt")["input_values"][0]
    torch.testing.assert_close(values, torchaudio_fbank(speech[0], "hamming"), rtol=0, atol=1e-4)
    extractor.window_type = "hann"
    with pytest.raises(ValueError, match="'hann'"):
        extractor(speech[0], sampling_rate=16000)


@pytest.mark.parametrize("window_type", WINDOW_TYPES)
def test_window_type_saved_and_loaded(tmp_path, window_type):
    ASTFeatureExtractor(window_type=window_type).save_pretrained(tmp_path)
    assert json.loads((tmp_path / "preprocessor_config.json").read_text())["window_type"] == window_type
    assert ASTFeatureExtractor.from_pretrained(tmp_path).window_type == window_type


def test_configs_without_window_type_load_as_hanning(tmp_path):
    # A preprocessor_config.json from before the option: the current one minus the field.
    ASTFeatureExtractor(max_length=128).save_pretrained(tmp_path / "old")
    path = tmp_path / "old" / "preprocessor_config.json"
    saved = json.loads(path.read_text())
    del saved["window_type"]
    path.write_text(json.dumps(saved))
    loaded = ASTFeatureExtractor.from_pretrained(tmp_path / "old")
    assert (loaded.window_type, loaded.max_length) == ("hanning", 128)
    # One written by transformers' built-in extractor, which has no window option (always "hanning").
    transformers.ASTFeatureExtractor().save_pretrained(tmp_path / "hf")
    assert "window_type" not in json.loads((tmp_path / "hf" / "preprocessor_config.json").read_text())
    assert ASTFeatureExtractor.from_pretrained(tmp_path / "hf").window_type == "hanning"
    # An argument of from_pretrained applies even though the file lacks the field (transformers would drop it).
    assert ASTFeatureExtractor.from_pretrained(tmp_path / "hf", window_type="hamming").window_type == "hamming"
    assert ASTFeatureExtractor.from_pretrained(tmp_path / "old", window_type="povey").window_type == "povey"


def test_builtin_extractor_loads_a_config_with_window_type(tmp_path):
    ASTFeatureExtractor(window_type="hamming", max_length=128).save_pretrained(tmp_path)
    theirs = transformers.ASTFeatureExtractor.from_pretrained(tmp_path)
    assert theirs.max_length == 128  # loads; it ignores window_type and computes "hanning" features


@pytest.mark.parametrize("value", ["hann", "Hamming", "kaiser", "", "hanning "])
def test_unknown_window_type_is_refused(value):
    with pytest.raises(ValueError, match=repr(value)) as error:
        ASTFeatureExtractor(window_type=value)
    for name in WINDOW_TYPES:
        assert repr(name) in str(error.value)
    with pytest.raises(ValueError, match=repr(value)):
        kaldi_window(value)


def test_window_type_alias_hint():
    with pytest.raises(ValueError, match="Kaldi calls it 'hanning'"):
        ASTFeatureExtractor(window_type="hann")
    with pytest.raises(ValueError, match="Kaldi calls it 'rectangular'"):
        ASTFeatureExtractor(window_type="boxcar")


@pytest.mark.parametrize("value", [None, 1, ["hanning"], b"hanning"])
def test_window_type_that_is_not_a_string_is_refused(value):
    with pytest.raises(TypeError, match="window_type") as error:
        ASTFeatureExtractor(window_type=value)
    assert "'hanning'" in str(error.value)


def test_a_saved_unknown_window_type_is_refused_on_load(tmp_path):
    ASTFeatureExtractor().save_pretrained(tmp_path)
    path = tmp_path / "preprocessor_config.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), "window_type": "triangle"}))
    with pytest.raises(ValueError, match="'triangle'"):
        ASTFeatureExtractor.from_pretrained(tmp_path)
