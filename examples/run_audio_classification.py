"""Fine-tune an Audio Spectrogram Transformer with the Hugging Face Trainer, with the paper's recipes.

    python examples/run_audio_classification.py examples/recipes/espeak_commands.json        # embedded data
    python examples/run_audio_classification.py examples/recipes/esc50.json --train_dir ... --validation_dir ...
    torchrun --nproc_per_node 2 examples/run_audio_classification.py RECIPE.json [--overrides]

Arguments are those of ast_hf.training (ModelArguments, DataArguments, RecipeArguments) plus TrainingArguments;
a JSON file given first provides defaults that later command-line flags override. With no data set given, the
embedded spoken-command data (espeak-ng, ast_hf.espeak_commands) is built and used.
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch
import transformers
from transformers import PreTrainedModel, Trainer, TrainerCallback, TrainingArguments, set_seed

from ast_hf import training
from ast_hf.audio_io import decode_audio

logger = logging.getLogger("run_audio_classification")
ARGUMENT_CLASSES = (training.ModelArguments, training.DataArguments, training.RecipeArguments, TrainingArguments)


class ASTTrainer(Trainer):
    """Trainer with balanced sampling, separate collators for training (augmented) and evaluation (plain), and the
    reference's Adam and warm-up + MultiStepLR schedule where the recipe asks for them (reference_optimizer,
    multistep_start_epoch); everything else is the Trainer's own (--optim, --lr_scheduler_type, --warmup_steps,
    --weight_decay, ...)."""

    def create_accelerator_and_postprocess(self) -> None:
        """The Trainer's accelerator, and FSDP on CPUs too: accelerate turns its FSDP plugin on for GPU process
        groups only, and a torchrun run on CPUs (gloo) would silently train with DDP instead; FSDP2's
        `fully_shard` itself runs on CPUs, so the plugin is set on the accelerator's state here."""
        super().create_accelerator_and_postprocess()
        if self.args.fsdp_plugin_args is None or self.is_fsdp_enabled:
            return
        from accelerate.state import PartialState
        from accelerate.utils import DistributedType, FullyShardedDataParallelPlugin

        state = self.accelerator.state
        if state.distributed_type == DistributedType.MULTI_CPU:
            state.distributed_type = DistributedType.FSDP  # accelerate keeps it in two shared states
            PartialState._shared_state["distributed_type"] = DistributedType.FSDP
            state.fsdp_plugin = FullyShardedDataParallelPlugin(**self.args.fsdp_plugin_args)
            self.is_fsdp_enabled = True

    def __init__(self, *args: Any, recipe: training.RecipeArguments, eval_collator: Any,
                 averager: training.WeightAverager, sample_weights: torch.Tensor | None = None,
                 **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.recipe = recipe
        self.averager = averager
        self.eval_collator = eval_collator
        self.sample_weights = sample_weights
        self.updates_per_epoch = 1
        self.examples_trained = 0  # by this process (the collator may run in DataLoader workers)
        # --label_smoothing_factor is applied by the training collator to its targets (so that it composes with
        # mixup's soft targets); the Trainer's own smoother would apply it a second time.
        self.label_smoother = None

    def create_optimizer(self, model=None):
        if self.optimizer is None and self.recipe.reference_optimizer:
            self.optimizer = training.reference_adam(model or self.model, self.args.learning_rate,
                                                     (self.args.adam_beta1, self.args.adam_beta2),
                                                     self.args.adam_epsilon, self.args.weight_decay)
        return super().create_optimizer(model)

    def _save_checkpoint(self, model, trial) -> None:
        # The epoch average is part of the checkpoint (a resumed run averages the epochs before the restart too).
        # Written first: the Trainer writes trainer_state.json last, so a checkpoint that has it is complete.
        if self.is_world_process_zero():
            folder = Path(self._get_output_dir(trial=trial)) / f"checkpoint-{self.state.global_step}"
            folder.mkdir(parents=True, exist_ok=True)
            self.averager.save(folder / AveragingCallback.FILE)
        super()._save_checkpoint(model, trial)

    def _save(self, output_dir: str | None = None, state_dict: dict | None = None) -> None:
        # FSDP2's fully_shard gives the model a class of torch's (FSDPASTForAudioClassification, in a torch module),
        # whose file save_pretrained would copy as the model's remote code. The full state dict is gathered already:
        # save it as the model's own class.
        sharded_class = type(self.model)
        own_class = next(k for k in sharded_class.__mro__ if issubclass(k, PreTrainedModel)
                         and k.__module__.split(".")[-1] == "modeling_ast")
        self.model.__class__ = own_class
        try:
            super()._save(output_dir, state_dict)
        finally:
            self.model.__class__ = sharded_class

    def training_step(self, model, inputs, num_items_in_batch=None):
        self.examples_trained += len(inputs["labels"])
        return super().training_step(model, inputs, num_items_in_batch)

    def get_train_dataloader(self):
        if not isinstance(self.train_dataset, training.StreamingClips):
            return super().get_train_dataloader()
        return training.stream_dataloader(self.train_dataset, self.data_collator, self.args)

    def set_initial_training_values(self, args, dataloader):
        values = super().set_initial_training_values(args, dataloader)
        self.updates_per_epoch = values[1]  # MultiStepLR counts epochs in updates
        return values

    def create_scheduler(self, num_training_steps: int, optimizer: torch.optim.Optimizer | None = None):
        if self.lr_scheduler is None and self.recipe.multistep_start_epoch > 0:
            self.lr_scheduler = training.build_scheduler(
                optimizer or self.optimizer, self.recipe, self.args.lr_scheduler_type,
                self.args.get_warmup_steps(num_training_steps), num_training_steps, self.updates_per_epoch)
            self._created_lr_scheduler = True
        return super().create_scheduler(num_training_steps, optimizer)

    def _get_train_sampler(self, train_dataset=None):
        if self.sample_weights is None:
            return super()._get_train_sampler(train_dataset)
        # The same draws on every process; accelerate gives each process its share of the batches.
        return training.balanced_sampler(self.sample_weights, self.args.seed)

    def _with_eval_collator(self, make):
        train_collator, self.data_collator = self.data_collator, self.eval_collator
        try:
            return make()
        finally:
            self.data_collator = train_collator

    def get_eval_dataloader(self, eval_dataset=None):
        return self._with_eval_collator(lambda: super(ASTTrainer, self).get_eval_dataloader(eval_dataset))

    def get_test_dataloader(self, test_dataset):
        return self._with_eval_collator(lambda: super(ASTTrainer, self).get_test_dataloader(test_dataset))


class AveragingCallback(TrainerCallback):
    """Feeds the model's weights at the end of each epoch to a WeightAverager."""

    FILE = "weight_average.safetensors"

    def __init__(self, averager: training.WeightAverager) -> None:
        self.averager = averager

    def on_epoch_end(self, args, state, control, model=None, **kwargs):
        self.averager.update(model, int(round(state.epoch)))

    def restore(self, checkpoint: str | None) -> None:
        if checkpoint and (Path(checkpoint) / self.FILE).is_file():
            self.averager.load(Path(checkpoint) / self.FILE)


def build_trainer(model_args, data_args, recipe, training_args, raw, labels, multi_label) -> ASTTrainer:
    """The model, feature extractor, collators, sampler weights and weight averaging of one run, in a Trainer."""
    set_seed(training_args.seed)
    parts = training.build_run(model_args, data_args, recipe, raw, labels, multi_label, training_args.seed,
                               training_args.label_smoothing_factor, describe=logger.info)
    averaging = AveragingCallback(training.WeightAverager(recipe.average_start_epoch, recipe.average_end_epoch))
    training_args.resume_from_checkpoint = training.resolve_checkpoint(training_args.resume_from_checkpoint,
                                                                      training_args.output_dir)
    averaging.restore(training_args.resume_from_checkpoint)
    callbacks = [averaging, training.EpochCallback(parts.train_collator)]
    if isinstance(raw.get("train"), training.StreamingClips):
        training_args.ignore_data_skip = True  # StreamResumeCallback skips, without decoding
        callbacks.append(training.StreamResumeCallback(raw["train"]))
    return ASTTrainer(model=parts.model, args=training_args, train_dataset=raw["train"] if training_args.do_train
                      else None, eval_dataset=raw.get("validation"), data_collator=parts.train_collator,
                      eval_collator=parts.eval_collator, recipe=recipe, averager=averaging.averager,
                      sample_weights=parts.sample_weights, processing_class=parts.extractor,
                      compute_metrics=training.compute_metrics_fn(multi_label),
                      callbacks=callbacks)


def run_one(model_args, data_args, recipe, training_args, raw, labels, multi_label, description,
            push_repo: str | None = None, facts: dict[str, Any] | None = None) -> dict[str, Any]:
    """Train and/or evaluate one model on raw["train"] / raw["validation"]; returns the metrics."""
    trainer = build_trainer(model_args, data_args, recipe, training_args, raw, labels, multi_label)
    extractor, averager = trainer.processing_class, trainer.averager
    metrics: dict[str, Any] = {}
    output_dir = Path(training_args.output_dir)
    if training_args.do_train:
        if training_args.resume_from_checkpoint:
            logger.info("resuming from %s", training_args.resume_from_checkpoint)
        metrics.update(training.train_or_finish(trainer, training_args.resume_from_checkpoint, logger.info))
        if trainer.is_fsdp_enabled:
            from torch.distributed.fsdp import FSDPModule

            units = sum(isinstance(module, FSDPModule) for module in trainer.model_wrapped.modules())
            logger.info("FSDP: %d sharded units over %d processes", units, training_args.world_size)
        if data_args.streaming:  # a stream has no epochs: the Trainer's count is steps / max_steps, not passes
            metrics.pop("epoch", None)
            metrics["train_steps"] = trainer.state.global_step
        if averager.apply(trainer.model):
            logger.info("weights averaged over epochs %d-%d (%d checkpoints)", averager.start_epoch,
                        averager.end_epoch, averager.count)
            metrics["averaged_epochs"] = averager.count
        trainer.save_model()
        extractor.save_pretrained(training_args.output_dir)
        trainer.save_state()
    evaluation = None
    if training_args.do_eval:
        prediction = trainer.predict(raw["validation"], metric_key_prefix="eval")
        metrics.update(prediction.metrics)
        evaluation = (prediction.predictions, prediction.label_ids)
    training.finish_run(
        output_dir, is_main_process=trainer.is_world_process_zero(), process_index=training_args.process_index,
        world_size=training_args.world_size, trained=training_args.do_train, metrics=metrics,
        log_history=trainer.state.log_history, evaluation=evaluation, labels=labels, multi_label=multi_label,
        record=training.run_record(recipe, data_args, model_args, training_args, trainer.model, extractor),
        description=description, model_name=output_dir.name,
        base_model=model_args.model_name_or_path or model_args.deit_name_or_path,
        examples_collated=trainer.examples_trained, push_repo=push_repo, data_facts=facts,
        push_private=training_args.hub_private_repo, push_token=training_args.hub_token)
    return metrics


def check_trainer_arguments(args: TrainingArguments, data_args: training.DataArguments,
                            recipe: training.RecipeArguments, sources: dict[str, str]) -> None:
    """Refuse the TrainingArguments that this script handles its own way, rather than ignore them."""
    problems = []
    if "remove_unused_columns" in sources and args.remove_unused_columns:
        problems.append("--remove_unused_columns true would drop the raw audio column that the collator reads; "
                        "leave it out.")
    if "hub_strategy" in sources:
        problems.append("--hub_strategy: this script pushes the finished output folder (model, code, feature "
                        "extractor, card) once at the end of training; leave it out.")
    if args.do_predict:
        problems.append("--do_predict: this script has no test split; evaluate another split with --do_eval and "
                        "--eval_split_name, --validation_dir or --validation_file.")
    if args.load_best_model_at_end and recipe.average_end_epoch > 0:
        problems.append(f"--load_best_model_at_end conflicts with average_end_epoch={recipe.average_end_epoch}: "
                        "the saved model would be the average of epochs, not the best checkpoint; use one of them.")
    if args.push_to_hub and data_args.cross_validation_folds > 0:
        problems.append("--push_to_hub with --cross_validation_folds trains one model per fold; push the fold "
                        "you want afterwards (huggingface_hub's upload_folder).")
    if args.dataloader_persistent_workers and args.dataloader_num_workers > 0 and not data_args.streaming:
        problems.append("--dataloader_persistent_workers: the training collator draws its augmentations per epoch, "
                        "and persistent workers would keep their first epoch's copy of it; leave it out.")
    if args.fsdp and recipe.average_end_epoch > 0:
        problems.append(f"--fsdp with average_end_epoch={recipe.average_end_epoch}: weight averaging keeps full "
                        "copies of the weights in each process, which sharding is meant to avoid; set "
                        "--average_end_epoch 0 for an FSDP run.")
    if args.torch_compile and not data_args.pad_to_max_length:
        problems.append("--torch_compile true needs batches of one length in training: with batches padded to their "
                        "longest clip (the default without --pad_to_max_length) torch's inductor fails to compile "
                        "the backward pass once a second length arrives ('cannot determine truth value of "
                        "Relational'). Add --pad_to_max_length true, or leave --torch_compile out. (Inference "
                        "compiles for any length: ast_hf.optimize_for_inference(model, mode='compile').)")
    if problems:
        raise ValueError("\n".join(problems))


def main(argv: list[str] | None = None) -> dict[str, Any]:
    model_args, data_args, recipe, training_args, sources = training.parse_arguments(
        ARGUMENT_CLASSES, sys.argv[1:] if argv is None else argv, "outputs/run_audio_classification",
        extra_defaults=["--use_cpu", "true", "--ddp_backend", "gloo"] if training.cpu_ddp_requested() else
        ["--use_cpu", "true"] if not torch.cuda.is_available() else ())  # --bf16 on a CPU needs use_cpu
    training.check_argument_conflicts(recipe, sources)
    check_trainer_arguments(training_args, data_args, recipe, sources)
    training.check_cross_validation(data_args, sources)
    training.check_model_source(model_args)
    training.warn_inert_settings(recipe, training_args.num_train_epochs, data_args.max_length)
    training_args.remove_unused_columns = False  # the collator reads the raw audio column
    # One push of the finished folder at the end (model, code, extractor, our card), not Trainer's own pushes.
    push_repo = (training_args.hub_model_id or Path(training_args.output_dir).name) if training_args.push_to_hub \
        else None
    training_args.push_to_hub = False
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=logging.INFO
                        if training_args.process_index == 0 else logging.WARNING)
    transformers.utils.logging.set_verbosity_warning()
    training.check_streaming_arguments(data_args, training_args.max_steps, sources, recipe, {
        "--eval_strategy": str(getattr(training_args.eval_strategy, "value", training_args.eval_strategy)),
        "--save_strategy": str(getattr(training_args.save_strategy, "value", training_args.save_strategy))})
    train = training.train_requested(training_args.do_train, sources)
    training.follow_model_convention(model_args, data_args, sources, train)
    if not train and data_args.cross_validation_folds > 0:
        raise ValueError("--cross_validation_folds trains one model per fold; it cannot run with --do_train false.")
    with training_args.main_process_first(desc="dataset preparation"):
        data = training.prepare_data(data_args, training_args.seed, model_args.cache_dir,
                                     model_labels=training.pretrained_labels(model_args), train=train)
    raw, labels, multi_label, description = data.raw, data.labels, data.multi_label, data.description
    if data_args.streaming and train:
        raw["train"] = training.streaming_clips(
            raw["train"], data_args, labels, multi_label, 16000, training_args.per_device_train_batch_size,
            training_args.seed, training_args.process_index, training_args.world_size)
        logger.info("data: %s, streamed (shuffle buffer %d clips, process %d of %d reads its own part); %d labels",
                    description, data_args.shuffle_buffer_size, training_args.process_index,
                    training_args.world_size, len(labels))
    else:
        logger.info("data: %s; %s, %d labels (%s)", description, ", ".join(
            f"{len(raw[name])} {role} clips" for name, role in (("train", "training"), ("validation", "evaluation"))
            if name in raw), len(labels), "multi-label" if multi_label else "single-label")
    training_args.do_train, training_args.do_eval = training.resolve_run_steps(
        training_args.do_train, training_args.do_eval, sources,
        "validation" in raw or data_args.cross_validation_folds > 0, training_args.eval_strategy,
        trained_model=bool(model_args.model_name_or_path))
    if data_args.cross_validation_folds <= 0:
        metrics = run_one(model_args, data_args, recipe, training_args, raw, labels, multi_label, description,
                          push_repo, data.facts)
    else:
        metrics = cross_validate(model_args, data_args, recipe, training_args, raw, labels, multi_label,
                                 description)
    if training_args.process_index == 0 and not data_args.dataset_name and not data_args.train_file \
            and "espeak" in description and training_args.do_train and "validation" in raw:
        classify_examples(training_args.output_dir, raw["validation"], data_args)
    return metrics


