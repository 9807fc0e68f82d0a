"""--streaming: the training data read as a stream (datasets' IterableDataset) instead of loaded whole, so that a
data set of millions of clips (AudioSet) trains in the memory of its shuffle buffer.

Each process of a torchrun/accelerate run reads its own part of the stream (`datasets.split_dataset_by_node`),
shuffled through a buffer, re-shuffled at each pass. `StreamingClips` turns that stream into training batches
(lists of rows for the collator): endless, so that every process always has a next batch and training stops at
`--max_steps`; batch b of a process goes to DataLoader worker (b - first batch) % workers, the order in which the
DataLoader takes batches from its workers, so that workers change nothing in what is trained on; a resumed run
skips the batches already trained on without decoding them and then continues the same stream exactly. Each row
carries `_row`, its position in the stream (unique over processes and passes), from which the collator draws that
row's augmentations.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import torch

from ..audio_io import decode_audio
from .arguments import DataArguments, RecipeArguments
from .data import labels_source
from .labels import encode_label, label_names, split_label_names


def stream_label_names(stream: Any, args: DataArguments) -> tuple[list[str], bool]:
    """(label names, multi_label) of a training stream: its ClassLabel names, else --labels_file, else one pass over
    the stream (which reads the files whole: give --labels_file for a large data set)."""
    from ..presets import read_labels

    feature = stream.features[args.label_column_name]
    has_names = getattr(feature, "names", None) or getattr(getattr(feature, "feature", None), "names", None)
    if args.labels_file and has_names:
        raise ValueError(f"--labels_file {args.labels_file!r} is given, but the stream's label column "
                         f"{args.label_column_name!r} already names its classes ({len(has_names)}: "
                         f"{', '.join(has_names[:5])}{', ...' if len(has_names) > 5 else ''}): those are used. Leave "
                         "--labels_file out.")
    if args.labels_file:
        return read_labels(args.labels_file), hasattr(feature, "feature")  # a list type: several labels a clip
    return label_names(stream, args.label_column_name, args.label_separator)


class StreamingClips(torch.utils.data.IterableDataset):
    """Training batches from this process's part of a stream (`--streaming`), for the collator.

    Each item is a batch: a list of rows, each with its decoded audio, its encoded label and `_row`, its position
    in the stream (unique over processes and passes). Use it with
    `DataLoader(clips, batch_size=None, collate_fn=collator)`. The stream is split between processes
    (`datasets.split_dataset_by_node`), shuffled through a buffer, shuffled anew at each pass and read endlessly:
    training stops at `--max_steps`. DataLoader workers change nothing in what is trained on.

    Args:
        stream: The training stream, a `datasets.IterableDataset` with undecoded audio.
        audio_column: The audio column.
        label_column: The label column; None for unlabelled audio (rows without labels, for pretraining).
        label2id: The class index of each label name.
        multi_label: Whether the labels are lists of labels.
        sampling_rate: The rate that the audio is decoded at.
        batch_size: The rows of a batch.
        seed: The seed of the shuffle.
        buffer_size: The rows that the shuffle buffer holds (`--shuffle_buffer_size`).
        rank: This process's index.
        world_size: The number of processes.
        labels_source: Where `label2id` came from (e.g. `"--labels_file F"`), named when a label is not in it.
        separator: `--label_separator`: the string between the labels of a cell.

    Attributes:
        stream: This process's part of the stream, shuffled.
        labels_source: Where `label2id` came from.
        names: The stream's `ClassLabel` names (its integers are positions in them), or `None`.
        separator: `--label_separator`.
        start_batch: The batches of this process already trained on (a resumed run sets it), skipped undecoded;
            0 at first.

    Raises:
        ValueError: When `batch_size` or `buffer_size` is below 1.
    """

    def __init__(self, stream: Any, *, audio_column: str, label_column: str | None, label2id: Mapping[str, int],
                 multi_label: bool, sampling_rate: int, batch_size: int, seed: int, buffer_size: int,
                 rank: int = 0, world_size: int = 1, labels_source: str | None = None,
                 separator: str | None = None) -> None:
        from datasets.distributed import split_dataset_by_node

        if batch_size < 1 or buffer_size < 1:
            raise ValueError(f"batch_size={batch_size} and shuffle_buffer_size={buffer_size} must be >= 1.")
        self.stream = split_dataset_by_node(stream, rank=rank, world_size=world_size).shuffle(
            seed=seed, buffer_size=buffer_size)
        self.audio_column, self.label_column = audio_column, label_column
        self.label2id, self.multi_label = dict(label2id), multi_label
        self.sampling_rate, self.batch_size = sampling_rate, batch_size
        self.rank, self.world_size = rank, world_size
        self.labels_source = labels_source  # where label2id came from, for the error of a label not in it
        # a ClassLabel's names: its integers mean these (no label column: unlabelled audio, for pretraining)
        self.names = None if label_column is None else split_label_names(stream, label_column)
        self.separator = separator
        self.start_batch = 0

    def batches(self) -> Iterator[tuple[int, dict[str, list[Any]]]]:
        """The undecoded batches of endless passes through this process's part of the stream, shuffled anew each pass.

        Yields:
            `(index, batch)`: the batch's position over all passes, and its columns (`{column: values}`).

        Raises:
            ValueError: When this process's part of the stream is empty (fewer clips or files than processes).
        """
        index, epoch = 0, 0
        while True:
            self.stream.set_epoch(epoch)  # a new shuffle each pass
            empty = True
            # .iter(), not iteration: in a DataLoader worker datasets would hand each worker whole shards itself
            for batch in self.stream.iter(batch_size=self.batch_size):
                empty = False
                yield index, batch
                index += 1
            if empty:
                raise ValueError(f"Process {self.rank} of {self.world_size} got no training clips from the stream: "
                                 "the data set has fewer clips (or files) than processes; use fewer processes.")
            epoch += 1

    def __iter__(self) -> Iterator[list[dict[str, Any]]]:
        """The training batches of this DataLoader worker, from `start_batch` on, decoded and encoded.

        Yields:
            The rows of a batch: audio (`{"array", "sampling_rate"}`), encoded label and `_row`.
        """
        import datasets

        worker = torch.utils.data.get_worker_info()
        workers, worker_id = (worker.num_workers, worker.id) if worker is not None else (1, 0)
        audio = datasets.Audio(sampling_rate=self.sampling_rate)
        for index, batch in self.batches():
            # the DataLoader takes batches from worker 0, 1, ... in turn: the first one due goes to worker 0
            if index < self.start_batch or (index - self.start_batch) % workers != worker_id:
                continue
            size = len(batch[self.audio_column])
            first = index * self.batch_size  # this process's stream positions (a last short batch leaves a gap)
            yield [{self.audio_column: {"array": decode_audio(audio.decode_example(batch[self.audio_column][i]),
                                                              self.sampling_rate),
                                        "sampling_rate": self.sampling_rate},
                    **({} if self.label_column is None else {self.label_column: encode_label(
                        batch[self.label_column][i], self.label2id, self.multi_label, self.labels_source, self.names,
                        self.separator)}),
                    "_row": (first + i) * self.world_size + self.rank}
                   for i in range(size)]


def check_streaming_arguments(data_args: DataArguments, max_steps: int, sources: Mapping[str, str],
                              recipe: RecipeArguments, epoch_strategies: Mapping[str, str] | None = None,
                              supported: bool = True) -> None:
    """Refuse what a stream cannot do, and the streaming settings without `--streaming`, rather than ignore them.

    Args:
        data_args: The data arguments.
        max_steps: `--max_steps`: a stream has no length, so training needs a positive number of steps.
        sources: Where each explicitly given field was set, as `parse_arguments` returns it.
        recipe: The recipe arguments.
        epoch_strategies: The run's evaluation and saving strategies by flag (e.g.
            `{"--eval_strategy": "epoch"}`).
        supported: Whether the calling script trains from a stream (the Trainer example does).

    Raises:
        ValueError: Without `--streaming`: when `--labels_file` or `--shuffle_buffer_size` is given. With it: when
            not `supported`, or, all at once, for a `max_steps` below 1, `--balanced_sampling`,
            `--cross_validation_folds`, settings that count epochs (`--multistep_start_epoch`,
            `--average_end_epoch`, an `"epoch"` strategy), `--compute_stats`, and `--skip_bad_audio` or
            `--check_audio` given explicitly.
    """
    if not data_args.streaming:
        given = [f"--{name}" for name in ("labels_file", "shuffle_buffer_size") if name in sources]
        if given:
            raise ValueError(f"{' and '.join(given)} {'act' if len(given) > 1 else 'acts'} only with --streaming; "
                             f"add it, or leave {'them' if len(given) > 1 else 'it'} out.")
        return
    if not supported:
        raise ValueError("--streaming is supported by examples/run_audio_classification.py (the Trainer example, "
                         "also under torchrun); run that script, or leave --streaming out.")
    problems: list[str] = []
    if max_steps <= 0:
        problems.append("--streaming needs --max_steps N: a stream has no length, so epochs cannot be counted.")
    if recipe.balanced_sampling:
        problems.append("--balanced_sampling draws clips by index, which a stream does not have; leave it out, or "
                        "drop --streaming.")
    if data_args.cross_validation_folds > 0:
        problems.append("--cross_validation_folds needs the whole data set in memory; drop --streaming.")
    # A stream has no epochs (it is read pass after pass, as one epoch): what counts epochs would never act.
    epoch_settings = [f"--{name} {getattr(recipe, name)}" for name in ("multistep_start_epoch", "average_end_epoch")
                      if getattr(recipe, name) > 0]
    epoch_settings += [f"{flag} epoch" for flag, value in (epoch_strategies or {}).items() if value == "epoch"]
    if epoch_settings:
        problems.append(f"{', '.join(epoch_settings)} count epochs, which a stream does not have; with --streaming "
                        "set --multistep_start_epoch 0 and --average_end_epoch 0 (use --lr_scheduler_type and "
                        "--warmup_steps), and evaluate/save by steps (--eval_strategy steps --eval_steps N, "
                        "--save_strategy steps --save_steps N).")
    if data_args.compute_stats:
        problems.append("--compute_stats reads the whole training set first; give --dataset_mean/--dataset_std (or "
                        "a --dataset_preset) with --streaming.")
    for name in ("skip_bad_audio", "check_audio"):
        if name in sources:
            problems.append(f"--{name} checks loaded splits before training; with --streaming each training clip is "
                            "decoded only when it is trained on (an unreadable one stops training with the "
                            "decoder's error), and the evaluation split is checked as always. Leave it out.")
    if problems:
        raise ValueError("\n".join(problems))


def streaming_clips(stream: Any, data_args: DataArguments, labels: Sequence[str], multi_label: bool,
                    sampling_rate: int, batch_size: int, seed: int, rank: int, world_size: int) -> StreamingClips:
    """The `StreamingClips` of one process of the run.

    Args:
        stream: The training stream, as `load_audio_datasets` returns it with `stream_train`.
        data_args: The data arguments: the columns, `--shuffle_buffer_size`, `--labels_file`,
            `--label_separator`.
        labels: The label names in id order.
        multi_label: Whether the labels are lists of labels.
        sampling_rate: The rate that the audio is decoded at.
        batch_size: The rows of a batch (per process).
        seed: The seed of the shuffle.
        rank: This process's index.
        world_size: The number of processes.

    Returns:
        The process's training batches.
    """
    return StreamingClips(stream, audio_column=data_args.audio_column_name, label_column=data_args.label_column_name,
                          label2id={label: i for i, label in enumerate(labels)}, multi_label=multi_label,
                          sampling_rate=sampling_rate, batch_size=batch_size, seed=seed,
                          buffer_size=data_args.shuffle_buffer_size, rank=rank, world_size=world_size,
                          labels_source=labels_source(data_args), separator=data_args.label_separator)
