"""Fine-tuning labels: label cells read as names (strings, integers, ClassLabel positions, lists for multi-label),
the label set of a split, and every split encoded by name against the run's labels, unknown and empty labels
refused naming the split, the label and its files or rows."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from typing import Any

import numpy as np


def label_cell(value: Any, separator: str | None = None) -> Any:
    """One cell of a label column as a label or a list of labels.

    A list stays a list. A string that holds a list becomes one: a JSON list (`["apple", "river"]`, how a CSV cell
    holds several labels) or Python's `['apple', 'river']`; so does every string when `separator` is given
    (`apple;river`). Anything else (a label name, an integer) is returned as it is.

    Args:
        value: The cell.
        separator: `--label_separator`: the string between the labels of a cell.

    Returns:
        The cell's labels as a list (of strings, when parsed from a string), or `value` itself.

    Raises:
        ValueError: When a string starts like a list (`[`) but is not one.
    """
    if not isinstance(value, str):
        return value
    text = value.strip()
    if separator:
        return [part.strip() for part in text.split(separator) if part.strip()]
    if not text.startswith("["):
        return value
    import ast

    try:
        parsed = json.loads(text)
    except json.JSONDecodeError:
        try:
            parsed = ast.literal_eval(text)  # literals only: never runs code
        except (ValueError, SyntaxError):
            raise ValueError(f"Label cell {value!r} starts like a list of labels but is not one. Write several labels "
                             'as a JSON list (a CSV cell: "[""apple"", ""river""]"), or join them with a separator '
                             "and pass --label_separator (e.g. apple;river with --label_separator ';').") from None
    if not isinstance(parsed, (list, tuple)):
        return value
    return [str(x) for x in parsed]


def split_label_names(split: Any, column: str) -> list[str] | None:
    """The class names that a split's label column stores as integers.

    Such a column is a `ClassLabel`, or a list of `ClassLabel`s: audiofolders, `save_to_disk` or parquet data with
    class names.

    Args:
        split: A `datasets.Dataset` or `datasets.IterableDataset`.
        column: The label column.

    Returns:
        The class names in id order, or `None` when the column's cells are the labels themselves.
    """
    feature = (split.features or {}).get(column)
    names = getattr(feature, "names", None)
    if names is None:
        names = getattr(getattr(feature, "feature", None), "names", None)
    return list(names) if names is not None else None


def label_names(dataset: Any, label_column: str, separator: str | None = None) -> tuple[list[str], bool]:
    """The label names of a training split, and whether it is multi-label.

    The names are the column's `ClassLabel` names, else the sorted string labels, the sorted distinct integers of an
    integer column (each integer is a class name: 10, 20, 30, 40 make four classes, not 41), or the union of lists
    of labels (multi-label, AudioSet style; see `label_cell` for the cell formats). Of a stream, the label column
    alone is read, no audio.

    Args:
        dataset: A training `datasets.Dataset`, or a `datasets.IterableDataset` (`--streaming`).
        label_column: The label column.
        separator: `--label_separator`: the string between the labels of a cell.

    Returns:
        `(names, multi_label)`: the label names in id order, and whether the cells are lists of labels.

    Raises:
        ValueError: When rows have no label (an empty label is never made a class of its own), or a cell starts
            like a list but is not one.
    """
    feature = dataset.features[label_column]
    names = getattr(feature, "names", None)
    if names is not None:
        return list(names), False
    inner = getattr(feature, "feature", None)
    if inner is not None and getattr(inner, "names", None) is not None:
        return list(inner.names), True
    import datasets

    values = (list(dataset[label_column]) if isinstance(dataset, datasets.Dataset)
              else [row[label_column] for row in dataset.select_columns([label_column])])
    empty = [i for i, v in enumerate(values) if v is None or (isinstance(v, str) and not v.strip())]
    if empty:
        raise ValueError(f"{len(empty)} of {len(values)} training rows have no label in column {label_column!r} "
                         f"(rows {_some(empty)}, counting from 0 after the header); fill them in or remove those "
                         "rows. An empty label is never made a class of its own.")
    values = [label_cell(v, separator) for v in values]
    if any(isinstance(v, (list, tuple)) for v in values):
        return sorted({str(x) for v in values for x in (v if isinstance(v, (list, tuple)) else [v])}), True
    if values and all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in values):
        return [str(i) for i in sorted({int(v) for v in values})], False
    return sorted({str(v) for v in values}), False


def _some(items: list[Any], count: int = 10) -> str:
    """The first `count` items, and how many more."""
    shown = ", ".join(map(str, items[:count]))
    return shown + (f" and {len(items) - count} more" if len(items) > count else "")


def _label_keys(value: Any, names: list[str] | None, separator: str | None) -> tuple[list[Any], bool]:
    """The class names in one label cell, and whether it held a list. An integer is a position in the split's
    ClassLabel `names` (an int left in the list when it is outside them, -1 meaning no label) or, without names,
    a class name itself ("10"); a missing label is None."""
    cell = label_cell(value, separator)
    is_list = isinstance(cell, (list, tuple))
    keys: list[Any] = []
    for x in cell if is_list else [cell]:
        if isinstance(x, (int, np.integer)) and not isinstance(x, bool):
            x = int(x) if names is None or not 0 <= int(x) < len(names) else names[int(x)]
            x = str(x) if names is None else x
        keys.append(None if x is None or (isinstance(x, str) and not x.strip()) else x)
    return keys, is_list


def encode_label(value: Any, label2id: Mapping[str, int], multi_label: bool, labels_source: str | None = None,
                 names: list[str] | None = None, separator: str | None = None) -> Any:
    """Encode a cell of the label column as a class index, or a list of indices (multi-label), by name.

    Args:
        value: The cell: a label, an integer, a list of labels, or a string that holds one (see `label_cell`).
        label2id: The class index of each label name.
        multi_label: Whether to return a list of indices.
        labels_source: Where `label2id` came from (e.g. `"--labels_file F"`), named when a label is not in it.
        names: The split's own `ClassLabel` names: its integers are positions in them (which differ between splits
            that do not hold the same classes). Without them an integer is a class name (`10` is `"10"`).
        separator: `--label_separator`: the string between the labels of a cell.

    Returns:
        The class index, or the list of indices when `multi_label`.

    Raises:
        ValueError: When a label is missing (an empty cell, or an id outside `names`; -1 means no label), is not
            in `label2id`, or the cell holds a list but `multi_label` is false.
    """
    keys, is_list = _label_keys(value, names, separator)

    def one(key: Any) -> int:
        if isinstance(key, int):
            raise ValueError(f"A clip has label id {key}, outside its ClassLabel's {len(names)} names (-1 means no "
                             "label); give every clip a label.")
        if key is None:
            raise ValueError("A clip has no label (an empty cell in the label column); fill it in or remove the row.")
        if str(key) not in label2id:
            where = f" The labels come from {labels_source}: add the missing label there." if labels_source else ""
            raise ValueError(f"Label {str(key)!r} is not among the training labels ({_some(sorted(label2id))})."
                             f"{where}")
        return label2id[str(key)]
    if multi_label:
        return [one(key) for key in keys]
    if is_list:
        raise ValueError(f"A clip has a list of labels {keys}, but the training data has one label per clip "
                         "(single-label). Give lists in the training data too to train a multi-label model.")
    return one(keys[0])


def check_split_labels(split: Any, column: str, label2id: Mapping[str, int], multi_label: bool, where: str,
                       audio_column: str = "audio", labels_source: str = "the training data",
                       separator: str | None = None) -> list[Any]:
    """Encode the label column of a loaded split by name, refusing unknown and missing labels before training.

    Every label that `label2id` lacks, and every empty cell, is reported at once, naming the split, the labels and
    their files or rows.

    Args:
        split: A `datasets.Dataset`.
        column: The label column.
        label2id: The class index of each label name.
        multi_label: Whether the labels are lists of labels.
        where: The split's name in messages.
        audio_column: The audio column, whose file names the messages show.
        labels_source: Where the classes come from, in messages.
        separator: `--label_separator`: the string between the labels of a cell.

    Returns:
        The encoded labels, one a row: a class index, or a list of indices when `multi_label`.

    Raises:
        ValueError: When a row holds a list of labels but `multi_label` is false, or labels are unknown or
            missing.
    """
    import datasets

    names = split_label_names(split, column)
    encoded: list[Any] = []
    unknown: dict[str, list[int]] = {}
    empty: list[int] = []
    for row, value in enumerate(split[column]):
        keys, is_list = _label_keys(value, names, separator)
        if is_list and not multi_label:
            raise ValueError(f"{where}: row {row} has a list of labels {keys}, but the training data has one label "
                             "per clip (single-label). Give lists in the training data too to train a multi-label "
                             "model.")
        for key in keys:
            if key is None or isinstance(key, int):  # no label, or an id outside the ClassLabel (-1: no label)
                empty.append(row)
            elif str(key) not in label2id:
                unknown.setdefault(str(key), []).append(row)
        ids = [label2id.get(str(key)) for key in keys]
        encoded.append(ids if multi_label else ids[0])
    if not unknown and not empty:
        return encoded
    paths = split.select_columns([audio_column]).cast_column(audio_column, datasets.Audio(decode=False))

    def files(rows: list[int]) -> str:
        cells = paths.select(rows[:3])[audio_column]
        shown = [os.path.basename(c.get("path") or "") or f"row {r}" for r, c in zip(rows, cells, strict=False)]
        return ", ".join(shown) + (f" and {len(rows) - 3} more" if len(rows) > 3 else "")
    problems = [f"{where}: {len(rows)} clip{'s' * (len(rows) != 1)} labelled {label!r} ({files(rows)})"
                for label, rows in sorted(unknown.items())]
    if problems:
        problems.append(f"{'These labels are' if len(unknown) > 1 else 'This label is'} not among the classes of "
                        f"{labels_source} ({len(label2id)}: {_some(list(label2id), 20)}), so those clips cannot be "
                        f"scored. Remove them, or {_fix_for_unknown(labels_source)}.")
    if empty:
        problems.append(f"{where}: {len(empty)} clip{'s' * (len(empty) != 1)} without a label (rows "
                        f"{_some(empty)}, counting from 0; {files(empty)}); fill the labels in or remove them.")
    raise ValueError("\n".join(problems))


def _fix_for_unknown(labels_source: str) -> str:
    if labels_source.startswith("the model"):
        return "fine-tune the model on data with those classes (leave --do_train false out)"
    return f"add the class to {labels_source}"


def encode_label_column(dataset: Any, column: str, label2id: Mapping[str, int], multi_label: bool,
                        labels_source: str | None = None, audio_column: str = "audio",
                        separator: str | None = None, sources: Mapping[str, str] | None = None) -> Any:
    """Replace the label column of every split by class indices, mapped by name.

    Each split is read with its own `ClassLabel` names, not its integers, and checked with `check_split_labels`,
    which refuses unknown or missing labels up front. The column keeps its place, now `int64`, or lists of `int64`
    (multi-label).

    Args:
        dataset: A `datasets.DatasetDict`, or one `datasets.Dataset`.
        column: The label column.
        label2id: The class index of each label name.
        multi_label: Whether the labels are lists of labels.
        labels_source: Where `label2id` came from, in messages; `None`: the training data.
        audio_column: The audio column, whose file names the messages show.
        separator: `--label_separator`: the string between the labels of a cell.
        sources: The name of each split in messages, by split (e.g. `split_sources`); else the split's key.

    Returns:
        The data as given (a `DatasetDict` or a `Dataset`), its label column encoded.

    Raises:
        ValueError: When labels are unknown or missing (`check_split_labels`).
    """
    import datasets

    def encoded(split: Any, name: str = "the split") -> Any:
        values = check_split_labels(split, column, label2id, multi_label, (sources or {}).get(name, name),
                                    audio_column, labels_source or "the training data", separator)
        feature = datasets.List(datasets.Value("int64")) if multi_label else datasets.Value("int64")
        position = split.column_names.index(column)
        split = split.remove_columns([column]).add_column(column, values, feature=feature)
        order = split.column_names[:-1]
        return split.select_columns([*order[:position], column, *order[position:]])

    if isinstance(dataset, datasets.DatasetDict):
        return datasets.DatasetDict({name: encoded(split, name) for name, split in dataset.items()})
    return encoded(dataset)


__all__ = ["check_split_labels", "encode_label", "encode_label_column", "label_cell", "label_names",
           "split_label_names"]
