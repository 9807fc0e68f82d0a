"""Fine-tuning data: a DatasetDict from a Hub name, audiofolders or CSV/JSON files (one source), every clip
checked before training, labels encoded; the embedded espeak-ng data when none is given."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..audio_io import AUDIO_SUFFIXES, decoder_reason, wav_truncation
from .arguments import DataArguments


def check_one_data_source(args: DataArguments) -> None:
    """Refuse two data sources at once (one would silently win) and evaluation data without its training data."""
    given = [flag for flag, value in (("--dataset_name", args.dataset_name),
                                      ("--train_dir/--validation_dir", args.train_dir or args.validation_dir),
                                      ("--train_file/--validation_file", args.train_file or args.validation_file))
             if value]
    if len(given) > 1:
        raise ValueError(f"Give one data source, not {' and '.join(given)}: a data set by name, audiofolders, or "
                         "CSV/JSON files.")
    for evaluation, training_flag, value in (("--validation_dir", "--train_dir", args.train_dir),
                                             ("--validation_file", "--train_file", args.train_file)):
        if getattr(args, evaluation[2:]) and not value:
            raise ValueError(f"{evaluation} is given without {training_flag}; give the training data too.")


def _check_audio_folder(folder: str, flag: str) -> None:
    path = Path(folder)
    if not path.is_dir():
        raise ValueError(f"{flag} {folder!r} is not a folder. Give an audiofolder: {flag} DIR with DIR/<label>/"
                         "*.wav (one folder per class), or a metadata.csv with file_name and label columns.")
    if not any(p.suffix.lower() in AUDIO_SUFFIXES for p in path.rglob("*")):
        raise ValueError(f"{flag} {folder!r} holds no audio files ({', '.join(AUDIO_SUFFIXES)}).")


def _audiofolder_label_advice(folder: str, label_column: str) -> str:
    """Why an audiofolder has no label column: datasets infers labels only from two or more class folders."""
    classes = sorted(p.name for p in Path(folder).iterdir() if p.is_dir())
    found = f"{len(classes)} class folder{'s' * (len(classes) != 1)}" + (f" ({', '.join(classes[:5])})"
                                                                          if classes else "")
    return (f" The audiofolder {folder!r} has {found}: datasets takes each clip's label from its class folder "
            f"(DIR/<label>/clip.wav) only when there are two or more of them. Add the other classes' folders, or "
            f"a metadata.csv with file_name and {label_column!r} columns (or set --label_column_name to its label "
            "column).")


def _load_split(args: DataArguments, name: str, cache_dir: str | None, streaming: bool) -> Any:
    """One split ("train" or "validation") from the one data source in the arguments, None where that source has
    no such split; a `datasets.IterableDataset` when `streaming`."""
    import datasets

    if args.dataset_name:
        return datasets.load_dataset(args.dataset_name, args.dataset_config_name, cache_dir=cache_dir,
                                     split=args.train_split_name if name == "train" else args.eval_split_name,
                                     streaming=streaming)
    flag = "train" if name == "train" else "validation"
    if args.train_dir:
        folder = getattr(args, f"{flag}_dir")
        if not folder:
            return None
        _check_audio_folder(folder, f"--{flag}_dir")
        return datasets.load_dataset("audiofolder", data_dir=folder, split="train", streaming=streaming)
    if args.train_file:
        path = getattr(args, f"{flag}_file")
        if not path:
            return None
        if not os.path.isfile(path):
            raise ValueError(f"--{flag}_file {path!r} does not exist.")
        kind = "json" if path.endswith((".json", ".jsonl")) else "csv"
        try:
            split = datasets.load_dataset(kind, data_files=path, split="train", streaming=streaming)
        except ValueError as error:  # datasets: 'Instruction "train" corresponds to no data!'
            if "corresponds to no data" not in str(error):
                raise
            raise ValueError(f"{path} holds no rows (a header at most); add one row per clip.") from error
        if split.features is None:  # CSV/JSON streams learn their columns from the first rows
            split = split._resolve_features()
        if args.audio_column_name not in split.column_names:
            raise ValueError(f"{path} has no column {args.audio_column_name!r} (columns: {split.column_names}); "
                             "set --audio_column_name to the column that holds the audio paths.")
        return split.map(_resolve_row, fn_kwargs={"column": args.audio_column_name,
                                                  "base": os.path.dirname(os.path.abspath(path))})
    raise ValueError("Give a data set: --dataset_name, --train_dir (audiofolder) or --train_file (CSV/JSON).")


def load_audio_datasets(args: DataArguments, sampling_rate: int = 16000, cache_dir: str | None = None,
                        stream_train: bool = False):
    """A DatasetDict with "train" and (where the source has one) "validation" from a Hub name, audiofolders or
    CSV/JSON files, the audio column cast to `datasets.Audio(sampling_rate)` (resampled on decode) and every clip
    checked. `stream_train` (--streaming): "train" is a `datasets.IterableDataset` instead, its audio left
    undecoded ({"bytes", "path"} cells) and unchecked (a stream is checked as it is decoded)."""
    import datasets

    check_one_data_source(args)
    raw = datasets.DatasetDict()
    for name in ("train", "validation"):
        split = _load_split(args, name, cache_dir, streaming=stream_train and name == "train")
        if split is not None:
            raw[name] = split
    if "train" not in raw:
        raise ValueError("No training split was found; check --train_split_name / --train_dir / --train_file.")
    for name in list(raw):
        split, streamed = raw[name], isinstance(raw[name], datasets.IterableDataset)
        if split.features is None:  # a stream that learns its columns from the first rows
            split = split._resolve_features()
        if args.audio_column_name not in split.column_names:
            raise ValueError(f"Split {name!r} has no column {args.audio_column_name!r} (columns: "
                             f"{split.column_names}); set --audio_column_name.")
        if args.label_column_name not in split.column_names:
            folder = args.train_dir if name == "train" else args.validation_dir
            advice = _audiofolder_label_advice(folder, args.label_column_name) if folder else ""
            raise ValueError(f"Split {name!r} has no column {args.label_column_name!r} (columns: "
                             f"{split.column_names}); set --label_column_name.{advice}")
        if getattr(split.features[args.audio_column_name], "dtype", None) == "large_string":
            split = split.cast_column(args.audio_column_name, datasets.Value("string"))  # Arrow casts only `string`
        if streamed:
            raw[name] = split.cast_column(args.audio_column_name, datasets.Audio(decode=False))
            continue
        split = split.cast_column(args.audio_column_name, datasets.Audio(sampling_rate=sampling_rate))
        raw[name] = check_audio_files(split, args.audio_column_name, name, skip=args.skip_bad_audio,
                                      mode=args.check_audio)
    return raw


def _audio_problem(cell: Mapping[str, Any], decode: bool = True) -> str | None:
    """Why one undecoded audio cell ({"path", "bytes"}) cannot be used, None when it can. `decode`: decode it fully
    with torchcodec (FFmpeg), the decoder datasets uses in training, and check the samples; else read the header."""
    import io

    import soundfile

    path, data = cell.get("path"), cell.get("bytes")
    if data is None and (not path or not os.path.isfile(path)):
        return "file not found"
    truncated = wav_truncation(path if data is None else data)
    if truncated:
        return truncated
    if decode:
        try:
            from torchcodec.decoders import AudioDecoder

            samples = AudioDecoder(data if data is not None else path).get_all_samples().data  # (channels, N)
        except Exception as error:  # noqa: BLE001 (any failure means: training could not decode it either)
            if "No audio frames were decoded" in str(error):
                return "no audio samples (an empty file)"
            return f"FFmpeg cannot decode it ({decoder_reason(error)})"
        if samples.numel() == 0:
            return "no audio samples (an empty file)"
        if not bool(torch.isfinite(samples).all()):
            return "NaN or Inf samples"
        return None
    try:
        if soundfile.info(io.BytesIO(data) if data is not None else path).frames == 0:
            return "no audio samples (an empty file)"
        return None
    except Exception:  # formats libsndfile does not read (m4a, ...): ask FFmpeg, which decodes them in training
        try:
            from torchcodec.decoders import AudioDecoder

            AudioDecoder(data if data is not None else path).metadata  # noqa: B018 (reads the header)
            return None
        except Exception as error:  # noqa: BLE001 (any failure means: not readable audio)
            return f"not readable audio ({decoder_reason(error)})"


def check_audio_files(split: Any, column: str, name: str, skip: bool = False, workers: int = 8,
                      mode: str = "decode") -> Any:
    """Check every clip of a split up front (mode "decode": the file exists, decodes and holds finite samples;
    "header": it exists and its header reads; "none": no check), in parallel, with a progress bar on large sets;
    report all bad files at once, or drop them with a warning when `skip`. Without this a bad file crashes training
    at the first batch that holds it, with a decoder error that does not name the file."""
    from concurrent.futures import ThreadPoolExecutor
    from functools import partial

    if mode not in ("decode", "header", "none"):
        raise ValueError(f"--check_audio {mode!r}: use 'decode', 'header' or 'none'.")
    if mode == "none":
        return split

    import datasets
    from tqdm.auto import tqdm

    undecoded = split.select_columns([column]).cast_column(column, datasets.Audio(decode=False))
    bad: list[tuple[int, str, str]] = []
    with ThreadPoolExecutor(max_workers=workers) as pool, tqdm(total=len(split), desc=f"checking {name} audio",
                                                                 disable=len(split) < 2000) as progress:
        for start in range(0, len(split), 1000):  # chunks: embedded audio bytes never all in memory at once
            cells = undecoded[start:start + 1000][column]
            for offset, problem in enumerate(pool.map(partial(_audio_problem, decode=mode == "decode"), cells)):
                if problem:
                    bad.append((start + offset, cells[offset].get("path") or f"row {start + offset}", problem))
            progress.update(len(cells))
    if not bad:
        return split
    listing = "\n".join(f"  {path}: {problem}" for _, path, problem in bad[:20])
    more = f"\n  ... and {len(bad) - 20} more" if len(bad) > 20 else ""
    if not skip:
        raise ValueError(f"{len(bad)} of {len(split)} {name} clips cannot be read:\n{listing}{more}\nFix or remove "
                         "them, or pass --skip_bad_audio to train without them.")
    import warnings

    warnings.warn(f"skipping {len(bad)} of {len(split)} {name} clips that cannot be read:\n{listing}{more}",
                  stacklevel=2)
    dropped = {i for i, _, _ in bad}
    return split.select([i for i in range(len(split)) if i not in dropped])


def _resolve_row(row: Mapping[str, Any], column: str, base: str) -> dict[str, Any]:
    """Paths in a CSV/JSON file are relative to the file's folder."""
    path = row[column]
    return {column: os.path.join(base, path) if isinstance(path, str) and not os.path.isabs(path) else path}


