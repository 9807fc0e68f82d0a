"""Every optimisation flag a user passes reaches the optimiser and schedule that training actually uses.

The Trainer example is built for real (ast_hf.training + examples/run_audio_classification.build_trainer) and trained
for a few steps on espeak-ng clips; a TrainerCallback reads the optimiser and the learning rate of every update.
Expected values come from the flags themselves and from hand-computed schedules, not from ast_hf's own code."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import transformers
from conftest import load_example
from transformers import TrainerCallback

from ast_hf import training

ROOT = Path(__file__).resolve().parents[1]
RECIPE = str(ROOT / "examples" / "recipes" / "espeak_commands.json")
# 40 training clips, batch 8: 5 updates per epoch.
TINY_RUN = ["--model_size", "tiny", "--frequency_stride", "16", "--time_stride", "16", "--max_length", "64",
            "--per_device_train_batch_size", "8", "--report_to", "none", "--seed", "1", "--do_eval", "false"]
TINY = [*TINY_RUN, "--save_strategy", "no", "--eval_strategy", "no", "--do_train", "true"]  # Trainer example


class UpdateRecorder(TrainerCallback):
    """The optimiser and the learning rate of every update, read just before the optimiser steps."""

    def __init__(self) -> None:
        self.learning_rates: list[float] = []
        self.optimizer = None

    def on_pre_optimizer_step(self, args, state, control, optimizer=None, **kwargs):
        self.optimizer = getattr(optimizer, "optimizer", optimizer)  # accelerate wraps it
        self.learning_rates.append(self.optimizer.param_groups[0]["lr"])


def train_with(argv: list[str], commands_root: Path, tmp_path: Path):
    """Parse `argv` as the Trainer example does, build its Trainer and train; returns (trainer, recorder)."""
    example = load_example("run_audio_classification")
    *parsed, sources = training.parse_arguments(
        example.ARGUMENT_CLASSES, [*argv, "--train_dir", str(commands_root / "train"), "--output_dir",
                                   str(tmp_path / "out")], str(tmp_path / "out"))
    model_args, data_args, recipe, training_args = parsed
    training.check_argument_conflicts(recipe, sources)
    training_args.remove_unused_columns = False
    raw, labels, multi_label, _, _ = training.prepare_data(data_args, training_args.seed)
    trainer = example.build_trainer(model_args, data_args, recipe, training_args, raw, labels, multi_label)
    recorder = UpdateRecorder()
    trainer.add_callback(recorder)
    trainer.train()
    return trainer, recorder


def expected_schedule(name: str, learning_rate: float, warmup: int, total: int) -> list[float]:
    """transformers' own schedule of that name, stepped on a one-parameter SGD: the rate of each update."""
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=learning_rate)
    scheduler = transformers.get_scheduler(name, optimizer=optimizer, num_warmup_steps=warmup,
                                           num_training_steps=total)
    rates = []
    for _ in range(total):
        rates.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    return rates


def test_trainer_flags_reach_the_optimizer_and_the_schedule(commands_root, tmp_path):
    """The issue's flags for training from scratch: AdamW with decoupled decay 0.05 (not on biases/LayerNorms),
    betas and epsilon as given, a cosine schedule after a warm-up of 10% of the 20 updates."""
    trainer, recorder = train_with([*TINY, "--num_train_epochs", "4", "--learning_rate", "1e-3", "--optim",
                                    "adamw_torch", "--weight_decay", "0.05", "--lr_scheduler_type", "cosine",
                                    "--warmup_steps", "0.1", "--adam_beta1", "0.8", "--adam_epsilon", "1e-7",
                                    "--label_smoothing_factor", "0.1"], commands_root, tmp_path)
    # smoothing is done once, by the training collator (test_label_smoothing_...), not again by the Trainer
    assert trainer.data_collator.label_smoothing == 0.1 and trainer.label_smoother is None
    optimizer = recorder.optimizer
    assert type(optimizer) is torch.optim.AdamW
    decays = {group["weight_decay"] for group in optimizer.param_groups}
    assert decays == {0.05, 0.0}
    names = {id(p): n for n, p in trainer.model.named_parameters()}
    for group in optimizer.param_groups:
        for parameter in group["params"]:
            exempt = names[id(parameter)].endswith("bias") or "layernorm" in names[id(parameter)]
            assert group["weight_decay"] == (0.0 if exempt else 0.05), names[id(parameter)]
        assert group["betas"] == (0.8, 0.999) and group["eps"] == 1e-7
    assert len(recorder.learning_rates) == 20
    assert recorder.learning_rates == pytest.approx(expected_schedule("cosine", 1e-3, math.ceil(0.1 * 20), 20))
    # cosine by hand at update 11 of 20 after 2 warm-up updates: 0.5 * (1 + cos(pi * 9 / 18)) = 0.5
    assert recorder.learning_rates[11] == pytest.approx(0.5e-3)


