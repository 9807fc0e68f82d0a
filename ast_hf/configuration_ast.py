"""Configuration of the Audio Spectrogram Transformer (Gong, Chung, Glass, Interspeech 2021, arXiv 2104.01778).

The fields and defaults are those of transformers' built-in AST config, so a ``config.json`` written by either
loads into the other. The config is the single source of truth for every module of ``modeling_ast.py``.
"""

from __future__ import annotations

import numbers
import os
from collections.abc import Callable
from typing import Any

from transformers import PreTrainedConfig
from transformers.activations import ACT2FN
from transformers.utils import logging

logger = logging.get_logger(__name__)

# model_type written by transformers' own port; its config.json files are accepted by ASTConfig.from_dict.
BUILTIN_AST_MODEL_TYPE = "audio-spectrogram-transformer"
AST_MODEL_TYPES = ("ast_hf", BUILTIN_AST_MODEL_TYPE)
"""The `model_type` of both kinds of AST checkpoint ast_hf loads: its own ("ast_hf", `ASTConfig.model_type`) and
transformers' built-in port ("audio-spectrogram-transformer")."""


# Integer fields and their smallest valid value (checked in ASTConfig.validate_fields).
_INTEGER_FIELDS = {"hidden_size": 1, "num_hidden_layers": 1, "num_attention_heads": 1, "intermediate_size": 1,
                   "frequency_stride": 1, "time_stride": 1, "max_length": 1, "num_mel_bins": 1,
                   "patchout_time": 0, "patchout_frequency": 0, "mask_patches": 1}
POOLINGS = ("cls", "mean")
"""Values of `ASTConfig.pooling`: "cls", the mean of the CLS and distillation tokens (AST); "mean", the mean of the
patch tokens of the real audio (SSAST's default for fine-tuning a self-supervised encoder)."""
MASKINGS = ("cluster", "random")
"""Values of `ASTConfig.masking` (SSAST pretraining): "cluster", square neighbourhoods of 3x3 to 5x5 patches (the
authors' choice for 16x16 patches); "random", patches drawn one by one (their choice for 128x2 frame patches)."""


