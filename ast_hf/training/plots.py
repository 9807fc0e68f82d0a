"""PNG reports of a run: training curves and the confusion matrix."""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from .metrics import confusion_matrix


def plot_training_curves(log_history: Iterable[Mapping[str, Any]], path: str | os.PathLike) -> None:
    """Plot the training curves of a run into a PNG file.

    The training loss (per logging step) and the evaluation metrics (per evaluation) against the epoch; see
    `training_curves_figure`.

    Args:
        log_history: The Trainer's `state.log_history`, or entries of the same form (dicts with "epoch" and "loss",
            "train_loss" or "eval_*" values).
        path: The PNG file to write.
    """
    import matplotlib.pyplot as plt

    figure = training_curves_figure(log_history)
    figure.savefig(path, dpi=100)
    plt.close(figure)


def training_curves_figure(log_history: Iterable[Mapping[str, Any]]) -> Any:
    """Draw the figure of `plot_training_curves`.

    Two panels against the epoch: the training loss (the Trainer's end-of-training average `train_loss` when fewer
    updates than --logging_steps logged none) with the evaluation loss, and the other evaluation metrics (runtime
    and throughput left out). A panel with nothing logged says so and what to set.

    Args:
        log_history: The Trainer's `state.log_history`, or entries of the same form.

    Returns:
        (matplotlib.figure.Figure): The figure; matplotlib's Agg backend is selected.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    history = list(log_history)
    train = [(h["epoch"], h["loss"]) for h in history if "loss" in h and "epoch" in h]
    if not train:  # fewer updates than --logging_steps: the Trainer's end-of-training average is all there is
        train = [(h["epoch"], h["train_loss"]) for h in history if "train_loss" in h and "epoch" in h]
    evals = [h for h in history if any(k.startswith("eval_") for k in h)]
    keys = sorted({k for h in evals for k in h if k.startswith("eval_") and k not in
                   ("eval_runtime", "eval_samples_per_second", "eval_steps_per_second", "eval_loss")})
    figure, axes = plt.subplots(1, 2, figsize=(10, 4))
    if train:
        axes[0].plot(*zip(*train, strict=True), "-" if len(train) > 1 else "o", label="training loss")
    loss = [(h["epoch"], h["eval_loss"]) for h in evals if "eval_loss" in h]
    if loss:
        axes[0].plot(*zip(*loss, strict=True), "o-", label="evaluation loss")
    axes[0].set_xlabel("epoch")
    axes[0].set_title("loss")
    if train or loss:
        axes[0].legend()
    for key in keys:
        points = [(h["epoch"], h[key]) for h in evals if key in h and "epoch" in h]
        if points:
            axes[1].plot(*zip(*points, strict=True), "o-", label=key[5:])
    axes[1].set_xlabel("epoch")
    axes[1].set_title("evaluation")
    if keys:
        axes[1].legend()
    else:
        axes[1].text(0.5, 0.5, "no evaluation during training\n(--eval_strategy epoch and evaluation data)",
                     ha="center", va="center", transform=axes[1].transAxes)
    if not train and not loss:
        axes[0].text(0.5, 0.5, "no loss was logged\n(fewer updates than --logging_steps)", ha="center",
                     va="center", transform=axes[0].transAxes)
    figure.tight_layout()
    return figure


def save_confusion_matrix(logits: np.ndarray, label_ids: np.ndarray, names: Sequence[str],
                          path: str | os.PathLike) -> None:
    """Plot the evaluation's confusion matrix into a PNG file.

    Args:
        logits: The evaluation's logits, shape (N, C); the prediction is their argmax.
        label_ids: Class indices (N,), or soft (mixed) targets (N, C), which count as their dominant class.
        names: The class names, in id order.
        path: The PNG file to write.
    """
    label_ids = label_ids.argmax(axis=1) if label_ids.ndim == 2 else label_ids
    plot_confusion_matrix(confusion_matrix(logits, label_ids.astype(np.int64), len(names)), names, path)


def plot_confusion_matrix(matrix: np.ndarray, names: Sequence[str], path: str | os.PathLike) -> None:
    """Plot a confusion matrix into a PNG file, titled with its accuracy.

    The counts are written in the cells when there are at most 20 classes.

    Args:
        matrix: (true, predicted) counts of shape (C, C), as `confusion_matrix` returns.
        names: The class names, in id order.
        path: The PNG file to write.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    size = max(4.0, 0.45 * len(names) + 2)
    figure, axis = plt.subplots(figsize=(size, size))
    axis.imshow(matrix, cmap="Blues")
    axis.set_xticks(range(len(names)), names, rotation=90)
    axis.set_yticks(range(len(names)), names)
    axis.set_xlabel("predicted")
    axis.set_ylabel("true")
    if len(names) <= 20:
        for (i, j), count in np.ndenumerate(matrix):
            axis.text(j, i, str(count), ha="center", va="center", fontsize=8,
                      color="white" if count > matrix.max() / 2 else "black")
    accuracy = np.trace(matrix) / max(1, matrix.sum())
    axis.set_title(f"confusion matrix (accuracy {accuracy:.3f})")
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


def plot_pretraining_curves(log_history: Iterable[Mapping[str, Any]], path: str | os.PathLike) -> None:
    """Plot the curves of an SSAST pretraining run into a PNG file: the joint loss, the InfoNCE and MSE losses and
    the discriminative accuracy against the step, training (per logging step) and evaluation (per evaluation).

    Args:
        log_history: The Trainer's `state.log_history` of `examples/run_pretraining.py`.
        path: The PNG file to write.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    history = [h for h in log_history if "step" in h]
    panels = (("loss", "joint loss"), ("discriminative_loss", "InfoNCE loss"), ("generative_loss", "MSE loss"),
              ("discriminative_accuracy", "discriminative accuracy"))
    figure, axes = plt.subplots(1, len(panels), figsize=(16, 3.6))
    for axis, (key, title) in zip(axes, panels, strict=True):
        for prefix, label, style in (("", "training", "-"), ("eval_", "evaluation", "o-")):
            points = [(h["step"], h[prefix + key]) for h in history if prefix + key in h]
            if points:
                axis.plot(*zip(*points, strict=True), style if len(points) > 1 else "o", label=label)
        axis.set_title(title)
        axis.set_xlabel("step")
        if axis.lines:
            axis.legend()
        else:
            axis.text(0.5, 0.5, "not logged (weight 0, or fewer steps than --logging_steps)", ha="center",
                      va="center", transform=axis.transAxes, fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)