@pytest.mark.parametrize("flags, optimizer_class, schedule, warmup", [
    (["--optim", "sgd", "--lr_scheduler_type", "constant_with_warmup", "--warmup_steps", "3"], torch.optim.SGD,
     "constant_with_warmup", 3),
    (["--optim", "adafactor", "--lr_scheduler_type", "linear"], transformers.Adafactor, "linear", 0),
    (["--lr_scheduler_type", "polynomial", "--warmup_steps", "0.25"], None, "polynomial", 3),
])
def test_other_optimizers_and_schedules_are_honoured(commands_root, tmp_path, flags, optimizer_class, schedule,
                                                      warmup):
    _, recorder = train_with([*TINY, "--num_train_epochs", "2", "--learning_rate", "1e-3", *flags], commands_root,
                             tmp_path)
    if optimizer_class is None:  # no --optim: the Trainer's default, whatever this transformers makes it
        default_class, _ = transformers.Trainer.get_optimizer_cls_and_kwargs(transformers.TrainingArguments("x"))
        optimizer_class = default_class
    assert type(recorder.optimizer) is optimizer_class
    assert recorder.learning_rates == pytest.approx(expected_schedule(schedule, 1e-3, warmup, 10))


def test_recipe_json_keeps_the_reference_optimizer_and_schedule(commands_root, tmp_path):
    """A recipe that asks for the reference: Adam with L2 decay on every parameter and betas (0.95, 0.999), a linear
    warm-up of 3 updates, then x0.5 after epochs 2 and 3 (5 updates per epoch); the rates by hand."""
    trainer, recorder = train_with([RECIPE, *TINY, "--num_train_epochs", "4", "--learning_rate", "1e-3",
                                    "--warmup_steps", "3", "--multistep_start_epoch", "2", "--multistep_gamma", "0.5"],
                                   commands_root, tmp_path)
    optimizer = recorder.optimizer
    assert type(optimizer) is torch.optim.Adam and len(optimizer.param_groups) == 1
    group = optimizer.param_groups[0]
    assert group["weight_decay"] == 5e-7 and group["betas"] == (0.95, 0.999)
    assert len(group["params"]) == len(list(trainer.model.parameters()))
    by_hand = [1 / 3, 2 / 3] + [1.0] * 8 + [0.5] * 5 + [0.25] * 5
    assert recorder.learning_rates == pytest.approx([1e-3 * f for f in by_hand])


@pytest.mark.parametrize("argv, message", [
    ([RECIPE, "--optim", "adamw_torch"], "--optim .*conflicts with reference_optimizer=true .*espeak_commands.json"),
    ([RECIPE, "--lr_scheduler_type", "cosine"], "--lr_scheduler_type .*conflicts with multistep_start_epoch=7"),
    (["--multistep_gamma", "0.5"], "--multistep_gamma .*has no effect without --multistep_start_epoch"),
    (["--multistep_start_epoch", "3"], "multistep_gamma=1.0 never changes the learning rate"),
    (["--warmup_steps_recipe", "10"], "warmup_steps_recipe .*use --warmup_steps"),
    (["--adam_weight_decay", "0.1"], "adam_weight_decay .*use --weight_decay"),
])
def test_conflicting_or_removed_flags_are_refused(tmp_path, argv, message):
    example = load_example("run_audio_classification")
    with pytest.raises(ValueError, match=message):
        *_, recipe, _, sources = training.parse_arguments(example.ARGUMENT_CLASSES, argv, str(tmp_path))
        training.check_argument_conflicts(recipe, sources)


