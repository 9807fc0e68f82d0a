"""The authors' AST checkpoints (github.com/YuanGongND/ast, `.pth`) or transformers' built-in AST models
(MIT/ast-*) -> an ast_hf directory.

    python conversion/convert_original_ast.py --checkpoint audioset_10_10_0.4593.pth --dataset audioset \
        --output_dir ast-audioset
    python conversion/convert_original_ast.py --checkpoint path/to/MIT-ast-dir --output_dir ast-audioset-hf

The authors' files hold `module.v.*` (a DeiT with fused qkv and two unused image heads) and `module.mlp_head.*`;
they are read with torch.load(weights_only=True). --dataset picks the label names (ast_hf/data), the
normalisation statistics, max_length and problem_type (multi-label for AudioSet). Their encoder's LayerNorm eps
is timm's 1e-6, their head's `nn.LayerNorm(768)` PyTorch's 1e-5 (`classifier_layer_norm_eps`); the feature
extractor is written with their preprocessing: the waveform mean subtracted (`waveform - waveform.mean()` in
their dataloader) and every clip padded to max_length (they trained on padded clips). A transformers AST
directory or Hub id is loaded as it is and re-saved as ast_hf (labels and stats from its own files unless
--dataset is given); its config.json must say it is an AST and every weight must fit, else the conversion stops
with exit status 2 and writes nothing.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import ast_hf
from ast_hf import checkpoint_surgery as surgery
from ast_hf import convert, presets
from ast_hf.checkpoint_surgery import FORMAT_NAMES, ConversionError


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0].replace("\n", " "))
    parser.add_argument("--checkpoint", required=True, help="authors' .pth file, or a transformers AST directory / "
                        "Hub id")
    parser.add_argument("--output_dir", required=True)
    parser.add_argument("--dataset", choices=sorted(presets.DATASETS),
                        help="labels, stats, max_length and problem_type (required for the authors' .pth files)")
    parser.add_argument("--frequency_stride", type=int, default=10, help="the authors' fstride")
    parser.add_argument("--time_stride", type=int, default=10, help="the authors' tstride")
    parser.add_argument("--num_mel_bins", type=int, default=128)
    parser.add_argument("--max_length", type=int, help="frames (default: the data set's)")
    parser.add_argument("--num_attention_heads", type=int, help="default hidden_size / 64")
    parser.add_argument("--layer_norm_eps", type=float, default=1e-6, help="the authors' encoder uses timm's 1e-6")
    parser.add_argument("--classifier_layer_norm_eps", type=float, default=1e-5,
                        help="the authors' head is nn.LayerNorm(768): PyTorch's 1e-5")
    parser.add_argument("--audio", help="audio file (WAV, FLAC, Ogg, MP3; any rate, mixed to mono) for the "
                        "verification forward (default: espeak-ng speech)")
    parser.add_argument("--overwrite", action="store_true")
    parser.add_argument("--push_to_hub", metavar="REPO_ID")
    parser.add_argument("--cache_dir")
    return parser.parse_args(argv)


def from_authors_file(args: argparse.Namespace) -> tuple[ast_hf.ASTForAudioClassification, ast_hf.ASTFeatureExtractor]:
    state_dict = convert.load_state_dict_file(args.checkpoint)
    kind = surgery.detect_format(state_dict)
    if kind != "original_ast":
        advice = {"hf_ast": "load it into ast_hf.ASTForAudioClassification(config) and save_pretrained a directory, "
                            "then pass that directory",
                  "ssast": "convert it with conversion/convert_ssast.py",
                  }.get(kind, "for DeiT/ViT use conversion/convert_deit_to_ast.py")
        raise ConversionError(f"{args.checkpoint!r} is {FORMAT_NAMES[kind]}, not the authors' AST (module.v.*); "
                              f"{advice}.")
    if args.dataset is None:
        raise ConversionError("--dataset audioset|esc50|speechcommands is required for the authors' files: it "
                              "gives the label names, statistics and clip length the model was trained with.")
    weights = surgery.original_ast_to_hf(state_dict)
    settings = presets.dataset_settings(args.dataset)
    labels = presets.dataset_labels(args.dataset)
    head_size = weights["classifier.dense.weight"].shape[0]
    if head_size != len(labels):
        raise ConversionError(f"The checkpoint's head has {head_size} outputs but --dataset {args.dataset} has "
                              f"{len(labels)} labels; pick the data set the model was trained on.")
    grid = surgery.original_ast_grid(state_dict, args.num_mel_bins, args.frequency_stride, args.time_stride)
    max_length = args.max_length or settings["max_length"]
    arch = surgery.encoder_architecture(surgery.timm_to_canonical(state_dict, prefix="module.v."))
    hidden = arch["hidden_size"]
    config = ast_hf.ASTConfig(
        hidden_size=hidden, num_attention_heads=args.num_attention_heads or surgery.default_heads(hidden),
        num_hidden_layers=arch["num_hidden_layers"], intermediate_size=arch["intermediate_size"],
        qkv_bias=arch["qkv_bias"], patch_size=arch["patch_size"],
        layer_norm_eps=args.layer_norm_eps, classifier_layer_norm_eps=args.classifier_layer_norm_eps,
        num_mel_bins=args.num_mel_bins, max_length=max_length,
        frequency_stride=args.frequency_stride, time_stride=args.time_stride,
        problem_type=settings["problem_type"], **surgery.label_fields(labels))
    if config.patch_grid != grid:
        raise ConversionError(
            f"The checkpoint's positional grid is {grid[0]} x {grid[1]} but max_length={max_length} with "
            f"time_stride={args.time_stride} gives {config.patch_grid[0]} x {config.patch_grid[1]}; pass the "
            "--max_length and strides it was trained with."
        )
    extractor = ast_hf.ASTFeatureExtractor(**authors_extractor_settings(max_length, args.num_mel_bins, settings))
    return convert.build_model(config, weights), extractor


def authors_extractor_settings(max_length: int, num_mel_bins: int, settings: dict) -> dict:
    """ASTFeatureExtractor settings of the authors' preprocessing (their dataloader): their data set's statistics,
    the waveform mean subtracted before the fbank, and every clip padded (or cut) to max_length frames, as they
    trained."""
    return dict(max_length=max_length, num_mel_bins=num_mel_bins, mean=settings["mean"], std=settings["std"],
                subtract_waveform_mean=True, pad_to_max_length=True)


def from_transformers(args: argparse.Namespace) -> tuple[ast_hf.ASTForAudioClassification, ast_hf.ASTFeatureExtractor]:
    source = convert.ast_directory(args.checkpoint, cache_dir=args.cache_dir)  # refuses a config that is not an AST
    model = convert.load_ast_model(source)  # refuses missing, unexpected or mis-shaped weights
    if args.dataset:
        settings = presets.dataset_settings(args.dataset)
        model.config.problem_type = settings["problem_type"]
        extractor = ast_hf.ASTFeatureExtractor(max_length=model.config.max_length,
                                               num_mel_bins=model.config.num_mel_bins, mean=settings["mean"],
                                               std=settings["std"])
    elif (Path(source) / "preprocessor_config.json").is_file():
        extractor = ast_hf.ASTFeatureExtractor.from_pretrained(source)
    else:
        extractor = ast_hf.ASTFeatureExtractor(max_length=model.config.max_length)
    return model, extractor


def build(args: argparse.Namespace) -> tuple[ast_hf.ASTForAudioClassification, ast_hf.ASTFeatureExtractor]:
    return from_authors_file(args) if Path(args.checkpoint).is_file() else from_transformers(args)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    return convert.run_conversion(lambda: build(args), args.output_dir, args.overwrite, args.audio, args.push_to_hub)


if __name__ == "__main__":
    sys.exit(main())
