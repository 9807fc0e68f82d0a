"""Checkpoint surgery for the Audio Spectrogram Transformer (Gong, Chung, Glass, Interspeech 2021), as pure
functions: state dicts and configs in, state dicts out.

- ImageNet ViT/DeiT -> AST (the paper's transfer, REFERENCE section 3): channel sum of the patch projection,
  centre cut or bilinear interpolation of the positional grid (time first, then frequency), prefix tokens kept,
  a fresh LayerNorm + Linear head.
- The authors' AST checkpoints (`module.v.*`, `module.mlp_head.*`) -> ast_hf key names.
- Re-targeting a trained AST to another clip length, stride, mel size or label set (the authors' AudioSet ->
  downstream path, without its crash when num_mel_bins != 128).

Every function returns tensors under the Hub key names of transformers' built-in AST (`audio_spectrogram_transformer.
embeddings.cls_token`, ...), which are also the names of `ast_hf.ASTForAudioClassification`. The positional grid is
resampled by `resample_position_embeddings`, the same rule the model applies at run time (with `crop="center"`).
"""

from __future__ import annotations

import ctypes
import errno
import json
import math
import os
import re
import shutil
import sys
import tempfile
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch

from .configuration_ast import ASTConfig
from .modeling_ast import (
    NUM_PREFIX_TOKENS,
    ASTForAudioClassification,
    remove_stale_staging,
    resample_position_embeddings,
)

PREFIX = "audio_spectrogram_transformer."
DATA_DIR = Path(__file__).resolve().parent / "data"

# What the paper's three data sets fix (REFERENCE sections 1 and 4): labels file, normalisation, clip length, loss.
DATASETS: dict[str, dict[str, Any]] = {
    "audioset": dict(labels="audioset_class_labels_indices.csv", mean=-4.2677393, std=4.5689974, max_length=1024,
                     problem_type="multi_label_classification"),
    "esc50": dict(labels="esc50_class_labels_indices.csv", mean=-6.6268077, std=5.358466, max_length=512,
                  problem_type="single_label_classification"),
    "speechcommands": dict(labels="speechcommands_class_labels_indices.csv", mean=-6.845978, std=5.5654526,
                           max_length=128, problem_type="single_label_classification"),
}

# timm / original DeiT block names -> Hub names of one encoder layer (the fused qkv is split separately).
_TIMM_LAYER = {
    "norm1": "layernorm_before",
    "attn.proj": "attention.output.dense",
    "norm2": "layernorm_after",
    "mlp.fc1": "intermediate.dense",
    "mlp.fc2": "output.dense",
}
_TIMM_TOP = {
    "cls_token": "embeddings.cls_token",
    "dist_token": "embeddings.distillation_token",
    "pos_embed": "embeddings.position_embeddings",
    "patch_embed.proj.weight": "embeddings.patch_embeddings.projection.weight",
    "patch_embed.proj.bias": "embeddings.patch_embeddings.projection.bias",
    "norm.weight": "layernorm.weight",
    "norm.bias": "layernorm.bias",
}
# Classification heads of the image models: dropped, AST gets a new head for its labels.
_IMAGE_HEADS = ("head.", "head_dist.", "fc_norm.", "cls_classifier.", "distillation_classifier.", "classifier.",
                "pooler.")


class ConversionError(ValueError):
    """A checkpoint that cannot be converted; the message says what was found and what is expected."""


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


def unwrap_state_dict(loaded: Any, source: str = "checkpoint") -> dict[str, torch.Tensor]:
    """The tensor dict inside a loaded checkpoint: itself, or its "model" / "state_dict" / "module" entry."""
    for _ in range(3):
        if isinstance(loaded, Mapping) and loaded and all(isinstance(v, torch.Tensor) for v in loaded.values()):
            odd = [k for k in loaded if not isinstance(k, str)]
            if odd:
                raise ConversionError(f"{source} holds a dict of tensors whose keys are not parameter names (e.g. "
                                      f"{odd[0]!r} of type {type(odd[0]).__name__}); expected a state dict such as "
                                      "model.state_dict().")
            return dict(loaded)
        if isinstance(loaded, Mapping):
            inner = next((loaded[k] for k in ("model", "state_dict", "module", "model_state_dict") if k in loaded),
                         None)
            if inner is not None:
                loaded = inner
                continue
        break
    found = sorted(map(str, loaded))[:8] if isinstance(loaded, Mapping) else type(loaded).__name__
    raise ConversionError(f"{source} holds no state dict of tensors (found {found}); expected a dict of tensors, "
                          "optionally wrapped as {'model': ...} or {'state_dict': ...}.")


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
# Source formats -> one canonical ViT state dict (Hub names without a model prefix)


