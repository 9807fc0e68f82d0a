"""Fine-tune an Audio Spectrogram Transformer with a plain accelerate loop (same data, augmentations, schedule and
metrics as run_audio_classification.py, from ast_hf.training).

    python examples/run_audio_classification_no_trainer.py examples/recipes/espeak_commands.json
    accelerate launch --multi_gpu --num_processes 2 examples/run_audio_classification_no_trainer.py RECIPE.json
    torchrun --nproc_per_node 2 examples/run_audio_classification_no_trainer.py RECIPE.json

A recipe JSON file given first provides defaults (Trainer-only keys in it are skipped with a warning); flags after
it override. `--checkpointing_steps N` saves the loop state every N updates; `--resume_from_checkpoint DIR`
(or `last`) continues from one.

Optimisation flags carry the Trainer's names and defaults (LoopArguments below): torch's AdamW with
--weight_decay on every weight but biases and LayerNorms, --adam_beta1/--adam_beta2/--adam_epsilon, a
--lr_scheduler_type schedule from transformers (linear by default) after --warmup_steps (updates, or a fraction of
all updates below 1), gradients clipped to --max_grad_norm, --label_smoothing_factor. A recipe's
--reference_optimizer (Adam with L2 decay) and --multistep_start_epoch (warm-up + MultiStepLR) replace the
optimiser and the schedule; --lr_scheduler_type given together with --multistep_start_epoch is refused. There is no
--optim: the loop uses AdamW, or the reference's Adam.
"""

from __future__ import annotations

import logging
import math
import os
import re
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator
from accelerate.utils import DataLoaderConfiguration, DistributedType, set_seed
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from ast_hf import training

logger = logging.getLogger("run_audio_classification_no_trainer")


@dataclass
class LoopArguments:
    output_dir: str = field(default="outputs/run_audio_classification_no_trainer")
    learning_rate: float = field(default=5e-5)
    num_train_epochs: int = field(default=3)
    per_device_train_batch_size: int = field(default=8)
    per_device_eval_batch_size: int = field(default=8)
    gradient_accumulation_steps: int = field(default=1)
    # Optimisation, with the Trainer's names and defaults: AdamW (torch) with decoupled weight decay on every weight
    # but biases and LayerNorms, a linear decay after the warm-up, gradients clipped to norm 1. A recipe's
    # reference_optimizer / multistep_start_epoch replace the optimiser / schedule (ast_hf.training).
    weight_decay: float = field(default=0.0)
    adam_beta1: float = field(default=0.9)
    adam_beta2: float = field(default=0.999)
    adam_epsilon: float = field(default=1e-8)
    max_grad_norm: float = field(default=1.0, metadata={"help": "clip the gradient norm (0 = no clipping)"})
    label_smoothing_factor: float = field(default=0.0, metadata={"help": "label smoothing (single-label)"})
    lr_scheduler_type: str = field(default="linear", metadata={
        "help": "a transformers schedule: linear, cosine, constant, constant_with_warmup, polynomial, ..."})
    warmup_steps: float = field(default=0, metadata={
        "help": "linear warm-up: a number of updates, or a fraction of all updates when below 1"})
    seed: int = field(default=42)
    logging_steps: int = field(default=20)
    checkpointing_steps: int = field(default=0, metadata={"help": "save the loop state every N updates (0 = never)"})
    resume_from_checkpoint: str | None = field(default=None, metadata={
        "help": "a step_N folder of this script, or 'last' for the newest complete one in --output_dir"})
    report_to: str = field(default="tensorboard", metadata={"help": "tensorboard | none"})
    # The Trainer's names: decoding, features and augmentation in worker processes, so that a GPU is not kept waiting.
    dataloader_num_workers: int = field(default=0, metadata={
        "help": "processes preparing batches (decoding, features, augmentation) while the model trains; 0: in the "
                "main process"})
    dataloader_pin_memory: bool = field(default=True, metadata={
        "help": "page-locked batches for faster copies to the GPU (used only where CUDA is available)"})
    # Mixed precision under the Trainer's flag names, passed to accelerate as mixed_precision="bf16" / "fp16".
    bf16: bool = field(default=False, metadata={
        "help": "bfloat16 mixed precision (autocast): GPUs, and CPUs with native bfloat16 (AVX512-BF16 or AMX)"})
    fp16: bool = field(default=False, metadata={"help": "float16 mixed precision (autocast, loss scaling): GPUs"})
    do_train: bool = field(default=True)
    do_eval: bool = field(default=True)
    push_to_hub: bool = field(default=False)
    hub_model_id: str | None = field(default=None)


ARGUMENT_CLASSES = (training.ModelArguments, training.DataArguments, training.RecipeArguments, LoopArguments)


def save_checkpoint(accelerator: Accelerator, folder: Path, update: int) -> None:
    """accelerate's save_state into a staging folder, renamed into place once every process has written its part:
    a run killed while saving leaves a `.partial` folder, never a step_N folder that --resume_from_checkpoint would
    take for complete."""
    staging = folder.with_name(folder.name + ".partial")
    accelerator.save_state(str(staging))
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        training.write_json(staging / "loop_state.json", {"update": update})
        if folder.exists():  # left by an earlier run into the same --output_dir
            shutil.rmtree(folder)
        os.replace(staging, folder)
    accelerator.wait_for_everyone()


