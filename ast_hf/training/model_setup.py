"""The model and feature extractor of a run: a trained AST re-targeted to the data, a DeiT/ViT converted on the fly,
or a named size from scratch; --config_overrides."""

from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from ..feature_extraction_ast import ASTFeatureExtractor
from .arguments import DataArguments, ModelArguments, RecipeArguments
from .data import ModelLabels

MODEL_SIZES = {
    "tiny": dict(hidden_size=192, num_hidden_layers=4, num_attention_heads=3, intermediate_size=768),
    "small": dict(hidden_size=256, num_hidden_layers=4, num_attention_heads=4, intermediate_size=1024),
    "base": dict(hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072),
}
"""The sizes of --model_size, for training from scratch (ViT naming): `ASTConfig` fields per name. "tiny" (192 wide,
4 layers, 3 heads) is what the main job and the demo train; "small" is 256 wide with 4 layers and 4 heads; "base" is
ViT-Base (768 wide, 12 layers, 12 heads)."""


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
    """Parse --config_overrides: `"key=value,key=value"` into ASTConfig fields.

    Each value is typed like the field's `ASTConfig` default: "true"/"false" for booleans, integers (also written
    as "2.0") for ints, floats and strings as they are. Empty items are skipped.

    Args:
        text: The flag's value; None or "" gives no overrides.
        pretrained: The model comes from a checkpoint (pretrained or converted), so the fields that set the shapes
            of the weights (`hidden_size`, `num_hidden_layers`, `num_attention_heads`, `intermediate_size`,
            `patch_size`, `qkv_bias`, `num_mel_bins`) cannot change.

    Returns:
        `{field: typed value}`.

    Raises:
        ValueError: With a clear message when an item is not `key=value`; when the key is not a field of
            `ASTConfig`, or is a field with its own flag (`max_length`, the strides, Patchout, the labels and
            `problem_type`); when it is a shape field and `pretrained`; or when the value is not of the field's
            type.

    Example:
        ```python
        parse_config_overrides("hidden_dropout_prob=0.1,attention_probs_dropout_prob=0.1", pretrained=True)
        # {"hidden_dropout_prob": 0.1, "attention_probs_dropout_prob": 0.1}
        ```
    """
    from ..configuration_ast import ASTConfig

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
            elif default is None:  # optional fields (classifier_layer_norm_eps): a number, or none
                value = None if raw.lower() in ("none", "null") else float(raw)
            else:
                value = type(default)(float(raw)) if isinstance(default, int) and float(raw).is_integer() \
                    else type(default)(raw)
        except ValueError:
            kind = "number (or None)" if default is None else type(default).__name__
            raise ValueError(f"--config_overrides: {key}={raw!r} is not a {kind} (default {default!r}).") from None
        overrides[key] = value
    return overrides


def check_model_source(model_args: ModelArguments) -> None:
    """Check that the run names exactly one model source, and a known size.

    Checked before any data is loaded (the scripts call it first).

    Args:
        model_args: The model arguments: --model_name_or_path (an AST), --deit_name_or_path (a DeiT/ViT to
            convert) or --model_size (one of `MODEL_SIZES`).

    Raises:
        ValueError: When none or more than one of the three is given, when --model_size is not one of
            `MODEL_SIZES`, or when --model_name_or_path is a local path that is not an AST checkpoint directory.
    """
    sources = [x for x in (model_args.model_name_or_path, model_args.deit_name_or_path, model_args.model_size) if x]
    if len(sources) != 1:
        raise ValueError("Give exactly one of --model_name_or_path (an AST), --deit_name_or_path (a DeiT/ViT to "
                         f"convert) or --model_size ({' | '.join(MODEL_SIZES)}), got {sources or 'none'}.")
    if model_args.model_size and model_args.model_size not in MODEL_SIZES:
        raise ValueError(f"--model_size {model_args.model_size!r} is not one of {sorted(MODEL_SIZES)}.")
    if model_args.model_name_or_path:
        from ..checkpoint_files import check_ast_checkpoint

        check_ast_checkpoint(model_args.model_name_or_path, "--model_name_or_path")


