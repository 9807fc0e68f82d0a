"""Find the recordings that sound like this one: nearest neighbours among the vectors `ast-hf embed` wrote.

    ast-hf search QUERY [QUERY ...] --index EMB.parquet [--model M] [--top-k 10] [--json] [--device cpu]
                  [--pool P] [--layer N...] [--hop S] [--[no-]pad-to-max-length]

The index is what `ast-hf embed --output` writes: a parquet file (columns `path` and `embedding`, the others
ignored; rows whose `error` is set, or without an embedding, are skipped), a .npz (arrays `paths` and
`embeddings`), a sharded run's files side by side (OUT-00000-of-00002.parquet, ...: pass OUT.parquet), or a folder
of part files. Similarity is the cosine of the angle between two vectors: the vectors are L2-normalised once and
compared by inner product, with faiss' `IndexFlatIP` (exact search) when faiss is installed (`pip install
faiss-cpu`) and otherwise with numpy, which gives the same scores and order, only more slowly on large indexes.

A query is embedded by the "audio-feature-extraction" pipeline with the model and settings the index was made
with: `model=` / `--model` and `pool=`, `layer=`, ... when given, else the settings `ast-hf embed` stores with the
vectors (JSON in the parquet schema's metadata under b"ast_hf", or the .npz's `settings` array: model, pool, layers,
hop, pad_to_max_length). Vectors of another model or another --layer are not comparable, so an index without stored
settings (an older file) needs --model, and the --pool and --layer of the embed run.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import re
import sys
import zipfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

METADATA_KEY = b"ast_hf"
"""The parquet schema metadata key holding the embed settings as JSON."""
FAISS_HINT = "pip install faiss-cpu"
BACKENDS = ("auto", "faiss", "numpy")
"""Search engines: faiss when installed else numpy ("auto"), or one of them; both search exactly."""
_NUMPY_QUERY_BLOCK = 256  # queries scored at a time by the numpy fallback: a (256, n) float32 matrix


class EmbeddingIndex:
    """Recordings' vectors, L2-normalised, searchable by cosine similarity.

    Attributes:
        paths: The recordings, in the index's row order.
        vectors: (n, d) float32, each row of unit length (an all-zero vector stays zero and scores 0).
        settings: The embed settings stored with the vectors (parquet schema metadata b"ast_hf", or the npz's
            `settings` array: JSON with model, pool, layers, hop, pad_to_max_length, ...), {} when there are none.
        skipped: Rows of the files read that had no embedding (failed files), left out.
        backend: "faiss" (`faiss.IndexFlatIP`) or "numpy" (the same exact search, when faiss is not installed or
            `backend="numpy"` is asked for).

    Example:
        ```python
        index = EmbeddingIndex.load("emb.parquet")
        index.search(query_vectors, top_k=5)  # [[{"path": ..., "score": ...}, ...], ...] per query, best first
        ```
    """

    def __init__(self, paths: Sequence[str], vectors: np.ndarray, settings: dict[str, Any] | None = None,
                 backend: str = "auto") -> None:
        if backend not in BACKENDS:
            raise ValueError(f"backend={backend!r}: pass one of {', '.join(BACKENDS)}.")
        vectors = np.asarray(vectors, dtype=np.float32)
        if vectors.ndim != 2 or vectors.shape[0] != len(paths):
            raise ValueError(f"vectors of shape {vectors.shape} for {len(paths)} paths; pass one row per path.")
        if vectors.shape[0] == 0:
            raise ValueError("the index holds no embeddings; embed some recordings first (ast-hf embed).")
        bad = np.flatnonzero(~np.isfinite(vectors).all(axis=1))
        if bad.size:
            raise ValueError(f"{paths[bad[0]]}: its embedding holds NaN or infinite values ({bad.size} such row(s)); "
                             "embed it again.")
        self.paths = [str(path) for path in paths]
        self.vectors = normalized(vectors)
        self.settings = dict(settings or {})
        self.skipped = 0
        self._faiss_index = None if backend == "numpy" else _faiss_index(self.vectors, required=backend == "faiss")
        self.backend = "numpy" if self._faiss_index is None else "faiss"

    def __len__(self) -> int:
        return len(self.paths)

    @property
    def dimension(self) -> int:
        """The number of values in each vector."""
        return int(self.vectors.shape[1])

    @classmethod
    def load(cls, path: str | os.PathLike, backend: str = "auto") -> EmbeddingIndex:
        """Read `ast-hf embed`'s output: a .parquet or .npz file, a folder of part files (every .parquet in it, else
        every .npz, in name order: a run's OUT.partial/ or a folder of shards), or a sharded run's OUT.parquet whose
        shards OUT-00000-of-0000N.parquet, ... lie side by side. A path with several rows keeps its last one (a
        file embedded again); rows without an embedding (failed files) are skipped and counted in `skipped`.

        Args:
            path: The file or folder.
            backend: "auto" (faiss when installed, else numpy), "faiss" or "numpy".

        Raises:
            FileNotFoundError: When `path` does not exist (nor its shards), or is a folder without part files.
            ImportError: For parquet when pyarrow is not installed; for backend="faiss" when faiss is not.
            ValueError: For a file that is not such an index (no path/embedding column or array, vectors of
                different sizes, parts made with different settings, a shard missing, no rows).
        """
        parts = [_read_npz(file) if file.suffix.lower() == ".npz" else _read_parquet(file)
                 for file in index_files(Path(path))]
        sizes = sorted({part.vectors.shape[1] for part in parts if part.paths})
        if len(sizes) > 1:
            described = ", ".join(f"{part.source.name}: {part.vectors.shape[1]}" for part in parts if part.paths)
            raise ValueError(f"{path}: the parts hold vectors of different sizes ({described}); they were embedded "
                             "with different models or --layer settings and cannot be searched together.")
        settings = [part.settings for part in parts if part.settings]
        if any(other != settings[0] for other in settings[1:]):
            other = next(other for other in settings if other != settings[0])
            raise ValueError(f"{path}: the parts were embedded with different settings ({settings[0]} and {other}); "
                             "search them separately.")
        skipped = sum(part.skipped for part in parts)
        parts = [part for part in parts if part.paths]
        if not parts:
            raise ValueError(f"{path}: no embedded recordings ({skipped} row(s) without an embedding).")
        paths = [name for part in parts for name in part.paths]
        vectors = np.concatenate([part.vectors for part in parts])  # (n, d)
        last = {name: row for row, name in enumerate(paths)}
        if len(last) < len(paths):  # a path with several rows: its last one
            keep = sorted(last.values())
            paths, vectors = [paths[row] for row in keep], vectors[keep]
        index = cls(paths, vectors, settings[0] if settings else {}, backend)
        index.skipped = skipped
        return index

    def search(self, query_vectors: np.ndarray, top_k: int = 10) -> list[list[dict[str, Any]]]:
        """The `top_k` recordings nearest to each query vector (all of them when the index is smaller).

        Args:
            query_vectors: (q, d) or (d,) vectors, made with the index's model and settings; normalised here.
            top_k: Matches per query.

        Returns:
            Per query a list of {"path", "score"} (score: cosine similarity, -1 to 1), best first.

        Raises:
            ValueError: For a top_k below 1, or vectors of another size than the index's.
        """
        queries = np.asarray(query_vectors, dtype=np.float32)
        queries = queries[None, :] if queries.ndim == 1 else queries
        if top_k < 1:
            raise ValueError(f"top_k={top_k}: pass a positive number of matches.")
        if queries.ndim != 2 or queries.shape[1] != self.dimension:
            size = queries.shape[-1] if queries.ndim else 0
            raise ValueError(f"the query vectors have {size} values but the index's have {self.dimension}: the "
                             "index was embedded with another model or --layer setting; embed the queries with the "
                             "same ones (--model, --layer).")
        if not np.isfinite(queries).all():
            raise ValueError("a query vector holds NaN or infinite values.")
        k = min(top_k, len(self))
        scores, rows = self._nearest(normalized(queries), k)  # (q, k) each
        return [[{"path": self.paths[row], "score": float(score)} for row, score in zip(ids, values, strict=True)]
                for ids, values in zip(rows.tolist(), scores.tolist(), strict=True)]

    def _nearest(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """(scores, rows), each (q, k), best first: faiss' exact inner-product search, or the same with numpy (ties
        in row order)."""
        if self._faiss_index is not None:
            return self._faiss_index.search(np.ascontiguousarray(queries), k)
        scores, rows = [], []
        for start in range(0, queries.shape[0], _NUMPY_QUERY_BLOCK):
            similarity = queries[start:start + _NUMPY_QUERY_BLOCK] @ self.vectors.T  # (block, n)
            best = np.argpartition(-similarity, k - 1, axis=1)[:, :k] if k < similarity.shape[1] else \
                np.broadcast_to(np.arange(similarity.shape[1]), similarity.shape)
            best_scores = np.take_along_axis(similarity, best, axis=1)
            order = np.lexsort((best, -best_scores), axis=1)  # by score, then by row
            rows.append(np.take_along_axis(best, order, axis=1))
            scores.append(np.take_along_axis(best_scores, order, axis=1))
        return np.concatenate(scores), np.concatenate(rows)


def normalized(vectors: np.ndarray) -> np.ndarray:
    """Rows scaled to unit L2 length, float32 (all-zero rows stay zero)."""
    vectors = np.asarray(vectors, dtype=np.float32)
    lengths = np.linalg.norm(vectors, axis=-1, keepdims=True)
    return np.ascontiguousarray(vectors / np.maximum(lengths, np.finfo(np.float32).tiny))


def _faiss_index(vectors: np.ndarray, required: bool) -> Any:
    """A `faiss.IndexFlatIP` holding `vectors`; when faiss is not installed None (numpy searches instead), or an
    ImportError naming the pip command when it is `required`."""
    try:
        import faiss
    except ImportError as error:
        if required:
            raise ImportError(f"backend='faiss' needs faiss ({error}); {FAISS_HINT}.") from error
        return None
    index = faiss.IndexFlatIP(vectors.shape[1])
    index.add(vectors)
    return index


@dataclass
class _Part:
    """One index file's rows with an embedding, the settings stored in it, and how many rows had none."""

    source: Path
    paths: list[str]
    vectors: np.ndarray  # (n, d)
    settings: dict[str, Any]
    skipped: int = 0


