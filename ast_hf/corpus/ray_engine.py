"""Corpus runs on a Ray cluster: Ray Data reads the file list, an actor pool of ast_hf predictors computes the
rows, and Ray writes them as a folder of parquet files.

    ray.data.from_items(paths)  ->  map_batches(ASTPredictor, concurrency=N, num_gpus=...)  ->  write_parquet(DIR)

Each actor loads the model once and runs a batch of files through the same pipeline method as `run_corpus`
(`tag_many` or `embed_many`), so its rows are the rows of a single-process run: same columns, same scores. Ray
schedules the actors over the cluster's CPUs or GPUs, restarts failed tasks and spreads the reading; ast_hf adds
nothing of its own to scheduling. Install with `pip install "ast_hf[ray]"` (Ray Data and pyarrow).

Example:
    ```python
    import ray
    from ast_hf.corpus.ray_engine import run_with_ray

    ray.init()  # or ray.init(address="auto") on a cluster
    run_with_ray("path/or/hub-id", "embed", ["archive/"], "embeddings/", concurrency=4)
    ```
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Any

from .runner import result_row
from .sources import collect_files, file_key
from .store import parquet_table


class ASTPredictor:
    """A Ray Data actor: loads the pipeline once, then turns batches of paths into rows (a pyarrow Table with the
    columns of the parquet output of `ast-hf classify/embed`)."""

    def __init__(self, model: str, task: str, options: dict[str, Any], settings: dict[str, Any],
                 device: str = "cpu", optimize: str | None = None) -> None:
        import torch
        from transformers import pipeline

        import ast_hf  # noqa: F401 (registers the pipelines)

        if device == "cuda" and torch.cuda.is_available():
            device = "cuda:0"  # Ray gives each GPU actor its own device as cuda:0
        name = "audio-tagging" if task == "classify" else "audio-feature-extraction"
        self.pipe = pipeline(name, model=model, device=device, optimize=optimize)
        self.task, self.options, self.settings = task, options, settings

    def __call__(self, batch: dict[str, Any]) -> Any:
        keys = [file_key(str(path)) for path in batch["path"]]
        many = self.pipe.tag_many if self.task == "classify" else self.pipe.embed_many
        results = many([key.path for key in keys], keep_errors=True, **self.options)
        rows = [result_row(key, result) for key, result in zip(keys, results, strict=True)]
        if self.task == "embed":  # an embedding row has no error column: the failure goes to the actor's log
            for row in rows:
                if row["error"] is not None:
                    print(f"error: {row['error']}", file=sys.stderr)
            rows = [row for row in rows if row["error"] is None]
        return parquet_table(rows, self.task, self.settings)


def run_with_ray(model: str, task: str, inputs: Sequence[str], output_dir: str, *, files_from: str | None = None,
                 column: str | None = None, root: str | None = None, options: dict[str, Any] | None = None,
                 concurrency: int = 2, batch_size: int = 32, num_gpus: float = 0, num_cpus: float = 1,
                 device: str | None = None, optimize: str | None = None) -> list[tuple[str, str]]:
    """Tag or embed a corpus with Ray Data into `output_dir` (a folder of parquet files; `datasets` loads it with
    `load_dataset("parquet", data_dir=output_dir)`).

    Args:
        model: A model directory or Hub id, as for `ast-hf classify/embed`.
        task: "classify" or "embed".
        inputs: Files and directories; with `files_from`, `column` and `root` as in `ast_hf.corpus.collect_files`.
        output_dir: The folder Ray writes.
        options: The pipeline's call options (top_k, hop, batch_size, pool, layer, timestamps, ...).
        concurrency: Actors in the pool (each holds one model).
        batch_size: Files per batch an actor computes.
        num_gpus: GPUs per actor (0: CPU actors); the pipeline then runs on its GPU.
        num_cpus: CPUs per actor.
        device: The actors' device; default cuda with num_gpus, else cpu.
        optimize: A fast-inference mode for the model.

    Returns:
        (input, reason) of every input that gave no result: inputs that are not audio files, and files that could
            not be decoded (classify also keeps these as rows with their error; embed leaves them out of the rows,
            as `ast-hf embed` does).
    """
    import os

    import ray

    paths, failures = collect_files(inputs, files_from, column, root)
    options = dict(options or {})
    settings = {"task": task, "model": os.path.abspath(model) if os.path.isdir(model) else model,
                "optimize": optimize, **{key: value for key, value in options.items() if key != "batch_size"}}
    device = device or ("cuda" if num_gpus else "cpu")
    data = ray.data.from_items([{"path": path} for path in paths])
    rows = data.map_batches(ASTPredictor, batch_size=batch_size, batch_format="numpy", concurrency=concurrency,
                            num_gpus=num_gpus, num_cpus=num_cpus,
                            fn_constructor_kwargs={"model": model, "task": task, "options": options,
                                                   "settings": settings, "device": device, "optimize": optimize})
    rows.write_parquet(output_dir)
    return failures + _failed_rows(output_dir, task, paths)


def _failed_rows(output_dir: str, task: str, paths: Sequence[str]) -> list[tuple[str, str]]:
    """(path, reason) of the files the written rows hold no result for: classify's error rows, embed's missing
    paths (an embed row has no error column)."""
    import pyarrow.parquet as pq

    if task == "classify":
        table = pq.read_table(output_dir, columns=["path", "error"]).to_pydict()
        return [(path, error) for path, error in zip(table["path"], table["error"], strict=True) if error]
    written = set(pq.read_table(output_dir, columns=["path"]).column("path").to_pylist())
    return [(path, "could not be decoded (see the error in the actors' log)") for path in paths
            if path not in written]


__all__ = ["ASTPredictor", "run_with_ray"]
