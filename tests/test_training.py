"""Fine-tuning: augmentations, schedule, averaging and metrics against hand-computed values; Patchout; and real
end-to-end runs of both example scripts (single process, torchrun with 2 processes, resume) on espeak-ng clips."""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile
import torch
import torch.nn.functional as F
from conftest import load_example, randomize, tiny_config
from safetensors.torch import load_file

import ast_hf
from ast_hf import training
from ast_hf.espeak_commands import CommandsSpec, plan

ROOT = Path(__file__).resolve().parents[1]
TRAINER = ROOT / "examples" / "run_audio_classification.py"
LOOP = ROOT / "examples" / "run_audio_classification_no_trainer.py"


# ---- augmentations -------------------------------------------------------------------------------------------


def test_mixup_by_hand():
    first, second = torch.tensor([1.0, 2.0, 3.0]), torch.tensor([4.0, 5.0])
    # centred: [-1, 0, 1] and [-0.5, 0.5] padded to [-0.5, 0.5, 0]; 0.25 * a + 0.75 * b; centred again (mean 0)
    torch.testing.assert_close(training.mix_waveforms(first, second, 0.25), torch.tensor([-0.625, 0.375, 0.25]))
    longer = torch.tensor([4.0, 6.0, 8.0, 100.0])  # cut to the first clip's length before centring
    mixed = training.mix_waveforms(first, longer, 0.5)
    assert mixed.shape == (3,) and abs(float(mixed.mean())) < 1e-6


def test_spec_augment_masks_by_hand():
    features = torch.zeros(6, 4)
    training.mask_band(features, 0, start=1, width=2, fill=9.0)  # frames 1-2
    training.mask_band(features, 1, start=3, width=1, fill=7.0)  # mel bin 3
    expected = torch.zeros(6, 4)
    expected[1:3] = 9.0
    expected[:, 3] = 7.0
    torch.testing.assert_close(features, expected)
    rng = np.random.default_rng(0)
    draws = [training.draw_mask(128, 48, rng) for _ in range(2000)]
    assert all(0 <= w < 48 and 0 <= s and s + w <= 128 for s, w in draws)
    assert max(w for _, w in draws) >= 45 and min(w for _, w in draws) == 0  # spans [0, 48)


def test_noise_and_roll_by_hand():
    features = torch.arange(12.0).reshape(4, 3)
    rng = np.random.default_rng(0)
    rolled = training.noise_and_roll(features, scale=0.0, shift=1, rng=rng)
    torch.testing.assert_close(rolled, torch.cat([features[3:], features[:3]]))
    noisy = training.noise_and_roll(torch.zeros(50, 8), scale=1.0, shift=0, rng=rng)
    assert 0.0 <= float(noisy.min()) and float(noisy.max()) <= 0.1 and float(noisy.std()) > 0.01


def test_balanced_sampler_weights_by_hand():
    weights = training.balanced_sample_weights([[0], [0], [1], [0, 1], [0]], num_labels=3)
    a, b = 1000 / 4.01, 1000 / 2.01
    torch.testing.assert_close(weights, torch.tensor([a, a, b, a + b, a], dtype=torch.float64))


def test_balanced_sampler_draws_are_a_function_of_seed_and_epoch():
    """A resumed run builds a new sampler and sets the epoch it resumes in: its draws must be the uninterrupted
    run's (the draws of one sampler iterated epoch after epoch)."""
    weights = training.balanced_sample_weights([[0], [1], [1], [2], [2], [2]], 3)
    running = training.balanced_sampler(weights, seed=7)
    epochs = []
    for epoch in range(3):
        running.set_epoch(epoch)
        epochs.append(list(running))
    resumed = training.balanced_sampler(weights, seed=7)
    resumed.set_epoch(2)
    assert list(resumed) == epochs[2] and epochs[0] != epochs[1]
    counts = np.bincount([i for _ in range(200) for i in training.balanced_sampler(weights, seed=_)], minlength=6)
    assert counts[0] > 2 * counts[3]  # the rare class's clip is drawn most (weight 1000/1 vs 1000/3)


def test_statistics_come_from_one_place():
    with pytest.raises(ValueError, match="use one of them"):
        training.DataArguments(compute_stats=True, dataset_mean=-4.0)
    with pytest.raises(ValueError, match="--dataset_preset 'esc-50' is not a preset"):
        training.DataArguments(dataset_preset="esc-50")
    preset = training.DataArguments(dataset_preset="esc50", compute_stats=True)
    assert (preset.max_length, preset.dataset_mean) == (512, None)  # the training set's statistics, computed


def test_collator_mixes_labels_and_masks_only_in_training(speech):
    extractor = ast_hf.ASTFeatureExtractor(max_length=128)
    rows = [{"audio": clip, "label": i} for i, clip in enumerate(speech)]
    collator = training.AudioCollator(extractor, 4, False, train=True, mixup=1.0, freqm=20, timem=20, seed=5)
    mixed = collator([{**row, "_row": i} for i, row in enumerate(rows)])
    again = collator([{**row, "_row": i} for i, row in enumerate(rows)])
    torch.testing.assert_close(mixed["input_values"], again["input_values"])  # same rows, same epoch: same draws
    collator.epoch = 1
    assert not torch.equal(collator([{**row, "_row": i} for i, row in enumerate(rows)])["input_values"],
                           mixed["input_values"])
    assert mixed["labels"].shape == (4, 4) and mixed["labels"].dtype == torch.float32
    torch.testing.assert_close(mixed["labels"].sum(1), torch.ones(4))
    assert (mixed["labels"] > 0).sum(1).eq(2).all()  # each clip mixed with one other
    fill = (0.0 - extractor.mean) / (2 * extractor.std)
    assert ((mixed["input_values"] - fill).abs() < 1e-6).any()
    plain = training.AudioCollator(extractor, 4, False, train=False, mixup=1.0, freqm=20)(rows)
    torch.testing.assert_close(plain["labels"], torch.arange(4))
    torch.testing.assert_close(plain["input_values"], extractor(speech, sampling_rate=16000,
                                                               return_tensors="pt")["input_values"])


