"""Audio Spectrogram Transformer (Gong, Chung, Glass, "AST: Audio Spectrogram Transformer", Interspeech 2021,
arXiv 2104.01778): a ViT/DeiT encoder over overlapping 16x16 patches of a log-mel spectrogram.

Parameter names follow the Hub format of transformers' built-in AST, so checkpoints move between the two
unchanged. Unlike the built-in port this model takes spectrograms of any length: the positional embedding is
resampled to the input's patch grid by `resample_patch_grid`, the one rule also used by the DeiT -> AST
conversion, and an `attention_mask` over frames masks the patches of padding. The mel-bin count is the config's
(`check_mel_bins`); another one is a different model (`ast_hf.convert.retarget_model(model, num_mel_bins=...)`).
"""

from __future__ import annotations

import copy
import os
import shutil
import tempfile
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from transformers import PreTrainedModel
from transformers.activations import ACT2FN
from transformers.masking_utils import create_bidirectional_mask
from transformers.modeling_layers import GradientCheckpointingLayer
from transformers.modeling_outputs import BaseModelOutputWithPooling, SequenceClassifierOutput
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS
from transformers.processing_utils import Unpack
from transformers.utils import TransformersKwargs, logging
from transformers.utils.generic import can_return_tuple, merge_with_config_defaults
from transformers.utils.output_capturing import capture_outputs

from .configuration_ast import ASTConfig, patches_along

NUM_PREFIX_TOKENS = 2  # [CLS] and DeiT's distillation token
IGNORE_INDEX = -100  # class index that cross-entropy skips (torch's and transformers' convention)

logger = logging.get_logger(__name__)

# Config fields that set the stored positional grid and that a trained model can change: given to from_pretrained,
# the stored embeddings are resampled to the new grid (`ASTPreTrainedModel.set_patch_grid`), not re-initialised.
GRID_FIELDS = ("max_length", "frequency_stride", "time_stride", "num_mel_bins")
# from_pretrained arguments that say where and how to read the checkpoint's own config.json.
_HUB_KWARGS = ("cache_dir", "force_download", "local_files_only", "token", "revision", "subfolder", "proxies")

# save_pretrained writes into `<save_directory>/.partial-<pid>-*` first (see ASTPreTrainedModel.save_pretrained).
_STAGING_PREFIX = ".partial-"
# Written into config.json so that a checkpoint loads with trust_remote_code=True where ast_hf is not installed.
# Remote code is copied flat, which is why these files import each other only as `from .sibling import X`.
_AUTO_MAP = {
    "AutoConfig": "configuration_ast.ASTConfig",
    "AutoModel": "modeling_ast.ASTModel",
    "AutoModelForAudioClassification": "modeling_ast.ASTForAudioClassification",
    "AutoFeatureExtractor": "feature_extraction_ast.ASTFeatureExtractor",
}


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


def _is_weight_file(name: str) -> bool:
    """model.safetensors, pytorch_model.bin, their shards (-00001-of-00002) and index files, with variants."""
    return name.startswith(("model", "pytorch_model")) and (
        name.endswith((".safetensors", ".bin")) or (".index" in name and name.endswith(".json")))


