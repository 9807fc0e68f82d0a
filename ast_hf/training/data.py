"""Fine-tuning data: a DatasetDict from a Hub name, audiofolders or CSV/JSON files (one source), every clip
checked before training, labels encoded; the embedded espeak-ng data when none is given."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, NamedTuple

import torch

from ..audio_io import AUDIO_SUFFIXES, decoder_reason, wav_truncation
from .arguments import UNTRAINED_EVALUATION, DataArguments
from .labels import (  # noqa: F401 (the label functions are also importable from here)
    _some,
    check_split_labels,
    encode_label,
    encode_label_column,
    label_cell,
    label_names,
    split_label_names,
)


def check_one_data_source(args: DataArguments, train: bool = True) -> None:
    """Refuse two data sources at once, and evaluation data without its training data in a run that trains.

    Of two sources, one would silently win. An evaluation-only run may give the evaluation data alone.

    Args:
        args: The data arguments.
        train: Whether the run trains.

    Raises:
        ValueError: When more than one of `--dataset_name`, `--train_dir`/`--validation_dir` and
            `--train_file`/`--validation_file` is given or, when `train`, `--validation_dir` is given without
            `--train_dir` or `--validation_file` without `--train_file`.
    """
    given = [flag for flag, value in (("--dataset_name", args.dataset_name),
                                      ("--train_dir/--validation_dir", args.train_dir or args.validation_dir),
                                      ("--train_file/--validation_file", args.train_file or args.validation_file))
             if value]
    if len(given) > 1:
        raise ValueError(f"Give one data source, not {' and '.join(given)}: a data set by name, audiofolders, or "
                         "CSV/JSON files.")
    for evaluation, training_flag, value in (("--validation_dir", "--train_dir", args.train_dir),
                                             ("--validation_file", "--train_file", args.train_file)):
        if train and getattr(args, evaluation[2:]) and not value:
            raise ValueError(f"{evaluation} is given without {training_flag}; give the training data too (or pass "
                             "--do_train false to only evaluate a fine-tuned --model_name_or_path on it).")


def split_sources(args: DataArguments) -> dict[str, str]:
    """Where each split comes from, as messages and the model card name it.

    Args:
        args: The data arguments.

    Returns:
        A description of each split's source by split, `"train"` and `"validation"`: e.g. `"split 'train' of
            esc50"`, `"--train_dir data/train"` or `"--validation_file eval.csv"`.
    """
    if args.dataset_name:
        return {"train": f"split {args.train_split_name!r} of {args.dataset_name}",
                "validation": f"split {args.eval_split_name!r} of {args.dataset_name}"}
    if args.train_dir or args.validation_dir:
        return {"train": f"--train_dir {args.train_dir}", "validation": f"--validation_dir {args.validation_dir}"}
    return {"train": f"--train_file {args.train_file}", "validation": f"--validation_file {args.validation_file}"}


def _check_audio_folder(folder: str, flag: str) -> None:
    path = Path(folder)
    if not path.is_dir():
        raise ValueError(f"{flag} {folder!r} is not a folder. Give an audiofolder: {flag} DIR with DIR/<label>/"
                         "*.wav (one folder per class), or a metadata.csv with file_name and label columns.")
    if not any(p.suffix.lower() in AUDIO_SUFFIXES for p in path.rglob("*")):
        raise ValueError(f"{flag} {folder!r} holds no audio files ({', '.join(AUDIO_SUFFIXES)}).")
    empty = sorted(p.name for p in path.iterdir() if p.is_dir() and not any(
        q.suffix.lower() in AUDIO_SUFFIXES for q in p.rglob("*")))
    if empty:
        import warnings

        one = len(empty) == 1
        what = "it is not a class" if one else "they are not classes"
        warnings.warn(f"{flag} {folder!r}: the class folder{'' if one else 's'} {', '.join(map(repr, empty))} "
                      f"hold{'s' if one else ''} no audio files, so {what} of this run; add clips or remove the "
                      "folder.", stacklevel=2)


def _audiofolder_label_advice(folder: str, label_column: str) -> str:
    """Why an audiofolder has no label column: datasets infers labels only from two or more class folders."""
    classes = sorted(p.name for p in Path(folder).iterdir() if p.is_dir())
    found = f"{len(classes)} class folder{'s' * (len(classes) != 1)}" + (f" ({', '.join(classes[:5])})"
                                                                          if classes else "")
    return (f" The audiofolder {folder!r} has {found}: datasets takes each clip's label from its class folder "
            f"(DIR/<label>/clip.wav) only when there are two or more of them. Add the other classes' folders, or "
            f"a metadata.csv with file_name and {label_column!r} columns (or set --label_column_name to its label "
            "column).")


def _saved_to_disk(path: str, split: str, role: str = "train") -> Any:
    """Split `split` of a `save_to_disk` folder (a DatasetDict's dataset_dict.json beside one folder per split),
    read with `load_from_disk`, None for any other --dataset_name. `load_dataset` on such a folder gives every split
    the first split's features, so an evaluation split whose ClassLabel lacks a training class has its integers
    read with the training names (wrong labels, silently). A single saved `Dataset` (state.json, no splits) is the
    training split (`role` "train") and has no evaluation split (None for "validation")."""
    import datasets

    folder = Path(path)
    if (folder / "state.json").is_file() and (folder / "dataset_info.json").is_file():
        return datasets.load_from_disk(str(folder)) if role == "train" else None
    if not (folder / "dataset_dict.json").is_file():
        return None
    splits = datasets.load_from_disk(str(folder))
    if split not in splits:
        raise ValueError(f"The saved data set {path!r} has no split {split!r} (splits: {sorted(splits)}); set "
                         "--train_split_name / --eval_split_name.")
    return splits[split]


def _split_with_its_own_features(path: str, config: str | None, split: str, cache_dir: str | None,
                                 streaming: bool) -> Any:
    """Split `split` of a local folder of parquet or arrow files read from its own files alone, None for any other
    data set. `load_dataset` on the folder gives every split the features of the first split's files, so the
    integers of an evaluation split whose ClassLabel lacks a training class would be read with the training names.
    Each file keeps its split's ClassLabel names in its schema metadata; read alone, they are used."""
    import datasets

    if not Path(path).is_dir():
        return None
    builder = datasets.load_dataset_builder(path, config, cache_dir=cache_dir)
    files = (builder.config.data_files or {}).get(split)
    if builder.name not in ("parquet", "arrow") or not files:
        return None
    return datasets.load_dataset(builder.name, data_files=list(files), split="train", cache_dir=cache_dir,
                                 streaming=streaming)


def _load_split(args: DataArguments, name: str, cache_dir: str | None, streaming: bool) -> Any:
    """One split ("train" or "validation") from the one data source in the arguments, None where that source has
    no such split; a `datasets.IterableDataset` when `streaming`."""
    import datasets

    if args.dataset_name:
        split_name = args.train_split_name if name == "train" else args.eval_split_name
        if (Path(args.dataset_name) / "state.json").is_file():  # one saved Dataset: the training split alone
            saved = _saved_to_disk(args.dataset_name, split_name, name)
            return None if saved is None else saved.to_iterable_dataset() if streaming else saved
        saved = _saved_to_disk(args.dataset_name, split_name, name)
        if saved is not None:
            return saved.to_iterable_dataset() if streaming else saved
        own = _split_with_its_own_features(args.dataset_name, args.dataset_config_name, split_name, cache_dir,
                                           streaming)
        if own is not None:
            return own
        return datasets.load_dataset(args.dataset_name, args.dataset_config_name, cache_dir=cache_dir,
                                     split=split_name, streaming=streaming)
    flag = "train" if name == "train" else "validation"
    if args.train_dir or args.validation_dir:
        folder = getattr(args, f"{flag}_dir")
        if not folder:
            return None
        _check_audio_folder(folder, f"--{flag}_dir")
        return datasets.load_dataset("audiofolder", data_dir=folder, split="train", streaming=streaming)
    if args.train_file or args.validation_file:
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
                        stream_train: bool = False, train: bool = True, dropped: dict[str, int] | None = None,
                        labelled: bool = True, optional_validation: bool = False):
    """Load the training and evaluation splits from the one data source of the arguments, every clip checked.

    The source is a data set by name (`--dataset_name`: a Hub id or a local `save_to_disk` or parquet folder),
    audiofolders (`--train_dir`, `--validation_dir`) or CSV/JSON files (`--train_file`, `--validation_file`, whose
    audio paths are relative to the file's folder). The audio column is cast to `datasets.Audio(sampling_rate)`
    (resampled on decode), and every clip is checked with `check_audio_files` (`--check_audio`,
    `--skip_bad_audio`).

    Args:
        args: The data arguments.
        sampling_rate: The rate that the audio is decoded at.
        cache_dir: The `datasets` cache folder.
        stream_train: `--streaming`: the `"train"` split is a `datasets.IterableDataset` instead, its audio left
            undecoded (`{"bytes", "path"}` cells) and unchecked (a stream is checked as it is decoded).
        train: Whether the run trains; false (an evaluation-only run): no training split is loaded.
        dropped: If given, receives the number of clips that `--skip_bad_audio` left out of each split, by split.
        labelled: Whether the splits must have the label column; false for unlabelled audio (pretraining).
        optional_validation: A data set (`--dataset_name`) without the evaluation split is loaded without one
            (pretraining evaluates only where there is held-out audio), not refused.

    Returns:
        (datasets.DatasetDict): The splits: `"train"` (when `train`) and, where the source has one, `"validation"`.

    Raises:
        ValueError: When the data sources conflict (`check_one_data_source`), no source is given, a folder or file
            is missing or holds no audio or rows, a saved data set lacks a split, the training split is missing, a
            split lacks the audio or label column, or clips cannot be read (`check_audio_files`).
    """
    import datasets

    check_one_data_source(args, train)
    raw = datasets.DatasetDict()
    for name in ("train", "validation") if train else ("validation",):
        try:
            split = _load_split(args, name, cache_dir, streaming=stream_train and name == "train")
        except ValueError as error:  # the missing split of a saved data set, or of one on the Hub
            if not (optional_validation and name == "validation" and "split" in str(error).lower()):
                raise
            split = None
        if split is not None:
            raw[name] = split
    if "train" not in raw and train:
        raise ValueError("No training split was found; check --train_split_name / --train_dir / --train_file.")
    for name in list(raw):
        split, streamed = raw[name], isinstance(raw[name], datasets.IterableDataset)
        if split.features is None:  # a stream that learns its columns from the first rows
            split = split._resolve_features()
        if args.audio_column_name not in split.column_names:
            raise ValueError(f"Split {name!r} has no column {args.audio_column_name!r} (columns: "
                             f"{split.column_names}); set --audio_column_name.")
        if labelled and args.label_column_name not in split.column_names:
            folder = args.train_dir if name == "train" else args.validation_dir
            advice = _audiofolder_label_advice(folder, args.label_column_name) if folder else ""
            raise ValueError(f"Split {name!r} has no column {args.label_column_name!r} (columns: "
                             f"{split.column_names}); set --label_column_name.{advice}")
        if getattr(split.features[args.audio_column_name], "dtype", None) == "large_string":
            split = split.cast_column(args.audio_column_name, datasets.Value("string"))  # Arrow casts only `string`
        if streamed:
            raw[name] = split.cast_column(args.audio_column_name, datasets.Audio(decode=False))
            continue
        # Undecoded cells: the collator decodes each clip when its batch is built (ast_hf.audio_io.decode_audio:
        # libsndfile for WAV/FLAC at the rate, else FFmpeg resampling as datasets.Audio(sampling_rate) does), which
        # spares the FFmpeg decoder datasets would open per row.
        split = split.cast_column(args.audio_column_name, datasets.Audio(sampling_rate=sampling_rate, decode=False))
        raw[name] = check_audio_files(split, args.audio_column_name, name, skip=args.skip_bad_audio,
                                      mode=args.check_audio)
        if dropped is not None and len(raw[name]) < len(split):
            dropped[name] = len(split) - len(raw[name])
    return raw


