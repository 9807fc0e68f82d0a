"""Run-time plumbing: which checkpoint to resume from (complete ones only), CPU data parallel under torchrun."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

CHECKPOINT_MARKERS = ("trainer_state.json", "loop_state.json")
"""The files written last into a checkpoint: a folder that has one of them is complete.

`trainer_state.json` is the Trainer's; `loop_state.json` the accelerate example's own marker (that example also
renames its checkpoints into place)."""


def resolve_checkpoint(value: str | None, output_dir: str | os.PathLike) -> str | None:
    """The checkpoint that `--resume_from_checkpoint` names, checked complete.

    A checkpoint is complete when it holds one of `CHECKPOINT_MARKERS`.

    Args:
        value: The flag's value: a checkpoint folder; `"last"` (or `"true"`) for the newest complete checkpoint
            (`checkpoint-N` or `step_N` folder) in `output_dir`; `None`, empty or `"false"` for none.
        output_dir: The run's output folder.

    Returns:
        The checkpoint folder, or `None` when the run starts afresh.

    Raises:
        ValueError: When `"last"` finds no complete checkpoint, or the folder given does not exist or is incomplete.

    Warns:
        UserWarning: For each newer folder that `"last"` skips because a killed run left it half-written.
    """
    import re
    import warnings

    def complete(folder: Path) -> bool:
        return any((folder / marker).is_file() for marker in CHECKPOINT_MARKERS)

    if not value or str(value).lower() == "false":
        return None
    if str(value).lower() in ("last", "true"):
        folders = [p for p in Path(output_dir).glob("*") if p.is_dir() and re.fullmatch(r"(checkpoint|step)[-_]\d+",
                                                                                         p.name)]
        folders.sort(key=lambda p: int(re.search(r"\d+$", p.name).group()), reverse=True)
        for folder in folders:
            if complete(folder):
                return str(folder)
            warnings.warn(f"skipping {folder}: incomplete (the run was stopped while writing it)", stacklevel=2)
        raise ValueError(f"--resume_from_checkpoint {value}: no complete checkpoint in {str(output_dir)!r}; train "
                         "from the start (leave the flag out) or give a checkpoint folder.")
    if not Path(value).is_dir():
        raise ValueError(f"--resume_from_checkpoint {value!r} is not a folder; give a checkpoint folder or 'last'.")
    if not complete(Path(value)):
        raise ValueError(f"--resume_from_checkpoint {value!r} is incomplete (it has none of "
                         f"{', '.join(CHECKPOINT_MARKERS)}: the run was stopped while writing it); resume from an "
                         "earlier checkpoint, or pass 'last' for the newest complete one.")
    return str(value)


def cpu_ddp_requested() -> bool:
    """Whether this is a CPU data-parallel run: under torchrun (`WORLD_SIZE` > 1) without GPUs.

    There the Trainer and accelerate must be told to use the CPU with gloo, or they silently run each process
    alone.

    Returns:
        `True` under torchrun without GPUs.
    """
    return int(os.environ.get("WORLD_SIZE", "1")) > 1 and not torch.cuda.is_available()


def train_or_finish(trainer: Any, checkpoint: str | None, describe: Callable[[str], None] = print) -> dict[str, Any]:
    """`trainer.train(resume_from_checkpoint=checkpoint)`, unless the checkpoint already holds the whole run.

    A run killed after saving its checkpoint at `--max_steps`, but before saving its model, is complete in that
    checkpoint; transformers' Trainer would still train one more step when resumed from it. Here its weights and
    state are loaded instead, and the caller saves the model as at the end of training.

    Args:
        trainer: The run's `transformers.Trainer`.
        checkpoint: The checkpoint to resume from (`resolve_checkpoint`'s answer), or None.
        describe: Called with a line telling that the checkpoint was complete.

    Returns:
        The training metrics (`trainer.train(...).metrics`), empty for a complete checkpoint.
    """
    import json

    from transformers import TrainerState

    state_file = Path(checkpoint) / "trainer_state.json" if checkpoint else None
    max_steps = trainer.args.max_steps
    if state_file is not None and state_file.is_file() and max_steps > 0:
        step = int(json.loads(state_file.read_text()).get("global_step", 0))
        if step >= max_steps:
            describe(f"{checkpoint} is at step {step} of --max_steps {max_steps}: the run is complete there; its "
                     "weights are saved without training further")
            trainer._load_from_checkpoint(checkpoint)
            trainer.state = TrainerState.load_from_json(str(state_file))
            return {}
    return trainer.train(resume_from_checkpoint=checkpoint).metrics
