"""Decoding ahead: the next recordings are decoded and resampled in worker processes while the model runs.

A `torch.utils.data.DataLoader` over the inputs' positions does the work (its workers, its prefetching, its pinned
memory on a GPU), so each worker returns one recording's samples at the model's rate, or the message of the error
that stopped it. Order is kept. Workers are forked, so they read the inputs (paths, a `datasets` column, a
`KeyDataset`) from the parent's memory without pickling them; only samples and messages come back.

A recording longer than `LONG_SECONDS` is not decoded ahead: its worker says so and the main process streams it
chunk by chunk, so that memory stays bounded by one chunk, not by the longest recording.
"""

from __future__ import annotations

import signal
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from ..audio_io import AudioReadError, AudioStream

# Recordings longer than this (seconds) are streamed by the main process instead of decoded whole in a worker:
# 10 minutes at 16 kHz is 38 MB of float32, the most a worker holds.
LONG_SECONDS = 600.0


@dataclass
class Decoded:
    """What a worker returns for one input: its samples, or the error message, or `stream` when it is long."""

    index: int
    samples: torch.Tensor | None = None
    duration: float | None = None
    rate: int = 0
    name: str = ""
    error: str | None = None
    stream: bool = False

    def pin_memory(self) -> Decoded:  # the DataLoader's pin_memory=True calls this
        if self.samples is not None:
            self.samples = self.samples.pin_memory()
        return self


class _DecodeInputs(torch.utils.data.Dataset):
    def __init__(self, inputs: Sequence[Any], open_source: Callable[[Any], AudioStream]) -> None:
        self.inputs, self.open_source = inputs, open_source

    def __len__(self) -> int:
        return len(self.inputs)

    def __getitem__(self, index: int) -> Decoded:
        try:
            stream = self.open_source(self.inputs[index])
            if stream.duration is not None and stream.duration > LONG_SECONDS:
                return Decoded(index, stream=True)
            return Decoded(index, samples=stream.samples(), duration=stream.duration, rate=stream.sampling_rate,
                           name=stream.name)
        except (ValueError, TypeError) as error:  # AudioReadError is a ValueError: one message, kept in order
            return Decoded(index, error=str(error))


def _identity(item: Decoded) -> Decoded:
    return item


def _quiet_worker(_: int) -> None:
    """A worker decodes with one thread (the model has the cores) and leaves Ctrl-C to the main process, which
    stops after the batch in flight."""
    torch.set_num_threads(1)
    signal.signal(signal.SIGINT, signal.SIG_IGN)


class _AheadOpener:
    """Opens what `decode_ahead` yields: decoded samples as a one-chunk stream, an error as its AudioReadError, a
    long recording by streaming it here."""

    def __init__(self, inputs: Sequence[Any], open_source: Callable[[Any], AudioStream]) -> None:
        self.inputs, self.open_source = inputs, open_source

    def __call__(self, item: Decoded) -> AudioStream:
        if item.error is not None:
            raise AudioReadError(item.error)
        if item.stream:
            return self.open_source(self.inputs[item.index])
        samples = item.samples
        return AudioStream(item.name, item.rate, item.duration, lambda: iter([samples]))


def decode_ahead(inputs: Sequence[Any], open_source: Callable[[Any], AudioStream], num_workers: int,
                 pin_memory: bool = False,
                 prefetch: int = 4) -> tuple[Iterator[Decoded], Callable[[Any], AudioStream]]:
    """Decode `inputs` in `num_workers` processes, `prefetch` recordings ahead per worker.

    Args:
        inputs: A sequence (len and indexing) of anything `open_source` opens.
        open_source: Opens one input as an `AudioStream` at the model's rate (it runs in the workers).
        num_workers: Worker processes, at least 1.
        pin_memory: Pin the samples (for a copy to a GPU that overlaps the model).
        prefetch: Recordings each worker decodes ahead.

    Returns:
        (sources, opener): pass both to `ast_hf.tagging.windows_across` (or a pipeline's engine) in place of the
            inputs and `open_source`; errors come out of the opener as `AudioReadError`s naming the input, as they
            would without workers.
    """
    loader = torch.utils.data.DataLoader(_DecodeInputs(inputs, open_source), batch_size=None, shuffle=False,
                                         num_workers=num_workers, collate_fn=_identity, pin_memory=pin_memory,
                                         prefetch_factor=prefetch, worker_init_fn=_quiet_worker,
                                         multiprocessing_context="fork")
    return iter(loader), _AheadOpener(inputs, open_source)


__all__ = ["LONG_SECONDS", "Decoded", "decode_ahead"]
