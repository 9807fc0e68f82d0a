"""The authors' SSAST pretraining checkpoints (github.com/YuanGongND/ssast, `.pth`: SSAST-Base-Patch-400,
SSAST-Base-Frame-400, the Tiny and Small models, ...) -> an ast_hf `ASTForPreTraining` directory.

    python conversion/convert_ssast.py --checkpoint SSAST-Base-Patch-400.pth --output_dir ssast-base-patch
    python examples/run_audio_classification.py --model_name_or_path ssast-base-patch --time_stride 10 \
        --frequency_stride 10 --train_dir ... --validation_dir ...

The file is read with torch.load(weights_only=True). Its encoder (`module.v.*`, a timm DeiT), the two prediction
heads (`module.cpredlayer`, `module.gpredlayer`), the mask embedding and the pretraining input size
(`module.p_input_fdim`, `p_input_tdim`) all become ast_hf weights and config fields; the patch shape (16x16 or
128x2) is read from the patch projection, and the strides equal it (the authors pretrain without overlap). The
feature extractor follows the authors' preprocessing: AudioSet's fbank statistics (their pretraining data was
AudioSet and LibriSpeech, normalised with AudioSet's), the waveform mean subtracted, clips padded to the
pretraining length. The saved config pools the patch tokens (`pooling="mean"`, SSAST's fine-tuning default).
A verification forward on real audio prints the masked-patch accuracy and losses; anything that does not fit
stops the conversion with exit status 2 and writes nothing.
"""

from __future__ import annotations

import argparse
import sys

import torch

import ast_hf
from ast_hf import checkpoint_surgery as surgery
from ast_hf import convert, presets
from ast_hf.checkpoint_surgery import FORMAT_NAMES, ConversionError


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0].replace("\n", " "))
    parser.add_argument("--checkpoint", required=True, help="the authors' SSAST .pth file")
    parser.add_argument("--output_dir", required=True)
    parser.add_argument("--mean", type=float, help="fbank mean (default: AudioSet's, as the authors normalised)")
    parser.add_argument("--std", type=float, help="fbank std (default: AudioSet's)")
    parser.add_argument("--audio", help="audio file for the verification forward (default: espeak-ng speech)")
    parser.add_argument("--overwrite", action="store_true")
    parser.add_argument("--push_to_hub", metavar="REPO_ID")
    return parser.parse_args(argv)


def build(args: argparse.Namespace) -> tuple[ast_hf.ASTForPreTraining, ast_hf.ASTFeatureExtractor]:
    state_dict = convert.load_state_dict_file(args.checkpoint)
    try:
        kind = surgery.detect_format(state_dict)
    except ConversionError as error:
        raise ConversionError(f"{args.checkpoint!r} is not an SSAST pretraining checkpoint, which holds the encoder "
                              "(module.v.*: a DeiT), module.cpredlayer.*, module.gpredlayer.*, module.mask_embed and "
                              f"module.p_input_fdim / p_input_tdim. {error}") from None
    if kind != "ssast":
        advice = ("for the authors' AST (or a fine-tuned SSAST) use conversion/convert_original_ast.py"
                  if kind == "original_ast" else "for DeiT/ViT use conversion/convert_deit_to_ast.py")
        raise ConversionError(f"{args.checkpoint!r} is {FORMAT_NAMES[kind]}, not an SSAST pretraining checkpoint; "
                              f"{advice}.")
    weights, fields = surgery.ssast_to_hf(state_dict)
    config = ast_hf.ASTConfig(**fields)
    model = ast_hf.ASTForPreTraining(config)
    result = model.load_state_dict(weights, strict=False)
    if result.missing_keys or result.unexpected_keys:
        raise ConversionError(f"Converted weights do not fit ASTForPreTraining: missing {result.missing_keys[:6]}, "
                              f"unexpected {result.unexpected_keys[:6]}.")
    audioset = presets.dataset_settings("audioset")
    extractor = ast_hf.ASTFeatureExtractor(
        max_length=config.max_length, num_mel_bins=config.num_mel_bins,
        mean=audioset["mean"] if args.mean is None else args.mean,
        std=audioset["std"] if args.std is None else args.std, subtract_waveform_mean=True, pad_to_max_length=True)
    return model.eval(), extractor


def verify(model: ast_hf.ASTForPreTraining, extractor: ast_hf.ASTFeatureExtractor, audio: str | None) -> None:
    """One real clip through the converted model: the masked-patch accuracy and both losses must be finite."""
    convert.summarize(model)
    clip, name = convert.verification_clip(audio)
    features = extractor(clip, sampling_rate=16000, return_tensors="pt", truncation=True)
    with torch.no_grad():
        output = model(**features)
    values = [output.loss, output.discriminative_loss, output.generative_loss]
    if not all(torch.isfinite(value).all() for value in values):
        raise ConversionError("The converted model gives non-finite losses on a real clip.")
    grid_f, grid_t = model.config.patch_grid
    print(f"forward on {name}: {model.config.mask_patches} of {grid_f * grid_t} patches masked; discriminative "
          f"accuracy {float(output.discriminative_accuracy):.3f}, InfoNCE {float(output.discriminative_loss):.3f}, "
          f"reconstruction MSE {float(output.generative_loss):.3f}")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        convert.check_output_dir(args.output_dir, args.overwrite)
        model, extractor = build(args)
        print("weights: no missing or unexpected keys")
        verify(model, extractor, args.audio)
        convert.write_checkpoint(model, extractor, args.output_dir, overwrite=args.overwrite)
    except (ConversionError, ValueError, TypeError, OSError) as error:
        print(f"error: {' '.join(str(error).split())}", file=sys.stderr)
        return 2
    print(f"saved to {args.output_dir}")
    if args.push_to_hub:
        model.push_to_hub(args.push_to_hub)
        extractor.push_to_hub(args.push_to_hub)
        print(f"pushed to {args.push_to_hub}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