# What each layout of detect_format is, for messages.
FORMAT_NAMES = {
    "original_ast": "the authors' AST (module.v.*, module.mlp_head.*)",
    "hf_ast": "a transformers / ast_hf AST state dict (audio_spectrogram_transformer.*)",
    "timm": "a timm / original DeiT state dict (pos_embed, blocks.N.attn.qkv)",
    "hf_vit": "a transformers DeiT/ViT state dict (embeddings.patch_embeddings.*, encoder.layer.N.* on disk or "
              "layers.N.* as transformers 5 names them in memory)",
}


def detect_format(state_dict: Mapping[str, torch.Tensor]) -> str:
    """"timm" (timm / original DeiT files), "original_ast" (the authors' AST), "hf_vit" (transformers
    DeiT/ViT, Hub names or transformers 5 in-memory names), "hf_ast" (transformers' or ast_hf's AST). Raises a
    ConversionError that lists the keys found."""
    keys = set(state_dict)
    if any(k.startswith("module.v.") for k in keys):
        return "original_ast"
    if any(k.startswith(PREFIX) for k in keys):
        return "hf_ast"
    if "pos_embed" in keys and "patch_embed.proj.weight" in keys:
        return "timm"
    if any(re.match(r"^((deit|vit)\.)?embeddings\.patch_embeddings\.projection\.weight$", k) for k in keys):
        return "hf_vit"
    raise ConversionError(
        f"Unrecognised checkpoint: {len(keys)} tensors, e.g. {sorted(keys)[:6]}. Expected a timm/DeiT state dict "
        "(pos_embed, patch_embed.proj.weight, blocks.N.attn.qkv.weight), a transformers DeiT/ViT model "
        "(embeddings.patch_embeddings.projection.weight), the authors' AST (module.v.*) or a transformers AST."
    )


def timm_to_canonical(state_dict: Mapping[str, torch.Tensor], prefix: str = "") -> dict[str, torch.Tensor]:
    """timm / original-DeiT keys (fused qkv) -> Hub ViT names; classification heads are dropped."""
    canonical: dict[str, torch.Tensor] = {}
    for key, value in state_dict.items():
        if not key.startswith(prefix):
            continue
        key = key[len(prefix):]
        if key in _TIMM_TOP:
            canonical[_TIMM_TOP[key]] = value
            continue
        match = re.match(r"^blocks\.(\d+)\.(.+)\.(weight|bias)$", key)
        if match is None:
            if not key.startswith(_IMAGE_HEADS):
                raise ConversionError(f"Unexpected tensor {prefix + key!r} {tuple(value.shape)} in a timm/DeiT "
                                      "checkpoint; it has no place in an AST.")
            continue
        layer, name, kind = match.groups()
        base = f"encoder.layer.{layer}."
        if name == "attn.qkv":
            query, key_, value_ = value.chunk(3, dim=0)  # rows: (3 * D, D) = [q; k; v]
            for part, tensor in (("query", query), ("key", key_), ("value", value_)):
                canonical[f"{base}attention.attention.{part}.{kind}"] = tensor.clone()
        elif name in _TIMM_LAYER:
            canonical[f"{base}{_TIMM_LAYER[name]}.{kind}"] = value
        else:
            raise ConversionError(f"Unexpected tensor {prefix + key!r} in block {layer} of a timm/DeiT checkpoint.")
    return canonical


