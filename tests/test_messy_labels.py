"""Metrics on messy data: labels matched by name across splits (audiofolders, `save_to_disk` data, CSV), trained
heads kept or re-ordered, evaluation-only runs that score the model's own classes, unknown evaluation labels
refused before training, seeded random subsets, CSV cells of label lists, integer labels as class names, and the
files a run leaves. Every reported accuracy is checked against pipeline("audio-classification") on the same files.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile
import torch
from conftest import SILENCE, WORDS, load_example, randomize, speak, tiny_config

import ast_hf
from ast_hf import training

ROOT = Path(__file__).resolve().parents[1]
# Voices, speeds and pitches the word model heard in training (conftest.train_word_model): it knows these well.
VOICES = [("en", 165, 35), ("en-us", 165, 65), ("en-gb", 130, 65)]


def write_clip(path: Path, audio: np.ndarray, stereo: bool = False, rate: int = 16000) -> Path:
    import torchaudio

    path.parent.mkdir(parents=True, exist_ok=True)
    if rate != 16000:
        audio = torchaudio.functional.resample(torch.from_numpy(audio), 16000, rate).numpy()
    soundfile.write(path, np.stack([audio, 0.5 * audio], axis=1) if stereo else audio, rate)
    return path


@pytest.fixture(scope="module")
def messy(tmp_path_factory) -> Path:
    """espeak-ng words in audiofolders: train/ with the word model's five classes; val_missing/ without 'down' and
    the silence class (mixed rates and channel counts); val_extra/ with a class 'banana' that no model has."""
    root = tmp_path_factory.mktemp("messy")
    noise = np.random.default_rng(0)
    for word in WORDS:
        for n, (voice, speed, pitch) in enumerate(VOICES):
            audio = speak(word, voice, speed, pitch)
            write_clip(root / "train" / word / f"{word}_{n}.wav", audio)
            if word != "down":
                write_clip(root / "val_missing" / word / f"{word}_{n}.wav", audio, stereo=n == 1,
                           rate=44100 if n == 2 else 16000)
            write_clip(root / "val_extra" / word / f"{word}_{n}.wav", audio)
    for n in range(3):
        write_clip(root / "train" / SILENCE / f"quiet_{n}.wav", (noise.standard_normal(12000) * 0.003)
                   .astype(np.float32))
    write_clip(root / "val_extra" / "banana" / "banana_0.wav", speak("banana"))
    return root


def truth_of(wav: Path) -> str:
    return wav.parent.name


def pipeline_accuracy(model_dir: Path, wavs: list[Path], truth=truth_of) -> float:
    """The accuracy of the saved model through pipeline("audio-classification") on the files themselves."""
    from transformers import pipeline

    classifier = pipeline("audio-classification", model=str(model_dir))
    return float(np.mean([classifier(str(wav), top_k=1)[0]["label"] == truth(wav) for wav in wavs]))


def run_script(script: str, argv: list[str]) -> dict:
    """examples/<script>.py's main() in this process; returns its metrics."""
    return load_example(script).main(argv)


SCRIPTS = ["run_audio_classification", "run_audio_classification_no_trainer"]
QUIET = ["--report_to", "none", "--per_device_eval_batch_size", "4", "--seed", "3"]


def save_to_disk_copy(folder: Path, target: Path, names: list[str] | None = None) -> Path:
    """An audiofolder as a `save_to_disk` DatasetDict ("train" and "validation" the same clips), its ClassLabel in
    the order `names` (another order than the audiofolder's sorted one)."""
    import datasets

    split = datasets.load_dataset("audiofolder", data_dir=str(folder), split="train")
    if names is not None:
        words = [split.features["label"].names[i] for i in split["label"]]
        split = split.cast_column("label", datasets.Value("string")).map(lambda row, i: {"label": words[i]},
                                                                        with_indices=True)
        split = split.cast_column("label", datasets.ClassLabel(names=names))
    datasets.DatasetDict({"train": split, "validation": split}).save_to_disk(str(target))
    return target


