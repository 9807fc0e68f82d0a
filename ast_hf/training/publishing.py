"""The end of a run: results as JSON, the model card (what produced the model), the push of the output folder."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from .arguments import DataArguments, ModelArguments, RecipeArguments


def write_json(path: str | os.PathLike, data: Mapping[str, Any]) -> None:
    """Write `data` as indented JSON with sorted keys, as transformers' examples write their results files.

    Args:
        path: The file to write.
        data: A mapping of JSON-serialisable values.
    """
    Path(path).write_text(json.dumps(dict(data), indent=2, sort_keys=True) + "\n")


# Settings of a run that the model card records besides the recipe fields (where the script has them).
_RECORDED_TRAINING = ("learning_rate", "num_train_epochs", "per_device_train_batch_size",
                      "gradient_accumulation_steps", "optim", "weight_decay", "adam_beta1", "adam_beta2",
                      "adam_epsilon", "lr_scheduler_type", "warmup_steps", "max_grad_norm", "label_smoothing_factor",
                      "seed", "bf16", "fp16")
_RECORDED_DATA = ("dataset_name", "dataset_preset", "max_length", "pad_to_max_length", "compute_stats", "dataset_mean",
                  "dataset_std")
_RECORDED_MODEL = ("model_name_or_path", "deit_name_or_path", "model_size", "config_overrides")


def run_record(recipe: RecipeArguments, data_args: DataArguments, model_args: ModelArguments, args: Any,
               model: Any = None, extractor: Any = None) -> dict[str, Any]:
    """What produced a model, for its card.

    The recipe fields, the optimisation, precision and data settings actually used (the optimiser and schedule the
    run built, not flags a recipe replaced), where the model came from, and, given the trained `model` and its
    `extractor`, the strides, length, attention and normalisation they really use (--compute_stats' statistics, a
    preset's, or the extractor's defaults).

    Args:
        recipe: The run's `RecipeArguments`.
        data_args: The run's `DataArguments`.
        model_args: The run's `ModelArguments`.
        args: The Trainer's `TrainingArguments`, or the accelerate script's arguments.
        model: The trained model, when there is one.
        extractor: Its feature extractor.

    Returns:
        A flat dict of settings (enums as their values), the card's hyper-parameter table.
    """
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
    if getattr(model_args, "freeze_encoder", False):
        record["freeze_encoder"] = True  # only the classifier head trained
    if model is not None:
        config = model.config
        record.update(frequency_stride=config.frequency_stride, time_stride=config.time_stride,
                      max_length=config.max_length, attn_implementation=config._attn_implementation)
    if extractor is not None:
        record.update(dataset_mean=extractor.mean, dataset_std=extractor.std, window_type=getattr(
            extractor, "window_type", "hanning"))
    return {name: getattr(value, "value", value) for name, value in record.items()}  # enums as their names


# Metrics of an evaluation that describe the run, not the model: left out of the card's results.
_RUNTIME_METRICS = ("_runtime", "_samples_per_second", "_steps_per_second")


def model_card_metrics(metrics: Mapping[str, Any]) -> dict[str, Any]:
    """The evaluation metrics a model card reports: `eval_*` values without timings, the prefix dropped.

    Args:
        metrics: A run's metrics (`eval_accuracy`, `eval_loss`, `eval_runtime`, `epoch`, ...).

    Returns:
        {"accuracy": ..., "loss": ...}: the evaluation results, without `epoch`, runtimes and throughputs.
    """
    return {key[len("eval_"):]: value for key, value in metrics.items()
            if key.startswith("eval_") and not key.endswith(_RUNTIME_METRICS) and key != "eval_epoch"}


def write_model_card(output_dir: str | os.PathLike, model_name: str, metrics: Mapping[str, Any], dataset: str,
                     recipe: Mapping[str, Any], base_model: str | None, hub_model_id: str | None = None,
                     data_facts: Mapping[str, Any] | None = None,
                     log_history: Sequence[Mapping[str, Any]] | None = None) -> None:
    """Write the model card, README.md: Hub metadata, then the sections transformers' Trainer cards have.

    The YAML header (parsed by `huggingface_hub.ModelCard`) holds `library_name`, `pipeline_tag`, `tags`, `license`
    when the base model's card states one, `datasets` when the data came from the Hub, `base_model` when the model
    was fine-tuned from a Hub id or a local folder (named by its absolute path), the `metrics` and a `model-index`
    with the evaluation results. The sections: the model and its intended use, the data (clip counts, labels),
    the training procedure and hyper-parameters (with the precision), the results (the final evaluation and one row
    per evaluation during training, without timings), how to use it, and the framework versions.

    Args:
        output_dir: The run's output directory; the card is written to `output_dir/README.md`.
        model_name: The card's title.
        metrics: The final metrics (`eval_*` keys are reported).
        dataset: A description of the training data.
        recipe: What produced the model (`run_record`).
        base_model: The checkpoint fine-tuned from (`--model_name_or_path` or `--deit_name_or_path`), else None.
        hub_model_id: The Hub repository the usage snippet loads; else `model_name` when it differs from the
            folder's name (the repository a push creates), else the absolute path of `output_dir`.
        data_facts: The training and evaluation data with their clip counts and the labels (`prepare_data`'s
            facts).
        log_history: The Trainer's (or the loop's) log; its evaluations make the table of results.
    """
    from huggingface_hub import EvalResult, ModelCard, ModelCardData

    facts = dict(data_facts or {})
    results = model_card_metrics(metrics)
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
    hub_dataset = recipe.get("dataset_name")
    if hub_dataset and Path(hub_dataset).expanduser().exists():
        hub_dataset = None  # a local folder is no Hub data set
    evaluation = str(facts.get("evaluation data") or dataset)
    evaluation_name = evaluation.split(" ", 1)[1] if evaluation.startswith("--") and " " in evaluation else evaluation
    data = ModelCardData(
        library_name="transformers", pipeline_tag="audio-classification", model_name=model_name,
        tags=["ast_hf", "audio-spectrogram-transformer", "audio-classification"],
        license=_base_model_license(pretrained) if pretrained else None,
        datasets=[hub_dataset] if hub_dataset else None, base_model=pretrained if base_model else None,
        metrics=sorted(name for name in results if name != "loss") or None,
        eval_results=[EvalResult(task_type="audio-classification", task_name="Audio Classification",
                                 dataset_type=hub_dataset or "audiofolder", dataset_name=evaluation_name,
                                 dataset_split="validation", metric_type=name, metric_name=name,
                                 metric_value=round(float(value), 6))
                      for name, value in sorted(results.items()) if name != "loss"] or None,
    )
    labels = list(facts.get("labels", []))
    multi_label = bool(facts.get("multi_label"))
    lines = [f"# {model_name}", "",
             f"An Audio Spectrogram Transformer (Gong, Chung, Glass, Interspeech 2021) {origin} with ast_hf on "
             f"{dataset}.", "", "## Intended use", ""]
    lines += [_intended_use(labels, multi_label), ""]
    lines += ["## Results", "", f"On the evaluation data ({evaluation}):", "", "| metric | value |", "|---|---|"]
    lines += [f"| {name} | {value:.4f} |" if isinstance(value, float) else f"| {name} | {value} |"
              for name, value in sorted(results.items())]
    lines += _data_section(facts) + _procedure_section(recipe) + _results_section(log_history or [])
    lines += ["", "## Use", "", "```python", "import ast_hf  # or trust_remote_code=True without it",
              "from transformers import pipeline", _usage_line(reference), "```", "", "## Framework versions", ""]
    lines += [f"- {name} {version}" for name, version in _framework_versions()] + [""]
    card = ModelCard(f"---\n{data.to_yaml()}\n---\n\n" + "\n".join(lines))
    Path(output_dir, "README.md").write_text(str(card))


def _intended_use(labels: Sequence[str], multi_label: bool) -> str:
    """What the model is for and what it cannot tell, from its labels."""
    kind = ("tags each clip with any number of its labels (independent sigmoid scores)" if multi_label else
            "gives each clip one of its labels (softmax scores that sum to 1)")
    text = (f"Audio classification: the model {kind}. It expects 16 kHz mono audio (the pipeline resamples and mixes "
            "down any file) and was trained on the data below; on audio unlike it the scores mean little.")
    if not multi_label and labels:
        text += (" A sound that is none of its classes still gets one of them, often with a high score: add a "
                 "background class to the training data where that matters.")
    return text


def _procedure_section(recipe: Mapping[str, Any]) -> list[str]:
    """The training procedure: precision and the hyper-parameters, as a table."""
    precision = "bfloat16 mixed precision" if recipe.get("bf16") else "float16 mixed precision" if recipe.get(
        "fp16") else "float32"
    frozen = " Only the classifier head trained: the encoder was frozen (`--freeze_encoder`)." if recipe.get(
        "freeze_encoder") else ""
    lines = ["", "## Training procedure", "", f"Trained in {precision} with ast_hf's fine-tuning scripts.{frozen}", "",
             "| hyper-parameter | value |", "|---|---|"]
    lines += [f"| {name} | {f'{value:.6g}' if isinstance(value, float) else value} |"
              for name, value in sorted(recipe.items()) if value is not None and not name.startswith("_")]
    return lines


def _base_model_license(pretrained: str) -> str | None:
    """The license in the card of a local base model, if it states one (a Hub model's card is not fetched)."""
    card = Path(pretrained, "README.md")
    if not card.is_file():
        return None
    try:
        from huggingface_hub import ModelCard

        return ModelCard.load(card).data.license
    except Exception:  # noqa: BLE001 (a card that does not parse states no license we can use)
        return None


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
    lines = ["", "## Evaluations during training", "",
             "| epoch | step | training loss | " + " | ".join(keys) + " |",
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
    """Upload a finished output directory to the Hub as it is, without checkpoints and logs.

    The model, its code, the feature extractor, the model card and the curves go up in one commit; the card's usage
    snippet is pointed at the repository first.

    Args:
        output_dir: The run's output directory.
        repo_id: The repository, `NAME` (in the token owner's namespace) or `OWNER/NAME`; created when missing.
        private: Create the repository as private.
        token: A Hub token; the stored login when None.

    Returns:
        The commit's URL.
    """
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