class ASTConfig(PreTrainedConfig):
    """Configuration of an `ASTModel` / `ASTForAudioClassification`.

    The defaults give the AudioSet model of the paper (`MIT/ast-finetuned-audioset-10-10-0.4593`): ViT-Base, 16x16
    patches with overlap 6, 1024 frames. The fields the two share have the names and defaults of transformers'
    built-in AST config, so a `config.json` written by either loads into the other. transformers'
    `PreTrainedConfig` arguments (`id2label`, `label2id`, `problem_type`, ...) are accepted too.

    Checks, with errors that name the field, the value and a fix:

    - each field on its own when the config is built (also by `from_pretrained`): a size given as a string or a
      float raises a TypeError; a size below its minimum (heads, layers, width < 1), dropout outside [0, 1] or an
      unknown activation a ValueError (`validate_fields`);
    - the fields together in `validate_architecture` (heads divide `hidden_size`, strides <= `patch_size`, the
      stored grid holds at least one patch), run when a model is built from the config and by `validate()`, which
      transformers calls in `save_pretrained`. A config may thus be edited field by field in between:
      `ASTConfig(hidden_size=64)` (12 heads) is fine until a model is built from it or it is saved.

    Keyword Args:
        hidden_size (int): Width of every token (ViT/DeiT-Base); default 768.
        num_hidden_layers (int): Number of pre-LN Transformer encoder layers; default 12.
        num_attention_heads (int): Heads per self-attention; must divide `hidden_size`; default 12.
        intermediate_size (int): Width of the MLP inside each layer (4 x hidden_size); default 3072.
        hidden_act (str): Activation of the MLP; default "gelu" (exact erf GELU, as in DeiT).
        hidden_dropout_prob (float): Dropout after embeddings, attention output and MLP; default 0.0.
        attention_probs_dropout_prob (float): Dropout on the attention probabilities; default 0.0.
        initializer_range (float): Std of the truncated normal used for fresh weights; default 0.02.
        layer_norm_eps (float): LayerNorm epsilon; default 1e-12, as in every MIT/ast-* Hub config (their reference
            logits were made with it); models converted from timm/DeiT use 1e-6.
        classifier_layer_norm_eps (float | None): Epsilon of the classifier head's LayerNorm alone; default None,
            which uses `layer_norm_eps`. The authors' head is `nn.LayerNorm(768)` (1e-5) on a timm encoder (1e-6),
            so their converted checkpoints set 1e-5. transformers' built-in AST has no such field (its head uses
            `layer_norm_eps`).
        patch_size (int | list[int]): Square patch side in (mel bins, frames), default 16 so that DeiT weights
            transfer; or a [mel bins, frames] pair for other shapes, such as SSAST's frame patches [128, 2] (one patch
            spans the whole mel axis and 2 frames). `patch_shape` gives the pair either way.
        qkv_bias (bool): Bias on the query/key/value projections; default True.
        frequency_stride (int): Stride of the patch split along frequency; default 10 (16 means no overlap). At
            most `patch_size`: a larger stride would leave mel bins between patches that the model never sees, so
            it is refused with a ValueError.
        time_stride (int): Stride of the patch split along time; default 10 (16 means no overlap). At most
            `patch_size`, for the same reason (a gap of frames between patches is refused, not warned about).
        max_length (int): Frames of the stored positional grid; default 1024 (10.24 s at 100 frames/s). Inputs of
            any other length still run: see `ASTEmbeddings`.
        num_mel_bins (int): Mel bins of the input and of the stored positional grid; default 128. Inputs with
            another count are refused (frames may vary, the mel scale may not).
        patchout_time (int): Time columns of patches dropped at random in each training forward (structured
            Patchout, Koutini et al. 2021); default 0, which keeps all. Never applied in eval mode.
        patchout_frequency (int): Frequency rows of patches dropped likewise; default 0.
        pooling (str): What `ASTModel`'s pooled output (the classifier head's input) is: "cls" (default), the mean
            of the CLS and distillation tokens after the final LayerNorm (AST); "mean", the mean of the patch
            tokens of the real audio (SSAST's default for fine-tuning, as its pretraining trains the patch tokens
            and never the CLS token).
        mask_patches (int): SSAST pretraining (`ASTForPreTraining`): patches masked in each clip; default 400, the
            authors' setting for 512-patch clips (78%). A clip with fewer real patches is refused.
        masking (str): SSAST pretraining: how masked patches are drawn: "cluster" (default; neighbourhoods of 3x3
            to 5x5 patches, the authors' choice for 16x16 patches) or "random" (their choice for frame patches).
        discriminative_loss_weight (float): SSAST pretraining: weight of the InfoNCE loss (each masked position
            picks its own patch among the clip's masked patches); default 1.0. 0 leaves it out.
        generative_loss_weight (float): SSAST pretraining: weight of the reconstruction MSE; default 10.0, the
            authors' weighting of their joint objective. 0 leaves it out.

    Raises:
        TypeError: When an integer field is not an int (e.g. a string or a float).
        ValueError: When a field is out of range or the activation is unknown (see `validate_fields`).

    Example:
        ```python
        config = ASTConfig(max_length=512, time_stride=16)  # 5.12 s clips, no overlap along time
        config.patch_grid  # (12, 32)
        ```
    """

    model_type = "ast_hf"

    hidden_size: int = 768
    num_hidden_layers: int = 12
    num_attention_heads: int = 12
    intermediate_size: int = 3072
    hidden_act: str = "gelu"
    hidden_dropout_prob: float = 0.0
    attention_probs_dropout_prob: float = 0.0
    initializer_range: float = 0.02
    layer_norm_eps: float = 1e-12
    # None keeps the head on layer_norm_eps, so built-in configs (which lack the field) load unchanged.
    classifier_layer_norm_eps: float | None = None
    patch_size: int = 16
    qkv_bias: bool = True
    frequency_stride: int = 10
    time_stride: int = 10
    # Declared so that transformers 5 does not mistake it for a generation parameter on save_pretrained.
    max_length: int = 1024
    num_mel_bins: int = 128
    # Training-only token dropping (PaSST): fewer tokens make each step cheaper and regularise.
    patchout_time: int = 0
    patchout_frequency: int = 0
    # "cls" keeps AST's pooled output (and transformers' built-in AST's); SSAST fine-tunes with "mean".
    pooling: str = "cls"
    # SSAST pretraining (ASTForPreTraining): the authors' 400 masked patches, cluster masking, 1:10 loss weights.
    mask_patches: int = 400
    masking: str = "cluster"
    discriminative_loss_weight: float = 1.0
    generative_loss_weight: float = 10.0

    def __post_init__(self, **kwargs: Any) -> None:
        super().__post_init__(**kwargs)
        self.validate_fields()

    # Not @strict like some transformers configs: strict's type checks raise huggingface_hub's own error types (not
    # TypeError/ValueError), refuse numpy integers, and would run validate_architecture at construction.
    def validate(self) -> None:
        """Check the whole config: transformers' own validators, then `validate_fields` and `validate_architecture`.

        transformers calls it in `save_pretrained`; every AST model's `__init__` runs the last two.

        Raises:
            TypeError: As `validate_fields` does.
            ValueError: As transformers' validators, `validate_fields` and `validate_architecture` do.
        """
        super().validate()
        self.validate_fields()
        self.validate_architecture()

    def validate_fields(self) -> None:
        """Check each field on its own: types (ints, probabilities, a known activation) and minimums.

        Run when the config is built. Integer fields given as numpy integers are stored as plain ints (so that they
        serialise to config.json).

        Raises:
            TypeError: When an integer field (sizes, strides, lengths, Patchout) is not an int, e.g. a string, a
                float or a bool.
            ValueError: When an integer field is below its minimum (1, or 0 for Patchout); a dropout probability is
                not in [0, 1]; `layer_norm_eps` or `classifier_layer_norm_eps` (which may be None) is not a small
                positive number; `hidden_act` is not a key of `transformers.activations.ACT2FN`.
        """
        # Plain ValueErrors/TypeErrors (not huggingface_hub's strict-dataclass errors) so that callers can catch them.
        # Types first: a size given as "64" would otherwise fail later inside string formatting or torch.
        for name, minimum in _INTEGER_FIELDS.items():
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, numbers.Integral):
                raise TypeError(f"{name}={value!r} is a {type(value).__name__}; it must be an int (e.g. "
                                f"{name}={type(self).__dataclass_fields__[name].default}).")
            setattr(self, name, int(value))  # numpy integers would not serialise to config.json
            if value < minimum:
                raise ValueError(f"{name}={value} must be >= {minimum}.")
        for name in ("hidden_dropout_prob", "attention_probs_dropout_prob"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, numbers.Real) or not 0.0 <= value <= 1.0:
                raise ValueError(f"{name}={value!r} must be a probability in [0, 1].")
        for name in ("layer_norm_eps", "classifier_layer_norm_eps"):
            value = getattr(self, name)
            if value is None and name == "classifier_layer_norm_eps":
                continue
            if isinstance(value, bool) or not isinstance(value, numbers.Real) or not 0.0 < value < 1.0:
                raise ValueError(f"{name}={value!r} must be a small positive number (1e-12, 1e-6 or 1e-5)"
                                 + (", or None for layer_norm_eps." if name == "classifier_layer_norm_eps" else "."))
        self._check_patch_size()
        for name, choices in (("pooling", POOLINGS), ("masking", MASKINGS)):
            if getattr(self, name) not in choices:
                raise ValueError(f"{name}={getattr(self, name)!r} is not one of {', '.join(map(repr, choices))}.")
        weights = ("discriminative_loss_weight", "generative_loss_weight")
        for name in weights:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, numbers.Real) or not 0.0 <= value < float("inf"):
                raise ValueError(f"{name}={value!r} must be a number >= 0 (0 leaves that loss out).")
        if not any(getattr(self, name) for name in weights):
            raise ValueError("discriminative_loss_weight and generative_loss_weight are both 0: SSAST pretraining "
                             "would have no loss. Keep at least one above 0 (the authors use 1 and 10).")
        if not isinstance(self.hidden_act, str) or self.hidden_act not in ACT2FN:
            raise ValueError(f"hidden_act={self.hidden_act!r} is not an activation transformers knows; use 'gelu' "
                             "(DeiT's) or another key of transformers.activations.ACT2FN.")

    def _check_patch_size(self) -> None:
        value = self.patch_size
        sides = list(value) if isinstance(value, (list, tuple)) else [value]
        if len(sides) not in (1, 2) or any(isinstance(side, bool) or not isinstance(side, numbers.Integral)
                                           for side in sides):
            raise TypeError(f"patch_size={value!r} is a {type(value).__name__}; it must be an int (a square patch, "
                            "e.g. 16) or a [mel bins, frames] pair of ints (e.g. [128, 2], SSAST's frame patches).")
        if min(sides) < 1:
            raise ValueError(f"patch_size={value!r}: every side must be >= 1.")
        sides = [int(side) for side in sides]
        # A square pair is stored as one int, as transformers' built-in AST config (and its models) expect.
        self.patch_size = sides[0] if len(sides) == 1 or sides[0] == sides[1] else sides

    @property
    def patch_shape(self) -> tuple[int, int]:
        """The (mel bins, frames) of one patch: (16, 16) for `patch_size=16`, (128, 2) for `[128, 2]`."""
        size = self.patch_size
        return (int(size[0]), int(size[1])) if isinstance(size, (list, tuple)) else (size, size)

    def validate_architecture(self) -> None:
        """Check the fields together: heads divide the width, strides <= patch_size, the stored grid holds a patch.

        Run when a model is built from the config and by `validate`.

        Raises:
            ValueError: When `num_attention_heads` does not divide `hidden_size` (the message proposes head
                counts); when `frequency_stride` or `time_stride` is larger than `patch_size`; when `num_mel_bins` or
                `max_length` is smaller than `patch_size`; as transformers' own `validate_architecture` does.
        """
        super().validate_architecture()
        if self.hidden_size % self.num_attention_heads != 0:
            # 64-wide heads as in ViT/DeiT where hidden_size allows, else the divisors up to 16.
            usual = self.hidden_size // 64 if self.hidden_size % 64 == 0 else None
            divisors = [h for h in range(1, 17) if self.hidden_size % h == 0]
            raise ValueError(
                f"hidden_size={self.hidden_size} is not a multiple of num_attention_heads="
                f"{self.num_attention_heads}; pick a head count that divides it: "
                + (f"{usual} (64-wide heads, as ViT/DeiT)" if usual else f"one of {divisors}") + "."
            )
        self._check_patch_geometry()

    def _check_patch_geometry(self) -> None:
        square = self.patch_shape[0] == self.patch_shape[1]
        for name, side in zip(("frequency_stride", "time_stride"), self.patch_shape, strict=True):
            # A stride beyond the patch leaves bins/frames between patches that no patch covers: part of every
            # clip would be ignored without a sign. No AST checkpoint does this, so it is refused.
            unit = "mel bins" if name == "frequency_stride" else "frames"
            if getattr(self, name) > side:
                patch = f"patch_size={side}" if square else f"patch_size={self.patch_size} ({side} {unit})"
                raise ValueError(
                    f"{name}={getattr(self, name)} is larger than {patch}: {getattr(self, name) - side} {unit}"
                    f" between neighbouring patches would never be seen. Use a stride <= {side} "
                    f"({side} = no overlap; the paper uses 10 with 16x16 patches)."
                )
        for name, side in zip(("num_mel_bins", "max_length"), self.patch_shape, strict=True):
            if getattr(self, name) < side:
                patch = f"patch_size={side}" if square else f"patch_size={self.patch_size} ({side} along it)"
                raise ValueError(
                    f"{name}={getattr(self, name)} is smaller than {patch}: the stored grid would hold no patch. "
                    f"Use at least {side}."
                )

    def patch_grid_for(self, num_frames: int, num_mel_bins: int | None = None) -> tuple[int, int]:
        """Count the patches of a spectrogram split by this config's patch size and strides.

        Args:
            num_frames: Frames (time) of the spectrogram.
            num_mel_bins: Mel bins of the spectrogram; None (default) uses the config's.

        Returns:
            (frequency, time) patches of the (num_frames, num_mel_bins) spectrogram.

        Raises:
            ValueError: When the spectrogram is smaller than one patch; the message says how to fix the input.

        Example:
            ```python
            ASTConfig().patch_grid_for(1024)  # (12, 101)
            ```
        """
        num_mel_bins = self.num_mel_bins if num_mel_bins is None else num_mel_bins
        return patch_grid_size(num_mel_bins, num_frames, self.patch_shape, self.frequency_stride, self.time_stride)

    @property
    def patch_grid(self) -> tuple[int, int]:
        """The (frequency, time) patches of the stored positional grid, e.g. (12, 101) for the defaults.

        Raises a ValueError when the strides or the grid do not fit `patch_size` (see `validate_architecture`).
        """
        self._check_patch_geometry()
        return self.patch_grid_for(self.max_length)

    @classmethod
    def get_config_dict(cls, *args: Any, **kwargs: Any) -> tuple[dict[str, Any], dict[str, Any]]:
        """Read a config dict as transformers does, accepting transformers' built-in AST config.json too.

        A built-in config ("audio-spectrogram-transformer") gets model_type "ast_hf" and loses its `architectures`
        (the names of the built-in classes).

        Args:
            *args: transformers' `PretrainedConfig.get_config_dict` arguments: the Hub id or folder.
            **kwargs: Its keyword arguments (`cache_dir`, `revision`, ...).

        Returns:
            The config dict and the keyword arguments left unused.
        """
        config_dict, kwargs = super().get_config_dict(*args, **kwargs)
        return _from_builtin_ast(config_dict), kwargs

    @classmethod
    def from_dict(cls, config_dict: dict[str, Any], **kwargs: Any):
        """Build a config from a dict, accepting transformers' built-in AST config dicts too.

        Args:
            config_dict: The config's fields; one with model_type "audio-spectrogram-transformer" is read as ast_hf's.
            **kwargs: transformers' `PretrainedConfig.from_dict` keyword arguments (field overrides,
                `return_unused_kwargs`).

        Returns:
            (ASTConfig): The config (with the unused keyword arguments when `return_unused_kwargs`).
        """
        return super().from_dict(_from_builtin_ast(config_dict), **kwargs)


