"""Trainer pieces that both Trainer scripts (fine-tuning and SSAST pretraining) share: the epoch the training
collator draws its augmentations for, the stream's DataLoader, and the skip of a resumed stream."""

from __future__ import annotations

from typing import Any

import torch
from transformers import TrainerCallback

from .collator import AudioCollator
from .streaming import StreamingClips


class EpochCallback(TrainerCallback):
    """Tells the training collator which epoch it is in (its augmentation draws depend on it).

    Args:
        collator: The training collator.
    """

    def __init__(self, collator: AudioCollator) -> None:
        self.collator = collator

    def on_epoch_begin(self, args, state, control, **kwargs):
        self.collator.epoch = int(state.epoch + 1e-6)


class StreamResumeCallback(TrainerCallback):
    """A resumed streaming run skips the batches that the checkpoint had trained on (StreamingClips.start_batch,
    read without decoding) in place of the Trainer's fast-forward, which would decode every one of them.

    Args:
        clips: The run's training stream.
    """

    def __init__(self, clips: StreamingClips) -> None:
        self.clips = clips

    def on_train_begin(self, args, state, control, **kwargs):
        self.clips.start_batch = state.global_step * args.gradient_accumulation_steps


def stream_dataloader(clips: StreamingClips, collator: Any, args: Any) -> torch.utils.data.DataLoader:
    """The DataLoader of a training stream. The stream is this process's own part already (split_dataset_by_node)
    and yields whole batches: accelerate's prepare would shard it a second time, so the Trainer must not prepare it.

    Args:
        clips: The training stream.
        collator: The training collator.
        args: The `TrainingArguments` (DataLoader workers, pinning, prefetching).

    Returns:
        The DataLoader.
    """
    return torch.utils.data.DataLoader(
        clips, batch_size=None, collate_fn=collator, num_workers=args.dataloader_num_workers,
        pin_memory=args.dataloader_pin_memory, persistent_workers=args.dataloader_persistent_workers,
        prefetch_factor=args.dataloader_prefetch_factor)


__all__ = ["EpochCallback", "StreamResumeCallback", "stream_dataloader"]
