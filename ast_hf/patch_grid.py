"""The patch grid of an AST: positional embeddings resampled to any grid, and the mask of real tokens.

A spectrogram of T frames and F mel bins is cut into an (f, t) grid of 16x16 patches (`ASTConfig.patch_grid_for`);
the model stores positional embeddings for the grid of `max_length` frames and resamples them to the grid of each
input by `resample_patch_grid`: the one rule also used by the DeiT -> AST conversion (`crop="center"`) and by
`from_pretrained` at another length. This file is copied beside saved models as remote code with `modeling_ast.py`.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

NUM_PREFIX_TOKENS = 2  # [CLS] and DeiT's distillation token
"""Tokens before the patches in every sequence: the CLS and the distillation token."""


def resample_patch_grid(grid: torch.Tensor, size: tuple[int, int], crop: str = "leading") -> torch.Tensor:
    """Resize a (1, D, f, t) grid of positional embeddings to (1, D, size[0], size[1]).

    Time first, then frequency (the authors' order). Along each axis, a smaller size keeps a slice of the stored
    rows/columns (`crop="leading"`: the first ones, used at run time so that a shorter clip sees exactly the
    embeddings it would see when padded; `crop="center"`: the centre ones, the authors' DeiT -> AST rule) and a
    larger size is bilinearly interpolated (align_corners=False), computed in float32. The same size returns the
    input unchanged.
    """
    if crop not in ("leading", "center"):
        raise ValueError(f"crop={crop!r} must be 'leading' or 'center'.")
    if grid.ndim != 4 or grid.shape[0] != 1:
        raise ValueError(f"Expected a (1, D, f, t) grid of embeddings, got shape {tuple(grid.shape)}.")
    new_f, new_t = size
    if new_f < 1 or new_t < 1:
        raise ValueError(f"Target grid {size} must have at least one patch along each axis.")
    dtype = grid.dtype
    for axis, new in ((3, new_t), (2, new_f)):
        old = grid.shape[axis]
        if new < old:
            start = 0 if crop == "leading" else old // 2 - new // 2
            grid = grid.narrow(axis, start, new)
        elif new > old:
            target = (grid.shape[2], new) if axis == 3 else (new, grid.shape[3])
            grid = F.interpolate(grid.float(), size=target, mode="bilinear", align_corners=False).to(dtype)
    return grid


def resample_position_embeddings(position_embeddings: torch.Tensor, old_grid: tuple[int, int],
                                 new_grid: tuple[int, int], crop: str = "leading",
                                 num_prefix_tokens: int = NUM_PREFIX_TOKENS) -> torch.Tensor:
    """(1, P + f*t, D) embeddings of an old (f, t) patch grid -> (1, P + f'*t', D) for a new grid.

    The P prefix rows (CLS, distillation) are kept as they are; the patch rows, flattened frequency-major, are
    resampled with `resample_patch_grid`.
    """
    old_f, old_t = old_grid
    expected = num_prefix_tokens + old_f * old_t
    if position_embeddings.ndim != 3 or position_embeddings.shape[1] != expected:
        raise ValueError(
            f"Position embeddings of shape {tuple(position_embeddings.shape)} do not fit a {old_f} x {old_t} grid "
            f"with {num_prefix_tokens} prefix tokens (expected (1, {expected}, D))."
        )
    if tuple(new_grid) == tuple(old_grid):
        return position_embeddings
    prefix, patches = position_embeddings[:, :num_prefix_tokens], position_embeddings[:, num_prefix_tokens:]
    dim = patches.shape[-1]
    grid = patches.reshape(1, old_f, old_t, dim).permute(0, 3, 1, 2)  # (1, D, f, t)
    grid = resample_patch_grid(grid, new_grid, crop=crop)  # (1, D, f', t')
    patches = grid.permute(0, 2, 3, 1).reshape(1, -1, dim)  # (1, f' * t', D)
    return torch.cat([prefix, patches], dim=1)


def position_embeddings_per_clip(position_embeddings: torch.Tensor, old_grid: tuple[int, int],
                                 new_grid: tuple[int, Any], time_patches: torch.Tensor | None) -> torch.Tensor:
    """`resample_position_embeddings` (crop="leading") to each clip's own number of time patches, written with
    tensor arithmetic and gathers instead of Python branches on sizes, so that a graph exporter (torch.export,
    ONNX) records one graph for every number of frames: (1, 2 + f*t, D) embeddings of the stored (f, t) grid, an
    (f', t') input grid and the (B,) real time patches of each clip (None: t' for every clip) -> (B or 1,
    2 + f'*t', D).

    Along time, a clip of L <= t patches takes columns 0..L-1 and a longer one the bilinear interpolation
    (align_corners=False) to L columns, F.interpolate's rule written out: source column (j + 0.5) * t / L - 0.5,
    floored at 0. It agrees with the eager branches of `ASTEmbeddings.position_embeddings_for` to float rounding
    (tests/test_onnx.py); the eager model keeps those, so its outputs do not change. Columns past a clip's length
    hold embeddings that the attention mask hides. The frequency axis has the same size in every clip and is
    resampled by `resample_position_embeddings`.
    """
    new_f, new_t = new_grid
    old_t = old_grid[1]
    stored = resample_position_embeddings(position_embeddings, old_grid, (new_f, old_t))  # (1, 2 + f'*t, D)
    dim = stored.shape[2]
    grid = stored[0, NUM_PREFIX_TOKENS:].float().reshape(new_f, old_t, dim)  # (f', t, D)
    columns = torch.arange(new_t, device=stored.device, dtype=torch.float32)[None, :]  # (1, t')
    lengths = columns.new_full((1, 1), new_t) if time_patches is None else time_patches.float()[:, None]  # (B, 1)
    source = ((columns + 0.5) * (old_t / lengths) - 0.5).clamp(min=0)  # (B, t') interpolated source columns
    source = torch.where(lengths > old_t, source, columns)  # a clip within the stored grid: its leading columns
    lower = source.floor().long().clamp(max=old_t - 1)  # (B, t')
    upper = (lower + 1).clamp(max=old_t - 1)
    weight = (source - lower).clamp(0, 1)[:, None, :, None]  # (B, 1, t', 1)
    below = grid[:, lower].permute(1, 0, 2, 3)  # (B, f', t', D)
    above = grid[:, upper].permute(1, 0, 2, 3)
    patches = (below * (1 - weight) + above * weight).flatten(1, 2).to(stored.dtype)  # (B, f' * t', D)
    prefix = stored[:, :NUM_PREFIX_TOKENS].expand(patches.shape[0], -1, -1)  # (B, 2, D)
    return torch.cat([prefix, patches], dim=1)  # (B, 2 + f' * t', D)


def token_mask(real_columns: torch.Tensor, num_frequency_patches: int) -> torch.Tensor:
    """(B, t) real time columns of the patch grid -> (B, 2 + f*t) boolean mask over the tokens: the prefix tokens
    and every patch of a real column are True, patches in frequency-major order like the embeddings."""
    batch_size = real_columns.shape[0]
    real_patches = real_columns[:, None, :].expand(-1, num_frequency_patches, -1).reshape(batch_size, -1)  # (B, f*t)
    return torch.cat([real_patches.new_ones(batch_size, NUM_PREFIX_TOKENS), real_patches], dim=1)  # (B, 2 + f*t)


__all__ = ["NUM_PREFIX_TOKENS", "position_embeddings_per_clip", "resample_patch_grid", "resample_position_embeddings",
           "token_mask"]