def test_collator_pads_each_batch_to_its_longest_clip(speech, tmp_path):
    """pad_to_max_length=False: features padded to the batch's longest clip (at least one 16-frame patch) with the
    mask of real frames; augmentation stays inside them; the saved extractor returns the mask, so the pipeline
    scores a clip as the model scores it unpadded."""
    from transformers import pipeline

    from ast_hf.feature_extraction_ast import num_frames

    extractor = ast_hf.ASTFeatureExtractor(max_length=128)
    rows = [{"audio": clip, "label": i} for i, clip in enumerate(speech)]
    short = [rows[0], rows[3]]  # "yes" and "stop", under 128 frames
    frames = [num_frames(len(row["audio"])) for row in short]
    batch = training.AudioCollator(extractor, 4, False, pad_to_max_length=False)(short)
    assert batch["input_values"].shape[1] == max(frames) < 128
    assert batch["attention_mask"].sum(1).tolist() == frames
    alone = extractor(speech[0], sampling_rate=16000, padding=False, return_tensors="pt")["input_values"][0]
    torch.testing.assert_close(batch["input_values"][0, : frames[0]], alone)
    tiny = training.AudioCollator(extractor, 4, False, pad_to_max_length=False)([{"audio": np.zeros(800), "label": 0}])
    assert tiny["input_values"].shape[1] == 16 and int(tiny["attention_mask"].sum()) == 3
    masked = training.AudioCollator(extractor, 4, False, train=True, timem=100, freqm=0, mask_fill="mean",
                                    pad_to_max_length=False)(short)
    padded = masked["input_values"][1, frames[1]:]  # the shorter clip's padding is never masked or moved
    torch.testing.assert_close(padded, batch["input_values"][1, frames[1]:])

    model, saved_extractor = training.prepare_model_and_extractor(
        training.ModelArguments(model_size="tiny"), training.DataArguments(max_length=128, pad_to_max_length=False),
        training.RecipeArguments(), ["a", "b", "c", "d"], False, describe=lambda _: None)
    assert saved_extractor.return_attention_mask
    randomize(model).save_pretrained(tmp_path / "m")
    saved_extractor.save_pretrained(tmp_path / "m")
    scores = pipeline("audio-classification", model=str(tmp_path / "m"))(speech[0], top_k=4)
    with torch.no_grad():
        expected = model(alone[None]).logits.softmax(-1)[0]
    got = {r["label"]: r["score"] for r in scores}
    assert [got[model.config.id2label[i]] for i in range(4)] == pytest.approx(expected.tolist(), abs=1e-5)


# ---- optimisation and metrics -----------------------------------------------------------------------------------


def test_warmup_and_multistep_schedule_by_hand():
    factor = training.recipe_lr_lambda(steps_per_epoch=10, warmup_steps=5, start_epoch=2, step_epochs=1, gamma=0.5)
    assert [factor(s) for s in (0, 4, 19, 20, 29, 30, 45)] == pytest.approx([0.2, 1.0, 1.0, 0.5, 0.5, 0.25, 0.125])
    assert training.recipe_lr_lambda(10)(500) == 1.0


def test_weight_average_by_hand():
    model = torch.nn.Linear(2, 1)
    averager = training.WeightAverager(2, 3)
    for epoch, value in ((1, 100.0), (2, 1.0), (3, 3.0), (4, 50.0)):
        torch.nn.init.constant_(model.weight, value)
        averager.update(model, epoch)
    assert averager.count == 2 and averager.apply(model)
    torch.testing.assert_close(model.weight, torch.full((1, 2), 2.0))


def test_metrics_by_hand():
    accuracy = training.classification_metric(multi_label=False)
    logits = [[2.0, 1.0, 0.0], [0.0, 3.0, 1.0], [1.0, 0.0, 5.0], [4.0, 0.0, 0.0]]
    assert accuracy.compute(predictions=logits, references=[0, 1, 1, 0])["accuracy"] == 0.75
    # One class: positives scored 0.9 and 0.3, negatives 0.8 and 0.1. AUC = 3 of 4 pairs ordered = 0.75;
    # AP = mean precision at the positives = (1/1 + 2/3) / 2; d' = sqrt(2) * Phi^-1(0.75) = 0.953873.
    scores = np.array([[0.9, 0.2], [0.8, 0.9], [0.3, 0.1], [0.1, 0.7]])
    targets = np.array([[1, 0], [0, 1], [1, 0], [0, 1]], dtype=np.float32)
    result = training.classification_metric(multi_label=True).compute(predictions=scores, references=targets)
    ap_second, auc_second = 1.0, 1.0  # class 1: positives 0.9, 0.7 above negatives 0.2, 0.1
    assert result["mAP"] == pytest.approx(((1 + 2 / 3) / 2 + ap_second) / 2)
    assert result["mAUC"] == pytest.approx((0.75 + auc_second) / 2)
    assert result["d_prime"] == pytest.approx(math.sqrt(2) * 1.1503494, rel=1e-5)  # Phi^-1(0.875)