def _audio_problem(cell: Mapping[str, Any], decode: bool = True) -> str | None:
    """Why one undecoded audio cell ({"path", "bytes"}) cannot be used, None when it can. `decode`: decode it fully
    with torchcodec (FFmpeg), the decoder datasets uses in training, and check the samples; else read the header."""
    import io

    import soundfile

    path, data = cell.get("path"), cell.get("bytes")
    if data is None and (not path or not os.path.isfile(path)):
        return "file not found"
    if (len(data) if data is not None else os.path.getsize(path)) == 0:
        return "an empty file (0 bytes)"
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
    """Check every clip of a split up front, reporting all bad files at once or dropping them.

    Without this a bad file crashes training at the first batch that holds it, with a decoder error that does not
    name the file. The files are checked in parallel, with a progress bar once the check has taken two seconds.

    Args:
        split: A `datasets.Dataset` with an audio column.
        column: The audio column.
        name: The split's name, for messages and the progress bar.
        skip: Drop the bad clips with a warning instead of refusing them (`--skip_bad_audio`).
        workers: Threads that check files.
        mode: `"decode"`: each file exists, decodes (with FFmpeg, the decoder that training uses) and holds finite
            samples; `"header"`: it exists and its header reads; `"none"`: no check.

    Returns:
        `split`, without the bad clips when `skip`.

    Raises:
        ValueError: When `mode` is not one of the three, or when clips cannot be read and `skip` is false (the
            message lists up to 20 of them, each with its problem).
    """
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
                                                                 unit="clip", delay=2) as progress:
        for start in range(0, len(split), 64):  # chunks: embedded audio bytes never all in memory at once
            cells = undecoded[start:start + 64][column]
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