def publish_staged_files(staging: str | os.PathLike, directory: str | os.PathLike) -> None:
    """Move the files of a finished save from `staging` into `directory` in an order that never leaves a loadable
    mix of old and new: old weight files of the same format are deleted first (index first), then the other files
    (config, code) are moved, then the new weights, index last. Each move is one rename (same file system)."""
    new_files = sorted(os.listdir(staging))
    new_weights = [name for name in new_files if _is_weight_file(name)]
    formats = {"safetensors" if "safetensors" in name else "bin" for name in new_weights}
    old_weights = [name for name in os.listdir(directory) if _is_weight_file(name)
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


def as_tensor(name: str, value: Any) -> torch.Tensor:
    """A tensor from a tensor, numpy array or (nested) list; a TypeError naming `name` for anything else."""
    if isinstance(value, torch.Tensor):
        return value
    try:
        return torch.as_tensor(np.asarray(value))
    except (TypeError, ValueError, RuntimeError) as error:
        raise TypeError(f"{name} of type {type(value).__name__} cannot be read as a tensor ({error}); pass a torch "
                        "tensor or a numpy array.") from error


def _is_integer(dtype: torch.dtype) -> bool:
    """Integer dtypes (int8 ... int64, uint8 ...), not bool: class indices may come in any of them."""
    return not dtype.is_floating_point and not dtype.is_complex and dtype != torch.bool


def check_mel_bins(shape: tuple[int, ...], num_mel_bins: int) -> None:
    """Raise a ValueError unless a (batch, frames, mel bins) input has the model's `num_mel_bins` on its last axis.

    Frames may be any number, mel bins may not: the patch projection and the frequency rows of the positional grid
    were trained on one mel scale, and a (batch, mels, frames) tensor (torchaudio's layout) or the features of an
    extractor with another mel count would otherwise run and give meaningless logits."""
    if shape[2] == num_mel_bins:
        return
    message = (f"input_values has shape {shape}: {shape[2]} mel bins, but the model expects (batch, frames, "
               f"num_mel_bins) = (batch, frames, {num_mel_bins}).")
    extractor = (f"compute the features with the model's mel count: ASTFeatureExtractor(num_mel_bins={num_mel_bins}), "
                 "or ASTFeatureExtractor.from_pretrained of the same checkpoint")
    if shape[1] == num_mel_bins:  # also what 128 frames of other features look like: both fixes are named
        raise ValueError(f"{message} It looks like (batch, mels, frames): transpose it with "
                         f"input_values.transpose(1, 2). If these are {shape[2]}-bin features, {extractor}.")
    raise ValueError(f"{message} To fix it, {extractor}. (A model for {shape[2]} mel bins is another model: "
                     f"ast_hf.convert.retarget_model(model, num_mel_bins={shape[2]}) re-targets this one.)")


def check_right_padded(attention_mask: torch.Tensor, real: torch.Tensor, frames: torch.Tensor) -> None:
    """Raise a ValueError unless every row of a (B, T) mask is 0/1, real frames first and then padding, with at
    least one real frame. The model masks the patches after each clip's count of real frames, so any other layout
    (left padding, holes) would mask the wrong patches."""
    expected = torch.arange(real.shape[1], device=real.device)[None, :] < frames[:, None]  # (B, T)
    values_ok = (attention_mask == 0) | (attention_mask == 1)  # always true for a boolean mask
    if bool(values_ok.all()) and bool((real == expected).all()) and bool((frames > 0).all()):
        return
    if not bool(values_ok.all()):
        raise ValueError(f"attention_mask holds values other than 0 and 1 (e.g. "
                         f"{float(attention_mask[~values_ok][0]):g}); pass 1 for real frames and 0 for padding.")
    row = int(((real != expected).any(dim=1) | (frames == 0)).nonzero()[0])
    if int(frames[row]) == 0:
        raise ValueError(f"attention_mask row {row} has no real frame; drop that clip from the batch.")
    leading = int((~real[row]).long().cumprod(0).sum())
    layout = (f"is left-padded ({leading} padding frames before the clip)" if leading
              else "has padding between real frames")
    raise ValueError(
        f"attention_mask row {row} {layout}. ASTModel needs right-padded batches, real frames first and padding at "
        "the end, as ASTFeatureExtractor(padding='longest', return_attention_mask=True) returns them: the mask is "
        "read as a count of real frames, so another layout would mask the wrong patches."
    )


def token_mask(real_columns: torch.Tensor, num_frequency_patches: int) -> torch.Tensor:
    """(B, t) real time columns of the patch grid -> (B, 2 + f*t) boolean mask over the tokens: the prefix tokens
    and every patch of a real column are True, patches in frequency-major order like the embeddings."""
    batch_size = real_columns.shape[0]
    real_patches = real_columns[:, None, :].expand(-1, num_frequency_patches, -1).reshape(batch_size, -1)  # (B, f*t)
    return torch.cat([real_patches.new_ones(batch_size, NUM_PREFIX_TOKENS), real_patches], dim=1)  # (B, 2 + f*t)


class ASTPatchEmbeddings(nn.Module):
    """(B, T, F) spectrogram -> (B, f * t, D) patch embeddings, patches in frequency-major order.

    The model's input embeddings (`get_input_embeddings`): its output is one tensor, as the built-in's, so that
    transformers' `enable_input_require_grads` (PEFT/LoRA with gradient checkpointing) can hook it."""

    def __init__(self, config: ASTConfig) -> None:
        super().__init__()
        self.patch_size = config.patch_size
        self.strides = (config.frequency_stride, config.time_stride)
        self.projection = nn.Conv2d(1, config.hidden_size, kernel_size=config.patch_size, stride=self.strides)

    def forward(self, input_values: torch.Tensor) -> torch.Tensor:
        spectrogram = input_values.transpose(1, 2).unsqueeze(1)  # (B, 1, F, T)
        patches = self.projection(spectrogram)  # (B, D, f, t)
        return patches.flatten(2).transpose(1, 2)  # (B, f * t, D)

    def grid(self, input_values: torch.Tensor) -> tuple[Any, Any]:
        """(f, t) patches of a (B, T, F) input: the conv's output size, from the shape alone."""
        frames, mel_bins = input_values.shape[1:]
        return (patches_along(mel_bins, self.patch_size, self.strides[0]),
                patches_along(frames, self.patch_size, self.strides[1]))


class ASTEmbeddings(nn.Module):
    """[CLS, DIST, patches] + positional embeddings resampled to the input's patch grid."""

    def __init__(self, config: ASTConfig) -> None:
        super().__init__()
        self.cls_token = nn.Parameter(torch.zeros(1, 1, config.hidden_size))
        self.distillation_token = nn.Parameter(torch.zeros(1, 1, config.hidden_size))
        self.patch_embeddings = ASTPatchEmbeddings(config)
        self.grid = config.patch_grid  # stored (f, t) grid
        num_positions = self.grid[0] * self.grid[1] + NUM_PREFIX_TOKENS
        self.position_embeddings = nn.Parameter(torch.zeros(1, num_positions, config.hidden_size))
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(self, input_values: torch.Tensor,
                time_patches: torch.Tensor | None = None) -> tuple[torch.Tensor, tuple[int, int]]:
        batch_size = input_values.shape[0]
        patches = self.patch_embeddings(input_values)  # (B, N, D)
        grid = self.patch_embeddings.grid(input_values)  # (f, t)
        cls_tokens = self.cls_token.expand(batch_size, -1, -1)
        distillation_tokens = self.distillation_token.expand(batch_size, -1, -1)
        embeddings = torch.cat((cls_tokens, distillation_tokens, patches), dim=1)  # (B, N + 2, D)
        embeddings = embeddings + self.position_embeddings_for(grid, time_patches)
        return self.dropout(embeddings), grid

    def position_embeddings_for(self, grid: tuple[int, int], time_patches: torch.Tensor | None = None) -> torch.Tensor:
        """(1 or B, N + 2, D) positional embeddings for an (f, t) grid; `time_patches` (B,) holds each clip's real
        time patches when the batch is padded."""
        stored = self.position_embeddings
        if torch.compiler.is_exporting():
            # One graph for every number of frames: no branch on the grid's size, no loop over the clips' lengths.
            return position_embeddings_per_clip(stored, self.grid, grid, time_patches)
        if time_patches is None or grid[1] <= self.grid[1]:
            # Leading crop: every clip's real columns get what they get alone.
            return resample_position_embeddings(stored, self.grid, grid)
        # Longer than the stored grid: interpolation depends on each clip's own length, so resample per length.
        per_clip = stored.new_zeros(time_patches.shape[0], NUM_PREFIX_TOKENS + grid[0] * grid[1], stored.shape[2])
        for length in time_patches.unique().tolist():
            own = resample_position_embeddings(stored, self.grid, (grid[0], length))  # (1, 2 + f * length, D)
            own_patches = own[:, NUM_PREFIX_TOKENS:].reshape(1, grid[0], length, -1)
            full = F.pad(own_patches, (0, 0, 0, grid[1] - length)).reshape(1, grid[0] * grid[1], -1)
            rows = time_patches == length
            per_clip[rows] = torch.cat([own[:, :NUM_PREFIX_TOKENS], full], dim=1).to(per_clip.dtype)
        return per_clip


class ASTPatchout(nn.Module):
    """Structured Patchout (Koutini et al., "Efficient Training of Audio Transformers with Patchout", 2021): in
    training, drop `config.patchout_time` random time columns and `config.patchout_frequency` random frequency rows
    of patches, the same ones for the whole batch, at least one of each kept. Like timm's `PatchDropout` it runs
    after the positional embeddings (kept patches keep their positions), keeps the prefix tokens, and is the
    identity in eval mode."""

    def __init__(self, config: ASTConfig) -> None:
        super().__init__()
        # The config is read at each call: training scripts switch Patchout on for a loaded model by setting
        # config.patchout_time / patchout_frequency.
        self.config = config

    def forward(self, embeddings: torch.Tensor, grid: tuple[int, int], real_columns: torch.Tensor | None = None
                ) -> tuple[torch.Tensor, tuple[int, int], torch.Tensor | None]:
        """(B, 2 + f*t, D) tokens, the (f, t) grid and the (B, t) real time columns of a padded batch -> the same
        three for the kept patches."""
        drop_time, drop_frequency = self.config.patchout_time, self.config.patchout_frequency
        if not self.training or not (drop_time or drop_frequency):
            return embeddings, grid, real_columns
        grid_f, grid_t = grid
        device = embeddings.device
        keep_t = torch.randperm(grid_t, device=device)[: max(1, grid_t - drop_time)].sort().values
        keep_f = torch.randperm(grid_f, device=device)[: max(1, grid_f - drop_frequency)].sort().values
        batch_size, _, dim = embeddings.shape
        patches = embeddings[:, NUM_PREFIX_TOKENS:].reshape(batch_size, grid_f, grid_t, dim)  # (B, f, t, D)
        patches = patches[:, keep_f][:, :, keep_t]  # (B, f', t', D)
        embeddings = torch.cat([embeddings[:, :NUM_PREFIX_TOKENS], patches.flatten(1, 2)], dim=1)  # (B, 2 + f't', D)
        if real_columns is not None:
            real_columns = real_columns[:, keep_t]  # (B, t')
        return embeddings, (len(keep_f), len(keep_t)), real_columns


def eager_attention_forward(module: nn.Module, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                            attention_mask: torch.Tensor | None, scaling: float, dropout: float = 0.0,
                            **kwargs: Unpack[TransformersKwargs]) -> tuple[torch.Tensor, torch.Tensor]:
    """Plain softmax attention over (B, H, N, d) tensors; returns (B, N, H, d) outputs and (B, H, N, N) weights."""
    weights = torch.matmul(query, key.transpose(2, 3)) * scaling  # (B, H, N, N)
    if attention_mask is not None:
        weights = weights + attention_mask
    weights = F.softmax(weights, dim=-1, dtype=torch.float32).to(query.dtype)
    weights = F.dropout(weights, p=dropout, training=module.training)
    output = torch.matmul(weights, value).transpose(1, 2).contiguous()  # (B, N, H, d)
    return output, weights


class ASTSelfAttention(nn.Module):
    def __init__(self, config: ASTConfig) -> None:
        super().__init__()
        self.config = config
        self.num_attention_heads = config.num_attention_heads
        self.head_dim = config.hidden_size // config.num_attention_heads
        self.scaling = self.head_dim**-0.5
        self.dropout = config.attention_probs_dropout_prob
        self.is_causal = False
        self.query = nn.Linear(config.hidden_size, config.hidden_size, bias=config.qkv_bias)
        self.key = nn.Linear(config.hidden_size, config.hidden_size, bias=config.qkv_bias)
        self.value = nn.Linear(config.hidden_size, config.hidden_size, bias=config.qkv_bias)

    def forward(self, hidden_states: torch.Tensor, attention_mask: torch.Tensor | None = None,
                **kwargs: Unpack[TransformersKwargs]) -> tuple[torch.Tensor, torch.Tensor | None]:
        batch_size, length, _ = hidden_states.shape
        shape = (batch_size, length, self.num_attention_heads, self.head_dim)
        query = self.query(hidden_states).view(shape).transpose(1, 2)  # (B, H, N, d)
        key = self.key(hidden_states).view(shape).transpose(1, 2)
        value = self.value(hidden_states).view(shape).transpose(1, 2)

        attention: Callable = eager_attention_forward
        implementation = self.config._attn_implementation
        # Returning the weights needs eager attention (ASTModel then builds eager's additive mask).
        if implementation not in (None, "eager") and not kwargs.get("output_attentions"):
            attention = ALL_ATTENTION_FUNCTIONS.get_interface(implementation, eager_attention_forward)
        output, weights = attention(self, query, key, value, attention_mask, scaling=self.scaling,
                                    dropout=self.dropout if self.training else 0.0, **kwargs)
        return output.reshape(batch_size, length, -1), weights  # (B, N, D), (B, H, N, N) or None


class ASTSelfOutput(nn.Module):
    def __init__(self, config: ASTConfig) -> None:
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.dense(hidden_states))