# ---- evaluation-only runs score the model's own classes ---------------------------------------------------------


@pytest.mark.parametrize("script", SCRIPTS)
def test_evaluation_only_matches_labels_by_name_and_keeps_the_head(word_model, messy, tmp_path, script, caplog):
    """--do_train false on an audiofolder without two of the model's classes: the run reported 0.3 for a model
    the pipeline scores far higher (each split's ClassLabel integers taken as they are, and the head re-targeted
    to random weights). Now it scores the model's own classes by name and equals the pipeline."""
    caplog.set_level("INFO")
    wavs = sorted((messy / "val_missing").glob("*/*.wav"))
    out = tmp_path / "eval"
    metrics = run_script(script, ["--model_name_or_path", str(word_model), "--validation_dir",
                                  str(messy / "val_missing"), "--do_train", "false", "--output_dir", str(out),
                                  *QUIET])
    expected = pipeline_accuracy(word_model, wavs)
    assert expected >= 0.75, expected  # the word model knows these voices
    assert metrics["eval_accuracy"] == pytest.approx(expected, abs=1e-9), (metrics, expected)
    assert "re-targeted" not in caplog.text
    assert json.loads((out / "eval_results.json").read_text())["eval_accuracy"] == metrics["eval_accuracy"]
    assert not (out / "model.safetensors").exists()  # an evaluation writes results, never a model


def test_evaluation_only_of_a_reordered_label_list_and_an_unknown_class(word_model, messy, tmp_path):
    """The same clips as a `save_to_disk` data set whose ClassLabel lists the classes in another order: the same
    accuracy as the pipeline; a class the model does not have is refused, naming it and its files."""
    wavs = sorted((messy / "val_missing").glob("*/*.wav"))
    data = save_to_disk_copy(messy / "val_missing", tmp_path / "reordered", names=["yes", "up", "no"])
    metrics = run_script("run_audio_classification", [
        "--model_name_or_path", str(word_model), "--dataset_name", str(data), "--do_train", "false",
        "--output_dir", str(tmp_path / "out"), *QUIET])
    assert metrics["eval_accuracy"] == pytest.approx(pipeline_accuracy(word_model, wavs), abs=1e-9)
    import datasets  # a folder of parquet files, train (five classes) and validation (three): each its own ClassLabel

    for split, folder in (("train", "train"), ("validation", "val_missing")):
        datasets.load_dataset("audiofolder", data_dir=str(messy / folder), split="train").to_parquet(
            str(tmp_path / "parquet" / "data" / f"{split}-00000-of-00001.parquet"))
    metrics = run_script("run_audio_classification", [
        "--model_name_or_path", str(word_model), "--dataset_name", str(tmp_path / "parquet"), "--do_train", "false",
        "--output_dir", str(tmp_path / "out_parquet"), *QUIET])
    assert metrics["eval_accuracy"] == pytest.approx(pipeline_accuracy(word_model, wavs), abs=1e-9)
    with pytest.raises(ValueError, match=r"--validation_dir .*val_extra: 1 clip labelled 'banana' \(banana_0\.wav\)"
                                         r"(?s:.*)not among the classes of the model .*word_model"):
        run_script("run_audio_classification", [
            "--model_name_or_path", str(word_model), "--validation_dir", str(messy / "val_extra"), "--do_train",
            "false", "--output_dir", str(tmp_path / "extra"), *QUIET])


