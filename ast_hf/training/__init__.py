"""Fine-tuning pieces shared by examples/run_audio_classification.py (Trainer) and
examples/run_audio_classification_no_trainer.py (accelerate), one module per concern:

- `arguments`: the argument dataclasses, recipe files + flags, conflicts and run steps;
- `data`: loading and checking the data; the embedded espeak-ng data;
- `labels`: label cells, label sets and encoding by name;
- `augmentation`: mixup, SpecAugment, noise and roll, pure functions;
- `collator`: rows -> batches, the augmentations drawn per batch;
- `sampling`: the reference's balanced sampler;
- `streaming`: --streaming, the training data read as a stream, a part per process;
- `optimization`: optimiser, schedule, weight averaging;
- `metrics`: accuracy; mAP, mAUC, d-prime;
- `plots`: training curves, confusion matrix;
- `model_setup`: the run's model and feature extractor;
- `checkpoints`: resuming, CPU data parallel;
- `callbacks`: the Trainer callbacks and stream DataLoader both Trainer scripts use;
- `publishing`: results, model card, push;
- `runs`: the setup and the end of a run that both examples share (`build_run`, `finish_run`).

Everything public is importable from `ast_hf.training` itself.
"""

from .arguments import (
    DataArguments,
    ModelArguments,
    RecipeArguments,
    check_argument_conflicts,
    check_cross_validation,
    parse_arguments,
    resolve_run_steps,
    train_requested,
    warn_inert_settings,
)
from .augmentation import draw_mask, mask_band, mix_waveforms, noise_and_roll
from .callbacks import EpochCallback, StreamResumeCallback, stream_dataloader
from .checkpoints import CHECKPOINT_MARKERS, cpu_ddp_requested, resolve_checkpoint, train_or_finish
from .collator import AudioCollator, make_collators
from .data import (
    ModelLabels,
    PreparedData,
    check_audio_files,
    check_one_data_source,
    embedded_data,
    load_audio_datasets,
    prepare_data,
    split_sources,
)
from .labels import (
    check_split_labels,
    encode_label,
    encode_label_column,
    label_cell,
    label_names,
    split_label_names,
)
from .metrics import (
    classification_metric,
    classification_scores,
    compute_metrics_fn,
    confusion_matrix,
    multi_label_scores,
)
from .model_setup import (
    MODEL_SIZES,
    check_model_source,
    follow_model_convention,
    freeze_encoder,
    parse_config_overrides,
    prepare_model_and_extractor,
    pretrained_labels,
)
from .optimization import (
    WeightAverager,
    build_optimizer,
    build_scheduler,
    recipe_lr_lambda,
    reference_adam,
    warmup_steps_of,
)
from .plots import (
    plot_confusion_matrix,
    plot_pretraining_curves,
    plot_training_curves,
    save_confusion_matrix,
    training_curves_figure,
)
from .publishing import push_output_dir, run_record, write_json, write_model_card
from .runs import (
    RunParts,
    build_run,
    evaluate_with_accelerator,
    finish_run,
    print_metrics,
    run_script,
    with_training_statistics,
)
from .sampling import balanced_sample_weights, balanced_sampler, dataset_sample_weights
from .streaming import StreamingClips, check_streaming_arguments, streaming_clips

__all__ = [
    "AudioCollator",
    "EpochCallback",
    "StreamResumeCallback",
    "stream_dataloader",
    "train_or_finish",
    "balanced_sample_weights",
    "balanced_sampler",
    "build_optimizer",
    "build_run",
    "build_scheduler",
    "check_argument_conflicts",
    "check_audio_files",
    "check_cross_validation",
    "check_model_source",
    "check_one_data_source",
    "check_split_labels",
    "check_streaming_arguments",
    "CHECKPOINT_MARKERS",
    "classification_metric",
    "classification_scores",
    "compute_metrics_fn",
    "confusion_matrix",
    "cpu_ddp_requested",
    "DataArguments",
    "dataset_sample_weights",
    "draw_mask",
    "embedded_data",
    "encode_label",
    "encode_label_column",
    "evaluate_with_accelerator",
    "finish_run",
    "follow_model_convention",
    "freeze_encoder",
    "label_cell",
    "label_names",
    "load_audio_datasets",
    "make_collators",
    "mask_band",
    "mix_waveforms",
    "MODEL_SIZES",
    "ModelArguments",
    "ModelLabels",
    "multi_label_scores",
    "noise_and_roll",
    "parse_arguments",
    "parse_config_overrides",
    "plot_confusion_matrix",
    "plot_pretraining_curves",
    "plot_training_curves",
    "prepare_data",
    "prepare_model_and_extractor",
    "PreparedData",
    "pretrained_labels",
    "print_metrics",
    "run_script",
    "push_output_dir",
    "recipe_lr_lambda",
    "RecipeArguments",
    "reference_adam",
    "resolve_checkpoint",
    "resolve_run_steps",
    "run_record",
    "RunParts",
    "save_confusion_matrix",
    "split_label_names",
    "split_sources",
    "streaming_clips",
    "StreamingClips",
    "train_requested",
    "training_curves_figure",
    "warmup_steps_of",
    "warn_inert_settings",
    "WeightAverager",
    "with_training_statistics",
    "write_json",
    "write_model_card",
]
