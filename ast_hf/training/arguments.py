"""The examples' arguments: HfArgumentParser dataclasses (a recipe is a JSON file of their fields), the
parsing of a recipe file plus flags with where each value came from, and the checks of what a combination of
arguments means (conflicts, settings that cannot act, which run steps to do)."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any


@dataclass
class DataArguments:
    """The data arguments: where the training and evaluation data come from, and how clips are read, cut and checked.

    An `HfArgumentParser` dataclass: each field is the command-line flag `--<field>` of both example scripts (and a
    key of a recipe file), and `--help` shows each flag's help (the field's `help` metadata).

    On creation, `--eval_file` is moved to `validation_file`, `--max_length_seconds` becomes `max_length` (100
    frames a second, at least 16), and a `--dataset_preset` fills `max_length`, `dataset_mean` and `dataset_std`
    where they are not given (not the mean and std with `--compute_stats`).

    Raises:
        ValueError: When `--eval_file` and `--validation_file` name different files; `--max_length_seconds` is
            given with `--max_length`, or is not positive; `--train_crop` is not `start` or `random`;
            `--label_separator` is empty; `--compute_stats` is given with `--dataset_mean` or `--dataset_std`; or
            `--dataset_preset` is not a preset of `ast_hf.presets`.
    """

    dataset_name: str | None = field(default=None, metadata={
        "help": "a data set for datasets.load_dataset: a Hub id, or a local folder saved with save_to_disk or of "
                "parquet files"})
    dataset_config_name: str | None = field(default=None, metadata={"help": "its configuration"})
    train_split_name: str = field(default="train", metadata={"help": "split to train on"})
    eval_split_name: str = field(default="validation", metadata={"help": "split to evaluate on"})
    train_dir: str | None = field(default=None, metadata={"help": "audiofolder of training audio"})
    validation_dir: str | None = field(default=None, metadata={"help": "audiofolder of evaluation audio"})
    train_file: str | None = field(default=None, metadata={"help": "CSV/JSON with a path and a label column"})
    validation_file: str | None = field(default=None, metadata={"help": "CSV/JSON with a path and a label column"})
    eval_file: str | None = field(default=None, metadata={
        "help": "the same as --validation_file (the name transformers' audio-classification example uses)"})
    audio_column_name: str = field(default="audio", metadata={"help": "audio column (a path column is cast)"})
    label_column_name: str = field(default="label", metadata={
        "help": "a label, or a list of labels (multi-label): in a CSV cell a JSON list, [\"apple\", \"river\"]; "
                "integer labels are class names (10, 20, 30 make three classes)"})
    label_separator: str | None = field(default=None, metadata={
        "help": "split every label cell on this string into a list of labels (multi-label): 'apple;river' with ';'"})
    fold_column_name: str | None = field(default=None, metadata={"help": "cross-validation: fold of each clip"})
    cross_validation_folds: int = field(default=0, metadata={"help": "k > 0: k runs, each holding out one fold"})
    max_train_samples: int | None = field(default=None, metadata={
        "help": "train on a seeded random subset of this many clips (--streaming: the stream's first clips)"})
    max_eval_samples: int | None = field(default=None, metadata={
        "help": "evaluate on a seeded random subset of this many clips"})
    dataset_preset: str | None = field(default=None, metadata={
        "help": "a data set of the paper by name (ast_hf.presets: audioset, esc50, speechcommands): its fbank "
                "mean/std and clip length are the defaults of --dataset_mean, --dataset_std and --max_length"})
    max_length: int | None = field(default=None, metadata={
        "help": "frames per clip, 100 a second (default: the preset's, else the model's)"})
    max_length_seconds: float | None = field(default=None, metadata={
        "help": "the clip length in seconds, in place of --max_length (100 frames a second; the name transformers' "
                "example uses)"})
    train_crop: str = field(default="start", metadata={
        "help": "training clips longer than max_length: 'start' keeps their first max_length frames (the paper's "
                "recipes), 'random' a random stretch, drawn anew each epoch (transformers' example); evaluation "
                "always keeps the start", "choices": ["start", "random"]})
    pad_to_max_length: bool = field(default=False, metadata={
        "help": "pad every clip to max_length frames (the reference recipes pin this); default false: pad each batch "
                "to its longest clip and mask the padding out of attention (the saved feature extractor then returns "
                "the mask too; docs: Training recipes and results)"})
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
    streaming: bool = field(default=False, metadata={
        "help": "read the training data as a stream (datasets' IterableDataset: --dataset_name, --train_dir or "
                "--train_file) instead of loading it whole; the Trainer example (run_audio_classification.py) only, "
                "with its --max_steps; each process of a torchrun run reads "
                "its own part (split_dataset_by_node); evaluation stays a map-style split"})
    labels_file: str | None = field(default=None, metadata={
        "help": "--streaming: the label names (a CSV like ast_hf/data's, or one label a line) when the stream's label "
                "column is not a ClassLabel; without it the label column is read through once first"})
    shuffle_buffer_size: int = field(default=10000, metadata={
        "help": "--streaming: clips held in the shuffle buffer (memory grows with it, not with the data set)"})
    commands_clips_per_word: int = field(default=300, metadata={"help": "embedded espeak-ng data: train clips/word"})
    commands_eval_clips_per_word: int = field(default=50, metadata={"help": "embedded data: eval clips per word"})


    def __post_init__(self) -> None:
        if self.eval_file is not None:
            if self.validation_file is not None and self.validation_file != self.eval_file:
                raise ValueError(f"--eval_file {self.eval_file!r} and --validation_file {self.validation_file!r} name "
                                 "the same thing; give one of them.")
            self.validation_file, self.eval_file = self.eval_file, None
        if self.max_length_seconds is not None:
            if self.max_length is not None:
                raise ValueError(f"--max_length_seconds {self.max_length_seconds} and --max_length {self.max_length} "
                                 "both set the clip length; give one of them.")
            if self.max_length_seconds <= 0:
                raise ValueError(f"--max_length_seconds {self.max_length_seconds} must be positive.")
            self.max_length = max(16, round(self.max_length_seconds * 100))  # 10 ms frames; one patch at least
        if self.train_crop not in ("start", "random"):
            raise ValueError(f"--train_crop {self.train_crop!r}: use 'start' or 'random'.")
        if self.label_separator == "":
            raise ValueError("--label_separator is empty; give the string between labels, e.g. ';'.")
        if self.compute_stats and (self.dataset_mean is not None or self.dataset_std is not None):
            raise ValueError(f"--compute_stats computes the fbank mean/std on the training set, but --dataset_mean "
                             f"{self.dataset_mean} / --dataset_std {self.dataset_std} are given too; use one of them.")
        if self.dataset_preset is not None:
            from ..presets import DATASETS

            if self.dataset_preset not in DATASETS:
                raise ValueError(f"--dataset_preset {self.dataset_preset!r} is not a preset; choose one of "
                                 f"{sorted(DATASETS)}.")
            preset = DATASETS[self.dataset_preset]
            # --compute_stats replaces the preset's statistics with the training set's; explicit flags win.
            fields = [("max_length", "max_length")]
            if not self.compute_stats:
                fields += [("dataset_mean", "mean"), ("dataset_std", "std")]
            for name, key in fields:
                if getattr(self, name) is None:
                    setattr(self, name, preset[key])


@dataclass
class RecipeArguments:
    """The recipe arguments: augmentation, sampling, the reference's optimiser and schedule, averaging, Patchout.

    An `HfArgumentParser` dataclass: each field is the command-line flag `--<field>` of both example scripts (and a
    key of a recipe file, `examples/recipes/*.json`), and `--help` shows each flag's help (the field's `help`
    metadata). The defaults turn every part off; the reference's Adam and MultiStepLR replace the script's own
    `--optim` and `--lr_scheduler_type` only when asked for.

    Raises:
        ValueError: When `mask_fill` is neither `reference` nor `mean`.
    """

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
    """The model arguments: the checkpoint to fine-tune, a DeiT/ViT to convert, or a size to build from scratch.

    An `HfArgumentParser` dataclass: each field is the command-line flag `--<field>` of both example scripts (and a
    key of a recipe file), and `--help` shows each flag's help (the field's `help` metadata).
    """

    model_name_or_path: str | None = field(default=None, metadata={"help": "ast_hf or transformers AST checkpoint"})
    deit_name_or_path: str | None = field(default=None, metadata={"help": "DeiT/ViT to convert on the fly"})
    model_size: str | None = field(default=None, metadata={"help": "from scratch: tiny | small | base"})
    frequency_stride: int | None = field(default=None, metadata={"help": "patch stride along frequency"})
    time_stride: int | None = field(default=None, metadata={"help": "patch stride along time"})
    pooling: str | None = field(default=None, metadata={
        "help": "classifier input: cls (CLS + distillation tokens, AST) | mean (patch tokens, SSAST's default); "
                "default: the model's config"})
    freeze_encoder: bool = field(default=False, metadata={
        "help": "train only the classification head: the encoder's weights stay as loaded (a frozen encoder; for a "
                "linear probe on embeddings see examples/linear_probe.py)"})
    attn_implementation: str = field(default="sdpa", metadata={"help": "eager | sdpa | flash_attention_2"})
    config_overrides: str | None = field(default=None, metadata={
        "help": "config fields to set, as in transformers' examples: \"hidden_dropout_prob=0.1,"
                "attention_probs_dropout_prob=0.1\" (from scratch and pretrained)"})
    cache_dir: str | None = field(default=None, metadata={"help": "Hub cache"})
    trust_remote_code: bool = field(default=False, metadata={"help": "for remote-code checkpoints"})
    ignore_mismatched_sizes: bool = field(default=True, metadata={
        "help": "accepted for transformers' example: a model whose labels or length differ from the data's is "
                "always re-targeted in training (positions resampled; a new head unless the classes are the same), "
                "and the log says so"})


# Fields of earlier versions: refused with the name of their replacement, never silently dropped.
RENAMED_ARGUMENTS = {
    "warmup_steps_recipe": "--warmup_steps (the same linear warm-up; a value below 1 is a fraction of all steps)",
    "adam_weight_decay": "--weight_decay (with --reference_optimizer it is the reference's L2 decay of Adam)",
    "lr_scheduler_start": "--multistep_start_epoch",
    "lr_scheduler_step": "--multistep_every",
    "lr_scheduler_decay": "--multistep_gamma",
}


# Flags of transformers' audio-classification example that have another form here: refused, naming it.
TRANSFORMERS_EXAMPLE_FLAGS = {
    "freeze_feature_encoder": "nothing: AST has no convolutional feature encoder (that flag is wav2vec2's); the "
                              "spectrogram is computed by the feature extractor, which has no weights",
    "attention_mask": "--pad_to_max_length false (the default: batches padded to their longest clip, the padding "
                      "masked) or --pad_to_max_length true (padded to max_length, no mask)",
    "feature_extractor_name": "--model_name_or_path (its preprocessor_config.json), with --dataset_mean, "
                              "--dataset_std and --max_length for the settings",
    "config_name": "--model_name_or_path, --model_size or --config_overrides",
    "model_revision": "a local copy of that revision given to --model_name_or_path "
                      "(huggingface_hub.snapshot_download(repo_id, revision=...))",
    "token": "--hub_token (or huggingface-cli login)",
    "use_auth_token": "--hub_token (or huggingface-cli login)",
}


def parse_arguments(classes: Sequence[type], argv: Sequence[str], default_output_dir: str,
                    extra_defaults: Sequence[str] = ()) -> tuple[Any, ...]:
    """Parse a recipe file and command-line flags into the argument dataclasses, noting where each value was set.

    An `HfArgumentParser` over `classes`. A leading JSON file holds defaults that later flags override; its keys
    that none of the classes knows (a Trainer setting given to the accelerate loop) are skipped with a warning, so
    that one recipe file serves both examples.

    Args:
        classes: The dataclasses to fill, e.g. `[ModelArguments, DataArguments, RecipeArguments,
            TrainingArguments]`.
        argv: The command line without the program: an optional recipe file (`*.json`) first, then flags.
        default_output_dir: `--output_dir` when neither the recipe file nor the flags give one.
        extra_defaults: More flags (e.g. `["--use_cpu", "true"]`), read after the recipe file's values and before
            `argv`: they override the recipe file, the command line overrides them.

    Returns:
        One instance per class, in the order of `classes`, then a dict `{field: where it was set}` for every field
            given explicitly (the recipe file's path or `"the command line"`), which `check_argument_conflicts`
            reads.

    Raises:
        ValueError: When a recipe key or flag is an argument of earlier versions or a flag of transformers'
            audio-classification example (the message names its replacement), a flag is unknown (the message
            names the closest known one), or a dataclass refuses its values.

    Example:
        ```python
        from transformers import TrainingArguments

        from ast_hf.training import DataArguments, ModelArguments, RecipeArguments, parse_arguments

        model_args, data_args, recipe, training_args, sources = parse_arguments(
            [ModelArguments, DataArguments, RecipeArguments, TrainingArguments],
            ["examples/recipes/esc50.json", "--num_train_epochs", "1"], default_output_dir="runs/esc50")
        sources["num_train_epochs"]  # "the command line"
        ```
    """
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
    try:
        return (*parser.parse_args_into_dataclasses(defaults + list(extra_defaults) + argv), sources)
    except ValueError as error:
        if "not used by the HfArgumentParser" not in str(error):
            raise
        raise ValueError(_unknown_flags_message(argv, list(parser._option_string_actions))) from None


def _unknown_flags_message(argv: Sequence[str], options: Sequence[str]) -> str:
    """The flags of `argv` that the parser does not take, each with the closest flag it does take."""
    import difflib

    unknown = [token.split("=", 1)[0] for token in argv if token.startswith("--")
               and token.split("=", 1)[0] not in options]
    named = [f"{flag} (did you mean {close[0]}?)" if (close := difflib.get_close_matches(flag, options, 1, 0.75))
             else flag for flag in unknown]
    return (f"Unknown argument{'s' * (len(named) != 1)}: {', '.join(named) or ' '.join(argv)}. --help lists the "
            "arguments this script takes.")


def _flag_name(token: str, known: set[str]) -> str:
    """The field a command-line token sets: --warmup-steps=3 -> warmup_steps, --no_noise -> noise."""
    name = token[2:].split("=", 1)[0].replace("-", "_")
    return name[3:] if name.startswith("no_") and name not in known and name[3:] in known else name


def _refuse_renamed(keys: Mapping[str, Any], origin: str) -> None:
    for key in keys:
        if key in RENAMED_ARGUMENTS:
            raise ValueError(f"{key} (in {origin}) is no longer an argument; use {RENAMED_ARGUMENTS[key]}.")
        if key in TRANSFORMERS_EXAMPLE_FLAGS:
            raise ValueError(f"--{key} (in {origin}) is a flag of transformers' audio-classification example; here "
                             f"use {TRANSFORMERS_EXAMPLE_FLAGS[key]}.")


def check_argument_conflicts(recipe: RecipeArguments, sources: Mapping[str, str]) -> None:
    """Refuse a flag that a recipe setting would override, so that no flag is ever silently ignored.

    Refused: `--optim` / `--optim_args` with `reference_optimizer`; `--lr_scheduler_type` / `--lr_scheduler_kwargs`
    with `multistep_start_epoch`; `multistep_start_epoch` with a `multistep_gamma` of 1 (the rate never changes);
    `--multistep_every` / `--multistep_gamma` without `multistep_start_epoch` (allowed when the command line turned
    a recipe's schedule off and they come from the recipe). Each message names both settings and where each was
    set.

    Args:
        recipe: The parsed recipe arguments.
        sources: Where each explicitly given field was set, as `parse_arguments` returns it.

    Raises:
        ValueError: With every conflict found, one a line.
    """
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


def check_cross_validation(data_args: DataArguments, sources: Mapping[str, str], supported: bool = True) -> None:
    """Refuse cross-validation where the script has none, and a fold column that would do nothing.

    Args:
        data_args: The parsed data arguments.
        sources: Where each explicitly given field was set, as `parse_arguments` returns it.
        supported: Whether the calling script runs cross-validation (the Trainer example does, the accelerate
            example does not).

    Raises:
        ValueError: When `--cross_validation_folds` is positive and not `supported`, or `--fold_column_name` is
            given without `--cross_validation_folds` (allowed when the command line turned a recipe's
            cross-validation off with `--cross_validation_folds 0`).
    """
    folds, column = data_args.cross_validation_folds, data_args.fold_column_name
    if folds > 0 and not supported:
        raise ValueError(f"--cross_validation_folds {folds} (from {sources.get('cross_validation_folds')}): "
                         "cross-validation is run by examples/run_audio_classification.py (the Trainer example); "
                         "use that script, or pass --cross_validation_folds 0 to train once here.")
    turned_off = sources.get("cross_validation_folds") == "the command line"
    if column and folds <= 0 and not turned_off:
        raise ValueError(f"--fold_column_name {column!r} (from {sources.get('fold_column_name', 'the default')}) has "
                         "no effect without --cross_validation_folds K; set it (Trainer example), or leave "
                         "--fold_column_name out.")


def warn_inert_settings(recipe: RecipeArguments, num_train_epochs: float, max_length: int | None,
                        num_mel_bins: int = 128) -> list[str]:
    """Warn about settings that are valid but cannot act in this run.

    These are a MultiStepLR that starts at or after the last epoch, and SpecAugment masks wider than the clip or
    the mel bins. Warned, not refused: a short trial run of a long recipe is a fair thing to do.

    Args:
        recipe: The parsed recipe arguments.
        num_train_epochs: The run's number of epochs.
        max_length: Frames per clip; `None` skips the time-mask check.
        num_mel_bins: Mel bins of the features.

    Returns:
        The warnings, each also issued as a `UserWarning`; empty when every setting can act.
    """
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


# Why an evaluation-only run of a model that was never trained is refused (checked where the run's steps and its
# data are settled).
UNTRAINED_EVALUATION = ("--do_train false evaluates without training, but the model is new (built from scratch or "
                        "converted, with a freshly initialised head): its metrics would be those of random weights. "
                        "Pass a fine-tuned model with --model_name_or_path, or leave --do_train out to train first.")


def train_requested(do_train: bool, sources: Mapping[str, str]) -> bool:
    """Whether a run trains: unless `--do_train false` was given (every data source has training data).

    Args:
        do_train: The parsed `--do_train`.
        sources: Where each explicitly given field was set, as `parse_arguments` returns it.

    Returns:
        `do_train` when `--do_train` was given explicitly, else `True`.
    """
    return do_train if "do_train" in sources else True


def resolve_run_steps(do_train: bool, do_eval: bool, sources: Mapping[str, str], has_evaluation_data: bool,
                      eval_strategy: str = "no", trained_model: bool = True) -> tuple[bool, bool]:
    """Decide whether a run trains and evaluates, as a user of the examples means it.

    A run trains unless `--do_train false` was given (every data source has training data), and evaluates when
    there is evaluation data unless `--do_eval false` was given.

    Args:
        do_train: The parsed `--do_train`.
        do_eval: The parsed `--do_eval`.
        sources: Where each explicitly given field was set, as `parse_arguments` returns it.
        has_evaluation_data: Whether the data has an evaluation split.
        eval_strategy: The Trainer's `--eval_strategy` (a string or an `IntervalStrategy`); `"no"` where the script
            has none.
        trained_model: Whether the model was trained before; false when it is new (built from scratch or
            converted, with a freshly initialised head).

    Returns:
        `(train, evaluate)`.

    Raises:
        ValueError: When the run would evaluate without training a model that was never trained, `--do_eval true`
            is given without evaluation data, an evaluation strategy other than `"no"` is given without evaluation
            data or with `--do_eval false`, or the run would do nothing.
    """
    train = train_requested(do_train, sources)
    if not train and not trained_model:
        raise ValueError(UNTRAINED_EVALUATION)
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
