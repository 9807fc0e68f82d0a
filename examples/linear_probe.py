"""A linear probe on AST embeddings: how much of a task a frozen encoder's vectors already hold.

Embeds the training and evaluation clips with the "audio-feature-extraction" pipeline (one vector per clip, the
encoder never trained), fits scikit-learn's logistic regression on the training vectors (standardised; one-vs-rest
for multi-label data) and reports accuracy (single-label) or mAP (multi-label, macro average precision) on the
evaluation clips. The probe is saved as `probe.npz` (weights, bias, the standardisation and the labels: plain
arrays, no pickle) with `probe.json` (settings and metrics) in --output_dir.

The data flags are those of the fine-tuning scripts (--train_dir/--validation_dir, --train_file/--validation_file,
--dataset_name, --label_separator, --max_train_samples, ...); without any, the embedded espeak-ng commands.

    python3 examples/linear_probe.py --model outputs/espeak_commands --output_dir outputs/probe
    python3 examples/linear_probe.py --model path/or/hub-id --train_dir clips/train --validation_dir clips/test \
        --pool mean --layer 2 3 --output_dir outputs/probe

Apply a saved probe to new vectors `x` (n, size) from the same pipeline settings:

    probe = numpy.load("outputs/probe/probe.npz")
    scores = ((x - probe["mean"]) / probe["scale"]) @ probe["coef"].T + probe["intercept"]
    labels = probe["labels"][scores.argmax(axis=1)]
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from transformers import HfArgumentParser, pipeline

import ast_hf  # noqa: F401 (registers the pipeline)
from ast_hf import training
from ast_hf.embeddings import POOLS

logger = logging.getLogger("linear_probe")


@dataclass
class ProbeArguments:
    """The probe's arguments; each field is a command-line flag."""

    model: str = field(metadata={"help": "the encoder: a model directory or Hub id (an AST encoder or classifier)"})
    output_dir: str = field(default="outputs/probe", metadata={"help": "where probe.npz and probe.json go"})
    pool: str = field(default="cls_dist", metadata={"help": f"the clip vector: {' | '.join(POOLS)}"})
    layer: list[int] | None = field(default=None, metadata={
        "help": "hidden states to use (0: patch embeddings, N: layer N, negative from the end; several are "
                "concatenated); default the last hidden state after the final LayerNorm"})
    batch_size: int = field(default=8, metadata={"help": "windows per forward pass"})
    regularization: float = field(default=1.0, metadata={
        "help": "inverse regularisation strength C of the logistic regression"})
    max_iter: int = field(default=2000, metadata={"help": "iterations of the logistic regression's solver"})
    seed: int = field(default=0, metadata={"help": "seed of the data subsets and the solver"})
    device: str = field(default="cpu", metadata={"help": "cpu, cuda or cuda:N"})


def embed_split(embedder, split, audio_column: str, description: str) -> np.ndarray:
    """(clips, size) vectors of a split whose audio cells are undecoded ({"path", "bytes"}) or decoded."""
    cells = split[audio_column]
    inputs = []
    for cell in cells:
        if isinstance(cell, dict) and cell.get("bytes") is not None:
            inputs.append(cell["bytes"])
        elif isinstance(cell, dict) and "array" in cell:
            inputs.append({"array": np.asarray(cell["array"]), "sampling_rate": cell["sampling_rate"]})
        else:
            inputs.append(cell["path"] if isinstance(cell, dict) else cell)
    start = time.perf_counter()
    vectors = np.stack([result["embedding"] for result in embedder(inputs)])
    logger.info("%s: %d clips embedded in %.1f s -> %s", description, len(inputs), time.perf_counter() - start,
                vectors.shape)
    return vectors


def fit_probe(train_x: np.ndarray, train_y: list, multi_label: bool, num_labels: int, args: ProbeArguments):
    """Standardise and fit the logistic regression; returns (mean, scale, coef (labels, size), intercept)."""
    from sklearn.linear_model import LogisticRegression

    mean, scale = train_x.mean(axis=0), train_x.std(axis=0) + 1e-8
    z = (train_x - mean) / scale
    if not multi_label:
        classes = sorted(set(train_y))
        if len(classes) < 2:
            raise ValueError(f"the training clips hold {len(classes)} class; a probe needs at least two.")
        model = LogisticRegression(C=args.regularization, max_iter=args.max_iter, random_state=args.seed).fit(
            z, np.asarray(train_y))
        coef = np.zeros((num_labels, z.shape[1]), dtype=np.float32)
        intercept = np.full(num_labels, -1e4, dtype=np.float32)  # a class absent from training is never chosen
        coef[classes], intercept[classes] = (model.coef_, model.intercept_) if len(classes) > 2 else (
            np.stack([-model.coef_[0] / 2, model.coef_[0] / 2]), np.array([-model.intercept_[0] / 2,
                                                                            model.intercept_[0] / 2]))
        return mean, scale, coef, intercept
    targets = multi_hot(train_y, num_labels)
    coef = np.zeros((num_labels, z.shape[1]), dtype=np.float32)
    intercept = np.full(num_labels, -1e4, dtype=np.float32)
    for label in range(num_labels):
        column = targets[:, label]
        if column.min() == column.max():  # never or always present in training: a constant score
            intercept[label] = 1e4 if column.min() else -1e4
            continue
        model = LogisticRegression(C=args.regularization, max_iter=args.max_iter, random_state=args.seed).fit(
            z, column)
        coef[label], intercept[label] = model.coef_[0], model.intercept_[0]
    return mean, scale, coef, intercept


