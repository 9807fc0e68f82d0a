"""Feature extractor of the Audio Spectrogram Transformer (Gong, Chung, Glass, Interspeech 2021).

A batched torch implementation of the Kaldi log-mel filterbank that every AST checkpoint was trained on
(`torchaudio.compliance.kaldi.fbank(w, htk_compat=True, sample_frequency=16000, use_energy=False,
window_type="hanning", num_mel_bins=128, dither=0.0, frame_shift=10)`; the other Kaldi windows are an option):
the whole batch is framed, transformed and mel-projected in one pass, on CPU or on a GPU. Padding, truncation and
normalisation follow transformers' `ASTFeatureExtractor`, whose constructor arguments and saved config this class
shares.
"""

from __future__ import annotations

import inspect
import math
import numbers
import warnings
from collections.abc import Iterator, Sequence
from typing import Any, NamedTuple

import numpy as np
import torch
from transformers.feature_extraction_sequence_utils import SequenceFeatureExtractor
from transformers.feature_extraction_utils import BatchFeature
from transformers.utils import logging

from .presets import DATASETS

logger = logging.get_logger(__name__)

# Kaldi framing at 16 kHz: 25 ms windows every 10 ms, FFT size = next power of two of the window.
FRAME_LENGTH = 400
FRAME_SHIFT = 160
FFT_SIZE = 512
PREEMPHASIS = 0.97
LOW_FREQUENCY = 20.0
# Kaldi floors the mel energies at float32 epsilon before the log.
LOG_FLOOR = float(torch.finfo(torch.float32).eps)

# One banded block of the mel projection: (first mel, last mel + 1, first row, last row + 1, weights).
MelBlock = tuple[int, int, int, int, torch.Tensor]
# Frames processed together on CPU: the block's temporaries stay in cache (512 and 4096 measured slower).
CPU_BLOCK_FRAMES = 1024

# Largest sample magnitude accepted. A frame's samples reach at most 2 (waveform mean) x 2 (frame DC removal) x 1.97
# (pre-emphasis) = 7.88 times the peak, and by Parseval a power bin or mel energy is at most FFT_SIZE x FRAME_LENGTH x
# that squared: float32 cannot overflow below sqrt(3.4e38 / (512 * 400)) / 7.88 = 5.2e15. Real audio is in [-1, 1];
# past this bound the power spectrum would become Inf and the features NaN, so such clips are refused.
MAX_AMPLITUDE = 1e15
# A 2-D input of at most this many columns and more rows than columns is taken for (samples, channels) audio and
# refused: audio files carry at most 8 channels (7.1 surround), while a batch of clips has more samples than clips.
MAX_AUDIO_CHANNELS = 8
# Frames per second of the Kaldi framing (10 ms shift), for messages in seconds.
FRAMES_PER_SECOND = 100
# The shortest default output of a checkpoint that runs clips at their own length: one 16-frame patch, the patch
# size of every AST (a shorter spectrogram has no patch to embed).
MIN_DEFAULT_FRAMES = 16
# A call-time max_length more than this many times the extractor's own is most likely a number of samples given
# where frames are meant (transformers' tutorials pass max_length=16000 to waveform extractors): it warns once.
SUSPICIOUS_MAX_LENGTH_RATIO = 4

# Kaldi's analysis windows (torchaudio.compliance.kaldi.fbank's window_type); every AST checkpoint used "hanning".
WINDOW_TYPES = ("hanning", "hamming", "povey", "rectangular", "blackman")
# Kaldi's default blackman_coeff: 0.42 - 0.5 cos + 0.08 cos(2x), the classic Blackman window.
BLACKMAN_COEFF = 0.42
# Other libraries' names of the same windows (numpy, scipy, torch, transformers), for the error message only.
_WINDOW_ALIASES = {"hann": "hanning", "hann_window": "hanning", "hamming_window": "hamming", "boxcar": "rectangular",
                   "rect": "rectangular", "ones": "rectangular", "blackman_window": "blackman"}

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


def kaldi_window(window_type: str = "hanning", length: int = FRAME_LENGTH) -> torch.Tensor:
    """Kaldi's analysis window `window_type` of `length` samples, float32, with n = 0 .. N - 1 and N = `length`.

    Computed as `torchaudio.compliance.kaldi.fbank` computes it (`_feature_window_function`), so that the features
    match `fbank(..., window_type=window_type)`:
    "hanning": 0.5 - 0.5 cos(2 pi n / (N - 1)), the symmetric Hann window;
    "hamming": 0.54 - 0.46 cos(2 pi n / (N - 1));
    "povey": the hanning window to the power 0.85 (Kaldi's own default);
    "rectangular": ones;
    "blackman": 0.42 - 0.5 cos(2 pi n / (N - 1)) + 0.08 cos(4 pi n / (N - 1)) (Kaldi's blackman_coeff 0.42).
    """
    _check_window_type(window_type)
    if window_type == "hanning":
        return torch.hann_window(length, periodic=False, dtype=torch.float32)
    if window_type == "hamming":
        return torch.hamming_window(length, periodic=False, alpha=0.54, beta=0.46, dtype=torch.float32)
    if window_type == "povey":
        return torch.hann_window(length, periodic=False, dtype=torch.float32).pow(0.85)
    if window_type == "rectangular":
        return torch.ones(length, dtype=torch.float32)
    a = 2 * math.pi / (length - 1)
    n = torch.arange(length, dtype=torch.float32)
    return BLACKMAN_COEFF - 0.5 * torch.cos(a * n) + (0.5 - BLACKMAN_COEFF) * torch.cos(2 * a * n)