def _from_builtin_ast(config_dict: dict[str, Any]) -> dict[str, Any]:
    """transformers' built-in AST config.json has the same fields under model_type "audio-spectrogram-transformer"."""
    if config_dict.get("model_type") != BUILTIN_AST_MODEL_TYPE:
        return config_dict
    config_dict = dict(config_dict, model_type=ASTConfig.model_type)
    config_dict.pop("architectures", None)  # names of the built-in classes, not ours
    return config_dict


def patch_grid_size(num_mel_bins: int, num_frames: int, patch_size: int | tuple[int, int], frequency_stride: int,
                    time_stride: int) -> tuple[int, int]:
    """Number of (frequency, time) patches of a Conv2d(kernel=patch_size, stride=(fs, ts)) over (F, T); `patch_size`
    is a square side or a (mel bins, frames) pair."""
    patch_f, patch_t = patch_size if isinstance(patch_size, (list, tuple)) else (patch_size, patch_size)
    if num_mel_bins < patch_f:
        raise ValueError(
            f"The spectrogram has {num_frames} frames x {num_mel_bins} mel bins but one patch needs "
            f"{patch_f} x {patch_t}. Compute it with at least {patch_f} mel bins (ASTFeatureExtractor("
            f"num_mel_bins=...), 128 for every AST checkpoint), and pass it as (batch, frames, mel bins)."
        )
    if num_frames < patch_t:
        raise ValueError(
            f"The spectrogram has {num_frames} frames x {num_mel_bins} mel bins but one patch needs "
            f"{patch_f} x {patch_t}. Pad the audio to at least {patch_t} frames "
            f"(feature extractor padding='max_length', or about {samples_for_frames(patch_t)} samples at 16 kHz)."
        )
    return (patches_along(num_mel_bins, patch_f, frequency_stride),
            patches_along(num_frames, patch_t, time_stride))


