"""The end of a run: results as JSON, the model card (what produced the model), the push of the output folder."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from .arguments import DataArguments, ModelArguments, RecipeArguments


def write_json(path: str | os.PathLike, data: Mapping[str, Any]) -> None:
    Path(path).write_text(json.dumps(dict(data), indent=2, sort_keys=True) + "\n")


# Settings of a run that the model card records besides the recipe fields (where the script has them).
_RECORDED_TRAINING = ("learning_rate", "num_train_epochs", "per_device_train_batch_size",
                      "gradient_accumulation_steps", "optim", "weight_decay", "adam_beta1", "adam_beta2",
                      "adam_epsilon", "lr_scheduler_type", "warmup_steps", "max_grad_norm", "label_smoothing_factor",
                      "seed")
_RECORDED_DATA = ("dataset_preset", "max_length", "pad_to_max_length", "compute_stats", "dataset_mean", "dataset_std")
_RECORDED_MODEL = ("model_name_or_path", "deit_name_or_path", "model_size", "config_overrides")


def run_record(recipe: RecipeArguments, data_args: DataArguments, model_args: ModelArguments, args: Any,
               model: Any = None, extractor: Any = None) -> dict[str, Any]:
    """What produced a model, for its card: the recipe fields, the optimisation and data settings actually used
    (the optimiser and schedule the run built, not flags a recipe replaced), where the model came from, and, given
    the trained `model` and its `extractor`, the strides, length, attention and normalisation they really use
    (--compute_stats' statistics, a preset's, or the extractor's defaults)."""
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
    if getattr(args, "max_steps", 0) > 0:  # the Trainer stops at max_steps: the epoch count did not apply
        record.pop("num_train_epochs", None)
        record["max_steps"] = args.max_steps
    record.update({name: getattr(data_args, name) for name in _RECORDED_DATA})
    if data_args.streaming:
        record.update(streaming=True, shuffle_buffer_size=data_args.shuffle_buffer_size)
    record.update({name: getattr(model_args, name) for name in _RECORDED_MODEL if getattr(model_args, name, None)})
    if model is not None:
        config = model.config
        record.update(frequency_stride=config.frequency_stride, time_stride=config.time_stride,
                      max_length=config.max_length, attn_implementation=config._attn_implementation)
    if extractor is not None:
        record.update(dataset_mean=extractor.mean, dataset_std=extractor.std, window_type=getattr(
            extractor, "window_type", "hanning"))
    return {name: getattr(value, "value", value) for name, value in record.items()}  # enums as their names


def write_model_card(output_dir: str | os.PathLike, model_name: str, metrics: Mapping[str, Any], dataset: str,
                     recipe: Mapping[str, Any], base_model: str | None, hub_model_id: str | None = None,
                     data_facts: Mapping[str, Any] | None = None,
                     log_history: Sequence[Mapping[str, Any]] | None = None) -> None:
    """README.md with the Hub metadata header, the metrics, the data, the per-epoch results, the recipe that
    produced them and the framework versions.

    model_name heads the card; the usage snippet loads `hub_model_id`, else `model_name` when it differs from the
    folder's name (the Hub repo the run pushes to), else the absolute path of `output_dir` (a folder name alone only
    loads from its parent directory). push_output_dir puts the repo id it created into the snippet. The model is
    "fine-tuned from" `base_model` (or the recipe's model_name_or_path / deit_name_or_path), a Hub id or the absolute
    path of a local folder (in the metadata's `base_model` too, never a path relative to where the run was started),
    and "trained from scratch" without one (--model_size). `data_facts`: the labels and the training and evaluation
    data with their clip counts (`prepare_data`'s facts); `log_history`: the Trainer's (or the loop's) log, whose
    evaluations make the results table.
    """
    reference = hub_model_id or (model_name if model_name != Path(output_dir).name else
                                 str(Path(output_dir).resolve()))
    pretrained = base_model or recipe.get("model_name_or_path") or recipe.get("deit_name_or_path")
    if pretrained:
        local = Path(pretrained).expanduser()
        if local.exists() or local.is_absolute() or pretrained.startswith("."):  # a folder: named absolutely
            pretrained = str(local.resolve())
        origin = f"fine-tuned from `{pretrained}`"
    else:
        size = recipe.get("model_size")
        origin = f"trained from scratch (model size {size})" if size else "trained from scratch"
    lines = ["---", "library_name: transformers", "pipeline_tag: audio-classification", "tags:", "- ast_hf",
             "- audio-spectrogram-transformer", "- audio-classification"]
    if pretrained and base_model:
        lines.append(f"base_model: {pretrained}")
    lines += ["---", "", f"# {model_name}", "",
              f"An Audio Spectrogram Transformer (Gong, Chung, Glass, Interspeech 2021) {origin} with ast_hf on "
              f"{dataset}.", "", "## Evaluation", "", "| metric | value |", "|---|---|"]
    lines += [f"| {k} | {v:.4f} |" if isinstance(v, float) else f"| {k} | {v} |" for k, v in sorted(metrics.items())]
    lines += _data_section(data_facts or {}) + _results_section(log_history or [])
    lines += ["", "## Recipe", "", "```json", json.dumps(dict(recipe), indent=2, sort_keys=True, default=str), "```",
              "", "## Use", "", "```python", "import ast_hf  # or trust_remote_code=True without it",
              "from transformers import pipeline", _usage_line(reference), "```", "", "## Framework versions", ""]
    lines += [f"- {name} {version}" for name, version in _framework_versions()] + [""]
    Path(output_dir, "README.md").write_text("\n".join(lines))


def _data_section(facts: Mapping[str, Any]) -> list[str]:
    """The card's data: the training and evaluation data and their clip counts, then the labels in id order."""
    if not facts:
        return []
    lines = ["", "## Data", ""]
    lines += [f"- {key}: {value}" for key, value in facts.items() if key not in ("labels", "multi_label")]
    labels = list(facts.get("labels", []))
    if labels:
        kind = "multi-label: each clip has any number of them" if facts.get("multi_label") else "one per clip"
        lines += ["", f"{len(labels)} labels ({kind}), in the order of the model's outputs: "
                  + ", ".join(f"`{label}`" for label in labels[:100]) + (", ..." if len(labels) > 100 else "")]
    return lines


def _results_section(log_history: Sequence[Mapping[str, Any]]) -> list[str]:
    """Training results, one row per evaluation during training (as transformers' cards have): epoch, step, the
    last training loss logged before it and the evaluation metrics."""
    evaluations = [entry for entry in log_history if any(k.startswith("eval_") for k in entry)]
    if not evaluations:
        return []
    keys = sorted({k for entry in evaluations for k in entry if k.startswith("eval_") and not k.endswith(
        ("_runtime", "_per_second"))})
    lines = ["", "## Training results", "", "| epoch | step | training loss | " + " | ".join(keys) + " |",
             "|---" * (3 + len(keys)) + "|"]
    loss, shown = None, {id(entry) for entry in evaluations}
    for entry in log_history:
        if "loss" in entry:
            loss = entry["loss"]
        if id(entry) in shown:
            cells = [_cell(entry.get("epoch")), _cell(entry.get("step")), _cell(loss)]
            lines.append("| " + " | ".join(cells + [_cell(entry.get(k)) for k in keys]) + " |")
    return lines


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    return f"{value:.4f}" if isinstance(value, float) and not float(value).is_integer() else f"{value:g}" \
        if isinstance(value, float) else str(value)


def _framework_versions() -> list[tuple[str, str]]:
    from importlib.metadata import PackageNotFoundError, version

    found = []
    for name in ("ast_hf", "transformers", "torch", "torchaudio", "datasets", "accelerate"):
        try:
            found.append((name, version(name)))
        except PackageNotFoundError:
            continue
    return found


_USAGE_PREFIX = 'classifier = pipeline("audio-classification", model='


def _usage_line(reference: str) -> str:
    return f"{_USAGE_PREFIX}{json.dumps(reference)})"  # JSON quoting is a valid Python string literal


def _point_usage_at(card: Path, repo_id: str) -> None:
    """Make the usage snippet of the model card `card` load `repo_id`."""
    lines = card.read_text().split("\n")
    card.write_text("\n".join(_usage_line(repo_id) if line.startswith(_USAGE_PREFIX) else line for line in lines))


def push_output_dir(output_dir: str | os.PathLike, repo_id: str, private: bool | None = None,
                    token: str | None = None) -> str:
    """Upload a finished output directory (model, code, feature extractor, model card, curves) to the Hub as it
    is, without checkpoints and logs; returns the commit URL."""
    from huggingface_hub import HfApi

    api = HfApi(token=token)
    repo_id = api.create_repo(repo_id, exist_ok=True, private=private).repo_id  # with the owner's namespace
    card = Path(output_dir, "README.md")
    if card.is_file():
        _point_usage_at(card, repo_id)  # the pushed card loads the model from the Hub, not from this machine
    info = api.upload_folder(folder_path=str(output_dir), repo_id=repo_id, commit_message="ast_hf fine-tuning run",
                             ignore_patterns=["checkpoint-*", "step_*", "runs/*", "process_*.json", "*.bin",
                                              "**/events.out.tfevents*", "events.out.tfevents*", "**/hparams.yml",
                                              "log_history.json", "trainer_state.json"])
    return str(info)