def test_soft_target_loss_is_cross_entropy_with_probabilities():
    model = randomize(ast_hf.ASTForAudioClassification(tiny_config(problem_type="single_label_classification")))
    targets = torch.tensor([[0.7, 0.3, 0, 0, 0], [0, 0, 0, 0.5, 0.5]])
    out = model(torch.randn(2, 128, 128), labels=targets)
    expected = -(targets * F.log_softmax(out.logits, dim=-1)).sum(-1).mean()
    torch.testing.assert_close(out.loss, expected)


def test_patchout_drops_columns_and_rows_only_in_training():
    model = randomize(ast_hf.ASTModel(tiny_config(patchout_time=3, patchout_frequency=2)))  # grid 12 x 12
    inputs = torch.randn(2, 128, 128)
    model.train()
    hidden = model(inputs).last_hidden_state
    assert hidden.shape == (2, 2 + 10 * 9, 32)
    mask = torch.ones(2, 128, dtype=torch.long)
    mask[1, 60:] = 0
    assert model(inputs, attention_mask=mask).last_hidden_state.shape == (2, 92, 32)
    model.eval()
    assert model(inputs).last_hidden_state.shape == (2, 2 + 144, 32)
    with pytest.raises(ValueError, match="patchout_time"):
        tiny_config(patchout_time=-1)


def test_gradient_checkpointing_with_patchout_recomputes_each_layer_and_changes_no_gradient():
    """--activation_checkpointing (transformers 5's name of --gradient_checkpointing) with Patchout: every layer runs
    again in the backward pass (its activations were not kept), on the same kept patches and dropout draws: the
    gradients are the plain ones."""
    config = tiny_config(patchout_time=3, patchout_frequency=2, hidden_dropout_prob=0.1, num_labels=3)
    plain = randomize(ast_hf.ASTForAudioClassification(config)).train()
    checkpointed = randomize(ast_hf.ASTForAudioClassification(config)).train()
    checkpointed.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
    inputs, labels = torch.randn(2, 128, 128), torch.tensor([0, 2])
    calls = []
    mlp = checkpointed.audio_spectrogram_transformer.encoder.layer[0].intermediate
    mlp.register_forward_hook(lambda *_: calls.append(1))
    grads = []
    for model in (plain, checkpointed):
        torch.manual_seed(5)  # the same Patchout and dropout draws
        model(inputs, labels=labels).loss.backward()
        grads.append({name: p.grad for name, p in model.named_parameters()})
    assert len(calls) == 2  # the layer's MLP ran in the forward pass, then again in the backward pass
    for name, grad in grads[0].items():
        torch.testing.assert_close(grads[1][name], grad, rtol=0, atol=1e-6, msg=name)


# ---- the embedded data --------------------------------------------------------------------------------------


def test_commands_plan_is_deterministic_and_holds_out_accents():
    spec = CommandsSpec(clips_per_word=20, eval_clips_per_word=5, seed=3)
    rows = plan(spec)
    assert rows == plan(spec) and rows != plan(CommandsSpec(clips_per_word=20, eval_clips_per_word=5, seed=4))
    train_accents = {r["voice"].split("+")[0] for r in rows if r["split"] == "train"}
    eval_accents = {r["voice"].split("+")[0] for r in rows if r["split"] == "validation"}
    assert train_accents.isdisjoint(eval_accents) and eval_accents <= set(spec.eval_accents)
    assert len(rows) == 10 * 25


def run(command: list[str], env_extra: dict[str, str] | None = None, timeout: int = 600) -> str:
    env = {**os.environ, "TOKENIZERS_PARALLELISM": "false", **(env_extra or {})}
    done = subprocess.run(command, capture_output=True, text=True, timeout=timeout, env=env, cwd=ROOT)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]
    return done.stdout + done.stderr


def saved_model_accuracy(model_dir: Path, wavs: list[Path]) -> float:
    """Accuracy of the model saved in `model_dir` on `wavs` (label = parent folder name, or the label given in a
    CSV beside them), clip by clip through the saved feature extractor: an independent check of the accuracy that
    a run reports."""
    model = ast_hf.ASTForAudioClassification.from_pretrained(model_dir).eval()
    extractor = ast_hf.ASTFeatureExtractor.from_pretrained(model_dir)
    correct = 0
    with torch.no_grad():
        for wav in wavs:
            audio, rate = soundfile.read(wav, dtype="float32")
            features = extractor(audio, sampling_rate=rate, return_tensors="pt", truncation=True)
            correct += model.config.id2label[int(model(**features).logits.argmax())] == wav.parent.name
    return correct / len(wavs)


TINY = ["--model_size", "tiny", "--frequency_stride", "16", "--time_stride", "16", "--max_length", "64",
        "--per_device_train_batch_size", "8", "--per_device_eval_batch_size", "8", "--learning_rate", "1e-3",
        "--report_to", "none", "--seed", "1"]