# ---- training runs: labels by name, unknown labels refused before training ------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("script", SCRIPTS)
def test_training_run_reports_what_the_pipeline_finds_on_a_split_missing_classes(word_model, messy, tmp_path,
                                                                                   script):
    """Fine-tune the word model (same five classes: its head kept) on train/, evaluate on val_missing/ (three of
    them, other ClassLabel integers): the reported accuracy, the results files and the card agree with the
    pipeline on the saved model. Also through `save_to_disk` data."""
    wavs = sorted((messy / "val_missing").glob("*/*.wav"))
    common = ["--model_name_or_path", str(word_model), "--learning_rate", "1e-6", "--num_train_epochs", "1",
              "--per_device_train_batch_size", "4", *QUIET]
    if script == SCRIPTS[0]:
        common += ["--eval_strategy", "epoch"]  # the accelerate loop evaluates every epoch
    out = tmp_path / "folders"
    metrics = run_script(script, ["--train_dir", str(messy / "train"), "--validation_dir",
                                  str(messy / "val_missing"), "--output_dir", str(out), *common])
    expected = pipeline_accuracy(out, wavs)
    assert expected >= 0.75 and metrics["eval_accuracy"] == pytest.approx(expected, abs=1e-9), (metrics, expected)
    card = (out / "README.md").read_text()
    assert f"| accuracy | {metrics['eval_accuracy']:.4f} |" in card
    for fact in ("- training clips: 15", "- evaluation clips: 9", "val_missing", "`_silence_`", "## Intended use",
                 "## Training procedure", "Trained in float32", "## Framework versions",
                 "## Evaluations during training"):
        assert fact in card, fact
    assert "runtime" not in card and "per_second" not in card
    assert f"fine-tuned from `{word_model.resolve()}`" in card
    # The Hub metadata parses and carries the run's metrics.
    from huggingface_hub import ModelCard

    meta = ModelCard.load(out / "README.md").data
    assert meta.library_name == "transformers" and meta.base_model == str(word_model.resolve())
    assert "ast_hf" in meta.tags and "accuracy" in meta.metrics
    accuracy = {result.metric_type: result.metric_value for result in meta.eval_results}["accuracy"]
    assert accuracy == pytest.approx(metrics["eval_accuracy"], abs=1e-6)
    result = meta.eval_results[0]
    assert result.task_type == "audio-classification" and "val_missing" in result.dataset_name
    assert json.loads((out / "train_results.json").read_text())
    assert not (out / "ast_hf").exists()  # TensorBoard logs could shadow the package (accelerate: runs/)
    if script == SCRIPTS[0]:  # the same through a save_to_disk DatasetDict: train 5 classes, validation 3
        import datasets

        train = datasets.load_dataset("audiofolder", data_dir=str(messy / "train"), split="train")
        validation = datasets.load_dataset("audiofolder", data_dir=str(messy / "val_missing"), split="train")
        datasets.DatasetDict({"train": train, "validation": validation}).save_to_disk(str(tmp_path / "disk"))
        metrics = run_script(script, ["--dataset_name", str(tmp_path / "disk"), "--output_dir",
                                      str(tmp_path / "disk_out"), *common])
        assert metrics["eval_accuracy"] == pytest.approx(pipeline_accuracy(tmp_path / "disk_out", wavs), abs=1e-9)


@pytest.mark.parametrize("script", SCRIPTS)
def test_unknown_evaluation_label_is_refused_before_training(messy, tmp_path, script):
    """A class only in the evaluation audiofolder ('banana') crashed with an IndexError in the collator after the
    first epoch had trained; now it is refused up front, naming the split, the label and the file."""
    out = tmp_path / "out"
    with pytest.raises(ValueError, match=r"--validation_dir .*val_extra: 1 clip labelled 'banana' \(banana_0\.wav\)"
                                         r"(?s:.*)not among the classes of the training data \(5: "):
        run_script(script, ["--model_size", "tiny", "--max_length", "64", "--train_dir", str(messy / "train"),
                            "--validation_dir", str(messy / "val_extra"), "--output_dir", str(out), *QUIET])
    assert not any(out.glob("checkpoint-*")) and not any(out.glob("step_*"))
    assert not (out / "all_results.json").exists()