def patches_along(length: Any, patch_size: int, stride: int) -> Any:
    """Patches of size `patch_size` at `stride` along an axis of `length` (>= patch_size) bins or frames: the one
    formula, for ints and for tensors of per-clip lengths alike."""
    return (length - patch_size) // stride + 1


def samples_for_frames(num_frames: int) -> int:
    """Fewest audio samples from which ASTFeatureExtractor makes `num_frames` frames (25 ms windows, 10 ms apart)."""
    from .feature_extraction_ast import FRAME_LENGTH, FRAME_SHIFT  # here, not at the top: a config needs no torch

    return FRAME_LENGTH + (num_frames - 1) * FRAME_SHIFT


def auto_map_with_code_in(auto_map: dict[str, Any], directory: str | os.PathLike) -> dict[str, Any]:
    """The entries of a config's `auto_map` that still load from `directory`: those whose code file
    ("modeling_ast.ASTModel" -> modeling_ast.py) is in it, and those that name another repository ("repo--...")."""
    def loads(reference: Any) -> bool:
        references = reference if isinstance(reference, (list, tuple)) else [reference]
        return all(ref is None or "--" in ref
                   or os.path.isfile(os.path.join(directory, ref.rsplit(".", 1)[0] + ".py")) for ref in references)

    return {name: reference for name, reference in auto_map.items() if loads(reference)}


