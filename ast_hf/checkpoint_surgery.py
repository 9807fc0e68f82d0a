"""Checkpoint surgery for the Audio Spectrogram Transformer (Gong, Chung, Glass, Interspeech 2021): pure
functions, state dicts and configs in, state dicts out; no files, no Hub, no processes (those are in
`ast_hf.convert`, which reads and writes checkpoints around these functions).

- Source layouts -> one canonical ViT state dict: timm / original DeiT (fused qkv), transformers DeiT/ViT (Hub
  names and transformers 5 names), the authors' AST (`module.v.*`, `module.mlp_head.*`).
- ImageNet ViT/DeiT -> AST (the paper's transfer): channel sum of the patch projection,
  centre cut or bilinear interpolation of the positional grid (time first, then frequency), prefix tokens kept,
  a fresh LayerNorm + Linear head.
- Re-targeting a trained AST to another clip length, stride, mel size or label set (the authors' AudioSet ->
  downstream path, without its crash when num_mel_bins != 128).

Every function returns tensors under the Hub key names of transformers' built-in AST (`audio_spectrogram_transformer.
embeddings.cls_token`, ...), which are also the names of `ast_hf.ASTForAudioClassification`. The positional grid is
resampled by `resample_position_embeddings`, the same rule the model applies at run time (with `crop="center"`).
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from typing import Any

import torch

from .configuration_ast import ASTConfig
from .patch_grid import NUM_PREFIX_TOKENS, resample_position_embeddings

PREFIX = "audio_spectrogram_transformer."


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


# What each layout of detect_format is, for messages.
FORMAT_NAMES = {
    "original_ast": "the authors' AST (module.v.*, module.mlp_head.*)",
    "ssast": "the authors' SSAST pretraining checkpoint (module.v.*, module.cpredlayer.*, module.gpredlayer.*, "
             "module.mask_embed)",
    "hf_ast": "a transformers / ast_hf AST state dict (audio_spectrogram_transformer.*)",
    "timm": "a timm / original DeiT state dict (pos_embed, blocks.N.attn.qkv)",
    "hf_vit": "a transformers DeiT/ViT state dict (embeddings.patch_embeddings.*, encoder.layer.N.* on disk or "
              "layers.N.* as transformers 5 names them in memory)",
}


# Swin's hierarchical stages (timm `layers.N.blocks.M.*`, transformers `encoder.layers.N.blocks.M.*`) and its
# relative position bias: a window-attention model whose weights have no place in a ViT-shaped AST.
_SWIN_KEY = re.compile(r"(^|\.)layers\.\d+\.blocks\.\d+\.|relative_position_bias_table")
AST_SOURCE_HINT = "AST needs a ViT/DeiT checkpoint (e.g. facebook/deit-base-distilled-patch16-384)"


def swin_message(found: str) -> str:
    return f"{found}: this is a Swin model; {AST_SOURCE_HINT}."


def detect_format(state_dict: Mapping[str, torch.Tensor]) -> str:
    """"timm" (timm / original DeiT files), "original_ast" (the authors' AST), "hf_vit" (transformers
    DeiT/ViT, Hub names or transformers 5 in-memory names), "hf_ast" (transformers' or ast_hf's AST). Raises a
    ConversionError that lists the keys found, or that names a Swin model as such."""
    keys = set(state_dict)
    swin = sorted(k for k in keys if _SWIN_KEY.search(k))
    if swin:
        raise ConversionError(swin_message(f"The checkpoint holds Swin tensors (e.g. {swin[0]!r})"))
    if any(k.startswith("module.v.") for k in keys):
        return "ssast" if keys & set(_SSAST_EXTRAS) else "original_ast"
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


def encoder_architecture(canonical: Mapping[str, torch.Tensor]) -> dict[str, Any]:
    """hidden_size, num_hidden_layers, intermediate_size, qkv_bias, patch_size and prefix tokens of a canonical
    encoder (Hub names without a model prefix), read from the tensors' names and shapes."""
    for required in ("embeddings.cls_token", "embeddings.position_embeddings",
                     "embeddings.patch_embeddings.projection.weight", "layernorm.weight"):
        if required not in canonical:
            raise ConversionError(f"The checkpoint has no {required!r}; it is not a complete ViT/DeiT encoder.")
    layers = sorted({int(m.group(1)) for k in canonical if (m := re.match(r"^encoder\.layer\.(\d+)\.", k))})
    if not layers:
        raise ConversionError("The checkpoint has embeddings but no encoder layers (no encoder.layer.N.*, "
                              "layers.N.* or blocks.N.* tensors); it is not a complete ViT/DeiT encoder.")
    if layers != list(range(len(layers))):
        raise ConversionError(f"Encoder layers {layers[:8]} are not numbered 0..N-1; the checkpoint is damaged.")
    return dict(hidden_size=canonical["embeddings.cls_token"].shape[-1], num_hidden_layers=len(layers),
                intermediate_size=canonical["encoder.layer.0.intermediate.dense.weight"].shape[0],
                qkv_bias="encoder.layer.0.attention.attention.query.bias" in canonical,
                patch_size=canonical["embeddings.patch_embeddings.projection.weight"].shape[-1],
                prefix_tokens=2 if "embeddings.distillation_token" in canonical else 1)


