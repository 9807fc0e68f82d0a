"""Feature extractor of the Audio Spectrogram Transformer (Gong, Chung, Glass, Interspeech 2021).

A batched torch implementation of the Kaldi log-mel filterbank that every AST checkpoint was trained on
(`torchaudio.compliance.kaldi.fbank(w, htk_compat=True, sample_frequency=16000, use_energy=False,
window_type="hanning", num_mel_bins=128, dither=0.0, frame_shift=10)`): the whole batch is framed, transformed
and mel-projected in one pass, on CPU or on a GPU. Padding, truncation and normalisation follow transformers'
`ASTFeatureExtractor`, whose constructor arguments and saved config this class shares.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from transformers.feature_extraction_sequence_utils import SequenceFeatureExtractor
from transformers.feature_extraction_utils import BatchFeature

# Kaldi framing at 16 kHz: 25 ms windows every 10 ms, FFT size = next power of two of the window.
FRAME_LENGTH = 400
FRAME_SHIFT = 160
FFT_SIZE = 512
PREEMPHASIS = 0.97
LOW_FREQUENCY = 20.0
# Kaldi floors the mel energies at float32 epsilon before the log.
LOG_FLOOR = float(torch.finfo(torch.float32).eps)

# Integer PCM is scaled to [-1, 1) by these full-scale values.
_PCM_FULL_SCALE = {np.dtype(np.int16): 2.0**15, np.dtype(np.int32): 2.0**31, np.dtype(np.int8): 2.0**7}


def kaldi_mel_banks(num_mel_bins: int, sampling_rate: int, fft_size: int = FFT_SIZE,
                    low_frequency: float = LOW_FREQUENCY) -> torch.Tensor:
    """Kaldi's triangular mel filters as a (fft_size // 2 + 1, num_mel_bins) float32 matrix.

    Mel scale 1127 * ln(1 + f / 700); the filters are triangles in the mel domain between num_mel_bins + 2 equally
    spaced mel points from `low_frequency` to Nyquist, evaluated at the FFT bin frequencies k * sr / fft_size;
    the Nyquist bin gets no weight. Computed in float32 in Kaldi's order so that the filterbank matches
    `torchaudio.compliance.kaldi.fbank` bit for bit.
    """
    nyquist = sampling_rate / 2.0
    if not 0.0 <= low_frequency < nyquist:
        raise ValueError(
            f"low_frequency={low_frequency} Hz must lie in [0, {nyquist}) at sampling_rate={sampling_rate}."
        )

    def mel(frequency: float) -> float:
        return 1127.0 * math.log(1.0 + frequency / 700.0)

    mel_low = mel(low_frequency)
    delta = (mel(nyquist) - mel_low) / (num_mel_bins + 1)
    index = torch.arange(num_mel_bins).unsqueeze(1)  # (M, 1)
    left = mel_low + index * delta
    centre = mel_low + (index + 1.0) * delta
    right = mel_low + (index + 2.0) * delta
    bin_hz = (sampling_rate / fft_size) * torch.arange(fft_size // 2, dtype=torch.float32)
    bin_mel = 1127.0 * (1.0 + bin_hz / 700.0).log()
    bin_mel = bin_mel.unsqueeze(0)  # (1, K)
    up = (bin_mel - left) / (centre - left)  # (M, K)
    down = (right - bin_mel) / (right - centre)
    weights = torch.clamp(torch.minimum(up, down), min=0.0)
    weights = torch.nn.functional.pad(weights, (0, 1))  # (M, K + 1): Nyquist bin
    return weights.T.contiguous()  # (K + 1, M)


def hann_window(length: int = FRAME_LENGTH) -> torch.Tensor:
    """Kaldi's "hanning" window: the symmetric Hann window 0.5 - 0.5 cos(2 pi n / (N - 1))."""
    return torch.hann_window(length, periodic=False, dtype=torch.float32)


def num_frames(num_samples: int) -> int:
    """Frames of a clip with Kaldi's snip_edges=True; clips shorter than one window give one (zero-padded) frame."""
    return 1 + max(num_samples - FRAME_LENGTH, 0) // FRAME_SHIFT


