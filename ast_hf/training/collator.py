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
    """Turns rows of decoded audio and labels into model batches, with the recipe's augmentations in training.

    A `DataLoader`'s `collate_fn`. In training it applies the recipe: waveform mixup with a random other clip of
    the batch, SpecAugment, noise and time roll, each within a clip's real frames. Features are padded to
    `max_length` frames (the recipes' fixed lengths) or, with `pad_to_max_length=False`, to the batch's longest
    clip (at least `min_frames`, one patch) with an attention mask. `make_collators` builds a run's two collators.

    Attributes:
        feature_extractor: Computes the features; its `max_length` and normalisation statistics apply.
        num_labels: The number of classes; 0 for unlabelled audio (self-supervised pretraining): the rows' labels
            are not read and batches have no `labels`.
        multi_label: Whether a label is a list of class indices.
        audio_column: The rows' audio column.
        label_column: The rows' label column: class indices, or lists of them (multi-label).
        train: Whether this is a training collator: only training applies the augmentations, label smoothing and
            `crop`.
        mixup: The probability that a clip is mixed with another clip of the batch (waveform mixup, lambda ~
            Beta(10, 10), the targets mixed alike).
        freqm: SpecAugment: the bound of a frequency mask's width (0: off).
        timem: SpecAugment: the bound of a time mask's width (0: off).
        noise: Whether to add noise to the features and roll them along time (the Speech Commands recipe).
        mask_fill: SpecAugment's masked value: `"reference"` (log-mel 0 before normalisation, as the AST code) or
            `"mean"` (0 after normalisation).
        label_smoothing: The label smoothing factor of the training targets (single-label).
        pad_to_max_length: Whether to pad every clip to `max_length` frames, without an attention mask; false: pad
            to the batch's longest clip and return the mask.
        min_frames: The fewest frames a batch is padded to without `pad_to_max_length` (one patch).
        crop: `"start"` keeps the first `max_length` frames of a longer clip; `"random"` cuts a training clip
            longer than `max_length` frames to a random stretch of that length (drawn per epoch).
        examples_seen: The rows collated so far; seeds the augmentations of rows without `_row` ids.
        seed: The seed of the augmentations.
        epoch: The epoch, set by the training loop at the start of each; part of the augmentations' seed.
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
        """The augmentation randomness of a batch, a function of `seed`, `epoch` and the rows' `_row` ids alone.

        So a run resumed mid-epoch augments the remaining batches exactly as the uninterrupted run did, whatever
        else drew from the global generators meanwhile. Rows without ids fall back to a running count of the rows
        collated (`examples_seen`).

        Args:
            rows: The rows of the batch.

        Returns:
            A generator seeded with those values.
        """
        ids = [int(row["_row"]) + 1 for row in rows if "_row" in row]
        if len(ids) != len(rows):
            ids = [0, self.examples_seen]
        return np.random.default_rng([self.seed, self.epoch, *ids])

    def __call__(self, rows: list[Mapping[str, Any]]) -> dict[str, torch.Tensor]:
        """Collate rows into a model batch, augmented when `train`.

        Args:
            rows: Rows with a decoded audio cell (anything `ast_hf.audio_io.decode_audio` reads: a dict with
                `"array"` at the extractor's sampling rate, a torchcodec `AudioDecoder`, an array) and a label; in
                training, also their `_row` ids.

        Returns:
            `input_values` (B, T, F), `labels` and, without `pad_to_max_length`, `attention_mask` (B, T). The
                labels are class indices (B,), or (B, num_labels) float targets when the data is multi-label or
                a batch is mixed or smoothed.
        """
        rate = self.feature_extractor.sampling_rate
        rng = self.batch_rng(rows) if self.train else None
        waves = [torch.as_tensor(np.asarray(decode_audio(row[self.audio_column], rate)), dtype=torch.float32)
                 for row in rows]
        if rng is not None and self.crop == "random":
            waves = [self.random_stretch(wave, rng) for wave in waves]
        targets = torch.zeros(len(rows), self.num_labels)  # (B, 0) for unlabelled audio (pretraining)
        for i, row in enumerate(rows):
            if self.num_labels:
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
        # single-label: cross-entropy on these equals label smoothing
        if self.train and self.label_smoothing > 0 and self.num_labels:
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
        batch_out = {"input_values": features}
        if not self.pad_to_max_length:
            batch_out["attention_mask"] = batch["attention_mask"]
        if self.num_labels:  # unlabelled audio (num_labels 0, pretraining) has no labels
            batch_out["labels"] = targets if soft else targets.argmax(dim=1)
        return batch_out

    def random_stretch(self, wave: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
        """A random stretch of a waveform that fills `max_length` frames exactly, starting on the frame grid.

        Args:
            wave: The (N,) waveform.
            rng: The batch's generator.

        Returns:
            The stretch, or the whole `wave` when it is not longer.
        """
        needed = (self.feature_extractor.max_length - 1) * FRAME_SHIFT + FRAME_LENGTH  # samples of max_length frames
        if wave.shape[0] <= needed:
            return wave
        start = int(rng.integers(0, (wave.shape[0] - needed) // FRAME_SHIFT + 1)) * FRAME_SHIFT  # on the frame grid
        return wave[start:start + needed]

    def featurize(self, waves: list[torch.Tensor]) -> Any:
        """The features and attention mask of a batch of waveforms.

        Clips are cut to `max_length` frames, and padded to it or, without `pad_to_max_length`, to the longest clip
        (at least `min_frames`).

        Args:
            waves: The (N,) waveforms, at the extractor's sampling rate.

        Returns:
            The extractor's output: `input_values` (B, T, F) and `attention_mask` (B, T).
        """
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
    """The training and evaluation collators of a run.

    Args:
        extractor: The run's feature extractor.
        num_labels: The number of classes.
        multi_label: Whether a label is a list of class indices.
        data_args: The data arguments: the audio and label columns, `pad_to_max_length`, `train_crop`.
        recipe: The recipe arguments: mixup, SpecAugment (`freqm`, `timem`, `mask_fill`) and noise.
        seed: The seed of the training augmentations.
        label_smoothing: `--label_smoothing_factor` (single-label only).

    Returns:
        `(train, evaluation)`: the training collator, with the recipe's augmentations and label smoothing, and a
            plain evaluation collator.

    Raises:
        ValueError: When `label_smoothing` is given for multi-label data, or is outside [0, 1).
    """
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
