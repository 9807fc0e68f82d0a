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
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Any

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
from transformers.utils import ModelOutput, TransformersKwargs, logging
from transformers.utils.generic import can_return_tuple, merge_with_config_defaults
from transformers.utils.output_capturing import capture_outputs

from .configuration_ast import ASTConfig, patches_along
from .model_inputs import as_tensor, check_input_values, check_right_padded, label_problem_type, values_checked
from .patch_grid import (
    NUM_PREFIX_TOKENS,
    position_embeddings_per_clip,
    resample_patch_grid,  # noqa: F401 (also importable from here, where it was first)
    resample_position_embeddings,
    token_mask,
)
from .staging import publish_staged_files, remove_stale_staging

logger = logging.get_logger(__name__)

# Config fields that set the stored positional grid and that a trained model can change: given to from_pretrained,
# the stored embeddings are resampled to the new grid (`ASTPreTrainedModel.set_patch_grid`), not re-initialised.
GRID_FIELDS = ("max_length", "frequency_stride", "time_stride", "num_mel_bins")
# config.architectures of a checkpoint saved by ASTForPreTraining (SSAST pretraining): loaded into another class, its
# encoder is kept and a message says what is new.
PRETRAINING_ARCHITECTURE = "ASTForPreTraining"
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
    "AutoModelForPreTraining": "modeling_ast.ASTForPreTraining",
    "AutoFeatureExtractor": "feature_extraction_ast.ASTFeatureExtractor",
}


class ASTPatchEmbeddings(nn.Module):
    """(B, T, F) spectrogram -> (B, f * t, D) patch embeddings, patches in frequency-major order.

    The model's input embeddings (`get_input_embeddings`): its output is one tensor, as the built-in's, so that
    transformers' `enable_input_require_grads` (PEFT/LoRA with gradient checkpointing) can hook it."""

    def __init__(self, config: ASTConfig) -> None:
        super().__init__()
        self.patch_shape = config.patch_shape  # (mel bins, frames) of one patch
        self.strides = (config.frequency_stride, config.time_stride)
        self.projection = nn.Conv2d(1, config.hidden_size, kernel_size=self.patch_shape, stride=self.strides)

    def forward(self, input_values: torch.Tensor) -> torch.Tensor:
        spectrogram = input_values.transpose(1, 2).unsqueeze(1)  # (B, 1, F, T)
        patches = self.projection(spectrogram)  # (B, D, f, t)
        return patches.flatten(2).transpose(1, 2)  # (B, f * t, D)

    def grid(self, input_values: torch.Tensor) -> tuple[Any, Any]:
        """(f, t) patches of a (B, T, F) input: the conv's output size, from the shape alone."""
        frames, mel_bins = input_values.shape[1:]
        return (patches_along(mel_bins, self.patch_shape[0], self.strides[0]),
                patches_along(frames, self.patch_shape[1], self.strides[1]))


