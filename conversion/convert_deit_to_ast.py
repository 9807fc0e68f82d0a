"""DeiT / ViT (ImageNet) -> Audio Spectrogram Transformer, the transfer of Gong, Chung, Glass (Interspeech 2021).

    python conversion/convert_deit_to_ast.py --deit SRC --output_dir OUT [--max_length 1024] [--dataset audioset]

SRC is a local directory or Hub id of a transformers DeiT/ViT model (config.json + weights:
DeiTForImageClassificationWithTeacher, DeiTModel, ViTModel, ...) or a timm / original-DeiT state dict file
(.pth, .bin, .safetensors; bare or wrapped as {"model": ...}). The adaptation is that of the authors' code: channel
sum of the patch projection, centre cut / bilinear interpolation of the positional grid (time first), cls and
distillation tokens kept, a new LayerNorm + Linear head (see ast_hf/checkpoint_surgery.py). The output directory is
written atomically and loads with the Auto classes, the pipeline, or transformers with trust_remote_code=True.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

import ast_hf
from ast_hf import convert, presets
from ast_hf.checkpoint_surgery import ConversionError


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0].replace("\n", " "))
    parser.add_argument("--deit", required=True, help="transformers DeiT/ViT directory or Hub id, or a timm/DeiT "
                        "state dict file (.pth/.bin/.safetensors)")
    parser.add_argument("--output_dir", required=True)
    parser.add_argument("--max_length", type=int, default=None, help="frames (default: the data set's, else 1024)")
    parser.add_argument("--num_mel_bins", type=int, default=128)
    parser.add_argument("--frequency_stride", type=int, default=10)
    parser.add_argument("--time_stride", type=int, default=10)
    labels = parser.add_mutually_exclusive_group()
    labels.add_argument("--num_labels", type=int, help="labels LABEL_0..LABEL_{n-1} (1: one regression target, "
                        "with --problem_type regression)")
    labels.add_argument("--labels_file", help="CSV like ast_hf/data/*.csv (display_name column) or one label a line")
    parser.add_argument("--dataset", choices=sorted(presets.DATASETS), help="normalisation stats, default "
                        "max_length, problem_type and (without --num_labels/--labels_file) labels of this data set")
    parser.add_argument("--mean", type=float, help="fbank mean for the feature extractor (overrides --dataset)")
    parser.add_argument("--std", type=float, help="fbank std for the feature extractor (overrides --dataset)")
    parser.add_argument("--problem_type", choices=["single_label_classification", "multi_label_classification",
                                                   "regression"])
    parser.add_argument("--channel_reduction", choices=["sum", "mean"], default="sum",
                        help="RGB -> 1 channel of the patch projection; sum is what the released checkpoints used")
    parser.add_argument("--num_attention_heads", type=int, help="heads of a raw state dict (default hidden/64)")
    parser.add_argument("--layer_norm_eps", type=float, help="default: the source's (1e-6 for timm/DeiT files)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the new head's initialisation")
    parser.add_argument("--audio", help="audio file (WAV, FLAC, Ogg, MP3; any rate, mixed to mono) for the "
                        "verification forward (default: espeak-ng speech)")
    parser.add_argument("--overwrite", action="store_true", help="replace a non-empty --output_dir")
    parser.add_argument("--push_to_hub", metavar="REPO_ID", help="also push model and feature extractor")
    parser.add_argument("--cache_dir", help="Hub cache for a Hub id source")
    return parser.parse_args(argv)


def target_labels(args: argparse.Namespace) -> dict[str, Any]:
    labels = convert.head_labels(args.labels_file, args.num_labels, args.dataset, args.problem_type)
    if not labels:
        raise ConversionError("Say what the new head predicts: --num_labels N, --labels_file FILE or --dataset "
                              f"{'|'.join(sorted(presets.DATASETS))}.")
    return labels


def extractor_for(config: ast_hf.ASTConfig, args: argparse.Namespace) -> ast_hf.ASTFeatureExtractor:
    settings = presets.dataset_settings(args.dataset) if args.dataset else presets.DATASETS["audioset"]
    mean = args.mean if args.mean is not None else settings["mean"]
    std = args.std if args.std is not None else settings["std"]
    return ast_hf.ASTFeatureExtractor(num_mel_bins=config.num_mel_bins, max_length=config.max_length, mean=mean,
                                      std=std)


def build(args: argparse.Namespace) -> tuple[ast_hf.ASTForAudioClassification, ast_hf.ASTFeatureExtractor]:
    settings = presets.dataset_settings(args.dataset) if args.dataset else {}
    model = convert.load_deit_as_ast(
        args.deit, seed=args.seed, channel_reduction=args.channel_reduction,
        num_attention_heads=args.num_attention_heads, layer_norm_eps=args.layer_norm_eps, cache_dir=args.cache_dir,
        **target_labels(args), num_mel_bins=args.num_mel_bins,
        max_length=args.max_length or settings.get("max_length", 1024), frequency_stride=args.frequency_stride,
        time_stride=args.time_stride, problem_type=args.problem_type or settings.get("problem_type"))
    return model, extractor_for(model.config, args)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    return convert.run_conversion(lambda: build(args), args.output_dir, args.overwrite, args.audio, args.push_to_hub)


if __name__ == "__main__":
    sys.exit(main())
