"""The setup and the end of a fine-tuning run, shared by both examples: the run's model, feature extractor
(training-set statistics with --compute_stats), collators and balanced sampler; and, once trained and evaluated,
the results JSON, confusion matrix, training curves, model card and push. Each example keeps only its loop.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..feature_extraction_ast import ASTFeatureExtractor
from .arguments import DataArguments, ModelArguments, RecipeArguments
from .collator import AudioCollator, make_collators
from .metrics import classification_scores
from .model_setup import prepare_model_and_extractor
from .plots import plot_training_curves, save_confusion_matrix
from .publishing import push_output_dir, write_json, write_model_card
from .sampling import dataset_sample_weights


@dataclass
class RunParts:
    """What a training loop needs besides its optimiser: the model, the feature extractor it was trained with (to
    be saved beside it), the training and evaluation collators, and the balanced sampler's weights (or None)."""

    model: torch.nn.Module
    extractor: ASTFeatureExtractor
    train_collator: AudioCollator
    eval_collator: AudioCollator
    sample_weights: torch.Tensor | None


def build_run(model_args: ModelArguments, data_args: DataArguments, recipe: RecipeArguments, raw: Mapping[str, Any],
              labels: Sequence[str], multi_label: bool, seed: int, label_smoothing: float = 0.0,
              describe: Callable[[str], None] = print) -> RunParts:
    """The model and feature extractor (`prepare_model_and_extractor`), with the training set's fbank statistics
    when --compute_stats is set, the collators and the sampler weights of --balanced_sampling."""
    model, extractor = prepare_model_and_extractor(model_args, data_args, recipe, labels, multi_label,
                                                   describe=describe)
    if data_args.compute_stats and "train" not in raw:
        raise ValueError("--compute_stats computes the fbank statistics of the training data, but this run only "
                         "evaluates (--do_train false): the model's own statistics are used. Leave it out.")
    if data_args.compute_stats:
        extractor = with_training_statistics(extractor, raw["train"], data_args.audio_column_name, describe)
    train_collator, eval_collator = make_collators(extractor, len(labels), multi_label, data_args, recipe, seed,
                                                   label_smoothing)
    weights = None
    if recipe.balanced_sampling and "train" in raw:
        weights = dataset_sample_weights(raw["train"], data_args.label_column_name, len(labels), multi_label)
    return RunParts(model, extractor, train_collator, eval_collator, weights)


def with_training_statistics(extractor: ASTFeatureExtractor, train_split: Any, audio_column: str,
                             describe: Callable[[str], None] = print) -> ASTFeatureExtractor:
    """A copy of `extractor` normalising with the mean and std of the training split's fbank (the paper's
    per-data-set statistics, computed instead of looked up)."""
    from ..stats import compute_normalization_stats

    mean, std = compute_normalization_stats(train_split, extractor, audio_column=audio_column)
    describe(f"training-set fbank mean {mean:.4f} std {std:.4f}")
    return ASTFeatureExtractor(**{**extractor.to_dict(), "mean": mean, "std": std})


def evaluate_with_accelerator(model: torch.nn.Module, dataloader: Iterable[Mapping[str, torch.Tensor]],
                              accelerator: Any, multi_label: bool) -> tuple[dict[str, float], np.ndarray, np.ndarray]:
    """(metrics, logits, labels) over a whole evaluation set, gathered from every process (accelerate drops the
    duplicates it padded the last batch with). The logits and labels are collected once and scored once."""
    model.eval()
    logits, labels, losses = [], [], []
    for batch in dataloader:
        with torch.no_grad():
            outputs = model(**batch)
        gathered = accelerator.gather_for_metrics((outputs.logits, batch["labels"],
                                                   outputs.loss.detach().repeat(len(batch["labels"]))))
        for collected, tensor in zip((logits, labels, losses), gathered, strict=True):
            collected.append(tensor.float().cpu() if tensor.is_floating_point() else tensor.cpu())
    all_logits, all_labels = torch.cat(logits).numpy(), torch.cat(labels).numpy()
    metrics = {f"eval_{k}": v for k, v in classification_scores(all_logits, all_labels, multi_label).items()}
    metrics["eval_loss"] = float(torch.cat(losses).mean())
    return metrics, all_logits, all_labels


def finish_run(output_dir: str | Path, *, is_main_process: bool, process_index: int, world_size: int,
               trained: bool, metrics: Mapping[str, Any], log_history: Sequence[Mapping[str, Any]],
               evaluation: tuple[np.ndarray, np.ndarray] | None, labels: Sequence[str], multi_label: bool,
               record: Mapping[str, Any], description: str, model_name: str, base_model: str | None,
               examples_collated: int, push_repo: str | None = None, push_private: bool | None = None,
               push_token: str | None = None, data_facts: Mapping[str, Any] | None = None) -> None:
    """Everything after the model (and its extractor) is saved, the same for both examples: the final metrics
    printed and written as transformers' examples do (train_results.json, eval_results.json, all_results.json), the
    confusion matrix of an evaluation (single-label), and for a run that trained the training curves, the model
    card (with `data_facts`, what prepare_data says about the data) and the push of the folder; every process
    writes process_RANK.json (what it collated)."""
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    if is_main_process:
        for split, part in (("train", {k: v for k, v in metrics.items() if not k.startswith("eval_")}),
                            ("eval", {k: v for k, v in metrics.items() if k.startswith("eval_")})):
            if part and (split == "eval" or trained):
                print_metrics(split, part)
                write_json(output_dir / f"{split}_results.json", part)
        write_json(output_dir / "all_results.json", metrics)
        if evaluation is not None and not multi_label:
            save_confusion_matrix(*evaluation, list(labels), output_dir / "confusion_matrix.png")
    if is_main_process and trained:  # no card, curves or push for a run that trained nothing
        plot_training_curves(log_history, output_dir / "training_curves.png")
        scores = {k: v for k, v in metrics.items() if k.startswith("eval_")}
        write_model_card(output_dir, push_repo or model_name, scores, description, record, base_model,
                         data_facts=data_facts, log_history=log_history)
        if push_repo:
            push_output_dir(output_dir, push_repo, private=push_private, token=push_token)
    import resource

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # kB on Linux; DataLoader workers not counted
    write_json(output_dir / f"process_{process_index}.json",
               {"rank": process_index, "world_size": world_size, "examples_collated_for_training": examples_collated,
                "peak_memory_mb": round(peak, 1)})


def print_metrics(split: str, metrics: Mapping[str, Any]) -> None:
    """The `***** eval metrics *****` block that transformers' Trainer prints at the end of its examples."""
    print(f"***** {split} metrics *****")
    width = max(len(key) for key in metrics)
    for key in sorted(metrics):
        value = metrics[key]
        print(f"  {key:<{width}} = {round(value, 4) if isinstance(value, float) else value}")


__all__ = ["RunParts", "build_run", "evaluate_with_accelerator", "finish_run", "print_metrics",
           "with_training_statistics"]
