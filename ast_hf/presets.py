"""The paper's three data sets as presets, one table: label list, fbank normalisation
statistics, clip length in frames and loss. The converters (`--dataset`), the fine-tuning recipes
(`dataset_preset`), the feature extractor's defaults (AudioSet) and the examples read them from here.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

# Label lists of the reference repository (copied from its egs/*/data), one CSV per data set.
DATA_DIR = Path(__file__).resolve().parent / "data"


# What each data set fixes: its labels file in DATA_DIR, the fbank mean/std of its training set (the inputs are
# normalised to mean 0, std 0.5), its clip length in frames (100 per second) and its loss.
DATASETS: dict[str, dict[str, Any]] = {
    "audioset": dict(labels="audioset_class_labels_indices.csv", mean=-4.2677393, std=4.5689974, max_length=1024,
                     problem_type="multi_label_classification"),
    "esc50": dict(labels="esc50_class_labels_indices.csv", mean=-6.6268077, std=5.358466, max_length=512,
                  problem_type="single_label_classification"),
    "speechcommands": dict(labels="speechcommands_class_labels_indices.csv", mean=-6.845978, std=5.5654526,
                           max_length=128, problem_type="single_label_classification"),
}


def read_labels(path: str | os.PathLike) -> list[str]:
    """Labels from a CSV with a `display_name` (or `label`/`name`) column ordered by `index`, like the files in
    ast_hf/data, or from a text file with one label a line."""
    import csv

    path = Path(path)
    if not path.is_file():
        raise ValueError(f"Labels file {str(path)!r} does not exist.")
    text = path.read_text(encoding="utf-8")
    lines = [line for line in text.splitlines() if line.strip()]
    if not lines:
        raise ValueError(f"Labels file {str(path)!r} is empty.")
    if path.suffix == ".csv":
        rows = list(csv.DictReader(lines))
        column = next((c for c in ("display_name", "label", "name") if c in rows[0]), None)
        if column is None:
            raise ValueError(f"{str(path)!r} has columns {list(rows[0])}; expected display_name, label or name.")
        if "index" in rows[0]:
            rows.sort(key=lambda row: int(row["index"]))
        return [row[column] for row in rows]
    return [line.strip() for line in lines]


def dataset_labels(dataset: str) -> list[str]:
    """The label names of a preset, in the order of its classifier's outputs."""
    return read_labels(DATA_DIR / dataset_settings(dataset)["labels"])


def dataset_settings(dataset: str) -> dict[str, Any]:
    """The preset of a data set by name; a ValueError naming the choices for any other name."""
    if dataset not in DATASETS:
        raise ValueError(f"dataset={dataset!r} is not a preset; choose one of {sorted(DATASETS)}.")
    return DATASETS[dataset]


__all__ = ["DATASETS", "DATA_DIR", "dataset_labels", "dataset_settings", "read_labels"]
