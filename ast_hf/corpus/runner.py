"""A corpus run: many files through one of ast_hf's pipelines into one output, resumable and shardable.

    files (inputs, --files-from)  ->  this shard's share  ->  minus the files done  ->  decoded ahead in workers
        ->  the pipeline (windows of several files batched)  ->  rows, written a group at a time  ->  the output

The pipelines compute each file's result ("audio-tagging" for classify, "audio-feature-extraction" for embed),
exactly as they do for one file; this module only chooses the files, feeds the pipeline and keeps the results
(`store.ResultStore`). `ast-hf classify/embed --output` and the Ray engine use it.
"""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from .sources import FileKey, check_shard, collect_files, file_key, shard, shard_from_environment, shard_output
from .store import ResultStore

EXIT_OK, EXIT_SOME_FAILED, EXIT_FAILED = 0, 1, 2


def default_num_workers() -> int:
    """Decoding workers by default: none on 1 or 2 CPU cores, where a worker takes a core from the model and the
    main process is faster alone (benchmarks/corpus.py: 156 files/s with none, 124 with one, 150 with two, tiny
    model on a 2-core EPYC); otherwise a quarter of the cores, at most 8."""
    cores = os.cpu_count() or 1
    return 0 if cores <= 2 else max(1, min(8, cores // 4))


@dataclass
class CorpusSummary:
    """What a run did: files done now, files failed now (with messages), files skipped as done before, whether it
    was stopped by a signal, and the output written (None when stopped)."""

    output: str
    done: int = 0
    failed: list[tuple[str, str]] = field(default_factory=list)
    skipped: int = 0
    stopped_by: int | None = None
    written: str | None = None
    failures_ok: bool = False  # files that cannot be read do not make the exit status non-zero

    @property
    def exit_status(self) -> int:
        if self.stopped_by is not None:
            return 128 + self.stopped_by
        if self.failed and not self.failures_ok:
            return EXIT_SOME_FAILED if self.done or self.skipped else EXIT_FAILED
        return EXIT_OK


def result_row(key: FileKey, result: dict[str, Any]) -> dict[str, Any]:
    """One file's row: its key and the pipeline's result (tensors and arrays as lists), or its error."""
    row: dict[str, Any] = {"path": key.path, "size": key.size, "mtime_ns": key.mtime_ns}
    for name, value in result.items():
        if hasattr(value, "tolist"):
            value = value.tolist()
        row[name] = value
    row.setdefault("error", None)
    return row


class _StopSignals:
    """SIGINT and SIGTERM set a flag (the run stops after the file in flight and writes what it has) instead of
    killing the process; a second SIGINT stops at once."""

    def __init__(self) -> None:
        self.received: int | None = None
        self.previous: dict[int, Any] = {}

    def __enter__(self) -> _StopSignals:
        if _in_main_thread():
            for number in (signal.SIGINT, signal.SIGTERM):
                self.previous[number] = signal.signal(number, self._handle)
        return self

    def _handle(self, number: int, _frame: Any) -> None:
        if self.received is not None and number == signal.SIGINT:
            raise KeyboardInterrupt
        self.received = number

    def __exit__(self, *_: Any) -> None:
        for number, handler in self.previous.items():
            signal.signal(number, handler)


def _in_main_thread() -> bool:
    import threading

    return threading.current_thread() is threading.main_thread()


def run_corpus(pipe: Any, task: str, inputs: Sequence[str], output: str, *, files_from: str | None = None,
               column: str | None = None, root: str | None = None, num_shards: int | None = None,
               shard_index: int | None = None, num_workers: int | None = None, overwrite: bool = False,
               settings: dict[str, Any] | None = None, options: dict[str, Any] | None = None,
               group_size: int = 64, log: Callable[[str], Any] | None = None,
               progress: Any = None, failures_ok: bool | None = None) -> CorpusSummary:
    """Run `pipe` over every file of a corpus into `output` (or this shard's part of it).

    Args:
        pipe: A "audio-tagging" pipeline (`task` "classify") or an "audio-feature-extraction" pipeline ("embed").
        task: "classify" or "embed".
        inputs: Files and directories (searched recursively).
        output: The output file: .jsonl, .csv or .parquet for classify, .parquet or .npz for embed. With several
            shards each writes its own file (`sources.shard_output`).
        files_from: A list of paths (text, CSV or parquet; see `sources.read_file_list`), with its `column`; relative
            entries are taken from `root` (default the current directory).
        num_shards: Shards in all; with `shard_index`, the share of this process. Default: WORLD_SIZE and RANK
            under torchrun or accelerate launch, else one shard.
        shard_index: This process's shard, 0 to num_shards - 1.
        num_workers: Processes decoding ahead of the model (default: `default_num_workers`); 0 decodes here.
        overwrite: Do every file again, ignoring an earlier output or partial run.
        settings: What determines the results (recorded with them; a resumed run must match).
        options: The pipeline's call options (top_k, hop, batch_size, pool, ...).
        group_size: Files per part written: at most this many are lost by a crash.
        log: Where progress lines and per-file errors go (default: stderr).
        progress: A tqdm-like bar (`update`, `set_postfix_str`) or None.
        failures_ok: Exit status 0 when some files cannot be read (they are named, and kept as error rows by
            classify). Default: True under torchrun or accelerate launch, whose launcher stops every process when
            one exits non-zero; False otherwise.

    Returns:
        A CorpusSummary; its `exit_status` is what a command returns (0, 1 some failed, 2 all failed, 128 + the
            signal when stopped).
    """
    say = log or (lambda line: print(line, file=sys.stderr))
    if (num_shards is None) != (shard_index is None):
        raise ValueError("--num-shards and --shard-index go together: pass both (a Slurm array job: --num-shards "
                         "$SLURM_ARRAY_TASK_COUNT --shard-index $SLURM_ARRAY_TASK_ID), or neither.")
    launched = shard_from_environment()
    if failures_ok is None:
        failures_ok = launched is not None
    if num_shards is None:
        num_shards, shard_index = launched or (1, 0)
    check_shard(num_shards, shard_index)
    if num_workers is None:
        num_workers = default_num_workers()
    settings = dict(settings or {})
    paths, failures = collect_files(inputs, files_from, column, root)
    mine = shard(paths, num_shards, shard_index)
    failures = failures if shard_index == 0 else []  # inputs that are not files: reported once, by shard 0
    target = shard_output(output, num_shards, shard_index)
    store = ResultStore(target, task, settings, overwrite=overwrite, group_size=group_size)
    summary = CorpusSummary(output=target, failures_ok=failures_ok)
    todo: list[FileKey] = []
    for path in mine:
        try:
            key = file_key(path)
        except OSError as error:
            failures.append((path, f"cannot read it ({error.strerror})"))
            continue
        if key in store.done:
            summary.skipped += 1
        else:
            todo.append(key)
    for name, reason in failures:
        say(f"error: {name}: {reason}")
        summary.failed.append((name, reason))
        if task == "classify":
            store.add(result_row(FileKey(name, -1, -1), {"error": f"{name}: {reason}"}))
    shard_note = f" (shard {shard_index} of {num_shards})" if num_shards > 1 else ""
    say(f"{len(mine)} file(s){shard_note}: {summary.skipped} done before, {len(todo)} to do -> {target}")
    if progress is not None:
        progress.reset(total=len(todo))
    many = pipe.tag_many if task == "classify" else pipe.embed_many
    processed = retried = 0  # retried: files of this run that failed, tried again by the next one
    with _StopSignals() as stop:
        results = many([key.path for key in todo], keep_errors=True, num_workers=num_workers, **(options or {}))
        for key, result in zip(todo, results, strict=False):  # stopped early: fewer results
            if "error" in result:
                say(f"error: {result['error']}")
                summary.failed.append((key.path, result["error"]))
                retried += 1
                if task == "classify":
                    store.add(result_row(key, result))
            else:
                store.add(result_row(key, result))
                summary.done += 1
            processed += 1
            if progress is not None:
                progress.update(1)
            if stop.received is not None:
                break
        if stop.received is not None:
            del results  # stops the decoding workers
            store.flush()
            summary.stopped_by = stop.received
            left = len(todo) - processed
            again = "the same command again without --overwrite" if overwrite else "the same command again"
            failed = f", {retried} failed (tried again then)" if retried else ""
            say(f"stopped by {signal.Signals(stop.received).name}: {summary.done} file(s) done in this run{failed}, "
                f"{left} not reached; run {again} to resume (results so far: {store.staging}/)")
            return summary
    rows = store.finish()
    summary.written = target
    say(f"{summary.done} file(s) done, {len(summary.failed)} failed, {summary.skipped} done before: {rows} row(s) "
        f"in {target}")
    return summary


__all__ = ["CorpusSummary", "default_num_workers", "result_row", "run_corpus"]