def test_command_line_may_turn_off_a_recipe_schedule(tmp_path):
    example = load_example("run_audio_classification")
    *_, recipe, args, sources = training.parse_arguments(
        example.ARGUMENT_CLASSES, [RECIPE, "--multistep_start_epoch", "0", "--reference_optimizer", "false",
                                   "--optim", "adamw_torch", "--lr_scheduler_type", "cosine"], str(tmp_path))
    training.check_argument_conflicts(recipe, sources)  # the recipe's gamma is inert, on purpose
    assert (args.optim, args.lr_scheduler_type, args.weight_decay) == ("adamw_torch", "cosine", 5e-7)


def test_config_overrides_reach_the_model(tmp_path):
    from conftest import randomize, tiny_config

    import ast_hf

    words = ["yes", "no", "up"]
    data = training.DataArguments(max_length=128)
    scratch, _ = training.prepare_model_and_extractor(
        training.ModelArguments(model_size="tiny", config_overrides="hidden_dropout_prob=0.1,"
                                "attention_probs_dropout_prob=0.2,num_hidden_layers=2"),
        data, training.RecipeArguments(), words, multi_label=False, describe=lambda _: None)
    assert scratch.config.num_hidden_layers == 2 and len(scratch.audio_spectrogram_transformer.encoder.layer) == 2
    dropouts = {m.p for m in scratch.modules() if isinstance(m, torch.nn.Dropout)}
    assert dropouts == {0.1} and scratch.config.attention_probs_dropout_prob == 0.2
    randomize(ast_hf.ASTForAudioClassification(tiny_config(num_labels=3))).save_pretrained(tmp_path / "trained")
    for geometry in ({}, {"max_length": 64}):  # loaded as it is, and re-targeted to a new length
        pretrained, _ = training.prepare_model_and_extractor(
            training.ModelArguments(model_name_or_path=str(tmp_path / "trained"),
                                    config_overrides="hidden_dropout_prob=0.1"),
            training.DataArguments(**geometry), training.RecipeArguments(), ["0", "1", "2"], multi_label=False,
            describe=lambda _: None)
        assert {m.p for m in pretrained.modules() if isinstance(m, torch.nn.Dropout)} == {0.1}
    # An optional field (default None) takes a number: the head's layer-norm epsilon of the authors' checkpoints.
    overrides = training.parse_config_overrides("classifier_layer_norm_eps=1e-5", True)
    assert overrides == {"classifier_layer_norm_eps": 1e-5}
    for overrides, message in (("hidden_dropout=0.1", "not a field of ASTConfig"),
                               ("hidden_size=64", "fixes the shapes of the pretrained weights"),
                               ("max_length=64", "use that instead"), ("hidden_dropout_prob=high", "is not a float"),
                               ("classifier_layer_norm_eps=tiny", r"is not a number \(or None\)")):
        with pytest.raises(ValueError, match=message):
            training.prepare_model_and_extractor(
                training.ModelArguments(model_name_or_path=str(tmp_path / "trained"), config_overrides=overrides),
                data, training.RecipeArguments(), words, multi_label=False, describe=lambda _: None)


