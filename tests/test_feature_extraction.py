"""ASTFeatureExtractor against independent references: torchaudio's Kaldi fbank and transformers' extractor."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
import torchaudio
import transformers

from ast_hf import ASTFeatureExtractor, compute_normalization_stats
from ast_hf.kaldi_fbank import (
    batched_kaldi_fbank,
    hann_window,
    kaldi_mel_banks,
    mel_band_groups,
    num_frames,
)

KALDI = dict(htk_compat=True, sample_frequency=16000, use_energy=False, window_type="hanning", num_mel_bins=128,
             dither=0.0, frame_shift=10)


def torchaudio_fbank(clip: np.ndarray) -> torch.Tensor:
    return torchaudio.compliance.kaldi.fbank(torch.as_tensor(clip, dtype=torch.float32)[None], **KALDI)


def noise_clips() -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    return [(rng.standard_normal(n) * scale).astype(np.float32) for n, scale in ((16000 * 3, 0.1), (401, 0.5),
                                                                                  (12345, 0.01))]


def test_fbank_equals_torchaudio_kaldi(speech):
    mel, window = kaldi_mel_banks(128, 16000), hann_window()
    clips = speech + noise_clips() + [np.full(4000, 0.3, np.float32) + noise_clips()[2][:4000]]  # DC offset
    for clip in clips:
        reference = torchaudio_fbank(clip)
        ours = batched_kaldi_fbank(torch.from_numpy(clip)[None], mel, window)[0]
        assert ours.shape == reference.shape
        torch.testing.assert_close(ours, reference, rtol=0, atol=1e-4)


def test_banded_mel_blocks_equal_the_dense_projection():
    mel = kaldi_mel_banks(128, 16000)
    power = torch.rand(64, 257, dtype=torch.float64)
    dense = power @ mel.double()
    for num_groups in (1, 3, 8, 16):
        banded = torch.zeros_like(dense)
        squares = torch.stack([power / 2, power / 2], dim=-1).reshape(64, -1)  # re^2 + im^2 = power
        covered = torch.zeros(128, dtype=torch.bool)
        for m0, m1, r0, r1, weights in mel_band_groups(mel, num_groups):
            banded[:, m0:m1] = squares[:, r0:r1] @ weights.double()
            covered[m0:m1] = True
        assert bool(covered.all())
        torch.testing.assert_close(banded, dense, rtol=1e-12, atol=1e-12)


def test_list_of_clips_with_a_block_boundary_inside_clips(speech):
    mel, window = kaldi_mel_banks(128, 16000), hann_window()
    clips = [torch.from_numpy(c) for c in speech] + [torch.from_numpy(noise_clips()[1])]
    ours = batched_kaldi_fbank(clips, mel, window, block_frames=37, normalize=(-4.0, 5.0))
    for i, clip in enumerate(clips):
        reference = (torchaudio_fbank(clip.numpy()) + 4.0) / 10.0
        torch.testing.assert_close(ours[i, : reference.shape[0]], reference, rtol=0, atol=1e-4)
        assert bool((ours[i, reference.shape[0]:] == 0).all())


def test_batch_of_different_lengths_equals_each_clip_alone(speech):
    extractor = ASTFeatureExtractor()
    batch = extractor(speech, sampling_rate=16000, padding="longest", return_tensors="pt", return_attention_mask=True)
    for i, clip in enumerate(speech):
        frames = torchaudio_fbank(clip).shape[0]
        assert int(batch["attention_mask"][i].sum()) == frames
        alone = extractor(clip, sampling_rate=16000, padding="longest", return_tensors="pt")["input_values"][0]
        torch.testing.assert_close(batch["input_values"][i, :frames], alone, rtol=0, atol=1e-5)
        expected = (torchaudio_fbank(clip) - extractor.mean) / (2 * extractor.std)
        torch.testing.assert_close(alone, expected, rtol=0, atol=1e-4)


def test_default_output_equals_transformers_extractor(speech):
    clips = speech + noise_clips() + [np.random.default_rng(1).standard_normal(16000 * 11).astype(np.float32) * 0.05]
    ours = ASTFeatureExtractor()(clips, sampling_rate=16000, return_tensors="np")["input_values"]
    theirs = transformers.ASTFeatureExtractor()(clips, sampling_rate=16000, return_tensors="np")["input_values"]
    assert ours.shape == theirs.shape == (len(clips), 1024, 128)
    np.testing.assert_allclose(ours, theirs, rtol=0, atol=1e-4)
    # Speech Commands settings (max_length 128, other stats), constructor shared with transformers.
    settings = dict(max_length=128, mean=-6.845978, std=5.5654526)
    ours = ASTFeatureExtractor(**settings)(clips, sampling_rate=16000, return_tensors="np")["input_values"]
    theirs = transformers.ASTFeatureExtractor(**settings)(clips, sampling_rate=16000,
                                                          return_tensors="np")["input_values"]
    np.testing.assert_allclose(ours, theirs, rtol=0, atol=1e-4)


def test_padding_values_by_hand():
    extractor = ASTFeatureExtractor()
    values = extractor(np.zeros(16000, np.float32) + 0.0, sampling_rate=16000, return_tensors="pt")["input_values"]
    # Frames of padding are 0 in the log-mel domain, so (0 - mean) / (2 std) = 0.46703 for AudioSet stats.
    assert values.shape == (1, 1024, 128)
    torch.testing.assert_close(values[0, 98:], torch.full((926, 128), 0.46703), rtol=0, atol=1e-5)
    # Digital silence: every mel energy is floored at float32 eps, log(eps) = -15.9424.
    silent = (np.log(np.finfo(np.float32).eps) - extractor.mean) / (2 * extractor.std)
    torch.testing.assert_close(values[0, :98], torch.full((98, 128), float(silent)), rtol=0, atol=1e-4)


def test_call_time_length_padding_and_truncation(speech):
    extractor = ASTFeatureExtractor()
    longest = max(torchaudio_fbank(c).shape[0] for c in speech)
    out = extractor(speech, sampling_rate=16000, padding="longest", return_tensors="np")
    assert out["input_values"].shape == (4, longest, 128)
    out = extractor(speech, sampling_rate=16000, max_length=50, return_tensors="pt", return_attention_mask=True)
    assert out["input_values"].shape == (4, 50, 128)
    assert out["attention_mask"].shape == (4, 50)
    out = extractor(speech, sampling_rate=16000, max_length=50, truncation=False, padding="longest",
                    return_tensors="pt")
    assert out["input_values"].shape == (4, longest, 128)
    unpadded = extractor(speech, sampling_rate=16000, padding=False)["input_values"]
    assert [u.shape[0] for u in unpadded] == [torchaudio_fbank(c).shape[0] for c in speech]


def test_short_clip_is_one_frame_not_a_crash():
    extractor = ASTFeatureExtractor()
    out = extractor(np.full(100, 0.1, np.float32), sampling_rate=16000, padding="longest", return_tensors="pt",
                    return_attention_mask=True)
    assert out["input_values"].shape == (1, 1, 128)
    padded = np.zeros(400, np.float32)
    padded[:100] = 0.1
    expected = (torchaudio_fbank(padded) - extractor.mean) / (2 * extractor.std)
    torch.testing.assert_close(out["input_values"][0], expected, rtol=0, atol=1e-4)


def test_input_forms_agree(speech):
    extractor = ASTFeatureExtractor(max_length=64)
    clip = speech[0]
    reference = extractor(clip, sampling_rate=16000, return_tensors="np")["input_values"]
    for form in (torch.from_numpy(clip), torch.from_numpy(clip)[None], clip[:, None], clip.tolist(),
                 clip.astype(np.float64)):
        np.testing.assert_allclose(extractor(form, sampling_rate=16000, return_tensors="np")["input_values"],
                                   reference, atol=1e-6)
    pcm = (clip * 32767).astype(np.int16)
    np.testing.assert_allclose(extractor(pcm, sampling_rate=16000, return_tensors="np")["input_values"],
                               extractor(pcm.astype(np.float32) / 32768, sampling_rate=16000,
                                         return_tensors="np")["input_values"], atol=1e-6)
    np.testing.assert_allclose(extractor(torch.from_numpy(pcm), sampling_rate=16000,
                                         return_tensors="np")["input_values"],
                               extractor(pcm, sampling_rate=16000, return_tensors="np")["input_values"], atol=1e-6)
    batch = extractor(np.stack([clip[:8000], clip[:8000]]), sampling_rate=16000, return_tensors="np")
    assert batch["input_values"].shape == (2, 64, 128)


def test_subtract_waveform_mean_matches_reference_recipe(speech):
    clip = speech[1] + 0.05
    extractor = ASTFeatureExtractor(subtract_waveform_mean=True, do_normalize=False)
    ours = extractor(clip, sampling_rate=16000, padding="longest", return_tensors="pt")["input_values"][0]
    waveform = torch.from_numpy(clip)
    torch.testing.assert_close(ours, torchaudio_fbank(waveform - waveform.mean()), rtol=0, atol=1e-4)


@pytest.mark.parametrize(
    "audio, error, words",
    [
        (np.zeros(0, np.float32), ValueError, "empty"),
        (np.array([0.1, np.nan] * 300, np.float32), ValueError, "NaN"),
        (np.array([0.1, np.inf] * 300, np.float32), ValueError, "NaN or Inf"),
        (np.zeros((2, 3, 800), np.float32), ValueError, "3-D"),
        (np.zeros((16000, 2), np.float32), ValueError, "mix it down"),
        ([], ValueError, "empty list"),
        ("audio.wav", TypeError, "not supported"),
        (np.zeros(800, bool), TypeError, "dtype bool"),
        ([np.zeros(800, np.float32), np.zeros((2, 800), np.float32)], ValueError, "Clip 1"),
    ],
)
def test_bad_input_raises_clear_errors(audio, error, words):
    with pytest.raises(error, match=words):
        ASTFeatureExtractor()(audio, sampling_rate=16000)


def test_wrong_sampling_rate_says_how_to_resample():
    with pytest.raises(ValueError, match="torchaudio.functional.resample"):
        ASTFeatureExtractor()(np.zeros(800, np.float32), sampling_rate=44100)


def test_save_and_load_both_ways(tmp_path):
    ours = ASTFeatureExtractor(max_length=128, mean=-6.845978, std=5.5654526, subtract_waveform_mean=True)
    ours.save_pretrained(tmp_path / "ours")
    loaded = ASTFeatureExtractor.from_pretrained(tmp_path / "ours")
    assert (loaded.max_length, loaded.mean, loaded.std, loaded.subtract_waveform_mean) == (128, -6.845978,
                                                                                              5.5654526, True)
    transformers.ASTFeatureExtractor(max_length=512, mean=-6.6268077, std=5.358466).save_pretrained(tmp_path / "hf")
    loaded = ASTFeatureExtractor.from_pretrained(tmp_path / "hf")
    assert (loaded.max_length, loaded.mean, loaded.std) == (512, -6.6268077, 5.358466)
    theirs = transformers.ASTFeatureExtractor.from_pretrained(tmp_path / "ours")
    assert (theirs.max_length, theirs.mean) == (128, -6.845978)


def test_normalization_stats_by_hand(speech):
    mean, std = compute_normalization_stats(speech, batch_size=3)
    frames = torch.cat([torchaudio_fbank(c) for c in speech]).double()
    assert mean == pytest.approx(float(frames.mean()), abs=1e-4)
    assert std == pytest.approx(float(frames.std(unbiased=False)), abs=1e-4)
    # The authors' way counts the padding up to max_length (zeros in the log-mel domain).
    extractor = ASTFeatureExtractor(max_length=400)
    mean_padded, _ = compute_normalization_stats(speech, extractor, include_padding=True)
    assert mean_padded == pytest.approx(float(frames.sum() / (len(speech) * 400 * 128)), abs=1e-4)


def test_normalization_stats_on_a_datasets_dataset(speech):
    datasets = pytest.importorskip("datasets")
    rows = {"audio": [{"array": c, "sampling_rate": 16000} for c in speech]}
    dataset = datasets.Dataset.from_dict(rows)
    mean, std = compute_normalization_stats(dataset)
    assert (mean, std) == pytest.approx(compute_normalization_stats(speech), abs=1e-6)


def test_padding_false_stacks_clips_of_one_length_into_one_array(speech):
    extractor = ASTFeatureExtractor(max_length=512)
    same = [speech[0], speech[0][::-1].copy()]
    out = extractor(same, sampling_rate=16000, padding=False, return_tensors="np")["input_values"]
    assert isinstance(out, np.ndarray) and out.shape == (2, num_frames(len(speech[0])), 128)
    ragged = extractor(speech[:2], sampling_rate=16000, padding=False)["input_values"]  # no return_tensors
    assert isinstance(ragged, list) and [len(x) for x in ragged] == [num_frames(len(c)) for c in speech[:2]]


def test_a_max_length_that_looks_like_samples_warns_once_in_frames(speech):
    extractor = ASTFeatureExtractor(max_length=128)
    with pytest.warns(UserWarning, match=r"max_length=16000 is in frames .* uses max_length=128 frames .* 98 frames"):
        out = extractor(speech[0], sampling_rate=16000, max_length=16000, truncation=True, return_tensors="np")
    assert out["input_values"].shape[1] == 16000  # what was asked, with the warning
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # once per extractor, and never for lengths near the checkpoint's
        extractor(speech[0], sampling_rate=16000, max_length=16000, truncation=True)
        ASTFeatureExtractor(max_length=128)(speech[0], sampling_rate=16000, max_length=512, truncation=True)


def test_the_input_convention_sets_the_default_call_and_is_checked():
    clip = np.random.default_rng(0).standard_normal(8000).astype(np.float32) * 0.1  # 48 frames
    padded = ASTFeatureExtractor(max_length=128)
    assert padded.pad_to_max_length is True
    out = padded(clip, sampling_rate=16000, return_tensors="np")
    assert out["input_values"].shape == (1, 128, 128) and "attention_mask" not in out
    masked = ASTFeatureExtractor(max_length=128, pad_to_max_length=False)
    out = masked([clip, clip[:1000]], sampling_rate=16000, return_tensors="np")
    assert out["input_values"].shape == (2, 48, 128) and out["attention_mask"].sum(axis=1).tolist() == [48, 4]
    tiny = masked(clip[:1000], sampling_rate=16000, return_tensors="np")  # 4 frames: one patch of 16 at least
    assert tiny["input_values"].shape[1] == 16 and tiny["attention_mask"].sum() == 4
    # Explicit arguments win over the convention.
    assert masked(clip, sampling_rate=16000, padding="max_length", return_tensors="np")["input_values"].shape[1] == 128
    with pytest.raises(ValueError, match="pad_to_max_length=True with return_attention_mask=True"):
        ASTFeatureExtractor(pad_to_max_length=True, return_attention_mask=True)
    with pytest.raises(TypeError, match="pad_to_max_length='yes'"):
        ASTFeatureExtractor(pad_to_max_length="yes")


def test_reading_values_back_does_not_grow_with_the_number_of_clips():
    """Each value read back to the host (`.item()`, `float(tensor)`: aten._local_scalar_dense, a device sync on a
    GPU) is counted by a dispatch mode while the real kernels run: a batch of 8 clips reads as many as a batch of 2
    (the NaN/Inf and amplitude checks of every clip come back in one transfer)."""
    from torch.utils._python_dispatch import TorchDispatchMode

    class ScalarReads(TorchDispatchMode):
        def __init__(self):
            super().__init__()
            self.count = 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            self.count += func is torch.ops.aten._local_scalar_dense.default
            return func(*args, **(kwargs or {}))

    extractor = ASTFeatureExtractor(max_length=128)
    generator = torch.Generator().manual_seed(0)
    counts = {}
    for clips in (2, 8):
        audio = [torch.rand(16000, generator=generator) * 0.2 - 0.1 for _ in range(clips)]
        extractor(audio, sampling_rate=16000, return_tensors="pt")  # warm the filter bank cache
        with ScalarReads() as reads:
            extractor(audio, sampling_rate=16000, return_tensors="pt")
        counts[clips] = reads.count
    assert counts[8] == counts[2], counts
    with pytest.raises(ValueError, match="Clip 1 contains NaN"):
        extractor([torch.zeros(400), torch.full((400,), float("nan"))], sampling_rate=16000)
