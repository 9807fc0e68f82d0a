"""The cache of the data sets ast_hf builds on the spot (ast_hf.espeak_commands, ast_hf.drumkits): where it lives,
and how a data set is written into it so that no half-built tree is ever reused."""

from __future__ import annotations

import csv
import json
import os
import shutil
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any


def default_cache_dir() -> Path:
    return Path(os.environ.get("AST_HF_CACHE", Path.home() / ".cache" / "ast_hf"))


@contextmanager
def staged_build(root: Path, spec: Mapping[str, Any]) -> Iterator[Path]:
    """Yield a staging folder beside `root`; when the block succeeds, `spec.json` (which marks a finished build) is
    written into it and it is renamed to `root`; on failure it is deleted. When another process finished the same
    build first, its copy is kept."""
    root.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=root.name + ".partial-", dir=root.parent))
    try:
        yield staging
        (staging / "spec.json").write_text(json.dumps(dict(spec), indent=2))
        try:
            os.replace(staging, root)
        except OSError:  # another process finished first
            shutil.rmtree(staging, ignore_errors=True)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def write_metadata(folder: Path, rows: Sequence[Mapping[str, Any]]) -> None:
    """An audiofolder's metadata.csv: one row per clip, `file_name` relative to the folder, then its columns."""
    with open(folder / "metadata.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