def index_files(source: Path) -> list[Path]:
    """The files of an index (see `EmbeddingIndex.load`)."""
    if source.is_dir():
        files = sorted(source.glob("*.parquet")) or sorted(source.glob("*.npz"))
        if not files:
            raise FileNotFoundError(f"{source}: a folder without .parquet or .npz files; pass the file, the folder of "
                                    "parts or the .npz that `ast-hf embed --output` wrote.")
        return files
    if source.is_file():
        return [source]
    pattern = re.compile(rf"{re.escape(source.stem)}-(\d+)-of-(\d+){re.escape(source.suffix)}")
    shards = {}
    for file in source.parent.glob(f"{glob.escape(source.stem)}-*-of-*{glob.escape(source.suffix)}"):
        if match := pattern.fullmatch(file.name):
            shards[int(match[1]), int(match[2])] = file
    if not shards:
        raise FileNotFoundError(f"{source}: no such file or folder (nor shards {source.stem}-00000-of-N"
                                f"{source.suffix}, ...); pass the file, the folder of parts or the .npz that `ast-hf "
                                "embed --output` wrote.")
    counts = sorted({count for _, count in shards})
    missing = [f"{source.stem}-{i:05d}-of-{count:05d}{source.suffix}" for count in counts for i in range(count)
               if (i, count) not in shards]
    if len(counts) > 1 or missing:
        found = ", ".join(file.name for _, file in sorted(shards.items()))
        raise ValueError(f"{source}: the shards beside it are not one complete set (found {found}; missing "
                         f"{', '.join(missing) or 'none, but runs of different shard counts'}); wait for every shard "
                         "to finish, or pass one shard file.")
    return [file for _, file in sorted(shards.items())]


