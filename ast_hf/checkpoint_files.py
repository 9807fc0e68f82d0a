"""Checkpoint files: reading weights safely, and writing output directories atomically.

- Reading: safetensors or `torch.load(weights_only=True)` (a pickle that would build objects is refused unread),
  files that are not checkpoints named for what they are (text, audio, numpy, HDF5), `save_pretrained` directories
  (sharded too).
- Writing: `check_output_dir` before anything is converted, `atomic_directory` (a process killed even by SIGKILL
  leaves the previous output or none), `write_checkpoint`.

The converters (`ast_hf.convert`, `conversion/`) use these; every name is also importable from `ast_hf.convert`.
"""

from __future__ import annotations

import ctypes
import errno
import json
import os
import shutil
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from .checkpoint_surgery import ConversionError, unwrap_state_dict
from .staging import remove_stale_staging

if TYPE_CHECKING:  # imported where it is used: reading files needs no model
    pass

# --------------------------------------------------------------------------------------------------------------
# Reading weights safely


def load_state_dict_file(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Read the tensors of one checkpoint file, safely.

    The file is a safetensors file or a PyTorch pickle (`.pth`, `.pt`, `.bin`, any name); the format is recognised
    from its first bytes (`sniff_file_format`), not only from its name. Pickles are read with
    `torch.load(weights_only=True)`: no code is executed, and a pickle that would build anything but tensors and
    plain containers is refused. A state dict wrapped as `{"model": ...}`, `{"state_dict": ...}` or
    `{"module": ...}` is unwrapped.

    Args:
        path: The checkpoint file.

    Returns:
        The tensors by parameter name, on the CPU.

    Raises:
        ConversionError: When the file does not exist or is empty; when it is a damaged safetensors file; when it
            is not a checkpoint at all (audio, text, numpy, HDF5, an image, ...: the message names what it is);
            when the pickle would build Python objects beyond tensors, or cannot be read; when it holds no state
            dict. `ConversionError` is a `ValueError`.

    Example:
        ```python
        state_dict = load_state_dict_file("deit_base_distilled_patch16_384.pth")
        ```
    """
    path = Path(path)
    if not path.is_file():
        raise ConversionError(f"Checkpoint file {str(path)!r} does not exist.")
    if path.stat().st_size == 0:
        raise ConversionError(f"Checkpoint file {str(path)!r} is empty (0 bytes); download it again.")
    with open(path, "rb") as handle:
        head = handle.read(_SNIFF_BYTES)
    kind = sniff_file_format(head, path.stat().st_size)
    if path.suffix == ".safetensors" or kind == "safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return dict(load_file(str(path)))
        except (SafetensorError, OSError, ValueError) as error:
            raise ConversionError(f"{str(path)!r} is not a readable safetensors file ({error}); it may be truncated "
                                  "or not a safetensors file at all.") from error
    if kind not in ("zip", "pickle", "unknown"):
        raise ConversionError(
            f"Could not read {str(path)!r} as a PyTorch checkpoint: it is {kind}. Pass a state dict saved with "
            "torch.save (.pth/.pt/.bin), a .safetensors file, or a save_pretrained directory."
        )
    try:
        loaded = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as error:  # the unpickler raises many types on junk (KeyError, IndexError, EOFError, ...)
        raise ConversionError(_unreadable_checkpoint_message(path, head, error)) from error
    return unwrap_state_dict(loaded, str(path))


# Bytes read to recognise a file's format.
_SNIFF_BYTES = 64
# Magic numbers of files that are sometimes passed where a checkpoint is expected.
_MAGIC = ((b"RIFF", "a RIFF/WAV audio file"), (b"fLaC", "a FLAC audio file"), (b"OggS", "an Ogg audio file"),
          (b"ID3", "an MP3 audio file"), (b"\xff\xfb", "an MP3 audio file"), (b"\xff\xf3", "an MP3 audio file"),
          (b"\x89HDF", "an HDF5 file (a Keras/TensorFlow .h5 model?)"), (b"\x93NUMPY", "a numpy .npy array"),
          (b"\x1f\x8b", "a gzip archive (unpack it first)"), (b"\x89PNG", "a PNG image"),
          (b"\xff\xd8\xff", "a JPEG image"))


def sniff_file_format(head: bytes, size: int) -> str:
    """Recognise a file's format from its first bytes.

    Args:
        head: The first bytes of the file (`load_state_dict_file` reads 64); at least 9 are needed to recognise a
            safetensors file.
        size: The size of the whole file in bytes; a safetensors header length must fit in it.

    Returns:
        "zip" (`torch.save`), "pickle" (legacy `torch.save` or a raw pickle), "safetensors", a description of a
            known file that is not a checkpoint (e.g. "a FLAC audio file", "a numpy .npy array"), or "unknown".

    Example:
        ```python
        with open(path, "rb") as handle:
            kind = sniff_file_format(handle.read(64), os.path.getsize(path))
        ```
    """
    if head.startswith(b"PK\x03\x04"):
        return "zip"
    if head[:1] == b"\x80":  # pickle protocol 2+
        return "pickle"
    if len(head) > 8 and head[8:9] == b"{" and 0 < int.from_bytes(head[:8], "little") <= size - 8:
        return "safetensors"  # 8-byte little-endian header length, then the JSON header
    for magic, description in _MAGIC:
        if head.startswith(magic):
            return description
    return "unknown"


def _unreadable_checkpoint_message(path: Path, head: bytes, error: Exception) -> str:
    text = str(error)
    refused = "Weights only load failed" in text  # torch's restricted unpickler stopped before building anything
    detail = next((line.strip() for line in text.splitlines() if "nsupported" in line), "").split(". Please")[0]
    sample = head.decode("utf-8", errors="replace").rstrip("\ufffd")  # a character cut at the end is not binary
    is_text = bool(sample) and all(c.isprintable() or c in "\t\r\n" for c in sample)
    if refused and ("GLOBAL" in detail or not is_text):
        return (f"Refused to load {str(path)!r}: it is a pickle that would build Python objects beyond tensors "
                f"({detail or 'it holds more than tensors'}). Loading it could run arbitrary code, so it was not "
                "executed (torch.load weights_only=True). If you trust the file, load it yourself and re-save its "
                "tensors with torch.save(state_dict) or safetensors.")
    if is_text:
        return (f"Could not read {str(path)!r} as a PyTorch checkpoint: it is a text file (starts with "
                f"{sample[:40]!r}); nothing in it was executed. Pass a state dict saved with torch.save, a "
                ".safetensors file, or a save_pretrained directory.")
    return (f"Could not read {str(path)!r} as a PyTorch checkpoint ({type(error).__name__}: "
            f"{' '.join(text.split())[:200]}). A truncated download or a file that is not a state dict gives this.")


def load_pretrained_weights(directory: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Read all tensors of a `save_pretrained` directory, single file or sharded.

    A shard index (`model.safetensors.index.json`, else `pytorch_model.bin.index.json`) is followed and its shards
    merged; otherwise `model.safetensors` is read, else `pytorch_model.bin`. Each file is read with
    `load_state_dict_file`.

    Args:
        directory: An existing `save_pretrained` directory.

    Returns:
        The tensors by parameter name, on the CPU.

    Raises:
        ConversionError: When the directory holds none of those files (the message lists what it holds), or a
            file cannot be read (see `load_state_dict_file`).
    """
    directory = Path(directory)
    for index_name in ("model.safetensors.index.json", "pytorch_model.bin.index.json"):
        index = directory / index_name
        if index.is_file():
            shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
            merged: dict[str, torch.Tensor] = {}
            for shard in shards:
                merged.update(load_state_dict_file(directory / shard))
            return merged
    for name in ("model.safetensors", "pytorch_model.bin"):
        if (directory / name).is_file():
            return load_state_dict_file(directory / name)
    raise ConversionError(f"No model.safetensors or pytorch_model.bin in {str(directory)!r} (found "
                          f"{sorted(p.name for p in directory.iterdir())[:10]}).")


# --------------------------------------------------------------------------------------------------------------
# Atomic output


def looks_like_local_path(source: str) -> bool:
    """Whether a model argument that does not exist here is meant as a local path rather than a Hub id: absolute,
    relative to "." or "~", deeper than owner/name, or inside a folder that exists here."""
    return os.path.isabs(source) or source.startswith((".", "~")) or source.count("/") > 1 or (
        "/" in source and os.path.isdir(source.split("/", 1)[0]))


def check_ast_checkpoint(source: str | os.PathLike, flag: str = "the model") -> None:
    """Refuse, before anything loads, a local model argument that is not an AST checkpoint directory.

    A local directory must hold a config.json whose model_type is an AST's (ast_hf's or transformers' built-in); a
    path that does not exist is named as such. Anything else (a Hub id) is left to the loader.

    Args:
        source: The model argument: a directory or a Hub id.
        flag: How messages name the argument (e.g. "--model_name_or_path").

    Raises:
        ValueError: For a missing local path, a file, a directory without config.json, or another model type.
    """
    from .configuration_ast import AST_MODEL_TYPES

    path = Path(os.fspath(source)).expanduser()
    if path.is_file():
        raise ValueError(f"{flag} {source}: a file, not a model directory (config.json, model.safetensors, "
                         "preprocessor_config.json).")
    if not path.is_dir():
        if looks_like_local_path(os.fspath(source)):
            raise ValueError(f"{flag} {source}: no such directory.")
        return
    config_file = path / "config.json"
    if not config_file.is_file():
        raise ValueError(f"{flag} {source}: no config.json; pass a directory written by save_pretrained.")
    try:
        model_type = json.loads(config_file.read_text(encoding="utf-8")).get("model_type")
    except (ValueError, AttributeError) as error:
        raise ValueError(f"{flag} {source}: config.json is not a JSON object ({error}).") from error
    if model_type not in AST_MODEL_TYPES:
        found = "names no model_type" if model_type is None else f"says model_type {model_type!r}"
        raise ValueError(f"{flag} {source}: config.json {found}, not an Audio Spectrogram "
                         f"Transformer ({' or '.join(map(repr, AST_MODEL_TYPES))}); pass an AST checkpoint (DeiT/ViT "
                         "weights convert with conversion/convert_deit_to_ast.py).")


def check_output_dir(output_dir: str | os.PathLike, overwrite: bool = False) -> Path:
    """Check an output directory before anything is converted.

    The converters call it before reading anything, so that a wrong `--output_dir` fails at once;
    `atomic_directory` checks again when writing.

    Args:
        output_dir: The directory to write; it need not exist.
        overwrite: Accept a non-empty existing directory (it will be replaced).

    Returns:
        The resolved (absolute) output directory.

    Raises:
        ConversionError: When `output_dir` exists and is a file, or is a non-empty directory and `overwrite` is
            False.
    """
    output_dir = Path(output_dir).resolve()
    if output_dir.exists() and not output_dir.is_dir():
        raise ConversionError(f"{str(output_dir)!r} exists and is a file; pass a directory path as --output_dir.")
    if output_dir.exists() and any(output_dir.iterdir()) and not overwrite:
        raise ConversionError(f"{str(output_dir)!r} exists and is not empty; pass --overwrite or another directory.")
    return output_dir


@contextmanager
def atomic_directory(output_dir: str | os.PathLike, overwrite: bool = False) -> Iterator[Path]:
    """Write a directory atomically: a context manager that yields a staging directory to write into.

    The staging directory `.NAME.partial-PID-*` lies beside `output_dir`. When the block ends without an error it
    replaces `output_dir` in one step; on any error (or interruption) it is deleted and the error re-raised, so
    no half-written output is ever left behind. A process killed mid-write, even by SIGKILL, leaves `output_dir`
    as it was (the previous directory, or none): the staging directory is only renamed into place once complete,
    and an existing output is swapped with it atomically (Linux renameat2 RENAME_EXCHANGE, see `exchange_paths`;
    elsewhere two renames, between which the path is briefly absent). Staging directories of killed processes
    are removed by the next write to the same output.

    Args:
        output_dir: The directory to write; its parent directories are created.
        overwrite: Replace an existing non-empty directory.

    Yields:
        The empty staging directory, with the permissions of a normal new directory.

    Raises:
        ConversionError: When `output_dir` is a file, or a non-empty directory and `overwrite` is False (see
            `check_output_dir`).

    Example:
        ```python
        with atomic_directory("ast-esc50", overwrite=True) as staging:
            model.save_pretrained(staging)
            extractor.save_pretrained(staging)
        ```
    """
    output_dir = check_output_dir(output_dir, overwrite)
    output_dir.parent.mkdir(parents=True, exist_ok=True)
    for kind in ("partial", "old"):
        remove_stale_staging(output_dir.parent, f".{output_dir.name}.{kind}-")
    staging = Path(tempfile.mkdtemp(prefix=f".{output_dir.name}.partial-{os.getpid()}-", dir=output_dir.parent))
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(staging, 0o777 & ~umask)  # mkdtemp makes it private; the result should look like a normal directory
    try:
        yield staging
        if not output_dir.exists():
            os.replace(staging, output_dir)
        elif exchange_paths(staging, output_dir):
            shutil.rmtree(staging, ignore_errors=True)  # it now holds the previous output
        else:
            retired = Path(tempfile.mkdtemp(prefix=f".{output_dir.name}.old-{os.getpid()}-", dir=output_dir.parent))
            os.replace(output_dir, retired / "old")
            os.replace(staging, output_dir)
            shutil.rmtree(retired, ignore_errors=True)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def exchange_paths(first: str | os.PathLike, second: str | os.PathLike) -> bool:
    """Swap two existing paths in one atomic step (Linux renameat2 with RENAME_EXCHANGE).

    Args:
        first: An existing file or directory.
        second: Another existing file or directory, on the same file system.

    Returns:
        True when the paths were swapped; False where the system, its C library or the file system cannot do it
            (not Linux, no renameat2 before glibc 2.28 or in musl, a file system without RENAME_EXCHANGE), so
            that the caller falls back to two renames.

    Raises:
        OSError: When renameat2 fails for another reason (a missing path, no permission, different file
            systems, ...).
    """
    if sys.platform != "linux":
        return False
    try:
        renameat2 = ctypes.CDLL(None, use_errno=True).renameat2
    except (OSError, AttributeError):  # a libc without renameat2 (glibc < 2.28, musl)
        return False
    at_fdcwd, rename_exchange = -100, 2
    renameat2.argtypes = (ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint)
    if renameat2(at_fdcwd, os.fsencode(first), at_fdcwd, os.fsencode(second), rename_exchange) == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
        return False
    raise OSError(code, os.strerror(code), str(second))


# ----------------------------------------------------------------------------------------------------------------
# Writing a converted model


def write_checkpoint(model: Any, extractor: Any, output_dir: str | os.PathLike,
                     overwrite: bool = False) -> Path:
    """Write a converted model and its feature extractor as a checkpoint, atomically.

    `save_pretrained` of the model (safetensors weights, config, code, auto_map) and of the extractor go into an
    `atomic_directory`, and the model is loaded back from it and compared before it is put in place, so the
    directory holds what a user will load or nothing new.

    Args:
        model: The model to save (an ast_hf model: `ASTForAudioClassification`, `ASTForPreTraining`, ...).
        extractor: Its feature extractor (anything with `save_pretrained`).
        output_dir: The checkpoint directory to write.
        overwrite: Replace an existing non-empty directory.

    Returns:
        `output_dir` as a `Path`.

    Raises:
        ConversionError: When `output_dir` is a file or a non-empty directory without `overwrite`, or the saved
            weights do not read back identically.
    """
    with atomic_directory(output_dir, overwrite=overwrite) as staging:
        model.save_pretrained(staging)
        extractor.save_pretrained(staging)
        # What a user will load, with the model's own class, checked before the rename.
        reloaded = type(model).from_pretrained(staging)
        mismatched = [k for k, v in model.state_dict().items() if not torch.equal(v, reloaded.state_dict()[k])]
        if mismatched:
            raise ConversionError(f"The saved weights do not read back identically: {mismatched[:5]}.")
    return Path(output_dir)


__all__ = ["atomic_directory", "check_ast_checkpoint", "check_output_dir", "exchange_paths", "load_pretrained_weights",
           "load_state_dict_file", "looks_like_local_path", "sniff_file_format", "write_checkpoint"]
