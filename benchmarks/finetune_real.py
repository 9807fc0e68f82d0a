"""Fine-tuning on real recordings, side by side in one run: three ways to train the same tiny AST from scratch on
the same clips for the same number of epochs, over several seeds; prints mean, spread and every run.

The data: real recorded drum and percussion hits (Debian's hydrogen-drumkits, six classes), split by who recorded
the kit, so that every evaluation clip comes from drums, rooms and players never heard in training
(ast_hf.drumkits). Built once from the installed package into ~/.cache/ast_hf.

(a) examples/run_audio_classification.py with the flags a Hugging Face user passes for a transformer trained from
    scratch (--optim adamw_torch --weight_decay 0.05 --lr_scheduler_type cosine --warmup_steps 0.1, ...);
(b) examples/run_audio_classification.py with the from-scratch recipe (examples/recipes/from_scratch.json) and
    --max_length 128, the one setting the recipe leaves to the user's data;
(c) a plain PyTorch loop around transformers' built-in AST (transformers.ASTForAudioClassification and its
    feature extractor): AdamW, one-cycle schedule, dropout 0.1, one SpecAugment mask each way with masked values
    set to 0 after normalisation, statistics of the padded training features.
All three: hidden 192, 4 layers, 3 heads, MLP 768 (6.0 M parameters with stride 10), 128 frames, batch 32.

    python benchmarks/finetune_real.py                       # (a) (b) (c), seeds 0 1 2, 20 epochs
    python benchmarks/finetune_real.py --runs c --seeds 0 1 2 3 4
    python benchmarks/finetune_real.py --runs a --extra "--mask_fill mean"   # one factor at a time
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

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
TRAINER = ROOT / "examples" / "run_audio_classification.py"
HF_FLAGS = ["--model_size", "tiny", "--max_length", "128", "--compute_stats", "--freqm", "24", "--timem", "24",
            "--learning_rate", "1e-3", "--per_device_train_batch_size", "32", "--optim", "adamw_torch",
            "--weight_decay", "0.05", "--lr_scheduler_type", "cosine", "--warmup_steps", "0.1"]
TINY = dict(hidden_size=192, num_hidden_layers=4, num_attention_heads=3, intermediate_size=768)


def load_folder(folder: Path) -> tuple[list[np.ndarray], list[str]]:
    """Every clip of an audiofolder as 16 kHz mono float32 (soundfile + torchaudio, independent of ast_hf), and
    its label (the class folder)."""
    import soundfile
    import torchaudio

    clips, labels = [], []
    for path in sorted(p for p in folder.glob("*/*") if p.suffix != ".csv"):
        audio, rate = soundfile.read(str(path), dtype="float32", always_2d=True)
        mono = torch.from_numpy(audio.mean(axis=1))
        clips.append(torchaudio.functional.resample(mono, rate, 16000).numpy())
        labels.append(path.parent.name)
    return clips, labels


def plain_loop(root: Path, seed: int, epochs: int, learning_rate: float = 1e-3, batch_size: int = 32,
               max_length: int = 128) -> float:
    """(c): the 40-line loop a PyTorch user writes around transformers' built-in AST; returns held-out accuracy."""
    import torchaudio
    import transformers

    torch.manual_seed(seed)
    train_clips, train_names = load_folder(root / "train")
    eval_clips, eval_names = load_folder(root / "validation")
    names = sorted(set(train_names))
    extractor = transformers.ASTFeatureExtractor(max_length=max_length, do_normalize=False)

    def features(clips: list[np.ndarray]) -> torch.Tensor:
        return torch.from_numpy(np.stack(extractor(clips, sampling_rate=16000)["input_values"]))  # (N, T, F)

    train_x, eval_x = features(train_clips), features(eval_clips)
    mean, std = train_x.mean(), train_x.std()
    train_x, eval_x = (train_x - mean) / (2 * std), (eval_x - mean) / (2 * std)
    train_y = torch.tensor([names.index(n) for n in train_names])
    eval_y = torch.tensor([names.index(n) for n in eval_names])
    config = transformers.ASTConfig(**TINY, max_length=max_length, num_labels=len(names), hidden_dropout_prob=0.1,
                                    attention_probs_dropout_prob=0.1)
    model = transformers.ASTForAudioClassification(config)
    steps_per_epoch = -(-len(train_y) // batch_size)
    optimizer = torch.optim.AdamW(model.parameters(), lr=learning_rate, weight_decay=0.05)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=learning_rate,
                                                   total_steps=epochs * steps_per_epoch)
    masks = torch.nn.Sequential(torchaudio.transforms.FrequencyMasking(24, iid_masks=True),
                                torchaudio.transforms.TimeMasking(24, iid_masks=True))
    generator = torch.Generator().manual_seed(seed)
    for _ in range(epochs):
        model.train()
        for index in torch.randperm(len(train_y), generator=generator).split(batch_size):
            x = masks(train_x[index].transpose(1, 2).unsqueeze(1)).squeeze(1).transpose(1, 2)  # (B, T, F)
            loss = torch.nn.functional.cross_entropy(model(x).logits, train_y[index])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            schedule.step()
    model.eval()
    with torch.no_grad():
        predicted = torch.cat([model(x).logits.argmax(-1) for x in eval_x.split(64)])
    return float((predicted == eval_y).float().mean())


