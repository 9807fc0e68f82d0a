"""Self-supervised pretraining of an Audio Spectrogram Transformer on unlabelled audio (SSAST: Gong, Lai, Chung,
Glass, AAAI 2022), with the Hugging Face Trainer.

    python examples/run_pretraining.py --train_dir recordings/ --model_size tiny --max_length 128 \
        --num_train_epochs 50 --output_dir ssast-tiny
    torchrun --nproc_per_node 2 examples/run_pretraining.py RECIPE.json [--overrides]

The data is unlabelled audio from one source: a folder of audio files (an audiofolder; class folders and label
columns are ignored), a CSV/JSON-lines file of paths (`--train_file`), or a `datasets` data set
(`--dataset_name`, also `--streaming`); `--validation_*` adds held-out audio whose losses are reported. The
feature extractor's mean and std are computed on the training audio. The model masks `--mask_patches` patches of
each clip and learns to pick (InfoNCE) and reconstruct (MSE) them; both losses and the discriminative accuracy
are logged, plotted (pretraining_curves.png) and written to all_results.json.

The saved folder fine-tunes like any AST checkpoint; SSAST fine-tunes with overlapping patches and the mean of
the patch tokens, which the saved config already selects (`pooling="mean"`):

    python examples/run_audio_classification.py --model_name_or_path ssast-tiny --time_stride 10 \
        --frequency_stride 10 --train_dir labelled/train --validation_dir labelled/validation
"""

from __future__ import annotations

import logging
import math
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import transformers
from transformers import Trainer, TrainingArguments, set_seed

from ast_hf import ASTConfig, ASTFeatureExtractor, ASTForPreTraining, training
from ast_hf.audio_io import decode_audio

logger = logging.getLogger("run_pretraining")
PARTS = ("discriminative_loss", "generative_loss", "discriminative_accuracy")
# The two variants of the SSAST paper: 16x16 patches (cluster masking) and 128x2 frame patches (random masking).
VARIANTS = {"patch": dict(patch_size=16, frequency_stride=16, time_stride=16, masking="cluster"),
            "frame": dict(patch_size=[128, 2], frequency_stride=128, time_stride=2, masking="random")}
STATS_CLIPS = 2000  # clips of a stream that the fbank statistics are computed on


@dataclass
class PretrainingArguments:
    """The SSAST settings of a run (see ast_hf.ASTForPreTraining)."""

    variant: str = field(default="patch", metadata={
        "help": "patch: 16x16 patches, cluster masking | frame: 128x2 patches (whole mel axis), random masking"})
    mask_patches: int | None = field(default=None, metadata={
        "help": "patches masked per clip (default: 400/512 of a max_length clip's patches, the authors' ratio)"})
    masking: str | None = field(default=None, metadata={"help": "cluster | random (default: the variant's)"})
    discriminative_loss_weight: float = field(default=1.0, metadata={"help": "weight of the InfoNCE loss"})
    generative_loss_weight: float = field(default=10.0, metadata={"help": "weight of the reconstruction MSE"})
    fine_tuning_pooling: str = field(default="mean", metadata={
        "help": "pooling written into the saved config for fine-tuning: mean (SSAST's default) | cls"})


