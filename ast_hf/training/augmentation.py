"""The recipes' augmentations (REFERENCE section 4), each a small pure function: waveform mixup, SpecAugment
masks, noise and time roll. The collator (`collator.py`) draws their random parameters."""

from __future__ import annotations

import numpy as np
import torch


def mix_waveforms(first: torch.Tensor, second: torch.Tensor, lam: float) -> torch.Tensor:
    """The reference's waveform mixup: both clips mean-centred, the second cut or zero-padded to the first's
    length, lam * first + (1 - lam) * second, centred again."""
    first = first - first.mean()
    second = second - second.mean()
    if second.shape[0] >= first.shape[0]:
        second = second[: first.shape[0]]
    else:
        second = torch.nn.functional.pad(second, (0, first.shape[0] - second.shape[0]))
    mixed = lam * first + (1 - lam) * second
    return mixed - mixed.mean()


def mask_band(features: torch.Tensor, axis: int, start: int, width: int, fill: float) -> torch.Tensor:
    """Set `width` rows (axis 0 = time frames) or columns (axis 1 = mel bins) from `start` of a (T, F) fbank to
    `fill`, in place; SpecAugment's mask."""
    if width > 0:
        features.narrow(axis, start, width).fill_(fill)
    return features


def draw_mask(size: int, max_width: int, rng: np.random.Generator) -> tuple[int, int]:
    """(start, width) as torchaudio's masking draws them: width ~ U[0, max_width), start ~ U[0, size - width)."""
    width = min(int(rng.random() * max_width), size)
    start = int(rng.random() * (size - width))
    return start, width


def noise_and_roll(features: torch.Tensor, scale: float, shift: int, rng: np.random.Generator) -> torch.Tensor:
    """The Speech Commands recipe: + U(0,1)(T, F) * scale / 10 on the normalised fbank, then a roll of `shift`
    frames along time."""
    noise = torch.from_numpy(rng.random(tuple(features.shape), dtype=np.float32)) * scale / 10
    return torch.roll(features + noise, shifts=shift, dims=0)