def canonical_architecture(canonical: Mapping[str, torch.Tensor]) -> dict[str, Any]:
    """`encoder_architecture` of an ImageNet ViT/DeiT plus its square (f, t) patch grid."""
    arch = encoder_architecture(canonical)
    positions = canonical["embeddings.position_embeddings"].shape[1] - arch["prefix_tokens"]
    side = math.isqrt(positions)
    if side * side != positions:
        raise ConversionError(f"The source has {positions} patch positions, not a square grid; pass a square "
                              "ImageNet model (224/16 = 14 or 384/16 = 24 patches a side).")
    return dict(arch, grid=(side, side))


def default_heads(hidden_size: int) -> int:
    """Heads of a checkpoint that does not say: ViT/DeiT use 64-wide heads (tiny 3, small 6, base 12)."""
    return max(1, hidden_size // 64)


def adapt_image_encoder(canonical: Mapping[str, torch.Tensor], source_grid: tuple[int, int], config: ASTConfig,
                        channel_reduction: str = "sum") -> dict[str, torch.Tensor]:
    """ViT/DeiT encoder (Hub names, no prefix) -> AST encoder tensors with the `audio_spectrogram_transformer.`
    prefix, following the paper:

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
    if tuple(weight.shape[-2:]) != config.patch_shape:
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


# The tensors of an SSAST pretraining checkpoint besides its encoder (module.v.*), by their ast_hf names; the two
# sizes are plain values (the pretraining input's mel bins and frames).
_SSAST_EXTRAS = {
    "module.mask_embed": "audio_spectrogram_transformer.embeddings.mask_token",
    "module.cpredlayer.0.weight": "discriminative_head.dense.weight",
    "module.cpredlayer.0.bias": "discriminative_head.dense.bias",
    "module.cpredlayer.2.weight": "discriminative_head.projection.weight",
    "module.cpredlayer.2.bias": "discriminative_head.projection.bias",
    "module.gpredlayer.0.weight": "generative_head.dense.weight",
    "module.gpredlayer.0.bias": "generative_head.dense.bias",
    "module.gpredlayer.2.weight": "generative_head.projection.weight",
    "module.gpredlayer.2.bias": "generative_head.projection.bias",
    "module.p_input_fdim": None,
    "module.p_input_tdim": None,
}


def ssast_to_hf(state_dict: Mapping[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """The authors' SSAST pretraining checkpoint (YuanGongND/ssast: `module.v.*` a timm DeiT with fused qkv,
    `module.cpredlayer` / `module.gpredlayer` the discriminative and generative heads, `module.mask_embed`, and the
    pretraining input size `module.p_input_fdim` / `p_input_tdim`) -> `ASTForPreTraining` weights and config
    fields.

    The patch shape is read from the projection ((16, 16) for the patch models, (128, 2) for the frame models) and
    the strides equal it (the authors pretrain without overlap); the grid from the input size. A checkpoint
    without the distillation token (`base384_nokd`) is refused: ast_hf's encoder has both prefix tokens.

    Args:
        state_dict: The checkpoint's tensors (`torch.load(path, weights_only=True)`).

    Returns:
        The weights under ast_hf's names, and the config fields (sizes, patch shape, strides, num_mel_bins,
            max_length, masking, pooling "mean").

    Raises:
        ConversionError: When a tensor of the SSAST heads or encoder is missing, or one is not SSAST's.
    """
    missing = sorted(k for k in _SSAST_EXTRAS if k not in state_dict)
    if missing:
        raise ConversionError(f"The SSAST checkpoint lacks {missing[:5]}; it is not a complete SSAST pretraining "
                              "checkpoint (a fine-tuned SSAST model has module.mlp_head.*: use "
                              "conversion/convert_original_ast.py).")
    if "module.v.dist_token" not in state_dict:
        raise ConversionError("The SSAST checkpoint has no module.v.dist_token (a base384_nokd model, one prefix "
                              "token); ast_hf's encoder has the CLS and distillation tokens of DeiT, so it cannot "
                              "hold this model unchanged.")
    unknown = [k for k in state_dict if not k.startswith("module.v.") and k not in _SSAST_EXTRAS]
    if unknown:
        raise ConversionError(f"Unexpected tensors in the SSAST checkpoint: {unknown[:5]}.")
    encoder = timm_to_canonical(state_dict, prefix="module.v.")
    weights = {PREFIX + key: value for key, value in encoder.items()}
    weights.update({new: state_dict[old] for old, new in _SSAST_EXTRAS.items() if new is not None})
    arch = encoder_architecture(encoder)
    projection = encoder["embeddings.patch_embeddings.projection.weight"]  # (D, 1, patch_f, patch_t)
    patch_f, patch_t = (int(side) for side in projection.shape[-2:])
    num_mel_bins, max_length = int(state_dict["module.p_input_fdim"]), int(state_dict["module.p_input_tdim"])
    grid = (num_mel_bins // patch_f, max_length // patch_t)
    positions = encoder["embeddings.position_embeddings"].shape[1] - NUM_PREFIX_TOKENS
    if positions != grid[0] * grid[1]:
        raise ConversionError(f"The SSAST checkpoint's {positions} positions do not fit its {num_mel_bins} x "
                              f"{max_length} input cut into {patch_f} x {patch_t} patches ({grid[0]} x {grid[1]}).")
    fields = dict(hidden_size=arch["hidden_size"], num_hidden_layers=arch["num_hidden_layers"],
                  num_attention_heads=default_heads(arch["hidden_size"]), intermediate_size=arch["intermediate_size"],
                  qkv_bias=arch["qkv_bias"], patch_size=patch_f if patch_f == patch_t else [patch_f, patch_t],
                  frequency_stride=patch_f, time_stride=patch_t, num_mel_bins=num_mel_bins, max_length=max_length,
                  layer_norm_eps=1e-6, masking="cluster" if patch_f == patch_t else "random",
                  mask_patches=min(400, grid[0] * grid[1]), pooling="mean")
    return weights, fields


def original_ast_grid(state_dict: Mapping[str, torch.Tensor], num_mel_bins: int, frequency_stride: int,
                      time_stride: int, patch_size: int = 16) -> tuple[int, int]:
    """(f, t) grid of an authors' checkpoint, read from its positional embedding and the frequency settings."""
    positions = state_dict["module.v.pos_embed"].shape[1] - NUM_PREFIX_TOKENS
    geometry = ASTConfig(num_mel_bins=num_mel_bins, patch_size=patch_size, frequency_stride=frequency_stride,
                         time_stride=time_stride)
    f = geometry.patch_grid_for(patch_size)[0]  # frequency rows do not depend on the number of frames
    if positions % f:
        raise ConversionError(
            f"The checkpoint's {positions} patch positions do not split into {f} frequency rows "
            f"(num_mel_bins={num_mel_bins}, frequency_stride={frequency_stride}); pass the strides it was trained "
            "with."
        )
    return f, positions // f