def hann_window(length: int = FRAME_LENGTH) -> torch.Tensor:
    """Kaldi's "hanning" window, the one every released AST checkpoint used: `kaldi_window("hanning", length)`."""
    return kaldi_window("hanning", length)


def _check_window_type(window_type: Any) -> str:
    """`window_type` if it is one of `WINDOW_TYPES`; a TypeError/ValueError naming it and the choices otherwise."""
    choices = ", ".join(repr(name) for name in WINDOW_TYPES)
    if not isinstance(window_type, str):
        raise TypeError(f"window_type={window_type!r} is a {type(window_type).__name__}; pass one of {choices}.")
    if window_type not in WINDOW_TYPES:
        alias = _WINDOW_ALIASES.get(window_type.lower(), window_type.lower())
        hint = f" (Kaldi calls it {alias!r})" if alias in WINDOW_TYPES else ""
        raise ValueError(
            f"window_type={window_type!r} is not one of Kaldi's windows {choices}{hint}. Pretrained AST checkpoints "
            "all use 'hanning'."
        )
    return window_type


def num_frames(num_samples: int) -> int:
    """Frames of a clip with Kaldi's snip_edges=True; clips shorter than one window give one (zero-padded) frame."""
    return 1 + max(num_samples - FRAME_LENGTH, 0) // FRAME_SHIFT


def mel_band_groups(mel_banks: torch.Tensor, num_groups: int = 8) -> list[MelBlock]:
    """Split a (K, M) filterbank into `num_groups` blocks of mel columns, each with the FFT bins its filters touch.

    Every triangle is non-zero on a handful of neighbouring bins, so a block of neighbouring filters needs only a
    slice of the spectrum: with 128 filters over 257 bins, 8 blocks multiply 8x fewer weights than the dense matrix
    and skip only exact zeros. Each block is (m0, m1, r0, r1, weights) with mel columns [m0, m1), rows [r0, r1) of
    the interleaved (re^2, im^2) spectrum (bin k at rows 2k and 2k + 1) and weights of shape (r1 - r0, m1 - m0):
    filter row k repeated twice, so that (re^2, im^2) @ weights = |X|^2 @ mel_banks without a separate sum.
    """
    nonzero = mel_banks != 0  # (K, M)
    bounds = torch.linspace(0, mel_banks.shape[1], num_groups + 1).round().long().tolist()
    groups = []
    for m0, m1 in zip(bounds[:-1], bounds[1:], strict=True):
        if m1 == m0:
            continue
        bins = nonzero[:, m0:m1].any(dim=1).nonzero().flatten()
        k0, k1 = (int(bins.min()), int(bins.max()) + 1) if len(bins) else (0, 1)
        weights = mel_banks[k0:k1, m0:m1].repeat_interleave(2, dim=0).contiguous()  # (2 (k1 - k0), m1 - m0)
        groups.append((m0, m1, 2 * k0, 2 * k1, weights))
    return groups


def project_mel(squares: torch.Tensor, groups: list[MelBlock], out: torch.Tensor) -> torch.Tensor:
    """Mel energies of interleaved (re^2, im^2) spectra, (R, 2 * 257) -> `out` (R, M), block by block."""
    for m0, m1, r0, r1, weights in groups:
        torch.mm(squares[:, r0:r1], weights, out=out[:, m0:m1])  # (R, m1 - m0)
    return out


class _Piece(NamedTuple):
    """Frames [first, stop) of clip number `clip`, at rows [row, row + stop - first) of a block."""

    clip: int
    first: int
    stop: int
    row: int


class _BlockBuffers(NamedTuple):
    """Work memory of one block of frames, reused by every block.

    The frames of a clip overlap in memory (a strided view), so each block is copied here before it is changed in
    place; the three buffers hold the block after DC removal, after pre-emphasis and window, and after the mel
    projection.
    """

    centred: torch.Tensor  # (R, 401): column 0 repeats column 1, as Kaldi's pre-emphasis takes x[-1] := x[0]
    padded: torch.Tensor  # (R, 512): the windowed frame in columns 0..399; columns 400..511 stay 0
    energies: torch.Tensor  # (R, M)


