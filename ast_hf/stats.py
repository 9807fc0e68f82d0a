"""Normalisation statistics of a data set's log-mel fbank: the `mean` and `std` of `ASTFeatureExtractor`.

The paper normalises inputs to mean 0 and std 0.5 with statistics of the training set (AudioSet -4.2677393 /
4.5689974, ESC-50 -6.6268077 / 5.358466, Speech Commands -6.845978 / 5.5654526). This computes them for a new
data set in one streaming pass with float64 accumulators.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator
from typing import Any

from .audio_io import decode_audio
from .feature_extraction_ast import ASTFeatureExtractor


def compute_normalization_stats(
    data: Iterable[Any],
    feature_extractor: ASTFeatureExtractor | None = None,
    audio_column: str = "audio",
    batch_size: int = 32,
    max_clips: int | None = None,
    include_padding: bool = False,
    progress: bool = True,
) -> tuple[float, float]:
    """Compute the mean and standard deviation of the unnormalised fbank over a data set.

    One streaming pass with float64 accumulators, over the frames the model sees: each clip's fbank as the
    extractor computes it (truncated to `max_length`), without normalisation. The results are the `mean` and `std`
    of `ASTFeatureExtractor`.

    Args:
        data: A `datasets.Dataset` (or any iterable of rows) with an audio column, or an iterable of clips (1-D
            arrays or tensors at the extractor's sampling rate). An audio cell may be a dict with "array" and
            "sampling_rate" (datasets' classic format) or a torchcodec AudioDecoder (datasets 4+); it must be at
            the extractor's sampling rate.
        feature_extractor: Gives the fbank settings and `max_length`; a default `ASTFeatureExtractor` if None.
        audio_column: The name of the audio column of rows that are dicts.
        batch_size: Clips per feature-extractor call.
        max_clips: Use only the first `max_clips` clips; None uses all.
        include_padding: False (default) uses only real frames: the exact statistics of the audio. True counts the
            frames of padding up to `max_length` as the authors' script does (it averages padded batches), which
            is what to use to reproduce their numbers.
        progress: Show a progress bar (tqdm) once the pass has run for two seconds.

    Returns:
        (mean, std) of the fbank values.

    Raises:
        ValueError: When the data set holds no audio; when an audio cell is a dict without "array" or at another
            sampling rate than the extractor's (cast the column with `datasets.Audio(sampling_rate=...)`).

    Example:
        ```python
        mean, std = compute_normalization_stats(train_dataset)
        extractor = ASTFeatureExtractor(mean=mean, std=std)
        ```
    """
    extractor = feature_extractor if feature_extractor is not None else ASTFeatureExtractor()
    raw = ASTFeatureExtractor(**{**extractor.to_dict(), "do_normalize": False})
    total = total_sq = 0.0
    count = 0
    batch: list[Any] = []

    def consume(clips: list[Any]) -> None:
        nonlocal total, total_sq, count
        features = raw(clips, sampling_rate=raw.sampling_rate, return_tensors="pt", padding="max_length",
                       return_attention_mask=True, truncation=True)  # statistics of the frames the model sees
        fbank = features["input_values"].double()  # (B, T, M)
        if not include_padding:
            fbank = fbank[features["attention_mask"].bool()]  # (real frames, M)
        total += float(fbank.sum())
        total_sq += float(fbank.square().sum())
        count += fbank.numel()

    from tqdm.auto import tqdm

    total_clips = len(data) if hasattr(data, "__len__") else None
    if max_clips is not None and total_clips is not None:
        total_clips = min(total_clips, max_clips)
    clips = tqdm(_clips(data, audio_column, raw.sampling_rate), total=total_clips, desc="fbank statistics",
                 unit="clip", delay=2, disable=not progress)
    for index, clip in enumerate(clips):
        if max_clips is not None and index >= max_clips:
            break
        batch.append(clip)
        if len(batch) == batch_size:
            consume(batch)
            batch = []
    if batch:
        consume(batch)
    clips.close()
    if count == 0:
        raise ValueError("The data set holds no audio; pass a non-empty data set or iterable of clips.")
    mean = total / count
    variance = max(total_sq / count - mean * mean, 0.0)
    return mean, math.sqrt(variance)


def _clips(data: Iterable[Any], audio_column: str, sampling_rate: int) -> Iterator[Any]:
    for row in data:
        cell = row[audio_column] if isinstance(row, dict) and audio_column in row else row
        yield decode_audio(cell, sampling_rate)  # arrays, lists or tensors: the extractor converts and checks them
