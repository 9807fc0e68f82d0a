"""Move a trained AST to a new task, clip length, stride or mel size.

This is the authors' AudioSet -> ESC-50 / Speech Commands path, and it also works when num_mel_bins != 128.

    python conversion/retarget_ast.py --model ast-audioset --output_dir ast-esc50-init --dataset esc50
    python conversion/retarget_ast.py --model ast-audioset --output_dir ast-1s --max_length 128 --labels_file words.txt

The positional grid is centre-cut or bilinearly interpolated to the new grid (time first, then frequency); the
encoder is kept; the head is kept when the labels do not change and re-initialised otherwise. The source's
config.json must say it is an AST and every weight must fit (no missing, unexpected or mis-shaped tensor), else
the script stops with exit status 2 and writes nothing.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import ast_hf
from ast_hf import convert, presets
from ast_hf.checkpoint_surgery import same_labels


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0].replace("\n", " "))
    parser.add_argument("--model", required=True, help="an ast_hf or transformers AST directory / Hub id")
    parser.add_argument("--output_dir", required=True)
    parser.add_argument("--max_length", type=int)
    parser.add_argument("--num_mel_bins", type=int)
    parser.add_argument("--frequency_stride", type=int)
    parser.add_argument("--time_stride", type=int)
    labels = parser.add_mutually_exclusive_group()
    labels.add_argument("--num_labels", type=int, help="a new head of N labels (1: one regression target, with "
                        "--problem_type regression)")
    labels.add_argument("--labels_file")
    parser.add_argument("--dataset", choices=sorted(presets.DATASETS),
                        help="labels (unless given otherwise), stats, max_length and problem_type of this data set")
    parser.add_argument("--problem_type", choices=["single_label_classification", "multi_label_classification",
                                                   "regression"])
    parser.add_argument("--mean", type=float)
    parser.add_argument("--std", type=float)
    parser.add_argument("--seed", type=int, default=0, help="seed of a new head")
    parser.add_argument("--audio", help="audio file (WAV, FLAC, Ogg, MP3; any rate, mixed to mono) for the "
                        "verification forward (default: espeak-ng speech)")
    parser.add_argument("--overwrite", action="store_true")
    return parser.parse_args(argv)


def changes_from_args(args: argparse.Namespace) -> dict[str, Any]:
    settings = presets.dataset_settings(args.dataset) if args.dataset else {}
    changes: dict[str, Any] = {name: getattr(args, name) for name in
                               ("max_length", "num_mel_bins", "frequency_stride", "time_stride", "problem_type")
                               if getattr(args, name) is not None}
    if "max_length" not in changes and "max_length" in settings:
        changes["max_length"] = settings["max_length"]
    if "problem_type" not in changes and "problem_type" in settings:
        changes["problem_type"] = settings["problem_type"]
    changes.update(convert.head_labels(args.labels_file, args.num_labels, args.dataset, changes.get("problem_type")))
    return changes


def build(args: argparse.Namespace) -> tuple[ast_hf.ASTForAudioClassification, ast_hf.ASTFeatureExtractor]:
    folder = convert.ast_directory(args.model)  # refuses a config that is not an AST
    source = convert.load_ast_model(folder)  # refuses missing, unexpected or mis-shaped weights
    if (Path(folder) / "preprocessor_config.json").is_file():
        extractor = ast_hf.ASTFeatureExtractor.from_pretrained(folder)
    else:
        extractor = ast_hf.ASTFeatureExtractor()
    model = convert.retarget_model(source, seed=args.seed, **changes_from_args(args))
    settings = presets.dataset_settings(args.dataset) if args.dataset else {}
    extractor = ast_hf.ASTFeatureExtractor(
        **{**extractor.to_dict(), "max_length": model.config.max_length, "num_mel_bins": model.config.num_mel_bins,
           "mean": args.mean if args.mean is not None else settings.get("mean", extractor.mean),
           "std": args.std if args.std is not None else settings.get("std", extractor.std)})
    old, new = source.config.patch_grid, model.config.patch_grid
    print(f"grid {old[0]} x {old[1]} -> {new[0]} x {new[1]}; head "
          f"{'kept' if same_labels(source.config, model.config) else 'new'}")
    return model, extractor


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    return convert.run_conversion(lambda: build(args), args.output_dir, args.overwrite, args.audio)


if __name__ == "__main__":
    sys.exit(main())