@pytest.mark.slow
def test_trainer_script_end_to_end(commands_root, tmp_path):
    out = tmp_path / "trainer"
    log = run([sys.executable, str(TRAINER), str(ROOT / "examples" / "recipes" / "espeak_commands.json"),
               "--train_dir", str(commands_root / "train"), "--validation_dir", str(commands_root / "validation"),
               *TINY, "--num_train_epochs", "2", "--freqm", "8", "--timem", "8", "--mixup", "0.5",
               "--average_start_epoch", "1", "--average_end_epoch", "2", "--output_dir", str(out)])
    results = json.loads((out / "all_results.json").read_text())
    assert results["averaged_epochs"] == 2
    # The reported accuracy is that of the saved (averaged) model on the evaluation clips (a near-tie may flip).
    clips = sorted((commands_root / "validation").glob("*/*.wav"))
    assert abs(results["eval_accuracy"] - saved_model_accuracy(out, clips)) <= 1 / len(clips) + 1e-9, results
    for name in ("model.safetensors", "preprocessor_config.json", "training_curves.png", "confusion_matrix.png",
                 "README.md", "process_0.json"):
        assert (out / name).exists(), name
    assert "eval_accuracy" in (out / "README.md").read_text()
    assert json.loads((out / "process_0.json").read_text())["examples_collated_for_training"] == 2 * 40
    assert "ignoring" not in log
    from transformers import pipeline

    classifier = pipeline("audio-classification", model=str(out))
    assert type(classifier.model).__module__ == "ast_hf.modeling_ast"
    assert classifier.model.config.id2label[0] == "down"


@pytest.mark.slow
@pytest.mark.parametrize("script", [TRAINER, LOOP], ids=["trainer", "accelerate"])
def test_bf16_mixed_precision_with_every_augmentation(commands_root, tmp_path, script):
    """--bf16 true (the Trainer's flag, also in the accelerate script) trains under bfloat16 autocast with SpecAugment,
    mixup, noise and roll, Patchout and label smoothing: the run ends, its metrics are finite, the saved weights
    are float32 and differ from a float32 run's, and the model card says bfloat16 mixed precision."""
    from safetensors.torch import load_file

    data = ["--train_dir", str(commands_root / "train"), "--validation_dir", str(commands_root / "validation")]
    augmentations = ["--freqm", "8", "--timem", "8", "--mixup", "0.5", "--noise", "true", "--patchout_time", "1",
                     "--patchout_frequency", "1", "--label_smoothing_factor", "0.1", "--num_train_epochs", "1"]
    weights = {}
    for precision in ("bf16", "float32"):
        out = tmp_path / precision
        run([sys.executable, str(script), *data, *TINY, *augmentations, "--bf16", str(precision == "bf16").lower(),
             "--output_dir", str(out)])
        results = json.loads((out / "all_results.json").read_text())
        assert all(np.isfinite(results[key]) for key in ("eval_accuracy", "eval_loss")), results
        weights[precision] = load_file(out / "model.safetensors")
        card = (out / "README.md").read_text()
        assert ("Trained in bfloat16 mixed precision" in card) == (precision == "bf16"), card[:2000]
    assert {tensor.dtype for tensor in weights["bf16"].values()} == {torch.float32}
    assert max(float((weights["bf16"][k] - weights["float32"][k]).abs().max()) for k in weights["bf16"]) > 0


@pytest.mark.slow
@pytest.mark.parametrize("recipe", ["from_scratch", "finetune_pretrained"])
def test_own_data_recipes_run(commands_root, tmp_path, recipe):
    """The two recipes for a user's own data, as the README gives them (plus a short length and one epoch): the
    from-scratch one trains with AdamW on masked variable-length batches, the pretrained one starts from the given
    AST (a tiny local one here, in the built-in's MIT/ast-* place) with the reference optimiser on padded clips."""
    out = tmp_path / recipe
    flags = [str(ROOT / "examples" / "recipes" / f"{recipe}.json"), "--train_dir", str(commands_root / "train"),
             "--validation_dir", str(commands_root / "validation"), "--max_length", "64", "--num_train_epochs", "1",
             "--report_to", "none", "--output_dir", str(out)]
    if recipe == "finetune_pretrained":
        pretrained = randomize(ast_hf.ASTForAudioClassification(tiny_config(num_labels=7)))
        pretrained.save_pretrained(tmp_path / "pretrained")
        flags += ["--model_name_or_path", str(tmp_path / "pretrained"), "--multistep_start_epoch", "1"]
    run([sys.executable, str(TRAINER), *flags])
    results = json.loads((out / "all_results.json").read_text())
    extractor = json.loads((out / "preprocessor_config.json").read_text())
    model = ast_hf.ASTForAudioClassification.from_pretrained(out).eval()
    assert model.config.id2label[0] == "down" and model.config.num_labels == 10
    # The reported accuracy is the saved model's, clip by clip through the saved extractor (one near-tie may flip).
    clips = sorted((commands_root / "validation").glob("*/*.wav"))
    assert abs(results["eval_accuracy"] - saved_model_accuracy(out, clips)) <= 1 / len(clips) + 1e-9, results
    if recipe == "from_scratch":
        assert extractor["return_attention_mask"] is True  # masked batches in training, so in the pipeline too
        assert model.config.hidden_size == 192  # model_size tiny
    else:
        assert extractor["return_attention_mask"] is False and extractor["max_length"] == 64
        assert model.config.hidden_size == 32  # the given checkpoint, re-targeted to 10 labels and 64 frames
        encoder = load_file(str(out / "model.safetensors"))
        start = pretrained.state_dict()
        key = "audio_spectrogram_transformer.encoder.layer.0.attention.attention.query.weight"
        assert (encoder[key] - start[key]).abs().max() < 1e-2  # 1 epoch at lr 1e-5 moves it a little
    card = (out / "README.md").read_text()
    assert (f"base_model: {tmp_path / 'pretrained'}" in card) == (recipe == "finetune_pretrained")
    # The card records the optimisation and data settings the run used, not only the recipe fields.
    from conftest import card_settings

    recorded = card_settings(card)
    if recipe == "from_scratch":
        assert recorded["optim"] == "adamw_torch" and recorded["lr_scheduler_type"] == "cosine"
        assert recorded["weight_decay"] == 0.05 and recorded["pad_to_max_length"] is False
    else:
        assert recorded["optim"].startswith("reference Adam") and recorded["weight_decay"] == 5e-7
        assert recorded["lr_scheduler_type"].startswith("warm-up + MultiStepLR") and recorded["pad_to_max_length"]
    assert recorded["max_length"] == 64 and recorded["num_train_epochs"] == 1


