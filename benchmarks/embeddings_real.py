"""Frozen encoders against full fine-tuning on real recordings, side by side in one run, over several seeds.

The data: real drum and percussion hits held out by recording source (ast_hf.drumkits, as in
benchmarks/finetune_real.py). Three ways to use an encoder, each from two encoders:

- full: examples/run_audio_classification.py fine-tunes every weight (the from-scratch recipe's flags, 20 epochs);
- frozen: the same run with --freeze_encoder (only the classifier head trains);
- probe: examples/linear_probe.py (the pipeline's clip vectors, a logistic regression);

(i) random: a tiny AST (192 wide, 4 layers, stride 10) with random weights (the seed's initialisation);
(ii) speech: the main job's model (examples/recipes/espeak_commands.json: ten spoken words synthesised with
     espeak-ng), trained here first unless --speech_model names one.

    python benchmarks/embeddings_real.py                      # everything, seeds 0 1 2
    python benchmarks/embeddings_real.py --ways probe --seeds 0
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
TRAINER = ROOT / "examples" / "run_audio_classification.py"
PROBE = ROOT / "examples" / "linear_probe.py"
# The from-scratch recipe as flags (benchmarks/finetune_real.py's (a), which trains as the recipe does), so that a
# pretrained encoder can take --model_name_or_path in place of --model_size.
FLAGS = ["--max_length", "128", "--freqm", "24", "--timem", "24", "--learning_rate", "1e-3",
         "--per_device_train_batch_size", "32", "--optim", "adamw_torch", "--weight_decay", "0.05",
         "--lr_scheduler_type", "cosine", "--warmup_steps", "0.1", "--num_train_epochs", "20"]


def run(command: list[str]) -> None:
    done = subprocess.run(command, capture_output=True, text=True, cwd=ROOT,
                          env={**os.environ, "TOKENIZERS_PARALLELISM": "false"})
    if done.returncode != 0:
        raise RuntimeError(f"{shlex.join(command)} failed:\n{done.stderr[-3000:]}")


def random_encoder(folder: Path, seed: int) -> Path:
    """A tiny AST with the from-scratch initialisation of `seed`, saved with a 128-frame extractor."""
    from ast_hf import training

    torch.manual_seed(seed)
    model, extractor = training.prepare_model_and_extractor(
        training.ModelArguments(model_size="tiny"), training.DataArguments(max_length=128),
        training.RecipeArguments(), ["a", "b"], False, describe=lambda _: None)
    model.save_pretrained(folder)
    extractor.save_pretrained(folder)
    return folder


def fine_tune(root: Path, seed: int, source: list[str], extra: list[str]) -> float:
    with tempfile.TemporaryDirectory() as output:
        run([sys.executable, str(TRAINER), *source, *FLAGS, *extra, "--train_dir", str(root / "train"),
             "--validation_dir", str(root / "validation"), "--seed", str(seed), "--output_dir", output,
             "--report_to", "none", "--save_strategy", "no", "--eval_strategy", "no", "--do_train", "true",
             "--do_eval", "true"])
        return float(json.loads((Path(output) / "all_results.json").read_text())["eval_accuracy"])


def probe(root: Path, seed: int, model: Path) -> float:
    with tempfile.TemporaryDirectory() as output:
        run([sys.executable, str(PROBE), "--model", str(model), "--train_dir", str(root / "train"),
             "--validation_dir", str(root / "validation"), "--seed", str(seed), "--output_dir", output])
        return float(json.loads((Path(output) / "probe.json").read_text())["eval_accuracy"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ways", nargs="+", default=["full", "frozen", "probe"], choices=["full", "frozen", "probe"])
    parser.add_argument("--encoders", nargs="+", default=["random", "speech"], choices=["random", "speech"])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--speech_model", default=None, help="the main job's model (default: trained here first)")
    parser.add_argument("--results", default=None, help="append every run as a JSON line to this file")
    args = parser.parse_args()

    from ast_hf.drumkits import build_drumkits_dataset

    root = build_drumkits_dataset()
    work = Path(tempfile.mkdtemp(prefix="ast_hf_embeddings_"))
    speech = Path(args.speech_model) if args.speech_model else None
    if "speech" in args.encoders and speech is None:
        speech = work / "speech"
        start = time.perf_counter()
        run([sys.executable, str(TRAINER), str(ROOT / "examples" / "recipes" / "espeak_commands.json"),
             "--output_dir", str(speech), "--report_to", "none"])
        print(f"speech model trained in {time.perf_counter() - start:.0f} s: {speech}", flush=True)
    print(f"{platform.processor() or platform.machine()}, torch {torch.__version__}, {torch.get_num_threads()} "
          f"threads; data {root}", flush=True)
    summary: dict[tuple[str, str], list[float]] = {}
    for encoder in args.encoders:
        for way in args.ways:
            for seed in args.seeds:
                start = time.perf_counter()
                if encoder == "random":
                    source = ["--model_size", "tiny", "--compute_stats"]
                    if way == "probe":
                        score = probe(root, seed, random_encoder(work / f"random_{seed}", seed))
                    else:
                        score = fine_tune(root, seed, source, ["--freeze_encoder"] if way == "frozen" else [])
                else:
                    if way == "probe":
                        score = probe(root, seed, speech)
                    elif way == "frozen":  # the encoder's own normalisation and input convention, as trained
                        score = fine_tune(root, seed, ["--model_name_or_path", str(speech)],
                                          ["--freeze_encoder", "--pad_to_max_length", "true"])
                    else:  # the data's statistics, as the paper fine-tunes
                        score = fine_tune(root, seed, ["--model_name_or_path", str(speech), "--compute_stats"], [])
                record(summary, dict(encoder=encoder, way=way, seed=seed, accuracy=score,
                                     seconds=time.perf_counter() - start), args.results)
    print_summary(summary)


def record(summary: dict[tuple[str, str], list[float]], row: dict, results: str | None) -> None:
    """Note one run's accuracy (by encoder and way), print it, and append it as a JSON line to `results`."""
    summary.setdefault((row["encoder"], row["way"]), []).append(row["accuracy"])
    print(f"{row['encoder']} {row['way']} seed {row['seed']}: accuracy {row['accuracy']:.4f} "
          f"({row['seconds']:.0f} s)", flush=True)
    if results:
        with open(results, "a") as handle:
            handle.write(json.dumps(row) + "\n")


def print_summary(summary: dict[tuple[str, str], list[float]]) -> None:
    """The table of means, standard deviations and per-seed accuracies."""
    print("\n| encoder | way | mean | std | seeds |\n|---|---|---|---|---|")
    for (encoder, way), scores in summary.items():
        spread = statistics.stdev(scores) if len(scores) > 1 else 0.0
        print(f"| {encoder} | {way} | {statistics.mean(scores):.3f} | {spread:.3f} | "
              f"{' '.join(f'{s:.3f}' for s in scores)} |")


if __name__ == "__main__":
    main()