def batched_kaldi_fbank(
    waveforms: torch.Tensor | Sequence[torch.Tensor],
    mel_banks: torch.Tensor,
    window: torch.Tensor,
    block_frames: int = CPU_BLOCK_FRAMES,
    out: torch.Tensor | None = None,
    normalize: tuple[float, float] | None = None,
) -> torch.Tensor:
    """Log-mel filterbank of a batch of waveforms, (B, N) or B clips of any lengths -> (B, frames, M).

    Same maths and float32 operation order as `torchaudio.compliance.kaldi.fbank` with dither 0, no energy and a
    power spectrum: per frame remove the DC offset, pre-emphasise (x[i] - 0.97 x[i-1], x[-1] := x[0]), window,
    zero-pad to 512, |rfft|^2, mel projection, log with a floor of float32 eps. The frames of all clips are
    processed together in blocks of `block_frames` rows (one block on a GPU) so that the temporaries stay in
    cache; the mel projection uses the banded blocks of `mel_band_groups`.

    mel_banks: the (257, M) filterbank of `kaldi_mel_banks`, on the device of `window`.
    window: the (400,) analysis window, e.g. `kaldi_window("hanning")`; the computation runs on its device.
    out: a (B, T, M) tensor; clip b fills out[b, :min(T, frames_b)] and the rest is left untouched. Without it,
        the result has max(frames_b) frames and rows past a shorter clip's end are zero.
    normalize: (mean, std) to apply `(log_mel - mean) / (2 std)` while the block is in cache.
    """
    if not isinstance(mel_banks, torch.Tensor):
        raise TypeError(
            f"mel_banks is a {type(mel_banks).__name__}; pass the (257, num_mel_bins) matrix of kaldi_mel_banks."
        )
    clips = list(waveforms.unbind(0)) if isinstance(waveforms, torch.Tensor) and waveforms.ndim == 2 else waveforms
    return _banded_kaldi_fbank(clips, mel_band_groups(mel_banks), window, block_frames, out, normalize)


def _banded_kaldi_fbank(
    clips: Sequence[torch.Tensor],
    mel_blocks: list[MelBlock],
    window: torch.Tensor,
    block_frames: int = CPU_BLOCK_FRAMES,
    out: torch.Tensor | None = None,
    normalize: tuple[float, float] | None = None,
) -> torch.Tensor:
    """`batched_kaldi_fbank` with the filterbank already split by `mel_band_groups` (the extractor keeps them)."""
    device = window.device
    frames = _get_strided(clips)
    if out is None:
        out = torch.zeros(len(frames), max(f.shape[0] for f in frames), mel_blocks[-1][1], device=device)
    frames = [f[: out.shape[1]] for f in frames]
    counts = [f.shape[0] for f in frames]
    block = _allocate_block(_block_rows(block_frames, sum(counts), device), mel_blocks[-1][1], device)
    for pieces, rows in _plan_blocks(counts, block.centred.shape[0]):
        log_mel = _block_log_mel(frames, pieces, rows, block, mel_blocks, window)  # (R, M)
        _write_frames(log_mel, pieces, out, normalize)
    return out


def _block_log_mel(
    frames: list[torch.Tensor],
    pieces: list[_Piece],
    rows: int,
    block: _BlockBuffers,
    mel_blocks: list[MelBlock],
    window: torch.Tensor,
) -> torch.Tensor:
    """Log-mel of one block of frames, (R, M) in `block.energies`.

    A function of its own so that the block's spectrum is freed on return: the next block's rfft then reuses its
    memory while it is warm (kept alive across blocks, it made the fbank 5% to 45% slower in A/B runs here).
    """
    centred = _remove_dc_offset(frames, pieces, block.centred[:rows])  # (R, 401)
    padded = _preemphasize_and_window(centred, block.padded[:rows], window)  # (R, 512)
    squares = _power_spectrum(padded)  # (R, 257 * 2)
    return _log_mel(squares, mel_blocks, block.energies[:rows])  # (R, M)


def _get_strided(clips: Sequence[torch.Tensor]) -> list[torch.Tensor]:
    """Kaldi's framing with snip_edges=True: each clip as a (frames, 400) strided view of windows every 160 samples.

    A clip shorter than one window is zero-padded to one frame.
    """
    frames = []
    for clip in clips:
        if clip.shape[-1] < FRAME_LENGTH:
            clip = torch.nn.functional.pad(clip, (0, FRAME_LENGTH - clip.shape[-1]))
        frames.append(clip.unfold(-1, FRAME_LENGTH, FRAME_SHIFT))  # (t_b, 400)
    return frames


def _block_rows(block_frames: int, total: int, device: torch.device) -> int:
    """Rows of a block: `block_frames` on CPU, every frame at once on a GPU (which wants big kernels)."""
    if device.type != "cpu":
        block_frames = total
    return max(1, min(block_frames, total))


def _allocate_block(rows: int, num_mel: int, device: torch.device) -> _BlockBuffers:
    centred = torch.empty(rows, FRAME_LENGTH + 1, device=device)
    padded = torch.zeros(rows, FFT_SIZE, device=device)
    energies = torch.empty(rows, num_mel, device=device)
    return _BlockBuffers(centred, padded, energies)