def retarget_state_dict(state_dict: Mapping[str, torch.Tensor], old_config: ASTConfig,
                        new_config: ASTConfig, seed: int | None = None) -> dict[str, torch.Tensor]:
    """Adapt a trained AST to `new_config` (max_length, strides, num_mel_bins, labels), as the authors move their
    AudioSet model to ESC-50 or Speech Commands: the positional grid is centre-cut or bilinearly interpolated
    from the old grid to the new one (time first), the patch projection is kept (its stride is a config matter),
    and the head is kept when the labels are the same, re-ordered when they are the same names in another order,
    and replaced by a fresh one otherwise."""
    for field in ("hidden_size", "num_hidden_layers", "intermediate_size", "patch_size"):
        if getattr(old_config, field) != getattr(new_config, field):
            raise ConversionError(f"{field} differs ({getattr(old_config, field)} vs {getattr(new_config, field)}): "
                                  "re-targeting keeps the encoder; only lengths, strides, mel bins and labels change.")
    adapted = dict(state_dict)
    key = PREFIX + "embeddings.position_embeddings"
    adapted[key] = resample_position_embeddings(state_dict[key], old_config.patch_grid, new_config.patch_grid,
                                                crop="center").contiguous()
    if not same_labels(old_config, new_config):
        old_ids = {str(label): int(i) for i, label in old_config.id2label.items()}
        new_names = [str(new_config.id2label[i]) for i in range(new_config.num_labels)]
        if sorted(new_names) == sorted(old_ids) and len(new_names) == old_config.num_labels:
            order = torch.tensor([old_ids[name] for name in new_names])  # row i of the new head: its label's old row
            for key in ("classifier.dense.weight", "classifier.dense.bias"):
                adapted[key] = state_dict[key][order].contiguous()
        else:
            adapted = {k: v for k, v in adapted.items() if not k.startswith("classifier.")}
            adapted.update(new_head(new_config, seed))
    return adapted