@pytest.mark.slow
def test_accelerate_script_end_to_end_and_multi_label_json(commands_root, tmp_path):
    # A JSON-lines file with lists of labels (AudioSet style): each clip tagged with its word and its first letter.
    lines = []
    for wav in sorted((commands_root / "train").glob("*/*.wav"))[:24]:
        word = wav.parent.name
        lines.append(json.dumps({"audio": str(wav), "tags": [word, f"starts-{word[0]}"]}))
    (tmp_path / "train.jsonl").write_text("\n".join(lines) + "\n")
    out = tmp_path / "loop"
    log = run([sys.executable, str(LOOP), str(ROOT / "examples" / "recipes" / "audioset_balanced.json"),
               "--model_name_or_path", "", "--deit_name_or_path", "", "--train_file", str(tmp_path / "train.jsonl"),
               "--validation_file", str(tmp_path / "train.jsonl"), "--label_column_name", "tags", *TINY,
               "--num_train_epochs", "1", "--warmup_steps", "2", "--balanced_sampling", "true",
               "--compute_stats", "true", "--average_start_epoch", "0",
               "--average_end_epoch", "0", "--output_dir", str(out)])
    assert "ignoring settings this script does not have" in log  # Trainer-only keys of the recipe
    results = json.loads((out / "all_results.json").read_text())
    assert {"eval_mAP", "eval_mAUC", "eval_d_prime"} <= set(results)
    config = ast_hf.ASTConfig.from_pretrained(out)
    assert config.problem_type == "multi_label_classification" and "starts-d" in config.label2id
    assert (out / "training_curves.png").exists()
    # --compute_stats: the saved extractor normalises with the training clips' own statistics (their first 64
    # frames, the run's --max_length).
    clips = [soundfile.read(json.loads(line)["audio"], dtype="float32")[0] for line in lines]
    mean, std = ast_hf.compute_normalization_stats(clips, ast_hf.ASTFeatureExtractor(max_length=64))
    saved = ast_hf.ASTFeatureExtractor.from_pretrained(out)
    assert saved.mean == pytest.approx(mean, rel=1e-5) and saved.std == pytest.approx(std, rel=1e-5)


def test_accelerate_evaluation_scores_every_clip_once(speech):
    """The accelerate example's evaluation: 5 clips in batches of 2 (the last one short) give 5 rows of logits,
    the accuracy of their argmax and the clip-weighted mean loss, as a plain forward computes them."""
    from accelerate import Accelerator

    model = randomize(ast_hf.ASTForAudioClassification(tiny_config(num_labels=3)))
    extractor = ast_hf.ASTFeatureExtractor(max_length=128)
    clips = [*speech, speech[0][: 8000]]
    labels = torch.tensor([0, 1, 2, 1, 0])
    batches = [dict(extractor(clips[i:i + 2], sampling_rate=16000, return_tensors="pt", truncation=True),
                    labels=labels[i:i + 2]) for i in range(0, 5, 2)]
    metrics, logits, label_ids = training.evaluate_with_accelerator(model, batches, Accelerator(cpu=True), False)
    with torch.no_grad():
        expected = torch.cat([model(**{k: v for k, v in b.items() if k != "labels"}).logits for b in batches])
    assert logits.shape == (5, 3) and label_ids.tolist() == labels.tolist()
    torch.testing.assert_close(torch.from_numpy(logits), expected, rtol=1e-5, atol=1e-5)
    assert metrics["eval_accuracy"] == pytest.approx(int((expected.argmax(1) == labels).sum()) / 5)
    loss = F.cross_entropy(expected, labels, reduction="sum") / 5
    assert metrics["eval_loss"] == pytest.approx(float(loss), rel=1e-5)


def test_cross_validation_flags_are_refused_where_they_cannot_act(tmp_path):
    loop = load_example("run_audio_classification_no_trainer")
    with pytest.raises(ValueError, match="cross-validation is run by examples/run_audio_classification.py"):
        loop.main(["--cross_validation_folds", "5", "--output_dir", str(tmp_path)])
    for script in (loop, load_example("run_audio_classification")):  # a fold column alone would do nothing
        with pytest.raises(ValueError, match="has no effect without --cross_validation_folds"):
            script.main(["--fold_column_name", "fold", "--output_dir", str(tmp_path)])