# transformers 5 renames DeiT/ViT layers in memory (`model.state_dict()`, so also `torch.save(model.state_dict())`)
# and back to the Hub names on save_pretrained; these undo the in-memory names, applied in order to one key.
_TRANSFORMERS5_VIT = (
    (r"^layers\.(\d+)\.", r"encoder.layer.\1."),
    (r"\.attention\.q_proj\.", ".attention.attention.query."),
    (r"\.attention\.k_proj\.", ".attention.attention.key."),
    (r"\.attention\.v_proj\.", ".attention.attention.value."),
    (r"\.attention\.o_proj\.", ".attention.output.dense."),
    (r"\.mlp\.fc1\.", ".intermediate.dense."),
    (r"\.mlp\.fc2\.", ".output.dense."),
)
# Every tensor of a ViT/DeiT encoder under the Hub names.
_CANONICAL_KEY = re.compile(
    r"^(embeddings\.(cls_token|distillation_token|position_embeddings|patch_embeddings\.projection\.(weight|bias))"
    r"|encoder\.layer\.\d+\.(attention\.attention\.(query|key|value)|attention\.output\.dense|intermediate\.dense"
    r"|output\.dense|layernorm_before|layernorm_after)\.(weight|bias)|layernorm\.(weight|bias))$"
)


