"""Run-time plumbing: which checkpoint to resume from (complete ones only), CPU data parallel under torchrun."""

from __future__ import annotations

import os
from pathlib import Path

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
