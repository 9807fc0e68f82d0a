"""--streaming: training from a stream of parquet shards of real espeak-ng speech. Each process reads its own part,
DataLoader workers change nothing in what is trained on, a resumed run continues the stream exactly, and memory
does not grow with the number of clips (2 processes under torchrun, two data-set sizes)."""

from __future__ import annotations

import io
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile
import torch
from test_training import LOOP, ROOT, TINY, TRAINER, final_weights, max_difference, run

from ast_hf import training

RECIPE = str(ROOT / "examples" / "recipes" / "espeak_commands.json")


def write_parquet_clips(folder: Path, wavs: list[Path], count: int, per_shard: int, seed: int = 0) -> Path:
    """`count` half-second clips (the words of `wavs`, each at a random gain and circular shift) as parquet shards
    of `per_shard` rows, audio bytes embedded, the word as a string label, and a validation file of 16 clips; also
    labels.txt. A data set folder that `--dataset_name` (load_dataset) reads."""
    import datasets

    rng = np.random.default_rng(seed)
    features = datasets.Features({"audio": datasets.Audio(), "label": datasets.Value("string"),
                                  "clip": datasets.Value("int64")})
    (folder / "data").mkdir(parents=True, exist_ok=True)
    sources = [soundfile.read(w, dtype="float32") for w in wavs]

    def rows(first: int, size: int) -> datasets.Dataset:
        table: dict[str, list] = {"audio": [], "label": [], "clip": []}
        for index in range(first, first + size):
            pick = int(rng.integers(len(wavs)))
            samples, rate = sources[pick]
            clip = np.roll(samples * rng.uniform(0.5, 1.0), int(rng.integers(len(samples))))[: rate // 2]
            buffer = io.BytesIO()
            soundfile.write(buffer, clip, rate, format="WAV")
            table["audio"].append({"bytes": buffer.getvalue(), "path": None})
            table["label"].append(wavs[pick].parent.name)
            table["clip"].append(index)
        return datasets.Dataset.from_dict(table, features=features)

    shards = count // per_shard
    for shard in range(shards):
        rows(shard * per_shard, per_shard).to_parquet(folder / "data" / f"train-{shard:05d}-of-{shards:05d}.parquet")
    rows(count, 16).to_parquet(folder / "data" / "validation-00000-of-00001.parquet")
    (folder / "labels.txt").write_text("\n".join(sorted({w.parent.name for w in wavs})) + "\n")
    return folder


@pytest.fixture(scope="module")
def word_wavs(commands_root) -> list[Path]:
    return sorted((commands_root / "train").glob("*/*.wav"))[::3]


def clips_of(stream, rank: int, world_size: int, workers: int = 0, batches: int = 6, start: int = 0):
    """The `clip` ids of the first `batches` training batches of process `rank`, read through a DataLoader."""
    clips = training.StreamingClips(stream, audio_column="audio", label_column="clip",
                                    label2id={str(i): i for i in range(100)},
                                    multi_label=False, sampling_rate=16000, batch_size=4, seed=3, buffer_size=8,
                                    rank=rank, world_size=world_size)
    clips.start_batch = start
    loader = torch.utils.data.DataLoader(clips, batch_size=None, num_workers=workers, collate_fn=lambda rows: rows)
    out = []
    for batch in loader:
        assert all(row["audio"]["sampling_rate"] == 16000 and 0 < len(row["audio"]["array"]) <= 8000
                   for row in batch)
        out.append([row["clip"] for row in batch])
        if len(out) == batches:
            return out
    return out


def test_streaming_parts_workers_and_resume(word_wavs, tmp_path, monkeypatch):
    import datasets

    # datasets sleeps 5 s whenever a parquet stream's reader threads stop (an Arrow workaround): at every pass and
    # every iterator left early, which this test does a dozen times.
    monkeypatch.setattr(datasets.config, "SLEEP_TIME_ON_THREADS_SHUTDOWN", 0)

    folder = write_parquet_clips(tmp_path / "set", word_wavs, count=24, per_shard=6)
    stream = datasets.load_dataset(str(folder), split="train", streaming=True).cast_column(
        "audio", datasets.Audio(decode=False))
    one = clips_of(stream, 0, 1, batches=12)  # 24 clips, 4 a batch: two passes
    first_pass, second_pass = sum(one[:6], []), sum(one[6:], [])
    assert sorted(first_pass) == sorted(second_pass) == list(range(24))
    assert first_pass != second_pass  # re-shuffled each pass
    assert clips_of(stream, 0, 1, workers=2, batches=12) == one  # workers: same batches in the same order
    assert clips_of(stream, 0, 1, start=5, batches=7) == one[5:]  # a resumed run continues the stream exactly
    assert clips_of(stream, 0, 1, workers=2, start=5, batches=7) == one[5:]  # both at once
    rank0, rank1 = (sum(clips_of(stream, rank, 2, batches=3), []) for rank in (0, 1))
    assert sorted(rank0 + rank1) == list(range(24))  # one pass: each process its own part (2 shards of 4)
    with pytest.raises(ValueError, match="fewer clips"):
        clips_of(stream.take(0), 0, 1)


def test_prepare_data_streams_the_training_split_of_every_source(word_wavs, tmp_path, monkeypatch):
    """--dataset_name (parquet), --train_dir (audiofolder) and --train_file (CSV): the training split becomes an
    undecoded stream whose rows decode to 16 kHz audio with encoded labels; evaluation stays a loaded split with
    the same label ids; a missing column is named."""
    import datasets

    monkeypatch.setattr(datasets.config, "SLEEP_TIME_ON_THREADS_SHUTDOWN", 0)
    words = word_wavs[:12]
    for split in ("train", "validation"):
        for wav in words:
            target = tmp_path / "folders" / split / wav.parent.name / wav.name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(wav, target)
    (tmp_path / "train.csv").write_text("audio,label\n" + "".join(f"{w},{w.parent.name}\n" for w in words))
    sources = {"dataset_name": str(write_parquet_clips(tmp_path / "parquet", words, count=12, per_shard=6)),
               "train_dir": str(tmp_path / "folders" / "train")}
    names = sorted({w.parent.name for w in words})
    for source in ({"dataset_name": sources["dataset_name"]},
                   {"train_dir": sources["train_dir"], "validation_dir": str(tmp_path / "folders" / "validation")},
                   {"train_file": str(tmp_path / "train.csv")}):
        args = training.DataArguments(streaming=True, **source)
        raw, labels, multi_label, _, _ = training.prepare_data(args, seed=0)
        assert isinstance(raw["train"], datasets.IterableDataset) and not multi_label, source
        assert len(labels) > 1 and set(labels) <= set(names) and labels == sorted(labels), (source, labels)
        label2id = {label: i for i, label in enumerate(labels)}
        if "validation" in raw:
            assert not isinstance(raw["validation"], datasets.IterableDataset)
            assert set(raw["validation"]["label"]) <= set(label2id.values())  # encoded with the stream's ids
        clips = training.StreamingClips(raw["train"], audio_column="audio", label_column="label",
                                        label2id=label2id, multi_label=False, sampling_rate=16000, batch_size=4,
                                        seed=0, buffer_size=4)
        batch = next(iter(clips))
        assert len(batch) == 4 and all(row["label"] in label2id.values() and row["audio"]["array"].ndim == 1
                                       for row in batch), source
    with pytest.raises(ValueError, match="no column 'word'.*--label_column_name"):
        training.prepare_data(training.DataArguments(streaming=True, label_column_name="word",
                                                     train_file=str(tmp_path / "train.csv")), seed=0)
    (tmp_path / "two.txt").write_text("\n".join(names[:2]) + "\n")
    with pytest.raises(ValueError, match="--labels_file .* already names its classes"):  # not silently unused
        training.prepare_data(training.DataArguments(streaming=True, train_dir=sources["train_dir"],
                                                     labels_file=str(tmp_path / "two.txt")), seed=0)
    args = training.DataArguments(streaming=True, train_file=str(tmp_path / "train.csv"),
                                  labels_file=str(tmp_path / "two.txt"))
    raw, labels, _, _, _ = training.prepare_data(args, seed=0)
    assert labels == names[:2]
    clips = training.streaming_clips(raw["train"], args, labels, False, 16000, 12, 0, 0, 1)
    with pytest.raises(ValueError, match="is not among the training labels.*come from --labels_file .*two.txt"):
        next(iter(clips))
    args.validation_file = str(tmp_path / "train.csv")  # evaluation clips outside the file: the file is named too
    with pytest.raises(ValueError, match=r"--validation_file .*train.csv: \d+ clips? labelled '\w+' \(\w+\.wav(?s:.*)"
                                         "not among the classes of --labels_file .*two.txt"):
        training.prepare_data(args, seed=0)


def test_streaming_arguments_refused_with_the_fix():
    def check(sources=(), max_steps=10, supported=True, recipe=None, strategies=None, **data):
        training.check_streaming_arguments(training.DataArguments(**data), max_steps, dict.fromkeys(sources, "cli"),
                                           recipe or training.RecipeArguments(), strategies, supported=supported)

    check(streaming=True, dataset_name="x")  # fine
    with pytest.raises(ValueError, match="needs --max_steps"):
        check(streaming=True, max_steps=-1)
    with pytest.raises(ValueError, match="acts only with --streaming"):
        check(["labels_file"], labels_file="labels.txt")
    with pytest.raises(ValueError, match="run_audio_classification.py"):
        check(streaming=True, supported=False)
    with pytest.raises(ValueError, match="--check_audio checks loaded splits"):
        check(["check_audio"], streaming=True)
    with pytest.raises(ValueError, match="--multistep_start_epoch 8, --eval_strategy epoch count epochs"):
        check(streaming=True, recipe=training.RecipeArguments(multistep_start_epoch=8),
              strategies={"--eval_strategy": "epoch", "--save_strategy": "no"})
    with pytest.raises(ValueError, match="--compute_stats"):
        check(streaming=True, compute_stats=True)


STREAM = [*TINY, "--streaming", "--shuffle_buffer_size", "64", "--eval_strategy", "no",
          "--multistep_start_epoch", "0", "--freqm", "8", "--timem", "4", "--mixup", "0.5"]


@pytest.mark.slow
def test_streaming_trainer_runs_resume_workers_and_torchrun_memory(word_wavs, tmp_path):
    """The Trainer example end to end: with 2 DataLoader workers, and resumed from a checkpoint with 2 workers, the
    final weights equal the uninterrupted single-worker run's exactly (augmentations included); under torchrun (2
    processes) the peak memory of each process with 4x the clips (4x the shards, of the same size) stays within 40
    MB. (A shuffled stream reads up to 10 shards at a time, datasets' max_buffer_input_shards: both sizes give
    each process more than that, so that what is compared is the number of clips.)"""
    small = write_parquet_clips(tmp_path / "small", word_wavs, count=800, per_shard=20)
    common = [sys.executable, str(TRAINER), RECIPE, "--dataset_name", str(small), *STREAM, "--max_steps", "6",
              "--save_strategy", "steps", "--save_steps", "3", "--do_eval", "false"]
    run([*common, "--output_dir", str(tmp_path / "plain")])
    run([*common, "--dataloader_num_workers", "2", "--output_dir", str(tmp_path / "workers")])
    shutil.copytree(tmp_path / "plain" / "checkpoint-3", tmp_path / "resumed" / "checkpoint-3")
    run([*common, "--resume_from_checkpoint", "last", "--dataloader_num_workers", "2",  # both at once
         "--output_dir", str(tmp_path / "resumed")])
    plain = final_weights(tmp_path / "plain")
    results = json.loads((tmp_path / "plain" / "all_results.json").read_text())
    assert results["train_steps"] == 6 and "epoch" not in results  # a stream has no epochs to report
    card = (tmp_path / "plain" / "README.md").read_text()
    from conftest import card_settings

    settings = card_settings(card)
    assert settings["max_steps"] == 6 and settings["streaming"] is True and "num_train_epochs" not in settings
    assert max_difference(plain, final_weights(tmp_path / "workers")) == 0.0
    assert max_difference(plain, final_weights(tmp_path / "resumed")) == 0.0

    large = write_parquet_clips(tmp_path / "large", word_wavs, count=3200, per_shard=20, seed=1)
    peaks = {}
    for name, folder in (("small", small), ("large", large)):
        torchrun = shutil.which("torchrun") or "torchrun"
        run([torchrun, "--nproc_per_node", "2", "--master_port", "29541", str(TRAINER), RECIPE, "--dataset_name",
             str(folder), "--labels_file", str(folder / "labels.txt"), *STREAM, "--max_steps", "8",
             "--save_strategy", "no", "--output_dir", str(tmp_path / f"ddp_{name}")],
            env_extra={"OMP_NUM_THREADS": "1"})
        ranks = [json.loads((tmp_path / f"ddp_{name}" / f"process_{r}.json").read_text()) for r in (0, 1)]
        assert [r["examples_collated_for_training"] for r in ranks] == [64, 64]  # 8 steps x 8 clips
        peaks[name] = max(r["peak_memory_mb"] for r in ranks)
        assert "eval_accuracy" in json.loads((tmp_path / f"ddp_{name}" / "all_results.json").read_text())
    print("peak memory per process (MB):", peaks)
    assert peaks["large"] - peaks["small"] < 40, peaks


def test_augmenting_collator_survives_pickling_into_a_worker(commands_root):
    """DataLoader workers get a pickled copy of the collator: the copy augments a batch exactly as the original."""
    import pickle

    wavs = sorted((commands_root / "train").glob("*/*.wav"))[:4]
    rows = [{"audio": {"array": soundfile.read(w, dtype="float32")[0], "sampling_rate": 16000}, "label": i % 2,
             "_row": i} for i, w in enumerate(wavs)]
    train, _ = training.make_collators(ast_hf_extractor(), 2, False, training.DataArguments(max_length=64),
                                       training.RecipeArguments(mixup=1.0, freqm=8, timem=8, noise=True), seed=5)
    train.epoch = 2
    copy = pickle.loads(pickle.dumps(train))
    original, copied = train(rows), copy(rows)
    torch.testing.assert_close(original["input_values"], copied["input_values"], rtol=0, atol=0)
    torch.testing.assert_close(original["labels"], copied["labels"], rtol=0, atol=0)


def ast_hf_extractor():
    import ast_hf

    return ast_hf.ASTFeatureExtractor(max_length=64)


@pytest.mark.slow
def test_dataloader_workers_train_the_same_model(commands_root, tmp_path):
    """Map-style data, the augmenting collator (mixup, SpecAugment, noise) in 2 DataLoader workers: the same final
    weights as without workers, over 2 epochs (the epoch reaches the workers' copies); persistent workers, which
    would keep the first epoch's collator, are refused with the reason."""
    subset = tmp_path / "train.csv"
    wavs = sorted((commands_root / "train").glob("*/*.wav"))[::4][:16]
    subset.write_text("audio,label\n" + "".join(f"{w},{w.parent.name}\n" for w in wavs))
    common = [sys.executable, str(TRAINER), RECIPE, "--train_file", str(subset), *TINY, "--num_train_epochs", "2",
              "--freqm", "8", "--timem", "4", "--mixup", "0.5", "--noise", "true", "--save_strategy", "no",
              "--eval_strategy", "no", "--do_eval", "false"]
    run([*common, "--output_dir", str(tmp_path / "plain")])
    run([*common, "--dataloader_num_workers", "2", "--output_dir", str(tmp_path / "workers")])
    assert max_difference(final_weights(tmp_path / "plain"), final_weights(tmp_path / "workers")) == 0.0
    refused = subprocess.run([*common, "--dataloader_num_workers", "2", "--dataloader_persistent_workers", "true",
                              "--output_dir", str(tmp_path / "refused")], capture_output=True, text=True, cwd=ROOT)
    assert refused.returncode != 0 and "persistent workers would keep" in refused.stderr
    # The accelerate script takes the same flag (workers started anew each epoch, which see the epoch).
    loop = [sys.executable, str(LOOP), *common[2:]]
    loop = [word for word in loop if word not in ("--save_strategy", "no", "--eval_strategy")]
    run([*loop, "--output_dir", str(tmp_path / "loop_plain")])
    run([*loop, "--dataloader_num_workers", "2", "--output_dir", str(tmp_path / "loop_workers")])
    assert max_difference(final_weights(tmp_path / "loop_plain"), final_weights(tmp_path / "loop_workers")) == 0.0
