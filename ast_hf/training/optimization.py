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
    """LR multiplier per optimisation step: linear warm-up over `warmup_steps`, then the reference's
    MultiStepLR(milestones=range(start_epoch, 1000, step_epochs), gamma) stepped once per epoch (epochs counted
    from 0, so the lr first drops after `start_epoch` full epochs). start_epoch 0 means no decay."""
    milestones = list(range(start_epoch, 1000, max(1, step_epochs))) if start_epoch > 0 else []

    def factor(step: int) -> float:
        epochs_done = step // max(1, steps_per_epoch)
        decay = gamma ** sum(1 for m in milestones if m <= epochs_done)
        warm = min(1.0, (step + 1) / warmup_steps) if warmup_steps > 0 else 1.0
        return warm * decay

    return factor


def reference_adam(model: torch.nn.Module, learning_rate: float, betas: tuple[float, float] = (0.95, 0.999),
                   eps: float = 1e-8, weight_decay: float = 5e-7) -> torch.optim.Optimizer:
    """The reference's optimiser: Adam (not AdamW) with L2 weight decay on every parameter (the recipes: 5e-7,
    betas (0.95, 0.999))."""
    parameters = [p for p in model.parameters() if p.requires_grad]
    return torch.optim.Adam(parameters, lr=learning_rate, betas=betas, eps=eps, weight_decay=weight_decay)


def build_optimizer(model: torch.nn.Module, learning_rate: float, betas: tuple[float, float], eps: float,
                    weight_decay: float, reference: bool = False) -> torch.optim.Optimizer:
    """The accelerate example's optimiser: the reference's Adam when `reference`, otherwise torch's AdamW with
    decoupled weight decay on every weight but biases and LayerNorms, as the Trainer's default "adamw_torch"."""
    if reference:
        return reference_adam(model, learning_rate, betas, eps, weight_decay)
    from transformers.trainer_pt_utils import get_parameter_names

    decay = set(get_parameter_names(model, [torch.nn.LayerNorm], ["bias", "layernorm"]))
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    groups = [{"params": [p for n, p in named if n in decay], "weight_decay": weight_decay},
              {"params": [p for n, p in named if n not in decay], "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=learning_rate, betas=betas, eps=eps)


def warmup_steps_of(warmup_steps: float, training_steps: int) -> int:
    """TrainingArguments' reading of --warmup_steps: a number of steps when >= 1, else a fraction of all steps."""
    if warmup_steps < 0:
        raise ValueError(f"warmup_steps={warmup_steps} must be >= 0 (steps, or a fraction of all steps below 1).")
    return int(warmup_steps) if warmup_steps >= 1 else math.ceil(training_steps * warmup_steps)


def build_scheduler(optimizer: torch.optim.Optimizer, recipe: RecipeArguments, scheduler_type: str,
                    warmup_steps: int, training_steps: int, updates_per_epoch: int, scheduler_kwargs: Any = None):
    """The learning-rate schedule, stepped once per update: the reference's warm-up + MultiStepLR when the recipe
    sets multistep_start_epoch, otherwise transformers' `get_scheduler(scheduler_type)`, as the Trainer builds it."""
    if recipe.multistep_start_epoch > 0:
        return torch.optim.lr_scheduler.LambdaLR(optimizer, recipe_lr_lambda(
            updates_per_epoch, warmup_steps, recipe.multistep_start_epoch, recipe.multistep_every,
            recipe.multistep_gamma))
    from transformers import get_scheduler

    return get_scheduler(scheduler_type, optimizer=optimizer, num_warmup_steps=warmup_steps,
                         num_training_steps=training_steps, scheduler_specific_kwargs=scheduler_kwargs or {})


class WeightAverager:
    """Running mean of a model's floating-point weights over chosen epochs (the reference averages the epoch
    checkpoints 1-5 of full AudioSet and 6-25 of balanced AudioSet)."""

    def __init__(self, start_epoch: int, end_epoch: int) -> None:
        self.start_epoch, self.end_epoch = start_epoch, end_epoch
        self.average: dict[str, torch.Tensor] | None = None
        self.count = 0

    def wants(self, epoch: int) -> bool:
        return self.end_epoch > 0 and self.start_epoch <= epoch <= self.end_epoch

    def update(self, model: torch.nn.Module, epoch: int) -> None:
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
        """Tensors only, so that checkpoints stay loadable with safetensors or torch.load(weights_only=True)."""
        state = {f"average.{k}": v for k, v in (self.average or {}).items()}
        state["count"] = torch.tensor(self.count)
        return state

    def load_state_dict(self, state: Mapping[str, torch.Tensor]) -> None:
        self.count = int(state["count"])
        average = {k[len("average."):]: v.to(torch.float64) for k, v in state.items() if k.startswith("average.")}
        self.average = average or None

    def save(self, path: str | os.PathLike) -> None:
        from safetensors.torch import save_file

        save_file({k: v.contiguous() for k, v in self.state_dict().items()}, str(path))

    def load(self, path: str | os.PathLike) -> None:
        from safetensors.torch import load_file

        self.load_state_dict(load_file(str(path)))

    def apply(self, model: torch.nn.Module) -> bool:
        """Load the average into `model`; False when nothing was averaged."""
        if self.average is None:
            return False
        current = model.state_dict()
        model.load_state_dict({k: self.average[k].to(current[k].dtype) if k in self.average else current[k]
                               for k in current})
        return True