def main(argv: list[str] | None = None) -> dict[str, Any]:
    model_args, data_args, recipe, args, sources = training.parse_arguments(
        ARGUMENT_CLASSES, sys.argv[1:] if argv is None else argv, LoopArguments.output_dir)
    training.check_argument_conflicts(recipe, sources)
    training.check_cross_validation(data_args, sources, supported=False)
    training.check_model_source(model_args)
    training.check_streaming_arguments(data_args, 0, sources, recipe, supported=False)
    training.warn_inert_settings(recipe, args.num_train_epochs, data_args.max_length)
    tracking = args.report_to not in ("none", "")
    # The seedable sampler draws epoch e's order from (seed, e): a run resumed mid-epoch sees the same order.
    if args.bf16 and args.fp16:
        raise ValueError("--bf16 and --fp16 both ask for mixed precision; give one.")
    accelerator = Accelerator(gradient_accumulation_steps=args.gradient_accumulation_steps,
                              mixed_precision="bf16" if args.bf16 else "fp16" if args.fp16 else "no",
                              log_with=args.report_to if tracking else None, project_dir=args.output_dir,
                              dataloader_config=DataLoaderConfiguration(use_seedable_sampler=True),
                              cpu=training.cpu_ddp_requested())
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        level=logging.INFO if accelerator.is_main_process else logging.WARNING)
    set_seed(args.seed)
    train = training.train_requested(args.do_train, sources)
    training.follow_model_convention(model_args, data_args, sources, train)
    with accelerator.main_process_first():
        data = training.prepare_data(data_args, args.seed, model_args.cache_dir,
                                     model_labels=training.pretrained_labels(model_args), train=train)
    raw, labels, multi_label, description = data.raw, data.labels, data.multi_label, data.description
    logger.info("data: %s; %s, %d labels; %d process(es)", description, ", ".join(
        f"{len(raw[name])} {role} clips" for name, role in (("train", "training"), ("validation", "evaluation"))
        if name in raw), len(labels), accelerator.num_processes)
    args.do_train, args.do_eval = training.resolve_run_steps(args.do_train, args.do_eval, sources,
                                                             "validation" in raw,
                                                             trained_model=bool(model_args.model_name_or_path))

    parts = training.build_run(model_args, data_args, recipe, raw, labels, multi_label, args.seed,
                               args.label_smoothing_factor, describe=logger.info)
    model, extractor, train_collator = parts.model, parts.extractor, parts.train_collator
    generator = torch.Generator().manual_seed(args.seed)
    sampler = None
    if parts.sample_weights is not None:  # the same draws on every process; accelerate shards the batches
        sampler = training.balanced_sampler(parts.sample_weights, args.seed)
    if args.dataloader_num_workers < 0:
        raise ValueError(f"--dataloader_num_workers {args.dataloader_num_workers}: pass 0 (batches made in the main "
                         "process) or more worker processes.")
    # Workers are started anew each epoch (not persistent), so that they see the collator's epoch.
    loading = {"num_workers": args.dataloader_num_workers,
               "pin_memory": args.dataloader_pin_memory and torch.cuda.is_available()}
    train_loader = DataLoader(raw["train"] if args.do_train else [], batch_size=args.per_device_train_batch_size,
                              shuffle=sampler is None and args.do_train, sampler=sampler, collate_fn=train_collator,
                              generator=generator, **loading)
    eval_loader = DataLoader(raw["validation"], batch_size=args.per_device_eval_batch_size,
                             collate_fn=parts.eval_collator, **loading) if args.do_eval else None
    optimizer = training.build_optimizer(model, args.learning_rate, (args.adam_beta1, args.adam_beta2),
                                         args.adam_epsilon, args.weight_decay, reference=recipe.reference_optimizer)
    model, optimizer, train_loader = accelerator.prepare(model, optimizer, train_loader)
    if eval_loader is not None:
        eval_loader = accelerator.prepare(eval_loader)
    # Stepped once per optimiser update, outside accelerate's wrapper (which steps it once per process).
    updates_per_epoch = math.ceil(len(train_loader) / args.gradient_accumulation_steps)
    total_updates = updates_per_epoch * args.num_train_epochs
    scheduler = training.build_scheduler(optimizer, recipe, args.lr_scheduler_type,
                                         training.warmup_steps_of(args.warmup_steps, total_updates), total_updates,
                                         updates_per_epoch)
    accelerator.register_for_checkpointing(scheduler)
    if tracking:
        accelerator.init_trackers("runs", config={k: v for k, v in {**vars(recipe), **vars(args)}.items()
                                                    if isinstance(v, (int, float, str, bool))})

    if accelerator.distributed_type == DistributedType.FSDP and recipe.average_end_epoch > 0:
        raise ValueError(f"FSDP with average_end_epoch={recipe.average_end_epoch}: weight averaging keeps full copies "
                         "of the weights in each process, which sharding is meant to avoid; set --average_end_epoch 0 "
                         "for an FSDP run.")
    averager = training.WeightAverager(recipe.average_start_epoch, recipe.average_end_epoch)
    accelerator.register_for_checkpointing(averager)
    update, start_epoch, skip_batches = 0, 0, 0
    args.resume_from_checkpoint = training.resolve_checkpoint(args.resume_from_checkpoint, args.output_dir)
    if args.resume_from_checkpoint:
        accelerator.load_state(args.resume_from_checkpoint)
        match = re.search(r"step_(\d+)", os.path.basename(os.path.normpath(args.resume_from_checkpoint)))
        if match is None:
            raise ValueError(f"--resume_from_checkpoint {args.resume_from_checkpoint!r} is not a step_N folder "
                             "written by this script.")
        update = int(match.group(1))
        start_epoch, skip_batches = divmod(update * args.gradient_accumulation_steps, len(train_loader))
        logger.info("resumed at update %d (epoch %d, batch %d)", update, start_epoch, skip_batches)

    history: list[dict[str, Any]] = []
    progress = tqdm(total=total_updates, initial=update, disable=not accelerator.is_local_main_process)
    metrics: dict[str, Any] = {}
    for epoch in range(start_epoch, args.num_train_epochs if args.do_train else 0):
        model.train()
        train_collator.epoch = epoch
        if hasattr(train_loader, "set_epoch"):
            train_loader.set_epoch(epoch)
        loader = train_loader
        if epoch == start_epoch and skip_batches:
            loader = accelerator.skip_first_batches(train_loader, skip_batches)
        running = []
        for batch in loader:
            with accelerator.accumulate(model):
                loss = model(**batch).loss
                accelerator.backward(loss)
                if accelerator.sync_gradients and args.max_grad_norm > 0:
                    accelerator.clip_grad_norm_(model.parameters(), args.max_grad_norm)
                optimizer.step()
                optimizer.zero_grad()
            running.append(loss.detach())
            if not accelerator.sync_gradients:
                continue
            scheduler.step()
            update += 1
            progress.update(1)
            if update % args.logging_steps == 0:
                mean_loss = float(accelerator.gather(torch.stack(running).mean()[None]).mean())
                record = {"loss": mean_loss, "learning_rate": scheduler.get_last_lr()[0],
                          "epoch": epoch + (update - epoch * updates_per_epoch) / updates_per_epoch}
                history.append(record)
                if tracking:
                    accelerator.log({"train/loss": mean_loss, "train/learning_rate": record["learning_rate"]},
                                    step=update)
                running = []
            if args.checkpointing_steps and update % args.checkpointing_steps == 0:
                save_checkpoint(accelerator, Path(args.output_dir) / f"step_{update}", update)
        averager.update(accelerator.unwrap_model(model), epoch + 1)
        if eval_loader is not None:
            metrics, _, _ = training.evaluate_with_accelerator(model, eval_loader, accelerator, multi_label)
            history.append({**metrics, "epoch": epoch + 1})
            logger.info("epoch %d: %s", epoch + 1, {k: round(v, 4) for k, v in metrics.items()})
            if tracking:
                accelerator.log({k.replace("eval_", "eval/"): v for k, v in metrics.items()}, step=update)
    progress.close()

    accelerator.wait_for_everyone()
    unwrapped = accelerator.unwrap_model(model)
    if averager.apply(unwrapped):
        metrics["averaged_epochs"] = averager.count
    output_dir = Path(args.output_dir)
    evaluation = None
    if eval_loader is not None:
        final, *evaluation = training.evaluate_with_accelerator(model, eval_loader, accelerator, multi_label)
        metrics.update(final)
    metrics["train_updates"] = update
    # Every process takes part: under FSDP the full weights are gathered from the shards (a collective), where
    # unwrapped.state_dict() would hold each process's shard only.
    state_dict = accelerator.get_state_dict(model) if args.do_train else None
    if accelerator.is_main_process and args.do_train:  # no model for a run that trained nothing
        unwrapped.save_pretrained(output_dir, state_dict=state_dict, save_function=accelerator.save)
        extractor.save_pretrained(output_dir)
        training.write_json(output_dir / "log_history.json", {"log_history": history})
    training.finish_run(
        output_dir, is_main_process=accelerator.is_main_process, process_index=accelerator.process_index,
        world_size=accelerator.num_processes, trained=args.do_train, metrics=metrics, log_history=history,
        evaluation=evaluation, labels=labels, multi_label=multi_label,
        record=training.run_record(recipe, data_args, model_args, args, unwrapped, extractor), description=description,
        model_name=output_dir.name, base_model=model_args.model_name_or_path or model_args.deit_name_or_path,
        examples_collated=train_collator.examples_seen, data_facts=data.facts,
        push_repo=(args.hub_model_id or output_dir.name) if args.push_to_hub else None)
    if tracking:
        accelerator.end_training()
    logger.info("final: %s", {k: v for k, v in metrics.items() if k.startswith("eval_")})
    return metrics


if __name__ == "__main__":
    training.run_script(main)
