"""Rows of decoded audio and labels -> model batches, with the recipe's augmentations in training."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from ..audio_io import decode_audio
from ..feature_extraction_ast import FRAME_LENGTH, FRAME_SHIFT, ASTFeatureExtractor
from .arguments import DataArguments, RecipeArguments
from .augmentation import draw_mask, mask_band, mix_waveforms, noise_and_roll


@dataclass
class AudioCollator:
    """Rows of (decoded) audio + labels -> a model batch. In training it applies the recipe: waveform mixup with a
    random other clip of the batch, SpecAugment, noise and time roll, each within a clip's real frames. Features
    are padded to `max_length` frames (the recipes' fixed lengths), or with `pad_to_max_length=False` to the
    batch's longest clip (at least `min_frames`, one patch) with an attention mask. `crop` "random": in training a
    clip longer than `max_length` frames is cut to a random stretch of that length (drawn per epoch), not its start.
    """

    feature_extractor: ASTFeatureExtractor
    num_labels: int
    multi_label: bool
    audio_column: str = "audio"
    label_column: str = "label"
    train: bool = False
    mixup: float = 0.0
    freqm: int = 0
    timem: int = 0
    noise: bool = False
    mask_fill: str = "reference"
    label_smoothing: float = 0.0
    pad_to_max_length: bool = True
    min_frames: int = 16
    crop: str = "start"
    examples_seen: int = 0
    seed: int = 0
    epoch: int = 0  # set by the training loop at the start of each epoch

    def batch_rng(self, rows: list[Mapping[str, Any]]) -> np.random.Generator:
        """The augmentation randomness of a batch, a function of (seed, epoch, the rows' `_row` ids) alone: a run
        resumed mid-epoch augments the remaining batches exactly as the uninterrupted run did, whatever else drew
        from the global generators meanwhile. Rows without ids fall back to a running batch counter."""
        ids = [int(row["_row"]) + 1 for row in rows if "_row" in row]
        if len(ids) != len(rows):
            ids = [0, self.examples_seen]
        return np.random.default_rng([self.seed, self.epoch, *ids])

    def __call__(self, rows: list[Mapping[str, Any]]) -> dict[str, torch.Tensor]:
        rate = self.feature_extractor.sampling_rate
        rng = self.batch_rng(rows) if self.train else None
        waves = [torch.as_tensor(np.asarray(decode_audio(row[self.audio_column], rate)), dtype=torch.float32)
                 for row in rows]
        if rng is not None and self.crop == "random":
            waves = [self.random_stretch(wave, rng) for wave in waves]
        targets = torch.zeros(len(rows), self.num_labels)
        for i, row in enumerate(rows):
            label = row[self.label_column]
            targets[i, label if self.multi_label else [label]] = 1.0
        soft = self.multi_label
        if rng is not None and self.mixup > 0 and len(rows) > 1:
            originals, original_targets = list(waves), targets.clone()  # partners are always unmixed clips
            for i in range(len(rows)):
                if rng.random() < self.mixup:
                    j = (i + 1 + int(rng.integers(len(rows) - 1))) % len(rows)  # another clip
                    lam = float(rng.beta(10.0, 10.0))
                    waves[i] = mix_waveforms(originals[i], originals[j], lam)
                    targets[i] = lam * original_targets[i] + (1 - lam) * original_targets[j]
                    soft = True
        if self.train and self.label_smoothing > 0:  # single-label: cross-entropy on these equals label smoothing
            targets = targets * (1 - self.label_smoothing) + self.label_smoothing / self.num_labels
            soft = True
        batch = self.featurize(waves)
        features = batch["input_values"]  # (B, T, F)
        real_frames = batch["attention_mask"].sum(dim=1).tolist()
        if rng is not None and (self.freqm or self.timem or self.noise):
            extractor = self.feature_extractor
            fill = 0.0
            if self.mask_fill == "reference" and extractor.do_normalize:  # log-mel 0, then normalised
                fill = (0.0 - extractor.mean) / (2 * extractor.std)
            for clip, frames in zip(features, real_frames, strict=True):
                if self.freqm:
                    mask_band(clip, 1, *draw_mask(clip.shape[1], self.freqm, rng), fill)
                if self.timem:
                    mask_band(clip, 0, *draw_mask(clip.shape[0] if self.pad_to_max_length else frames,
                                                  self.timem, rng), fill)
            if self.noise:
                for clip, frames in zip(features, real_frames, strict=True):
                    span = clip.shape[0] if self.pad_to_max_length else frames
                    clip[:span] = noise_and_roll(clip[:span], rng.random(), int(rng.integers(-10, 10)), rng)
        self.examples_seen += len(rows)
        labels = targets if soft else targets.argmax(dim=1)
        if self.pad_to_max_length:
            return {"input_values": features, "labels": labels}
        return {"input_values": features, "attention_mask": batch["attention_mask"], "labels": labels}

    def random_stretch(self, wave: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
        """A random stretch of `wave` (N,) that fills max_length frames exactly, the whole clip when it is shorter."""
        needed = (self.feature_extractor.max_length - 1) * FRAME_SHIFT + FRAME_LENGTH  # samples of max_length frames
        if wave.shape[0] <= needed:
            return wave
        start = int(rng.integers(0, (wave.shape[0] - needed) // FRAME_SHIFT + 1)) * FRAME_SHIFT  # on the frame grid
        return wave[start:start + needed]

    def featurize(self, waves: list[torch.Tensor]) -> Any:
        """Features and attention mask of a batch: padded to max_length, or to the longest clip (>= min_frames)."""
        extractor = self.feature_extractor
        common = dict(sampling_rate=extractor.sampling_rate, return_tensors="pt", return_attention_mask=True,
                      truncation=True)  # max_length is the run's choice: cut without the once-per-extractor warning
        if self.pad_to_max_length:
            return extractor(waves, padding="max_length", **common)
        batch = extractor(waves, padding="longest", **common)
        if batch["input_values"].shape[1] < self.min_frames:  # shorter than one patch: pad to one
            batch = extractor(waves, padding="max_length", max_length=self.min_frames, **common)
        return batch


def make_collators(extractor: ASTFeatureExtractor, num_labels: int, multi_label: bool, data_args: DataArguments,
                   recipe: RecipeArguments, seed: int, label_smoothing: float = 0.0
                   ) -> tuple[AudioCollator, AudioCollator]:
    """(training collator with the recipe's augmentations and label smoothing, plain evaluation collator)."""
    if label_smoothing and multi_label:
        raise ValueError(f"label_smoothing_factor={label_smoothing} applies to single-label classification; this "
                         "data set is multi-label (lists of labels). Leave --label_smoothing_factor out.")
    if not 0 <= label_smoothing < 1:
        raise ValueError(f"label_smoothing_factor={label_smoothing} must be in [0, 1).")
    common = dict(feature_extractor=extractor, num_labels=num_labels, multi_label=multi_label,
                  audio_column=data_args.audio_column_name, label_column=data_args.label_column_name,
                  pad_to_max_length=data_args.pad_to_max_length)
    train = AudioCollator(**common, train=True, crop=data_args.train_crop, mixup=recipe.mixup, freqm=recipe.freqm,
                          timem=recipe.timem, mask_fill=recipe.mask_fill, label_smoothing=label_smoothing,
                          noise=recipe.noise, seed=seed)
    return train, AudioCollator(**common)
