"""Which files a corpus run covers: inputs and lists expanded to absolute paths, and the share of one shard.

Paths are stored in one form throughout, absolute (`os.path.abspath`: the current directory joined to a relative
path, symbolic links kept as named, so that a link farm or a git-annex tree keeps its names). A file is identified
for resuming by its path, its size and its modification time (`FileKey`): a file changed since it was done is done
again.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple

from ..audio_io import AUDIO_SUFFIXES


class FileKey(NamedTuple):
    """A file as a corpus run knows it: absolute path, size in bytes, modification time in nanoseconds."""

    path: str
    size: int
    mtime_ns: int


def file_key(path: str) -> FileKey:
    """The FileKey of an existing file (one `stat`)."""
    status = os.stat(path)
    return FileKey(path, status.st_size, status.st_mtime_ns)


def absolute(path: str, root: str | None = None) -> str:
    """`path` as an absolute, normalised path; a relative one is taken from `root` (default: the current directory;
    a relative `root` is itself taken from the current directory)."""
    path = os.path.expanduser(path)
    if not os.path.isabs(path):
        path = os.path.join(os.path.abspath(os.path.expanduser(root)) if root else os.getcwd(), path)
    return os.path.normpath(path)


def read_file_list(list_path: str, column: str | None = None) -> list[str]:
    """The paths of a file list: a text file (one path a line, taken whole; blank lines and lines starting with #
    skipped), a CSV file or a parquet file (`column`, else a column named path, file, filename or file_name).

    Raises:
        ValueError: When the list does not exist or has no such column (the columns it has are named).
    """
    if not os.path.isfile(list_path):
        raise ValueError(f"--files-from {list_path}: no such file; pass a text file of paths (one a line), a CSV or a "
                         "parquet file with a column of paths.")
    suffix = Path(list_path).suffix.lower()
    if suffix in (".csv", ".tsv", ".parquet"):
        if suffix == ".parquet":
            import pyarrow.parquet as pq

            names = pq.read_schema(list_path).names
            chosen = _pick_column(list_path, names, column)
            return [str(value) for value in pq.read_table(list_path, columns=[chosen]).column(chosen).to_pylist()
                    if value is not None]
        with open(list_path, newline="", encoding="utf-8") as handle:
            reader = csv.DictReader(handle, delimiter="\t" if suffix == ".tsv" else ",")
            chosen = _pick_column(list_path, reader.fieldnames or [], column)
            return [row[chosen] for row in reader if row.get(chosen)]
    if column is not None:
        raise ValueError(f"--column {column}: {list_path} is a plain list of paths (one a line); --column is for CSV "
                         "and parquet lists.")
    with open(list_path, encoding="utf-8") as handle:
        return [line.rstrip("\n\r") for line in handle if line.strip() and not line.startswith("#")]


def _pick_column(list_path: str, names: Sequence[str], column: str | None) -> str:
    if column is not None:
        if column not in names:
            raise ValueError(f"--column {column}: {list_path} has no such column; it has {list(names)}.")
        return column
    for name in ("path", "file", "filename", "file_name"):
        if name in names:
            return name
    raise ValueError(f"{list_path} has no column named path, file, filename or file_name (it has {list(names)}); pass "
                     "--column NAME.")


def collect_files(inputs: Sequence[str], files_from: str | None = None, column: str | None = None,
                  root: str | None = None) -> tuple[list[str], list[tuple[str, str]]]:
    """The audio files a run covers, and (input, reason) for each input that is not one.

    Args:
        inputs: Files and directories; a directory is searched recursively for files with an audio ending
            (`ast_hf.audio_io.AUDIO_SUFFIXES`), in sorted order. A directory inside it whose name has an audio
            ending is reported (it is not a file).
        files_from: A list of paths (see `read_file_list`), taken after `inputs`.
        column: The list's column of paths.
        root: Where the list's relative paths start (default: the current directory).

    Returns:
        (absolute paths in order, each once; failures).
    """
    paths: list[str] = []
    failures: list[tuple[str, str]] = []
    for item in inputs:
        if os.path.isdir(item):
            found, odd = [], []
            for path in Path(item).rglob("*"):
                if path.suffix.lower() not in AUDIO_SUFFIXES:
                    continue
                (found if path.is_file() else odd).append(str(path))
            for name in sorted(odd):
                failures.append((absolute(name), "a directory, not an audio file" if os.path.isdir(name) else
                                 "not a regular file"))
            if not found and not odd:
                failures.append((item, f"a directory without audio files ({', '.join(AUDIO_SUFFIXES[:5])}, ...)"))
            paths += sorted(absolute(name) for name in found)
        elif os.path.exists(item):
            paths.append(absolute(item))
        else:
            failures.append((absolute(item), "no such file"))
    if files_from is not None:
        for entry in read_file_list(files_from, column):
            path = absolute(entry, root)
            if os.path.isfile(path):
                paths.append(path)
            else:
                failures.append((path, "a directory, not an audio file" if os.path.isdir(path) else "no such file"))
    return list(dict.fromkeys(paths)), failures


def shard_from_environment() -> tuple[int, int] | None:
    """(number of shards, this process's shard) under torchrun or accelerate launch (WORLD_SIZE and RANK), None in
    a single process."""
    world = int(os.environ.get("WORLD_SIZE", "1") or 1)
    if world <= 1:
        return None
    return world, int(os.environ.get("RANK", "0") or 0)


def check_shard(num_shards: int, shard_index: int) -> None:
    """A ValueError unless 0 <= shard_index < num_shards."""
    if num_shards < 1:
        raise ValueError(f"--num-shards {num_shards}: pass a positive number of shards.")
    if not 0 <= shard_index < num_shards:
        raise ValueError(f"--shard-index {shard_index}: pass a shard from 0 to {num_shards - 1} (of --num-shards "
                         f"{num_shards}).")


def shard(paths: Sequence[str], num_shards: int, shard_index: int) -> list[str]:
    """The files of one shard: every `num_shards`-th file from position `shard_index` of the run's ordered list,
    so that shards get equal numbers of files and every file belongs to exactly one shard."""
    check_shard(num_shards, shard_index)
    return list(paths[shard_index::num_shards])


def shard_output(output: str, num_shards: int, shard_index: int) -> str:
    """A shard's own output file: OUT.ext for one shard, OUT-00002-of-00008.ext for shard 2 of 8 (the parts side
    by side; `datasets.load_dataset("parquet", data_files=...)` reads them as one data set)."""
    if num_shards == 1:
        return output
    stem, suffix = os.path.splitext(output)
    return f"{stem}-{shard_index:05d}-of-{num_shards:05d}{suffix}"


__all__ = ["FileKey", "absolute", "check_shard", "collect_files", "file_key", "read_file_list", "shard",
           "shard_from_environment", "shard_output"]