def _plan_blocks(counts: list[int], block_frames: int) -> Iterator[tuple[list[_Piece], int]]:
    """The frames of all clips in order, cut into blocks of `block_frames` rows (the last block may be shorter).

    A clip may straddle two or more blocks. Yields each block's pieces and its number of rows.
    """
    pieces: list[_Piece] = []
    rows = 0
    for clip, count in enumerate(counts):
        first = 0
        while first < count:
            stop = min(count, first + block_frames - rows)
            pieces.append(_Piece(clip, first, stop, rows))
            rows += stop - first
            first = stop
            if rows == block_frames:
                yield pieces, rows
                pieces, rows = [], 0
    if rows:
        yield pieces, rows


def _remove_dc_offset(frames: list[torch.Tensor], pieces: list[_Piece], centred: torch.Tensor) -> torch.Tensor:
    """Copies the block's frames into centred[:, 1:], each minus its own mean; returns `centred` (R, 401)."""
    for clip, first, stop, row in pieces:
        source = frames[clip][first:stop]  # (t, 400)
        torch.sub(source, source.mean(dim=-1, keepdim=True), out=centred[row : row + stop - first, 1:])
    return centred


def _preemphasize_and_window(centred: torch.Tensor, padded: torch.Tensor, window: torch.Tensor) -> torch.Tensor:
    """(x[i] - 0.97 x[i-1]) * window[i] with x[-1] := x[0], into padded[:, :400]; returns `padded` (R, 512)."""
    centred[:, 0] = centred[:, 1]
    emphasised = padded[:, :FRAME_LENGTH]  # (R, 400)
    torch.mul(centred[:, :-1], -PREEMPHASIS, out=emphasised)
    emphasised += centred[:, 1:]
    emphasised *= window
    return padded


def _power_spectrum(padded: torch.Tensor) -> torch.Tensor:
    """|rfft|^2 of each row as interleaved (re^2, im^2), (R, 512) -> (R, 257 * 2); the mel weights add the pairs."""
    return torch.view_as_real(torch.fft.rfft(padded)).square_().view(padded.shape[0], -1)


def _log_mel(squares: torch.Tensor, mel_blocks: list[MelBlock], energies: torch.Tensor) -> torch.Tensor:
    """log(max(mel energy, float32 eps)), computed in `energies` (R, M) and returned."""
    log_mel = project_mel(squares, mel_blocks, energies)
    return torch.log(log_mel.clamp_(min=LOG_FLOOR), out=log_mel)