def _builtin_save_keeping_loadable_auto_map(save_pretrained: Callable[..., Any]) -> Callable[..., Any]:
    """transformers' own ASTConfig.save_pretrained, leaving out the `auto_map` entries whose code is not in the
    save directory.

    Why: transformers' built-in ASTForAudioClassification loads an ast_hf directory (config.json: model_type
    "ast_hf", ast_hf's auto_map) and keeps the auto_map as a plain attribute, but its save_pretrained copies no code
    (its classes are transformers' own). The re-saved directory then says model_type "audio-spectrogram-transformer"
    with an auto_map naming configuration_ast.py & co., which are not there, and
    `AutoModelForAudioClassification.from_pretrained(dir, trust_remote_code=True)` fails with an OSError about
    configuration_ast.py (transformers follows auto_map whenever remote code is trusted, ast_hf imported or not).
    What the built-in saved is a built-in checkpoint, so it is written as one: without the entries that cannot
    load. Installed on `import ast_hf` only (not by remote-code copies of this file); a built-in save made without
    ast_hf imported keeps transformers' behaviour."""
    def save(self: PreTrainedConfig, save_directory: str | os.PathLike, *args: Any, **kwargs: Any) -> Any:
        auto_map = self.__dict__.get("auto_map")
        if not isinstance(auto_map, dict):
            return save_pretrained(self, save_directory, *args, **kwargs)
        kept = auto_map_with_code_in(auto_map, save_directory)
        if kept == auto_map:
            return save_pretrained(self, save_directory, *args, **kwargs)
        logger.warning("Not writing auto_map entries %s into %s: their code files are not in that directory (a "
                       "built-in class saves no code), so they would make trust_remote_code=True loads fail.",
                       sorted(set(auto_map) - set(kept)), os.path.join(save_directory, "config.json"))
        if kept:
            self.auto_map = kept
        else:
            del self.__dict__["auto_map"]
        try:
            return save_pretrained(self, save_directory, *args, **kwargs)
        finally:
            self.auto_map = auto_map

    save.ast_hf_original = save_pretrained  # type: ignore[attr-defined]
    return save


def keep_builtin_saves_loadable() -> None:
    """Wrap transformers' built-in ASTConfig.save_pretrained with `_builtin_save_keeping_loadable_auto_map` (once)."""
    from transformers import ASTConfig as BuiltinASTConfig

    if not hasattr(BuiltinASTConfig.save_pretrained, "ast_hf_original"):
        BuiltinASTConfig.save_pretrained = _builtin_save_keeping_loadable_auto_map(BuiltinASTConfig.save_pretrained)


# save_pretrained copies this file (and feature_extraction_ast.py, which it imports) and writes auto_map["AutoConfig"].
ASTConfig.register_for_auto_class()
if __package__ == "ast_hf":  # the installed package; a remote-code copy leaves transformers' classes alone
    keep_builtin_saves_loadable()

__all__ = ["ASTConfig", "patch_grid_size", "patches_along", "samples_for_frames"]