class PretrainingTrainer(Trainer):
    """Trainer that logs SSAST's two losses and the discriminative accuracy beside the joint loss, averaged over
    the steps since the last log (and over the processes), and evaluates the losses alone."""

    def __init__(self, *args: Any, eval_collator: Any = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.eval_collator = eval_collator  # plain batches (the training collator crops at random)
        self._sums: dict[str, torch.Tensor | None] = {"train": None, "eval": None}
        self.run_totals: torch.Tensor | None = None  # this process's training sums over the whole run

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        outputs = model(**inputs)
        mode = "train" if model.training else "eval"
        values = [outputs[name] for name in PARTS]
        # Weighted by the clips of the batch, as the Trainer weighs its evaluation loss.
        reference, clips = outputs.loss.detach().float(), float(inputs["input_values"].shape[0])
        row = torch.stack([reference.new_tensor(math.nan) if value is None else value.detach().float() * clips
                           for value in values] + [reference.new_tensor(clips)])  # (parts + clips,)
        self._sums[mode] = row if self._sums[mode] is None else self._sums[mode] + row
        if mode == "train":
            self.run_totals = row if self.run_totals is None else self.run_totals + row
        return (outputs.loss, outputs) if return_outputs else outputs.loss

    def run_averages(self) -> dict[str, float]:
        """The training losses and accuracy averaged over every step this run trained (and over the processes),
        as the Trainer's `train_loss` averages the joint loss."""
        totals = self.run_totals
        if totals is None:
            return {}
        if self.args.world_size > 1:
            totals = self.accelerator.reduce(totals.to(self.args.device), reduction="sum")
        return {f"train_{name}": round(total / float(totals[-1]), 4)
                for name, total in zip(PARTS, totals[:-1].tolist(), strict=True) if not math.isnan(total)}

    def prediction_step(self, model, inputs, prediction_loss_only, ignore_keys=None):
        inputs = self._prepare_inputs(inputs)
        with torch.no_grad(), self.compute_loss_context_manager():
            loss = self.compute_loss(model, inputs)
        return loss.detach(), None, None

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        for mode, key, prefix in (("train", "loss", ""), ("eval", "eval_loss", "eval_")):
            sums = self._sums[mode]
            if key not in logs or sums is None:
                continue
            if self.args.world_size > 1:  # every process logs at the same steps
                sums = self.accelerator.reduce(sums.to(self.args.device), reduction="sum")
            for name, total in zip(PARTS, sums[:-1].tolist(), strict=True):
                if not math.isnan(total):
                    logs[prefix + name] = round(total / float(sums[-1]), 4)
            self._sums[mode] = None
        super().log(logs, start_time)

    def get_eval_dataloader(self, eval_dataset=None):
        train_collator, self.data_collator = self.data_collator, self.eval_collator
        try:
            return super().get_eval_dataloader(eval_dataset)
        finally:
            self.data_collator = train_collator

    def get_train_dataloader(self):
        if not isinstance(self.train_dataset, training.StreamingClips):
            return super().get_train_dataloader()
        return training.stream_dataloader(self.train_dataset, self.data_collator, self.args)


def check_arguments(model_args, data_args, ssast, training_args, sources) -> None:
    """Refuse what pretraining does not take, each problem with its fix."""
    problems = []
    if "label_column_name" in sources or "labels_file" in sources or "label_separator" in sources:
        problems.append("Pretraining learns from the audio alone and takes no labels (--label_column_name, "
                        "--labels_file, --label_separator); leave them out, and fine-tune on labels afterwards "
                        "with examples/run_audio_classification.py --model_name_or_path OUTPUT_DIR.")
    for flag in ("deit_name_or_path", "freeze_encoder", "cross_validation_folds", "fold_column_name"):
        if flag in sources:
            problems.append(f"--{flag} is a fine-tuning setting; pretraining does not take it.")
    if ssast.variant not in VARIANTS:
        problems.append(f"--variant {ssast.variant!r} is not one of {', '.join(VARIANTS)}.")
    if not model_args.model_size and not model_args.model_name_or_path:
        problems.append("Give --model_size tiny|small|base (a new encoder, as the authors pretrain) or "
                        "--model_name_or_path (continue from a checkpoint).")
    if model_args.model_size and model_args.model_size not in training.MODEL_SIZES:
        problems.append(f"--model_size {model_args.model_size!r} is not one of {sorted(training.MODEL_SIZES)}.")
    if model_args.model_size and model_args.model_name_or_path:
        problems.append("Give --model_size or --model_name_or_path, not both.")
    if data_args.streaming and training_args.max_steps <= 0:
        problems.append("--streaming reads the data endlessly: give --max_steps.")
    if ssast.fine_tuning_pooling not in ("mean", "cls"):
        problems.append(f"--fine_tuning_pooling {ssast.fine_tuning_pooling!r} is not mean or cls.")
    if problems:
        raise ValueError("\n".join(problems))


def load_unlabelled_data(data_args, training_args, cache_dir) -> tuple[dict[str, Any], str]:
    """The training (and evaluation) audio, unlabelled: splits with an audio column and `_row` ids."""
    training.check_one_data_source(data_args, True)
    raw = training.load_audio_datasets(data_args, cache_dir=cache_dir, stream_train=data_args.streaming,
                                       labelled=False, optional_validation=True)
    for name in list(raw):
        if name == "train" and data_args.streaming:
            if data_args.max_train_samples:
                raw[name] = raw[name].take(data_args.max_train_samples)
            continue
        count = data_args.max_train_samples if name == "train" else data_args.max_eval_samples
        if count and count < len(raw[name]):
            raw[name] = raw[name].shuffle(seed=training_args.seed).select(range(count))
        if name == "train":
            raw[name] = raw[name].add_column("_row", list(range(len(raw[name]))))  # seeds random crops
    description = data_args.dataset_name or data_args.train_dir or data_args.train_file
    return raw, description


def training_statistics(extractor: ASTFeatureExtractor, train: Any, data_args) -> ASTFeatureExtractor:
    """The extractor with the training audio's fbank mean and std (of its first clips, for a stream), unless
    --dataset_mean and --dataset_std give them."""
    import datasets

    from ast_hf import compute_normalization_stats

    if data_args.dataset_mean is not None and data_args.dataset_std is not None:
        return extractor
    if not isinstance(train, datasets.IterableDataset):
        return training.with_training_statistics(extractor, train, data_args.audio_column_name, logger.info)
    audio, column = datasets.Audio(sampling_rate=extractor.sampling_rate), data_args.audio_column_name
    clips = (decode_audio(audio.decode_example(row[column]), extractor.sampling_rate)
             for row in train.take(STATS_CLIPS))
    mean, std = compute_normalization_stats(clips, extractor)
    logger.info("fbank mean %.4f std %.4f (the stream's first %d clips at most)", mean, std, STATS_CLIPS)
    return ASTFeatureExtractor(**{**extractor.to_dict(), "mean": mean, "std": std})


def build_model(model_args, data_args, ssast) -> tuple[ASTForPreTraining, ASTFeatureExtractor]:
    """A new encoder of --model_size with SSAST heads, or a checkpoint to continue from; and its extractor."""
    overrides = training.parse_config_overrides(model_args.config_overrides, pretrained=not model_args.model_size)
    settings = dict(discriminative_loss_weight=ssast.discriminative_loss_weight,
                    generative_loss_weight=ssast.generative_loss_weight)
    if ssast.masking:
        settings["masking"] = ssast.masking
    extractor = None
    if model_args.model_name_or_path:
        from ast_hf.checkpoint_files import check_ast_checkpoint

        check_ast_checkpoint(model_args.model_name_or_path, "--model_name_or_path")
        # An AST trained with overlapping patches (a fine-tuned model) continues with patches side by side, as
        # SSAST pretrains: its positional embeddings are resampled to that grid.
        config = ASTConfig.from_pretrained(model_args.model_name_or_path, cache_dir=model_args.cache_dir,
                                           **overrides)
        config.frequency_stride = model_args.frequency_stride or config.patch_shape[0]
        config.time_stride = model_args.time_stride or config.patch_shape[1]
        config.max_length = data_args.max_length or config.max_length
        model = ASTForPreTraining.from_pretrained(model_args.model_name_or_path, config=config,
                                                  attn_implementation=model_args.attn_implementation,
                                                  cache_dir=model_args.cache_dir)
        for key, value in settings.items():
            setattr(model.config, key, value)
        try:
            extractor = ASTFeatureExtractor.from_pretrained(model_args.model_name_or_path,
                                                            cache_dir=model_args.cache_dir)
        except OSError:
            pass
    else:
        variant = dict(VARIANTS[ssast.variant])
        masking = variant.pop("masking")
        if data_args.max_length is None:
            logger.warning("--max_length is not given: clips are padded or cut to 1024 frames (10.24 s, AudioSet's "
                           "length), and masked patches of padding teach nothing; give --max_length in frames (100 a "
                           "second) to fit your recordings.")
        geometry = {"max_length": data_args.max_length or 1024}
        config = ASTConfig(**{**training.MODEL_SIZES[model_args.model_size], "layer_norm_eps": 1e-6,
                              **variant, **geometry, "masking": masking, **settings, **overrides})
        grid_f, grid_t = config.patch_grid
        config.mask_patches = (max(1, round(grid_f * grid_t * 400 / 512)) if ssast.mask_patches is None
                               else ssast.mask_patches)
        model = ASTForPreTraining._from_config(config, attn_implementation=model_args.attn_implementation)
    if ssast.mask_patches is not None:
        if ssast.mask_patches < 1:
            raise ValueError(f"--mask_patches {ssast.mask_patches} must be >= 1 (the authors mask 78% of a clip).")
        model.config.mask_patches = ssast.mask_patches
    model.config.pooling = ssast.fine_tuning_pooling
    model._check_geometry()  # before any data is read: overlapping patches, too many masked patches
    config = model.config
    base = extractor.to_dict() if extractor is not None else {}
    base.update(max_length=config.max_length, num_mel_bins=config.num_mel_bins,
                pad_to_max_length=data_args.pad_to_max_length, return_attention_mask=not data_args.pad_to_max_length)
    if data_args.dataset_mean is not None:
        base["mean"] = data_args.dataset_mean
    if data_args.dataset_std is not None:
        base["std"] = data_args.dataset_std
    return model, ASTFeatureExtractor(**base)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    model_args, data_args, ssast, training_args, sources = training.parse_arguments(
        (training.ModelArguments, training.DataArguments, PretrainingArguments, TrainingArguments),
        sys.argv[1:] if argv is None else argv, "outputs/run_pretraining",
        extra_defaults=["--use_cpu", "true", "--ddp_backend", "gloo"] if training.cpu_ddp_requested() else
        ["--use_cpu", "true"] if not torch.cuda.is_available() else ())
    if "pad_to_max_length" not in sources:  # the authors pretrain on clips of one length
        data_args.pad_to_max_length = True
    if "logging_steps" not in sources:  # curves with points from the first minutes on (the Trainer's default: 500)
        training_args.logging_steps = 20
    check_arguments(model_args, data_args, ssast, training_args, sources)
    training_args.remove_unused_columns = False  # the collator reads the raw audio column
    training_args.prediction_loss_only = True
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=logging.INFO
                        if training_args.process_index == 0 else logging.WARNING)
    transformers.utils.logging.set_verbosity_warning()
    set_seed(training_args.seed)
    with training_args.main_process_first(desc="dataset preparation"):
        raw, description = load_unlabelled_data(data_args, training_args, model_args.cache_dir)
    model, extractor = build_model(model_args, data_args, ssast)
    extractor = training_statistics(extractor, raw["train"], data_args)
    config = model.config
    logger.info("SSAST %s variant: %s patches, grid %s at %d frames, %d masked per clip (%s), loss %g x InfoNCE + "
                "%g x MSE; %d parameters", ssast.variant, config.patch_shape, config.patch_grid, config.max_length,
                config.mask_patches, config.masking, config.discriminative_loss_weight,
                config.generative_loss_weight, model.num_parameters())
    collator, eval_collator = training.make_collators(extractor, 0, False, data_args, training.RecipeArguments(),
                                                      training_args.seed)
    callbacks = [training.EpochCallback(collator)]
    if data_args.streaming:
        raw["train"] = training.StreamingClips(
            raw["train"], audio_column=data_args.audio_column_name, label_column=None, label2id={},
            multi_label=False, sampling_rate=extractor.sampling_rate,
            batch_size=training_args.per_device_train_batch_size, seed=training_args.seed,
            buffer_size=data_args.shuffle_buffer_size, rank=training_args.process_index,
            world_size=training_args.world_size)
        training_args.ignore_data_skip = True  # StreamResumeCallback skips, without decoding
        callbacks.append(training.StreamResumeCallback(raw["train"]))
    logger.info("data: %s; %s", description, ", ".join(
        f"{len(raw[name])} {role} clips" if hasattr(raw[name], "__len__") else f"{role} clips streamed"
        for name, role in (("train", "training"), ("validation", "evaluation")) if name in raw))
    resume = training.resolve_checkpoint(training_args.resume_from_checkpoint, training_args.output_dir)
    trainer = PretrainingTrainer(model=model, args=training_args, train_dataset=raw["train"],
                                 eval_dataset=raw.get("validation"), data_collator=collator,
                                 eval_collator=eval_collator, processing_class=extractor, callbacks=callbacks)
    if resume:
        logger.info("resuming from %s", resume)
    metrics = training.train_or_finish(trainer, resume, logger.info)
    trainer.save_model()
    extractor.save_pretrained(training_args.output_dir)
    trainer.save_state()
    if "validation" in raw:
        metrics.update(trainer.evaluate())
    metrics.update(trainer.run_averages())  # averages over the steps of this run, as train_loss
    history = trainer.state.log_history
    for name in PARTS:  # where training ended: the last logging window
        logged = [entry[name] for entry in history if name in entry]
        if logged:
            metrics[f"final_{name}"] = logged[-1]
    if trainer.is_world_process_zero():
        output_dir = Path(training_args.output_dir)
        training.write_json(output_dir / "all_results.json", metrics)
        training.plot_pretraining_curves(history, output_dir / "pretraining_curves.png")
        write_card(output_dir, description, config, metrics)
        training.print_metrics("pretraining", metrics)
    return metrics