def _read_npz(path: Path) -> _Part:
    try:
        arrays = np.load(path)  # no allow_pickle: `ast-hf embed` writes plain arrays
    except (OSError, EOFError, ValueError, zipfile.BadZipFile) as error:  # not numpy's, pickled, truncated
        raise ValueError(f"{path}: cannot read it as a .npz ({error}).") from error
    if not isinstance(arrays, np.lib.npyio.NpzFile):
        raise ValueError(f"{path}: a single numpy array, not a .npz of paths and embeddings.")
    with arrays:
        missing = [name for name in ("paths", "embeddings") if name not in arrays.files]
        if missing:
            raise ValueError(f"{path}: no {' or '.join(missing)} array (it has {', '.join(arrays.files)}); pass a "
                             ".npz written by `ast-hf embed`.")
        paths = [str(item) for item in arrays["paths"]]
        vectors = arrays["embeddings"].astype(np.float32).reshape(len(paths), -1)
        settings = _settings(arrays["settings"].item() if "settings" in arrays.files else None, path)
    return _Part(path, paths, vectors, settings)


def _read_parquet(path: Path) -> _Part:
    """One parquet file: only the path, embedding (and error) columns, a row group at a time; rows with an error or
    without an embedding skipped."""
    try:
        import pyarrow as pa
        import pyarrow.compute as pc
        import pyarrow.parquet as pq
    except ImportError as error:
        raise ImportError(f"reading a parquet index needs pyarrow ({error}); pip install pyarrow.") from error
    try:
        handle = pq.ParquetFile(path)
    except (OSError, pa.ArrowException) as error:
        raise ValueError(f"{path}: cannot read it as parquet ({str(error).strip().splitlines()[0]}).") from error
    with handle:
        names = handle.schema_arrow.names
        missing = [name for name in ("path", "embedding") if name not in names]
        if missing:
            raise ValueError(f"{path}: no {' or '.join(missing)} column (it has {', '.join(names)}); pass a parquet "
                             "file written by `ast-hf embed`.")
        metadata = handle.schema_arrow.metadata or {}
        settings = _settings(metadata.get(METADATA_KEY), path)
        columns = ["path", "embedding", *(["error"] if "error" in names else [])]
        paths: list[str] = []
        blocks: list[np.ndarray] = []
        skipped = 0
        for group in range(handle.num_row_groups):
            table = handle.read_row_group(group, columns=columns)
            embedded = pc.is_valid(table.column("embedding"))
            if "error" in columns:
                embedded = pc.and_(embedded, pc.is_null(table.column("error")))
            kept = table.filter(embedded)
            skipped += table.num_rows - kept.num_rows
            if not kept.num_rows:
                continue
            embedding = kept.column("embedding").combine_chunks()
            sizes = np.unique(pc.list_value_length(embedding).to_numpy(zero_copy_only=False))
            if sizes.size > 1 or blocks and sizes[0] != blocks[0].shape[1]:
                found = sorted({*sizes.tolist(), *(block.shape[1] for block in blocks)})
                raise ValueError(f"{path}: embeddings of different sizes ({', '.join(map(str, found))}); every row "
                                 "must come from one model and --layer setting.")
            values = embedding.flatten().to_numpy(zero_copy_only=False).astype(np.float32, copy=False)
            paths += kept.column("path").to_pylist()
            blocks.append(values.reshape(kept.num_rows, int(sizes[0])))
    vectors = np.concatenate(blocks) if blocks else np.zeros((0, 0), np.float32)
    return _Part(path, paths, vectors, settings, skipped)


