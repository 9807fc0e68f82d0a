"""Balanced sampling (the reference's weighted sampler for AudioSet), the same in both examples: one sampler with
the same seed on every process, so that under torchrun each process draws the same sequence of clips and
accelerate gives each its share of the batches (what one process would have trained on)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch


def balanced_sample_weights(label_lists: Sequence[Sequence[int]], num_labels: int) -> torch.Tensor:
    """The reference's sampler weights: for each clip, the sum over its labels of 1000 / (count(label) + 0.01).

    Args:
        label_lists: The class indices of each clip.
        num_labels: The number of classes.

    Returns:
        The (N,) float64 weights, one a clip.
    """
    counts = np.zeros(num_labels)
    for labels in label_lists:
        for label in labels:
            counts[label] += 1
    per_label = 1000.0 / (counts + 0.01)
    return torch.tensor([float(sum(per_label[label] for label in labels)) for labels in label_lists],
                        dtype=torch.float64)


def dataset_sample_weights(dataset: Any, label_column: str, num_labels: int, multi_label: bool) -> torch.Tensor:
    """`balanced_sample_weights` of a split whose label column holds class indices or lists of them.

    Args:
        dataset: A `datasets.Dataset` with encoded labels.
        label_column: The label column.
        num_labels: The number of classes.
        multi_label: Whether the column holds lists of class indices.

    Returns:
        The (N,) float64 weights, one a clip.
    """
    column = dataset[label_column]
    return balanced_sample_weights([c if multi_label else [c] for c in column], num_labels)


class BalancedSampler(torch.utils.data.Sampler):
    """The reference's sampler: `len(weights)` draws with replacement per epoch, proportional to `weights`.

    Epoch e's draws are a function of (seed, e) alone (the Trainer and accelerate call `set_epoch`), so every
    process draws the same clips, and a run resumed in epoch e draws what the uninterrupted run drew.

    Args:
        weights: The weight of each clip.
        seed: The seed, the same on every process.
    """

    def __init__(self, weights: torch.Tensor, seed: int) -> None:
        self.weights, self.seed, self.epoch = torch.as_tensor(weights, dtype=torch.float64), seed, 0

    def set_epoch(self, epoch: int) -> None:
        """Set the epoch whose draws the next iteration makes.

        Args:
            epoch: The epoch.
        """
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.weights)

    def __iter__(self):
        seed = int(np.random.SeedSequence([self.seed, self.epoch]).generate_state(1)[0])
        generator = torch.Generator().manual_seed(seed)
        yield from torch.multinomial(self.weights, len(self.weights), replacement=True, generator=generator).tolist()


def balanced_sampler(weights: torch.Tensor, seed: int) -> BalancedSampler:
    """The balanced sampler of a split, for both example scripts.

    Args:
        weights: The split's `dataset_sample_weights`.
        seed: The seed, the same on every process.

    Returns:
        A `BalancedSampler`: `len(weights)` draws with replacement per epoch, proportional to `weights`, a function
            of (seed, epoch) alone.
    """
    return BalancedSampler(weights, seed)