def test_csv_unknown_and_missing_labels_name_split_rows_and_files(messy, tmp_path):
    wavs = sorted((messy / "train").glob("*/*.wav"))
    (tmp_path / "train.csv").write_text("audio,label\n" + "".join(f"{w},{truth_of(w)}\n" for w in wavs))
    (tmp_path / "valid.csv").write_text(f"audio,label\n{wavs[0]},cherry\n{wavs[1]},\n{wavs[2]},cherry\n")
    with pytest.raises(ValueError) as error:
        training.prepare_data(training.DataArguments(train_file=str(tmp_path / "train.csv"), validation_file=str(
            tmp_path / "valid.csv"), check_audio="none"), seed=0)
    message = str(error.value)
    assert f"--validation_file {tmp_path / 'valid.csv'}: 2 clips labelled 'cherry' ({wavs[0].name}, {wavs[2].name})" \
        in message
    assert "1 clip without a label (rows 1, counting from 0" in message and "..." not in message


# ---- heads kept or re-ordered ------------------------------------------------------------------------------------


def test_a_head_with_the_same_names_in_another_order_is_reordered_not_replaced():
    model = randomize(ast_hf.ASTForAudioClassification(tiny_config(
        num_labels=3, id2label={0: "a", 1: "b", 2: "c"}, label2id={"a": 0, "b": 1, "c": 2})))
    features = torch.randn(2, model.config.max_length, model.config.num_mel_bins)
    reordered = ast_hf.convert.retarget_model(model, id2label={0: "c", 1: "a", 2: "b"})
    with torch.no_grad():
        before, after = model(features).logits, reordered(features).logits
    torch.testing.assert_close(after, before[:, [2, 0, 1]])
    other = ast_hf.convert.retarget_model(model, id2label={0: "a", 1: "b", 2: "d"}, seed=0)  # other names: new head
    assert not torch.equal(other.classifier.dense.weight[0], model.classifier.dense.weight[0])


def test_training_on_the_models_classes_in_another_order_keeps_its_order(word_model, messy, tmp_path):
    """The data's ClassLabel lists the word model's classes in another order: the run takes the model's order
    (its head is kept); in an evaluation-only run the model's classes are the run's classes."""
    data = save_to_disk_copy(messy / "train", tmp_path / "disk", names=[SILENCE, "down", "up", "no", "yes"])
    model_labels = training.pretrained_labels(training.ModelArguments(model_name_or_path=str(word_model)))
    assert model_labels.names == [*WORDS, SILENCE] and not model_labels.multi_label
    prepared = training.prepare_data(training.DataArguments(dataset_name=str(data), check_audio="none"), seed=0,
                                     model_labels=model_labels)
    assert prepared.labels == [*WORDS, SILENCE]
    train = prepared.raw["train"]
    import datasets

    folder = datasets.load_dataset("audiofolder", data_dir=str(messy / "train"), split="train")  # the same rows
    assert [prepared.labels[i] for i in train["label"]] == [folder.features["label"].names[i] for i in folder["label"]]
    described = []
    model, _ = training.prepare_model_and_extractor(
        training.ModelArguments(model_name_or_path=str(word_model)), training.DataArguments(),
        training.RecipeArguments(), prepared.labels, False, describe=described.append)
    trained = ast_hf.ASTForAudioClassification.from_pretrained(word_model)
    assert torch.equal(model.classifier.dense.weight, trained.classifier.dense.weight), described
    assert not any("re-targeted" in line for line in described)


# ---- subsets, label formats --------------------------------------------------------------------------------------


def test_max_eval_and_train_samples_draw_seeded_random_subsets(messy):
    """An audiofolder is sorted by class: the first 6 clips were all one class."""
    args = training.DataArguments(train_dir=str(messy / "train"), validation_dir=str(messy / "val_extra"),
                                  max_train_samples=6, max_eval_samples=6, check_audio="none")
    with pytest.raises(ValueError, match="banana"):
        training.prepare_data(args, seed=0)
    args.validation_dir = str(messy / "train")
    first = training.prepare_data(args, seed=0)
    for name in ("train", "validation"):
        assert len(first.raw[name]) == 6 and len(set(first.raw[name]["label"])) >= 3, name
    assert first.raw["validation"]["label"] == training.prepare_data(args, seed=0).raw["validation"]["label"]
    assert first.facts["evaluation clips"] == 6