def hf_vit_to_canonical(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """transformers DeiT/ViT keys (with or without the `deit.` / `vit.` prefix; Hub names as in model.safetensors,
    or transformers 5's in-memory names `layers.N.attention.q_proj` ... as in `torch.save(model.state_dict())`)
    -> Hub ViT names. Image heads, pooler and mask token are dropped; any other tensor is refused by name."""
    canonical = {}
    for original, value in state_dict.items():
        key = re.sub(r"^(deit|vit)\.", "", original)
        if key.startswith(_IMAGE_HEADS) or key.startswith("embeddings.mask_token"):
            continue
        for pattern, replacement in _TRANSFORMERS5_VIT:
            key = re.sub(pattern, replacement, key)
        if not _CANONICAL_KEY.match(key):
            raise ConversionError(f"Unexpected tensor {original!r} {tuple(value.shape)} in a transformers DeiT/ViT "
                                  "checkpoint; it has no place in an AST encoder.")
        canonical[key] = value
    return canonical


def canonical_architecture(canonical: Mapping[str, torch.Tensor]) -> dict[str, Any]:
    """hidden_size, num_hidden_layers, intermediate_size, qkv_bias, prefix tokens and (f, t) grid of the source."""
    for required in ("embeddings.cls_token", "embeddings.position_embeddings",
                     "embeddings.patch_embeddings.projection.weight", "layernorm.weight"):
        if required not in canonical:
            raise ConversionError(f"The checkpoint has no {required!r}; it is not a complete ViT/DeiT encoder.")
    hidden = canonical["embeddings.cls_token"].shape[-1]
    layers = sorted({int(m.group(1)) for k in canonical if (m := re.match(r"^encoder\.layer\.(\d+)\.", k))})
    if not layers:
        raise ConversionError("The checkpoint has embeddings but no encoder layers (no encoder.layer.N.*, "
                              "layers.N.* or blocks.N.* tensors); it is not a complete ViT/DeiT encoder.")
    if layers != list(range(len(layers))):
        raise ConversionError(f"Encoder layers {layers[:8]} are not numbered 0..N-1; the checkpoint is damaged.")
    prefix_tokens = 2 if "embeddings.distillation_token" in canonical else 1
    positions = canonical["embeddings.position_embeddings"].shape[1] - prefix_tokens
    side = math.isqrt(positions)
    if side * side != positions:
        raise ConversionError(f"The source has {positions} patch positions, not a square grid; pass a square "
                              "ImageNet model (224/16 = 14 or 384/16 = 24 patches a side).")
    return dict(hidden_size=hidden, num_hidden_layers=len(layers),
                intermediate_size=canonical["encoder.layer.0.intermediate.dense.weight"].shape[0],
                qkv_bias="encoder.layer.0.attention.attention.query.bias" in canonical,
                patch_size=canonical["embeddings.patch_embeddings.projection.weight"].shape[-1],
                prefix_tokens=prefix_tokens, grid=(side, side))


def default_heads(hidden_size: int) -> int:
    """Heads of a checkpoint that does not say: ViT/DeiT use 64-wide heads (tiny 3, small 6, base 12)."""
    return max(1, hidden_size // 64)


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
    if source.endswith((".pth", ".pt", ".bin", ".safetensors")) or "/" not in source or source.count("/") > 1:
        raise ConversionError(f"{source!r} is neither an existing file nor directory, nor a Hub id (owner/name).")
    from huggingface_hub import snapshot_download

    try:
        folder = snapshot_download(source, cache_dir=cache_dir,
                                   allow_patterns=["config.json", "*.safetensors", "*.bin", "*.json"])
    except Exception as error:  # the Hub client raises many types (offline, 404, auth)
        raise ConversionError(
            f"Could not fetch {source!r} from the Hub ({type(error).__name__}: {str(error)[:200]}). Download it "
            "elsewhere and pass the local path."
        ) from error
    return read_image_source(folder)


def load_image_encoder(source: str, num_attention_heads: int | None = None, layer_norm_eps: float | None = None,
                       cache_dir: str | None = None, describe: Callable[[str], None] = print
                       ) -> tuple[dict[str, torch.Tensor], dict[str, Any], tuple[int, int]]:
    """A DeiT/ViT source -> (canonical encoder weights, the ASTConfig architecture fields, source (f, t) grid).

    Heads come from the source config, else `num_attention_heads`, else hidden_size / 64; the layer-norm eps from
    the source config, else timm's 1e-6 (`layer_norm_eps` overrides)."""
    state_dict, source_config, description = read_image_source(source, cache_dir)
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


def deit_to_ast(source: str, seed: int | None = 0, channel_reduction: str = "sum",
                num_attention_heads: int | None = None, layer_norm_eps: float | None = None,
                cache_dir: str | None = None, describe: Callable[[str], None] = print,
                **config_fields: Any) -> ASTForAudioClassification:
    """Convert a DeiT/ViT source into an ASTForAudioClassification; `config_fields` are the AST's own
    (max_length, num_mel_bins, strides, labels, problem_type, ...)."""
    canonical, fields, source_grid = load_image_encoder(source, num_attention_heads, layer_norm_eps, cache_dir,
                                                        describe)
    config = ASTConfig(**{**fields, **config_fields})
    weights = adapt_image_encoder(canonical, source_grid, config, channel_reduction)
    weights.update(new_head(config, seed=seed))
    return build_model(config, weights)


# --------------------------------------------------------------------------------------------------------------
# The DeiT -> AST adaptation


def adapt_image_encoder(canonical: Mapping[str, torch.Tensor], source_grid: tuple[int, int], config: ASTConfig,
                        channel_reduction: str = "sum") -> dict[str, torch.Tensor]:
    """ViT/DeiT encoder (Hub names, no prefix) -> AST encoder tensors with the `audio_spectrogram_transformer.`
    prefix, following REFERENCE section 3:

    1. patch projection (D, 3, p, p) -> (D, 1, p, p) by summing (the released checkpoints) or averaging (the
       paper's text) the RGB channels; the bias is copied; the stride is a config matter.
    2. positional grid (source f x t, rows = frequency) -> config.patch_grid: centre cut or bilinear
       interpolation, time first, then frequency (`resample_position_embeddings(crop="center")`).
    3. cls and distillation tokens copied with their position rows. A one-token source (ViT, plain DeiT) has no
       distillation token: the cls token and its position row are duplicated, so the model's average of the two
       equals the cls output at the start of fine-tuning.
    """
    if channel_reduction not in ("sum", "mean"):
        raise ConversionError(f"channel_reduction={channel_reduction!r} must be 'sum' or 'mean'.")
    adapted = dict(canonical)
    weight = adapted["embeddings.patch_embeddings.projection.weight"]  # (D, C, p, p)
    if weight.shape[-1] != config.patch_size or weight.shape[-2] != config.patch_size:
        raise ConversionError(f"The source patches are {tuple(weight.shape[-2:])}, the config's patch_size is "
                              f"{config.patch_size}; AST keeps the source patch size.")
    reduce = torch.sum if channel_reduction == "sum" else torch.mean
    adapted["embeddings.patch_embeddings.projection.weight"] = reduce(weight.float(), dim=1, keepdim=True).to(
        weight.dtype)  # (D, 1, p, p)

    positions = adapted["embeddings.position_embeddings"]  # (1, P + f*t, D)
    if "embeddings.distillation_token" not in adapted:
        adapted["embeddings.distillation_token"] = adapted["embeddings.cls_token"].clone()
        positions = torch.cat([positions[:, :1], positions[:, :1], positions[:, 1:]], dim=1)
    adapted["embeddings.position_embeddings"] = resample_position_embeddings(
        positions, source_grid, config.patch_grid, crop="center", num_prefix_tokens=NUM_PREFIX_TOKENS).contiguous()
    return {PREFIX + key: value for key, value in adapted.items()}


def new_head(config: ASTConfig, seed: int | None = None) -> dict[str, torch.Tensor]:
    """A freshly initialised LayerNorm + Linear head (truncated normal, std = initializer_range; zero bias)."""
    generator = torch.Generator().manual_seed(seed) if seed is not None else None
    weight = torch.empty(config.num_labels, config.hidden_size)
    torch.nn.init.trunc_normal_(weight, std=config.initializer_range, generator=generator)
    return {"classifier.layernorm.weight": torch.ones(config.hidden_size),
            "classifier.layernorm.bias": torch.zeros(config.hidden_size),
            "classifier.dense.weight": weight, "classifier.dense.bias": torch.zeros(config.num_labels)}


def original_ast_to_hf(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The authors' AST (`module.v.*` DeiT keys, `module.mlp_head.{0,1}`) -> ast_hf / Hub key names; the unused
    DeiT heads (`module.v.head*`) are dropped."""
    encoder = timm_to_canonical(state_dict, prefix="module.v.")
    converted = {PREFIX + key: value for key, value in encoder.items()}
    heads = {"module.mlp_head.0.": "classifier.layernorm.", "module.mlp_head.1.": "classifier.dense."}
    for key, value in state_dict.items():
        for old, new in heads.items():
            if key.startswith(old):
                converted[new + key[len(old):]] = value
    unknown = [k for k in state_dict if not k.startswith(("module.v.", "module.mlp_head.0.", "module.mlp_head.1."))]
    if unknown:
        raise ConversionError(f"Unexpected tensors in the authors' checkpoint: {unknown[:5]}.")
    if "classifier.dense.weight" not in converted:
        raise ConversionError("The authors' checkpoint has no module.mlp_head.1.weight (the classification head).")
    return converted


def original_ast_grid(state_dict: Mapping[str, torch.Tensor], num_mel_bins: int, frequency_stride: int,
                      time_stride: int, patch_size: int = 16) -> tuple[int, int]:
    """(f, t) grid of an authors' checkpoint, read from its positional embedding and the frequency settings."""
    positions = state_dict["module.v.pos_embed"].shape[1] - NUM_PREFIX_TOKENS
    f = (num_mel_bins - patch_size) // frequency_stride + 1
    if positions % f:
        raise ConversionError(
            f"The checkpoint's {positions} patch positions do not split into {f} frequency rows "
            f"(num_mel_bins={num_mel_bins}, frequency_stride={frequency_stride}); pass the strides it was trained "
            "with."
        )
    return f, positions // f


# --------------------------------------------------------------------------------------------------------------
# Re-targeting a trained AST


def retarget_state_dict(state_dict: Mapping[str, torch.Tensor], old_config: ASTConfig,
                        new_config: ASTConfig, seed: int | None = None) -> dict[str, torch.Tensor]:
    """Adapt a trained AST to `new_config` (max_length, strides, num_mel_bins, labels), as the authors move their
    AudioSet model to ESC-50 or Speech Commands: the positional grid is centre-cut or bilinearly interpolated
    from the old grid to the new one (time first), the patch projection is kept (its stride is a config matter),
    and the head is kept when the labels are the same and replaced by a fresh one otherwise."""
    for field in ("hidden_size", "num_hidden_layers", "intermediate_size", "patch_size"):
        if getattr(old_config, field) != getattr(new_config, field):
            raise ConversionError(f"{field} differs ({getattr(old_config, field)} vs {getattr(new_config, field)}): "
                                  "re-targeting keeps the encoder; only lengths, strides, mel bins and labels change.")
    adapted = dict(state_dict)
    key = PREFIX + "embeddings.position_embeddings"
    adapted[key] = resample_position_embeddings(state_dict[key], old_config.patch_grid, new_config.patch_grid,
                                                crop="center").contiguous()
    if not same_labels(old_config, new_config):
        adapted = {k: v for k, v in adapted.items() if not k.startswith("classifier.")}
        adapted.update(new_head(new_config, seed))
    return adapted


def same_labels(a: ASTConfig, b: ASTConfig) -> bool:
    return a.num_labels == b.num_labels and dict(a.id2label) == dict(b.id2label)


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


AST_MODEL_TYPES = ("ast_hf", "audio-spectrogram-transformer")


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
        if source.count("/") != 1 or source.endswith((".pth", ".pt", ".bin", ".safetensors")):
            raise ConversionError(f"{source!r} is neither an existing directory nor a Hub id (owner/name).")
        from huggingface_hub import snapshot_download

        try:
            path = Path(snapshot_download(source, cache_dir=cache_dir))
        except Exception as error:  # offline, 404, auth: the Hub client raises many types
            raise ConversionError(f"{source!r} is not a local directory and could not be fetched from the Hub "
                                  f"({type(error).__name__}); download it elsewhere and pass the local path."
                                  ) from error
    config_file = path / "config.json"
    if not config_file.is_file():
        raise ConversionError(f"{source!r} has no config.json (found {sorted(p.name for p in path.iterdir())[:10]});"
                              " pass a directory written by save_pretrained.")
    try:
        model_type = json.loads(config_file.read_text(encoding="utf-8")).get("model_type")
    except (ValueError, AttributeError) as error:
        raise ConversionError(f"{str(config_file)!r} is not a JSON object ({error}).") from error
    if model_type not in AST_MODEL_TYPES:
        raise ConversionError(
            f"{source!r} holds a {model_type!r} model (config.json), not an AST ({' or '.join(AST_MODEL_TYPES)}). "
            "For a DeiT/ViT use conversion/convert_deit_to_ast.py; the authors' .pth files go through "
            "conversion/convert_original_ast.py with --dataset."
        )
    return str(path)


# --------------------------------------------------------------------------------------------------------------
# Labels and atomic output


def read_labels(path: str | os.PathLike) -> list[str]:
    """Labels from a CSV with a `display_name` (or `label`/`name`) column ordered by `index`, like the files in
    ast_hf/data, or from a text file with one label a line."""
    import csv

    path = Path(path)
    if not path.is_file():
        raise ConversionError(f"Labels file {str(path)!r} does not exist.")
    text = path.read_text(encoding="utf-8")
    lines = [line for line in text.splitlines() if line.strip()]
    if not lines:
        raise ConversionError(f"Labels file {str(path)!r} is empty.")
    if path.suffix == ".csv":
        rows = list(csv.DictReader(lines))
        column = next((c for c in ("display_name", "label", "name") if c in rows[0]), None)
        if column is None:
            raise ConversionError(f"{str(path)!r} has columns {list(rows[0])}; expected display_name, label or name.")
        if "index" in rows[0]:
            rows.sort(key=lambda row: int(row["index"]))
        return [row[column] for row in rows]
    return [line.strip() for line in lines]


def dataset_labels(dataset: str) -> list[str]:
    return read_labels(DATA_DIR / dataset_settings(dataset)["labels"])


def dataset_settings(dataset: str) -> dict[str, Any]:
    if dataset not in DATASETS:
        raise ConversionError(f"dataset={dataset!r} is not one of {sorted(DATASETS)}.")
    return DATASETS[dataset]


def label_fields(labels: list[str]) -> dict[str, Any]:
    """id2label/label2id of a classification head; at least two unique labels (one label would make
    transformers' loss a regression, and every prediction that one label with score 1)."""
    if len(labels) < 2:
        raise ConversionError(f"A classifier needs at least two labels; got {len(labels)}: {labels}. Check the "
                              "labels file (one label a line) or the data's label column.")
    if len(set(labels)) != len(labels):
        duplicates = sorted({label for label in labels if labels.count(label) > 1})[:5]
        raise ConversionError(f"Labels must be unique; repeated: {duplicates}.")
    return {"id2label": dict(enumerate(labels)), "label2id": {label: i for i, label in enumerate(labels)}}


@contextmanager
def atomic_directory(output_dir: str | os.PathLike, overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary directory beside `output_dir`; on success it replaces `output_dir` in one step, on any
    failure it is deleted, so no half-written output is ever left behind.

    A process killed mid-write, even by SIGKILL, leaves `output_dir` as it was (the previous directory, or none):
    the staging directory `.NAME.partial-PID-*` is only renamed into place once complete, and an existing output is
    swapped with it atomically (Linux renameat2 RENAME_EXCHANGE; elsewhere two renames, between which the path is
    briefly absent). Staging directories of killed processes are removed by the next write to the same output."""
    output_dir = Path(output_dir).resolve()
    if output_dir.exists() and not output_dir.is_dir():
        raise ConversionError(f"{str(output_dir)!r} exists and is a file; pass a directory path as --output_dir.")
    if output_dir.exists() and any(output_dir.iterdir()) and not overwrite:
        raise ConversionError(f"{str(output_dir)!r} exists and is not empty; pass --overwrite or another directory.")
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
    """A real 16 kHz clip for the final forward pass: an audio file if given (WAV, FLAC, Ogg, MP3, ... read with
    soundfile, else torchaudio; mixed to mono and resampled to 16 kHz), else espeak-ng speech, else (no espeak-ng)
    a synthetic chirp, named as such."""
    import subprocess

    if audio is None and shutil.which("espeak-ng"):
        with tempfile.TemporaryDirectory() as folder:
            audio_path = os.path.join(folder, "speech.wav")
            subprocess.run(["espeak-ng", "-w", audio_path, "audio spectrogram transformer"], check=True,
                           capture_output=True)
            clip, _ = verification_clip(audio_path)
        return clip, "espeak-ng speech 'audio spectrogram transformer'"
    if audio is None:
        seconds = torch.arange(16000) / 16000
        return torch.sin(2 * math.pi * (200 + 1800 * seconds) * seconds) * 0.3, "synthetic 1 s chirp (no espeak-ng)"
    clip = read_audio_file(audio)
    if clip.numel() == 0:
        raise ConversionError(f"--audio {audio!r} holds no samples; pass a non-empty audio file.")
    return clip, str(audio)


def read_audio_file(path: str | os.PathLike, sampling_rate: int = 16000) -> torch.Tensor:
    """The samples of an audio file as a mono float32 tensor at `sampling_rate`; a ConversionError that names the
    file and the decoders tried when it cannot be read."""
    import torchaudio

    path = str(path)
    if not os.path.isfile(path):
        raise ConversionError(f"Audio file {path!r} does not exist.")
    errors = []
    try:
        import soundfile

        samples, rate = soundfile.read(path, dtype="float32", always_2d=True)  # (N, channels)
        clip = torch.from_numpy(samples.mean(axis=1))
    except (ImportError, RuntimeError, ValueError, TypeError) as error:  # soundfile's errors are RuntimeErrors
        errors.append(f"soundfile: {' '.join(str(error).split())[:120]}")
        try:
            waveform, rate = torchaudio.load(path)  # (channels, N); needs torchcodec and FFmpeg
            clip = waveform.float().mean(dim=0)
        except Exception as second:  # torchaudio's backends raise many types on a file they cannot decode
            errors.append(f"torchaudio: {' '.join(str(second).split())[:120]}")
            raise ConversionError(f"Could not decode {path!r} as audio ({'; '.join(errors)}). Pass a WAV, FLAC, "
                                  "Ogg or MP3 file.") from second
    return torchaudio.functional.resample(clip, rate, sampling_rate) if rate != sampling_rate else clip


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
    "ConversionError",
    "DATASETS",
    "FORMAT_NAMES",
    "adapt_image_encoder",
    "ast_directory",
    "atomic_directory",
    "build_model",
    "canonical_architecture",
    "dataset_labels",
    "dataset_settings",
    "default_heads",
    "deit_to_ast",
    "detect_format",
    "exchange_paths",
    "hf_vit_to_canonical",
    "load_ast_model",
    "load_image_encoder",
    "load_pretrained_weights",
    "load_state_dict_file",
    "new_head",
    "original_ast_grid",
    "original_ast_to_hf",
    "read_audio_file",
    "read_image_source",
    "read_labels",
    "retarget_model",
    "retarget_state_dict",
    "run_conversion",
    "sniff_file_format",
    "timm_to_canonical",
    "unwrap_state_dict",
    "verify",
    "write_checkpoint",
]
