"""Reading, checking and writing AST checkpoints: the I/O around the pure state-dict surgery of
`ast_hf.checkpoint_surgery`.

- Reading weights safely: safetensors or `torch.load(weights_only=True)`, files that are not checkpoints named for
  what they are, `save_pretrained` directories (sharded too), Hub ids (`download_checkpoint`, the one Hub download).
- Loading models with every weight accounted for: `load_deit_as_ast` (DeiT/ViT source -> AST), `load_ast_model`
  (an ast_hf or transformers AST directory or Hub id).
- Writing: `atomic_directory` (a SIGKILL leaves the previous output or none), `write_checkpoint`, and the common
  tail of the command-line converters (`run_conversion`: build, verify on real audio, write, push; exit status 2
  with a one-line error).
"""

from __future__ import annotations

import ctypes
import errno
import json
import math
import os
import shutil
import sys
import tempfile
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch

from .audio_io import espeak_available, espeak_speech, read_audio_file
from .checkpoint_surgery import (
    ConversionError,
    adapt_image_encoder,
    canonical_architecture,
    default_heads,
    detect_format,
    hf_vit_to_canonical,
    label_fields,
    new_head,
    retarget_state_dict,
    swin_message,
    timm_to_canonical,
    unwrap_state_dict,
)
from .configuration_ast import AST_MODEL_TYPES, ASTConfig
from .modeling_ast import ASTForAudioClassification, remove_stale_staging
from .presets import dataset_labels, read_labels

# --------------------------------------------------------------------------------------------------------------
# Reading weights safely