def cross_validate(model_args, data_args, recipe, training_args, raw, labels, multi_label, description):
    """k-fold cross-validation (ESC-50): fold k is the evaluation set of run k; reports the mean and per fold."""
    import datasets

    if not data_args.fold_column_name:
        raise ValueError("--cross_validation_folds needs --fold_column_name (ESC-50's metadata has 'fold').")
    missing = [name for name in raw if data_args.fold_column_name not in raw[name].column_names]
    if missing:
        raise ValueError(f"--fold_column_name {data_args.fold_column_name!r}: split(s) {missing} have no such column "
                         f"(columns: {raw[missing[0]].column_names}); name the column that holds each clip's fold.")
    everything = datasets.concatenate_datasets([raw[name].remove_columns([c for c in ["_row"]
                                                                         if c in raw[name].column_names])
                                                for name in raw])
    folds = sorted(set(everything[data_args.fold_column_name]))[: data_args.cross_validation_folds]
    base_dir = training_args.output_dir
    per_fold = {}
    for fold in folds:
        training_args.output_dir = os.path.join(base_dir, f"fold_{fold}")
        split = datasets.DatasetDict({
            "train": everything.filter(lambda row, f=fold: row[data_args.fold_column_name] != f).map(
                lambda row, index: {"_row": index}, with_indices=True),
            "validation": everything.filter(lambda row, f=fold: row[data_args.fold_column_name] == f)})
        facts = {"labels": list(labels), "multi_label": multi_label, "training data": description,
                 "training clips": len(split["train"]), "evaluation data": f"fold {fold} of {description}",
                 "evaluation clips": len(split["validation"])}
        per_fold[str(fold)] = run_one(model_args, data_args, recipe, training_args, split, labels, multi_label,
                                      f"{description}, fold {fold} held out", facts=facts)
    training_args.output_dir = base_dir
    key = "eval_mAP" if multi_label else "eval_accuracy"
    summary = {f"cv_mean_{key}": float(np.mean([m[key] for m in per_fold.values()])), "folds": per_fold}
    if training_args.process_index == 0:
        training.write_json(Path(base_dir) / "cv_results.json", summary)
    return summary


def classify_examples(model_dir: str, dataset, data_args: training.DataArguments, count: int = 5) -> None:
    """The saved model through pipeline("audio-classification") on a few held-out clips."""
    from transformers import pipeline

    classifier = pipeline("audio-classification", model=model_dir)
    names = classifier.model.config.id2label
    for index in np.linspace(0, len(dataset) - 1, count).astype(int):
        row = dataset[int(index)]
        audio = decode_audio(row[data_args.audio_column_name], 16000)
        top = classifier({"raw": np.asarray(audio, dtype=np.float32), "sampling_rate": 16000}, top_k=2)
        truth = names[int(row[data_args.label_column_name])]
        print(f"pipeline: clip {int(index)} ({truth}) -> " + ", ".join(f"{r['label']} {r['score']:.2f}" for r in top))


if __name__ == "__main__":
    training.run_script(main)