def write_card(output_dir: Path, description: str, config: ASTConfig, metrics: dict[str, Any]) -> None:
    """A short README.md: what the checkpoint is and how to fine-tune it."""
    lines = [
        "---", "library_name: transformers", "tags:", "- audio", "- ast_hf", "- ssast", "- self-supervised", "---",
        "", f"# {output_dir.name}", "",
        "An Audio Spectrogram Transformer encoder pretrained without labels by masked spectrogram patch modelling "
        "(SSAST, Gong et al., AAAI 2022) with ast_hf's `examples/run_pretraining.py`.", "",
        f"- Data: {description}",
        f"- Patches: {config.patch_shape[0]} mel bins x {config.patch_shape[1]} frames, grid {config.patch_grid} at "
        f"{config.max_length} frames; {config.mask_patches} masked per clip ({config.masking} masking)",
        f"- Loss: {config.discriminative_loss_weight:g} x InfoNCE + {config.generative_loss_weight:g} x MSE",
    ]
    for name, label in (("final_discriminative_accuracy", "final training discriminative accuracy"),
                        ("eval_discriminative_accuracy", "evaluation discriminative accuracy"),
                        ("eval_generative_loss", "evaluation reconstruction MSE")):
        if name in metrics:
            lines.append(f"- {label.capitalize()}: {metrics[name]:.4f}")
    # Fine-tuning strides: overlapping patches, as the authors fine-tune (10 for 16x16 patches, 1 frame for frames).
    strides = "--time_stride 10 --frequency_stride 10" if config.patch_shape[0] == config.patch_shape[1] else \
        f"--time_stride 1 --frequency_stride {config.frequency_stride}"
    lines += ["", "It has no classifier: fine-tune it on labelled audio, e.g.", "", "```bash",
              f"python examples/run_audio_classification.py --model_name_or_path {output_dir.name} {strides} "
              "--train_dir labelled/train --validation_dir labelled/validation",
              "```", "", f"The saved config pools the {'patch tokens' if config.pooling == 'mean' else 'CLS tokens'} "
              "for classification (`config.pooling`; the fine-tuning scripts' `--pooling` changes it).", ""]
    (output_dir / "README.md").write_text("\n".join(lines))


if __name__ == "__main__":
    training.run_script(main)
