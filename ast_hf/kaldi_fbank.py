"""The Kaldi log-mel filterbank of the Audio Spectrogram Transformer, batched: all clips of a call are framed,
transformed and mel-projected together, in blocks of frames that stay in cache, on CPU or GPU.

It equals `torchaudio.compliance.kaldi.fbank(w, htk_compat=True, sample_frequency=16000, use_energy=False,
window_type="hanning", num_mel_bins=128, dither=0.0, frame_shift=10)` (the other Kaldi windows are an option), the
features every AST checkpoint was trained on. `ASTFeatureExtractor` calls `batched_kaldi_fbank`; this file is copied
beside saved models as remote code with `feature_extraction_ast.py`.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from typing import Any, NamedTuple

import torch

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

# Kaldi's analysis windows (torchaudio.compliance.kaldi.fbank's window_type); every AST checkpoint used "hanning".
WINDOW_TYPES = ("hanning", "hamming", "povey", "rectangular", "blackman")
# Kaldi's default blackman_coeff: 0.42 - 0.5 cos + 0.08 cos(2x), the classic Blackman window.
BLACKMAN_COEFF = 0.42
# Other libraries' names of the same windows (numpy, scipy, torch, transformers), for the error message only.
_WINDOW_ALIASES = {"hann": "hanning", "hann_window": "hanning", "hamming_window": "hamming", "boxcar": "rectangular",
                   "rect": "rectangular", "ones": "rectangular", "blackman_window": "blackman"}

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
    check_window_type(window_type)
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


def check_window_type(window_type: Any) -> str:
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
    return banded_kaldi_fbank(clips, mel_band_groups(mel_banks), window, block_frames, out, normalize)


def banded_kaldi_fbank(
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


__all__ = [
    "CPU_BLOCK_FRAMES",
    "FRAME_LENGTH",
    "FRAME_SHIFT",
    "WINDOW_TYPES",
    "banded_kaldi_fbank",
    "batched_kaldi_fbank",
    "check_window_type",
    "hann_window",
    "kaldi_mel_banks",
    "kaldi_window",
    "mel_band_groups",
    "num_frames",
    "project_mel",
]
