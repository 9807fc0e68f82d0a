"""Optimiser, learning-rate schedule and weight averaging: the reference's Adam and warm-up + MultiStepLR where a
recipe asks for them, else the Trainer's own (AdamW, transformers' schedules)."""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Mapping
from typing import Any

import torch

from .arguments import RecipeArguments


def recipe_lr_lambda(steps_per_epoch: int, warmup_steps: int = 0, start_epoch: int = 0, step_epochs: int = 1,
                     gamma: float = 1.0) -> Callable[[int], float]:
    """Build the reference's learning-rate multiplier per optimisation step, for `torch.optim.lr_scheduler.LambdaLR`.

    A linear warm-up over `warmup_steps`, then the reference's
    `MultiStepLR(milestones=range(start_epoch, 1000, step_epochs), gamma)` stepped once per epoch. Epochs are counted
    from 0, so the learning rate first drops after `start_epoch` full epochs.

    Args:
        steps_per_epoch: Optimisation steps (updates) in one epoch.
        warmup_steps: Steps of linear warm-up from `1 / warmup_steps` to 1; 0 means none.
        start_epoch: The first milestone: the epoch after which the learning rate first decays; 0 means no decay.
        step_epochs: Epochs between two milestones (values below 1 count as 1).
        gamma: The factor of each decay.

    Returns:
        A function of the step index (from 0) giving the factor the base learning rate is multiplied by.

    Example:
        ```python
        factor = recipe_lr_lambda(steps_per_epoch=100, warmup_steps=50, start_epoch=2, gamma=0.5)
        factor(0), factor(199), factor(200)  # 0.02, 1.0, 0.5
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
        ```
    """
    milestones = list(range(start_epoch, 1000, max(1, step_epochs))) if start_epoch > 0 else []

    def factor(step: int) -> float:
        epochs_done = step // max(1, steps_per_epoch)
        decay = gamma ** sum(1 for m in milestones if m <= epochs_done)
        warm = min(1.0, (step + 1) / warmup_steps) if warmup_steps > 0 else 1.0
        return warm * decay

    return factor


def reference_adam(model: torch.nn.Module, learning_rate: float, betas: tuple[float, float] = (0.95, 0.999),
                   eps: float = 1e-8, weight_decay: float = 5e-7) -> torch.optim.Optimizer:
    """Build the reference's optimiser: Adam (not AdamW) with L2 weight decay on every parameter.

    Args:
        model: The model whose trainable parameters (`requires_grad`) are optimised.
        learning_rate: The base learning rate.
        betas: Adam's coefficients of the running averages; the recipes use (0.95, 0.999).
        eps: Adam's epsilon.
        weight_decay: L2 penalty added to the gradient of every parameter; the recipes use 5e-7.

    Returns:
        A `torch.optim.Adam` over the model's trainable parameters.
    """
    parameters = [p for p in model.parameters() if p.requires_grad]
    return torch.optim.Adam(parameters, lr=learning_rate, betas=betas, eps=eps, weight_decay=weight_decay)