def pretrained_labels(model_args: ModelArguments) -> ModelLabels | None:
    """Read the classes of the trained AST that --model_name_or_path names, from its config.json alone.

    A run matches the data's labels to them by name.

    Args:
        model_args: The model arguments (--model_name_or_path, --cache_dir).

    Returns:
        The checkpoint, its label names in id order (`LABEL_i` when its config has no `id2label`) and whether it is
            multi-label (`problem_type`); None for a model built from scratch or converted.

    Raises:
        OSError: As transformers' `PretrainedConfig.get_config_dict` does, when the config.json cannot be found or
            read.
    """
    if not model_args.model_name_or_path:
        return None
    from transformers import PretrainedConfig

    config, _ = PretrainedConfig.get_config_dict(model_args.model_name_or_path, cache_dir=model_args.cache_dir)
    id2label = config.get("id2label")
    if id2label:
        names = [str(id2label[key]) for key in sorted(id2label, key=int)]
    else:
        names = [f"LABEL_{i}" for i in range(int(config.get("num_labels", 2)))]
    multi = config.get("problem_type") == "multi_label_classification"
    return ModelLabels(model_args.model_name_or_path, names, multi)


def follow_model_convention(model_args: ModelArguments, data_args: DataArguments, sources: Mapping[str, str],
                            train: bool) -> None:
    """Make an evaluation-only run feed the model as it was trained, as the pipeline does.

    For an evaluation-only run (`train` false) of a trained AST, sets `data_args.pad_to_max_length` from the
    checkpoint's preprocessor_config.json: padded to max_length, or at each clip's own length with a mask (the
    default extractor, padded, when the file is missing). A run that trains picks its own convention (and saves
    it); an explicit --pad_to_max_length always wins.

    Args:
        model_args: The model arguments (--model_name_or_path, --cache_dir, --trust_remote_code).
        data_args: The data arguments; `pad_to_max_length` is set in place.
        sources: `{field: where it was set}` of `parse_arguments`, for every field given explicitly (in the recipe
            file or on the command line).
        train: The run trains; then nothing changes.
    """
    if train or "pad_to_max_length" in sources or not model_args.model_name_or_path:
        return
    try:
        saved = ASTFeatureExtractor.from_pretrained(model_args.model_name_or_path, cache_dir=model_args.cache_dir,
                                                    trust_remote_code=model_args.trust_remote_code)
    except OSError:  # no preprocessor_config.json: the default extractor, padded
        saved = ASTFeatureExtractor()
    data_args.pad_to_max_length = saved.pad_to_max_length