def _settings(stored: bytes | str | None, path: Path) -> dict[str, Any]:
    """The embed settings stored as JSON with an index ({} when there are none)."""
    if stored is None:
        return {}
    try:
        settings = json.loads(stored)
    except ValueError as error:
        raise ValueError(f"{path}: its stored settings (\"ast_hf\") are not JSON ({error}).") from error
    if not isinstance(settings, dict):
        raise ValueError(f"{path}: its stored settings (\"ast_hf\") are {type(settings).__name__}, not a JSON object.")
    return settings


def query_settings(index: EmbeddingIndex, model: Any = None, pool: str | None = None, layer: Any = None,
                   hop: float | None = None, pad_to_max_length: bool | None = None) -> dict[str, Any]:
    """The model and pipeline options that embed a query as the index's recordings were: each argument given, else
    the index's stored setting. Returns {"model", and the options set: "pool", "layer", "hop", "pad_to_max_length"}.

    Raises:
        ValueError: When neither `model` nor the index names a model.
    """
    stored = index.settings
    model = model if model is not None else stored.get("model")
    if model is None:
        raise ValueError("the index does not say which model embedded it (no stored settings: an index written "
                         "before they were recorded); pass --model (model=) and the same --pool and --layer used for "
                         "the index.")
    chosen = {"pool": pool if pool is not None else stored.get("pool"),
              "layer": layer if layer is not None else stored.get("layers"),
              "hop": hop if hop is not None else stored.get("hop"),
              "pad_to_max_length": pad_to_max_length if pad_to_max_length is not None else
              stored.get("pad_to_max_length")}
    return {"model": model, **{key: value for key, value in chosen.items() if value is not None}}