def final_weights(folder: Path) -> dict[str, torch.Tensor]:
    return load_file(str(folder / "model.safetensors"))


def max_difference(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    assert a.keys() == b.keys()
    return max(float((a[k] - b[k]).abs().max()) for k in a)


@pytest.mark.slow
@pytest.mark.parametrize("script", ["trainer", "accelerate"])
def test_torchrun_two_processes_equal_one_process(commands_root, tmp_path, script):
    """Full-batch steps: 2 ranks x 4 clips see the same 8 clips as 1 process x 8, so DDP's averaged gradient equals
    the single-process one up to float rounding. Adam(W) divides each step by the gradient's own RMS, which
    magnifies that rounding where gradients are tiny (most on the key biases, whose exact gradient is zero: softmax
    ignores a constant added to every score), so after 3 AdamW steps from lr 1e-3 the weights agree to 5e-5
    (measured 6e-6 for both scripts), where a wrong data split or loss scaling would differ by whole steps."""
    subset = tmp_path / "train.csv"
    wavs = sorted((commands_root / "train").glob("*/*.wav"))[::5][:8]
    subset.write_text("audio,label\n" + "".join(f"{w},{w.parent.name}\n" for w in wavs))
    common = ["--train_file", str(subset), "--validation_file", str(subset), *TINY, "--num_train_epochs", "3",
              "--freqm", "0", "--timem", "0", "--noise", "false", "--mixup", "0", "--warmup_steps", "0",
              "--multistep_start_epoch", "0", "--balanced_sampling", "true"]
    if script == "trainer":
        program, common = TRAINER, [*common, "--save_strategy", "no", "--eval_strategy", "no"]
    else:
        program = LOOP
    recipe = str(ROOT / "examples" / "recipes" / "espeak_commands.json")
    run([sys.executable, str(program), recipe, *common, "--per_device_train_batch_size", "8",
         "--output_dir", str(tmp_path / "one")])
    torchrun = shutil.which("torchrun") or "torchrun"
    run([torchrun, "--nproc_per_node", "2", "--master_port", "29517", str(program), recipe, *common,
         "--per_device_train_batch_size", "4", "--output_dir", str(tmp_path / "two")],
        env_extra={"OMP_NUM_THREADS": "1"})
    ranks = [json.loads((tmp_path / "two" / f"process_{r}.json").read_text()) for r in (0, 1)]
    assert [r["world_size"] for r in ranks] == [2, 2]
    assert [r["examples_collated_for_training"] for r in ranks] == [12, 12]  # 4 clips x 3 epochs on each rank
    assert max_difference(final_weights(tmp_path / "one"), final_weights(tmp_path / "two")) <= 5e-5


@pytest.mark.slow
def test_fsdp_two_processes_train_the_weights_of_one_save_resume_and_load(commands_root, tmp_path):
    """The Trainer script under FSDP2 (--fsdp full_shard --fsdp_config examples/distributed/fsdp_trainer.json,
    torchrun, 2 CPU processes on gloo): each ASTLayer is a sharded unit (the log says how many), full-batch steps
    train the weights of one process (3 steps from lr 1e-3: within 5e-5, as the DDP test), a run resumed from the
    FSDP checkpoint of step 1 ends with the uninterrupted run's weights, and the final model loads on one process
    with its code (no torch file taken for remote code)."""
    subset = tmp_path / "train.csv"
    wavs = sorted((commands_root / "train").glob("*/*.wav"))[::5][:8]
    subset.write_text("audio,label\n" + "".join(f"{w},{w.parent.name}\n" for w in wavs))
    common = ["--train_file", str(subset), "--validation_file", str(subset), *TINY, "--num_train_epochs", "3",
              "--freqm", "0", "--timem", "0", "--noise", "false", "--mixup", "0", "--warmup_steps", "0",
              "--eval_strategy", "no"]
    fsdp = ["--fsdp", "full_shard", "--fsdp_config", str(ROOT / "examples" / "distributed" / "fsdp_trainer.json"),
            "--per_device_train_batch_size", "4"]
    run([sys.executable, str(TRAINER), *common, "--per_device_train_batch_size", "8", "--save_strategy", "no",
         "--output_dir", str(tmp_path / "one")])
    torchrun = [shutil.which("torchrun") or "torchrun", "--nproc_per_node", "2", "--master_port", "29523"]
    log = run([*torchrun, str(TRAINER), *common, *fsdp, "--save_strategy", "steps", "--save_steps", "1",
               "--output_dir", str(tmp_path / "fsdp")], env_extra={"OMP_NUM_THREADS": "1"})
    assert re.search(r"FSDP: \d+ sharded units over 2 processes", log), log[-3000:]
    sharded = final_weights(tmp_path / "fsdp")
    assert max_difference(final_weights(tmp_path / "one"), sharded) <= 5e-5
    run([*torchrun, str(TRAINER), *common, *fsdp, "--save_strategy", "no", "--resume_from_checkpoint",
         str(tmp_path / "fsdp" / "checkpoint-1"), "--output_dir", str(tmp_path / "resumed")],
        env_extra={"OMP_NUM_THREADS": "1"})
    assert max_difference(sharded, final_weights(tmp_path / "resumed")) <= 1e-6
    assert not list((tmp_path / "fsdp").glob("_fsdp*.py")) and (tmp_path / "fsdp" / "modeling_ast.py").is_file()
    loaded = ast_hf.ASTForAudioClassification.from_pretrained(tmp_path / "fsdp")
    assert max_difference(sharded, {k: v for k, v in loaded.state_dict().items() if k in sharded}) == 0.0


def test_examples_retarget_a_trained_ast_and_convert_a_deit(tmp_path):
    import transformers

    trained = randomize(ast_hf.ASTForAudioClassification(tiny_config(max_length=1024, num_labels=3)))
    trained.save_pretrained(tmp_path / "trained")
    data = training.DataArguments(max_length=128, dataset_mean=-6.0, dataset_std=5.0)
    words = ["yes", "no", "up", "down"]
    model, extractor = training.prepare_model_and_extractor(
        training.ModelArguments(model_name_or_path=str(tmp_path / "trained")), data, training.RecipeArguments(),
        words, multi_label=False, describe=lambda _: None)
    assert model.config.patch_grid == (12, 12) and model.config.id2label[3] == "down"
    assert (extractor.max_length, extractor.mean, extractor.std) == (128, -6.0, 5.0)
    stored = trained.state_dict()["audio_spectrogram_transformer.embeddings.position_embeddings"][0, 2:]
    centre = stored.reshape(12, 101, 32)[:, 50 - 6:50 - 6 + 12]  # the authors' centre cut of 101 time columns
    torch.testing.assert_close(model.audio_spectrogram_transformer.embeddings.position_embeddings[0, 2:],
                               centre.reshape(-1, 32))
    deit = transformers.DeiTModel(transformers.DeiTConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=4,
                                                          intermediate_size=64, image_size=224))
    deit.save_pretrained(tmp_path / "deit")
    model, _ = training.prepare_model_and_extractor(
        training.ModelArguments(deit_name_or_path=str(tmp_path / "deit")), data,
        training.RecipeArguments(patchout_time=2), words, multi_label=True, describe=lambda _: None)
    assert model.config.problem_type == "multi_label_classification" and model.config.patchout_time == 2
    assert model.config.num_hidden_layers == 1 and model.config.patch_grid == (12, 12)
    with pytest.raises(ValueError, match="--patchout_frequency 12 drops all 12 frequency rows of the 12 x 12 patch "
                                         "grid.*at most --patchout_frequency 11"):
        training.prepare_model_and_extractor(
            training.ModelArguments(deit_name_or_path=str(tmp_path / "deit")), data,
            training.RecipeArguments(patchout_frequency=12), words, multi_label=True, describe=lambda _: None)
    with pytest.raises(ValueError, match="exactly one of"):
        training.prepare_model_and_extractor(training.ModelArguments(), data, training.RecipeArguments(), words,
                                             multi_label=False)


