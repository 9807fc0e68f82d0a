"""The recipes' augmentations, each a small pure function: waveform mixup, SpecAugment
masks, noise and time roll. The collator (`collator.py`) draws their random parameters."""

from __future__ import annotations

import numpy as np
import torch


def mix_waveforms(first: torch.Tensor, second: torch.Tensor, lam: float) -> torch.Tensor:
    """The reference's waveform mixup of two clips.

    Both clips are mean-centred, the second cut or zero-padded to the first's length, mixed as
    `lam * first + (1 - lam) * second`, and the mix centred again.

    Args:
        first: The (N,) first waveform, whose length the mix has.
        second: The (M,) second waveform.
        lam: The weight of `first`, in [0, 1].

    Returns:
        The (N,) mix.
    """
    first = first - first.mean()
    second = second - second.mean()
    if second.shape[0] >= first.shape[0]:
        second = second[: first.shape[0]]
    else:
        second = torch.nn.functional.pad(second, (0, first.shape[0] - second.shape[0]))
    mixed = lam * first + (1 - lam) * second
    return mixed - mixed.mean()


def mask_band(features: torch.Tensor, axis: int, start: int, width: int, fill: float) -> torch.Tensor:
    """SpecAugment's mask: set a band of a (T, F) fbank to `fill`, in place.

    Args:
        features: The (T, F) fbank, changed in place.
        axis: 0 masks rows (time frames), 1 columns (mel bins).
        start: The first row or column masked.
        width: The number of rows or columns masked (0: none).
        fill: The masked value.

    Returns:
        `features`.
    """
    if width > 0:
        features.narrow(axis, start, width).fill_(fill)
    return features


def draw_mask(size: int, max_width: int, rng: np.random.Generator) -> tuple[int, int]:
    """Draw a mask as torchaudio's masking does: width ~ U[0, max_width), start ~ U[0, size - width).

    Args:
        size: The length of the masked axis.
        max_width: The bound of the width (`freqm` or `timem`).
        rng: The batch's generator.

    Returns:
        `(start, width)`, the width at most `size`.
    """
    width = min(int(rng.random() * max_width), size)
    start = int(rng.random() * (size - width))
    return start, width


def noise_and_roll(features: torch.Tensor, scale: float, shift: int, rng: np.random.Generator) -> torch.Tensor:
    """The Speech Commands recipe's noise and time roll.

    Adds U(0, 1) noise, times `scale / 10`, to every value of the normalised fbank, then rolls it `shift` frames
    along time.

    Args:
        features: The (T, F) normalised fbank (not changed).
        scale: The noise scale (the collator draws it from U(0, 1)).
        shift: The frames to roll by (the collator draws it from [-10, 10)).
        rng: The batch's generator.

    Returns:
        The new (T, F) fbank.
    """
    noise = torch.from_numpy(rng.random(tuple(features.shape), dtype=np.float32)) * scale / 10
    return torch.roll(features + noise, shifts=shift, dims=0)