def label_names(dataset: Any, label_column: str) -> tuple[list[str], bool]:
    """(label names in id order, multi_label) of a training split, or of a stream (--streaming; its label column
    alone is read, no audio): ClassLabel names, sorted string labels, or the union of list-of-labels cells
    (multi-label, AudioSet style)."""
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
                         f"(rows {empty[:10]}{'...' if len(empty) > 10 else ''}, counting from 0 after the header); "
                         "fill them in or remove those rows. An empty label is never made a class of its own.")
    multi = any(isinstance(v, (list, tuple)) for v in values)
    if multi:
        return sorted({str(x) for v in values for x in v}), True
    if values and all(isinstance(v, (int, np.integer)) for v in values):
        return [str(i) for i in range(max(values) + 1)], False
    return sorted({str(v) for v in values}), False


def encode_label(value: Any, label2id: Mapping[str, int], multi_label: bool, labels_source: str | None = None) -> Any:
    """A cell of the label column -> class index (single-label) or list of indices (multi-label). `labels_source`:
    where `label2id` came from (e.g. "--labels_file F"), named when a label is not in it."""
    def one(x: Any) -> int:
        if isinstance(x, (int, np.integer)) and not isinstance(x, bool):
            return int(x)
        if x is None or (isinstance(x, str) and not x.strip()):
            raise ValueError("A clip has no label (an empty cell in the label column); fill it in or remove the row.")
        if str(x) not in label2id:
            where = (f" The training labels come from {labels_source}: add the missing label there."
                     if labels_source else "")
            raise ValueError(f"Label {x!r} is not among the training labels {sorted(label2id)[:10]}...{where}")
        return label2id[str(x)]
    if multi_label:
        return [one(x) for x in (value if isinstance(value, (list, tuple)) else [value])]
    return one(value)


