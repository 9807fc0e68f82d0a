"""Fine-tuning data and run settings that a new user gets wrong: each is refused with one clear message (or handled),
never a traceback from deep inside datasets or a run that looks fine and did nothing."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile

from ast_hf import training

ROOT = Path(__file__).resolve().parents[1]
TRAINER = ROOT / "examples" / "run_audio_classification.py"
LOOP = ROOT / "examples" / "run_audio_classification_no_trainer.py"
TINY = ["--model_size", "tiny", "--frequency_stride", "16", "--time_stride", "16", "--max_length", "64",
        "--per_device_train_batch_size", "8", "--report_to", "none", "--num_train_epochs", "1"]


def run(command: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *map(str, command)], capture_output=True, text=True, timeout=600,
                          cwd=ROOT)


@pytest.mark.parametrize("fields, message", [
    (dict(train_dir="a", train_file="b.csv"), "Give one data source, not --train_dir/--validation_dir and "
                                               "--train_file/--validation_file"),
    (dict(dataset_name="x", train_dir="a"), "Give one data source, not --dataset_name and --train_dir"),
    (dict(validation_dir="a"), "--validation_dir is given without --train_dir"),
    (dict(train_dir="a", validation_file="b.csv"), "Give one data source"),
])
def test_one_data_source(fields, message):
    with pytest.raises(ValueError, match=message):
        training.prepare_data(training.DataArguments(**fields), seed=0)


def test_folders_without_audio_or_classes(commands_root, tmp_path):
    with pytest.raises(ValueError, match="is not a folder"):
        training.load_audio_datasets(training.DataArguments(train_dir=str(tmp_path / "missing")))
    (tmp_path / "empty" / "yes").mkdir(parents=True)
    (tmp_path / "empty" / "yes" / "notes.txt").write_text("no audio here")
    with pytest.raises(ValueError, match="holds no audio files"):
        training.load_audio_datasets(training.DataArguments(train_dir=str(tmp_path / "empty")))
    one_class = tmp_path / "one" / "yes"
    shutil.copytree(commands_root / "train" / "yes", one_class)
    (one_class / "metadata.csv").unlink(missing_ok=True)
    with pytest.raises(ValueError, match=r"has 1 class folder \(yes\): datasets takes each clip's label from its "
                                         r"class folder .* only when there are two or more"):
        training.load_audio_datasets(training.DataArguments(train_dir=str(tmp_path / "one")))


def test_csv_with_another_path_column(commands_root, tmp_path):
    wavs = sorted((commands_root / "train").glob("*/*.wav"))[:4]
    table = tmp_path / "train.csv"
    table.write_text("path,label\n" + "".join(f"{w},{w.parent.name}\n" for w in wavs))
    with pytest.raises(ValueError, match=r"has no column 'audio' \(columns: \['path', 'label'\]\); set "
                                         "--audio_column_name"):
        training.load_audio_datasets(training.DataArguments(train_file=str(table)))
    with pytest.raises(ValueError, match="does not exist"):
        training.load_audio_datasets(training.DataArguments(train_file=str(tmp_path / "nope.csv")))
    raw = training.load_audio_datasets(training.DataArguments(train_file=str(table), audio_column_name="path"))
    assert len(raw["train"]) == 4


def test_csv_with_empty_labels_or_no_rows(commands_root, tmp_path):
    """An empty label cell was made a class named 'None'; a header-only CSV ended in a datasets error."""
    wavs = sorted((commands_root / "train").glob("*/*.wav"))[:4]
    table = tmp_path / "train.csv"
    table.write_text("audio,label\n" + "".join(f"{w},{w.parent.name}\n" for w in wavs[:3]) + f"{wavs[3]},\n")
    raw = training.load_audio_datasets(training.DataArguments(train_file=str(table)))
    with pytest.raises(ValueError, match=r"1 of 4 training rows have no label in column 'label' \(rows 3,"):
        training.label_names(raw["train"], "label")
    with pytest.raises(ValueError, match="A clip has no label"):
        training.encode_label("", {"yes": 0}, multi_label=False)
    table.write_text("audio,label\n")
    with pytest.raises(ValueError, match="train.csv holds no rows"):
        training.load_audio_datasets(training.DataArguments(train_file=str(table)))


@pytest.mark.slow
def test_bad_files_are_reported_together_before_training(commands_root, tmp_path):
    """A missing file and a file that is not audio, found before training in one message; --skip_bad_audio trains
    without them."""
    wavs = sorted((commands_root / "train").glob("*/*.wav"))[::4][:10]
    (tmp_path / "junk.wav").write_text("this is not audio")
    rows = [f"{w},{w.parent.name}" for w in wavs] + [f"{tmp_path / 'gone.wav'},yes", f"{tmp_path / 'junk.wav'},no"]
    table = tmp_path / "train.csv"
    table.write_text("audio,label\n" + "\n".join(rows) + "\n")
    # Bad data behind a good header (found by decoding, the default check): a WAV cut mid-sample, an empty WAV, a
    # float WAV holding NaN.
    sound = (np.sin(np.arange(16000) * 0.05) * 0.3).astype(np.float32)
    soundfile.write(tmp_path / "whole.wav", sound, 16000, subtype="PCM_16")
    (tmp_path / "cut.wav").write_bytes((tmp_path / "whole.wav").read_bytes()[:16023])
    soundfile.write(tmp_path / "empty.wav", np.zeros(0, np.float32), 16000, subtype="PCM_16")
    soundfile.write(tmp_path / "nan.wav", np.where(np.arange(16000) % 7 == 0, np.nan, sound), 16000, subtype="FLOAT")
    rows += [f"{tmp_path / name},no" for name in ("cut.wav", "empty.wav", "nan.wav")]
    table.write_text("audio,label\n" + "\n".join(rows) + "\n")
    with pytest.raises(ValueError, match=r"(?s)5 of 15 train clips cannot be read:.*gone.wav: file not found.*"
                                         r"junk.wav: FFmpeg cannot decode it \(Could not open input file.*"
                                         r"cut.wav: truncated: its header announces 32000 bytes.*"
                                         r"empty.wav: no audio samples.*nan.wav: NaN or Inf samples.*"
                                         r"--skip_bad_audio"):
        training.load_audio_datasets(training.DataArguments(train_file=str(table)))
    # The cheap header check finds the missing, the non-audio, the truncated WAV (its header's data size) and the
    # empty one, not the NaN samples.
    with pytest.raises(ValueError, match=r"(?s)4 of 15 train clips.*junk.wav: not readable audio.*cut.wav: "
                                         r"truncated.*empty.wav"):
        training.load_audio_datasets(training.DataArguments(train_file=str(table), check_audio="header"))
    done = run([TRAINER, "--train_file", table, "--skip_bad_audio", "true", *TINY, "--output_dir", tmp_path / "out"])
    assert done.returncode == 0, done.stderr[-3000:]
    assert "skipping 5 of 15 train clips" in done.stderr
    assert json.loads((tmp_path / "out" / "process_0.json").read_text())["examples_collated_for_training"] == 10


@pytest.mark.slow
def test_trains_by_default_and_evaluation_only_writes_no_card(commands_root, tmp_path):
    """Without --do_train both examples train (what their user means) and evaluate when there is evaluation data; an
    evaluation-only run writes its results but no model and no model card; --do_eval without evaluation data is
    refused by the script itself."""
    data = ["--train_dir", commands_root / "train", "--validation_dir", commands_root / "validation"]
    for script in (TRAINER, LOOP):
        out = tmp_path / script.stem
        done = run([script, *data, *TINY, "--output_dir", out])
        assert done.returncode == 0, done.stderr[-3000:]
        results = json.loads((out / "all_results.json").read_text())
        assert "eval_accuracy" in results and (out / "model.safetensors").is_file()
        assert f"| accuracy | {results['eval_accuracy']:.4f} |" in (out / "README.md").read_text()
        done = run([script, *data[:2], "--do_eval", "true", *TINY, "--output_dir", tmp_path / "refused"])
        assert done.returncode != 0 and "do_eval=true (from the command line) needs evaluation data" in done.stderr
        assert not (tmp_path / "refused").exists()
    evaluated = tmp_path / "eval_only"
    done = run([TRAINER, *data, "--model_name_or_path", tmp_path / TRAINER.stem, "--do_train", "false",
                "--report_to", "none", "--output_dir", evaluated])
    assert done.returncode == 0, done.stderr[-3000:]
    assert "eval_accuracy" in json.loads((evaluated / "all_results.json").read_text())
    assert not (evaluated / "README.md").exists() and not (evaluated / "model.safetensors").exists()


@pytest.mark.parametrize("given, has_evaluation_data, strategy, expected", [
    ({}, True, "no", (True, True)),
    ({}, False, "no", (True, False)),
    ({"do_train": False}, True, "no", (False, True)),
    ({"do_eval": False}, True, "no", (True, False)),
    ({"do_eval": True}, False, "no", "do_eval=true .* needs evaluation data"),
    ({"do_train": False}, False, "no", "Nothing to do"),
    ({"do_train": False, "do_eval": False}, True, "no", "Nothing to do"),
    ({}, False, "epoch", "eval_strategy=epoch .*there is no evaluation data"),
    ({"do_eval": False}, True, "steps", "eval_strategy=steps .*--do_eval false was given"),
    ({"do_train": False, "new model": True}, True, "no", "metrics would be those of random weights"),
    ({"new model": True}, True, "no", (True, True)),
])
def test_what_a_run_does(given, has_evaluation_data, strategy, expected):
    sources = {name: "the command line" for name in given if name != "new model"}
    arguments = (given.get("do_train", False), given.get("do_eval", False), sources, has_evaluation_data, strategy,
                 not given.get("new model", False))
    if isinstance(expected, str):
        with pytest.raises(ValueError, match=expected):
            training.resolve_run_steps(*arguments)
    else:
        assert training.resolve_run_steps(*arguments) == expected


@pytest.mark.slow
def test_eval_strategy_without_evaluation_data_is_refused(commands_root, tmp_path):
    recipe = ROOT / "examples" / "recipes" / "espeak_commands.json"  # eval_strategy epoch
    done = run([TRAINER, recipe, "--train_dir", commands_root / "train", *TINY, "--output_dir", tmp_path / "o"])
    assert done.returncode != 0
    assert f"eval_strategy=epoch (from {recipe}) evaluates during training, but there is no evaluation data" \
        in done.stderr


def test_training_curves_of_a_short_run_are_not_empty():
    """Fewer updates than --logging_steps and no evaluation: the end-of-training loss is drawn and the empty
    evaluation panel says why; with nothing at all, both panels say so."""
    short = training.training_curves_figure([{"train_loss": 2.1, "epoch": 1.0, "train_runtime": 3.0}])
    assert [tuple(line.get_xydata()[0]) for line in short.axes[0].lines] == [(1.0, 2.1)]
    assert "no evaluation during training" in short.axes[1].texts[0].get_text()
    empty = training.training_curves_figure([])
    assert "no loss was logged" in empty.axes[0].texts[0].get_text()
    evaluated = training.training_curves_figure([{"eval_accuracy": 0.5, "eval_loss": 1.0, "epoch": 1.0},
                                                 {"eval_accuracy": 0.7, "eval_loss": 0.8, "epoch": 2.0}])
    assert [line.get_label() for line in evaluated.axes[1].lines] == ["accuracy"]


def test_zero_byte_files_and_empty_class_folders_are_named(commands_root, tmp_path):
    """A 0-byte clip is reported as an empty file (not as FFmpeg's internal message); a class folder without audio is
    named in a warning, since datasets leaves it out of the classes without a word."""
    folder = tmp_path / "train"
    for word in ("yes", "no"):
        shutil.copytree(commands_root / "train" / word, folder / word)
    (folder / "no" / "metadata.csv").unlink(missing_ok=True)
    (folder / "yes" / "metadata.csv").unlink(missing_ok=True)
    (folder / "maybe").mkdir()
    with pytest.warns(UserWarning, match=r"the class folder 'maybe' holds no audio files, so it is not a class"):
        raw = training.load_audio_datasets(training.DataArguments(train_dir=str(folder)))
    assert sorted(raw["train"].features["label"].names) == ["no", "yes"]
    (folder / "yes" / "zero.flac").write_bytes(b"")
    with pytest.raises(ValueError, match=r"zero.flac: an empty file \(0 bytes\)"):
        training.load_audio_datasets(training.DataArguments(train_dir=str(folder)))


def test_a_misspelt_flag_names_the_closest_one():
    with pytest.raises(ValueError, match=r"Unknown arguments: --max_lenght \(did you mean --max_length\?\), "
                                         r"--zzz_flag\. --help lists"):
        training.parse_arguments([training.ModelArguments, training.DataArguments, training.RecipeArguments],
                                 ["--max_lenght", "200", "--zzz_flag", "1"], "outputs/x")


@pytest.mark.slow
def test_a_refusal_is_one_error_line_with_status_2(tmp_path):
    """The example scripts refuse bad input as the converters and ast-hf do: `error: ...` on stderr, exit status 2,
    no traceback."""
    for script in (TRAINER, LOOP):
        done = run([script, "--train_dir", tmp_path / "missing", "--validation_dir", tmp_path / "missing",
                    "--model_size", "tiny", "--output_dir", tmp_path / "out"])
        assert done.returncode == 2, done.stderr[-3000:]
        assert "Traceback" not in done.stderr, done.stderr[-3000:]
        assert done.stderr.strip().splitlines()[-1].startswith("error: --train_dir ") and "is not a folder" in \
            done.stderr


def test_silent_defaults_of_a_run_are_named(tmp_path):
    """No --max_length for a model from scratch, and a fine-tuning run whose input convention differs from the
    model's, each get a warning that says what happens and what to pass."""
    words = ["yes", "no", "up"]
    with pytest.warns(UserWarning, match=r"--max_length is not given .* cut at 1024 frames"):
        training.prepare_model_and_extractor(training.ModelArguments(model_size="tiny"), training.DataArguments(),
                                             training.RecipeArguments(), words, multi_label=False,
                                             describe=lambda _: None)
    from conftest import tiny_model

    import ast_hf

    tiny_model(num_labels=3, id2label=dict(enumerate(words))).save_pretrained(tmp_path / "masked")
    ast_hf.ASTFeatureExtractor(max_length=128, pad_to_max_length=False).save_pretrained(tmp_path / "masked")
    with pytest.warns(UserWarning, match=r"trained on clips at their own length in masked batches, and this run "
                                         r"trains it on clips padded to max_length .* --pad_to_max_length false"):
        training.prepare_model_and_extractor(
            training.ModelArguments(model_name_or_path=str(tmp_path / "masked")),
            training.DataArguments(pad_to_max_length=True), training.RecipeArguments(), words, multi_label=False,
            describe=lambda _: None)
