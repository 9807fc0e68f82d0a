"""The setup and the end of a fine-tuning run, shared by both examples: the run's model, feature extractor
(training-set statistics with --compute_stats), collators and balanced sampler; and, once trained and evaluated,
the results JSON, confusion matrix, training curves, model card and push. Each example keeps only its loop.
"""

from __future__ import annotations

import sys
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
    """What a training loop needs besides its optimiser, as `build_run` returns it.

    Attributes:
        model: The model to train or evaluate (an `ASTForAudioClassification`).
        extractor: The feature extractor it is trained with, to be saved beside it.
        train_collator: The training collator, with the recipe's augmentations and label smoothing.
        eval_collator: The plain evaluation collator.
        sample_weights: The balanced sampler's weight per training clip (--balanced_sampling), or None.
    """

    model: torch.nn.Module
    extractor: ASTFeatureExtractor
    train_collator: AudioCollator
    eval_collator: AudioCollator
    sample_weights: torch.Tensor | None


def build_run(model_args: ModelArguments, data_args: DataArguments, recipe: RecipeArguments, raw: Mapping[str, Any],
              labels: Sequence[str], multi_label: bool, seed: int, label_smoothing: float = 0.0,
              describe: Callable[[str], None] = print) -> RunParts:
    """Set up a run: its model, feature extractor, collators and sampler weights.

    The model and feature extractor come from `prepare_model_and_extractor`; the extractor normalises with the
    training set's fbank statistics when --compute_stats is set (`with_training_statistics`). Then the collators
    (`make_collators`) and, with --balanced_sampling and a training split, the sampler weights
    (`dataset_sample_weights`).

    Args:
        model_args: The model arguments.
        data_args: The data arguments (--compute_stats, the audio and label columns, ...).
        recipe: The recipe (augmentations, Patchout, --balanced_sampling, ...).
        raw: The data's splits by name, as `prepare_data` returns them; "train" is absent in a run that only
            evaluates.
        labels: The label names, in id order.
        multi_label: The data is multi-label.
        seed: The seed of the training collator's random augmentations.
        label_smoothing: The label smoothing factor of the training collator (single-label only), in [0, 1).
        describe: Called with a line of text for each thing worth telling.

    Returns:
        The model, extractor, collators and sampler weights.

    Raises:
        ValueError: When --compute_stats is set in a run that only evaluates (no "train" split); as
            `prepare_model_and_extractor` does; as `make_collators` does, for label smoothing on multi-label data
            or outside [0, 1).
    """
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
    """Copy a feature extractor, normalising with the mean and std of the training split's fbank.

    The paper's per-data-set statistics, computed (`ast_hf.compute_normalization_stats`) instead of looked up.

    Args:
        extractor: The run's feature extractor; its settings are kept but for `mean` and `std`.
        train_split: The training split (a `datasets.Dataset` or any iterable of rows with an audio column).
        audio_column: The name of the audio column.
        describe: Called with a line telling the statistics found.

    Returns:
        A new extractor with the training set's `mean` and `std`.

    Raises:
        ValueError: As `compute_normalization_stats` does, when the split holds no audio.
    """
    from ..stats import compute_normalization_stats

    mean, std = compute_normalization_stats(train_split, extractor, audio_column=audio_column)
    describe(f"training-set fbank mean {mean:.4f} std {std:.4f}")
    return ASTFeatureExtractor(**{**extractor.to_dict(), "mean": mean, "std": std})