def example_run(root: Path, seed: int, epochs: int, flags: list[str]) -> float:
    """(a)/(b): the Trainer example in a subprocess; returns its final held-out accuracy."""
    with tempfile.TemporaryDirectory() as output:
        command = [sys.executable, str(TRAINER), *flags, "--train_dir", str(root / "train"), "--validation_dir",
                   str(root / "validation"), "--num_train_epochs", str(epochs), "--seed", str(seed),
                   "--output_dir", output, "--report_to", "none", "--do_train", "true", "--do_eval", "true"]
        done = subprocess.run(command, capture_output=True, text=True, cwd=ROOT,
                              env={**os.environ, "TOKENIZERS_PARALLELISM": "false"})
        if done.returncode != 0:
            raise RuntimeError(f"{shlex.join(command)} failed:\n{done.stderr[-3000:]}")
        return float(json.loads((Path(output) / "all_results.json").read_text())["eval_accuracy"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", default="abc", help="which of a, b, c to run (default: all three)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--recipe", default=str(ROOT / "examples" / "recipes" / "from_scratch.json"),
                        help="recipe of (b)")
    parser.add_argument("--extra", default="", help="flags added to (a) and (b), to measure one factor")
    parser.add_argument("--results", default=None, help="append every run as a JSON line to this file")
    args = parser.parse_args()

    from ast_hf.drumkits import build_drumkits_dataset

    root = build_drumkits_dataset()
    extra = shlex.split(args.extra)
    runs = {"a": lambda seed: example_run(root, seed, args.epochs, HF_FLAGS + extra),
            "b": lambda seed: example_run(root, seed, args.epochs, [args.recipe, "--max_length", "128"] + extra),
            "c": lambda seed: plain_loop(root, seed, args.epochs)}
    titles = {"a": "(a) example, HF-style flags", "b": "(b) example, from_scratch.json",
              "c": "(c) plain loop, built-in AST"}
    print(f"{platform.processor() or platform.machine()}, torch {torch.__version__}, {torch.get_num_threads()} "
          f"threads; data {root}; {args.epochs} epochs; extra flags: {args.extra or 'none'}", flush=True)
    summary = {}
    for key in args.runs:
        scores = []
        for seed in args.seeds:
            start = time.perf_counter()
            scores.append(runs[key](seed))
            seconds = time.perf_counter() - start
            print(f"{titles[key]} seed {seed}: accuracy {scores[-1]:.4f} ({seconds:.0f} s)", flush=True)
            if args.results:
                with open(args.results, "a") as handle:
                    handle.write(json.dumps({"run": key, "seed": seed, "accuracy": scores[-1], "seconds": seconds,
                                             "epochs": args.epochs, "extra": args.extra}) + "\n")
        summary[key] = scores
    print("\n| run | mean | std | min | max | seeds |\n|---|---|---|---|---|---|")
    for key, scores in summary.items():
        spread = statistics.stdev(scores) if len(scores) > 1 else 0.0
        print(f"| {titles[key]} | {statistics.mean(scores):.3f} | {spread:.3f} | {min(scores):.3f} | "
              f"{max(scores):.3f} | {' '.join(f'{s:.3f}' for s in scores)} |")


if __name__ == "__main__":
    main()
