"""The accuracy guard of the fast inference modes: a trained model's held-out accuracy and its top-1 agreement with
float32 in every mode (float32, bf16, int8, compile, ONNX Runtime float32 and int8), on an audiofolder of real
recordings. Defaults: the main job's model and its held-out accents (the embedded espeak-ng data).

    python3 examples/run_audio_classification.py examples/recipes/espeak_commands.json   # the main job's model
    python3 benchmarks/fast_accuracy.py [--model outputs/espeak_commands] [--data DIR/<label>/*.wav]
"""

from __future__ import annotations

import argparse
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch

import ast_hf
from ast_hf.audio_io import read_audio_file
from ast_hf.fast_inference import optimize_for_inference


def held_out_folder() -> Path:
    from ast_hf.espeak_commands import CommandsSpec, build_commands_dataset

    return build_commands_dataset(CommandsSpec()) / "validation"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="outputs/espeak_commands", help="a trained ast_hf model folder")
    parser.add_argument("--data", default=None, help="audiofolder DIR/<label>/*.wav (default: held-out accents)")
    parser.add_argument("--batch_size", type=int, default=32)
    parser.add_argument("--skip_onnx", action="store_true")
    args = parser.parse_args()
    model = ast_hf.ASTForAudioClassification.from_pretrained(args.model).eval()
    extractor = ast_hf.ASTFeatureExtractor.from_pretrained(args.model)
    folder = Path(args.data) if args.data else held_out_folder()
    files = sorted(p for p in folder.glob("*/*") if p.suffix.lower() in (".wav", ".flac", ".mp3", ".ogg"))
    truth = np.array([model.config.label2id[p.parent.name] for p in files])
    batches = []
    for start in range(0, len(files), args.batch_size):
        clips = [read_audio_file(p, extractor.sampling_rate).numpy() for p in files[start:start + args.batch_size]]
        batches.append(extractor(clips, sampling_rate=extractor.sampling_rate, return_tensors="pt"))

    def run(forward) -> tuple[np.ndarray, float]:
        begin = time.perf_counter()
        with torch.inference_mode():
            probabilities = np.concatenate([forward(b) for b in batches])
        return probabilities, time.perf_counter() - begin

    def torch_forward(m):
        return lambda b: m(b["input_values"]).logits.float().softmax(-1).numpy()

    results = {"float32": run(torch_forward(model))}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # bf16 warns where the CPU emulates it
        for mode in ("bf16", "int8", "compile"):
            fast = optimize_for_inference(model, mode)
            if mode == "compile":
                run(torch_forward(fast))  # compiles (first call per shape)
            results[mode] = run(torch_forward(fast))
    if not args.skip_onnx:
        from ast_hf.onnx_export import OnnxAudioClassifier, export_onnx

        with tempfile.TemporaryDirectory() as onnx_dir:
            export_onnx(args.model, onnx_dir, quantize="int8")
            for name, quantized in (("onnx float32", False), ("onnx int8", True)):
                session = OnnxAudioClassifier.from_directory(onnx_dir, quantized=quantized)

                def onnx_forward(b, session=session):
                    logits = session(b["input_values"].numpy(), np.ones(b["input_values"].shape[:2], np.int64))
                    return torch.from_numpy(logits).softmax(-1).numpy()

                results[name] = run(onnx_forward)
    reference = results["float32"][0]
    base_accuracy = float((reference.argmax(1) == truth).mean())
    print(f"model {args.model}; {len(files)} held-out clips from {folder}")
    print("| mode | held-out accuracy | change (points) | top-1 agreement with float32 | max probability change | "
          "s |\n|---|---|---|---|---|---|")
    for name, (probabilities, seconds) in results.items():
        accuracy = float((probabilities.argmax(1) == truth).mean())
        agreement = float((probabilities.argmax(1) == reference.argmax(1)).mean())
        change = float(np.abs(probabilities - reference).max())
        print(f"| {name} | {accuracy:.4f} | {100 * (accuracy - base_accuracy):+.2f} | {agreement:.4f} | {change:.4f} "
              f"| {seconds:.1f} |")


if __name__ == "__main__":
    main()
