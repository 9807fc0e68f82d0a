"""Fine-tuning pieces shared by examples/run_audio_classification.py (Trainer) and
examples/run_audio_classification_no_trainer.py (accelerate): data loading, label handling, the batch collator
with the recipes' augmentations (REFERENCE section 4: waveform mixup with Beta(10, 10), SpecAugment, noise and
time roll), balanced sampling, the warm-up + MultiStepLR schedule, weight averaging of epoch checkpoints,
metrics (accuracy; mAP, mAUC, d-prime) and the PNG reports.
"""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .feature_extraction_ast import ASTFeatureExtractor

# ---------------------------------------------------------------------------------------------------------------
# Arguments shared by both examples (HfArgumentParser dataclasses; a recipe is a JSON file of these fields)


@dataclass
class DataArguments:
    dataset_name: str | None = field(default=None, metadata={"help": "Hub data set name (load_dataset)"})
    dataset_config_name: str | None = field(default=None, metadata={"help": "its configuration"})
    train_split_name: str = field(default="train", metadata={"help": "split to train on"})
    eval_split_name: str = field(default="validation", metadata={"help": "split to evaluate on"})
    train_dir: str | None = field(default=None, metadata={"help": "audiofolder of training audio"})
    validation_dir: str | None = field(default=None, metadata={"help": "audiofolder of evaluation audio"})
    train_file: str | None = field(default=None, metadata={"help": "CSV/JSON with a path and a label column"})
    validation_file: str | None = field(default=None, metadata={"help": "CSV/JSON with a path and a label column"})
    audio_column_name: str = field(default="audio", metadata={"help": "audio column (a path column is cast)"})
    label_column_name: str = field(default="label", metadata={"help": "a label, or a list of labels (multi-label)"})
    fold_column_name: str | None = field(default=None, metadata={"help": "cross-validation: fold of each clip"})
    cross_validation_folds: int = field(default=0, metadata={"help": "k > 0: k runs, each holding out one fold"})
    max_train_samples: int | None = field(default=None, metadata={"help": "truncate the training set"})
    max_eval_samples: int | None = field(default=None, metadata={"help": "truncate the evaluation set"})
    max_length: int | None = field(default=None, metadata={"help": "frames per clip (default: the model's)"})
    pad_to_max_length: bool = field(default=False, metadata={
        "help": "pad every clip to max_length frames (the reference recipes pin this); default false: pad each batch "
                "to its longest clip and mask the padding out of attention (the saved feature extractor then returns "
                "the mask too; README 'What the drum benchmark found')"})
    dataset_mean: float | None = field(default=None, metadata={"help": "fbank mean (default: the extractor's)"})
    dataset_std: float | None = field(default=None, metadata={"help": "fbank std (default: the extractor's)"})
    compute_stats: bool = field(default=False, metadata={"help": "compute mean/std on the training set first"})
    skip_bad_audio: bool = field(default=False, metadata={
        "help": "drop clips whose file is missing or unreadable (checked before training) instead of stopping"})
    check_audio: str = field(default="decode", metadata={
        "help": "the check of every clip before training: 'decode' (decode each file fully with the decoder that "
                "training uses: finds truncated or corrupt data, empty files and NaN samples), 'header' (only read "
                "each header: faster on very large sets, misses bad data behind a good header) or 'none'",
        "choices": ["decode", "header", "none"]})
    commands_clips_per_word: int = field(default=300, metadata={"help": "embedded espeak-ng data: train clips/word"})
    commands_eval_clips_per_word: int = field(default=50, metadata={"help": "embedded data: eval clips per word"})


@dataclass
class RecipeArguments:
    freqm: int = field(default=0, metadata={"help": "SpecAugment: max width of one frequency mask (0 = off)"})
    timem: int = field(default=0, metadata={"help": "SpecAugment: max width of one time mask (0 = off)"})
    mask_fill: str = field(default="reference", metadata={
        "help": "SpecAugment's masked value: 'reference' (log-mel 0 before normalisation, as the AST code) or "
                "'mean' (0 after normalisation, the data set's mean)"})
    mixup: float = field(default=0.0, metadata={"help": "probability of waveform mixup, lambda ~ Beta(10, 10)"})
    noise: bool = field(default=False, metadata={"help": "add U(0,1)/10-scaled noise to the fbank, roll time"})
    balanced_sampling: bool = field(default=False, metadata={"help": "weighted sampler (multi-label data)"})
    # The AST reference's optimisation, used only when a recipe (or flag) asks for it; otherwise the optimiser and
    # schedule are the training script's own (--optim, --lr_scheduler_type, --warmup_steps, --weight_decay).
    reference_optimizer: bool = field(default=False, metadata={
        "help": "Adam with L2 weight decay --weight_decay on every parameter, as the AST reference code, in place "
                "of --optim"})
    multistep_start_epoch: int = field(default=0, metadata={
        "help": "the reference's MultiStepLR after the --warmup_steps warm-up, in place of --lr_scheduler_type: the "
                "learning rate is multiplied by --multistep_gamma after this many epochs (0 = off)"})
    multistep_every: int = field(default=1, metadata={"help": "MultiStepLR: epochs between two decays"})
    multistep_gamma: float = field(default=1.0, metadata={"help": "MultiStepLR: factor of each decay"})
    average_start_epoch: int = field(default=0, metadata={"help": "weight averaging of epochs start..end (1-based)"})
    average_end_epoch: int = field(default=0, metadata={"help": "last epoch averaged (0 = off)"})
    patchout_time: int = field(default=0, metadata={"help": "Patchout: time columns dropped in training"})
    patchout_frequency: int = field(default=0, metadata={"help": "Patchout: frequency rows dropped in training"})

    def __post_init__(self) -> None:
        if self.mask_fill not in ("reference", "mean"):
            raise ValueError(f"mask_fill={self.mask_fill!r} must be 'reference' (log-mel 0, as the AST code) or "
                             "'mean' (0 after normalisation).")


