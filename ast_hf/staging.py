"""Crash-safe saving: a save is written into a hidden staging directory, then moved into place.

Used by `ASTPreTrainedModel.save_pretrained`, the converters and the ONNX export. This file is copied beside saved
models as remote code with `modeling_ast.py`.
"""

from __future__ import annotations

import os
import shutil


def is_weight_file(name: str) -> bool:
    """model.safetensors, pytorch_model.bin, their shards (-00001-of-00002) and index files, with variants."""
    return name.startswith(("model", "pytorch_model")) and (
        name.endswith((".safetensors", ".bin")) or (".index" in name and name.endswith(".json")))


def publish_staged_files(staging: str | os.PathLike, directory: str | os.PathLike) -> None:
    """Move the files of a finished save from `staging` into `directory` in an order that never leaves a loadable
    mix of old and new: old weight files of the same format are deleted first (index first), then the other files
    (config, code) are moved, then the new weights, index last. Each move is one rename (same file system)."""
    new_files = sorted(os.listdir(staging))
    new_weights = [name for name in new_files if is_weight_file(name)]
    formats = {"safetensors" if "safetensors" in name else "bin" for name in new_weights}
    old_weights = [name for name in os.listdir(directory) if is_weight_file(name)
                   and ("safetensors" if "safetensors" in name else "bin") in formats
                   and os.path.isfile(os.path.join(directory, name))]
    for name in sorted(old_weights, key=lambda n: ".index" not in n):  # an old index first: it names the shards
        os.remove(os.path.join(directory, name))
    for name in [n for n in new_files if n not in new_weights] + sorted(new_weights, key=lambda n: ".index" in n):
        os.replace(os.path.join(staging, name), os.path.join(directory, name))


def remove_stale_staging(directory: str | os.PathLike, prefix: str) -> None:
    """Delete the `prefix + PID-*` staging directories in `directory` left by processes that no longer run (a save
    killed mid-write). Directories of live processes, and names without a PID, are kept. POSIX only."""
    if os.name != "posix" or not os.path.isdir(directory):
        return
    for name in os.listdir(directory):
        pid_text = name[len(prefix):].split("-", 1)[0] if name.startswith(prefix) else ""
        if not pid_text.isdigit() or int(pid_text) == os.getpid():
            continue
        try:
            os.kill(int(pid_text), 0)  # signal 0: only asks whether the process exists
        except ProcessLookupError:
            shutil.rmtree(os.path.join(directory, name), ignore_errors=True)
        except PermissionError:  # it exists, under another user
            pass


__all__ = ["publish_staged_files", "remove_stale_staging"]
