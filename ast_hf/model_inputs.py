"""Checks of what the model is given: tensors, mel-bin counts, attention masks. Each raises a ValueError or
TypeError that names the problem and the fix. This file is copied beside saved models as remote code with
`modeling_ast.py`."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

IGNORE_INDEX = -100  # class index that cross-entropy skips (torch's and transformers' convention)


def as_tensor(name: str, value: Any) -> torch.Tensor:
    """A tensor from a tensor, numpy array or (nested) list; a TypeError naming `name` for anything else."""
    if isinstance(value, torch.Tensor):
        return value
    try:
        return torch.as_tensor(np.asarray(value))
    except (TypeError, ValueError, RuntimeError) as error:
        raise TypeError(f"{name} of type {type(value).__name__} cannot be read as a tensor ({error}); pass a torch "
                        "tensor or a numpy array.") from error


def is_integer_dtype(dtype: torch.dtype) -> bool:
    """Integer dtypes (int8 ... int64, uint8 ...), not bool: class indices may come in any of them."""
    return not dtype.is_floating_point and not dtype.is_complex and dtype != torch.bool


def values_checked(tensor: torch.Tensor) -> bool:
    """Whether the forward checks `tensor`'s values (NaN/Inf, label range, mask layout), which means reading them
    back to the host.

    On the CPU in eager mode that read is free, so they are checked. On an accelerator each read is a device sync
    that stalls the queue, and under torch.compile a graph break; there the forward reads nothing, and the values are
    the ones ASTFeatureExtractor and the training collators checked on the CPU when they made them. Shapes, dtypes
    and devices are checked everywhere.
    """
    return tensor.device.type == "cpu" and not torch.compiler.is_compiling()


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
    if not values_checked(attention_mask):
        return
    expected = torch.arange(real.shape[1], device=real.device)[None, :] < frames[:, None]  # (B, T)
    values_ok = (attention_mask == 0) | (attention_mask == 1)  # always true for a boolean mask
    if bool(values_ok.all() & (real == expected).all() & (frames > 0).all()):  # one read for the three checks
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


def check_input_values(input_values: Any, config: Any, values: bool = True) -> torch.Tensor:
    """Check the model's `input_values` and return them.

    Args:
        input_values: What was passed as `input_values`: a float tensor of shape (batch, frames, mel bins).
        config: The model's `ASTConfig` (its `num_mel_bins` and patch grid).
        values: Also look for NaN/Inf (where `values_checked` allows it); False for a caller whose encoder call
            checks them again.

    Returns:
        The same tensor.

    Raises:
        ValueError: For a missing input, a shape other than (batch, frames, `config.num_mel_bins`) with at least one
            patch, an empty batch, or NaN/Inf values; each message says how to fix it.
        TypeError: For a value that is not a float torch tensor.
    """
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
    if values and values_checked(input_values) and not bool(torch.isfinite(input_values).all()):
        raise ValueError("input_values contains NaN or Inf; the logits would be NaN. Check the audio and the "
                         "feature extractor's mean/std (ASTFeatureExtractor refuses such audio itself).")
    frames, mel_bins = input_values.shape[1:]
    check_mel_bins(tuple(input_values.shape), config.num_mel_bins)
    config.patch_grid_for(frames, mel_bins)  # raises for a spectrogram smaller than one patch
    return input_values


def label_problem_type(labels: torch.Tensor, logits_shape: tuple[int, ...], problem_type: str | None,
                       num_labels: int) -> str:
    """The loss a batch of labels needs: the config's `problem_type`, or the one the labels imply.

    Args:
        labels: The labels of a batch.
        logits_shape: The (batch, num_labels) shape of the model's logits.
        problem_type: The config's `problem_type`, or None to infer it as transformers does (one label: regression;
            int64/int32 labels: single-label; otherwise multi-label), except that 1-D labels of any integer type are
            class indices.
        num_labels: The model's number of labels.

    Returns:
        "single_label_classification", "multi_label_classification" or "regression".

    Raises:
        ValueError: For labels of another batch size, 1-D float labels without a `problem_type`, class indices
            outside [0, num_labels) (other than -100), or multi-label targets of another shape.
    """
    if labels.ndim == 0 or labels.shape[0] != logits_shape[0]:
        raise ValueError(f"labels have shape {tuple(labels.shape)} but the batch holds {logits_shape[0]} clips; "
                         "pass one label (or one row of targets) per clip.")
    if problem_type is None:
        if num_labels == 1:
            problem_type = "regression"
        elif labels.dtype in (torch.long, torch.int) or (is_integer_dtype(labels.dtype) and labels.ndim == 1):
            problem_type = "single_label_classification"
        elif labels.ndim == 1:
            raise ValueError(
                f"labels are 1-D {labels.dtype} values, which are neither class indices (an integer dtype: pass "
                f"labels.long()) nor multi-hot targets (shape {tuple(logits_shape)}). Or set "
                "config.problem_type to say which loss you mean."
            )
        else:
            problem_type = "multi_label_classification"
    if problem_type == "single_label_classification":
        if labels.is_floating_point() and tuple(labels.shape) == tuple(logits_shape):
            return problem_type  # class probabilities
        if labels.is_floating_point() or labels.ndim != 1:
            raise ValueError(
                f"problem_type='single_label_classification' needs integer class indices of shape (batch,) or "
                f"class probabilities of shape {tuple(logits_shape)}, got {labels.dtype} {tuple(labels.shape)}. "
                "For multi-hot targets set "
                "config.problem_type='multi_label_classification'."
            )
        outside = (labels != IGNORE_INDEX) & ((labels < 0) | (labels >= num_labels))
        if values_checked(labels) and bool(outside.any()):
            raise ValueError(
                f"labels hold class index {int(labels[outside][0])} but the model has {num_labels} labels "
                f"(indices 0..{num_labels - 1}; -100 is ignored). Check the label mapping, or build the "
                "model with num_labels / id2label covering every class."
            )
    elif problem_type == "multi_label_classification" and tuple(labels.shape) != tuple(logits_shape):
        raise ValueError(
            f"problem_type='multi_label_classification' needs multi-hot labels of shape {tuple(logits_shape)}, "
            f"got {tuple(labels.shape)}."
        )
    return problem_type


__all__ = [
    "IGNORE_INDEX",
    "as_tensor",
    "check_input_values",
    "check_mel_bins",
    "check_right_padded",
    "is_integer_dtype",
    "label_problem_type",
]