@dataclass
class ModelArguments:
    model_name_or_path: str | None = field(default=None, metadata={"help": "ast_hf or transformers AST checkpoint"})
    deit_name_or_path: str | None = field(default=None, metadata={"help": "DeiT/ViT to convert on the fly"})
    model_size: str | None = field(default=None, metadata={"help": "from scratch: tiny | small | base"})
    frequency_stride: int | None = field(default=None, metadata={"help": "patch stride along frequency"})
    time_stride: int | None = field(default=None, metadata={"help": "patch stride along time"})
    attn_implementation: str = field(default="sdpa", metadata={"help": "eager | sdpa | flash_attention_2"})
    config_overrides: str | None = field(default=None, metadata={
        "help": "config fields to set, as in transformers' examples: \"hidden_dropout_prob=0.1,"
                "attention_probs_dropout_prob=0.1\" (from scratch and pretrained)"})
    cache_dir: str | None = field(default=None, metadata={"help": "Hub cache"})
    trust_remote_code: bool = field(default=False, metadata={"help": "for remote-code checkpoints"})


# Sizes for training from scratch (ViT naming); "small" is what the embedded demo trains.
MODEL_SIZES = {
    "tiny": dict(hidden_size=192, num_hidden_layers=4, num_attention_heads=3, intermediate_size=768),
    "small": dict(hidden_size=256, num_hidden_layers=4, num_attention_heads=4, intermediate_size=1024),
    "base": dict(hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072),
}


# ---------------------------------------------------------------------------------------------------------------
# Data


def decode_audio(cell: Any, sampling_rate: int) -> Any:
    """The samples of one audio cell: a dict with "array" (+ "sampling_rate"), a torchcodec AudioDecoder (datasets
    4+), or an array/tensor/list as it is. Multi-channel decoded audio is averaged to mono."""
    if hasattr(cell, "get_all_samples"):  # torchcodec AudioDecoder
        samples = cell.get_all_samples()
        cell = {"array": samples.data.mean(dim=0), "sampling_rate": samples.sample_rate}
    if isinstance(cell, Mapping):
        if "array" not in cell:
            raise ValueError(f"Audio cell has keys {sorted(cell)}; expected 'array' and 'sampling_rate'. Cast the "
                             f"column with datasets.Audio(sampling_rate={sampling_rate}).")
        if cell.get("sampling_rate", sampling_rate) != sampling_rate:
            raise ValueError(f"Audio at {cell['sampling_rate']} Hz; the feature extractor needs {sampling_rate} Hz. "
                             f"Cast the column with datasets.Audio(sampling_rate={sampling_rate}) first.")
        cell = cell["array"]
    return cell


AUDIO_SUFFIXES = (".wav", ".flac", ".mp3", ".ogg", ".opus", ".m4a", ".aac", ".aiff", ".aif", ".au", ".webm", ".wma")


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