def same_labels(a: ASTConfig, b: ASTConfig) -> bool:
    return a.num_labels == b.num_labels and dict(a.id2label) == dict(b.id2label)


def label_fields(labels: list[str], problem_type: str | None = None) -> dict[str, Any]:
    """id2label/label2id of a head; at least two unique labels for a classifier (one label would make
    transformers' loss a regression, and every prediction that one label with score 1). One name is a single
    regression target, accepted with problem_type="regression" only."""
    if len(labels) == 1 and problem_type == "regression":
        return {"id2label": {0: labels[0]}, "label2id": {labels[0]: 0}}
    if len(labels) < 2:
        raise ConversionError(f"A classifier needs at least two labels; got {len(labels)}: {labels}. Check the "
                              "labels file (one label a line) or the data's label column"
                              + ("; for one regression target pass --problem_type regression." if labels else "."))
    if len(set(labels)) != len(labels):
        duplicates = sorted({label for label in labels if labels.count(label) > 1})[:5]
        raise ConversionError(f"Labels must be unique; repeated: {duplicates}.")
    return {"id2label": dict(enumerate(labels)), "label2id": {label: i for i, label in enumerate(labels)}}


__all__ = [
    "AST_SOURCE_HINT",
    "ConversionError",
    "FORMAT_NAMES",
    "ssast_to_hf",
    "PREFIX",
    "adapt_image_encoder",
    "canonical_architecture",
    "default_heads",
    "detect_format",
    "encoder_architecture",
    "hf_vit_to_canonical",
    "label_fields",
    "new_head",
    "original_ast_grid",
    "original_ast_to_hf",
    "retarget_state_dict",
    "same_labels",
    "swin_message",
    "timm_to_canonical",
    "unwrap_state_dict",
]