def encode_label_column(dataset: Any, column: str, label2id: Mapping[str, int], multi_label: bool,
                        labels_source: str | None = None) -> Any:
    """The label column of every split as class indices (int64) or lists of indices (multi-label)."""
    import datasets

    def encode(row: Mapping[str, Any]) -> dict[str, Any]:
        return {column: encode_label(row[column], label2id, multi_label, labels_source)}

    def encoded(split: Any) -> Any:
        features = split.features.copy()
        features[column] = datasets.Sequence(datasets.Value("int64")) if multi_label else datasets.Value("int64")
        return split.map(encode, features=features)

    if isinstance(dataset, datasets.DatasetDict):
        return datasets.DatasetDict({name: encoded(split) for name, split in dataset.items()})
    return encoded(dataset)


def embedded_data(data_args: DataArguments) -> str:
    """Build (once) the espeak-ng spoken-command data and point the arguments at it; returns its description."""
    from ..espeak_commands import CommandsSpec, build_commands_dataset

    spec = CommandsSpec(clips_per_word=data_args.commands_clips_per_word,
                        eval_clips_per_word=data_args.commands_eval_clips_per_word)
    root = build_commands_dataset(spec)
    data_args.train_dir, data_args.validation_dir = str(root / "train"), str(root / "validation")
    return (f"espeak-ng spoken commands ({spec.clips_per_word} training clips per word in "
            f"{len(spec.train_accents)} accents; evaluation on held-out accents {', '.join(spec.eval_accents)})")