class ASTAttention(nn.Module):
    def __init__(self, config: ASTConfig) -> None:
        super().__init__()
        self.attention = ASTSelfAttention(config)
        self.output = ASTSelfOutput(config)

    def forward(self, hidden_states: torch.Tensor, attention_mask: torch.Tensor | None = None,
                **kwargs: Unpack[TransformersKwargs]) -> torch.Tensor:
        context, _ = self.attention(hidden_states, attention_mask, **kwargs)
        return self.output(context)


class ASTIntermediate(nn.Module):
    def __init__(self, config: ASTConfig) -> None:
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.intermediate_size)
        self.activation = ACT2FN[config.hidden_act]

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return self.activation(self.dense(hidden_states))


class ASTOutput(nn.Module):
    def __init__(self, config: ASTConfig) -> None:
        super().__init__()
        self.dense = nn.Linear(config.intermediate_size, config.hidden_size)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.dense(hidden_states))


class ASTLayer(GradientCheckpointingLayer):
    """Pre-LN Transformer block: x + MHSA(LN(x)), then x + MLP(LN(x))."""

    def __init__(self, config: ASTConfig) -> None:
        super().__init__()
        self.attention = ASTAttention(config)
        self.intermediate = ASTIntermediate(config)
        self.output = ASTOutput(config)
        self.layernorm_before = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.layernorm_after = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)

    def forward(self, hidden_states: torch.Tensor, attention_mask: torch.Tensor | None = None,
                **kwargs: Unpack[TransformersKwargs]) -> torch.Tensor:
        # Self-attention
        residual = hidden_states
        hidden_states = self.attention(self.layernorm_before(hidden_states), attention_mask, **kwargs)
        hidden_states = hidden_states + residual

        # MLP
        residual = hidden_states
        hidden_states = self.output(self.intermediate(self.layernorm_after(hidden_states)))
        return hidden_states + residual