def embedded_data(data_args: DataArguments) -> str:
    """Build (once) the espeak-ng spoken-command data and point the arguments at it.

    Sets `data_args.train_dir` and `data_args.validation_dir` to its audiofolders, built with
    `--commands_clips_per_word` training and `--commands_eval_clips_per_word` evaluation clips per word.

    Args:
        data_args: The data arguments, changed in place.

    Returns:
        A description of the data (words, accents), for the logs and the model card.
    """
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


class PreparedData(NamedTuple):
    """The run's data, as `prepare_data` returns it.

    Attributes:
        raw: The splits with encoded labels, a `datasets.DatasetDict`: `"train"` (a `datasets.IterableDataset`
            with `--streaming`) and `"validation"`, each where the run has it.
        labels: The label names in id order.
        multi_label: Whether the task is multi-label.
        description: A description of the training data.
        facts: What a model card states about the data (labels, sources, clip counts, dropped clips).
    """

    raw: Any
    labels: list[str]
    multi_label: bool
    description: str
    facts: dict[str, Any]


class ModelLabels(NamedTuple):
    """The classes of a trained model that a run starts from.

    Attributes:
        source: Where the model is, as messages name it.
        names: Its label names in id order.
        multi_label: Whether it is multi-label.
    """

    source: str
    names: list[str]
    multi_label: bool


