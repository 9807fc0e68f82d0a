"""DeiT / ViT (ImageNet) -> Audio Spectrogram Transformer, the transfer of Gong, Chung, Glass (Interspeech 2021).

    python conversion/convert_deit_to_ast.py --deit SRC --output_dir OUT [--max_length 1024] [--dataset audioset]

SRC is a local directory or Hub id of a transformers DeiT/ViT model (config.json + weights:
DeiTForImageClassificationWithTeacher, DeiTModel, ViTModel, ...) or a timm / original-DeiT state dict file
(.pth, .bin, .safetensors; bare or wrapped as {"model": ...}). The adaptation is that of the authors' code: channel
sum of the patch projection, centre cut / bilinear interpolation of the positional grid (time first), cls and
distillation tokens kept, a new LayerNorm + Linear head (see ast_hf/convert.py). The output directory is written
atomically and loads with the Auto classes, the pipeline, or transformers with trust_remote_code=True.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import ast_hf
from ast_hf import convert


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--deit", required=True, help="transformers DeiT/ViT directory or Hub id, or a timm/DeiT "
                        "state dict file (.pth/.bin/.safetensors)")
    parser.add_argument("--output_dir", required=True)
    parser.add_argument("--max_length", type=int, default=None, help="frames (default: the data set's, else 1024)")
    parser.add_argument("--num_mel_bins", type=int, default=128)
    parser.add_argument("--frequency_stride", type=int, default=10)
    parser.add_argument("--time_stride", type=int, default=10)
    labels = parser.add_mutually_exclusive_group()
    labels.add_argument("--num_labels", type=int, help="labels LABEL_0..LABEL_{n-1}")
    labels.add_argument("--labels_file", help="CSV like ast_hf/data/*.csv (display_name column) or one label a line")
    parser.add_argument("--dataset", choices=sorted(convert.DATASETS), help="normalisation stats, default "
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
    parser.add_argument("--audio", help="16-bit WAV for the verification forward (default: espeak-ng speech)")
    parser.add_argument("--overwrite", action="store_true", help="replace a non-empty --output_dir")
    parser.add_argument("--push_to_hub", metavar="REPO_ID", help="also push model and feature extractor")
    parser.add_argument("--cache_dir", help="Hub cache for a Hub id source")
    return parser.parse_args(argv)


def read_source(source: str, cache_dir: str | None = None) -> tuple[dict[str, Any], dict[str, Any] | None, str]:
    """(state dict, transformers config dict or None, description) of a file, a directory or a Hub id."""
    path = Path(source)
    if path.is_file():
        return convert.load_state_dict_file(path), None, f"state dict file {source}"
    if path.is_dir():
        config_file = path / "config.json"
        config = json.loads(config_file.read_text()) if config_file.is_file() else None
        return convert.load_pretrained_weights(path), config, f"directory {source}"
    if source.endswith((".pth", ".pt", ".bin", ".safetensors")) or "/" not in source or source.count("/") > 1:
        raise convert.ConversionError(f"{source!r} is neither an existing file nor directory, nor a Hub id "
                                      "(owner/name).")
    from huggingface_hub import snapshot_download

    try:
        folder = snapshot_download(source, cache_dir=cache_dir,
                                   allow_patterns=["config.json", "*.safetensors", "*.bin", "*.json"])
    except Exception as error:  # the Hub client raises many types (offline, 404, auth)
        raise convert.ConversionError(
            f"Could not fetch {source!r} from the Hub ({type(error).__name__}: {str(error)[:200]}). Download it "
            "elsewhere and pass the local path."
        ) from error
    return read_source(folder)


def encoder_from_source(state_dict: dict[str, Any], source_config: dict[str, Any] | None,
                        args: argparse.Namespace) -> tuple[dict[str, Any], dict[str, Any]]:
    """Canonical encoder weights and the architecture fields of the AST config."""
    kind = convert.detect_format(state_dict)
    if kind == "timm":
        canonical = convert.timm_to_canonical(state_dict)
    elif kind == "hf_vit":
        canonical = convert.hf_vit_to_canonical(state_dict)
    else:
        raise convert.ConversionError(
            f"{args.deit!r} is already an AST checkpoint ({kind}); use conversion/convert_original_ast.py (authors' "
            "checkpoints, transformers' MIT/ast-*) or conversion/retarget_ast.py (new length, strides or labels)."
        )
    arch = convert.canonical_architecture(canonical)
    hidden = arch["hidden_size"]
    fields: dict[str, Any] = dict(hidden_size=hidden, num_hidden_layers=arch["num_hidden_layers"],
                                  intermediate_size=arch["intermediate_size"], qkv_bias=arch["qkv_bias"],
                                  patch_size=arch["patch_size"], hidden_act="gelu", layer_norm_eps=1e-6,
                                  num_attention_heads=args.num_attention_heads or max(1, hidden // 64))
    if source_config is not None:
        heads = source_config.get("num_attention_heads", fields["num_attention_heads"])
        if args.num_attention_heads and args.num_attention_heads != heads:
            raise convert.ConversionError(
                f"--num_attention_heads {args.num_attention_heads} contradicts the source config's "
                f"num_attention_heads={heads}; drop the option (the config is read) or fix it."
            )
        fields.update(num_attention_heads=heads, layer_norm_eps=source_config.get("layer_norm_eps", 1e-12),
                      hidden_act=source_config.get("hidden_act", "gelu"))
        if source_config.get("hidden_size", hidden) != hidden:
            raise convert.ConversionError(f"config.json says hidden_size={source_config['hidden_size']} but the "
                                          f"weights have {hidden}; the directory mixes two models.")
    if args.layer_norm_eps is not None:
        fields["layer_norm_eps"] = args.layer_norm_eps
    if hidden % fields["num_attention_heads"]:
        raise convert.ConversionError(
            f"num_attention_heads={fields['num_attention_heads']} does not divide hidden_size={hidden}; pass "
            "--num_attention_heads with the source model's head count (DeiT-tiny 3, small 6, base 12)."
        )
    print(f"source: {kind} layout, {arch['num_hidden_layers']} layers, hidden {hidden}, "
          f"{fields['num_attention_heads']} heads, grid {arch['grid'][0]} x {arch['grid'][1]}, "
          f"{arch['prefix_tokens']} prefix token(s)"
          + ("" if arch["prefix_tokens"] == 2 else " (cls token duplicated as the distillation token)"))
    return canonical, dict(fields, source_grid=arch["grid"])


def target_labels(args: argparse.Namespace) -> dict[str, Any]:
    if args.labels_file:
        return convert.label_fields(convert.read_labels(args.labels_file))
    if args.num_labels:
        return {"num_labels": args.num_labels}
    if args.dataset:
        return convert.label_fields(convert.dataset_labels(args.dataset))
    raise convert.ConversionError("Say what the new head predicts: --num_labels N, --labels_file FILE or --dataset "
                                  f"{'|'.join(sorted(convert.DATASETS))}.")


def extractor_for(config: ast_hf.ASTConfig, args: argparse.Namespace) -> ast_hf.ASTFeatureExtractor:
    settings = convert.dataset_settings(args.dataset) if args.dataset else convert.DATASETS["audioset"]
    mean = args.mean if args.mean is not None else settings["mean"]
    std = args.std if args.std is not None else settings["std"]
    return ast_hf.ASTFeatureExtractor(num_mel_bins=config.num_mel_bins, max_length=config.max_length, mean=mean,
                                      std=std)


def build(args: argparse.Namespace) -> tuple[ast_hf.ASTForAudioClassification, ast_hf.ASTFeatureExtractor]:
    state_dict, source_config, description = read_source(args.deit, args.cache_dir)
    print(f"read {len(state_dict)} tensors from {description}")
    canonical, fields = encoder_from_source(state_dict, source_config, args)
    source_grid = fields.pop("source_grid")
    settings = convert.dataset_settings(args.dataset) if args.dataset else {}
    config = ast_hf.ASTConfig(
        **fields, **target_labels(args), num_mel_bins=args.num_mel_bins,
        max_length=args.max_length or settings.get("max_length", 1024), frequency_stride=args.frequency_stride,
        time_stride=args.time_stride, problem_type=args.problem_type or settings.get("problem_type"))
    weights = convert.adapt_image_encoder(canonical, source_grid, config, args.channel_reduction)
    weights.update(convert.new_head(config, seed=args.seed))
    return convert.build_model(config, weights), extractor_for(config, args)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    return convert.run_conversion(lambda: build(args), args.output_dir, args.overwrite, args.audio, args.push_to_hub)


if __name__ == "__main__":
    sys.exit(main())
