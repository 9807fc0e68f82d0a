"""Results of a corpus run on disk: written as each group of files finishes, crash-safe, resumable.

While a run is going its results live in a staging folder beside the output, `OUT.partial/`: a `manifest.json`
with the run's settings, and one part file per group of finished files (`part-000000.jsonl`, ...; the output's
format). Each part is written to a temporary name, flushed to disk and renamed, so a part is whole or absent: a
crash (SIGKILL, power loss) loses at most the group in flight. When every file is done the parts, and the rows of
an earlier complete output, are merged into `OUT` (again through a temporary file and a rename) and the staging
folder is removed. So `OUT` is never a partial or corrupt file: it is the old complete output or the new one, and
a partial run is visible as `OUT.partial/`, whose parts are readable files of the output's format.

Resuming: the files done are those with a row without an error in `OUT` or in a part, keyed by path, size and
modification time (`sources.FileKey`). A row that failed is tried again by the next run. Where a path has several
rows (a retried failure, a file changed since), the last one is kept.

Formats: JSON Lines (`.jsonl`, one object a file: the pipeline's result), CSV (`.csv`, one row per label of the
clip, of each segment and of each event, with an `error` column; scores rounded to 6 decimals); the settings of
these two are kept in OUT.settings.json beside them), parquet (`.parquet`, one row a file; the run's
settings in the schema metadata under "ast_hf") and, for embeddings, `.npz` (numpy arrays, no pickled objects; the
merge holds every vector in memory, so for large corpora use parquet).
"""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from .sources import FileKey

CLASSIFY_FORMATS = (".jsonl", ".csv", ".parquet")
EMBED_FORMATS = (".parquet", ".npz")
METADATA_KEY = b"ast_hf"
CSV_FIELDS = ["path", "size", "mtime_ns", "kind", "start", "end", "label", "score", "error"]


def output_format(output: str, task: str) -> str:
    """The output's format from its ending; a ValueError naming the endings `task` writes."""
    suffix = Path(output).suffix.lower()
    allowed = CLASSIFY_FORMATS if task == "classify" else EMBED_FORMATS
    if suffix not in allowed:
        raise ValueError(f"--output {output}: name a file ending in {', '.join(allowed)} "
                         f"({'JSON Lines, CSV or parquet' if task == 'classify' else 'parquet or numpy'}).")
    if os.path.isdir(output):
        raise ValueError(f"--output {output} is a directory; name the file to write.")
    return suffix


def _fsync_write(path: str, data: bytes) -> None:
    """Write `data` to `path` whole or not at all: a temporary file, flushed to disk, renamed."""
    temporary = f"{path}.tmp"
    with open(temporary, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temporary, path)
    _fsync_directory(os.path.dirname(path))