def setting_conflicts(index: EmbeddingIndex, model: Any = None, pool: str | None = None, layer: Any = None,
                      hop: float | None = None, pad_to_max_length: bool | None = None) -> list[str]:
    """One line per given setting that differs from the index's stored one. The given one is used: a moved model
    directory is fine, but another pool or layer gives vectors that do not match the index's. Layers are compared as
    given (pass them non-negative, as `check_layers` makes them and `ast-hf embed` stores them)."""
    stored = index.settings
    given = {"model": model, "pool": pool, "layers": layer, "hop": hop, "pad_to_max_length": pad_to_max_length}
    notes = []
    for key, value in given.items():
        before = stored.get(key)
        if value is None or before is None:
            continue
        if key == "model":
            if not isinstance(value, (str, os.PathLike)):
                continue  # a pipeline already made
            value = os.path.abspath(value) if os.path.isdir(value) else str(value)  # as `ast-hf embed` records it
        if key == "layers":
            value = list(value) if isinstance(value, (list, tuple)) else [value]
            before = list(before) if isinstance(before, (list, tuple)) else [before]
        if value != before:
            notes.append(f"{key} {value} given, but the index was embedded with {key} {before}")
    return notes


def search_audio(queries: str | os.PathLike | Iterable[str | os.PathLike], index: EmbeddingIndex | str | os.PathLike,
                 *, model: Any = None, top_k: int = 10, pool: str | None = None,
                 layer: int | Sequence[int] | None = None, hop: float | None = None,
                 pad_to_max_length: bool | None = None, device: str = "cpu") -> list[dict[str, Any]]:
    """The recordings of `index` that sound most like each query file.

    Args:
        queries: Audio file paths (one path or several).
        index: An `EmbeddingIndex`, or the path `EmbeddingIndex.load` reads.
        model: The model directory or Hub id that embedded the index, or an "audio-feature-extraction" pipeline
            already made with it; default the index's stored setting.
        top_k: Matches per query (all recordings when the index is smaller).
        pool: The pooling the index was embedded with; default the index's stored setting, else the pipeline's
            default (which is `ast-hf embed`'s). The same holds for `layer`, `hop` and `pad_to_max_length`.
        layer: The hidden state(s) the index was embedded with.
        hop: The hop (seconds) the index was embedded with.
        pad_to_max_length: The input convention the index was embedded with.
        device: Where a model given by name runs ("cpu", "cuda", "cuda:N").

    Returns:
        Per query, in order: {"query": path, "matches": [{"path", "score"}, ...] best first}, or {"query": path,
        "error": reason} when it cannot be decoded (the other queries are still answered).

    Raises:
        ValueError: No model named anywhere, a top_k below 1, settings the model refuses (a layer out of range), or
            query vectors of another size than the index's (another model or --layer).
    """
    from transformers import Pipeline, pipeline

    import ast_hf  # noqa: F401 (registers the "audio-feature-extraction" pipeline)
    from ast_hf.audio_io import AudioReadError

    queries = [queries] if isinstance(queries, (str, os.PathLike)) else list(queries)
    if not isinstance(index, EmbeddingIndex):
        index = EmbeddingIndex.load(index)
    if top_k < 1:
        raise ValueError(f"top_k={top_k}: pass a positive number of matches.")
    options = query_settings(index, model, pool=pool, layer=layer, hop=hop, pad_to_max_length=pad_to_max_length)
    model = options.pop("model")
    embedder = model if isinstance(model, Pipeline) else pipeline("audio-feature-extraction", model=model,
                                                                  device=device)
    results: list[dict[str, Any]] = []
    for query in queries:
        try:  # one query at a time, so that a file that cannot be decoded fails alone
            vector = embedder(str(query), **options)["embedding"]
        except AudioReadError as error:
            results.append({"query": str(query), "error": str(error)})
            continue
        results.append({"query": str(query), "matches": index.search(vector[None, :], top_k)[0]})
    return results


# ---------------------------------------------------------------------------------------------------------------
# ast-hf search