class ASTEncoder(nn.Module):
    def __init__(self, config: ASTConfig) -> None:
        super().__init__()
        self.layer = nn.ModuleList([ASTLayer(config) for _ in range(config.num_hidden_layers)])
        self.gradient_checkpointing = False

    def forward(self, hidden_states: torch.Tensor, attention_mask: torch.Tensor | None = None,
                **kwargs: Unpack[TransformersKwargs]) -> torch.Tensor:
        for layer in self.layer:
            hidden_states = layer(hidden_states, attention_mask, **kwargs)  # positional: gradient checkpointing
        return hidden_states


class ASTPreTrainedModel(PreTrainedModel):
    r"""Base class of the AST models: config class, capabilities, weight initialisation and the crash-safe save.

    PEFT / LoRA: the Linear layers of encoder layer N are, under `audio_spectrogram_transformer.encoder.layer.N.`,
    `attention.attention.query`, `attention.attention.key`, `attention.attention.value` (self-attention
    projections), `attention.output.dense` (attention output), `intermediate.dense` (MLP in) and `output.dense` (MLP
    out); the head is `classifier.layernorm` + `classifier.dense`. (transformers' built-in AST names them `q_proj`,
    `k_proj`, `v_proj`, `o_proj`, `mlp.fc1`, `mlp.fc2` in memory.) PEFT matches `target_modules` by name suffix:
    `["query", "value"]` (the usual LoRA choice) or `["query", "key", "value"]` select every layer's projections;
    "output.dense" also matches `attention.output.dense` and "dense" matches the head too, so the MLP out alone is
    the regex `r".*\.layer\.\d+\.output\.dense"`. A new head is trained with `modules_to_save=["classifier"]`.
    Gradient checkpointing works with LoRA: `get_input_embeddings()` returns a module whose output is a tensor, which
    transformers' `enable_input_require_grads` (called by PEFT) hooks.
    """

    config_class = ASTConfig
    config: ASTConfig
    base_model_prefix = "audio_spectrogram_transformer"
    main_input_name = "input_values"
    input_modalities = ("audio",)
    supports_gradient_checkpointing = True
    _no_split_modules = ["ASTEmbeddings", "ASTLayer"]
    _supports_sdpa = True
    _supports_flash_attn = True
    _supports_flex_attn = True
    _supports_attention_backend = True
    # hidden_states: the input of the first layer and every layer's output (before the final LayerNorm).
    _can_record_outputs = {"hidden_states": ASTLayer, "attentions": ASTSelfAttention}
    # The loss is a batch mean; Trainer must not rescale it by token counts across devices.
    accepts_loss_kwargs = False

    def __init__(self, config: ASTConfig, *args: Any, **kwargs: Any) -> None:
        # A config may be edited field by field; once a model is built from it, it must be consistent. (Only
        # ASTConfig's own checks: transformers' validators, run on save, would refuse e.g. a config that asks for
        # attention weights under sdpa, which this model serves by switching to eager attention.)
        config.validate_fields()
        config.validate_architecture()
        super().__init__(config, *args, **kwargs)

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: str | os.PathLike | None, *model_args: Any,
                        **kwargs: Any) -> Any:
        """`PreTrainedModel.from_pretrained`, where a clip length, stride or mel count other than the checkpoint's
        (`max_length=256`, `time_stride=12`, ... or a `config` that says so, as the Auto classes pass it) resamples
        the stored positional embeddings to the new patch grid, as `ast_hf.convert.retarget_model` and timm's
        `create_model(img_size=...)` do, keeping the CLS and distillation rows, and logs one line saying so. (The
        plain transformers load would re-initialise the whole positional embedding with `ignore_mismatched_sizes=True`
        and refuse to load without it.) The model is first loaded at the stored grid, then `set_patch_grid`."""
        changes = {name: kwargs.pop(name) for name in GRID_FIELDS if name in kwargs}
        config = kwargs.get("config")
        if isinstance(config, ASTConfig) and pretrained_model_name_or_path is not None:
            try:
                stored = ASTConfig.from_pretrained(pretrained_model_name_or_path,
                                                   **{name: kwargs[name] for name in _HUB_KWARGS if name in kwargs})
            except (OSError, ValueError):  # no readable config.json there: nothing to compare with
                stored = None
            if stored is not None:
                changes = {**{name: getattr(config, name) for name in GRID_FIELDS}, **changes}
                config = copy.deepcopy(config)
                for name in GRID_FIELDS:
                    setattr(config, name, getattr(stored, name))
                kwargs["config"] = config
        loaded = super().from_pretrained(pretrained_model_name_or_path, *model_args, **kwargs)
        model = loaded[0] if isinstance(loaded, tuple) else loaded  # (model, loading info) with output_loading_info
        model.set_patch_grid(**changes)
        return loaded

    def set_patch_grid(self, **changes: Any) -> None:
        """Change `max_length`, `frequency_stride`, `time_stride` and/or `num_mel_bins` of this model in place: the
        stored positional embeddings are resampled from the old patch grid to the new one by
        `resample_position_embeddings(crop="center")` (centre cut or bilinear interpolation, time first; prefix rows
        kept), the rule of `ast_hf.checkpoint_surgery.retarget_state_dict`; the patch projection keeps its weights
        and takes the new strides. The same grid changes nothing."""
        unknown = sorted(set(changes) - set(GRID_FIELDS))
        if unknown:
            raise ValueError(f"set_patch_grid changes {', '.join(GRID_FIELDS)}, not {unknown}.")
        config = self.config
        before = {name: getattr(config, name) for name in GRID_FIELDS}
        changed = {name: value for name, value in changes.items() if value != before[name]}
        if not changed:
            return
        old_grid = config.patch_grid
        for name, value in changed.items():
            setattr(config, name, value)
        try:
            config.validate_fields()
            config.validate_architecture()
            new_grid = config.patch_grid
        except (TypeError, ValueError):
            for name, value in before.items():
                setattr(config, name, value)
            raise
        embeddings = self.base_model.embeddings
        stored = embeddings.position_embeddings
        with torch.no_grad():
            resampled = resample_position_embeddings(stored.detach(), old_grid, new_grid, crop="center")
        embeddings.position_embeddings = nn.Parameter(resampled.contiguous(), requires_grad=stored.requires_grad)
        embeddings.grid = new_grid
        patch_embeddings = embeddings.patch_embeddings
        patch_embeddings.strides = (config.frequency_stride, config.time_stride)
        patch_embeddings.projection.stride = patch_embeddings.strides
        settings = ", ".join(f"{name} {before[name]} -> {value}" for name, value in changed.items())
        logger.warning(f"Resampled the stored position embeddings from the {old_grid[0]} x {old_grid[1]} patch grid "
                       f"to {new_grid[0]} x {new_grid[1]} ({settings}), CLS and distillation rows kept.")

    def _init_weights(self, module: nn.Module) -> None:
        super()._init_weights(module)
        if isinstance(module, ASTEmbeddings):
            # timm's ViT initialisation: small random tokens and positions, so training from scratch works.
            for parameter in (module.cls_token, module.distillation_token, module.position_embeddings):
                nn.init.trunc_normal_(parameter, std=self.config.initializer_range)

    # transformers copies this file and its relative imports (configuration_ast.py, which imports
    # feature_extraction_ast.py) and writes auto_map[AutoConfig] and auto_map[<this class's auto class>], as the
    # classes are registered with register_for_auto_class at the end of this file and of configuration_ast.py.
    # This override adds what that cannot do:
    # - the other entries of auto_map: one class registers one auto class, but a saved ASTForAudioClassification
    #   must also load with AutoModel, and the directory's extractor with AutoFeatureExtractor, through remote code;
    #   ASTFeatureExtractor itself is not registered, as an auto_map in preprocessor_config.json makes transformers
    #   ask for trust_remote_code even where ast_hf is imported (it then never looks at the registered classes);
    # - the crash-safe write through a staging directory (below).
    def save_pretrained(self, save_directory: str | os.PathLike, *args: Any, **kwargs: Any) -> None:
        """`PreTrainedModel.save_pretrained`, with the model's code and `auto_map` so that the directory loads with
        `trust_remote_code=True` where ast_hf is not installed.

        Crash safety: everything is first written to a hidden `.partial-PID-*` directory inside `save_directory`,
        then moved into place: the old weight files are removed first, the config and code moved next, the weights
        (the index of a sharded save last) at the end. A process killed at any moment, even by SIGKILL, leaves a
        directory that loads the previous model, loads the new one, or fails to load for want of weights; never
        one that loads the new config with the old weights or half a weight file. Other files in the directory
        (Trainer state, logs) are left alone, so the directory as a whole is not replaced atomically; for that
        see `ast_hf.convert.write_checkpoint`. Staging directories of killed saves are removed by the next save.
        """
        self.config.auto_map = {**(getattr(self.config, "auto_map", None) or {}), **_AUTO_MAP}
        if not kwargs.get("is_main_process", True) or os.path.isfile(save_directory):
            super().save_pretrained(save_directory, *args, **kwargs)  # writes nothing here / logs the error
            return
        if kwargs.get("push_to_hub"):
            kwargs.setdefault("repo_id", os.path.basename(os.path.abspath(save_directory)))
        os.makedirs(save_directory, exist_ok=True)
        remove_stale_staging(save_directory, _STAGING_PREFIX)
        staging = tempfile.mkdtemp(prefix=f"{_STAGING_PREFIX}{os.getpid()}-", dir=save_directory)
        try:
            super().save_pretrained(staging, *args, **kwargs)
            publish_staged_files(staging, save_directory)
        finally:
            shutil.rmtree(staging, ignore_errors=True)