def prepare_model_and_extractor(model_args: ModelArguments, data_args: DataArguments, recipe: RecipeArguments,
                                labels: Sequence[str], multi_label: bool, describe: Callable[[str], None] = print):
    """Build the run's model and feature extractor.

    The model is one of:

    - a trained AST (--model_name_or_path), re-targeted to these labels, `max_length` and strides when they
      differ (a new or re-ordered classifier head; see `ast_hf.convert.retarget_model`);
    - a DeiT/ViT (--deit_name_or_path) converted on the fly (`max_length` 1024 unless --max_length says
      otherwise);
    - a named size (--model_size, one of `MODEL_SIZES`) from scratch, with LayerNorm epsilon 1e-6 and
      `max_length` 1024 unless --max_length says otherwise.

    Its config gets the problem type, the recipe's Patchout and --config_overrides. The feature extractor has the
    checkpoint's settings (the default AudioSet ones when it has no preprocessor_config.json, or for the other
    sources), --dataset_mean/--dataset_std where given, the model's `max_length` and `num_mel_bins`, and the run's
    input convention: padded to `max_length` without a mask when `data_args.pad_to_max_length`, else at each
    clip's own length with an attention mask. It is saved with the model, so every entry point feeds it the same
    way.

    Args:
        model_args: The model arguments: the model source, --frequency_stride, --time_stride,
            --config_overrides, --attn_implementation, --ignore_mismatched_sizes, --cache_dir and
            --trust_remote_code.
        data_args: The data arguments: --max_length, --dataset_mean, --dataset_std and --pad_to_max_length.
        recipe: The recipe (--patchout_time and --patchout_frequency).
        labels: The data's label names, in id order.
        multi_label: The data is multi-label (`problem_type="multi_label_classification"`).
        describe: Called with a line of text for each thing worth telling (re-targeting, a missing
            preprocessor_config.json, the conversion).

    Returns:
        (tuple[ASTForAudioClassification, ASTFeatureExtractor]): The model and the feature extractor.

    Raises:
        ValueError: As `parse_config_overrides` and `check_model_source` do; when a trained AST must be re-targeted
            but --ignore_mismatched_sizes is false; when --patchout_time or --patchout_frequency would drop all the
            time columns or frequency rows of the patch grid.
    """
    from .. import convert
    from ..checkpoint_surgery import label_fields as head_label_fields
    from ..configuration_ast import POOLINGS, ASTConfig
    from ..modeling_ast import ASTForAudioClassification

    label_fields = head_label_fields(list(labels))
    problem_type = "multi_label_classification" if multi_label else "single_label_classification"
    if data_args.max_length is None and not model_args.model_name_or_path:
        warnings.warn("--max_length is not given (nor a --dataset_preset): clips are cut at 1024 frames (10.24 s), "
                      "AudioSet's length. Give --max_length in frames (100 a second) to fit your clips.", stacklevel=2)
    geometry = {name: value for name, value in (("max_length", data_args.max_length),
                                                ("frequency_stride", model_args.frequency_stride),
                                                ("time_stride", model_args.time_stride)) if value is not None}
    overrides = parse_config_overrides(model_args.config_overrides, pretrained=model_args.model_size is None)
    extras = dict(problem_type=problem_type, patchout_time=recipe.patchout_time,
                  patchout_frequency=recipe.patchout_frequency, **overrides)
    if model_args.pooling is not None:
        if model_args.pooling not in POOLINGS:
            raise ValueError(f"--pooling {model_args.pooling!r} is not one of {', '.join(POOLINGS)}.")
        extras["pooling"] = model_args.pooling
    check_model_source(model_args)
    extractor = None
    if model_args.model_name_or_path:
        path = model_args.model_name_or_path
        model = ASTForAudioClassification.from_pretrained(
            path, attn_implementation=model_args.attn_implementation, cache_dir=model_args.cache_dir,
            trust_remote_code=model_args.trust_remote_code, **overrides)  # dropout is built from the config
        try:
            extractor = ASTFeatureExtractor.from_pretrained(path, cache_dir=model_args.cache_dir,
                                                            trust_remote_code=model_args.trust_remote_code)
        except OSError:
            describe(f"{path} has no preprocessor_config.json: default AudioSet feature-extractor settings")
        pretrained_only = "ASTForPreTraining" in (model.config.architectures or [])  # no classifier to keep
        if extractor is not None and extractor.pad_to_max_length != data_args.pad_to_max_length \
                and not pretrained_only:
            trained, now = (("padded to max_length", "at their own length in masked batches")
                            if extractor.pad_to_max_length else
                            ("at their own length in masked batches", "padded to max_length"))
            warnings.warn(f"{path} was trained on clips {trained}, and this run trains it on clips {now} "
                          f"(--pad_to_max_length {str(data_args.pad_to_max_length).lower()}); the two are not "
                          "interchangeable, and the saved model will follow this run's. Pass --pad_to_max_length "
                          f"{str(extractor.pad_to_max_length).lower()} to keep the model's.", stacklevel=2)
        changes = {k: v for k, v in geometry.items() if getattr(model.config, k) != v}
        old_labels = [str(model.config.id2label[i]) for i in range(model.config.num_labels)]
        if list(labels) != old_labels:
            changes.update(label_fields)
        if changes and not model_args.ignore_mismatched_sizes:
            raise ValueError(f"--ignore_mismatched_sizes false, but {path} must be re-targeted to this run "
                             f"({', '.join(sorted(k for k in changes if k != 'label2id'))} differ); leave the flag "
                             "out.")
        if changes:
            old = model.config.patch_grid
            model = convert.retarget_model(model, **changes, **extras)
            head = ""
            if "id2label" in changes and "ASTForPreTraining" in (model.config.architectures or []):
                head = f"; new classifier head for the data's {len(labels)} labels on the SSAST-pretrained encoder"
            elif "id2label" in changes:
                kept = sorted(labels) == sorted(old_labels)
                head = ("; classifier head re-ordered to the data's labels" if kept else
                        f"; new classifier head for the data's {len(labels)} labels ({', '.join(list(labels)[:8])}"
                        f"{', ...' if len(labels) > 8 else ''}) in place of the model's {len(old_labels)}")
            describe(f"re-targeted {path}: {sorted(k for k in changes if k != 'label2id')}, grid {old} -> "
                     f"{model.config.patch_grid}{head}")
        else:
            for key, value in extras.items():
                setattr(model.config, key, value)
    elif model_args.deit_name_or_path:
        model = convert.load_deit_as_ast(model_args.deit_name_or_path, cache_dir=model_args.cache_dir,
                                         describe=describe, **{"max_length": 1024, **geometry}, **label_fields,
                                         **extras)
    else:
        config = ASTConfig(**{**MODEL_SIZES[model_args.model_size], "layer_norm_eps": 1e-6, "max_length": 1024,
                              **geometry, **label_fields, **extras})
        model = ASTForAudioClassification._from_config(config, attn_implementation=model_args.attn_implementation)
    grid_f, grid_t = model.config.patch_grid  # at max_length
    for flag, dropped, size, kind in (("--patchout_time", recipe.patchout_time, grid_t, "time columns"),
                                      ("--patchout_frequency", recipe.patchout_frequency, grid_f, "frequency rows")):
        if dropped >= size:
            raise ValueError(f"{flag} {dropped} drops all {size} {kind} of the {grid_f} x {grid_t} patch grid "
                             f"(max_length={model.config.max_length}); Patchout keeps at least one, so at most "
                             f"{flag} {size - 1} can act. Give a smaller value (PaSST drops about 40% of a grid).")
    settings = extractor.to_dict() if extractor is not None else {}
    if data_args.dataset_mean is not None:
        settings["mean"] = data_args.dataset_mean
    if data_args.dataset_std is not None:
        settings["std"] = data_args.dataset_std
    settings.update(max_length=model.config.max_length, num_mel_bins=model.config.num_mel_bins)
    # The input convention this run trains with, saved in preprocessor_config.json: every entry point then feeds the
    # model the same way (padded to max_length without a mask, or at its own length with one).
    padded = data_args.pad_to_max_length
    settings.update(pad_to_max_length=padded, return_attention_mask=not padded)
    if model_args.freeze_encoder:
        if model_args.model_size:
            warnings.warn("--freeze_encoder with --model_size: the encoder is randomly initialised and stays so; only "
                          "the head trains, on random features (a baseline). Start from a trained AST "
                          "(--model_name_or_path) for a frozen encoder that has learnt audio.", stacklevel=2)
        freeze_encoder(model, describe, pretrained=not model_args.model_size)
    return model, ASTFeatureExtractor(**settings)


def freeze_encoder(model: Any, describe: Callable[[str], None] = print, pretrained: bool = True) -> int:
    """Stop the gradients of a classifier's encoder, so that only its head trains (`--freeze_encoder`).

    Args:
        model: An `ASTForAudioClassification`.
        describe: Called with a line saying how many parameters train.
        pretrained: Whether the encoder's weights were loaded (else they are its random initialisation).

    Returns:
        The number of parameters that still train.
    """
    for parameter in model.audio_spectrogram_transformer.parameters():
        parameter.requires_grad_(False)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    kept = "as loaded" if pretrained else "as initialised (random)"
    describe(f"--freeze_encoder: training {trainable:,} of {total:,} parameters (the classifier head); the encoder's "
             f"{total - trainable:,} stay {kept}")
    return trainable