def _subset(split: Any, count: int | None, seed: int) -> Any:
    """A seeded random subset of `count` rows (all rows when count is None or larger): transformers' examples
    shuffle before they select, so that a subset of data sorted by class holds every class."""
    if not count or count >= len(split):
        return split
    return split.shuffle(seed=seed).select(range(count))


def prepare_data(data_args: DataArguments, seed: int, cache_dir: str | None = None,
                 model_labels: ModelLabels | None = None, train: bool = True) -> PreparedData:
    """Load, check and encode the run's data.

    Without a data set in the arguments, it is the embedded espeak-ng commands (`embedded_data`). Call it inside
    `main_process_first()`.

    Labels are matched by name in every split (an audiofolder without one of the training classes has other
    `ClassLabel` integers than the training folder). A run that trains on the classes of `model_labels` keeps the
    model's order (its head stays as trained); an evaluation-only run scores the model's own classes, refusing
    evaluation clips of a class the model does not have. `--max_train_samples` / `--max_eval_samples` draw seeded
    random subsets (of a stream, its first clips). A loaded training split gets a `_row` column, its row numbers,
    which seeds the collator's augmentations.

    Args:
        data_args: The data arguments; pointed at the embedded data when they name none.
        seed: The seed of the random subsets.
        cache_dir: The `datasets` cache folder.
        model_labels: The classes of the trained model that the run starts from, if any.
        train: Whether the run trains; false (evaluation only) needs `model_labels`.

    Returns:
        The splits with encoded labels, the labels and the facts about the data.

    Raises:
        ValueError: When an evaluation-only run has no `model_labels` (a new model) or no evaluation data, or
            evaluation data of another kind (single- or multi-label) than the model; or when the data cannot be
            loaded or its labels encoded (`load_audio_datasets`, `label_names`, `encode_label_column`).
    """
    check_one_data_source(data_args, train)
    if not train and model_labels is None:
        raise ValueError(UNTRAINED_EVALUATION)
    description = data_args.dataset_name or data_args.train_dir or data_args.train_file or ""
    if not (description or data_args.validation_dir or data_args.validation_file):
        description = embedded_data(data_args)
    column, separator = data_args.label_column_name, data_args.label_separator
    dropped: dict[str, int] = {}
    raw = load_audio_datasets(data_args, cache_dir=cache_dir, stream_train=data_args.streaming and train,
                              train=train, dropped=dropped)
    sources = split_sources(data_args)
    stream = raw.pop("train") if data_args.streaming and train else None  # labels encoded as it is read
    if not train:
        if "validation" not in raw:
            raise ValueError("--do_train false: there is no evaluation data to evaluate the model on; give "
                             "--validation_dir, --validation_file or a data set with an --eval_split_name split.")
        labels, multi_label = list(model_labels.names), model_labels.multi_label
        data_multi = label_names(raw["validation"], column, separator)[1]
        if data_multi != multi_label:
            kind = {True: "multi-label (lists of labels)", False: "single-label"}
            raise ValueError(f"The evaluation data is {kind[data_multi]}, but the model {model_labels.source} is "
                             f"{kind[multi_label]}; evaluate it on data of its kind.")
        known_from = f"the model {model_labels.source}"
    else:
        if stream is not None:
            from .streaming import stream_label_names

            labels, multi_label = stream_label_names(stream, data_args)
        else:
            labels, multi_label = label_names(raw["train"], column, separator)
        if model_labels is not None and multi_label == model_labels.multi_label and labels != model_labels.names \
                and sorted(labels) == sorted(model_labels.names):
            _log(f"the training labels are the classes of {model_labels.source} in another order: the model's "
                 "order is kept, and its classifier head with it")
            labels = list(model_labels.names)
        known_from = labels_source(data_args) or "the training data"
        feature = None if stream is not None else raw["train"].features[column]
        if feature is not None and not hasattr(feature, "names") and labels and all(x.lstrip("-").isdigit()
                                                                                     for x in labels):
            _log(f"integer labels are class names: {len(labels)} classes ({_some(labels)})")
    raw = encode_label_column(raw, column, {label: i for i, label in enumerate(labels)}, multi_label, known_from,
                              data_args.audio_column_name, separator, sources)
    if stream is not None:  # a stream has no random access: its first clips (it is shuffled through a buffer)
        raw["train"] = stream.take(data_args.max_train_samples) if data_args.max_train_samples else stream
    elif train:
        raw["train"] = _subset(raw["train"], data_args.max_train_samples, seed)
        raw["train"] = raw["train"].add_column("_row", list(range(len(raw["train"]))))  # seeds the augmentation
    if "validation" in raw:
        raw["validation"] = _subset(raw["validation"], data_args.max_eval_samples, seed)
    facts: dict[str, Any] = {"labels": list(labels), "multi_label": multi_label}
    for name, role in (("train", "training"), ("validation", "evaluation")):
        if name in raw:
            facts[f"{role} data"] = sources[name] if name != "train" or not description else description
            if name != "train" or stream is None:
                facts[f"{role} clips"] = len(raw[name])
            if name in dropped:
                facts[f"{role} clips dropped (unreadable, --skip_bad_audio)"] = dropped[name]
    return PreparedData(raw, labels, multi_label, description or sources["validation"], facts)


def _log(message: str) -> None:
    import logging

    logging.getLogger("ast_hf.training").info(message)