def _fsync_directory(path: str) -> None:
    descriptor = os.open(path or ".", os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


# ---------------------------------------------------------------------------------------------------------------
# rows <-> bytes, per format. A row is a dict: path, size, mtime_ns, error, and the file's result.


def _labels(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{"label": item["label"], "score": float(item["score"])} for item in items]


def parquet_table(rows: list[dict[str, Any]], task: str, settings: dict[str, Any]) -> Any:
    """The pyarrow table of result rows, in the schema every parquet output of a corpus run shares.

    Used by the store's writer and by the Ray engine, so that a part written by either reads the same.

    Args:
        rows: Result rows as `result_row` makes them (plain lists and floats).
        task: "classify" (clip labels, segments, events, error) or "embed" (windows, embedding, and timestamps
            with their embeddings when `settings["timestamps"]`).
        settings: The run's settings, stored as JSON in the schema metadata under `METADATA_KEY`.

    Returns:
        A `pyarrow.Table`.
    """
    import pyarrow as pa

    label = pa.struct([("label", pa.string()), ("score", pa.float64())])
    fields = [("path", pa.string()), ("size", pa.int64()), ("mtime_ns", pa.int64()), ("duration", pa.float64())]
    if task == "classify":
        fields += [("clip", pa.list_(label)),
                   ("segments", pa.list_(pa.struct([("start", pa.float64()), ("end", pa.float64()),
                                                    ("labels", pa.list_(label))]))),
                   ("events", pa.list_(pa.struct([("start", pa.float64()), ("end", pa.float64()),
                                                  ("label", pa.string()), ("score", pa.float64())]))),
                   ("error", pa.string())]
        records = [{"path": r["path"], "size": r["size"], "mtime_ns": r["mtime_ns"], "duration": r.get("duration"),
                    "clip": _labels(r["clip"]) if "clip" in r else None,
                    "segments": [{"start": s["start"], "end": s["end"], "labels": _labels(s["labels"])}
                                 for s in r["segments"]] if "segments" in r else None,
                    "events": r.get("events"), "error": r.get("error")} for r in rows]
    else:
        fields += [("windows", pa.int32()), ("embedding", pa.list_(pa.float32()))]
        if settings.get("timestamps"):
            fields += [("timestamps", pa.list_(pa.float64())),
                       ("timestamp_embeddings", pa.list_(pa.list_(pa.float32())))]
        records = [{key: value for key, value in row.items() if key != "error"} for row in rows]  # lists already
    schema = pa.schema(fields, metadata={METADATA_KEY: json.dumps(settings).encode()})
    return pa.Table.from_pylist(records, schema=schema)


def _csv_lines(rows: list[dict[str, Any]]) -> list[list[Any]]:
    lines = []
    for row in rows:
        key = [row["path"], row["size"], row["mtime_ns"]]
        if row.get("error") is not None:
            lines.append([*key, "error", "", "", "", "", row["error"]])
            continue
        for item in row["clip"]:
            lines.append([*key, "clip", 0.0, round(row["duration"], 4), item["label"], round(item["score"], 6), ""])
        for segment in row["segments"]:
            for item in segment["labels"]:
                lines.append([*key, "segment", round(segment["start"], 4), round(segment["end"], 4), item["label"],
                              round(item["score"], 6), ""])
        for event in row.get("events", []):
            lines.append([*key, "event", round(event["start"], 4), round(event["end"], 4), event["label"],
                          round(event["score"], 6), ""])
    return lines


def encode_rows(rows: list[dict[str, Any]], suffix: str, task: str, settings: dict[str, Any]) -> bytes:
    """One part file's bytes for `rows` in the format of `suffix`."""
    if suffix == ".jsonl":
        return "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows).encode()
    if suffix == ".csv":
        text = io.StringIO()
        writer = csv.writer(text, lineterminator="\n")
        writer.writerow(CSV_FIELDS)
        writer.writerows(_csv_lines(rows))
        return text.getvalue().encode()
    if suffix == ".parquet":
        import pyarrow.parquet as pq

        sink = io.BytesIO()
        pq.write_table(parquet_table(rows, task, settings), sink)
        return sink.getvalue()
    kept = [row for row in rows if row.get("error") is None]
    arrays = {"paths": np.array([row["path"] for row in kept], dtype=str),
              "sizes": np.array([row["size"] for row in kept], dtype=np.int64),
              "mtimes_ns": np.array([row["mtime_ns"] for row in kept], dtype=np.int64),
              "durations": np.array([row["duration"] for row in kept], dtype=np.float64),
              "windows": np.array([row["windows"] for row in kept], dtype=np.int64),
              "embeddings": np.stack([np.asarray(row["embedding"], dtype=np.float32) for row in kept]) if kept
              else np.zeros((0, 0), np.float32),
              "settings": np.array(json.dumps(settings))}
    if settings.get("timestamps"):
        arrays["timestamps"] = np.concatenate([np.asarray(r["timestamps"], np.float64) for r in kept]) if kept \
            else np.zeros(0)
        arrays["timestamp_embeddings"] = np.concatenate(
            [np.asarray(r["timestamp_embeddings"], np.float32) for r in kept]) if kept else np.zeros((0, 0),
                                                                                                   np.float32)
        arrays["file_index"] = np.concatenate([np.full(len(r["timestamps"]), i, np.int64)
                                               for i, r in enumerate(kept)]) if kept else np.zeros(0, np.int64)
    sink = io.BytesIO()
    np.savez(sink, **arrays)
    return sink.getvalue()


def read_keys(path: str, suffix: str) -> Iterator[tuple[FileKey, bool]]:
    """(key, done) of each row of an output or part file, in order; done is False for an error row."""
    if suffix == ".jsonl":
        with open(path, encoding="utf-8") as handle:
            for line in handle:
                if line.strip():
                    row = json.loads(line)
                    yield FileKey(row["path"], row["size"], row["mtime_ns"]), row.get("error") is None
    elif suffix == ".csv":
        with open(path, newline="", encoding="utf-8") as handle:
            last = None
            for row in csv.DictReader(handle):
                key = FileKey(row["path"], int(row["size"]), int(row["mtime_ns"]))
                if key != last:
                    yield key, row["kind"] != "error"
                    last = key
    elif suffix == ".parquet":
        import pyarrow.parquet as pq

        names = pq.read_schema(path).names
        columns = ["path", "size", "mtime_ns"] + (["error"] if "error" in names else [])
        table = pq.read_table(path, columns=columns).to_pydict()
        errors = table.get("error", [None] * len(table["path"]))
        for path_, size, mtime, error in zip(table["path"], table["size"], table["mtime_ns"], errors, strict=True):
            yield FileKey(path_, size, mtime), error is None
    else:
        with np.load(path) as arrays:
            for path_, size, mtime in zip(arrays["paths"].tolist(), arrays["sizes"].tolist(),
                                          arrays["mtimes_ns"].tolist(), strict=True):
                yield FileKey(path_, size, mtime), True


def settings_file(output: str) -> str:
    """Where the settings of a JSON Lines or CSV output are kept: OUT.settings.json beside it (parquet and npz keep
    them inside)."""
    return f"{output}.settings.json"


def read_settings(path: str, suffix: str) -> dict[str, Any] | None:
    """The settings recorded with an output: in a parquet's schema metadata, an npz's `settings` array, or the
    OUT.settings.json beside a JSON Lines or CSV output (None when there are none)."""
    if suffix == ".parquet":
        import pyarrow.parquet as pq

        metadata = pq.read_schema(path).metadata or {}
        return json.loads(metadata[METADATA_KEY]) if METADATA_KEY in metadata else None
    if suffix == ".npz":
        with np.load(path) as arrays:
            return json.loads(str(arrays["settings"])) if "settings" in arrays else None
    if os.path.exists(settings_file(path)):
        with open(settings_file(path), encoding="utf-8") as handle:
            return json.load(handle)
    return None


def merge(sources: list[str], keep: list[np.ndarray], output: str, suffix: str, task: str,
          settings: dict[str, Any]) -> int:
    """Write the kept rows of `sources` (files of one format, in order) to `output` through a temporary file and
    a rename; the number of rows written. Parquet is copied a file at a time, so memory holds one part."""
    temporary = f"{output}.tmp"
    written = 0
    if suffix == ".parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        writer = None
        for source, mask in zip(sources, keep, strict=True):
            table = pq.read_table(source).filter(pa.array(mask))
            table = table.replace_schema_metadata({METADATA_KEY: json.dumps(settings).encode()})
            if writer is None:
                writer = pq.ParquetWriter(temporary, table.schema)
            writer.write_table(table)
            written += table.num_rows
        if writer is None:
            with open(temporary, "wb") as handle:
                handle.write(encode_rows([], suffix, task, settings))
        else:
            writer.close()
    elif suffix == ".npz":
        parts = []
        for source in sources:
            with np.load(source) as arrays:
                parts.append({name: arrays[name] for name in arrays.files})
        rows = []
        for part, mask in zip(parts, keep, strict=True):
            ends = None
            if "file_index" in part:
                counts = np.bincount(part["file_index"], minlength=len(part["paths"]))
                ends = np.cumsum(counts)
            for i in np.flatnonzero(mask):
                row = {"path": str(part["paths"][i]), "size": int(part["sizes"][i]),
                       "mtime_ns": int(part["mtimes_ns"][i]), "duration": float(part["durations"][i]),
                       "windows": int(part["windows"][i]), "embedding": part["embeddings"][i]}
                if ends is not None:
                    begin = 0 if i == 0 else ends[i - 1]
                    row["timestamps"] = part["timestamps"][begin:ends[i]]
                    row["timestamp_embeddings"] = part["timestamp_embeddings"][begin:ends[i]]
                rows.append(row)
        with open(temporary, "wb") as handle:
            handle.write(encode_rows(rows, suffix, task, settings))
        written = len(rows)
    else:
        with open(temporary, "w", encoding="utf-8", newline="") as out:
            if suffix == ".csv":
                out.write(",".join(CSV_FIELDS) + "\n")
            for source, mask in zip(sources, keep, strict=True):
                written += _copy_text_rows(source, mask, suffix, out)
    with open(temporary, "rb+") as handle:
        os.fsync(handle.fileno())
    os.replace(temporary, output)
    _fsync_directory(os.path.dirname(os.path.abspath(output)))
    return written


def _copy_text_rows(source: str, mask: np.ndarray, suffix: str, out: Any) -> int:
    """Copy the kept rows (one per file) of a JSON Lines or CSV file to `out`."""
    written, index = 0, -1
    with open(source, encoding="utf-8", newline="") as handle:
        if suffix == ".csv":
            reader = csv.reader(handle)
            next(reader, None)
            writer = csv.writer(out, lineterminator="\n")
            last = None
            for line in reader:
                key = tuple(line[:3])
                if key != last:
                    index, last = index + 1, key
                    written += bool(mask[index])
                if mask[index]:
                    writer.writerow(line)
            return written
        for line in handle:
            if line.strip():
                index += 1
                if mask[index]:
                    out.write(line)
                    written += 1
    return written


class ResultStore:
    """The results of one run (one shard): what is done already, and the rows of this run, written a group at a
    time to the staging folder and merged into the output at the end (see the module docstring).

    Args:
        output: The output file.
        task: "classify" or "embed".
        settings: What determines a file's result (model, options): recorded, and compared with an earlier partial
            run's (or a parquet/npz output's) before resuming.
        overwrite: Ignore (and replace) an earlier output and partial run: every file is done again.
        group_size: Files per part: a crash loses at most this many.
        group_seconds: A part is also written when its first row is this old.

    Raises:
        ValueError: When an earlier partial run (or output) was made with other settings; the message names them
            and says to pass the same settings or --overwrite.
    """

    def __init__(self, output: str, task: str, settings: dict[str, Any], overwrite: bool = False,
                 group_size: int = 64, group_seconds: float = 30.0) -> None:
        self.output = os.path.abspath(output)
        self.suffix = output_format(output, task)
        self.task, self.settings = task, settings
        self.staging = f"{self.output}.partial"
        self.group_size, self.group_seconds = group_size, group_seconds
        self.rows: list[dict[str, Any]] = []
        self.first_row_time = 0.0
        os.makedirs(os.path.dirname(self.output), exist_ok=True)
        if overwrite:
            shutil.rmtree(self.staging, ignore_errors=True)
        self._check_settings(overwrite)
        # A partial run started with --overwrite replaces the output: resumed (with or without --overwrite's
        # restart), it still ignores the old output's rows.
        manifest = os.path.join(self.staging, "manifest.json")
        replaces = overwrite
        if not overwrite and os.path.exists(manifest):
            with open(manifest, encoding="utf-8") as handle:
                replaces = bool(json.load(handle).get("replaces_output"))
        os.makedirs(self.staging, exist_ok=True)
        _fsync_write(manifest, json.dumps({"task": task, "format": self.suffix, "settings": settings,
                                           "replaces_output": replaces}, indent=1).encode())
        for name in os.listdir(self.staging):
            if name.endswith(".tmp"):  # a part a crash left half-written
                os.remove(os.path.join(self.staging, name))
        self.previous = [self.output] if os.path.exists(self.output) and not replaces else []
        self.parts = sorted(str(path) for path in Path(self.staging).glob(f"part-*{self.suffix}"))
        self.done: set[FileKey] = set()
        for source in self.previous + self.parts:
            for key, ok in read_keys(source, self.suffix):
                if ok:
                    self.done.add(key)

    def _check_settings(self, overwrite: bool) -> None:
        manifest = os.path.join(self.staging, "manifest.json")
        found, where = None, None
        if os.path.exists(manifest):
            with open(manifest, encoding="utf-8") as handle:
                found, where = json.load(handle).get("settings"), self.staging + "/"
        elif os.path.exists(self.output) and not overwrite:
            found, where = read_settings(self.output, self.suffix), self.output
        if found is None or found == self.settings:
            return
        changed = [f"{key}: {found.get(key)!r} there, {self.settings.get(key)!r} now"
                   for key in sorted(set(found) | set(self.settings)) if found.get(key) != self.settings.get(key)]
        raise ValueError(f"{where} was made with other settings ({'; '.join(changed)}); run with the same settings "
                         "to resume, or pass --overwrite to start again.")

    def add(self, row: dict[str, Any]) -> None:
        """Add one file's row; a part is written when the group is full or old enough."""
        if not self.rows:
            self.first_row_time = time.monotonic()
        self.rows.append(row)
        if len(self.rows) >= self.group_size or time.monotonic() - self.first_row_time >= self.group_seconds:
            self.flush()

    def flush(self) -> None:
        """Write the rows held as the next part (whole or not at all)."""
        if not self.rows:
            return
        path = os.path.join(self.staging, f"part-{len(self.parts):06d}{self.suffix}")
        _fsync_write(path, encode_rows(self.rows, self.suffix, self.task, self.settings))
        self.parts.append(path)
        self.rows = []

    def finish(self) -> int:
        """Merge the earlier output and the parts into the output and remove the staging folder; the number of
        rows in the output."""
        self.flush()
        sources = self.previous + self.parts
        keys = [[key for key, _ in read_keys(source, self.suffix)] for source in sources]
        last: dict[str, tuple[int, int]] = {}
        for s, source_keys in enumerate(keys):
            for r, key in enumerate(source_keys):
                last[key.path] = (s, r)
        keep = [np.zeros(len(source_keys), dtype=bool) for source_keys in keys]
        for s, r in last.values():
            keep[s][r] = True
        if self.suffix in (".jsonl", ".csv"):  # before the output: an output never lacks its settings
            _fsync_write(settings_file(self.output), json.dumps(self.settings, indent=1).encode())
        rows = merge(sources, keep, self.output, self.suffix, self.task, self.settings)
        shutil.rmtree(self.staging, ignore_errors=True)
        return rows


__all__ = ["CLASSIFY_FORMATS", "EMBED_FORMATS", "METADATA_KEY", "ResultStore", "encode_rows", "output_format",
           "parquet_table", "read_keys", "read_settings"]