@pytest.mark.slow
def test_accelerate_loop_honours_its_optimisation_flags(commands_root, tmp_path):
    """The loop's own flags: AdamW with decoupled decay except biases/LayerNorms, and the schedule of
    --lr_scheduler_type after --warmup_steps, read back from its log of every update."""
    model = training.prepare_model_and_extractor(training.ModelArguments(model_size="tiny"),
                                                 training.DataArguments(max_length=64), training.RecipeArguments(),
                                                 ["a", "b"], False, describe=lambda _: None)[0]
    optimizer = training.build_optimizer(model, 1e-3, (0.8, 0.99), 1e-7, 0.05)
    assert type(optimizer) is torch.optim.AdamW
    assert [g["weight_decay"] for g in optimizer.param_groups] == [0.05, 0.0]
    assert all(n.endswith("bias") or "layernorm" in n for n, p in model.named_parameters()
               if any(p is q for q in optimizer.param_groups[1]["params"]))
    reference = training.build_optimizer(model, 1e-3, (0.95, 0.999), 1e-8, 5e-7, reference=True)
    assert type(reference) is torch.optim.Adam and reference.param_groups[0]["weight_decay"] == 5e-7

    out = tmp_path / "loop"
    done = subprocess.run([sys.executable, str(ROOT / "examples" / "run_audio_classification_no_trainer.py"),
                           *TINY_RUN, "--train_dir", str(commands_root / "train"), "--num_train_epochs", "4",
                           "--learning_rate", "1e-3", "--lr_scheduler_type", "cosine", "--warmup_steps", "0.1",
                           "--weight_decay", "0.05", "--logging_steps", "1", "--output_dir", str(out)],
                          capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert done.returncode == 0, done.stderr[-3000:]
    logged = [h["learning_rate"] for h in json.loads((out / "log_history.json").read_text())["log_history"]]
    # logged after each update's scheduler step: the rate of the next update
    assert logged == pytest.approx(expected_schedule("cosine", 1e-3, 2, 20)[1:] + [0.0], abs=1e-12)


def test_label_smoothing_is_cross_entropy_with_smoothing(speech):
    """--label_smoothing_factor: the training collator's targets give torch's label-smoothed cross-entropy, with
    mixup's soft targets too; multi-label data refuses it."""
    import torch.nn.functional as F
    from conftest import randomize, tiny_config

    import ast_hf

    extractor = ast_hf.ASTFeatureExtractor(max_length=128)
    rows = [{"audio": clip, "label": i} for i, clip in enumerate(speech)]
    model = randomize(ast_hf.ASTForAudioClassification(tiny_config(problem_type="single_label_classification")))
    batch = training.AudioCollator(extractor, 5, False, train=True, label_smoothing=0.1)(rows)
    out = model(batch["input_values"], labels=batch["labels"])
    torch.testing.assert_close(out.loss, F.cross_entropy(out.logits, torch.arange(4), label_smoothing=0.1))
    mixed = training.AudioCollator(extractor, 5, False, train=True, mixup=1.0, label_smoothing=0.1)(rows)
    torch.testing.assert_close(mixed["labels"].sum(1), torch.ones(4))
    assert float(mixed["labels"].min()) == pytest.approx(0.1 / 5)
    with pytest.raises(ValueError, match="single-label"):
        training.make_collators(extractor, 5, True, training.DataArguments(), training.RecipeArguments(), 0, 0.1)


@pytest.mark.parametrize("argv, message", [
    (["--remove_unused_columns", "true"], "would drop the raw audio column"),
    (["--hub_strategy", "checkpoint"], "--hub_strategy: this script pushes the finished output folder"),
    (["--do_predict", "true"], "--do_predict: this script has no test split"),
    (["--load_best_model_at_end", "true", "--average_end_epoch", "3", "--eval_strategy", "epoch", "--save_strategy",
      "epoch"], "--load_best_model_at_end conflicts with average_end_epoch=3"),
    (["--push_to_hub", "true", "--cross_validation_folds", "5"], "trains one model per fold"),
    (["--torch_compile", "true"], "--torch_compile true needs batches of one length.*--pad_to_max_length true"),
])
def test_trainer_arguments_the_script_handles_itself_are_refused(tmp_path, argv, message):
    example = load_example("run_audio_classification")
    model_args, data_args, recipe, args, sources = training.parse_arguments(example.ARGUMENT_CLASSES, argv,
                                                                            str(tmp_path))
    with pytest.raises(ValueError, match=message):
        example.check_trainer_arguments(args, data_args, recipe, sources)


def test_settings_that_cannot_act_in_this_run_are_warned_about():
    """A long recipe tried for a few epochs: its MultiStepLR never fires and its time masks outgrow short clips;
    both are said, not silently kept."""
    recipe = training.RecipeArguments(multistep_start_epoch=5, multistep_gamma=0.85, timem=96, freqm=24)
    with pytest.warns(UserWarning) as caught:
        found = training.warn_inert_settings(recipe, num_train_epochs=2, max_length=64)
    assert len(found) == 2 and len(caught) == 2
    assert "multistep_start_epoch=5 is not before the last of 2 epochs" in found[0]
    assert "timem=96 allows time masks wider than the 64-frame clips" in found[1] and "--timem 16" in found[1]
    assert training.warn_inert_settings(recipe, num_train_epochs=25, max_length=512) == []