class ASTModel(ASTPreTrainedModel):
    """The AST encoder: (B, T, F) spectrogram -> (B, 2 + f*t, D) hidden states and the (B, D) pooled output, the
    mean of the CLS and distillation tokens."""

    def __init__(self, config: ASTConfig) -> None:
        super().__init__(config)
        self.embeddings = ASTEmbeddings(config)
        self.patchout = ASTPatchout(config)
        self.encoder = ASTEncoder(config)
        self.layernorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.post_init()

    def get_input_embeddings(self) -> ASTPatchEmbeddings:
        return self.embeddings.patch_embeddings

    @merge_with_config_defaults
    @capture_outputs(tie_last_hidden_states=False)
    def forward(
        self,
        input_values: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        **kwargs: Unpack[TransformersKwargs],
    ) -> BaseModelOutputWithPooling:
        r"""
        input_values (`torch.FloatTensor` of shape `(batch_size, frames, num_mel_bins)`): normalised log-mel
            spectrograms from [`ASTFeatureExtractor`]; any frames >= patch_size, exactly `config.num_mel_bins` mel
            bins (another count raises a ValueError that says how to fix the input, e.g. a transposed tensor).
        attention_mask (`torch.Tensor` of shape `(batch_size, frames)`, *optional*): 1 for real frames, 0 for
            padding (from the feature extractor with `padding="longest", return_attention_mask=True`). Patches of
            padding are masked so that a clip's output in a padded batch equals its output alone. The batch must be
            right-padded (each row: ones, then zeros, at least one real frame); a left-padded mask, a mask with
            holes or values other than 0/1 raise a ValueError. numpy arrays and lists are accepted.
        kwargs: `output_hidden_states` (True, or the indices of the hidden states to return), `output_attentions`,
            `return_dict`, and anything else for the attention kernel, as in transformers' models
            (`interpolate_pos_encoding` is accepted and ignored: inputs of any size always run).

        A batch of 0 clips, and inputs holding NaN or Inf, raise a ValueError.
        """
        input_values = self._check_input(input_values)
        time_patches = None if attention_mask is None else self._time_patches(attention_mask, input_values.shape)
        embeddings, grid = self.embeddings(input_values, time_patches)  # (B, 2 + f*t, D), (f, t)
        real_columns = None
        if time_patches is not None:
            real_columns = torch.arange(grid[1], device=embeddings.device)[None, :] < time_patches[:, None]  # (B, t)
        embeddings, grid, real_columns = self.patchout(embeddings, grid, real_columns)

        # Attention weights come from eager attention, which every layer then runs (see ASTSelfAttention) with an
        # additive mask; otherwise the mask takes the configured kernel's form (boolean for sdpa, flex's BlockMask).
        kwargs["output_attentions"] = kwargs.get("output_attentions", self.config.output_attentions)
        mask = None
        if real_columns is not None:
            mask = self._attention_mask(token_mask(real_columns, grid[0]), embeddings,
                                        eager=bool(kwargs["output_attentions"]))
        hidden_states = self.encoder(embeddings, mask, **kwargs)
        sequence_output = self.layernorm(hidden_states)  # (B, 2 + f*t, D)
        pooled_output = (sequence_output[:, 0] + sequence_output[:, 1]) / 2  # (B, D)
        return BaseModelOutputWithPooling(last_hidden_state=sequence_output, pooler_output=pooled_output)

    def _attention_mask(self, tokens: torch.Tensor, embeddings: torch.Tensor, eager: bool) -> torch.Tensor | Any:
        """A (B, N) boolean token mask in the form the attention kernel takes."""
        if eager:
            mask = torch.zeros(tokens.shape, dtype=embeddings.dtype, device=embeddings.device)
            return mask.masked_fill_(~tokens, torch.finfo(embeddings.dtype).min)[:, None, None, :]  # (B, 1, 1, N)
        return create_bidirectional_mask(config=self.config, inputs_embeds=embeddings, attention_mask=tokens)

    def _check_input(self, input_values: torch.Tensor | None) -> torch.Tensor:
        if input_values is None:
            raise ValueError("input_values is required: the (batch, frames, mel bins) output of ASTFeatureExtractor.")
        if not isinstance(input_values, torch.Tensor):
            raise TypeError(
                f"input_values must be a torch.Tensor, got {type(input_values).__name__}; call the feature "
                "extractor with return_tensors='pt'."
            )
        if input_values.ndim == 2:
            raise ValueError(
                f"input_values has shape {tuple(input_values.shape)}; the model expects (batch, frames, mel bins). "
                "Add a batch dimension with input_values.unsqueeze(0), or pass raw audio through the feature "
                "extractor first."
            )
        if input_values.ndim != 3:
            raise ValueError(
                f"input_values has shape {tuple(input_values.shape)}; the model expects (batch, frames, mel bins)."
            )
        if not input_values.is_floating_point():
            raise TypeError(f"input_values must be a float tensor, got {input_values.dtype}.")
        if input_values.shape[0] == 0:
            raise ValueError(f"input_values has shape {tuple(input_values.shape)}: a batch of 0 spectrograms. Pass at "
                             "least one clip.")
        if not torch.compiler.is_compiling() and not bool(torch.isfinite(input_values).all()):
            raise ValueError("input_values contains NaN or Inf; the logits would be NaN. Check the audio and the "
                             "feature extractor's mean/std (ASTFeatureExtractor refuses such audio itself).")
        frames, mel_bins = input_values.shape[1:]
        check_mel_bins(tuple(input_values.shape), self.config.num_mel_bins)
        self.config.patch_grid_for(frames, mel_bins)  # raises for a spectrogram smaller than one patch
        return input_values.to(self.embeddings.patch_embeddings.projection.weight.dtype)

    def _time_patches(self, attention_mask: Any, shape: torch.Size) -> torch.Tensor:
        """Real time patches of each clip, (B,): those whose 16 frames all lie within the clip's real frames."""
        attention_mask = as_tensor("attention_mask", attention_mask)
        if attention_mask.shape != shape[:2]:
            raise ValueError(
                f"attention_mask has shape {tuple(attention_mask.shape)} but input_values has {tuple(shape[:2])} "
                "(batch, frames); pass the mask the feature extractor returned with these input_values."
            )
        attention_mask = attention_mask.to(self.embeddings.position_embeddings.device)
        real = attention_mask if attention_mask.dtype == torch.bool else attention_mask != 0  # (B, T)
        frames = real.sum(dim=1)  # (B,)
        if not torch.compiler.is_compiling():
            check_right_padded(attention_mask, real, frames)
        _, grid_t = self.config.patch_grid_for(shape[1], shape[2])
        # The same formula per clip, on a tensor. A clip shorter than one patch keeps its first (partly padded)
        # patch rather than attending to nothing.
        patch = self.config.patch_size
        return patches_along(frames.clamp(min=patch), patch, self.config.time_stride).clamp(max=grid_t)