def build_optimizer(model: torch.nn.Module, learning_rate: float, betas: tuple[float, float], eps: float,
                    weight_decay: float, reference: bool = False) -> torch.optim.Optimizer:
    """Build the accelerate example's optimiser.

    The reference's Adam (`reference_adam`) when `reference`; otherwise torch's AdamW with decoupled weight decay on
    every weight but biases and LayerNorms, as the Trainer's default "adamw_torch".

    Args:
        model: The model whose trainable parameters (`requires_grad`) are optimised.
        learning_rate: The base learning rate.
        betas: Adam's coefficients of the running averages.
        eps: Adam's epsilon.
        weight_decay: The weight decay: L2 on every parameter for the reference's Adam; decoupled, on every weight
            but biases and LayerNorms, for AdamW.
        reference: Use the reference's Adam instead of AdamW.

    Returns:
        A `torch.optim.Adam` (reference) or `torch.optim.AdamW`.
    """
    if reference:
        return reference_adam(model, learning_rate, betas, eps, weight_decay)
    from transformers.trainer_pt_utils import get_parameter_names

    decay = set(get_parameter_names(model, [torch.nn.LayerNorm], ["bias", "layernorm"]))
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    groups = [{"params": [p for n, p in named if n in decay], "weight_decay": weight_decay},
              {"params": [p for n, p in named if n not in decay], "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=learning_rate, betas=betas, eps=eps)


def warmup_steps_of(warmup_steps: float, training_steps: int) -> int:
    """Read --warmup_steps as TrainingArguments does: a number of steps when >= 1, else a fraction of all steps.

    Args:
        warmup_steps: Steps of warm-up (>= 1), or a fraction of `training_steps` (below 1).
        training_steps: All optimisation steps of the run.

    Returns:
        The number of warm-up steps: `int(warmup_steps)` when >= 1, else `ceil(training_steps * warmup_steps)`.

    Raises:
        ValueError: When `warmup_steps` is negative.
    """
    if warmup_steps < 0:
        raise ValueError(f"warmup_steps={warmup_steps} must be >= 0 (steps, or a fraction of all steps below 1).")
    return int(warmup_steps) if warmup_steps >= 1 else math.ceil(training_steps * warmup_steps)


def build_scheduler(optimizer: torch.optim.Optimizer, recipe: RecipeArguments, scheduler_type: str,
                    warmup_steps: int, training_steps: int, updates_per_epoch: int, scheduler_kwargs: Any = None):
    """Build the learning-rate schedule, stepped once per update.

    The reference's warm-up + MultiStepLR (`recipe_lr_lambda`) when the recipe sets `multistep_start_epoch`,
    otherwise transformers' `get_scheduler(scheduler_type)`, as the Trainer builds it.

    Args:
        optimizer: The optimiser whose learning rate is scheduled.
        recipe: The recipe; its `multistep_start_epoch`, `multistep_every` and `multistep_gamma` pick and set the
            reference's schedule.
        scheduler_type: transformers' scheduler name (--lr_scheduler_type), used when the recipe sets no
            `multistep_start_epoch`.
        warmup_steps: Steps of linear warm-up (see `warmup_steps_of`).
        training_steps: All optimisation steps of the run (transformers' schedules).
        updates_per_epoch: Optimisation steps in one epoch (the reference's schedule decays per epoch).
        scheduler_kwargs: Extra keyword arguments of transformers' scheduler (`scheduler_specific_kwargs`).

    Returns:
        (torch.optim.lr_scheduler.LRScheduler): A `LambdaLR` for the reference's schedule, else the scheduler of
            `transformers.get_scheduler`.
    """
    if recipe.multistep_start_epoch > 0:
        return torch.optim.lr_scheduler.LambdaLR(optimizer, recipe_lr_lambda(
            updates_per_epoch, warmup_steps, recipe.multistep_start_epoch, recipe.multistep_every,
            recipe.multistep_gamma))
    from transformers import get_scheduler

    return get_scheduler(scheduler_type, optimizer=optimizer, num_warmup_steps=warmup_steps,
                         num_training_steps=training_steps, scheduler_specific_kwargs=scheduler_kwargs or {})


class WeightAverager:
    """Running mean of a model's floating-point weights over chosen epochs.

    The reference averages the epoch checkpoints 1-5 of full AudioSet and 6-25 of balanced AudioSet. The mean is
    kept in float64 on the CPU; its state holds tensors only, so it can be checkpointed (e.g. with accelerate's
    `register_for_checkpointing`).

    Args:
        start_epoch: The first epoch averaged (epochs counted from 1).
        end_epoch: The last epoch averaged; 0 turns averaging off.

    Example:
        ```python
        averager = WeightAverager(start_epoch=6, end_epoch=25)
        for epoch in range(1, num_epochs + 1):
            train_one_epoch(model)
            averager.update(model, epoch)
        averager.apply(model)  # the mean of epochs 6-25
        ```
    """

    def __init__(self, start_epoch: int, end_epoch: int) -> None:
        self.start_epoch, self.end_epoch = start_epoch, end_epoch
        self.average: dict[str, torch.Tensor] | None = None
        self.count = 0

    def wants(self, epoch: int) -> bool:
        """Tell whether `epoch` is one of the averaged epochs.

        Args:
            epoch: The epoch just finished (from 1).

        Returns:
            True when averaging is on and `start_epoch <= epoch <= end_epoch`.
        """
        return self.end_epoch > 0 and self.start_epoch <= epoch <= self.end_epoch

    def update(self, model: torch.nn.Module, epoch: int) -> None:
        """Add the model's floating-point weights to the mean, when `epoch` is one of the averaged epochs.

        Args:
            model: The model at the end of `epoch` (unwrapped from any DDP or accelerate wrapper).
            epoch: The epoch just finished (from 1); outside `start_epoch`..`end_epoch` the call does nothing.
        """
        if not self.wants(epoch):
            return
        state = {k: v.detach().to("cpu", torch.float64) for k, v in model.state_dict().items()
                 if v.is_floating_point()}
        self.count += 1
        if self.average is None:
            self.average = state
        else:
            for key, value in state.items():
                self.average[key] += (value - self.average[key]) / self.count

    def state_dict(self) -> dict[str, torch.Tensor]:
        """Return the averager's state as tensors only.

        Tensors only, so that checkpoints stay loadable with safetensors or `torch.load(weights_only=True)`.

        Returns:
            The mean weights under "average.NAME" and the number of averaged epochs under "count".
        """
        state = {f"average.{k}": v for k, v in (self.average or {}).items()}
        state["count"] = torch.tensor(self.count)
        return state

    def load_state_dict(self, state: Mapping[str, torch.Tensor]) -> None:
        """Restore the state that `state_dict` returned.

        Args:
            state: The "average.NAME" tensors and "count" of `state_dict`.
        """
        self.count = int(state["count"])
        average = {k[len("average."):]: v.to(torch.float64) for k, v in state.items() if k.startswith("average.")}
        self.average = average or None

    def save(self, path: str | os.PathLike) -> None:
        """Write `state_dict` to a safetensors file.

        Args:
            path: The file to write.
        """
        from safetensors.torch import save_file

        save_file({k: v.contiguous() for k, v in self.state_dict().items()}, str(path))

    def load(self, path: str | os.PathLike) -> None:
        """Restore the state from a safetensors file written by `save`.

        Args:
            path: The file to read.
        """
        from safetensors.torch import load_file

        self.load_state_dict(load_file(str(path)))

    def apply(self, model: torch.nn.Module) -> bool:
        """Load the mean weights into `model`.

        Each averaged weight is cast to the dtype of the model's own; weights that were not averaged (not floating
        point) are kept.

        Args:
            model: The model to load the mean into (in place).

        Returns:
            True when the mean was loaded; False when nothing was averaged (the model is unchanged).
        """
        if self.average is None:
            return False
        current = model.state_dict()
        model.load_state_dict({k: self.average[k].to(current[k].dtype) if k in self.average else current[k]
                               for k in current})
        return True
