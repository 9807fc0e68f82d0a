"""Evaluation metrics as evaluate Metric classes (usable offline, where evaluate.load would fetch scripts from the
Hub): accuracy; mAP, mAUC and d-prime for multi-label data."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np


def _metric_base():
    import datasets
    import evaluate

    def info(description: str, inputs: str, references: Any) -> Any:
        scores = datasets.Sequence(datasets.Value("float32"))  # one row of logits or scores per clip
        return evaluate.MetricInfo(description=description, citation="", inputs_description=inputs,
                                   features=datasets.Features({"predictions": scores, "references": references}))

    class AccuracyMetric(evaluate.Metric):
        """Top-1 accuracy: argmax of the logits equals the class index."""

        def _info(self):
            return info("Top-1 accuracy of audio classification logits.",
                        "predictions: logits (N, C); references: class indices (N,)", datasets.Value("int64"))

        def _compute(self, predictions, references):
            predicted = np.asarray(predictions).argmax(axis=1)
            return {"accuracy": float((predicted == np.asarray(references)).mean())}

    class MultiLabelMetric(evaluate.Metric):
        """AudioSet metrics: mean average precision, mean ROC AUC over classes with positives, d-prime."""

        def _info(self):
            return info("mAP, mAUC and d-prime of multi-label audio tagging.",
                        "predictions: scores (N, C); references: multi-hot (N, C)",
                        datasets.Sequence(datasets.Value("float32")))

        def _compute(self, predictions, references):
            return multi_label_scores(np.asarray(predictions), np.asarray(references))

    return AccuracyMetric, MultiLabelMetric


def multi_label_scores(scores: np.ndarray, targets: np.ndarray) -> dict[str, float]:
    """Score multi-label predictions as AudioSet is scored: mAP, mAUC and d-prime.

    Per-class average precision and ROC AUC (scikit-learn), averaged over the classes that have both positives and
    negatives; d-prime = sqrt(2) * Phi^-1(mAUC).

    Args:
        scores: Scores (e.g. sigmoid probabilities) of shape (clips, classes).
        targets: Targets of the same shape; values >= 0.5 count as positive (so soft targets work).

    Returns:
        `{"mAP", "mAUC", "d_prime"}`; all NaN when no class has both positives and negatives.
    """
    from scipy.stats import norm
    from sklearn.metrics import average_precision_score, roc_auc_score

    targets = (targets >= 0.5).astype(int)
    aps, aucs = [], []
    for c in range(targets.shape[1]):
        positives = targets[:, c].sum()
        if 0 < positives < targets.shape[0]:
            aps.append(average_precision_score(targets[:, c], scores[:, c]))
            aucs.append(roc_auc_score(targets[:, c], scores[:, c]))
    if not aps:
        return {"mAP": float("nan"), "mAUC": float("nan"), "d_prime": float("nan")}
    m_auc = float(np.mean(aucs))
    return {"mAP": float(np.mean(aps)), "mAUC": m_auc, "d_prime": float(math.sqrt(2) * norm.ppf(m_auc))}


def classification_metric(multi_label: bool):
    """Build the evaluation metric as an `evaluate.Metric`, usable offline.

    `evaluate.load` would fetch metric scripts from the Hub; these classes are defined here instead.

    Args:
        multi_label: Multi-label data (mAP, mAUC, d-prime of scores against multi-hot targets) instead of
            single-label (top-1 accuracy of logits against class indices).

    Returns:
        (evaluate.Metric): The metric; its `compute(predictions=..., references=...)` returns `{"accuracy"}` or
            `{"mAP", "mAUC", "d_prime"}` (see `multi_label_scores`).
    """
    accuracy, multi = _metric_base()
    return multi() if multi_label else accuracy()


def classification_scores(logits: np.ndarray, labels: np.ndarray, multi_label: bool,
                          metric: Any = None) -> dict[str, float]:
    """Score an evaluation's logits: accuracy, or mAP/mAUC/d-prime for multi-label data.

    Args:
        logits: The model's logits, shape (N, C).
        labels: Single-label: class indices (N,), or soft targets (N, C) (mixup), which count as their dominant
            class. Multi-label: multi-hot targets (N, C).
        multi_label: Score sigmoid(logits) against multi-hot targets with `multi_label_scores` instead of the
            top-1 accuracy.
        metric: The metric to compute with; by default a new `classification_metric(multi_label)`.

    Returns:
        `{"accuracy"}`, or `{"mAP", "mAUC", "d_prime"}` for multi-label data.
    """
    metric = metric or classification_metric(multi_label)
    if multi_label:
        return metric.compute(predictions=1 / (1 + np.exp(-logits)), references=labels)
    if labels.ndim == 2:  # soft targets of mixup in evaluation: take the dominant class
        labels = labels.argmax(axis=1)
    return metric.compute(predictions=logits, references=labels)


def compute_metrics_fn(multi_label: bool) -> Callable[[Any], dict[str, float]]:
    """Build a Trainer `compute_metrics` function: `classification_scores` of the evaluation's predictions.

    Args:
        multi_label: Score multi-label data (mAP, mAUC, d-prime) instead of accuracy.

    Returns:
        A function of the Trainer's `EvalPrediction` (its predictions, or their first element when a tuple, are the
            logits) returning the scores of `classification_scores`.

    Example:
        ```python
        trainer = Trainer(..., compute_metrics=compute_metrics_fn(multi_label=False))
        ```
    """
    metric = classification_metric(multi_label)

    def compute(prediction: Any) -> dict[str, float]:
        logits = prediction.predictions[0] if isinstance(prediction.predictions, tuple) else prediction.predictions
        return classification_scores(logits, prediction.label_ids, multi_label, metric)

    return compute


def confusion_matrix(logits: np.ndarray, labels: np.ndarray, num_labels: int) -> np.ndarray:
    """Count (true, predicted) class pairs.

    Args:
        logits: Logits or scores, shape (N, C); the prediction is their argmax.
        labels: True class indices, shape (N,).
        num_labels: The number of classes C.

    Returns:
        An int64 matrix of shape (C, C): row = true class, column = predicted class.
    """
    matrix = np.zeros((num_labels, num_labels), dtype=np.int64)
    np.add.at(matrix, (np.asarray(labels), np.asarray(logits).argmax(axis=1)), 1)
    return matrix
