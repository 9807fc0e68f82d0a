"""The model and feature extractor of a run: a trained AST re-targeted to the data, a DeiT/ViT converted on the fly,
or a named size from scratch; --config_overrides."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from ..feature_extraction_ast import ASTFeatureExtractor
from .arguments import DataArguments, ModelArguments, RecipeArguments
from .data import ModelLabels

# Sizes for training from scratch (ViT naming); "tiny" is what the main job and the demo train.
MODEL_SIZES = {
    "tiny": dict(hidden_size=192, num_hidden_layers=4, num_attention_heads=3, intermediate_size=768),
    "small": dict(hidden_size=256, num_hidden_layers=4, num_attention_heads=4, intermediate_size=1024),
    "base": dict(hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072),
}


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
            else:
                value = type(default)(float(raw)) if isinstance(default, int) and float(raw).is_integer() \
                    else type(default)(raw)
        except ValueError:
            raise ValueError(f"--config_overrides: {key}={raw!r} is not a {type(default).__name__} (default "
                             f"{default!r}).") from None
        overrides[key] = value
    return overrides


def check_model_source(model_args: ModelArguments) -> None:
    """Exactly one model source, and a known size: checked before any data is loaded (the scripts call it first)."""
    sources = [x for x in (model_args.model_name_or_path, model_args.deit_name_or_path, model_args.model_size) if x]
    if len(sources) != 1:
        raise ValueError("Give exactly one of --model_name_or_path (an AST), --deit_name_or_path (a DeiT/ViT to "
                         f"convert) or --model_size ({' | '.join(MODEL_SIZES)}), got {sources or 'none'}.")
    if model_args.model_size and model_args.model_size not in MODEL_SIZES:
        raise ValueError(f"--model_size {model_args.model_size!r} is not one of {sorted(MODEL_SIZES)}.")


def pretrained_labels(model_args: ModelArguments) -> ModelLabels | None:
    """The classes of the trained AST that --model_name_or_path names (read from its config.json alone), None for a
    model built from scratch or converted: a run matches the data's labels to them by name."""
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
    """An evaluation-only run (`train` false) feeds the model as it was trained and as the pipeline does: padded to
    max_length or at each clip's own length with a mask, as its preprocessor_config.json says, unless
    --pad_to_max_length was given. A run that trains picks its own convention (and saves it)."""
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
    """(ASTForAudioClassification, ASTFeatureExtractor) for the run: a trained AST re-targeted to these labels,
    length and strides when they differ; a DeiT/ViT converted on the fly; or a named size from scratch."""
    from .. import convert
    from ..checkpoint_surgery import label_fields as head_label_fields
    from ..configuration_ast import ASTConfig
    from ..modeling_ast import ASTForAudioClassification

    label_fields = head_label_fields(list(labels))
    problem_type = "multi_label_classification" if multi_label else "single_label_classification"
    geometry = {name: value for name, value in (("max_length", data_args.max_length),
                                                ("frequency_stride", model_args.frequency_stride),
                                                ("time_stride", model_args.time_stride)) if value is not None}
    overrides = parse_config_overrides(model_args.config_overrides, pretrained=model_args.model_size is None)
    extras = dict(problem_type=problem_type, patchout_time=recipe.patchout_time,
                  patchout_frequency=recipe.patchout_frequency, **overrides)
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
            if "id2label" in changes:
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
    return model, ASTFeatureExtractor(**settings)