@pytest.mark.slow
def test_cross_validation_runs_one_model_per_fold(commands_root, tmp_path):
    wavs = sorted((commands_root / "train").glob("*/*.wav"))[::2][:12]
    table = tmp_path / "meta.csv"
    table.write_text("audio,label,fold\n" + "".join(f"{w},{w.parent.name},{1 + i % 2}\n"
                                                     for i, w in enumerate(wavs)))
    out = tmp_path / "cv"
    run([sys.executable, str(TRAINER), str(ROOT / "examples" / "recipes" / "esc50.json"), "--model_name_or_path", "",
         "--train_file", str(table), "--cross_validation_folds", "2", *TINY, "--num_train_epochs", "1",
         "--output_dir", str(out)])
    summary = json.loads((out / "cv_results.json").read_text())
    assert sorted(summary["folds"]) == ["1", "2"]
    for fold in (1, 2):
        held_out = [w for i, w in enumerate(wavs) if 1 + i % 2 == fold]
        folder = out / f"fold_{fold}"
        # Each fold's model trained on the other fold's 6 clips only (1 epoch), and its reported accuracy is its
        # own on the held-out fold's clips.
        assert json.loads((folder / "process_0.json").read_text())["examples_collated_for_training"] == 6
        reported = summary["folds"][str(fold)]["eval_accuracy"]
        assert abs(reported - saved_model_accuracy(folder, held_out)) <= 1 / 6 + 1e-9, (fold, reported)
    folds = [summary["folds"][k]["eval_accuracy"] for k in ("1", "2")]
    assert summary["cv_mean_eval_accuracy"] == pytest.approx(float(np.mean(folds)))
    assert (out / "fold_2" / "confusion_matrix.png").exists()