def test_csv_cells_holding_label_lists_make_a_multi_label_task(messy, tmp_path):
    wavs = sorted((messy / "train").glob("*/*.wav"))[:6]
    table = tmp_path / "multi.csv"
    with table.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["audio", "label"])
        for n, wav in enumerate(wavs):
            writer.writerow([wav, json.dumps(["apple", "river"][: 1 + n % 2] if n < 5 else ["stone"])])
    prepared = training.prepare_data(training.DataArguments(train_file=str(table), check_audio="none"), seed=0)
    assert prepared.multi_label and prepared.labels == ["apple", "river", "stone"]
    assert prepared.raw["train"]["label"] == [[0], [0, 1], [0], [0, 1], [0], [2]]
    table.write_text("audio,label\n" + "".join(f"{w},apple;river\n" for w in wavs[:3]) + f"{wavs[3]},stone\n")
    prepared = training.prepare_data(training.DataArguments(train_file=str(table), label_separator=";",
                                                            check_audio="none"), seed=0)
    assert prepared.multi_label and prepared.raw["train"]["label"] == [[0, 1]] * 3 + [[2]]
    table.write_text(f'audio,label\n{wavs[0]},"[apple, river]"\n{wavs[1]},stone\n')
    with pytest.raises(ValueError, match="starts like a list of labels but is not one.*JSON list"):
        training.prepare_data(training.DataArguments(train_file=str(table), check_audio="none"), seed=0)
    table.write_text(f"audio,label\n{wavs[0]},apple\n{wavs[1]},stone\n")
    (tmp_path / "valid.csv").write_text(f'audio,label\n{wavs[2]},"[""apple"", ""stone""]"\n')
    with pytest.raises(ValueError, match="row 0 has a list of labels.*single-label"):
        training.prepare_data(training.DataArguments(train_file=str(table), validation_file=str(
            tmp_path / "valid.csv"), check_audio="none"), seed=0)


def test_integer_labels_are_class_names(messy, tmp_path):
    """A filtered ESC-50 `target` column (10, 20, 30, 40) made a 41-way head; now four classes named by them."""
    wavs = sorted((messy / "train").glob("*/*.wav"))[:8]
    (tmp_path / "train.csv").write_text("audio,target\n" + "".join(f"{w},{10 * (1 + n % 4)}\n"
                                                                    for n, w in enumerate(wavs)))
    args = training.DataArguments(train_file=str(tmp_path / "train.csv"), label_column_name="target",
                                  check_audio="none", max_length=64)
    prepared = training.prepare_data(args, seed=0)
    assert prepared.labels == ["10", "20", "30", "40"] and prepared.raw["train"]["target"][:4] == [0, 1, 2, 3]
    model, _ = training.prepare_model_and_extractor(training.ModelArguments(model_size="tiny"), args,
                                                    training.RecipeArguments(), prepared.labels, False,
                                                    describe=lambda _: None)
    assert model.config.num_labels == 4 and model.config.id2label[3] == "40"
    (tmp_path / "valid.csv").write_text(f"audio,target\n{wavs[0]},50\n")
    args.validation_file = str(tmp_path / "valid.csv")
    with pytest.raises(ValueError, match="1 clip labelled '50'"):
        training.prepare_data(args, seed=0)


# ---- what a transformers user expects of the scripts --------------------------------------------------------------