def labels_source(data_args: DataArguments) -> str | None:
    """Where a run's label list comes from when it is not the training data itself: --labels_file (--streaming)."""
    return f"--labels_file {data_args.labels_file}" if data_args.streaming and data_args.labels_file else None


def prepare_data(data_args: DataArguments, seed: int, cache_dir: str | None = None):
    """(DatasetDict with encoded labels, label names, multi_label, description of the data). Without a data set
    in the arguments, the embedded espeak-ng commands. Call it inside `main_process_first()`."""
    check_one_data_source(data_args)
    description = data_args.dataset_name or data_args.train_dir or data_args.train_file
    if not description:
        description = embedded_data(data_args)
    raw = load_audio_datasets(data_args, cache_dir=cache_dir, stream_train=data_args.streaming)
    if data_args.streaming:  # the training split an undecoded stream, its labels encoded as it is read
        from .streaming import stream_label_names

        train = raw.pop("train")
        labels, multi_label = stream_label_names(train, data_args)
    else:
        labels, multi_label = label_names(raw["train"], data_args.label_column_name)
    raw = encode_label_column(raw, data_args.label_column_name, {label: i for i, label in enumerate(labels)},
                              multi_label, labels_source(data_args))
    if data_args.streaming:
        raw["train"] = train.take(data_args.max_train_samples) if data_args.max_train_samples else train
    else:
        if data_args.max_train_samples:
            raw["train"] = raw["train"].shuffle(seed=seed).select(range(min(data_args.max_train_samples,
                                                                            len(raw["train"]))))
        raw["train"] = raw["train"].add_column("_row", list(range(len(raw["train"]))))  # seeds the augmentation
    if "validation" in raw and data_args.max_eval_samples:
        raw["validation"] = raw["validation"].select(range(min(data_args.max_eval_samples, len(raw["validation"]))))
    return raw, labels, multi_label, description