@pytest.mark.slow
def test_push_to_hub_then_pull_through_a_local_hub(commands_root, tmp_path):
    """--push_to_hub against a Hub API served on 127.0.0.1 (tests/fake_hub.py), then the pipeline pulls the model
    back by repo id from the same server in a fresh process."""
    from fake_hub import serve

    server, url = serve(tmp_path / "hub")
    env = {"HF_ENDPOINT": url, "HF_TOKEN": "hf_local_test", "HF_HUB_DISABLE_XET": "1",
           "HF_HOME": str(tmp_path / "hf_home")}
    try:
        run([sys.executable, str(TRAINER), str(ROOT / "examples" / "recipes" / "espeak_commands.json"),
             "--train_dir", str(commands_root / "train"), "--validation_dir", str(commands_root / "validation"),
             *TINY, "--num_train_epochs", "1", "--output_dir", str(tmp_path / "out"), "--push_to_hub", "true",
             "--hub_model_id", "tester/espeak-commands"], env_extra=env)
        repo = tmp_path / "hub" / "tester" / "espeak-commands"
        for name in ("model.safetensors", "config.json", "modeling_ast.py", "preprocessor_config.json",
                     "README.md", "training_curves.png"):
            assert (repo / name).is_file(), name
        card = (repo / "README.md").read_text()
        from conftest import card_settings

        assert "# tester/espeak-commands" in card and "| accuracy |" in card and card_settings(card)["freqm"] == 16
        assert not list(repo.glob("checkpoint-*"))
        code = ("import numpy as np, ast_hf; from transformers import pipeline; "
                "c = pipeline('audio-classification', model='tester/espeak-commands'); "
                "print(type(c.model).__module__, c(np.zeros(16000, np.float32), top_k=1)[0]['label'])")
        out = run([sys.executable, "-c", code], env_extra=env)
        assert "ast_hf.modeling_ast" in out
    finally:
        server.shutdown()


@pytest.mark.slow
def test_dataset_name_loads_a_local_data_set_folder(commands_root, tmp_path):
    """--dataset_name goes through datasets.load_dataset; a folder with train/ and validation/ audiofolders is a
    data set it can load without the network (Hub names need the network, which this machine lacks)."""
    out = tmp_path / "named"
    run([sys.executable, str(LOOP), "--dataset_name", str(commands_root), *TINY, "--num_train_epochs", "1",
         "--output_dir", str(out)])
    assert json.loads((out / "all_results.json").read_text())["train_updates"] == 5
    assert ast_hf.ASTConfig.from_pretrained(out).id2label[9] == "yes"


@pytest.mark.slow
@pytest.mark.parametrize("script", ["trainer", "accelerate"])
def test_run_killed_mid_epoch_resumes_from_its_last_complete_checkpoint(commands_root, tmp_path, script):
    """A real training process killed with SIGKILL after its checkpoint at update 6 (mid-epoch: 5 updates per epoch,
    checkpoints every 2), resumed with --resume_from_checkpoint last, ends with the weights of an uninterrupted run
    (SpecAugment, mixup, balanced sampling and the averaging of epochs 1-3 on). A half-written checkpoint folder
    newer than the last complete one is skipped."""
    import signal
    import time

    common = ["--train_dir", str(commands_root / "train"), "--validation_dir", str(commands_root / "validation"),
              *TINY, "--num_train_epochs", "3", "--freqm", "8", "--timem", "8", "--mixup", "0.5",
              "--balanced_sampling", "true", "--average_start_epoch", "1", "--average_end_epoch", "3"]
    recipe = str(ROOT / "examples" / "recipes" / "espeak_commands.json")
    if script == "trainer":
        command = [sys.executable, str(TRAINER), recipe, *common, "--save_strategy", "steps", "--save_steps", "2",
                   "--eval_strategy", "no"]
        marker, partial = Path("checkpoint-6") / "trainer_state.json", "checkpoint-14"
    else:
        command = [sys.executable, str(LOOP), recipe, *common, "--checkpointing_steps", "2"]
        marker, partial = Path("step_6") / "loop_state.json", "step_14"
    run([*command, "--output_dir", str(tmp_path / "full")])
    killed = tmp_path / "killed"
    process = subprocess.Popen([*command, "--output_dir", str(killed)], cwd=ROOT, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    while not (killed / marker).is_file() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert process.returncode == -signal.SIGKILL and not (killed / "model.safetensors").exists()
    (killed / partial).mkdir()  # what a kill during a save leaves: a folder without the completion marker
    (killed / partial / "config.json").write_text("{}")
    log = run([*command, "--output_dir", str(killed), "--resume_from_checkpoint", "last"])
    assert f"skipping {killed / partial}: incomplete" in log
    assert max_difference(final_weights(tmp_path / "full"), final_weights(killed)) <= 1e-6


def test_resume_from_checkpoint_takes_only_complete_folders(tmp_path):
    for name in ("checkpoint-4", "checkpoint-10", "checkpoint-12", "step_3"):
        (tmp_path / name).mkdir()
    (tmp_path / "checkpoint-4" / "trainer_state.json").write_text("{}")
    (tmp_path / "checkpoint-10" / "trainer_state.json").write_text("{}")
    with pytest.warns(UserWarning, match="skipping .*checkpoint-12: incomplete"):
        assert training.resolve_checkpoint("last", tmp_path) == str(tmp_path / "checkpoint-10")
    assert training.resolve_checkpoint(str(tmp_path / "checkpoint-4"), tmp_path) == str(tmp_path / "checkpoint-4")
    assert training.resolve_checkpoint(None, tmp_path) is None
    with pytest.raises(ValueError, match="is incomplete"):
        training.resolve_checkpoint(str(tmp_path / "checkpoint-12"), tmp_path)
    with pytest.raises(ValueError, match="is not a folder"):
        training.resolve_checkpoint(str(tmp_path / "checkpoint-99"), tmp_path)
    with pytest.raises(ValueError, match="no complete checkpoint"):
        training.resolve_checkpoint("last", tmp_path / "step_3")
