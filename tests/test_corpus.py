"""Corpus runs (`ast-hf classify/embed --output`, `ast_hf.corpus`): every file once, resumable after SIGKILL and
SIGINT, shards and torchrun processes giving the rows of one process, worker decoding giving the scores of the
pipeline on the file, and `datasets` inputs in the three pipelines. Real espeak-ng speech in several formats, real
processes and signals."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from ast_hf.cli import main
from ast_hf.corpus import collect_files

WORDS = ["yes", "no", "up", "down", "left", "right"]
VOICES = ["en", "en-us", "de"]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory, speech_words):
    """30 clips (6 words x 3 voices, wav/flac/mp3/ogg, names with spaces and non-ASCII) in nested folders, one
    45-second recording, and a bad file."""
    root = tmp_path_factory.mktemp("corpus")
    for i, (word, voice, audio) in enumerate(speech_words):
        folder = root / ("a" if i % 2 else "b c") / voice
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"{i:02d} {word} é.wav"
        sf.write(path, audio, 16000)
        if i % 5 == 1:
            subprocess.run(["ffmpeg", "-loglevel", "error", "-y", "-i", str(path), "-ar", "22050",
                            str(path.with_suffix(".mp3"))], check=True)
            path.unlink()
        elif i % 5 == 3:
            sf.write(path.with_suffix(".flac"), np.stack([audio, audio * 0.5], axis=1), 16000)
            path.unlink()
    long = np.concatenate([audio for _, _, audio in speech_words[:6]] * 8)[:45 * 16000]
    sf.write(root / "long recording.ogg", long, 16000)
    (root / "broken.wav").write_bytes(b"RIFF" + b"\0" * 40)
    return root


@pytest.fixture(scope="module")
def speech_words():
    from ast_hf.audio_io import espeak_available, espeak_speech

    if not espeak_available():
        pytest.skip("espeak-ng is not installed (bash scripts/setup.sh)")
    return [(word, voice, espeak_speech(word, voice=voice, speed=150 + 10 * i)) for i, (word, voice) in
            enumerate((w, v) for v in VOICES for w in WORDS)] + [
        (word, "en", espeak_speech(f"{word} {word}", voice="en", pitch=30)) for word in WORDS * 2]


def rows_of(path: Path) -> dict[str, dict]:
    """The rows of a JSON Lines output by path."""
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    paths = [row["path"] for row in rows]
    assert len(paths) == len(set(paths)), "a file appears twice"
    return {row["path"]: row for row in rows}


def same_rows(a: dict[str, dict], b: dict[str, dict], tolerance: float = 1e-5) -> None:
    assert sorted(a) == sorted(b)
    for path in a:
        if a[path].get("error") or b[path].get("error"):
            assert a[path].get("error") == b[path].get("error")
            continue
        assert [item["label"] for item in a[path]["clip"]] == [item["label"] for item in b[path]["clip"]]
        np.testing.assert_allclose([item["score"] for item in a[path]["clip"]],
                                   [item["score"] for item in b[path]["clip"]], atol=tolerance)
        assert len(a[path]["segments"]) == len(b[path]["segments"])


def classify(word_model, corpus, output, *extra):
    return main(["classify", str(corpus), "--model", str(word_model), "--output", str(output), "--no-progress",
                 "--top-k", "3", *map(str, extra)])


def test_rows_equal_the_pipeline_on_each_file_and_resume_skips_done_files(word_model, corpus, tmp_path, capsys):
    from transformers import pipeline

    output = tmp_path / "tags.jsonl"
    assert classify(word_model, corpus, output, "--num-workers", "2") == 1  # broken.wav fails, the rest is tagged
    rows = rows_of(output)
    assert len(rows) == 32 and not (tmp_path / "tags.jsonl.partial").exists()
    broken = rows[str(corpus / "broken.wav")]
    assert "broken.wav" in broken["error"]
    tagger = pipeline("audio-tagging", model=str(word_model))
    for path in [p for p in rows if "error" not in rows[p] or rows[p]["error"] is None][::4]:
        expected = tagger(path, top_k=3)  # a second route: the pipeline on the file, decoded in this process
        np.testing.assert_allclose([i["score"] for i in rows[path]["clip"]], [i["score"] for i in expected["clip"]],
                                   atol=1e-5)
        assert os.path.isabs(path)
    long = rows[str(corpus / "long recording.ogg")]
    assert len(long["segments"]) > 4
    capsys.readouterr()
    # The same command again: nothing to do but the failed file; the output is unchanged.
    assert classify(word_model, corpus, output) == 1
    err = capsys.readouterr().err
    assert "31 done before, 1 to do" in err
    same_rows(rows_of(output), rows)
    # A file changed since is done again; --overwrite redoes every file.
    touched = next(p for p in rows if p.endswith(".flac"))
    os.utime(touched, ns=(time.time_ns(), time.time_ns()))
    assert classify(word_model, corpus, output) == 1
    assert "30 done before, 2 to do" in capsys.readouterr().err
    assert rows_of(output)[touched]["mtime_ns"] == os.stat(touched).st_mtime_ns
    assert classify(word_model, corpus, output, "--overwrite", "--num-workers", "0") == 1
    assert "0 done before, 32 to do" in capsys.readouterr().err
    same_rows(rows_of(output), rows)


@pytest.mark.parametrize("suffix", [".parquet", ".jsonl"])
def test_other_settings_are_refused_before_resuming(word_model, corpus, tmp_path, capsys, suffix):
    output = tmp_path / f"tags{suffix}"
    assert classify(word_model, corpus, output) == 1
    assert classify(word_model, corpus, output, "--hop", "0.5") == 2
    err = capsys.readouterr().err
    assert "other settings" in err and "hop: None there, 0.5 now" in err and "--overwrite" in err
    assert classify(word_model, corpus, output, "--failures-ok") == 0  # broken.wav is named, the status is 0
    # Settings are recorded as they take effect: restating the checkpoint's own defaults resumes the run.
    from ast_hf import ASTFeatureExtractor

    padded = ASTFeatureExtractor.from_pretrained(word_model).pad_to_max_length
    flag = "--pad-to-max-length" if padded else "--no-pad-to-max-length"
    capsys.readouterr()
    assert classify(word_model, corpus, output, flag, "--single-label", "--failures-ok") == 0
    assert "other settings" not in capsys.readouterr().err


def test_a_relative_root_stores_absolute_paths_and_each_file_once(word_model, corpus, tmp_path, capsys,
                                                                  monkeypatch):
    name = os.path.relpath(sorted(path for path in collect_files([str(corpus)])[0] if "broken" not in path)[0],
                           corpus)
    (tmp_path / "one.txt").write_text(name + "\n")
    monkeypatch.chdir(tmp_path)
    root = os.path.relpath(corpus, tmp_path)  # "../corpus" or the like
    output = tmp_path / "tags.jsonl"
    assert main(["classify", "--files-from", "one.txt", "--root", root, "--model", str(word_model), "--output",
                 str(output), "--no-progress"]) == 0
    assert list(rows_of(output)) == [str(corpus / name)]
    assert main(["classify", str(corpus / name), "--files-from", "one.txt", "--root", root, "--model",
                 str(word_model), "--output", str(output), "--no-progress"]) == 0
    assert list(rows_of(output)) == [str(corpus / name)] and "1 done before, 0 to do" in capsys.readouterr().err


def test_a_partial_overwrite_run_resumed_ignores_the_old_output(tmp_path):
    from ast_hf.corpus.sources import FileKey
    from ast_hf.corpus.store import ResultStore

    def row(name, score):
        return {"path": name, "size": 1, "mtime_ns": 1, "error": None, "duration": 1.0,
                "clip": [{"label": "a", "score": score}], "segments": []}

    output = str(tmp_path / "t.jsonl")
    store = ResultStore(output, "classify", {"k": 1})
    store.add(row("/x.wav", 0.1))
    store.add(row("/y.wav", 0.1))
    store.finish()
    store = ResultStore(output, "classify", {"k": 1}, overwrite=True)  # then killed after one file
    store.add(row("/x.wav", 0.9))
    store.flush()
    resumed = ResultStore(output, "classify", {"k": 1})  # the same command without --overwrite
    assert resumed.done == {FileKey("/x.wav", 1, 1)}  # y is to do again: the old output is being replaced
    resumed.add(row("/y.wav", 0.8))
    resumed.finish()
    assert {r["path"]: r["clip"][0]["score"] for r in map(json.loads, open(output))} == {"/x.wav": 0.9, "/y.wav": 0.8}


def run_cli(args, **kwargs):
    return subprocess.Popen([sys.executable, "-m", "ast_hf.cli", *map(str, args)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, **kwargs)


@pytest.mark.slow
def test_sigkill_at_three_moments_then_resume_equals_an_uninterrupted_run(word_model, corpus, tmp_path):
    command = ["classify", corpus, "--model", word_model, "--top-k", "3", "--no-progress", "--batch-size", "2"]
    reference = tmp_path / "reference.jsonl"
    assert subprocess.run([sys.executable, "-m", "ast_hf.cli", *map(str, command), "--output", reference],
                          capture_output=True).returncode == 1
    output = tmp_path / "killed.jsonl"
    partial = tmp_path / "killed.jsonl.partial"
    rng = np.random.default_rng(0)
    kills = 0
    for _ in range(3):
        process = run_cli([*command, "--output", output, "--num-workers", "1", "--group-size", "4"])
        # Wait for the first part (a group of 4 files) to land, then kill at a random moment after it.
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and process.poll() is None and not list(partial.glob("part-*")):
            time.sleep(0.05)
        time.sleep(float(rng.uniform(0, 0.5)))
        if process.poll() is None:
            process.send_signal(signal.SIGKILL)
            kills += 1
        process.wait()
        assert not output.exists() or rows_of(output)  # never a partial file at the output path
    assert kills >= 1
    done = run_cli([*command, "--output", output])
    done.wait()
    same_rows(rows_of(output), rows_of(reference))
    assert not partial.exists()


@pytest.mark.slow
def test_sigint_and_sigterm_stop_after_the_file_in_flight(word_model, corpus, tmp_path):
    output = tmp_path / "emb.parquet"
    command = ["embed", corpus, "--model", word_model, "--output", output, "--no-progress", "--num-workers", "0"]
    counts: list[int] = []  # files the next run has to do, by the stop message
    for number in (signal.SIGINT, signal.SIGTERM):
        partial = tmp_path / "emb.parquet.partial"
        before = len(list(partial.glob("part-*")))
        process = run_cli([*command, "--group-size", "2"])
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and process.poll() is None and len(list(partial.glob("part-*"))) <= before:
            time.sleep(0.05)
        process.send_signal(number)
        _, err = process.communicate(timeout=120)
        if counts:  # a run after a stop does what the stop message said was left
            assert int(re.search(r"(\d+) to do", err)[1]) == counts[-1], err
        if process.returncode == 0:  # finished before the signal landed
            break
        assert process.returncode == 128 + number, err
        assert f"stopped by {signal.Signals(number).name}" in err and "run the same command again" in err
        # The counts add up: the next run does the files not reached plus those that failed in this one.
        stop_line = next(line for line in err.splitlines() if "stopped by" in line)
        not_reached = int(stop_line.split(" not reached")[0].rsplit(" ", 1)[1])
        failed = re.search(r"(\d+) failed \(tried again then\)", stop_line)
        counts.append(not_reached + (int(failed[1]) if failed else 0))
        assert not output.exists()
        import pyarrow.parquet as pq

        parts = sorted(partial.glob("part-*.parquet"))
        assert parts and all(pq.read_table(part).num_rows for part in parts)  # readable, each a whole group
    final = subprocess.run([sys.executable, "-m", "ast_hf.cli", *map(str, command)], capture_output=True, text=True)
    assert final.returncode == 1, final.stderr  # broken.wav
    if counts:
        assert int(re.search(r"(\d+) to do", final.stderr)[1]) == counts[-1], final.stderr
    import pyarrow.parquet as pq

    table = pq.read_table(output)
    assert table.num_rows == 31 and len(set(table.column("path").to_pylist())) == 31


def test_shards_run_separately_give_the_rows_of_one_process(word_model, corpus, tmp_path, capsys):
    one = tmp_path / "one.jsonl"
    classify(word_model, corpus, one)
    parts = []
    for index in range(3):
        assert classify(word_model, corpus, tmp_path / "sharded.jsonl", "--num-shards", 3, "--shard-index",
                        index) in (0, 1)
        parts.append(tmp_path / f"sharded-{index:05d}-of-00003.jsonl")
    merged = {}
    for part in parts:
        rows = rows_of(part)
        assert not set(rows) & set(merged)
        merged.update(rows)
    same_rows(merged, rows_of(one))
    capsys.readouterr()
    assert classify(word_model, corpus, tmp_path / "x.jsonl", "--num-shards", 3) == 2
    assert "go together" in capsys.readouterr().err
    assert classify(word_model, corpus, tmp_path / "x.jsonl", "--num-shards", 3, "--shard-index", 3) == 2
    assert "from 0 to 2" in capsys.readouterr().err


@pytest.mark.slow
def test_two_torchrun_processes_give_the_rows_of_one(word_model, corpus, tmp_path):
    one = tmp_path / "one.parquet"
    assert main(["embed", str(corpus), "--model", str(word_model), "--output", str(one), "--no-progress"]) == 1
    torchrun = shutil.which("torchrun")
    done = subprocess.run([torchrun, "--nproc_per_node", "2", "-m", "ast_hf.cli", "embed", str(corpus), "--model",
                           str(word_model), "--output", str(tmp_path / "two.parquet"), "--no-progress"],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr  # broken.wav fails in one shard: under torchrun that is not an exit 1
    import datasets

    parts = sorted(str(path) for path in tmp_path.glob("two-*-of-00002.parquet"))
    assert len(parts) == 2, done.stderr
    two = datasets.load_dataset("parquet", data_files=parts, split="train")
    reference = datasets.load_dataset("parquet", data_files=str(one), split="train")
    assert sorted(two["path"]) == sorted(reference["path"])
    by_path = {row["path"]: row["embedding"] for row in reference}
    for row in two:
        np.testing.assert_allclose(row["embedding"], by_path[row["path"]], atol=1e-5)


def test_files_from_lists_and_bad_inputs_are_named(word_model, corpus, tmp_path, capsys):
    files = sorted(str(path.relative_to(corpus)) for path in corpus.rglob("*") if path.is_file())
    (tmp_path / "list.txt").write_text("# my files\n" + "\n".join(files[:5]) + "\nmissing.wav\n")
    output = tmp_path / "tags.csv"
    status = main(["classify", "--files-from", str(tmp_path / "list.txt"), "--root", str(corpus), "--model",
                   str(word_model), "--output", str(output), "--no-progress"])
    err = capsys.readouterr().err
    assert status == 1 and "missing.wav: no such file" in err
    import csv

    rows = list(csv.DictReader(output.open()))
    assert {row["path"] for row in rows} == {str(corpus / name) for name in files[:5]} | {str(corpus / "missing.wav")}
    assert [row for row in rows if row["kind"] == "error"][0]["error"].endswith("no such file")
    import pyarrow as pa
    import pyarrow.parquet as pq

    (tmp_path / "two.csv").write_text("label,audio\nx," + str(corpus / files[0]) + "\n")
    assert main(["classify", "--files-from", str(tmp_path / "two.csv"), "--model", str(word_model), "--output",
                 str(tmp_path / "c.jsonl")]) == 2
    err = capsys.readouterr().err
    assert "no column named path, file, filename or file_name" in err and "'label', 'audio'" in err
    pq.write_table(pa.table({"file_name": [str(corpus / name) for name in files[5:8]]}), tmp_path / "list.parquet")
    assert main(["classify", "--files-from", str(tmp_path / "list.parquet"), "--model", str(word_model), "--output",
                 str(tmp_path / "t.jsonl"), "--no-progress"]) == 0
    assert len(rows_of(tmp_path / "t.jsonl")) == 3
    (corpus / "sub.wav").mkdir(exist_ok=True)  # a directory with an audio name inside the tree is named
    try:
        assert classify(word_model, corpus, tmp_path / "d.jsonl") == 1
        assert "sub.wav: a directory, not an audio file" in capsys.readouterr().err
    finally:
        (corpus / "sub.wav").rmdir()
    for args, message in [(["--output", str(tmp_path / "x.txt")], ".jsonl, .csv, .parquet"),
                          (["--files-from", str(tmp_path / "nope.txt"), "--output", str(tmp_path / "y.jsonl")],
                           "no such file"),
                          (["--num-workers", "-1", "--output", str(tmp_path / "z.jsonl")], "--num-workers -1")]:
        assert main(["classify", str(corpus), "--model", str(word_model), *args]) == 2
        assert message in capsys.readouterr().err


def test_datasets_inputs_in_the_three_pipelines(word_model, corpus, tmp_path):
    import datasets
    from transformers import pipeline
    from transformers.pipelines.pt_utils import KeyDataset

    paths = sorted(str(path) for path in corpus.rglob("*") if path.suffix in (".wav", ".flac", ".mp3"))[:6]
    paths = [path for path in paths if "broken" not in path]
    ds = datasets.Dataset.from_dict({"audio": paths}).cast_column("audio", datasets.Audio(sampling_rate=16000))
    tagger = pipeline("audio-tagging", model=str(word_model))
    embedder = pipeline("audio-feature-extraction", model=str(word_model))
    classifier = pipeline("audio-classification", model=str(word_model), device="cpu")
    by_file = tagger(paths, top_k=2)
    for inputs in (ds["audio"], KeyDataset(ds, "audio"), ds.to_iterable_dataset()["audio"]):
        got = list(tagger(inputs, top_k=2, num_workers=0))
        for a, b in zip(got, by_file, strict=True):
            np.testing.assert_allclose([i["score"] for i in a["clip"]], [i["score"] for i in b["clip"]], atol=1e-5)
    with_workers = list(tagger(KeyDataset(ds, "audio"), top_k=2, num_workers=2))
    for a, b in zip(with_workers, by_file, strict=True):
        np.testing.assert_allclose([i["score"] for i in a["clip"]], [i["score"] for i in b["clip"]], atol=1e-5)
    vectors = [result["embedding"] for result in embedder(paths)]
    for inputs in (ds["audio"], KeyDataset(ds, "audio"), [row["audio"] for row in ds]):
        got = list(embedder(inputs, num_workers=1))
        np.testing.assert_allclose(np.stack([r["embedding"] for r in got]), np.stack(vectors), atol=1e-5)
    expected = classifier(paths, top_k=2)
    for inputs in (ds["audio"], KeyDataset(ds, "audio")):
        got = list(classifier(inputs, top_k=2))
        for a, b in zip(got, expected, strict=True):
            assert [i["label"] for i in a] == [i["label"] for i in b]
            np.testing.assert_allclose([i["score"] for i in a], [i["score"] for i in b], atol=1e-5)
    with pytest.raises(TypeError, match="pass its audio column"):
        tagger(ds)
    with pytest.raises(TypeError, match="pass its audio column"):
        classifier(ds)


@pytest.mark.slow
def test_ray_data_actor_pool_gives_the_rows_of_one_process(word_model, corpus, tmp_path):
    ray = pytest.importorskip("ray")
    import datasets

    from ast_hf.corpus.ray_engine import run_with_ray

    one = tmp_path / "one.parquet"
    assert main(["embed", str(corpus), "--model", str(word_model), "--output", str(one), "--no-progress"]) == 1
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        failures = run_with_ray(str(word_model), "embed", [str(corpus)], str(tmp_path / "ray"), concurrency=2,
                                batch_size=8, options={"batch_size": 4})
    finally:
        ray.shutdown()
    rows = datasets.load_dataset("parquet", data_dir=str(tmp_path / "ray"), split="train")
    reference = datasets.load_dataset("parquet", data_files=str(one), split="train")
    assert sorted(rows["path"]) == sorted(reference["path"]) and len(rows) == 31
    # The files the single-process run could not embed are named, not dropped without a word.
    paths, not_files = collect_files([str(corpus)])
    unreadable = set(paths) - set(reference["path"])
    assert unreadable and {path for path, _ in failures} == unreadable | {name for name, _ in not_files}, failures
    by_path = {row["path"]: row["embedding"] for row in reference}
    for row in rows:
        np.testing.assert_allclose(row["embedding"], by_path[row["path"]], atol=1e-5)