class ASTEmbeddings(nn.Module):
    """[CLS, DIST, patches] + positional embeddings resampled to the input's patch grid.

    With `use_mask_token` (SSAST pretraining) the patches at `bool_masked_pos` are replaced by a learned mask
    embedding before the tokens are prepended and the positions added, as in the SSAST code and BEiT/ViT's masked
    image modelling."""

    def __init__(self, config: ASTConfig, use_mask_token: bool = False) -> None:
        super().__init__()
        self.cls_token = nn.Parameter(torch.zeros(1, 1, config.hidden_size))
        self.distillation_token = nn.Parameter(torch.zeros(1, 1, config.hidden_size))
        self.mask_token = nn.Parameter(torch.zeros(1, 1, config.hidden_size)) if use_mask_token else None
        self.patch_embeddings = ASTPatchEmbeddings(config)
        self.grid = config.patch_grid  # stored (f, t) grid
        num_positions = self.grid[0] * self.grid[1] + NUM_PREFIX_TOKENS
        self.position_embeddings = nn.Parameter(torch.zeros(1, num_positions, config.hidden_size))
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(self, input_values: torch.Tensor, time_patches: torch.Tensor | None = None,
                bool_masked_pos: torch.Tensor | None = None) -> tuple[torch.Tensor, tuple[int, int]]:
        batch_size = input_values.shape[0]
        patches = self.patch_embeddings(input_values)  # (B, N, D)
        grid = self.patch_embeddings.grid(input_values)  # (f, t)
        if bool_masked_pos is not None:
            if self.mask_token is None:
                raise ValueError("bool_masked_pos needs a mask token, which this model does not have: use "
                                 "ASTForPreTraining, or build ASTModel(config, use_mask_token=True).")
            masked = bool_masked_pos.to(patches.device)[:, :, None]  # (B, N, 1)
            patches = torch.where(masked, self.mask_token.to(patches.dtype), patches)
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

    `from_pretrained` also loads at another length or stride (resampling the positional embeddings), and
    `save_pretrained` writes the model's code beside the weights for `trust_remote_code=True`.

    PEFT / LoRA: the Linear layers of encoder layer N are, under `audio_spectrogram_transformer.encoder.layer.N.`,
    `attention.attention.query`, `.key`, `.value` (self-attention projections), `attention.output.dense` (attention
    output), `intermediate.dense` (MLP in) and `output.dense` (MLP out); the head is `classifier.layernorm` +
    `classifier.dense`. PEFT matches `target_modules` by name suffix: `["query", "value"]` (the usual LoRA choice)
    selects every layer's projections; "output.dense" also matches `attention.output.dense`, and "dense" the head,
    so the MLP out alone is the regex `r".*\.layer\.\d+\.output\.dense"`. A new head is trained with
    `modules_to_save=["classifier"]`. Gradient checkpointing works with LoRA. (transformers' built-in AST names the
    same layers `q_proj`, `k_proj`, `v_proj`, `o_proj`, `mlp.fc1`, `mlp.fc2` in memory.)

    Args:
        config: The model's configuration; it is validated when the model is built.

    Raises:
        ValueError: For a config whose fields do not fit together (e.g. a head count that does not divide the
            hidden size, a stride larger than the patch).
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
        """Load a checkpoint, as `PreTrainedModel.from_pretrained`, also at another length or stride.

        A clip length, stride or mel count other than the checkpoint's (`max_length=256`, `time_stride=12`, ... or a
        `config` that says so, as the Auto classes pass it) resamples the stored positional embeddings to the new
        patch grid, as `ast_hf.convert.retarget_model` and timm's `create_model(img_size=...)` do, keeping the CLS
        and distillation rows, and logs one line saying so. (transformers' own loading would re-initialise the whole
        positional embedding with `ignore_mismatched_sizes=True`, and refuse to load without it.)

        Args:
            pretrained_model_name_or_path: A model directory or Hub id (ast_hf's or transformers' AST).
            *model_args: Passed on to `PreTrainedModel.from_pretrained`.
            **kwargs: `PreTrainedModel.from_pretrained`'s options (`config`, `dtype`, `attn_implementation`,
                `revision`, `trust_remote_code`, ...) and config overrides, among them `max_length`,
                `frequency_stride`, `time_stride` and `num_mel_bins`.

        Returns:
            The model (with `output_loading_info=True`, the model and the loading information).
        """
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
        if PRETRAINING_ARCHITECTURE in (model.config.architectures or []) and not isinstance(model,
                                                                                           ASTForPreTraining):
            head = ("; its classifier head (classifier.*) is new and random: fine-tune it on labelled audio "
                    "before use" if isinstance(model, ASTForAudioClassification) else "")
            logger.warning(f"{pretrained_model_name_or_path} is an SSAST pretraining checkpoint (ASTForPreTraining): "
                           f"its encoder weights are loaded, without the mask token and the pretraining heads{head}.")
        model.set_patch_grid(**changes)
        return loaded

    def set_patch_grid(self, **changes: Any) -> None:
        """Change the patch grid of this model in place: its clip length, strides or mel count.

        The stored positional embeddings are resampled from the old patch grid to the new one (centre cut or
        bilinear interpolation, time first, the CLS and distillation rows kept), the rule of
        `ast_hf.checkpoint_surgery.retarget_state_dict`; the patch projection keeps its weights and takes the new
        strides. The same grid changes nothing.

        Args:
            **changes: New values of `max_length`, `frequency_stride`, `time_stride` and/or `num_mel_bins`.

        Raises:
            ValueError: For another field, or values that make an invalid config (the model is then unchanged).
        """
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
            if module.mask_token is not None:  # SSAST's initialisation of its mask embedding
                nn.init.xavier_normal_(module.mask_token)

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
        """Save the model, as `PreTrainedModel.save_pretrained`, with its code, crash-safely.

        The model's code files and an `auto_map` are written too, so that the directory loads with
        `trust_remote_code=True` where ast_hf is not installed.

        Crash safety: everything is first written to a hidden `.partial-PID-*` directory inside `save_directory`,
        then moved into place: the old weight files are removed first, the config and code moved next, the weights
        (the index of a sharded save last) at the end. A process killed at any moment, even by SIGKILL, leaves a
        directory that loads the previous model, loads the new one, or fails to load for want of weights; never
        one that loads the new config with the old weights or half a weight file. Other files in the directory
        (Trainer state, logs) are left alone, so the directory as a whole is not replaced atomically; for that
        see `ast_hf.convert.write_checkpoint`. Staging directories of killed saves are removed by the next save.

        Args:
            save_directory: The directory to write (created when missing).
            *args: Passed on to `PreTrainedModel.save_pretrained`.
            **kwargs: `PreTrainedModel.save_pretrained`'s options (`safe_serialization`, `max_shard_size`,
                `push_to_hub`, `is_main_process`, ...).
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
    """The AST encoder: a (batch, frames, mel bins) spectrogram to hidden states and a pooled output.

    The spectrogram is cut into 16x16 patches at the config's strides; the CLS and distillation tokens are
    prepended; the positional embeddings are resampled to the input's patch grid (`ast_hf.patch_grid`), so any
    length of at least one patch runs. The pooled output is, after the final LayerNorm, the mean of the CLS and
    distillation tokens (`config.pooling="cls"`, the default) or of the real audio's patch tokens ("mean").

    Args:
        config: The model's configuration.
        use_mask_token: Give the embeddings a learned mask token, which replaces the patches at `bool_masked_pos`
            (SSAST pretraining; `ASTForPreTraining` builds its encoder so).
    """

    def __init__(self, config: ASTConfig, use_mask_token: bool = False) -> None:
        super().__init__(config)
        self.embeddings = ASTEmbeddings(config, use_mask_token=use_mask_token)
        self.patchout = ASTPatchout(config)
        self.encoder = ASTEncoder(config)
        self.layernorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.post_init()

    def get_input_embeddings(self) -> ASTPatchEmbeddings:
        """The patch embedding module (what PEFT hooks for gradient checkpointing)."""
        return self.embeddings.patch_embeddings

    @merge_with_config_defaults
    @capture_outputs(tie_last_hidden_states=False)
    def forward(
        self,
        input_values: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        bool_masked_pos: torch.Tensor | None = None,
        **kwargs: Unpack[TransformersKwargs],
    ) -> BaseModelOutputWithPooling:
        """Encode a batch of spectrograms.

        Args:
            input_values: Normalised log-mel spectrograms, (batch, frames, `config.num_mel_bins`), from
                `ASTFeatureExtractor`; any number of frames of at least one patch (16).
            attention_mask: (batch, frames), 1 for real frames and 0 for padding, as the extractor returns it with
                `padding="longest", return_attention_mask=True`. The patches of padding are masked, so a clip's
                output in a padded batch equals its output alone. Rows must be right-padded (ones, then zeros, at
                least one real frame). numpy arrays and lists are accepted.
            bool_masked_pos: (batch, patches) booleans, True where a patch is replaced by the mask token (patches
                in frequency-major order); only for a model built with `use_mask_token=True`. Patchout is not
                applied to a masked batch.
            **kwargs: `output_hidden_states` (True, or the indices of the hidden states to return),
                `output_attentions`, `return_dict`, and options of the attention kernel, as in transformers' models
                (`interpolate_pos_encoding` is accepted and ignored: inputs of any size run).

        Returns:
            A `BaseModelOutputWithPooling`: `last_hidden_state` (batch, 2 + patches, hidden size), `pooler_output`
            (batch, hidden size; see `config.pooling`), and the hidden states and attentions when asked for.

        Raises:
            ValueError: For another mel-bin count (the message says whether the tensor looks transposed), fewer
                frames than one patch, a batch of 0 clips, NaN or Inf values, or a mask of another shape, left-padded,
                with holes or with values other than 0 and 1.
            TypeError: For input that is not a float torch tensor.
        """
        input_values = check_input_values(input_values, self.config)
        input_values = input_values.to(self.embeddings.patch_embeddings.projection.weight.dtype)
        time_patches = None if attention_mask is None else self._time_patches(attention_mask, input_values.shape)
        embeddings, grid = self.embeddings(input_values, time_patches, bool_masked_pos)  # (B, 2 + f*t, D), (f, t)
        real_columns = None
        if time_patches is not None:
            real_columns = torch.arange(grid[1], device=embeddings.device)[None, :] < time_patches[:, None]  # (B, t)
        if bool_masked_pos is None:  # Patchout would drop masked positions whose outputs the pretraining reads
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
        if self.config.pooling == "mean":  # SSAST: the mean of the real audio's patch tokens
            patches = sequence_output[:, NUM_PREFIX_TOKENS:]  # (B, f*t, D)
            if real_columns is None:
                pooled_output = patches.mean(dim=1)
            else:
                # On the output's device: with device_map="auto" the last layer may sit on another GPU than the first.
                real = token_mask(real_columns, grid[0])[:, NUM_PREFIX_TOKENS:, None].to(patches.device,
                                                                                       patches.dtype)  # (B, f*t, 1)
                pooled_output = (patches * real).sum(dim=1) / real.sum(dim=1)  # (B, D)
        else:
            pooled_output = (sequence_output[:, 0] + sequence_output[:, 1]) / 2  # (B, D)
        return BaseModelOutputWithPooling(last_hidden_state=sequence_output, pooler_output=pooled_output)

    def _attention_mask(self, tokens: torch.Tensor, embeddings: torch.Tensor, eager: bool) -> torch.Tensor | Any:
        """A (B, N) boolean token mask in the form the attention kernel takes."""
        if eager:
            mask = torch.zeros(tokens.shape, dtype=embeddings.dtype, device=embeddings.device)
            return mask.masked_fill_(~tokens, torch.finfo(embeddings.dtype).min)[:, None, None, :]  # (B, 1, 1, N)
        if self.config._attn_implementation == "sdpa":
            # A key mask that sdpa broadcasts over heads and queries, built without reading it back: transformers'
            # create_bidirectional_mask first asks whether it holds any padding (a device sync, and a graph break
            # under torch.compile) and then expands it to (B, 1, N, N).
            return tokens[:, None, None, :]  # (B, 1, 1, N) booleans, True where attended
        return create_bidirectional_mask(config=self.config, inputs_embeds=embeddings, attention_mask=tokens)

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
        patch = self.config.patch_shape[1]
        return patches_along(frames.clamp(min=patch), patch, self.config.time_stride).clamp(max=grid_t)


class ASTMLPHead(nn.Module):
    def __init__(self, config: ASTConfig) -> None:
        super().__init__()
        eps = getattr(config, "classifier_layer_norm_eps", None)
        self.layernorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps if eps is None else eps)
        self.dense = nn.Linear(config.hidden_size, config.num_labels) if config.num_labels > 0 else nn.Identity()

    def forward(self, pooled: torch.Tensor) -> torch.Tensor:
        return self.dense(self.layernorm(pooled))  # (B, num_labels)


@dataclass
class ASTForPreTrainingOutput(ModelOutput):
    """Output of `ASTForPreTraining`.

    Attributes:
        loss: The joint SSAST loss, `discriminative_loss_weight * discriminative_loss + generative_loss_weight *
            generative_loss` (the weights of the config).
        discriminative_loss: The InfoNCE loss of masked patch classification (None when its weight is 0).
        generative_loss: The MSE of masked patch reconstruction (None when its weight is 0).
        discriminative_accuracy: How often a masked position's output picks its own patch among the clip's masked
            patches (None when the discriminative weight is 0).
        bool_masked_pos: (batch, patches) the patches that were masked, frequency-major.
        reconstruction: (batch, masked per clip, patch values) the generative head's patches, in the order of the
            masked positions (None when the generative weight is 0).
        hidden_states: The hidden states, when asked for.
        attentions: The attention weights, when asked for.
    """

    loss: torch.FloatTensor | None = None
    discriminative_loss: torch.FloatTensor | None = None
    generative_loss: torch.FloatTensor | None = None
    discriminative_accuracy: torch.FloatTensor | None = None
    bool_masked_pos: torch.BoolTensor | None = None
    reconstruction: torch.FloatTensor | None = None
    hidden_states: tuple[torch.FloatTensor, ...] | None = None
    attentions: tuple[torch.FloatTensor, ...] | None = None


class ASTPreTrainingHead(nn.Module):
    """SSAST's prediction layer: Linear(D, D), ReLU, Linear(D, patch values) on a masked position's output."""

    def __init__(self, config: ASTConfig) -> None:
        super().__init__()
        patch_f, patch_t = config.patch_shape
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)
        self.activation = nn.ReLU()
        self.projection = nn.Linear(config.hidden_size, patch_f * patch_t)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return self.projection(self.activation(self.dense(hidden_states)))  # (..., patch_f * patch_t)


def spectrogram_patches(input_values: torch.Tensor, patch_shape: tuple[int, int],
                        strides: tuple[int, int]) -> torch.Tensor:
    """(B, T, F) spectrogram -> (B, f * t, patch_f * patch_t) raw patch values, patches frequency-major (the order
    of the patch embeddings) and each patch's values frequency-major, as SSAST's `nn.Unfold` of (B, 1, F, T)."""
    spectrogram = input_values.transpose(1, 2).unsqueeze(1)  # (B, 1, F, T)
    return F.unfold(spectrogram, kernel_size=patch_shape, stride=strides).transpose(1, 2)  # (B, f * t, P)


def sample_patch_mask(grid: tuple[int, int], time_patches: Any, num_masked: int, masking: str,
                      generator: torch.Generator | None = None, device: Any = None) -> torch.Tensor:
    """Draw SSAST's masked patches, the same count in every clip, with tensor operations only (no Python loop over
    clips or neighbourhoods, nothing read back from the device).

    "cluster" (the authors' masking of 16x16 patches): square neighbourhoods of c x c patches, c drawn once per clip
    from 3, 4 and 5, at random corners, taken in order until `num_masked` patches are covered; the last neighbourhood
    contributes a random part of its new patches so that the count is exact. (The authors' code draws corners over
    the flattened grid, so a neighbourhood that passes the right edge continues on the next rows, and cuts the union
    to size by set order; here neighbourhoods stop at the grid's edges and the cut is random.) The corners are drawn
    all at once, more than the count needs; in the rare draw where they cover too few patches, the rest are random
    real patches. "random" (their masking of frame patches): patches drawn uniformly without replacement. Only the
    clip's real time columns (`time_patches`) are masked; each clip must have at least `num_masked` real patches.

    Args:
        grid: The (f, t) patch grid of the batch.
        time_patches: Each clip's real time columns (t for an unpadded clip): a list or a (B,) tensor.
        num_masked: Patches masked per clip.
        masking: "cluster" or "random".
        generator: The random generator (None: torch's global one, on `device`). Its numbers are drawn on its own
            device and moved to `device`.
        device: Where the mask is made; None for the device of a `time_patches` tensor (the CPU for a list).

    Returns:
        (B, f * t) booleans, True at the masked patches, frequency-major.
    """
    grid_f, grid_t = grid
    columns = torch.as_tensor(time_patches, dtype=torch.long)
    device = columns.device if device is None else torch.device(device)
    columns = columns.to(device)  # (B,)
    batch = columns.shape[0]

    def uniform(*shape: int) -> torch.Tensor:  # [0, 1) on `device`
        if generator is None:
            return torch.rand(shape, device=device)
        return torch.rand(shape, generator=generator, device=generator.device).to(device)

    rows = torch.arange(grid_f, device=device)[None, :, None]  # (1, f, 1)
    cols = torch.arange(grid_t, device=device)[None, None, :]  # (1, 1, t)
    real = (cols < columns[:, None, None]).expand(batch, grid_f, grid_t)  # (B, f, t)
    key = uniform(batch, grid_f, grid_t)  # (B, f, t): a random order of the patches
    if masking == "cluster":
        draws = 4 * -(-num_masked // 9) + 8  # neighbourhoods of at least 9 patches: several times what is needed
        size = 3 + (uniform(batch) * 3).long()  # (B,): 3, 4 or 5
        top = (uniform(batch, draws) * grid_f).long()  # (B, K)
        left = (uniform(batch, draws) * columns[:, None]).long()  # (B, K), within the real columns
        top, left, bottom, right = (corner[:, None, None, :] for corner in (top, left, top + size[:, None],
                                                                            left + size[:, None]))  # (B, 1, 1, K)
        in_rows = (rows[..., None] >= top) & (rows[..., None] < bottom)  # (B, f, 1, K)
        in_cols = (cols[..., None] >= left) & (cols[..., None] < right)  # (B, 1, t, K)
        order = torch.arange(draws, device=device)
        first = torch.where(in_rows & in_cols, order, draws).amin(dim=-1)  # (B, f, t): the first covering draw
        key = first + key  # earlier neighbourhoods first; within one, and among the uncovered, random
    key = key.masked_fill(~real, float("inf"))
    chosen = key.flatten(1).topk(num_masked, dim=1, largest=False).indices  # (B, M)
    return torch.zeros(batch, grid_f * grid_t, dtype=torch.bool, device=device).scatter_(1, chosen, True)


class ASTForAudioClassification(ASTPreTrainedModel):
    """The AST with a LayerNorm + Linear head on the pooled output: audio classification and tagging.

    Args:
        config: The model's configuration; `num_labels` (or `id2label`) sets the head, `problem_type` the loss.

    Example:
        ```python
        model = ASTForAudioClassification.from_pretrained("path/or/hub-id")
        extractor = AutoFeatureExtractor.from_pretrained("path/or/hub-id")
        logits = model(**extractor(clips, sampling_rate=16000, return_tensors="pt")).logits
        ```
    """

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
        """Classify a batch of spectrograms; with `labels`, also compute the loss.

        Args:
            input_values: Normalised log-mel spectrograms, (batch, frames, `config.num_mel_bins`), as
                `ASTFeatureExtractor` returns them; any number of frames of at least one patch.
            attention_mask: (batch, frames), 1 for real frames and 0 for padding, right-padded (see `ASTModel`).
            labels: Class indices (batch,) for single-label classification, multi-hot (batch, num_labels) floats
                for multi-label, or (batch,) / (batch, num_labels) targets for regression; numpy arrays and lists
                are converted. The loss follows `config.problem_type`; when it is unset, it is inferred as
                transformers does (one label: regression; int64/int32 labels: single-label; otherwise multi-label),
                except that 1-D labels of any integer type (int16, uint8, ...) are class indices. With single-label
                classification, float labels of shape (batch, num_labels) are class probabilities (mixup, label
                smoothing) and the loss is the cross-entropy against them. -100 is ignored.
            **kwargs: `output_hidden_states`, `output_attentions`, `return_dict` and attention-kernel options, as in
                `ASTModel.forward`.

        Returns:
            A `SequenceClassifierOutput`: `logits` (batch, num_labels), `loss` when labels are given, and the
            hidden states and attentions when asked for.

        Raises:
            ValueError: For labels of another batch size, class indices outside [0, num_labels), labels that fit
                no loss (e.g. 1-D floats without a `problem_type`), and every input error of `ASTModel.forward`.
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
        problem_type = label_problem_type(labels, logits.shape, self.config.problem_type, self.num_labels)
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


class ASTForPreTraining(ASTPreTrainedModel):
    """The AST encoder with SSAST's self-supervised pretraining heads (Gong, Lai, Chung, Glass, "SSAST:
    Self-Supervised Audio Spectrogram Transformer", AAAI 2022, arXiv 2110.09784): masked spectrogram patch modelling.

    `config.mask_patches` patches of each clip are replaced by a learned mask embedding (`config.masking`: cluster
    masking for 16x16 patches, random for frame patches such as [128, 2]); from each masked position's output,
    - a discriminative head predicts a vector that must pick the position's own patch among the clip's masked
      patches (InfoNCE over the dot products with the raw patch values; its accuracy is reported), and
    - a generative head reconstructs the patch's values (MSE),
    and the loss is `discriminative_loss_weight * InfoNCE + generative_loss_weight * MSE` (1 and 10, the authors'
    joint objective; their code runs the two objectives in two forward passes with independent masks, here both
    heads read one masked pass, which estimates the same objective at half the cost). Patches must not overlap
    (strides = patch size), as in the authors' pretraining: a masked patch would otherwise show through its
    neighbours. The saved checkpoint loads into `ASTForAudioClassification` (a new head) and, with
    `time_stride=10, frequency_stride=10` given to `from_pretrained`, fine-tunes with overlapping patches, the
    positional embeddings resampled to the new grid.

    In training mode the masks are drawn from torch's global generator (seeded by the Trainer, restored on resume);
    in eval mode from a generator seeded with 0 at each call, so that evaluation losses are repeatable.

    Args:
        config: The model's configuration (`mask_patches`, `masking`, the two loss weights).

    Example:
        ```python
        config = ASTConfig(frequency_stride=16, time_stride=16, max_length=1024, mask_patches=400)
        model = ASTForPreTraining(config)
        output = model(**extractor(clips, sampling_rate=16000, return_tensors="pt"))
        output.loss.backward()  # output.discriminative_accuracy, output.generative_loss, ...
        ```
    """

    def __init__(self, config: ASTConfig) -> None:
        super().__init__(config)
        self.audio_spectrogram_transformer = ASTModel(config, use_mask_token=True)
        self.discriminative_head = ASTPreTrainingHead(config)
        self.generative_head = ASTPreTrainingHead(config)
        self.post_init()

    def forward(
        self,
        input_values: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        bool_masked_pos: torch.Tensor | None = None,
        labels: Any = None,
        **kwargs: Unpack[TransformersKwargs],
    ) -> ASTForPreTrainingOutput:
        """Mask patches of a batch of spectrograms and compute SSAST's losses.

        Args:
            input_values: Normalised log-mel spectrograms, (batch, frames, `config.num_mel_bins`), from
                `ASTFeatureExtractor`.
            attention_mask: (batch, frames), 1 for real frames and 0 for padding, right-padded (see `ASTModel`);
                only patches of real frames are masked.
            bool_masked_pos: (batch, patches) booleans, True at the patches to mask, the same count in every clip;
                None (default) draws `config.mask_patches` per clip by `config.masking`.
            labels: Not taken: pretraining learns from the audio alone; given, it is refused.
            **kwargs: `output_hidden_states`, `output_attentions`, `return_dict` and attention-kernel options.

        Returns:
            An `ASTForPreTrainingOutput` with the joint loss, both losses, the discriminative accuracy and the mask.

        Raises:
            ValueError: For overlapping patches (a stride below the patch size) or more masked patches than a
                max_length clip has; for labels; for a clip with fewer real patches than `config.mask_patches`; for a
                `bool_masked_pos` of another shape, with different counts per clip, none, or masking padding;
                for Patchout settings in training; and every input error of `ASTModel.forward`.
        """
        if labels is not None:
            raise ValueError("ASTForPreTraining learns from the audio alone and takes no labels. Pass input_values "
                             "(and attention_mask) only; to train on labels, use ASTForAudioClassification.")
        config = self.config
        self._check_geometry()
        if self.training and (config.patchout_time or config.patchout_frequency):
            raise ValueError(f"Patchout (patchout_time={config.patchout_time}, patchout_frequency="
                             f"{config.patchout_frequency}) would drop the masked positions that SSAST learns from; "
                             "set both to 0 for pretraining.")
        input_values = check_input_values(input_values, config, values=False)  # values: by the encoder's call
        encoder = self.audio_spectrogram_transformer
        grid = config.patch_grid_for(input_values.shape[1], input_values.shape[2])
        time_patches = None if attention_mask is None else encoder._time_patches(attention_mask, input_values.shape)
        drawn = bool_masked_pos is None
        bool_masked_pos = self._masked_positions(bool_masked_pos, grid, time_patches, input_values.shape[0])
        bool_masked_pos = bool_masked_pos.to(input_values.device)
        outputs = encoder(input_values, attention_mask=attention_mask, bool_masked_pos=bool_masked_pos,
                          return_dict=True, **kwargs)

        # The masked positions in ascending order, M per clip (checked above, or config.mask_patches when drawn),
        # gathered without boolean indexing, whose result size would have to be read back from the device.
        num_masked = config.mask_patches if drawn else int(bool_masked_pos[0].sum())
        number = bool_masked_pos.shape[1]
        order = torch.arange(number, device=bool_masked_pos.device).expand_as(bool_masked_pos)
        positions = torch.where(bool_masked_pos, order, number).sort(dim=1).values[:, :num_masked]  # (B, M)
        tokens = outputs.last_hidden_state[:, NUM_PREFIX_TOKENS:]  # (B, N, D)
        masked_tokens = tokens.gather(1, positions[..., None].expand(-1, -1, tokens.shape[-1]))  # (B, M, D)
        patches = spectrogram_patches(input_values, config.patch_shape, (config.frequency_stride, config.time_stride))
        targets = patches.gather(1, positions[..., None].expand(-1, -1, patches.shape[-1])).float()  # (B, M, P)

        loss = discriminative_loss = accuracy = generative_loss = reconstruction = None
        if config.discriminative_loss_weight:
            predictions = self.discriminative_head(masked_tokens).float()  # (B, M, P)
            # In float32 under autocast too: bmm is on autocast's half-precision list, where the near-equal scores of
            # similar patches round to ties.
            kind = targets.device.type
            with torch.autocast(kind, enabled=False) if torch.amp.is_autocast_available(kind) else nullcontext():
                scores = torch.bmm(targets, predictions.transpose(1, 2))  # (B, M targets, M predictions)
            # Each target row's own prediction is on the diagonal (equation 1 of the SSAST paper).
            discriminative_loss = -torch.diagonal(F.log_softmax(scores, dim=-1), dim1=1, dim2=2).mean()
            own = torch.arange(num_masked, device=scores.device)
            # As the authors count it: the softmax over a target's predictions, then for each prediction the target
            # where it scores highest must be its own.
            accuracy = (F.softmax(scores, dim=-1).argmax(dim=1) == own).float().mean()
            loss = config.discriminative_loss_weight * discriminative_loss
        if config.generative_loss_weight:
            reconstruction = self.generative_head(masked_tokens).float()  # (B, M, P)
            generative_loss = F.mse_loss(reconstruction, targets)
            weighted = config.generative_loss_weight * generative_loss
            loss = weighted if loss is None else loss + weighted
        return ASTForPreTrainingOutput(loss=loss, discriminative_loss=discriminative_loss,
                                       generative_loss=generative_loss, discriminative_accuracy=accuracy,
                                       bool_masked_pos=bool_masked_pos, reconstruction=reconstruction,
                                       hidden_states=outputs.hidden_states, attentions=outputs.attentions)

    def _check_geometry(self) -> None:
        """Patches without overlap, and no more masked patches than a max_length clip has. Checked at each forward
        rather than when the model is built, so that `from_pretrained` may load an overlapping AST checkpoint with
        new strides (its positional embeddings resampled) to pretrain it further."""
        config = self.config
        strides = (config.frequency_stride, config.time_stride)
        if strides != config.patch_shape:
            raise ValueError(
                f"SSAST pretraining cuts patches without overlap, but the strides {strides} differ from the patch "
                f"{config.patch_shape} (patch_size={config.patch_size}): a masked patch would show through its "
                f"neighbours. Set frequency_stride={config.patch_shape[0]} and time_stride={config.patch_shape[1]}; "
                "fine-tune with overlap afterwards (ASTForAudioClassification.from_pretrained(path, time_stride=10, "
                "frequency_stride=10))."
            )
        grid_f, grid_t = config.patch_grid
        if config.mask_patches > grid_f * grid_t:
            raise ValueError(
                f"mask_patches={config.mask_patches} is more than the {grid_f * grid_t} patches ({grid_f} x {grid_t}) "
                f"of a max_length={config.max_length} clip. Mask fewer (the authors mask 400 of 512, 78%: about "
                f"{round(grid_f * grid_t * 400 / 512)} here) or pretrain on longer clips.")

    def _masked_positions(self, given: Any, grid: tuple[int, int], time_patches: torch.Tensor | None,
                          batch_size: int) -> torch.Tensor:
        """The (B, f*t) mask: drawn (config.mask_patches per clip), or the given one, checked."""
        device = self.audio_spectrogram_transformer.embeddings.position_embeddings.device
        columns = torch.full((batch_size,), grid[1], device=device) if time_patches is None else time_patches  # (B,)
        if given is None:
            if time_patches is not None and values_checked(columns):  # on a GPU: see values_checked
                fewest = int(columns.min())
                if self.config.mask_patches > grid[0] * fewest:
                    clip = int(columns.argmin())
                    raise ValueError(
                        f"mask_patches={self.config.mask_patches}, but clip {clip} of the batch has only "
                        f"{grid[0] * fewest} patches ({grid[0]} x {fewest} of {self.config.patch_shape[0]} mel bins x "
                        f"{self.config.patch_shape[1]} frames). Mask fewer patches (config.mask_patches, "
                        "--mask_patches; the authors mask 400 of 512) or use longer clips (pad to max_length).")
            generator = None if self.training else torch.Generator().manual_seed(0)
            return sample_patch_mask(grid, columns, self.config.mask_patches, self.config.masking, generator)
        columns = columns.cpu()
        real_columns = torch.arange(grid[1])[None, :] < columns[:, None]  # (B, t)
        real = token_mask(real_columns, grid[0])[:, NUM_PREFIX_TOKENS:]  # (B, f*t): patches of real frames
        mask = as_tensor("bool_masked_pos", given)
        if mask.shape != real.shape:
            raise ValueError(f"bool_masked_pos has shape {tuple(mask.shape)}; this batch needs {tuple(real.shape)} "
                             f"(batch, {grid[0]} x {grid[1]} patches, frequency-major).")
        mask = mask.cpu().bool()
        counts = mask.sum(dim=1)
        if int(counts.min()) < 1 or bool((counts != counts[0]).any()):
            raise ValueError(f"bool_masked_pos masks {counts.tolist()} patches in the clips: mask at least one, and "
                             "the same number in every clip (InfoNCE compares a clip's masked patches).")
        if bool((mask & ~real).any()):
            raise ValueError("bool_masked_pos masks patches of padding (beyond a clip's real frames in "
                             "attention_mask); mask real patches only.")
        return mask


ASTModel.register_for_auto_class("AutoModel")
ASTForAudioClassification.register_for_auto_class("AutoModelForAudioClassification")
ASTForPreTraining.register_for_auto_class("AutoModelForPreTraining")

__all__ = ["ASTForAudioClassification", "ASTForPreTraining", "ASTForPreTrainingOutput", "ASTModel", "ASTPatchout",
           "ASTPreTrainedModel", "sample_patch_mask", "spectrogram_patches"]