class ASTMLPHead(nn.Module):
    def __init__(self, config: ASTConfig) -> None:
        super().__init__()
        eps = getattr(config, "classifier_layer_norm_eps", None)
        self.layernorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps if eps is None else eps)
        self.dense = nn.Linear(config.hidden_size, config.num_labels) if config.num_labels > 0 else nn.Identity()

    def forward(self, pooled: torch.Tensor) -> torch.Tensor:
        return self.dense(self.layernorm(pooled))  # (B, num_labels)


class ASTForAudioClassification(ASTPreTrainedModel):
    """AST with a LayerNorm + Linear head on the pooled output (AudioSet, ESC-50, Speech Commands, ...)."""

    def __init__(self, config: ASTConfig) -> None:
        super().__init__(config)
        self.num_labels = config.num_labels
        self.audio_spectrogram_transformer = ASTModel(config)
        self.classifier = ASTMLPHead(config)
        self.post_init()

    @can_return_tuple
    def forward(
        self,
        input_values: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        **kwargs: Unpack[TransformersKwargs],
    ) -> SequenceClassifierOutput:
        r"""
        labels (`torch.Tensor`, *optional*): class indices `(batch,)` for single-label classification, multi-hot
            `(batch, num_labels)` floats for multi-label, or `(batch,)` / `(batch, num_labels)` targets for
            regression; a numpy array or list is converted. The loss follows `config.problem_type`; when unset it is
            inferred as transformers does (one label: regression; int64/int32 labels: single-label; anything
            else: multi-label), except that 1-D labels of any integer type (int16, uint8, ...) are class indices,
            i.e. single-label. Class indices outside [0, num_labels) (other than -100, ignored) raise a ValueError.
            With single-label classification, float labels of shape `(batch, num_labels)` are class probabilities
            (mixup, label smoothing): the loss is the cross-entropy against them.
        """
        outputs = self.audio_spectrogram_transformer(input_values, attention_mask=attention_mask, return_dict=True,
                                                     **kwargs)
        logits = self.classifier(outputs.pooler_output)  # (B, num_labels)

        loss = None
        if labels is not None:
            loss = self._loss(as_tensor("labels", labels).to(logits.device), logits, **kwargs)

        return SequenceClassifierOutput(loss=loss, logits=logits, hidden_states=outputs.hidden_states,
                                        attentions=outputs.attentions)

    def _loss(self, labels: torch.Tensor, logits: torch.Tensor, **kwargs: Any) -> torch.Tensor:
        problem_type = self._problem_type(labels, logits)
        if problem_type == "single_label_classification" and labels.is_floating_point():
            # Class probabilities (mixup, label smoothing): cross-entropy against a soft target, which transformers'
            # loss does not take.
            return F.cross_entropy(logits, labels.to(logits.dtype))
        labels = labels.long() if problem_type == "single_label_classification" else labels.to(logits.dtype)
        config = self.config
        if config.problem_type != problem_type:
            # transformers' loss would infer the problem type by its own rule and write it into the model's config,
            # fixing it for every later batch; this batch's problem type goes to it on a copy instead.
            config = copy.copy(config)
            config.problem_type = problem_type
        return self.loss_function(labels, logits, config, **kwargs)

    def _problem_type(self, labels: torch.Tensor, logits: torch.Tensor) -> str:
        """config.problem_type, or the one these labels imply; a ValueError for labels that fit no loss."""
        problem_type = self.config.problem_type
        if labels.ndim == 0 or labels.shape[0] != logits.shape[0]:
            raise ValueError(f"labels have shape {tuple(labels.shape)} but the batch holds {logits.shape[0]} clips; "
                             "pass one label (or one row of targets) per clip.")
        if problem_type is None:
            if self.num_labels == 1:
                problem_type = "regression"
            elif labels.dtype in (torch.long, torch.int) or (_is_integer(labels.dtype) and labels.ndim == 1):
                problem_type = "single_label_classification"
            elif labels.ndim == 1:
                raise ValueError(
                    f"labels are 1-D {labels.dtype} values, which are neither class indices (an integer dtype: pass "
                    f"labels.long()) nor multi-hot targets (shape {tuple(logits.shape)}). Or set "
                    "config.problem_type to say which loss you mean."
                )
            else:
                problem_type = "multi_label_classification"
        if problem_type == "single_label_classification":
            if labels.is_floating_point() and labels.shape == logits.shape:
                return problem_type  # class probabilities
            if labels.is_floating_point() or labels.ndim != 1:
                raise ValueError(
                    f"problem_type='single_label_classification' needs integer class indices of shape (batch,) or "
                    f"class probabilities of shape {tuple(logits.shape)}, got {labels.dtype} {tuple(labels.shape)}. "
                    "For multi-hot targets set "
                    "config.problem_type='multi_label_classification'."
                )
            outside = (labels != IGNORE_INDEX) & ((labels < 0) | (labels >= self.num_labels))
            if bool(outside.any()):
                raise ValueError(
                    f"labels hold class index {int(labels[outside][0])} but the model has {self.num_labels} labels "
                    f"(indices 0..{self.num_labels - 1}; -100 is ignored). Check the label mapping, or build the "
                    "model with num_labels / id2label covering every class."
                )
        elif problem_type == "multi_label_classification" and labels.shape != logits.shape:
            raise ValueError(
                f"problem_type='multi_label_classification' needs multi-hot labels of shape {tuple(logits.shape)}, "
                f"got {tuple(labels.shape)}."
            )
        return problem_type


ASTModel.register_for_auto_class("AutoModel")
ASTForAudioClassification.register_for_auto_class("AutoModelForAudioClassification")

__all__ = [
    "ASTForAudioClassification",
    "ASTModel",
    "ASTPatchout",
    "ASTPreTrainedModel",
    "position_embeddings_per_clip",
    "resample_patch_grid",
    "resample_position_embeddings",
    "token_mask",
]
