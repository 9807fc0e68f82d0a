"""Run-time plumbing: which checkpoint to resume from (complete ones only), CPU data parallel under torchrun."""

from __future__ import annotations

import os
from pathlib import Path

import torch

# Written last into a checkpoint: a folder that has it is complete (trainer_state.json by the Trainer, the loop's
# own marker by the accelerate example, which also renames its checkpoints into place).
CHECKPOINT_MARKERS = ("trainer_state.json", "loop_state.json")


def resolve_checkpoint(value: str | None, output_dir: str | os.PathLike) -> str | None:
    """--resume_from_checkpoint: a checkpoint folder (checked complete), or "last" for the newest complete one in
    `output_dir`; folders that a killed run left half-written are skipped with a warning."""
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
    """True under torchrun (WORLD_SIZE > 1) without GPUs, where Trainer and accelerate must be told to use the CPU
    with gloo or they silently run each process alone."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1 and not torch.cuda.is_available()
