"""The timeline plot of a tagged recording: its log-mel spectrogram on top and, on the same time axis beneath it, a
heat map of the recording's top labels' scores in each window (the "audio-tagging" pipeline's result).

The spectrogram is computed with the model's feature extractor chunk by chunk and averaged down to at most
`max_columns` columns, so an hour-long file is drawn at a readable resolution with bounded memory; each window's
scores are drawn around its centre, from halfway to the previous window's centre to halfway to the next one's.
"""

from __future__ import annotations

import math
import os
from typing import Any

import numpy as np
import torch

from .audio_io import open_audio
from .feature_extraction_ast import FRAME_LENGTH, FRAME_SHIFT, ASTFeatureExtractor, num_frames

FRAMES_PER_SECOND = 100  # one frame every 10 ms (FRAME_SHIFT samples at 16 kHz)
MAX_COLUMNS = 2000  # spectrogram columns drawn: more than a 12-inch figure at 150 dpi shows


def pooled_spectrogram(audio: Any, extractor: ASTFeatureExtractor, duration: float, sampling_rate: int | None = None,
                       max_columns: int = MAX_COLUMNS) -> tuple[np.ndarray, float]:
    """(mel bins, columns) normalised log-mel of a recording, each column the mean of `frames_per_column` frames,
    and the seconds per column. Decoded and featurised chunk by chunk: the frames run on across chunk borders."""
    rate = extractor.sampling_rate
    per_column = max(1, math.ceil(duration * FRAMES_PER_SECOND / max_columns))
    columns, pending = [], []
    carry = torch.zeros(0)
    for chunk in open_audio(audio, rate, source_rate=sampling_rate).chunks():
        carry = torch.cat([carry, chunk])
        if carry.shape[0] < FRAME_LENGTH:
            continue
        frames = num_frames(carry.shape[0])
        features = extractor(carry, sampling_rate=rate, padding=False, truncation=False,
                             return_tensors="pt")["input_values"][0]  # (frames, mel bins): every frame of the chunk
        pending.append(features)
        carry = carry[frames * FRAME_SHIFT:]
        stacked = torch.cat(pending)
        whole = stacked.shape[0] // per_column * per_column
        if whole:
            columns.append(stacked[:whole].reshape(-1, per_column, stacked.shape[1]).mean(dim=1))
        pending = [stacked[whole:]]
    rest = torch.cat(pending) if pending else torch.zeros(0, extractor.num_mel_bins)
    if rest.shape[0]:
        columns.append(rest.mean(dim=0, keepdim=True))
    spectrogram = torch.cat(columns) if columns else torch.zeros(1, extractor.num_mel_bins)
    return spectrogram.T.numpy(), per_column / FRAMES_PER_SECOND


MATPLOTLIB_MISSING = ("Plotting needs matplotlib, which is not installed: pip install matplotlib (or pip install "
                      "'ast_hf[demo]', which also has the web demo).")


def require_matplotlib() -> None:
    """An ImportError of one line naming matplotlib and the pip command when it cannot be imported."""
    try:
        import matplotlib  # noqa: F401
    except ImportError as error:
        raise ImportError(MATPLOTLIB_MISSING, name="matplotlib") from error


def plot_timeline(audio: Any, result: dict[str, Any], path: str | os.PathLike | None = None, title: str | None = None,
                  sampling_rate: int | None = None, extractor: ASTFeatureExtractor | None = None,
                  max_columns: int = MAX_COLUMNS) -> Any:
    """A matplotlib Figure of `audio` (anything the pipeline takes) and its tagging `result`; saved as PNG (or any
    format matplotlib writes, by the suffix) when `path` is given. `extractor` is the pipeline's
    (`tagger.feature_extractor`); the default is AudioSet's settings."""
    require_matplotlib()
    import matplotlib

    if path is not None:
        matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    if "timeline" not in result or "segments" not in result:
        raise ValueError("result must be the 'audio-tagging' pipeline's output for this recording (a dict with "
                         f"'segments' and 'timeline'); got keys {sorted(result)}.")
    extractor = extractor or ASTFeatureExtractor()
    duration = float(result["duration"])
    spectrogram, seconds_per_column = pooled_spectrogram(audio, extractor, duration, sampling_rate, max_columns)
    labels = result["timeline"]["labels"]
    scores = np.asarray(result["timeline"]["scores"], dtype=np.float32).T  # (labels, windows)
    centres = np.array([(segment["start"] + segment["end"]) / 2 for segment in result["segments"]])
    edges = np.concatenate([[0.0], (centres[1:] + centres[:-1]) / 2, [duration]])  # (windows + 1,)

    figure, (top, bottom) = plt.subplots(
        2, 1, sharex=True, figsize=(12, 3.2 + 0.3 * len(labels)),
        gridspec_kw={"height_ratios": [3, max(1.2, 0.3 * len(labels))]}, constrained_layout=True)
    image = top.imshow(spectrogram, origin="lower", aspect="auto", cmap="magma", interpolation="nearest",
               # The last frame's 25 ms window ends 15 ms after its 10 ms column.
               extent=(0.0, spectrogram.shape[1] * seconds_per_column + (FRAME_LENGTH - FRAME_SHIFT) /
                       extractor.sampling_rate, 0, spectrogram.shape[0]))
    top.set_ylabel("mel bin")
    figure.colorbar(image, ax=top, label="log-mel (normalised)", pad=0.01, fraction=0.03)  # keeps both axes aligned
    top.set_xlim(0.0, duration)
    if title:
        top.set_title(title, fontsize=10)
    mesh = bottom.pcolormesh(edges, np.arange(len(labels) + 1), scores, cmap="viridis", vmin=0.0, vmax=1.0,
                             shading="flat")
    bottom.set_yticks(np.arange(len(labels)) + 0.5, labels=labels, fontsize=8)
    bottom.invert_yaxis()  # the recording's best label on top
    bottom.set_xlabel("time (s)")
    figure.colorbar(mesh, ax=bottom, label="score", pad=0.01, fraction=0.03)
    if path is not None:
        figure.savefig(path, dpi=110)
    return figure


__all__ = ["plot_timeline", "pooled_spectrogram", "require_matplotlib"]
