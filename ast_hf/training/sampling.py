"""Balanced sampling (the reference's weighted sampler for AudioSet), the same in both examples: one sampler with
the same seed on every process, so that under torchrun each process draws the same sequence of clips and
accelerate gives each its share of the batches (what one process would have trained on)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch


def balanced_sample_weights(label_lists: Sequence[Sequence[int]], num_labels: int) -> torch.Tensor:
    """The reference's sampler weights: for each clip, sum over its labels of 1000 / (count(label) + 0.01)."""
    counts = np.zeros(num_labels)
    for labels in label_lists:
        for label in labels:
            counts[label] += 1
    per_label = 1000.0 / (counts + 0.01)
    return torch.tensor([float(sum(per_label[label] for label in labels)) for labels in label_lists],
                        dtype=torch.float64)


def dataset_sample_weights(dataset: Any, label_column: str, num_labels: int, multi_label: bool) -> torch.Tensor:
    """`balanced_sample_weights` of a split whose label column holds class indices or lists of them."""
    column = dataset[label_column]
    return balanced_sample_weights([c if multi_label else [c] for c in column], num_labels)


class BalancedSampler(torch.utils.data.Sampler):
    """The reference's sampler: len(weights) draws with replacement per epoch, proportional to `weights`. Epoch e's
    draws are a function of (seed, e) alone (the Trainer and accelerate call `set_epoch`), so every process draws
    the same clips, and a run resumed in epoch e draws what the uninterrupted run drew."""

    def __init__(self, weights: torch.Tensor, seed: int) -> None:
        self.weights, self.seed, self.epoch = torch.as_tensor(weights, dtype=torch.float64), seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.weights)

    def __iter__(self):
        seed = int(np.random.SeedSequence([self.seed, self.epoch]).generate_state(1)[0])
        generator = torch.Generator().manual_seed(seed)
        yield from torch.multinomial(self.weights, len(self.weights), replacement=True, generator=generator).tolist()


def balanced_sampler(weights: torch.Tensor, seed: int) -> BalancedSampler:
    """`BalancedSampler` over a split's `dataset_sample_weights`, for both example scripts."""
    return BalancedSampler(weights, seed)