def load_audio_datasets(args: DataArguments, sampling_rate: int = 16000, cache_dir: str | None = None):
    """A DatasetDict with "train" and "validation" from a Hub name, audiofolders or CSV/JSON files, the audio
    column cast to `datasets.Audio(sampling_rate)` (resampled on decode)."""
    import datasets

    check_one_data_source(args)
    if args.dataset_name:
        raw = datasets.DatasetDict({
            "train": datasets.load_dataset(args.dataset_name, args.dataset_config_name, split=args.train_split_name,
                                           cache_dir=cache_dir),
            "validation": datasets.load_dataset(args.dataset_name, args.dataset_config_name,
                                                split=args.eval_split_name, cache_dir=cache_dir)})
    elif args.train_dir:
        splits = {"train": args.train_dir, "validation": args.validation_dir}
        for name, folder in splits.items():
            if folder:
                _check_audio_folder(folder, "--train_dir" if name == "train" else "--validation_dir")
        raw = datasets.DatasetDict({name: datasets.load_dataset("audiofolder", data_dir=folder, split="train")
                                    for name, folder in splits.items() if folder})
    elif args.train_file:
        files = {"train": args.train_file, "validation": args.validation_file}
        raw = datasets.DatasetDict()
        for name, path in files.items():
            if not path:
                continue
            if not os.path.isfile(path):
                raise ValueError(f"--{name if name == 'train' else 'validation'}_file {path!r} does not exist.")
            kind = "json" if path.endswith((".json", ".jsonl")) else "csv"
            try:
                split = datasets.load_dataset(kind, data_files=path, split="train")
            except ValueError as error:  # datasets: 'Instruction "train" corresponds to no data!'
                if "corresponds to no data" not in str(error):
                    raise
                raise ValueError(f"{path} holds no rows (a header at most); add one row per clip.") from error
            if args.audio_column_name not in split.column_names:
                raise ValueError(f"{path} has no column {args.audio_column_name!r} (columns: {split.column_names});"
                                 f" set --audio_column_name to the column that holds the audio paths.")
            base = os.path.dirname(os.path.abspath(path))
            split = split.map(_resolve_row, fn_kwargs={"column": args.audio_column_name, "base": base})
            raw[name] = split
    else:
        raise ValueError("Give a data set: --dataset_name, --train_dir (audiofolder) or --train_file (CSV/JSON).")
    if "train" not in raw:
        raise ValueError("No training split was found; check --train_split_name / --train_dir / --train_file.")
    for name in list(raw):
        if args.audio_column_name not in raw[name].column_names:
            raise ValueError(f"Split {name!r} has no column {args.audio_column_name!r} (columns: "
                             f"{raw[name].column_names}); set --audio_column_name.")
        if args.label_column_name not in raw[name].column_names:
            folder = args.train_dir if name == "train" else args.validation_dir
            advice = _audiofolder_label_advice(folder, args.label_column_name) if folder else ""
            raise ValueError(f"Split {name!r} has no column {args.label_column_name!r} (columns: "
                             f"{raw[name].column_names}); set --label_column_name.{advice}")
        feature = raw[name].features[args.audio_column_name]
        if getattr(feature, "dtype", None) == "large_string":  # CSV paths: Arrow casts only `string` to Audio
            raw[name] = raw[name].cast_column(args.audio_column_name, datasets.Value("string"))
        raw[name] = raw[name].cast_column(args.audio_column_name, datasets.Audio(sampling_rate=sampling_rate))
        raw[name] = check_audio_files(raw[name], args.audio_column_name, name, skip=args.skip_bad_audio,
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
    if decode:
        try:
            from torchcodec.decoders import AudioDecoder

            samples = AudioDecoder(data if data is not None else path).get_all_samples().data  # (channels, N)
        except Exception as error:  # noqa: BLE001 (any failure means: training could not decode it either)
            if "No audio frames were decoded" in str(error):
                return "no audio samples (an empty file)"
            return f"FFmpeg cannot decode it ({_decoder_reason(error)})"
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
            return f"not readable audio ({_decoder_reason(error)})"


def _decoder_reason(error: Exception) -> str:
    """The part of a torchcodec/FFmpeg error a user can act on: its message without C++ source locations."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    text = re.sub(r"\S*\.(cpp|h):\d+,?", "", " ".join(lines))  # C++ source locations
    text = re.sub(r"^\w+,\s*", "", " ".join(text.split()))  # the C++ function's name
    return (text or type(error).__name__)[:160]


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
    """(label names in id order, multi_label) of a training split: ClassLabel names, sorted string labels, or the
    union of list-of-labels cells (multi-label, AudioSet style)."""
    feature = dataset.features[label_column]
    names = getattr(feature, "names", None)
    if names is not None:
        return list(names), False
    inner = getattr(feature, "feature", None)
    if inner is not None and getattr(inner, "names", None) is not None:
        return list(inner.names), True
    values = dataset[label_column]
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


def encode_label(value: Any, label2id: Mapping[str, int], multi_label: bool) -> Any:
    """A cell of the label column -> class index (single-label) or list of indices (multi-label)."""
    def one(x: Any) -> int:
        if isinstance(x, (int, np.integer)) and not isinstance(x, bool):
            return int(x)
        if x is None or (isinstance(x, str) and not x.strip()):
            raise ValueError("A clip has no label (an empty cell in the label column); fill it in or remove the row.")
        if str(x) not in label2id:
            raise ValueError(f"Label {x!r} is not among the training labels {sorted(label2id)[:10]}...")
        return label2id[str(x)]
    if multi_label:
        return [one(x) for x in (value if isinstance(value, (list, tuple)) else [value])]
    return one(value)


def encode_label_column(dataset: Any, column: str, label2id: Mapping[str, int], multi_label: bool) -> Any:
    """The label column of every split as class indices (int64) or lists of indices (multi-label)."""
    import datasets

    def encode(row: Mapping[str, Any]) -> dict[str, Any]:
        return {column: encode_label(row[column], label2id, multi_label)}

    def encoded(split: Any) -> Any:
        features = split.features.copy()
        features[column] = datasets.Sequence(datasets.Value("int64")) if multi_label else datasets.Value("int64")
        return split.map(encode, features=features)

    if isinstance(dataset, datasets.DatasetDict):
        return datasets.DatasetDict({name: encoded(split) for name, split in dataset.items()})
    return encoded(dataset)


# Fields of earlier versions: refused with the name of their replacement, never silently dropped.
RENAMED_ARGUMENTS = {
    "warmup_steps_recipe": "--warmup_steps (the same linear warm-up; a value below 1 is a fraction of all steps)",
    "adam_weight_decay": "--weight_decay (with --reference_optimizer it is the reference's L2 decay of Adam)",
    "lr_scheduler_start": "--multistep_start_epoch",
    "lr_scheduler_step": "--multistep_every",
    "lr_scheduler_decay": "--multistep_gamma",
}


def parse_arguments(classes: Sequence[type], argv: Sequence[str], default_output_dir: str,
                    extra_defaults: Sequence[str] = ()) -> tuple[Any, ...]:
    """HfArgumentParser over `classes`, with a leading JSON file of defaults that later flags override. Keys of the
    JSON file that none of the classes knows (a Trainer setting given to the accelerate loop) are skipped with a
    warning, so one recipe file serves both examples.

    Returns one instance per class, then a dict {field: where it was set} for every field given explicitly (the
    recipe file's path or "the command line"), which `check_argument_conflicts` reads."""
    import warnings

    from transformers import HfArgumentParser

    parser = HfArgumentParser(tuple(classes))
    known = {f for c in classes for f in c.__dataclass_fields__}
    defaults: list[str] = []
    sources: dict[str, str] = {}
    argv = list(argv)
    if argv and argv[0].endswith(".json"):
        with open(argv[0]) as handle:
            recipe = json.load(handle)
        _refuse_renamed(recipe, argv[0])
        skipped = sorted(k for k in recipe if k not in known and not k.startswith("_"))
        if skipped:
            warnings.warn(f"{argv[0]}: ignoring settings this script does not have: {skipped}", stacklevel=2)
        for key, value in recipe.items():
            if key in known:
                defaults += [f"--{key}", *([str(v) for v in value] if isinstance(value, list) else [str(value)])]
                sources[key] = argv[0]
        argv = argv[1:]
    given = [_flag_name(token, known) for token in argv if token.startswith("--")]
    _refuse_renamed(dict.fromkeys(given), "the command line")
    sources.update({name: "the command line" for name in given if name in known})
    if "--output_dir" not in defaults + argv:
        defaults += ["--output_dir", default_output_dir]
    return (*parser.parse_args_into_dataclasses(defaults + list(extra_defaults) + argv), sources)


def _flag_name(token: str, known: set[str]) -> str:
    """The field a command-line token sets: --warmup-steps=3 -> warmup_steps, --no_noise -> noise."""
    name = token[2:].split("=", 1)[0].replace("-", "_")
    return name[3:] if name.startswith("no_") and name not in known and name[3:] in known else name


def _refuse_renamed(keys: Mapping[str, Any], origin: str) -> None:
    for key in keys:
        if key in RENAMED_ARGUMENTS:
            raise ValueError(f"{key} (in {origin}) is no longer an argument; use {RENAMED_ARGUMENTS[key]}.")


def check_argument_conflicts(recipe: RecipeArguments, sources: Mapping[str, str]) -> None:
    """Refuse a flag that a recipe setting would override, naming both and where each was set, so that no flag is
    ever silently ignored: --optim/--optim_args under reference_optimizer, --lr_scheduler_type/--lr_scheduler_kwargs
    under multistep_start_epoch, MultiStepLR settings without multistep_start_epoch (unless the command line
    turned off a recipe's schedule) or with a gamma of 1."""
    def where(name: str) -> str:
        return sources.get(name, "the default")

    problems = []
    if recipe.reference_optimizer:
        problems += [f"--{name} (from {where(name)}) conflicts with reference_optimizer=true (from "
                     f"{where('reference_optimizer')}), which trains with the reference's Adam instead. Leave "
                     f"--{name} out, or pass --reference_optimizer false to train with --{name}."
                     for name in ("optim", "optim_args") if name in sources]
    if recipe.multistep_start_epoch > 0:
        problems += [f"--{name} (from {where(name)}) conflicts with multistep_start_epoch="
                     f"{recipe.multistep_start_epoch} (from {where('multistep_start_epoch')}), which schedules the "
                     f"learning rate with the reference's MultiStepLR instead. Leave --{name} out, or pass "
                     f"--multistep_start_epoch 0 to schedule with --lr_scheduler_type."
                     for name in ("lr_scheduler_type", "lr_scheduler_kwargs") if name in sources]
        if recipe.multistep_gamma == 1.0:
            problems.append(f"multistep_start_epoch={recipe.multistep_start_epoch} with multistep_gamma=1.0 never "
                            "changes the learning rate; set --multistep_gamma (the reference uses 0.5 for AudioSet, "
                            "0.85 for ESC-50 and Speech Commands) or pass --multistep_start_epoch 0.")
    else:  # fine when the command line turned off a recipe's MultiStepLR; not when a flag is inert where it is set
        problems += [f"--{name} (from {where(name)}) has no effect without --multistep_start_epoch; set it, or "
                     f"leave --{name} out." for name in ("multistep_every", "multistep_gamma")
                     if name in sources and (where("multistep_start_epoch") != "the command line"
                                             or where(name) == "the command line")]
    if problems:
        raise ValueError("\n".join(problems))


def warn_inert_settings(recipe: RecipeArguments, num_train_epochs: float, max_length: int | None,
                        num_mel_bins: int = 128) -> list[str]:
    """Warn (and return the warnings) about settings that are valid but cannot act in this run: a MultiStepLR that
    starts after the last epoch, SpecAugment masks wider than the clip. Warned, not refused: a short trial run of a
    long recipe is a fair thing to do."""
    import warnings

    found = []
    if recipe.multistep_start_epoch > 0 and recipe.multistep_start_epoch >= num_train_epochs:
        found.append(f"multistep_start_epoch={recipe.multistep_start_epoch} is not before the last of "
                     f"{num_train_epochs:g} epochs: the learning rate never decays in this run.")
    if max_length is not None and recipe.timem > max_length:
        found.append(f"timem={recipe.timem} allows time masks wider than the {max_length}-frame clips (whole clips "
                     f"masked); a quarter of max_length or less is usual (e.g. --timem {max(1, max_length // 4)}).")
    if recipe.freqm > num_mel_bins:
        found.append(f"freqm={recipe.freqm} allows frequency masks wider than the {num_mel_bins} mel bins.")
    for message in found:
        warnings.warn(message, UserWarning, stacklevel=2)
    return found


def resolve_run_steps(do_train: bool, do_eval: bool, sources: Mapping[str, str], has_evaluation_data: bool,
                      eval_strategy: str = "no", trained_model: bool = True) -> tuple[bool, bool]:
    """(train, evaluate) as a user of the examples means them: train unless --do_train false was given (every data
    source has training data), evaluate when there is evaluation data unless --do_eval false was given. Refused:
    --do_eval without evaluation data, an evaluation strategy during training without evaluation data or with
    --do_eval false, a run that would do nothing, and evaluating without training a model that was never trained
    (`trained_model` false: built from scratch or with a new head)."""
    train = do_train if "do_train" in sources else True
    if not train and not trained_model:
        raise ValueError("--do_train false evaluates without training, but the model is new (built from scratch or "
                         "with a freshly initialised head): its metrics would be those of random weights. Pass a "
                         "fine-tuned model with --model_name_or_path, or leave --do_train out to train first.")
    evaluate = do_eval if "do_eval" in sources else has_evaluation_data
    strategy = str(getattr(eval_strategy, "value", eval_strategy))
    if evaluate and not has_evaluation_data:
        raise ValueError(f"do_eval=true (from {sources['do_eval']}) needs evaluation data: give --validation_dir, "
                         "--validation_file or a data set with an --eval_split_name split.")
    if strategy != "no" and not evaluate:
        reason = "there is no evaluation data" if not has_evaluation_data else "--do_eval false was given"
        raise ValueError(f"eval_strategy={strategy} (from {sources.get('eval_strategy', 'the default')}) evaluates "
                         f"during training, but {reason}; pass --eval_strategy no, or give evaluation data.")
    if not (train or evaluate):
        raise ValueError("Nothing to do: --do_train false and no evaluation. Leave --do_train out to fine-tune, or "
                         "give --do_eval with evaluation data to evaluate a model.")
    return train, evaluate


# Written last into a checkpoint: a folder that has it is complete (trainer_state.json by the Trainer, the loop's
# own marker by the accelerate example, which also renames its checkpoints into place).
CHECKPOINT_MARKERS = ("trainer_state.json", "loop_state.json")


def resolve_checkpoint(value: str | None, output_dir: str | os.PathLike) -> str | None:
    """--resume_from_checkpoint: a checkpoint folder (checked complete), or "last" for the newest complete one in
    `output_dir`; folders that a killed run left half-written are skipped with a warning."""
    import re
    import warnings

    def complete(folder: Path) -> bool:
        return any((folder / marker).is_file() for marker in CHECKPOINT_MARKERS)

    if not value or str(value).lower() == "false":
        return None
    if str(value).lower() in ("last", "true"):
        folders = [p for p in Path(output_dir).glob("*") if p.is_dir() and re.fullmatch(r"(checkpoint|step)[-_]\d+",
                                                                                         p.name)]
        folders.sort(key=lambda p: int(re.search(r"\d+$", p.name).group()), reverse=True)
        for folder in folders:
            if complete(folder):
                return str(folder)
            warnings.warn(f"skipping {folder}: incomplete (the run was stopped while writing it)", stacklevel=2)
        raise ValueError(f"--resume_from_checkpoint {value}: no complete checkpoint in {str(output_dir)!r}; train "
                         "from the start (leave the flag out) or give a checkpoint folder.")
    if not Path(value).is_dir():
        raise ValueError(f"--resume_from_checkpoint {value!r} is not a folder; give a checkpoint folder or 'last'.")
    if not complete(Path(value)):
        raise ValueError(f"--resume_from_checkpoint {value!r} is incomplete (it has none of "
                         f"{', '.join(CHECKPOINT_MARKERS)}: the run was stopped while writing it); resume from an "
                         "earlier checkpoint, or pass 'last' for the newest complete one.")
    return str(value)


def embedded_data(data_args: DataArguments) -> str:
    """Build (once) the espeak-ng spoken-command data and point the arguments at it; returns its description."""
    from .espeak_commands import CommandsSpec, build_commands_dataset

    spec = CommandsSpec(clips_per_word=data_args.commands_clips_per_word,
                        eval_clips_per_word=data_args.commands_eval_clips_per_word)
    root = build_commands_dataset(spec)
    data_args.train_dir, data_args.validation_dir = str(root / "train"), str(root / "validation")
    return (f"espeak-ng spoken commands ({spec.clips_per_word} training clips per word in "
            f"{len(spec.train_accents)} accents; evaluation on held-out accents {', '.join(spec.eval_accents)})")


def prepare_data(data_args: DataArguments, seed: int, cache_dir: str | None = None):
    """(DatasetDict with encoded labels, label names, multi_label, description of the data). Without a data set
    in the arguments, the embedded espeak-ng commands. Call it inside `main_process_first()`."""
    check_one_data_source(data_args)
    description = data_args.dataset_name or data_args.train_dir or data_args.train_file
    if not description:
        description = embedded_data(data_args)
    raw = load_audio_datasets(data_args, cache_dir=cache_dir)
    labels, multi_label = label_names(raw["train"], data_args.label_column_name)
    label2id = {label: i for i, label in enumerate(labels)}
    raw = encode_label_column(raw, data_args.label_column_name, label2id, multi_label)
    if data_args.max_train_samples:
        raw["train"] = raw["train"].shuffle(seed=seed).select(range(min(data_args.max_train_samples,
                                                                        len(raw["train"]))))
    raw["train"] = raw["train"].add_column("_row", list(range(len(raw["train"]))))  # seeds the augmentation
    if "validation" in raw and data_args.max_eval_samples:
        raw["validation"] = raw["validation"].select(range(min(data_args.max_eval_samples, len(raw["validation"]))))
    return raw, labels, multi_label, description


# ---------------------------------------------------------------------------------------------------------------
# Augmentations (each a small pure function; the collator draws their random parameters)


def mix_waveforms(first: torch.Tensor, second: torch.Tensor, lam: float) -> torch.Tensor:
    """The reference's waveform mixup: both clips mean-centred, the second cut or zero-padded to the first's
    length, lam * first + (1 - lam) * second, centred again."""
    first = first - first.mean()
    second = second - second.mean()
    if second.shape[0] >= first.shape[0]:
        second = second[: first.shape[0]]
    else:
        second = torch.nn.functional.pad(second, (0, first.shape[0] - second.shape[0]))
    mixed = lam * first + (1 - lam) * second
    return mixed - mixed.mean()


def mask_band(features: torch.Tensor, axis: int, start: int, width: int, fill: float) -> torch.Tensor:
    """Set `width` rows (axis 0 = time frames) or columns (axis 1 = mel bins) from `start` of a (T, F) fbank to
    `fill`, in place; SpecAugment's mask."""
    if width > 0:
        features.narrow(axis, start, width).fill_(fill)
    return features


def draw_mask(size: int, max_width: int, rng: np.random.Generator) -> tuple[int, int]:
    """(start, width) as torchaudio's masking draws them: width ~ U[0, max_width), start ~ U[0, size - width)."""
    width = min(int(rng.random() * max_width), size)
    start = int(rng.random() * (size - width))
    return start, width


def noise_and_roll(features: torch.Tensor, scale: float, shift: int, rng: np.random.Generator) -> torch.Tensor:
    """The Speech Commands recipe: + U(0,1)(T, F) * scale / 10 on the normalised fbank, then a roll of `shift`
    frames along time."""
    noise = torch.from_numpy(rng.random(tuple(features.shape), dtype=np.float32)) * scale / 10
    return torch.roll(features + noise, shifts=shift, dims=0)


def balanced_sample_weights(label_lists: Sequence[Sequence[int]], num_labels: int) -> torch.Tensor:
    """The reference's sampler weights: for each clip, sum over its labels of 1000 / (count(label) + 0.01)."""
    counts = np.zeros(num_labels)
    for labels in label_lists:
        for label in labels:
            counts[label] += 1
    per_label = 1000.0 / (counts + 0.01)
    return torch.tensor([float(sum(per_label[label] for label in labels)) for labels in label_lists],
                        dtype=torch.float64)


@dataclass
class AudioCollator:
    """Rows of (decoded) audio + labels -> a model batch. In training it applies the recipe: waveform mixup with a
    random other clip of the batch, SpecAugment, noise and time roll, each within a clip's real frames. Features
    are padded to `max_length` frames (the recipes' fixed lengths), or with `pad_to_max_length=False` to the
    batch's longest clip (at least `min_frames`, one patch) with an attention mask."""

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
    train = AudioCollator(**common, train=True, mixup=recipe.mixup, freqm=recipe.freqm, timem=recipe.timem,
                          mask_fill=recipe.mask_fill, label_smoothing=label_smoothing,
                          noise=recipe.noise, seed=seed)
    return train, AudioCollator(**common)


def dataset_sample_weights(dataset: Any, label_column: str, num_labels: int, multi_label: bool) -> torch.Tensor:
    """`balanced_sample_weights` of a split whose label column holds class indices or lists of them."""
    column = dataset[label_column]
    return balanced_sample_weights([c if multi_label else [c] for c in column], num_labels)


def cpu_ddp_requested() -> bool:
    """True under torchrun (WORLD_SIZE > 1) without GPUs, where Trainer and accelerate must be told to use the CPU
    with gloo or they silently run each process alone."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1 and not torch.cuda.is_available()


# ---------------------------------------------------------------------------------------------------------------
# Optimisation


def recipe_lr_lambda(steps_per_epoch: int, warmup_steps: int = 0, start_epoch: int = 0, step_epochs: int = 1,
                     gamma: float = 1.0) -> Callable[[int], float]:
    """LR multiplier per optimisation step: linear warm-up over `warmup_steps`, then the reference's
    MultiStepLR(milestones=range(start_epoch, 1000, step_epochs), gamma) stepped once per epoch (epochs counted
    from 0, so the lr first drops after `start_epoch` full epochs). start_epoch 0 means no decay."""
    milestones = list(range(start_epoch, 1000, max(1, step_epochs))) if start_epoch > 0 else []

    def factor(step: int) -> float:
        epochs_done = step // max(1, steps_per_epoch)
        decay = gamma ** sum(1 for m in milestones if m <= epochs_done)
        warm = min(1.0, (step + 1) / warmup_steps) if warmup_steps > 0 else 1.0
        return warm * decay

    return factor


def reference_adam(model: torch.nn.Module, learning_rate: float, betas: tuple[float, float] = (0.95, 0.999),
                   eps: float = 1e-8, weight_decay: float = 5e-7) -> torch.optim.Optimizer:
    """The reference's optimiser: Adam (not AdamW) with L2 weight decay on every parameter (the recipes: 5e-7,
    betas (0.95, 0.999))."""
    parameters = [p for p in model.parameters() if p.requires_grad]
    return torch.optim.Adam(parameters, lr=learning_rate, betas=betas, eps=eps, weight_decay=weight_decay)


def build_optimizer(model: torch.nn.Module, learning_rate: float, betas: tuple[float, float], eps: float,
                    weight_decay: float, reference: bool = False) -> torch.optim.Optimizer:
    """The accelerate example's optimiser: the reference's Adam when `reference`, otherwise torch's AdamW with
    decoupled weight decay on every weight but biases and LayerNorms, as the Trainer's default "adamw_torch"."""
    if reference:
        return reference_adam(model, learning_rate, betas, eps, weight_decay)
    from transformers.trainer_pt_utils import get_parameter_names

    decay = set(get_parameter_names(model, [torch.nn.LayerNorm], ["bias", "layernorm"]))
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    groups = [{"params": [p for n, p in named if n in decay], "weight_decay": weight_decay},
              {"params": [p for n, p in named if n not in decay], "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=learning_rate, betas=betas, eps=eps)


def warmup_steps_of(warmup_steps: float, training_steps: int) -> int:
    """TrainingArguments' reading of --warmup_steps: a number of steps when >= 1, else a fraction of all steps."""
    if warmup_steps < 0:
        raise ValueError(f"warmup_steps={warmup_steps} must be >= 0 (steps, or a fraction of all steps below 1).")
    return int(warmup_steps) if warmup_steps >= 1 else math.ceil(training_steps * warmup_steps)


def build_scheduler(optimizer: torch.optim.Optimizer, recipe: RecipeArguments, scheduler_type: str,
                    warmup_steps: int, training_steps: int, updates_per_epoch: int, scheduler_kwargs: Any = None):
    """The learning-rate schedule, stepped once per update: the reference's warm-up + MultiStepLR when the recipe
    sets multistep_start_epoch, otherwise transformers' `get_scheduler(scheduler_type)`, as the Trainer builds it."""
    if recipe.multistep_start_epoch > 0:
        return torch.optim.lr_scheduler.LambdaLR(optimizer, recipe_lr_lambda(
            updates_per_epoch, warmup_steps, recipe.multistep_start_epoch, recipe.multistep_every,
            recipe.multistep_gamma))
    from transformers import get_scheduler

    return get_scheduler(scheduler_type, optimizer=optimizer, num_warmup_steps=warmup_steps,
                         num_training_steps=training_steps, scheduler_specific_kwargs=scheduler_kwargs or {})


class WeightAverager:
    """Running mean of a model's floating-point weights over chosen epochs (the reference averages the epoch
    checkpoints 1-5 of full AudioSet and 6-25 of balanced AudioSet)."""

    def __init__(self, start_epoch: int, end_epoch: int) -> None:
        self.start_epoch, self.end_epoch = start_epoch, end_epoch
        self.average: dict[str, torch.Tensor] | None = None
        self.count = 0

    def wants(self, epoch: int) -> bool:
        return self.end_epoch > 0 and self.start_epoch <= epoch <= self.end_epoch

    def update(self, model: torch.nn.Module, epoch: int) -> None:
        if not self.wants(epoch):
            return
        state = {k: v.detach().to("cpu", torch.float64) for k, v in model.state_dict().items()
                 if v.is_floating_point()}
        self.count += 1
        if self.average is None:
            self.average = state
        else:
            for key, value in state.items():
                self.average[key] += (value - self.average[key]) / self.count

    def state_dict(self) -> dict[str, torch.Tensor]:
        """Tensors only, so that checkpoints stay loadable with safetensors or torch.load(weights_only=True)."""
        state = {f"average.{k}": v for k, v in (self.average or {}).items()}
        state["count"] = torch.tensor(self.count)
        return state

    def load_state_dict(self, state: Mapping[str, torch.Tensor]) -> None:
        self.count = int(state["count"])
        average = {k[len("average."):]: v.to(torch.float64) for k, v in state.items() if k.startswith("average.")}
        self.average = average or None

    def save(self, path: str | os.PathLike) -> None:
        from safetensors.torch import save_file

        save_file({k: v.contiguous() for k, v in self.state_dict().items()}, str(path))

    def load(self, path: str | os.PathLike) -> None:
        from safetensors.torch import load_file

        self.load_state_dict(load_file(str(path)))

    def apply(self, model: torch.nn.Module) -> bool:
        """Load the average into `model`; False when nothing was averaged."""
        if self.average is None:
            return False
        current = model.state_dict()
        model.load_state_dict({k: self.average[k].to(current[k].dtype) if k in self.average else current[k]
                               for k in current})
        return True


# ---------------------------------------------------------------------------------------------------------------
# Metrics (evaluate Metric classes: usable offline, where evaluate.load would fetch scripts from the Hub)


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
    """Per-class average precision and ROC AUC (scikit-learn), averaged over the classes that have positives and
    negatives; d-prime = sqrt(2) * Phi^-1(mAUC)."""
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
    accuracy, multi = _metric_base()
    return multi() if multi_label else accuracy()


def compute_metrics_fn(multi_label: bool) -> Callable[[Any], dict[str, float]]:
    """A Trainer `compute_metrics`: accuracy (single-label) or mAP/mAUC/d-prime (multi-label)."""
    metric = classification_metric(multi_label)

    def compute(prediction: Any) -> dict[str, float]:
        logits, labels = prediction.predictions, prediction.label_ids
        if isinstance(logits, tuple):
            logits = logits[0]
        if multi_label:
            return metric.compute(predictions=1 / (1 + np.exp(-logits)), references=labels)
        if labels.ndim == 2:  # soft targets of mixup in evaluation: take the dominant class
            labels = labels.argmax(axis=1)
        return metric.compute(predictions=logits, references=labels)

    return compute


# ---------------------------------------------------------------------------------------------------------------
# Reports


def plot_training_curves(log_history: Iterable[Mapping[str, Any]], path: str | os.PathLike) -> None:
    """Training loss (per logging step) and evaluation metrics (per evaluation) against the epoch, as a PNG."""
    import matplotlib.pyplot as plt

    figure = training_curves_figure(log_history)
    figure.savefig(path, dpi=100)
    plt.close(figure)


def training_curves_figure(log_history: Iterable[Mapping[str, Any]]) -> Any:
    """The figure of `plot_training_curves`; a panel with nothing logged says so and what to set."""
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


def confusion_matrix(logits: np.ndarray, labels: np.ndarray, num_labels: int) -> np.ndarray:
    """(true, predicted) counts."""
    matrix = np.zeros((num_labels, num_labels), dtype=np.int64)
    np.add.at(matrix, (np.asarray(labels), np.asarray(logits).argmax(axis=1)), 1)
    return matrix


def save_confusion_matrix(logits: np.ndarray, label_ids: np.ndarray, names: Sequence[str],
                          path: str | os.PathLike) -> None:
    """The evaluation's confusion matrix as a PNG; soft (mixed) targets count as their dominant class."""
    label_ids = label_ids.argmax(axis=1) if label_ids.ndim == 2 else label_ids
    plot_confusion_matrix(confusion_matrix(logits, label_ids.astype(np.int64), len(names)), names, path)


def plot_confusion_matrix(matrix: np.ndarray, names: Sequence[str], path: str | os.PathLike) -> None:
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


def write_json(path: str | os.PathLike, data: Mapping[str, Any]) -> None:
    Path(path).write_text(json.dumps(dict(data), indent=2, sort_keys=True) + "\n")


# ---------------------------------------------------------------------------------------------------------------
# Model and feature extractor for a run

# Config fields that have their own flag (so that the data, the extractor and the model agree on them).
FLAG_FIELDS = {"max_length": "--max_length", "frequency_stride": "--frequency_stride",
               "time_stride": "--time_stride", "patchout_time": "--patchout_time",
               "patchout_frequency": "--patchout_frequency", "num_labels": "the labels of the data",
               "id2label": "the labels of the data", "label2id": "the labels of the data",
               "problem_type": "the labels of the data (a list of labels per clip is multi-label)"}
# Fields that set the shapes of the weights: free from scratch, fixed by a pretrained or converted checkpoint.
SHAPE_FIELDS = ("hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size", "patch_size",
                "qkv_bias", "num_mel_bins")


def parse_config_overrides(text: str | None, pretrained: bool) -> dict[str, Any]:
    """"key=value,key=value" -> {field: value typed like the ASTConfig default}; a clear error for an unknown field,
    a field with its own flag, a shape field of a pretrained model, or a value of the wrong type."""
    from .configuration_ast import ASTConfig

    if not text:
        return {}
    defaults = {name: getattr(ASTConfig(), name) for name in ASTConfig.__annotations__}  # ASTConfig's own fields
    settable = sorted(name for name in defaults if name not in FLAG_FIELDS)
    overrides: dict[str, Any] = {}
    for item in (part.strip() for part in text.split(",")):
        if not item:
            continue
        key, sep, raw = (x.strip() for x in item.partition("="))
        if not sep or not raw:
            raise ValueError(f"--config_overrides item {item!r} is not key=value; e.g. "
                             "\"hidden_dropout_prob=0.1,attention_probs_dropout_prob=0.1\".")
        if key in FLAG_FIELDS:
            raise ValueError(f"--config_overrides sets {key}, which comes from {FLAG_FIELDS[key]}; use that instead.")
        if key not in settable:
            raise ValueError(f"--config_overrides: {key!r} is not a field of ASTConfig. Fields: "
                             f"{', '.join(settable)}.")
        if pretrained and key in SHAPE_FIELDS:
            raise ValueError(f"--config_overrides sets {key}, which fixes the shapes of the pretrained weights; it "
                             "can only change for a model trained from scratch (--model_size).")
        default = defaults[key]
        try:
            if isinstance(default, bool):
                if raw.lower() not in ("true", "false"):
                    raise ValueError(raw)
                value: Any = raw.lower() == "true"
            else:
                value = type(default)(float(raw)) if isinstance(default, int) and float(raw).is_integer() \
                    else type(default)(raw)
        except ValueError:
            raise ValueError(f"--config_overrides: {key}={raw!r} is not a {type(default).__name__} (default "
                             f"{default!r}).") from None
        overrides[key] = value
    return overrides



def prepare_model_and_extractor(model_args: ModelArguments, data_args: DataArguments, recipe: RecipeArguments,
                                labels: Sequence[str], multi_label: bool, describe: Callable[[str], None] = print):
    """(ASTForAudioClassification, ASTFeatureExtractor) for the run: a trained AST re-targeted to these labels,
    length and strides when they differ; a DeiT/ViT converted on the fly; or a named size from scratch."""
    from . import convert
    from .configuration_ast import ASTConfig
    from .modeling_ast import ASTForAudioClassification

    label_fields = convert.label_fields(list(labels))
    problem_type = "multi_label_classification" if multi_label else "single_label_classification"
    geometry = {name: value for name, value in (("max_length", data_args.max_length),
                                                ("frequency_stride", model_args.frequency_stride),
                                                ("time_stride", model_args.time_stride)) if value is not None}
    overrides = parse_config_overrides(model_args.config_overrides, pretrained=model_args.model_size is None)
    extras = dict(problem_type=problem_type, patchout_time=recipe.patchout_time,
                  patchout_frequency=recipe.patchout_frequency, **overrides)
    sources = [x for x in (model_args.model_name_or_path, model_args.deit_name_or_path, model_args.model_size) if x]
    if len(sources) != 1:
        raise ValueError("Give exactly one of --model_name_or_path (an AST), --deit_name_or_path (a DeiT/ViT to "
                         f"convert) or --model_size ({' | '.join(MODEL_SIZES)}), got {sources or 'none'}.")
    extractor = None
    if model_args.model_name_or_path:
        path = model_args.model_name_or_path
        model = ASTForAudioClassification.from_pretrained(
            path, attn_implementation=model_args.attn_implementation, cache_dir=model_args.cache_dir,
            trust_remote_code=model_args.trust_remote_code, **overrides)  # dropout is built from the config
        try:
            extractor = ASTFeatureExtractor.from_pretrained(path, cache_dir=model_args.cache_dir)
        except OSError:
            describe(f"{path} has no preprocessor_config.json: default AudioSet feature-extractor settings")
        changes = {k: v for k, v in geometry.items() if getattr(model.config, k) != v}
        if list(labels) != [model.config.id2label[i] for i in range(model.config.num_labels)]:
            changes.update(label_fields)
        if changes:
            old = model.config.patch_grid
            model = convert.retarget_model(model, **changes, **extras)
            describe(f"re-targeted {path}: {sorted(k for k in changes if k != 'label2id')}, grid {old} -> "
                     f"{model.config.patch_grid}")
        else:
            for key, value in extras.items():
                setattr(model.config, key, value)
    elif model_args.deit_name_or_path:
        model = convert.deit_to_ast(model_args.deit_name_or_path, cache_dir=model_args.cache_dir, describe=describe,
                                    **{"max_length": 1024, **geometry}, **label_fields, **extras)
    else:
        if model_args.model_size not in MODEL_SIZES:
            raise ValueError(f"model_size={model_args.model_size!r} is not one of {sorted(MODEL_SIZES)}.")
        config = ASTConfig(**{**MODEL_SIZES[model_args.model_size], "layer_norm_eps": 1e-6, "max_length": 1024,
                              **geometry, **label_fields, **extras})
        model = ASTForAudioClassification._from_config(config, attn_implementation=model_args.attn_implementation)
    settings = extractor.to_dict() if extractor is not None else {}
    if data_args.dataset_mean is not None:
        settings["mean"] = data_args.dataset_mean
    if data_args.dataset_std is not None:
        settings["std"] = data_args.dataset_std
    settings.update(max_length=model.config.max_length, num_mel_bins=model.config.num_mel_bins)
    if not data_args.pad_to_max_length:  # trained on masked batches: inference (the pipeline) masks too
        settings["return_attention_mask"] = True
    return model, ASTFeatureExtractor(**settings)


# Settings of a run that the model card records besides the recipe fields (where the script has them).
_RECORDED_TRAINING = ("learning_rate", "num_train_epochs", "per_device_train_batch_size",
                      "gradient_accumulation_steps", "optim", "weight_decay", "adam_beta1", "adam_beta2",
                      "adam_epsilon", "lr_scheduler_type", "warmup_steps", "max_grad_norm", "label_smoothing_factor",
                      "seed")
_RECORDED_DATA = ("max_length", "pad_to_max_length", "compute_stats", "dataset_mean", "dataset_std")
_RECORDED_MODEL = ("model_name_or_path", "deit_name_or_path", "model_size", "config_overrides")


def run_record(recipe: RecipeArguments, data_args: DataArguments, model_args: ModelArguments, args: Any
               ) -> dict[str, Any]:
    """What produced a model, for its card: the recipe fields, the optimisation and data settings actually used
    (the optimiser and schedule the run built, not flags a recipe replaced) and where the model came from."""
    record = dict(vars(recipe))
    for name in _RECORDED_TRAINING:
        if hasattr(args, name):
            record[name] = getattr(args, name)
    if recipe.reference_optimizer:
        record["optim"] = "reference Adam (L2 weight decay)"
    elif not hasattr(args, "optim"):
        record["optim"] = "adamw_torch"  # the accelerate loop's
    if recipe.multistep_start_epoch > 0:
        record["lr_scheduler_type"] = "warm-up + MultiStepLR (multistep_*)"
    record.update({name: getattr(data_args, name) for name in _RECORDED_DATA})
    record.update({name: getattr(model_args, name) for name in _RECORDED_MODEL if getattr(model_args, name, None)})
    return {name: getattr(value, "value", value) for name, value in record.items()}  # enums as their names


def write_model_card(output_dir: str | os.PathLike, model_name: str, metrics: Mapping[str, Any], dataset: str,
                     recipe: Mapping[str, Any], base_model: str | None) -> None:
    """README.md with the Hub metadata header, the metrics, the data set and the recipe that produced them."""
    lines = ["---", "library_name: transformers", "pipeline_tag: audio-classification", "tags:", "- ast_hf",
             "- audio-spectrogram-transformer", "- audio-classification"]
    if base_model:
        lines.append(f"base_model: {base_model}")
    lines += ["---", "", f"# {model_name}", "",
              "An Audio Spectrogram Transformer (Gong, Chung, Glass, Interspeech 2021) fine-tuned with "
              f"ast_hf on {dataset}.", "", "## Evaluation", "", "| metric | value |",
              "|---|---|"]
    lines += [f"| {k} | {v:.4f} |" if isinstance(v, float) else f"| {k} | {v} |" for k, v in sorted(metrics.items())]
    lines += ["", "## Recipe", "", "```json", json.dumps(dict(recipe), indent=2, sort_keys=True, default=str), "```",
              "", "## Use", "", "```python", "import ast_hf  # or trust_remote_code=True without it",
              "from transformers import pipeline",
              f'classifier = pipeline("audio-classification", model="{model_name}")', "```", ""]
    Path(output_dir, "README.md").write_text("\n".join(lines))


def push_output_dir(output_dir: str | os.PathLike, repo_id: str, private: bool | None = None,
                    token: str | None = None) -> str:
    """Upload a finished output directory (model, code, feature extractor, model card, curves) to the Hub as it
    is, without checkpoints and logs; returns the commit URL."""
    from huggingface_hub import HfApi

    api = HfApi(token=token)
    api.create_repo(repo_id, exist_ok=True, private=private)
    info = api.upload_folder(folder_path=str(output_dir), repo_id=repo_id, commit_message="ast_hf fine-tuning run",
                             ignore_patterns=["checkpoint-*", "step_*", "runs/*", "process_*.json", "*.bin"])
    return str(info)


__all__ = [
    "AudioCollator",
    "DataArguments",
    "MODEL_SIZES",
    "ModelArguments",
    "RecipeArguments",
    "WeightAverager",
    "balanced_sample_weights",
    "build_optimizer",
    "build_scheduler",
    "check_argument_conflicts",
    "classification_metric",
    "compute_metrics_fn",
    "confusion_matrix",
    "cpu_ddp_requested",
    "dataset_sample_weights",
    "decode_audio",
    "draw_mask",
    "encode_label",
    "embedded_data",
    "encode_label_column",
    "label_names",
    "make_collators",
    "load_audio_datasets",
    "mask_band",
    "mix_waveforms",
    "multi_label_scores",
    "noise_and_roll",
    "parse_arguments",
    "parse_config_overrides",
    "plot_confusion_matrix",
    "plot_training_curves",
    "training_curves_figure",
    "prepare_data",
    "prepare_model_and_extractor",
    "resolve_checkpoint",
    "resolve_run_steps",
    "push_output_dir",
    "recipe_lr_lambda",
    "reference_adam",
    "save_confusion_matrix",
    "warmup_steps_of",
    "write_json",
    "write_model_card",
]