def evaluate_with_accelerator(model: torch.nn.Module, dataloader: Iterable[Mapping[str, torch.Tensor]],
                              accelerator: Any, multi_label: bool) -> tuple[dict[str, float], np.ndarray, np.ndarray]:
    """Evaluate a model over a whole evaluation set in an accelerate loop.

    The logits, labels and losses are gathered from every process (accelerate drops the duplicates it padded the
    last batch with), collected once and scored once with `classification_scores`.

    Args:
        model: The (prepared) model; it is put in eval mode.
        dataloader: The (prepared) evaluation batches, each with "labels".
        accelerator: The run's `accelerate.Accelerator`.
        multi_label: Score multi-label data (mAP, mAUC, d-prime) instead of accuracy.

    Returns:
        The metrics (`classification_scores` with an "eval_" prefix, plus "eval_loss", the mean loss per clip), the
            logits (N, C) and the labels of the whole evaluation set.
    """
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
    """Finish a run: everything after the model (and its extractor) is saved, the same for both examples.

    On the main process: the final metrics printed and written as transformers' examples do (train_results.json
    for a run that trained, eval_results.json, all_results.json), and the confusion matrix of an evaluation
    (single-label, confusion_matrix.png). For a run that trained, also the training curves
    (training_curves.png), the model card (README.md) and the push of the folder to the Hub. Every process
    writes process_RANK.json: its rank, the world size, the training examples it collated and its peak memory.

    Args:
        output_dir: The run's output folder (created if missing).
        is_main_process: This process writes the results, card and plots.
        process_index: This process's rank (the RANK of process_RANK.json).
        world_size: The number of processes.
        trained: The run trained (otherwise no training results, curves, card or push).
        metrics: The final metrics; the "eval_" ones are the evaluation's, the others the training's.
        log_history: The Trainer's (or the loop's) log, for the training curves and the card's results table.
        evaluation: The final evaluation's (logits, labels), for the confusion matrix; None without one.
        labels: The label names, in id order.
        multi_label: The data is multi-label (no confusion matrix).
        record: What produced the model, for the card (`run_record`).
        description: A description of the training data, for the card.
        model_name: The name heading the card when not pushed (`push_repo` otherwise).
        base_model: The checkpoint the model was fine-tuned from (a Hub id or a folder), or None.
        examples_collated: The training examples this process's collator produced.
        push_repo: The Hub repository to push the folder to; None to push nothing.
        push_private: Create the repository as private (None: the Hub's default).
        push_token: The Hub token to push with (None: the saved login).
        data_facts: What `prepare_data` says about the data (labels, splits and clip counts), for the card.
    """
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
    figures = {"rank": process_index, "world_size": world_size, "examples_collated_for_training": examples_collated,
               "peak_memory_mb": round(peak, 1)}
    import torch

    if torch.cuda.is_available() and torch.cuda.is_initialized():  # the GPU this process used, beside host RSS
        figures["peak_gpu_memory_mb"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
    write_json(output_dir / f"process_{process_index}.json", figures)


def run_script(main: Callable[[], Any]) -> None:
    """Run an example script's `main`, turning a refusal into one message: a `ValueError` (bad data, flags that
    conflict, a missing file, ...) is printed as `error: MESSAGE` on stderr and the process exits with status 2, as
    the converters and `ast-hf` do. Other exceptions keep their traceback; `AST_HF_TRACEBACK=1` shows it for
    refusals too.

    Args:
        main: The script's entry point, called without arguments.
    """
    import os

    try:
        main()
    except ValueError as error:
        if os.environ.get("AST_HF_TRACEBACK") == "1":
            raise
        print(f"error: {error}", file=sys.stderr)
        raise SystemExit(2) from None


def print_metrics(split: str, metrics: Mapping[str, Any]) -> None:
    """Print the `***** eval metrics *****` block that transformers' Trainer prints at the end of its examples.

    Keys in sorted order, floats rounded to 4 decimals.

    Args:
        split: The split named in the header, e.g. "train" or "eval".
        metrics: The metrics to print; none prints the header alone.
    """
    print(f"***** {split} metrics *****")
    width = max((len(key) for key in metrics), default=0)
    for key in sorted(metrics):
        value = metrics[key]
        print(f"  {key:<{width}} = {round(value, 4) if isinstance(value, float) else value}")


__all__ = ["RunParts", "build_run", "evaluate_with_accelerator", "finish_run", "print_metrics", "run_script",
           "with_training_statistics"]