def load_state_dict_file(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Tensors of a safetensors file or a PyTorch pickle (`.pth`, `.pt`, `.bin`, any name), unwrapped from
    `{"model": ...}` or `{"state_dict": ...}`. Pickles are read with `torch.load(weights_only=True)`: no code is
    executed, and a pickle that would build anything but tensors and plain containers is refused. Files that are
    not checkpoints (audio, text, numpy, HDF5, ...) are named as what they are."""
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
    """"zip" (torch.save), "pickle" (legacy torch.save / raw pickle), "safetensors", a description of a known
    non-checkpoint format ("a FLAC audio file"), or "unknown", from a file's first bytes."""
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
    """All tensors of a `save_pretrained` directory, single file or sharded, safetensors preferred."""
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
# Image-model sources (DeiT/ViT files, directories, Hub ids) -> an AST


def download_checkpoint(source: str, cache_dir: str | None = None, allow_patterns: list[str] | None = None) -> str:
    """The local folder of a Hub id (owner/name), downloaded with huggingface_hub (its cache, `allow_patterns` of
    the repository's files); a ConversionError for anything that is neither a local path nor a Hub id, or that
    cannot be fetched (offline, missing, private)."""
    if source.count("/") != 1 or source.endswith((".pth", ".pt", ".bin", ".safetensors")) \
            or source.startswith((".", "~")) or Path(source).parent.is_dir():
        # owner/name whose owner is a local folder: a local path that does not exist, not a Hub id
        raise ConversionError(f"{source!r} does not exist (no such file or directory), and is not a Hub id "
                              "(owner/name).")
    from huggingface_hub import snapshot_download

    try:
        return snapshot_download(source, cache_dir=cache_dir, allow_patterns=allow_patterns)
    except Exception as error:  # the Hub client raises many types (offline, 404, auth)
        raise ConversionError(
            f"Could not fetch {source!r} from the Hub ({type(error).__name__}: {' '.join(str(error).split())[:200]})."
            " Download it elsewhere and pass the local path."
        ) from error


def read_image_source(source: str, cache_dir: str | None = None) -> tuple[dict[str, torch.Tensor],
                                                                         dict[str, Any] | None, str]:
    """(state dict, transformers config dict or None, description) of a weights file, a `save_pretrained`
    directory or a Hub id."""
    path = Path(source)
    if path.is_file():
        return load_state_dict_file(path), None, f"state dict file {source}"
    if path.is_dir():
        config_file = path / "config.json"
        config = json.loads(config_file.read_text()) if config_file.is_file() else None
        return load_pretrained_weights(path), config, f"directory {source}"
    folder = download_checkpoint(source, cache_dir,
                                 allow_patterns=["config.json", "*.safetensors", "*.bin", "*.json"])
    return read_image_source(folder)


def load_image_encoder(source: str, num_attention_heads: int | None = None, layer_norm_eps: float | None = None,
                       cache_dir: str | None = None, describe: Callable[[str], None] = print
                       ) -> tuple[dict[str, torch.Tensor], dict[str, Any], tuple[int, int]]:
    """A DeiT/ViT source -> (canonical encoder weights, the ASTConfig architecture fields, source (f, t) grid).

    Heads come from the source config, else `num_attention_heads`, else hidden_size / 64; the layer-norm eps from
    the source config, else timm's 1e-6 (`layer_norm_eps` overrides)."""
    state_dict, source_config, description = read_image_source(source, cache_dir)
    model_type = str((source_config or {}).get("model_type", ""))
    if model_type.startswith("swin"):
        raise ConversionError(swin_message(f"{source!r} has model_type {model_type!r} (config.json)"))
    describe(f"read {len(state_dict)} tensors from {description}")
    kind = detect_format(state_dict)
    if kind == "timm":
        canonical = timm_to_canonical(state_dict)
    elif kind == "hf_vit":
        canonical = hf_vit_to_canonical(state_dict)
    else:
        raise ConversionError(
            f"{source!r} is already an AST checkpoint ({kind}); use conversion/convert_original_ast.py (authors' "
            "checkpoints, transformers' MIT/ast-*) or conversion/retarget_ast.py (new length, strides or labels)."
        )
    arch = canonical_architecture(canonical)
    hidden = arch["hidden_size"]
    fields: dict[str, Any] = dict(hidden_size=hidden, num_hidden_layers=arch["num_hidden_layers"],
                                  intermediate_size=arch["intermediate_size"], qkv_bias=arch["qkv_bias"],
                                  patch_size=arch["patch_size"], hidden_act="gelu", layer_norm_eps=1e-6,
                                  num_attention_heads=num_attention_heads or default_heads(hidden))
    if source_config is not None:
        heads = source_config.get("num_attention_heads", fields["num_attention_heads"])
        if num_attention_heads and num_attention_heads != heads:
            raise ConversionError(
                f"--num_attention_heads {num_attention_heads} contradicts the source config's "
                f"num_attention_heads={heads}; drop the option (the config is read) or fix it."
            )
        fields.update(num_attention_heads=heads, layer_norm_eps=source_config.get("layer_norm_eps", 1e-12),
                      hidden_act=source_config.get("hidden_act", "gelu"))
        if source_config.get("hidden_size", hidden) != hidden:
            raise ConversionError(f"config.json says hidden_size={source_config['hidden_size']} but the weights "
                                  f"have {hidden}; the directory mixes two models.")
    if layer_norm_eps is not None:
        fields["layer_norm_eps"] = layer_norm_eps
    if hidden % fields["num_attention_heads"]:
        raise ConversionError(
            f"num_attention_heads={fields['num_attention_heads']} does not divide hidden_size={hidden}; pass "
            "--num_attention_heads with the source model's head count (DeiT-tiny 3, small 6, base 12)."
        )
    describe(f"source: {kind} layout, {arch['num_hidden_layers']} layers, hidden {hidden}, "
             f"{fields['num_attention_heads']} heads, grid {arch['grid'][0]} x {arch['grid'][1]}, "
             f"{arch['prefix_tokens']} prefix token(s)"
             + ("" if arch["prefix_tokens"] == 2 else " (cls token duplicated as the distillation token)"))
    return canonical, fields, arch["grid"]


def load_deit_as_ast(source: str, seed: int | None = 0, channel_reduction: str = "sum",
                     num_attention_heads: int | None = None, layer_norm_eps: float | None = None,
                     cache_dir: str | None = None, describe: Callable[[str], None] = print,
                     **config_fields: Any) -> ASTForAudioClassification:
    """Read a DeiT/ViT source (file, directory or Hub id) and convert it into an ASTForAudioClassification with
    `checkpoint_surgery.adapt_image_encoder` and a new head; `config_fields` are the AST's own (max_length,
    num_mel_bins, strides, labels, problem_type, ...)."""
    canonical, fields, source_grid = load_image_encoder(source, num_attention_heads, layer_norm_eps, cache_dir,
                                                        describe)
    config = ASTConfig(**{**fields, **config_fields})
    weights = adapt_image_encoder(canonical, source_grid, config, channel_reduction)
    weights.update(new_head(config, seed=seed))
    return build_model(config, weights)


# --------------------------------------------------------------------------------------------------------------
# Re-targeting and loading a trained AST


def retarget_model(model: ASTForAudioClassification, seed: int | None = None,
                   **changes: Any) -> ASTForAudioClassification:
    """A new ASTForAudioClassification with `changes` applied to the config (max_length, frequency_stride,
    time_stride, num_mel_bins, id2label/label2id or num_labels, problem_type, ...) and the weights re-targeted."""
    config_dict = model.config.to_dict()
    if "id2label" in changes and "label2id" not in changes:
        changes["label2id"] = {label: int(i) for i, label in dict(changes["id2label"]).items()}
    if "num_labels" in changes and "id2label" not in changes:
        config_dict.pop("id2label", None)
        config_dict.pop("label2id", None)
    config_dict.update(changes)
    new_config = ASTConfig.from_dict(config_dict)
    weights = retarget_state_dict(model.state_dict(), model.config, new_config, seed=seed)
    return build_model(new_config, weights, attn_implementation=model.config._attn_implementation)


def build_model(config: ASTConfig, weights: Mapping[str, torch.Tensor],
                attn_implementation: str | None = None) -> ASTForAudioClassification:
    """An ASTForAudioClassification holding exactly `weights`; raises when any key is missing or unexpected."""
    model = ASTForAudioClassification._from_config(config, attn_implementation=attn_implementation)
    result = model.load_state_dict(dict(weights), strict=False)
    if result.missing_keys or result.unexpected_keys:
        raise ConversionError(f"Converted weights do not fit the AST: missing {result.missing_keys[:6]}, "
                              f"unexpected {result.unexpected_keys[:6]}.")
    return model.eval()


def load_ast_model(source: str, cache_dir: str | None = None) -> ASTForAudioClassification:
    """An ast_hf or transformers AST from a `save_pretrained` directory or Hub id, with every weight accounted for.

    `from_pretrained` alone initialises whatever it does not find at random and only logs it, so a DeiT, a
    different model or damaged weights would come back as a random AST. Here the config's model_type must be an
    AST, and any missing, unexpected or mis-shaped tensor raises a ConversionError that names them."""
    folder = ast_directory(source, cache_dir)
    from transformers.utils import logging as transformers_logging

    verbosity = transformers_logging.get_verbosity()
    transformers_logging.set_verbosity_error()  # the load report is replaced by the one-line error below
    try:
        model, info = ASTForAudioClassification.from_pretrained(folder, output_loading_info=True,
                                                                ignore_mismatched_sizes=True)
    except Exception as error:  # damaged or hostile files raise many types (UnpicklingError, SafetensorError, ...)
        raise ConversionError(f"Could not load the AST in {source!r} ({type(error).__name__}: "
                              f"{' '.join(str(error).split())[:300]}).") from error
    finally:
        transformers_logging.set_verbosity(verbosity)
    problems = [f"{len(info[name])} {label} (e.g. {[k if isinstance(k, str) else k[0] for k in info[name]][:3]})"
                for name, label in (("missing_keys", "missing"), ("unexpected_keys", "unexpected"),
                                    ("mismatched_keys", "of the wrong shape"), ("error_msgs", "load errors"))
                if info.get(name)]
    if problems:
        raise ConversionError(f"The weights in {source!r} do not fit the AST its config.json describes: "
                              f"{'; '.join(problems)}. The directory mixes two models or is damaged.")
    return model.eval()


def from_builtin_model(model: Any) -> ASTForAudioClassification:
    """transformers' built-in ASTForAudioClassification (an instance) as ast_hf's, on the same device, with every
    weight checked by `load_ast_model`. Through a save_pretrained round trip: transformers 5 names the built-in's
    parameters differently in memory, and its save_pretrained writes the Hub names that ast_hf loads."""
    with tempfile.TemporaryDirectory(prefix="ast_hf_builtin_") as folder:
        model.save_pretrained(folder)
        return load_ast_model(folder).to(model.device)


def ast_directory(source: str, cache_dir: str | None = None) -> str:
    """The local directory of an AST checkpoint (downloading a Hub id), after checking that config.json says AST."""
    path = Path(source)
    if path.is_file():
        raise ConversionError(
            f"{source!r} is a file; this needs a save_pretrained directory (config.json + model.safetensors) or a Hub "
            "id. The authors' .pth files go through conversion/convert_original_ast.py (with --dataset), DeiT/ViT "
            "weights through conversion/convert_deit_to_ast.py."
        )
    if not path.is_dir():
        path = Path(download_checkpoint(source, cache_dir))
    config_file = path / "config.json"
    if not config_file.is_file():
        raise ConversionError(f"{source!r} has no config.json (found {sorted(p.name for p in path.iterdir())[:10]});"
                              " pass a directory written by save_pretrained.")
    try:
        model_type = json.loads(config_file.read_text(encoding="utf-8")).get("model_type")
    except (ValueError, AttributeError) as error:
        raise ConversionError(f"{str(config_file)!r} is not a JSON object ({error}).") from error
    if str(model_type).startswith("swin"):
        raise ConversionError(swin_message(f"{source!r} holds a {model_type!r} model (config.json)"))
    if model_type not in AST_MODEL_TYPES:
        raise ConversionError(
            f"{source!r} holds a {model_type!r} model (config.json), not an AST ({' or '.join(AST_MODEL_TYPES)}). "
            "For a DeiT/ViT use conversion/convert_deit_to_ast.py; the authors' .pth files go through "
            "conversion/convert_original_ast.py with --dataset."
        )
    return str(path)


# --------------------------------------------------------------------------------------------------------------
# Labels of a new head and atomic output


def check_output_dir(output_dir: str | os.PathLike, overwrite: bool = False) -> Path:
    """The resolved output directory, after refusing a path that is a file, or a non-empty directory without
    `overwrite`. The converters call it before reading anything, so a wrong --output_dir fails at once."""
    output_dir = Path(output_dir).resolve()
    if output_dir.exists() and not output_dir.is_dir():
        raise ConversionError(f"{str(output_dir)!r} exists and is a file; pass a directory path as --output_dir.")
    if output_dir.exists() and any(output_dir.iterdir()) and not overwrite:
        raise ConversionError(f"{str(output_dir)!r} exists and is not empty; pass --overwrite or another directory.")
    return output_dir


@contextmanager
def atomic_directory(output_dir: str | os.PathLike, overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary directory beside `output_dir`; on success it replaces `output_dir` in one step, on any
    failure it is deleted, so no half-written output is ever left behind.

    A process killed mid-write, even by SIGKILL, leaves `output_dir` as it was (the previous directory, or none):
    the staging directory `.NAME.partial-PID-*` is only renamed into place once complete, and an existing output is
    swapped with it atomically (Linux renameat2 RENAME_EXCHANGE; elsewhere two renames, between which the path is
    briefly absent). Staging directories of killed processes are removed by the next write to the same output."""
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
    """Swap two existing paths in one atomic step (Linux renameat2 with RENAME_EXCHANGE). False where the system
    or file system cannot, so that the caller falls back to two renames."""
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


def head_labels(labels_file: str | None = None, num_labels: int | None = None, dataset: str | None = None,
                problem_type: str | None = None) -> dict[str, Any]:
    """The config fields of a new head's labels, from (in this order) a labels file, a count (LABEL_0..), or a
    data-set preset; {} when none is given (the head keeps its labels). The converters' --labels_file,
    --num_labels and --dataset. One output (a single regression target, MSE loss) needs problem_type="regression"
    said explicitly: one label of a classifier would be a model that always predicts it."""
    if labels_file:
        return label_fields(read_labels(labels_file), problem_type)
    if num_labels is not None:
        if num_labels == 1 and problem_type == "regression":
            return {"num_labels": 1}
        if num_labels < 2:
            raise ConversionError(
                f"--num_labels {num_labels}: a classifier needs at least 2 labels"
                + ("; for one regression target (MSE loss) pass --problem_type regression." if num_labels == 1
                   else ", a regression head at least 1 output.")
            )
        return {"num_labels": num_labels}
    if dataset:
        return label_fields(dataset_labels(dataset))
    return {}


def count_parameters(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def summarize(model: ASTForAudioClassification, describe: Callable[[str], None] = print) -> None:
    config = model.config
    f, t = config.patch_grid
    describe(f"parameters: {count_parameters(model):,}; grid {f} x {t} = {f * t} patches "
             f"(num_mel_bins {config.num_mel_bins}, max_length {config.max_length}, strides "
             f"{config.frequency_stride}/{config.time_stride}); {config.num_labels} labels, "
             f"problem_type {config.problem_type}")


# --------------------------------------------------------------------------------------------------------------
# Shared by the command-line converters


def write_checkpoint(model: ASTForAudioClassification, extractor: Any, output_dir: str | os.PathLike,
                     overwrite: bool = False) -> Path:
    """save_pretrained (safetensors weights, config, code, auto_map) + the feature extractor, atomically."""
    with atomic_directory(output_dir, overwrite=overwrite) as staging:
        model.save_pretrained(staging)
        extractor.save_pretrained(staging)
        reloaded = ASTForAudioClassification.from_pretrained(staging)  # what a user will load, checked before rename
        mismatched = [k for k, v in model.state_dict().items() if not torch.equal(v, reloaded.state_dict()[k])]
        if mismatched:
            raise ConversionError(f"The saved weights do not read back identically: {mismatched[:5]}.")
    return Path(output_dir)


def verification_clip(audio: str | None = None) -> tuple[torch.Tensor, str]:
    """A real 16 kHz clip for the final forward pass: an audio file if given (WAV, FLAC, Ogg, MP3, ... mixed to
    mono and resampled to 16 kHz), else espeak-ng speech, else (no espeak-ng) a synthetic chirp, named as such."""
    if audio is None and espeak_available():
        text = "audio spectrogram transformer"
        return torch.from_numpy(espeak_speech(text)), f"espeak-ng speech '{text}'"
    if audio is None:
        seconds = torch.arange(16000) / 16000
        return torch.sin(2 * math.pi * (200 + 1800 * seconds) * seconds) * 0.3, "synthetic 1 s chirp (no espeak-ng)"
    clip = read_audio_file(audio)
    if clip.numel() == 0:
        raise ConversionError(f"--audio {audio!r} holds no samples; pass a non-empty audio file.")
    return clip, str(audio)


def verify(model: ASTForAudioClassification, extractor: Any, audio: str | None = None,
           describe: Callable[[str], None] = print) -> torch.Tensor:
    """Print the architecture summary and run one clip through extractor + model; returns the logits."""
    summarize(model, describe)
    clip, name = verification_clip(audio)
    features = extractor(clip, sampling_rate=16000, return_tensors="pt", truncation=True)  # as the pipeline cuts
    with torch.no_grad():
        logits = model(**features).logits  # (1, num_labels)
    if not torch.isfinite(logits).all():
        raise ConversionError("The converted model gives non-finite logits on a real clip.")
    top = logits[0].topk(min(3, logits.shape[-1]))
    labels = ", ".join(f"{model.config.id2label[int(i)]} {float(v):.2f}" for v, i in zip(*top, strict=True))
    describe(f"forward on {name} ({clip.shape[0] / 16000:.2f} s): input {tuple(features['input_values'].shape)}, "
             f"top logits {labels}")
    return logits


def run_conversion(build: Callable[[], tuple[ASTForAudioClassification, Any]], output_dir: str | os.PathLike,
                   overwrite: bool = False, audio: str | None = None, push_to_hub: str | None = None) -> int:
    """The common tail of the command-line converters: build the model and extractor, verify them on a real
    clip, write them atomically, optionally push; returns the exit status (2 with a one-line error and no output
    directory written)."""

    try:
        check_output_dir(output_dir, overwrite)  # before any reading or converting (checked again when writing)
        model, extractor = build()  # every build path checks the keys: build_model or load_ast_model
        print("weights: no missing or unexpected keys")
        verify(model, extractor, audio)
        write_checkpoint(model, extractor, output_dir, overwrite=overwrite)
    except (ConversionError, ValueError, TypeError, OSError) as error:
        print(f"error: {' '.join(str(error).split())}", file=sys.stderr)  # one line
        return 2
    print(f"saved to {output_dir}")
    if push_to_hub:
        model.push_to_hub(push_to_hub)
        extractor.push_to_hub(push_to_hub)
        print(f"pushed to {push_to_hub}")
    return 0


__all__ = [
    "AST_MODEL_TYPES",
    "ast_directory",
    "atomic_directory",
    "build_model",
    "check_output_dir",
    "count_parameters",
    "download_checkpoint",
    "exchange_paths",
    "head_labels",
    "load_ast_model",
    "load_deit_as_ast",
    "load_image_encoder",
    "load_pretrained_weights",
    "load_state_dict_file",
    "read_image_source",
    "retarget_model",
    "run_conversion",
    "sniff_file_format",
    "summarize",
    "verification_clip",
    "verify",
    "write_checkpoint",
]