def multi_hot(labels: list, num_labels: int) -> np.ndarray:
    targets = np.zeros((len(labels), num_labels), dtype=np.int64)
    for row, ids in enumerate(labels):
        targets[row, list(ids)] = 1
    return targets


def main(argv: list[str] | None = None) -> dict:
    parser = HfArgumentParser((ProbeArguments, training.DataArguments))
    if argv is None and len(sys.argv) == 2 and sys.argv[1].endswith(".json"):
        args, data_args = parser.parse_json_file(sys.argv[1])
    else:
        args, data_args = parser.parse_args_into_dataclasses(args=argv)
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=logging.INFO)
    if args.pool not in POOLS:
        raise ValueError(f"--pool {args.pool}: pass one of {', '.join(POOLS)}.")
    from ast_hf.checkpoint_files import check_ast_checkpoint

    check_ast_checkpoint(args.model, "--model")
    data = training.prepare_data(data_args, args.seed)
    if "train" not in data.raw or "validation" not in data.raw:
        raise ValueError("a linear probe needs training and evaluation clips; give both (--train_dir and "
                         "--validation_dir, --train_file and --validation_file, or a --dataset_name with both "
                         "splits).")
    evaluation = data_args.validation_dir or data_args.validation_file or data_args.dataset_name or data.description
    logger.info("data: %s (evaluation: %s); %d training and %d evaluation clips, %d labels (%s)", data.description,
                evaluation,
                len(data.raw["train"]), len(data.raw["validation"]), len(data.labels),
                "multi-label" if data.multi_label else "single-label")
    # The options are checked at construction (a layer out of range), before any clip is embedded.
    embedder = pipeline("audio-feature-extraction", model=args.model, device=args.device, pool=args.pool,
                        layer=args.layer, batch_size=args.batch_size)
    column = data_args.audio_column_name
    train_x = embed_split(embedder, data.raw["train"], column, "training")
    eval_x = embed_split(embedder, data.raw["validation"], column, "evaluation")
    label_column = data_args.label_column_name
    train_y, eval_y = list(data.raw["train"][label_column]), list(data.raw["validation"][label_column])
    mean, scale, coef, intercept = fit_probe(train_x, train_y, data.multi_label, len(data.labels), args)
    scores = ((eval_x - mean) / scale) @ coef.T + intercept  # (clips, labels)
    if data.multi_label:
        from sklearn.metrics import average_precision_score

        targets = multi_hot(eval_y, len(data.labels))
        present = targets.sum(axis=0) > 0
        metrics = {"eval_mAP": float(average_precision_score(targets[:, present], scores[:, present],
                                                             average="macro"))}
    else:
        metrics = {"eval_accuracy": float((scores.argmax(axis=1) == np.asarray(eval_y)).mean())}
    metrics.update(train_clips=len(train_y), eval_clips=len(eval_y), embedding_size=int(train_x.shape[1]))
    os.makedirs(args.output_dir, exist_ok=True)
    np.savez(Path(args.output_dir) / "probe.npz", coef=coef, intercept=intercept, mean=mean.astype(np.float32),
             scale=scale.astype(np.float32), labels=np.array(data.labels, dtype=str))
    settings = {"model": args.model, "pool": args.pool, "layer": args.layer, "regularization": args.regularization,
                "multi_label": data.multi_label, "data": data.description, **metrics}
    (Path(args.output_dir) / "probe.json").write_text(json.dumps(settings, indent=1) + "\n")
    for key, value in metrics.items():
        print(f"  {key} = {value:.4f}" if isinstance(value, float) else f"  {key} = {value}")
    print(f"probe saved: {Path(args.output_dir) / 'probe.npz'}")
    return metrics


if __name__ == "__main__":
    training.run_script(main)