def _write_frames(
    log_mel: torch.Tensor, pieces: list[_Piece], out: torch.Tensor, normalize: tuple[float, float] | None
) -> None:
    """Each piece's rows to its clip's frames in `out`, as `(log_mel - mean) / (2 std)` when `normalize` is given."""
    if normalize is None:
        for clip, first, stop, row in pieces:
            out[clip, first:stop] = log_mel[row : row + stop - first]
        return
    mean, std = normalize
    scale, shift = 1 / (2 * std), -mean / (2 * std)
    for clip, first, stop, row in pieces:
        torch.add(shift, log_mel[row : row + stop - first], alpha=scale, out=out[clip, first:stop])


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
        (AudioSet's, from `ast_hf.presets`; see `ast_hf.compute_normalization_stats` for a new data set).
    return_attention_mask (bool, defaults to False): also return the (batch, frames) mask of real frames.
    subtract_waveform_mean (bool, defaults to False): subtract each clip's mean before the fbank, as the authors'
        training code does; transformers' extractor (and so the default) does not.
    pad_to_max_length (bool, defaults to `not return_attention_mask`): how the checkpoint was trained, and so how
        every entry point feeds it by default. True: every clip was padded to `max_length` frames and the model saw
        the padding (the paper's recipes and every released AST): the default call pads to `max_length` and returns
        no mask, so a short clip gets exactly the input it would have had in training. False: clips ran at their own
        length in masked batches (ast_hf's fine-tuning default): the default call pads to the longest clip of the
        call (at least `MIN_DEFAULT_FRAMES`) and returns the attention mask. Saved in preprocessor_config.json by
        the fine-tuning scripts; a file without it (transformers' extractor, older ast_hf files) loads as
        `not return_attention_mask`, i.e. padded for every released checkpoint. Explicit call arguments
        (`padding=`, `return_attention_mask=`) override it.
    window_type (str, defaults to "hanning"): Kaldi's analysis window, as `torchaudio.compliance.kaldi.fbank`'s
        `window_type`: "hanning" (Hann), "hamming", "povey", "rectangular" or "blackman" (blackman_coeff 0.42); see
        `kaldi_window`. With a pretrained checkpoint keep "hanning": every released AST was trained with it (the
        paper's text says Hamming, but the authors' code calls Kaldi's fbank with window_type="hanning"), and
        another window changes the features the weights expect. For a model trained from scratch "hanning" or
        "hamming" both work (Hamming keeps 8% at the frame edges and has lower first sidelobes); then keep the
        window the model was trained with for fine-tuning and inference. The value is saved in
        preprocessor_config.json; a file without it (e.g. written by transformers' `ASTFeatureExtractor`)
        loads as "hanning". transformers' extractor has no such option and always uses "hanning": it loads a file
        with another window_type without error but ignores the field.

    Padding is always at the end (`padding_side="right"`): `padding_side="left"` is refused with a ValueError, as
    `ASTModel` reads the attention mask as real frames first. Constructor values of the wrong type (e.g.
    `sampling_rate="16000"`, `num_mel_bins=0`, a NaN `mean`) raise a TypeError/ValueError naming the value.
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
        mean: float = DATASETS["audioset"]["mean"],
        std: float = DATASETS["audioset"]["std"],
        return_attention_mask: bool = False,
        subtract_waveform_mean: bool = False,
        window_type: str = "hanning",
        pad_to_max_length: bool | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(feature_size=feature_size, sampling_rate=sampling_rate, padding_value=padding_value, **kwargs)
        if _check_number("sampling_rate", sampling_rate) != 16000:
            raise ValueError(
                f"sampling_rate={sampling_rate}: the Kaldi framing here is 400/160 samples (25/10 ms at 16 kHz). "
                "Keep sampling_rate=16000 and resample the audio to 16 kHz instead."
            )
        num_mel_bins = _check_integer("num_mel_bins", num_mel_bins, minimum=1)
        max_length = _check_integer("max_length", max_length, minimum=1)
        for name, value in (("mean", mean), ("std", std), ("padding_value", padding_value)):
            if not math.isfinite(_check_number(name, value)):
                raise ValueError(f"{name}={value} is not finite; every feature would be NaN. Pass a real number.")
        if std <= 0:
            raise ValueError(f"std={std} must be positive; compute it with ast_hf.compute_normalization_stats.")
        _check_window_type(window_type)
        if self.padding_side != "right":
            raise ValueError(
                f"padding_side={self.padding_side!r} is not supported: padding goes at the end of each clip and "
                "ASTModel reads the attention mask as real frames first, then padding (it refuses other masks). "
                "Leave padding_side='right'; padded frames are masked, so the side does not change any clip's output."
            )
        self.num_mel_bins = num_mel_bins
        self.max_length = max_length
        self.do_normalize = do_normalize
        self.mean = mean
        self.std = std
        self.return_attention_mask = return_attention_mask
        self.subtract_waveform_mean = subtract_waveform_mean
        self.window_type = window_type
        if pad_to_max_length is None:
            pad_to_max_length = not return_attention_mask
        if not isinstance(pad_to_max_length, bool):
            raise TypeError(f"pad_to_max_length={pad_to_max_length!r} must be True (the model was trained on clips "
                            "padded to max_length) or False (on clips at their own length with an attention mask).")
        if pad_to_max_length and return_attention_mask:
            raise ValueError(
                "pad_to_max_length=True with return_attention_mask=True: a padded-trained model saw its padding "
                "unmasked, and a mask would hide it. Pass pad_to_max_length=False for a model trained on masked "
                "batches, or return_attention_mask=False for a padded-trained one (call-time "
                "return_attention_mask=True still gives the mask where you need it)."
            )
        self.pad_to_max_length = pad_to_max_length
        # Filterbank blocks and window, made once per (device, num_mel_bins, window_type).
        self._constants: dict[tuple[torch.device, int, str], tuple[list[MelBlock], torch.Tensor]] = {}
        self._warned_truncation = False  # the implicit-truncation warning is given once per extractor
        self._warned_max_length = False  # and the samples-for-frames one

    @classmethod
    def from_dict(cls, feature_extractor_dict: dict[str, Any], **kwargs: Any) -> Any:
        """As transformers' `from_dict`, except that a constructor argument passed to `from_pretrained` is used even
        when the saved config lacks it: transformers drops such an argument silently, so that
        `from_pretrained(<a config written by transformers' extractor>, window_type="hamming")` would give "hanning".
        """
        arguments = [
            name
            for name, parameter in inspect.signature(cls.__init__).parameters.items()
            if parameter.kind is inspect.Parameter.POSITIONAL_OR_KEYWORD and name != "self"
        ]
        saved = dict(feature_extractor_dict)
        if "pad_to_max_length" in kwargs:  # a load-time choice of the input convention brings its mask default along
            pad = kwargs.pop("pad_to_max_length")
            saved.update(pad_to_max_length=pad, return_attention_mask=not pad if isinstance(pad, bool) else False)
        elif "pad_to_max_length" not in saved:  # transformers' extractor and older files: padded unless masked
            saved["pad_to_max_length"] = not kwargs.get("return_attention_mask", saved.get("return_attention_mask"))
        missing = {name: kwargs.pop(name) for name in arguments if name in kwargs and name not in saved}
        settings = {**saved, **missing}
        return super().from_dict(settings, **kwargs)

    def to_dict(self) -> dict[str, Any]:
        output = super().to_dict()
        output.pop("_constants", None)
        output.pop("_warned_truncation", None)
        output.pop("_warned_max_length", None)
        # "ASTFeatureExtractor" as feature_extractor_type would make AutoFeatureExtractor pick transformers' class of
        # the same name. Without it, AutoFeatureExtractor goes through the model config (model_type "ast_hf").
        output.pop("feature_extractor_type", None)
        return output

    def _mel_blocks_and_window(self, device: torch.device) -> tuple[list[MelBlock], torch.Tensor]:
        """The `mel_band_groups` blocks of the filterbank and the `window_type` window on `device`.

        Made once per device and kept; the key holds the settings too, so that changing `num_mel_bins` or
        `window_type` on an existing extractor takes effect (an unknown window_type is refused here).
        """
        key = (device, self.num_mel_bins, self.window_type)
        if key not in self._constants:
            mel = kaldi_mel_banks(self.num_mel_bins, self.sampling_rate).to(device)
            self._constants[key] = (mel_band_groups(mel), kaldi_window(self.window_type).to(device))
        return self._constants[key]

    def __call__(
        self,
        raw_speech: np.ndarray | torch.Tensor | Sequence[float] | Sequence[np.ndarray | torch.Tensor],
        sampling_rate: int | None = None,
        return_tensors: str | None = None,
        padding: bool | str | None = None,
        max_length: int | None = None,
        truncation: bool | None = None,
        return_attention_mask: bool | None = None,
        device: str | torch.device | None = None,
        **kwargs: Any,
    ) -> BatchFeature:
        """
        Featurise one clip or a batch of clips.

        raw_speech: a 1-D array/tensor/list (one clip), a 2-D array/tensor (batch, samples), or a list of 1-D
            clips of any lengths. Float audio in [-1, 1]; int8/int16/int32 PCM is divided by its full scale.
            Empty clips, NaN/Inf samples and samples beyond +-1e15 (`MAX_AMPLITUDE`, where the float32 power
            spectrum could overflow into NaN features) raise a ValueError naming the clip.
        sampling_rate: rate of `raw_speech`; a rate other than `self.sampling_rate` raises a ValueError, a value
            that is not a number (e.g. the string "16000") a TypeError.
        return_tensors: "pt", "np" or None (a list of numpy arrays, one per clip).
        padding: "max_length" (every clip to `max_length` frames), "longest"/True (to the longest clip in the
            batch, at most `max_length` when truncating) or False/"do_not_pad" (each clip keeps its frames; with
            return_tensors="np" or None a list of per-clip arrays, as the clips' lengths may differ). Default: the
            checkpoint's convention (`pad_to_max_length`): "max_length" for a padded-trained checkpoint, else
            "longest" with at least `MIN_DEFAULT_FRAMES` frames.
        max_length: frames (10 ms each, not samples), overriding `self.max_length` for this call. A value more than
            `SUSPICIOUS_MAX_LENGTH_RATIO` times `self.max_length` warns once (it is most likely samples).
        truncation: cut clips longer than `max_length` frames. The default (None) cuts too, and warns once per
            extractor the first time a clip loses frames (how many, in frames and seconds), since a pipeline over a
            long file otherwise classifies its first `max_length` frames only; pass True to cut without the warning.
        return_attention_mask: return the (batch, frames) int mask of real (not padded) frames. Default:
            `self.return_attention_mask`, and always for a checkpoint trained on masked batches
            (`pad_to_max_length=False`).
        device: where to compute ("cpu", "cuda", ...); with return_tensors="pt" the tensors stay there.
        """
        # Arguments, checked in this order so that the first wrong one is the one reported.
        if self.padding_side != "right":
            raise ValueError(f"padding_side={self.padding_side!r} is not supported; set it back to 'right'.")
        self._check_sampling_rate(sampling_rate)
        if kwargs:
            raise TypeError(f"Unexpected argument(s) {sorted(kwargs)} to {type(self).__name__}.__call__.")
        explicit_length = max_length is not None
        max_length = _check_integer("max_length", self.max_length if max_length is None else max_length, minimum=1)
        if explicit_length:
            self._warn_if_samples(max_length)
        warn_if_cut = truncation is None
        truncation = True if truncation is None else truncation
        pad_to_max_length = self.pad_to_max_length
        if return_attention_mask is None:
            return_attention_mask = self.return_attention_mask or not pad_to_max_length
        min_frames = 1
        if padding is None:
            padding = "max_length" if pad_to_max_length else "longest"
            min_frames = 1 if pad_to_max_length else min(MIN_DEFAULT_FRAMES, max_length)
        padding = _padding_strategy(padding)
        if return_tensors not in (None, "pt", "np"):
            raise ValueError(f"return_tensors={return_tensors!r} is not supported; use 'pt', 'np' or None.")
        device = torch.device(device) if device is not None else torch.device("cpu")

        # Frames: of each whole clip, and kept in the output.
        clips = _as_clip_list(raw_speech)
        lengths = [num_frames(clip.shape[0]) for clip in clips]
        kept = [min(n, max_length) if truncation else n for n in lengths]
        if warn_if_cut and not self._warned_truncation and max(lengths) > max_length:
            self._warn_truncation(lengths, max_length)
        width = _padded_width(padding, kept, max_length, return_tensors)  # None: each clip keeps its own frames
        if width is not None:
            width = max(width, min_frames)

        # Features, then padding after each clip's kept frames.
        fbank = torch.empty(len(clips), max(width or 0, max(kept)), self.num_mel_bins, device=device)  # (B, T, M)
        normalize = (self.mean, self.std) if self.do_normalize else None
        self._log_mel_into(clips, fbank, normalize)
        self._fill_padding(fbank, kept, normalize)

        values, mask = _split_padded(fbank, kept, width, return_attention_mask)
        data = {"input_values": _as_return_type(values, return_tensors)}
        if return_attention_mask:
            data["attention_mask"] = _as_return_type(mask, return_tensors)
        return BatchFeature(data, tensor_type=None)

    def _check_sampling_rate(self, sampling_rate: int | None) -> None:
        if sampling_rate is None:
            # As transformers' extractors: audio at another rate would give wrong features without any error.
            logger.warning_once(
                f"{type(self).__name__} was called without sampling_rate; the audio is assumed to be at "
                f"{self.sampling_rate} Hz. Pass sampling_rate={self.sampling_rate} to have other rates refused."
            )
        elif _check_number("sampling_rate", sampling_rate) != self.sampling_rate:
            raise ValueError(
                f"The audio is sampled at {sampling_rate} Hz but this feature extractor expects "
                f"{self.sampling_rate} Hz. Resample it first, e.g. "
                f"torchaudio.functional.resample(waveform, {sampling_rate}, {self.sampling_rate}), or cast a "
                f"datasets column with Audio(sampling_rate={self.sampling_rate})."
            )

    def _warn_if_samples(self, max_length: int) -> None:
        """Warn once when a call-time max_length is far above the checkpoint's: most likely samples, not frames."""
        if max_length <= SUSPICIOUS_MAX_LENGTH_RATIO * self.max_length or self._warned_max_length:
            return
        as_frames = num_frames(max_length)
        warnings.warn(
            f"max_length={max_length} is in frames (10 ms each): {max_length / FRAMES_PER_SECOND:.2f} s per clip, "
            f"while this feature extractor (its checkpoint) uses max_length={self.max_length} frames "
            f"({self.max_length / FRAMES_PER_SECOND:.2f} s). If {max_length} was meant as samples, that is "
            f"{as_frames} frames at {self.sampling_rate} Hz: pass max_length={as_frames}, or leave max_length out to "
            "use the checkpoint's. Padding far beyond the training length changes a padded-trained model's "
            "predictions and costs time. (Shown once per feature extractor.)",
            UserWarning,
            stacklevel=3,
        )
        self._warned_max_length = True

    def _warn_truncation(self, lengths: list[int], max_length: int) -> None:
        longest = max(range(len(lengths)), key=lengths.__getitem__)
        frames, cut = lengths[longest], sum(n > max_length for n in lengths)
        warnings.warn(
            f"Clip {longest} has {frames} frames ({frames / FRAMES_PER_SECOND:.2f} s) but max_length={max_length} "
            f"frames ({max_length / FRAMES_PER_SECOND:.2f} s): only its first {max_length} frames are used and "
            f"{frames - max_length} frames ({(frames - max_length) / FRAMES_PER_SECOND:.2f} s) are dropped"
            + (f" ({cut} of {len(lengths)} clips in this call were cut)" if cut > 1 else "")
            + ". Pass truncation=True to cut without this warning, truncation=False with padding='longest' to keep "
            "every frame, or classify the audio in windows of max_length frames. (Shown once per feature extractor.)",
            UserWarning,
            stacklevel=3,
        )
        self._warned_truncation = True

    def _log_mel_into(
        self, clips: list[torch.Tensor], out: torch.Tensor, normalize: tuple[float, float] | None
    ) -> None:
        """(Normalised) log-mel of the first out.shape[1] frames of every clip into `out` (B, T, M) on its device.

        Frames past a clip's end are left for the caller to fill.
        """
        waveforms = self._prepare_waveforms(clips, out.shape[1], out.device)
        mel_blocks, window = self._mel_blocks_and_window(out.device)
        _banded_kaldi_fbank(waveforms, mel_blocks, window, out=out, normalize=normalize)

    def _prepare_waveforms(self, clips: list[torch.Tensor], frames: int, device: torch.device) -> list[torch.Tensor]:
        """Each clip as float32 on `device`, cut to the samples its first `frames` frames touch; minus its mean
        over the whole clip (as the authors' code does) when `subtract_waveform_mean`."""
        needed = FRAME_LENGTH + (frames - 1) * FRAME_SHIFT
        prepared = []
        for clip in clips:
            if self.subtract_waveform_mean:
                clip = clip - clip.mean()
            prepared.append(clip[:needed].to(device=device, dtype=torch.float32))
        return prepared

    def _fill_padding(self, fbank: torch.Tensor, kept: list[int], normalize: tuple[float, float] | None) -> None:
        """Frames past each clip's kept frames: padding_value in the log-mel domain, normalised like the frames
        (with the same float32 operations)."""
        padding_value = torch.tensor(self.padding_value, dtype=torch.float32)
        if normalize is not None:
            padding_value = padding_value.sub_(normalize[0]).div_(2 * normalize[1])
        for i, n in enumerate(kept):
            fbank[i, n:] = padding_value


def _padded_width(padding: str, kept: list[int], max_length: int, return_tensors: str | None) -> int | None:
    """Frames of the padded output, or None when each clip keeps its own number of frames (no padding)."""
    if padding == "max_length":
        return max(max_length, max(kept))
    if padding == "longest":
        return max(kept)
    if return_tensors is not None and len(set(kept)) > 1:
        raise ValueError(
            f"padding=False with return_tensors={return_tensors!r} needs clips of equal length, got "
            f"{sorted(set(kept))} frames. Use padding='longest' (with return_attention_mask=True) instead."
        )
    # Clips of one length stack into one array or tensor, as transformers' extractors return them; without
    # return_tensors each clip is its own array.
    return kept[0] if return_tensors is not None else None


def _split_padded(
    fbank: torch.Tensor, kept: list[int], width: int | None, with_mask: bool
) -> tuple[torch.Tensor | list[torch.Tensor], torch.Tensor | list[torch.Tensor] | None]:
    """The features and the int32 mask of real frames: (B, T, M) and (B, T), or per clip when `width` is None."""
    mask = None
    if with_mask:
        frame = torch.arange(fbank.shape[1], device=fbank.device)  # (T,)
        real = frame[None, :] < torch.tensor(kept, device=fbank.device)[:, None]  # (B, T)
        mask = real.to(torch.int32) if width is not None else [real[i, :n].to(torch.int32) for i, n in enumerate(kept)]
    if width is None:
        return [fbank[i, :n] for i, n in enumerate(kept)], mask
    return fbank, mask


def _as_return_type(values: Any, return_tensors: str | None) -> Any:
    """Tensors as they are for "pt"; else numpy: one array for "np", a list of per-clip arrays for None."""
    if return_tensors == "pt":
        return values
    if isinstance(values, list):
        return [v.cpu().numpy() for v in values]
    array = values.cpu().numpy()
    return list(array) if return_tensors is None else array


def _check_number(name: str, value: Any) -> float:
    """`value` as a float; a TypeError naming it when it is not a real number (e.g. the string "16000")."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        hint = f" ({name}={value})" if isinstance(value, str) and _is_number(value) else ""
        raise TypeError(f"{name}={value!r} is a {type(value).__name__}; pass a number{hint}.")
    return float(value)


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _check_integer(name: str, value: Any, minimum: int) -> int:
    """`value` as an int >= minimum; a TypeError/ValueError naming it otherwise (floats must be whole)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not float(value).is_integer():
        raise TypeError(f"{name}={value!r} must be an integer.")
    if value < minimum:
        raise ValueError(f"{name}={value} must be at least {minimum}.")
    return int(value)


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
            if rows == 0:
                raise ValueError(f"Got a 2-D array of shape {tuple(raw_speech.shape)}: a batch of 0 clips. Pass at "
                                 "least one clip.")
            if columns == 1:
                return [_as_clip(raw_speech[:, 0], 0)]  # (N, 1): one mono clip
            if 1 < columns <= MAX_AUDIO_CHANNELS and rows > columns:
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
    # One reduction gives both checks: min/max are NaN or Inf iff some sample is, and bound the power spectrum.
    low, high = (float(v) for v in torch.aminmax(item))
    if not (math.isfinite(low) and math.isfinite(high)):
        raise ValueError(
            f"Clip {index} contains NaN or Inf samples (or values beyond float32's range); clean the audio first "
            "(e.g. np.nan_to_num) or drop it."
        )
    peak = max(-low, high)
    if peak > MAX_AMPLITUDE:
        raise ValueError(
            f"Clip {index} peaks at {peak:.3g}; float audio is expected in [-1, 1], and above {MAX_AMPLITUDE:.0e} its "
            "power spectrum would overflow float32 (NaN features). Scale it first, e.g. audio / np.abs(audio).max(), "
            "or pass integer PCM as its int16/int32 array."
        )
    return item


__all__ = [
    "ASTFeatureExtractor",
    "batched_kaldi_fbank",
    "hann_window",
    "kaldi_mel_banks",
    "kaldi_window",
    "mel_band_groups",
    "num_frames",
    "project_mel",
]