def add_search_parser(commands: Any) -> argparse.ArgumentParser:
    """Add the `search` subcommand to `commands` (the subparsers object of ast-hf's parser) and return it."""
    search = commands.add_parser(
        "search", help="find the recordings that sound like a query (an `ast-hf embed` index)",
        description="Embed each query with the model and settings of the index and print its nearest recordings "
                    "by cosine similarity (exact search: faiss when installed, numpy otherwise). The index is the "
                    "parquet file, folder of parquet parts or .npz that `ast-hf embed --output` wrote; without "
                    "settings in its metadata pass --model and the --pool and --layer it was embedded with. "
                    "Directories given as queries are searched recursively for audio files.")
    search.add_argument("queries", nargs="+", metavar="QUERY", help="audio files (or directories) to look up")
    search.add_argument("--index", required=True, metavar="EMB",
                        help="`ast-hf embed`'s output: a .parquet file, a folder of .parquet parts or a .npz")
    search.add_argument("--model", default=None,
                        help="the model directory or Hub id that embedded the index (default: the index's metadata)")
    search.add_argument("--top-k", type=int, default=10, help="matches per query (default 10)")
    search.add_argument("--json", action="store_true",
                        help="print JSON: one list of {query, matches: [{path, score}]} (or {query, error})")
    search.add_argument("--device", default="cpu", help="cpu (default), cuda or cuda:N")
    search.add_argument("--pool", choices=["cls_dist", "mean", "cls"], default=None,
                        help="the --pool the index was embedded with (default: the index's metadata, else cls_dist)")
    search.add_argument("--layer", type=int, nargs="+", default=None, metavar="N",
                        help="the --layer the index was embedded with (default: the index's metadata, else the last "
                             "hidden state)")
    search.add_argument("--hop", type=float, default=None,
                        help="the --hop the index was embedded with (default: the index's metadata, else windows "
                             "that tile the patch grid)")
    from .cli import add_padding_flags

    add_padding_flags(search, "as the index was embedded (default: the index's metadata, else the checkpoint's)")
    search.set_defaults(run=run_search, command="search")
    return search


def run_search(args: argparse.Namespace) -> int:
    """`ast-hf search`: 0 when every query was answered, 1 when some could not be read, 2 when none could be (or the
    index, model or arguments are wrong: a CommandError)."""
    from .cli import (
        EXIT_FAILED,
        EXIT_OK,
        EXIT_SOME_FAILED,
        CommandError,
        check_hop,
        expand_inputs,
        load_tagger,
        require_file_decoding,
    )

    if args.top_k < 1:
        raise CommandError(f"--top-k {args.top_k}: pass a positive number of matches.")
    check_hop(args.hop)
    try:
        index = EmbeddingIndex.load(args.index)
    except (OSError, ImportError, ValueError) as error:  # messages about a file start with its path
        named = str(error).startswith(os.fspath(Path(args.index)))
        raise CommandError(f"--index {error}" if named else f"--index {args.index}: {error}") from error
    try:
        model = query_settings(index, args.model)["model"]
    except ValueError as error:
        raise CommandError(f"--index {args.index}: {error}") from error
    if index.skipped:
        print(f"ast-hf search: note: {index.skipped} row(s) of the index have no embedding (files that failed); "
              "they are left out", file=sys.stderr)
    files, failures = expand_inputs(args.queries)
    for name, reason in failures:
        print(f"ast-hf search: error: {name}: {reason}", file=sys.stderr)
    if not files:
        return EXIT_FAILED
    require_file_decoding()
    embedder = load_tagger(str(model), args.device, task="audio-feature-extraction")
    from .embeddings import check_layers

    try:  # non-negative, as `ast-hf embed` stores them
        layers = check_layers(args.layer, embedder.model.config.num_hidden_layers)
    except ValueError as error:
        raise CommandError(f"--layer: {error}") from error
    given = {"pool": args.pool, "layer": None if layers is None else list(layers), "hop": args.hop,
             "pad_to_max_length": args.pad_to_max_length}
    for note in setting_conflicts(index, args.model, **given):
        print(f"ast-hf search: note: {note}", file=sys.stderr)
    try:
        results = search_audio(files, index, model=embedder, top_k=args.top_k, **given)
    except (TypeError, ValueError) as error:  # a layer out of range, vectors of another size
        raise CommandError(str(error)) from error

    answered = [result for result in results if "matches" in result]
    for result in results:
        if "error" in result:
            print(f"ast-hf search: error: {result['error']}", file=sys.stderr)
    if args.json:
        everything = [{"query": name, "error": f"{name}: {reason}"} for name, reason in failures] + results
        json.dump(everything, sys.stdout, indent=1)
        print()
    else:
        print_matches(answered)
    if len(answered) < len(results) + len(failures):
        return EXIT_SOME_FAILED if answered else EXIT_FAILED
    return EXIT_OK


def print_matches(results: list[dict[str, Any]]) -> None:
    """The table: query, rank, score, path; one line per match."""
    if not results:
        return
    width = max(len("query"), *(len(result["query"]) for result in results))
    print(f"{'query':<{width}}  {'rank':>4}  {'score':>7}  path")
    for result in results:
        for rank, match in enumerate(result["matches"], start=1):
            print(f"{result['query']:<{width}}  {rank:>4}  {match['score']:>7.4f}  {match['path']}")


__all__ = ["BACKENDS", "EmbeddingIndex", "add_search_parser", "index_files", "normalized", "query_settings",
           "run_search", "search_audio", "setting_conflicts"]