def batched_kaldi_fbank(waveforms: torch.Tensor, mel_banks: torch.Tensor, window: torch.Tensor,
                        block_frames: int = 2048, out: torch.Tensor | None = None) -> torch.Tensor:
    """Log-mel filterbank of a padded batch of waveforms, (B, N) -> (B, num_frames(N), M).

    Same maths and float32 operation order as `torchaudio.compliance.kaldi.fbank` with dither 0, no energy and a
    power spectrum: per frame remove the DC offset, pre-emphasise (x[i] - 0.97 x[i-1], x[-1] := x[0]), window,
    zero-pad to 512, |rfft|^2, mel projection, log with a floor of float32 eps. The frames of the whole batch
    are processed in blocks of about `block_frames` rows so that the temporaries stay in cache. `out`, if given,
    is a (B, T', M) tensor with T' >= frames whose first frames receive the result.
    """
    if waveforms.shape[-1] < FRAME_LENGTH:
        waveforms = torch.nn.functional.pad(waveforms, (0, FRAME_LENGTH - waveforms.shape[-1]))
    frames = waveforms.unfold(-1, FRAME_LENGTH, FRAME_SHIFT)  # (B, T, 400), a strided view
    batch, time = frames.shape[:2]
    if out is None:
        out = torch.empty(batch, time, mel_banks.shape[1], dtype=torch.float32, device=waveforms.device)
    if waveforms.device.type != "cpu":
        block_frames = max(block_frames, batch * time)  # one block: a GPU wants big kernels
    clips_per_block = max(1, block_frames // time)
    frames_per_block = min(time, block_frames)
    padded = torch.zeros(clips_per_block * frames_per_block, FFT_SIZE, device=waveforms.device)  # tail stays 0
    copied = torch.empty(clips_per_block * frames_per_block, FRAME_LENGTH, device=waveforms.device)
    for b0 in range(0, batch, clips_per_block):
        b1 = min(batch, b0 + clips_per_block)
        for t0 in range(0, time, frames_per_block):
            t1 = min(time, t0 + frames_per_block)
            block = frames[b0:b1, t0:t1]
            # Copy into a private buffer: the frames overlap in memory, so they cannot be changed in place.
            block = copied[: block.shape[0] * block.shape[1]].view(block.shape).copy_(block).view(-1, FRAME_LENGTH)
            block -= block.mean(dim=-1, keepdim=True)  # (R, 400)
            rows = padded[: block.shape[0]]
            emphasised = rows[:, :FRAME_LENGTH]
            torch.mul(block[:, :-1], -PREEMPHASIS, out=emphasised[:, 1:])
            emphasised[:, 1:] += block[:, 1:]
            emphasised[:, :1] = block[:, :1] - PREEMPHASIS * block[:, :1]
            emphasised *= window
            spectrum = torch.view_as_real(torch.fft.rfft(rows))  # (R, 257, 2)
            power = torch.addcmul(spectrum[..., 0].square(), spectrum[..., 1], spectrum[..., 1])  # |X|^2
            mel_energies = torch.mm(power, mel_banks).view(b1 - b0, t1 - t0, -1)  # (b, t, M)
            torch.log(mel_energies.clamp_(min=LOG_FLOOR), out=out[b0:b1, t0:t1])
    return out[:, :time]


class ASTFeatureExtractor(SequenceFeatureExtractor):
    r"""
    Turns raw 16 kHz mono audio into the normalised log-mel spectrograms an AST expects, `(batch, frames, mel)`.

    Accepts what transformers' `ASTFeatureExtractor` accepts (same constructor, same saved config, same output
    with the default call) and more: torch tensors, clips of different lengths in one batch processed in a single
    vectorised pass, `padding="longest"` with an `attention_mask`, call-time `max_length` / `truncation`,
    integer PCM, and a `device` to compute on a GPU.

    feature_size (int, defaults to 1): one value per audio sample.
    sampling_rate (int, defaults to 16000): the rate every AST checkpoint was trained at.
    num_mel_bins (int, defaults to 128): mel filters of the fbank.
    max_length (int, defaults to 1024): frames to pad or cut to (1024 for AudioSet, 512 for ESC-50, 128 for
        Speech Commands).
    padding_value (float, defaults to 0.0): value of padded frames in the log-mel domain, before normalisation.
    do_normalize (bool, defaults to True): apply `(fbank - mean) / (2 * std)`.
    mean (float, defaults to -4.2677393), std (float, defaults to 4.5689974): data-set statistics of the fbank
        (AudioSet by default; see `ast_hf.compute_normalization_stats`).
    return_attention_mask (bool, defaults to False): also return the (batch, frames) mask of real frames.
    subtract_waveform_mean (bool, defaults to False): subtract each clip's mean before the fbank, as the authors'
        training code does; transformers' extractor (and so the default) does not.
    """

    model_input_names = ["input_values", "attention_mask"]

    def __init__(
        self,
        feature_size: int = 1,
        sampling_rate: int = 16000,
        num_mel_bins: int = 128,
        max_length: int = 1024,
        padding_value: float = 0.0,
        do_normalize: bool = True,
        mean: float = -4.2677393,
        std: float = 4.5689974,
        return_attention_mask: bool = False,
        subtract_waveform_mean: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(feature_size=feature_size, sampling_rate=sampling_rate, padding_value=padding_value, **kwargs)
        if sampling_rate != 16000:
            raise ValueError(
                f"sampling_rate={sampling_rate}: the Kaldi framing here is 400/160 samples (25/10 ms at 16 kHz). "
                "Keep sampling_rate=16000 and resample the audio to 16 kHz instead."
            )
        if std <= 0:
            raise ValueError(f"std={std} must be positive; compute it with ast_hf.compute_normalization_stats.")
        self.num_mel_bins = num_mel_bins
        self.max_length = max_length
        self.do_normalize = do_normalize
        self.mean = mean
        self.std = std
        self.return_attention_mask = return_attention_mask
        self.subtract_waveform_mean = subtract_waveform_mean
        self._constants: dict[torch.device, tuple[torch.Tensor, torch.Tensor]] = {}

    def to_dict(self) -> dict[str, Any]:
        output = super().to_dict()
        output.pop("_constants", None)
        # "ASTFeatureExtractor" as feature_extractor_type would make AutoFeatureExtractor pick transformers' class of
        # the same name. Without it, AutoFeatureExtractor goes through the model config (model_type "ast_hf").
        output.pop("feature_extractor_type", None)
        return output

    def _mel_and_window(self, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        if device not in self._constants:
            mel = kaldi_mel_banks(self.num_mel_bins, self.sampling_rate).to(device)
            self._constants[device] = (mel, hann_window().to(device))
        return self._constants[device]

    def __call__(
        self,
        raw_speech: np.ndarray | torch.Tensor | Sequence[float] | Sequence[np.ndarray | torch.Tensor],
        sampling_rate: int | None = None,
        return_tensors: str | None = None,
        padding: bool | str = "max_length",
        max_length: int | None = None,
        truncation: bool = True,
        return_attention_mask: bool | None = None,
        device: str | torch.device | None = None,
        **kwargs: Any,
    ) -> BatchFeature:
        """
        Featurise one clip or a batch of clips.

        raw_speech: a 1-D array/tensor/list (one clip), a 2-D array/tensor (batch, samples), or a list of 1-D
            clips of any lengths. Float audio in [-1, 1]; int8/int16/int32 PCM is divided by its full scale.
        sampling_rate: rate of `raw_speech`; a rate other than `self.sampling_rate` raises a ValueError.
        return_tensors: "pt", "np" or None (a list of numpy arrays, one per clip).
        padding: "max_length" (default: every clip to `max_length` frames), "longest"/True (to the longest clip
            in the batch, at most `max_length` when truncating) or False/"do_not_pad" (each clip keeps its frames).
        max_length: frames, overriding `self.max_length` for this call.
        truncation: cut clips longer than `max_length` frames (default True).
        return_attention_mask: return the (batch, frames) int mask of real (not padded) frames.
        device: where to compute ("cpu", "cuda", ...); with return_tensors="pt" the tensors stay there.
        """
        if sampling_rate is not None and sampling_rate != self.sampling_rate:
            raise ValueError(
                f"The audio is sampled at {sampling_rate} Hz but this feature extractor expects "
                f"{self.sampling_rate} Hz. Resample it first, e.g. "
                f"torchaudio.functional.resample(waveform, {sampling_rate}, {self.sampling_rate}), or cast a "
                f"datasets column with Audio(sampling_rate={self.sampling_rate})."
            )
        if kwargs:
            raise TypeError(f"Unexpected argument(s) {sorted(kwargs)} to {type(self).__name__}.__call__.")
        max_length = self.max_length if max_length is None else int(max_length)
        if max_length < 1:
            raise ValueError(f"max_length={max_length} must be at least 1 frame.")
        if return_attention_mask is None:
            return_attention_mask = self.return_attention_mask
        padding = _padding_strategy(padding)
        if return_tensors not in (None, "pt", "np"):
            raise ValueError(f"return_tensors={return_tensors!r} is not supported; use 'pt', 'np' or None.")
        device = torch.device(device) if device is not None else torch.device("cpu")

        clips = _as_clip_list(raw_speech)
        lengths = [num_frames(clip.shape[0]) for clip in clips]
        kept = [min(n, max_length) if truncation else n for n in lengths]  # real frames in the output
        if padding == "max_length":
            width = max(max_length, max(kept))
        elif padding == "longest":
            width = max(kept)
        else:
            width = None
            if return_tensors is not None and len(set(kept)) > 1:
                raise ValueError(
                    f"padding=False with return_tensors={return_tensors!r} needs clips of equal length, got "
                    f"{sorted(set(kept))} frames. Use padding='longest' (with return_attention_mask=True) instead."
                )

        frames = max(kept)
        fbank = torch.empty(len(clips), max(width or 0, frames), self.num_mel_bins, device=device)  # (B, T, M)
        self._fbank(clips, fbank[:, :frames])
        for i, n in enumerate(kept):
            fbank[i, n:] = self.padding_value  # padding in the log-mel domain, before normalisation
        if self.do_normalize:
            fbank.sub_(self.mean).div_(2 * self.std)
        real = torch.arange(fbank.shape[1], device=device)[None, :] < torch.tensor(kept, device=device)[:, None]
        if width is None:
            values: Any = [fbank[i, : kept[i]] for i in range(len(clips))]
            mask: Any = [real[i, : kept[i]].to(torch.int32) for i in range(len(clips))]
        else:
            values, mask = fbank, real.to(torch.int32)
        if return_tensors != "pt":
            values = [v.cpu().numpy() for v in values] if isinstance(values, list) else values.cpu().numpy()
            mask = [m.cpu().numpy() for m in mask] if isinstance(mask, list) else mask.cpu().numpy()
            if return_tensors is None and not isinstance(values, list):
                values, mask = list(values), list(mask)
        data = {"input_values": values}
        if return_attention_mask:
            data["attention_mask"] = mask
        return BatchFeature(data, tensor_type=None)

    def _fbank(self, clips: list[torch.Tensor], out: torch.Tensor) -> None:
        """Unnormalised log-mel of the first out.shape[1] frames of every clip into `out` (B, frames, M); frames
        past a clip's end hold values for the caller to replace."""
        device = out.device
        needed = FRAME_LENGTH + (out.shape[1] - 1) * FRAME_SHIFT  # samples that the kept frames touch
        batch = torch.zeros(len(clips), needed, dtype=torch.float32, device=device)
        for i, clip in enumerate(clips):
            if self.subtract_waveform_mean:
                clip = clip - clip.mean()  # over the whole clip, as the authors' code does
            clip = clip[:needed].to(device=device, dtype=torch.float32)
            batch[i, : clip.shape[0]] = clip
        mel, window = self._mel_and_window(device)
        batched_kaldi_fbank(batch, mel, window, out=out)


def _padding_strategy(padding: bool | str) -> str:
    if padding is True or padding == "longest":
        return "longest"
    if padding == "max_length":
        return "max_length"
    if padding is False or padding in ("do_not_pad", None):
        return "do_not_pad"
    raise ValueError(f"padding={padding!r} is not one of 'max_length', 'longest' (True) or 'do_not_pad' (False).")


def _as_clip_list(raw_speech: Any) -> list[torch.Tensor]:
    """Validate the input and return a list of 1-D float32 CPU (or device) tensors, one per clip."""
    if isinstance(raw_speech, (np.ndarray, torch.Tensor)):
        if raw_speech.ndim == 1:
            items = [raw_speech]
        elif raw_speech.ndim == 2:
            rows, columns = raw_speech.shape
            if columns == 1:
                return [_as_clip(raw_speech[:, 0], 0)]  # (N, 1): one mono clip
            if 1 < columns <= 8 and rows > columns:
                raise ValueError(
                    f"Got a 2-D array of shape {tuple(raw_speech.shape)}, which looks like multi-channel audio laid "
                    "out (samples, channels). AST takes mono audio: mix it down first (e.g. audio.mean(axis=1)). "
                    "A 2-D input is read as (batch, samples)."
                )
            items = list(raw_speech)
        else:
            raise ValueError(
                f"Got a {raw_speech.ndim}-D array of shape {tuple(raw_speech.shape)}; expected one mono clip "
                "(samples,) or a batch (batch, samples). Mix channels down to mono and pass a list of clips."
            )
    elif isinstance(raw_speech, (list, tuple)):
        if len(raw_speech) == 0:
            raise ValueError("Got an empty list of audio; pass at least one clip.")
        if all(isinstance(x, (int, float, np.number)) and not isinstance(x, bool) for x in raw_speech):
            items = [np.asarray(raw_speech, dtype=np.float32)]
        else:
            items = list(raw_speech)
    else:
        raise TypeError(
            f"Audio of type {type(raw_speech).__name__} is not supported; pass a numpy array, a torch tensor, a "
            "list of floats or a list of clips."
        )
    return [_as_clip(item, index) for index, item in enumerate(items)]


def _as_clip(item: Any, index: int) -> torch.Tensor:
    if isinstance(item, (list, tuple)):
        item = np.asarray(item)
    if isinstance(item, torch.Tensor) and not item.is_floating_point():
        item = item.detach().cpu().numpy()  # integer PCM: scaled by the numpy branch below
    if isinstance(item, np.ndarray):
        if item.dtype in _PCM_FULL_SCALE:
            item = item.astype(np.float32) / np.float32(_PCM_FULL_SCALE[item.dtype])
        elif item.dtype == np.uint8:
            item = (item.astype(np.float32) - 128.0) / 128.0  # 8-bit WAV is unsigned, centred on 128
        elif not np.issubdtype(item.dtype, np.floating):
            raise TypeError(
                f"Clip {index} has dtype {item.dtype}; pass float audio in [-1, 1] or int8/int16/int32 PCM."
            )
        item = np.ascontiguousarray(item, dtype=np.float32)
        item = torch.from_numpy(item if item.flags.writeable else item.copy())
    elif isinstance(item, torch.Tensor):
        item = item.detach().to(torch.float32)
    else:
        raise TypeError(f"Clip {index} is a {type(item).__name__}; pass numpy arrays, torch tensors or lists.")
    if item.ndim == 2 and 1 in item.shape:
        item = item.reshape(-1)  # (1, N) or (N, 1): one mono clip
    if item.ndim != 1:
        raise ValueError(
            f"Clip {index} has shape {tuple(item.shape)}; each clip must be mono, shape (samples,). Mix channels "
            "down to mono first (e.g. audio.mean(axis=0))."
        )
    if item.shape[0] == 0:
        raise ValueError(f"Clip {index} is empty (0 samples); drop it or pass at least one sample.")
    # One reduction first: the sum is finite iff every sample is (audio cannot overflow float32).
    if not bool(torch.isfinite(item.sum())) and not bool(torch.isfinite(item).all()):
        raise ValueError(
            f"Clip {index} contains NaN or Inf samples; clean the audio first (e.g. np.nan_to_num) or drop it."
        )
    return item


__all__ = ["ASTFeatureExtractor", "batched_kaldi_fbank", "kaldi_mel_banks", "hann_window", "num_frames"]