def test_transformers_example_flags_work_or_name_their_equivalent(messy, tmp_path):
    parse = load_example("run_audio_classification").ARGUMENT_CLASSES
    csv_file = tmp_path / "v.csv"
    _, data_args, *_ = training.parse_arguments(parse, ["--eval_file", str(csv_file), "--train_file", "t.csv",
                                                        "--max_length_seconds", "1.28"], str(tmp_path))
    assert data_args.validation_file == str(csv_file) and data_args.max_length == 128
    for flag, equivalent in (("--freeze_feature_encoder", "AST has no convolutional feature encoder"),
                             ("--attention_mask", "--pad_to_max_length"), ("--config_name", "--config_overrides"),
                             ("--feature_extractor_name", "--model_name_or_path"), ("--token", "--hub_token")):
        with pytest.raises(ValueError, match=f"{flag} .*transformers' audio-classification example; here use "
                                             f".*{equivalent}"):
            training.parse_arguments(parse, [flag, "x"], str(tmp_path))
    with pytest.raises(ValueError, match="--max_length_seconds 1.0 and --max_length 64 both set"):
        training.parse_arguments(parse, ["--max_length_seconds", "1", "--max_length", "64"], str(tmp_path))


def test_random_crop_of_long_training_clips(speech):
    """--train_crop random: a training clip longer than max_length frames becomes a stretch of it, on the frame
    grid, drawn anew each epoch; evaluation and --train_crop start keep the start."""
    extractor = ast_hf.ASTFeatureExtractor(max_length=64)
    wave = torch.from_numpy(speech[2])  # about 3 s: 300 frames
    collator = training.AudioCollator(extractor, num_labels=2, multi_label=False, train=True, crop="random")
    needed = 63 * 160 + 400
    stretches = set()
    for epoch in range(4):
        collator.epoch = epoch
        stretch = collator.random_stretch(wave, collator.batch_rng([{"_row": 0}]))
        start = int(torch.nonzero((wave.unfold(0, needed, 160) == stretch).all(dim=1))[0]) * 160
        assert stretch.shape[0] == needed and torch.equal(stretch, wave[start:start + needed])
        stretches.add(start)
    assert len(stretches) > 1
    short = wave[:8000]
    assert torch.equal(collator.random_stretch(short, np.random.default_rng(0)), short)
    rows = [{"audio": {"array": wave.numpy(), "sampling_rate": 16000}, "label": 0, "_row": 0}]
    start_batch = training.AudioCollator(extractor, num_labels=2, multi_label=False, train=True)(rows)
    plain = training.AudioCollator(extractor, num_labels=2, multi_label=False)(rows)
    torch.testing.assert_close(start_batch["input_values"], plain["input_values"])


@pytest.mark.slow
def test_accelerate_logs_do_not_shadow_the_package_and_metrics_are_printed(word_model, messy, tmp_path):
    """The accelerate script wrote TensorBoard logs to OUTPUT_DIR/ast_hf/, so `import ast_hf` inside the output
    folder (the model card's snippet) imported the log folder. Now they go to OUTPUT_DIR/runs/."""
    out = tmp_path / "loop"
    done = subprocess.run([sys.executable, str(ROOT / "examples" / "run_audio_classification_no_trainer.py"),
                           "--model_name_or_path", str(word_model), "--train_dir", str(messy / "train"),
                           "--validation_dir", str(messy / "val_missing"), "--num_train_epochs", "1",
                           "--learning_rate", "1e-6", "--output_dir", str(out)], capture_output=True, text=True,
                          timeout=600, cwd=ROOT, env={**os.environ, "TOKENIZERS_PARALLELISM": "false"})
    assert done.returncode == 0, done.stderr[-3000:]
    assert "***** eval metrics *****" in done.stdout and "***** train metrics *****" in done.stdout
    assert (out / "runs").is_dir() and not (out / "ast_hf").exists()
    found = subprocess.run([sys.executable, "-c", "import ast_hf; print(ast_hf.__file__)"], capture_output=True,
                           text=True, cwd=out, timeout=120)
    assert found.returncode == 0 and found.stdout.strip().endswith("__init__.py"), found
    shutil.rmtree(out)
