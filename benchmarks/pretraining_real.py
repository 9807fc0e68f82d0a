"""SSAST pretraining on unlabelled real audio, then the drum benchmark from the pretrained encoder against the same
runs from a random one, side by side in one run, over several seeds.

Pretraining audio (never the benchmark's evaluation clips): every recording of the Hydrogen drum kits whose
recording source is not held out (all instruments, also those the benchmark leaves out: sticks, rims, effects,
and the Audiophob kit), and spoken words synthesised with espeak-ng (the main job's training clips). The
benchmark: ast_hf.drumkits, held out by recording source (benchmarks/embeddings_real.py), with full fine-tuning
(the from-scratch recipe's flags, 20 epochs), a frozen encoder with a trained head, and a linear probe.

    python benchmarks/pretraining_real.py                                 # pretrain (~20 min), then seeds 0 1 2
    python benchmarks/pretraining_real.py --pretrained OUT/ssast --ways probe --seeds 0
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
from embeddings_real import fine_tune, print_summary, probe, random_encoder, record, run  # noqa: E402

PRETRAIN = ROOT / "examples" / "run_pretraining.py"
# The pretraining run: a tiny encoder (the benchmark's size), 16x16 patches without overlap on 1.28 s clips (an 8 x 8
# grid), random 1.28 s stretches of longer recordings, the authors' 78% masking and 1:10 loss weights.
PRETRAIN_FLAGS = ["--model_size", "tiny", "--max_length", "128", "--train_crop", "random",
                  "--per_device_train_batch_size", "32", "--learning_rate", "5e-4", "--weight_decay", "0.01",
                  "--lr_scheduler_type", "cosine", "--warmup_steps", "0.05", "--optim", "adamw_torch",
                  "--logging_steps", "20", "--save_strategy", "no", "--report_to", "none"]


def pretraining_folder(folder: Path, speech_clips: int) -> Path:
    """A flat folder of unlabelled audio: drum recordings of the training sources, and espeak-ng words."""
    from ast_hf.drumkits import AUDIO_SUFFIXES, DRUMKITS_DIR, EVAL_SOURCES, KIT_SOURCES, _copy_clip
    from ast_hf.espeak_commands import build_commands_dataset

    folder.mkdir(parents=True, exist_ok=True)
    drums = 0
    for kit in sorted(p for p in DRUMKITS_DIR.iterdir() if p.is_dir()):
        if KIT_SOURCES.get(kit.name) in EVAL_SOURCES:
            continue
        for index, file in enumerate(sorted(kit.rglob("*"))):
            if file.suffix.lower() in AUDIO_SUFFIXES:
                target = folder / f"drum_{kit.name.replace(' ', '_')}_{index}{file.suffix.lower()}"
                drums += _copy_clip(file, target, 4.0)
    speech = sorted((build_commands_dataset(verbose=False) / "train").rglob("*.wav"))
    step = max(1, len(speech) // speech_clips)
    for index, file in enumerate(speech[::step][:speech_clips]):
        shutil.copy(file, folder / f"speech_{index}.wav")
    print(f"pretraining audio: {drums} drum recordings, {min(speech_clips, len(speech[::step]))} spoken words",
          flush=True)
    return folder


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pretrained", default=None, help="an SSAST checkpoint (default: pretrained here first)")
    parser.add_argument("--epochs", type=int, default=60, help="pretraining epochs")
    parser.add_argument("--speech_clips", type=int, default=1000)
    parser.add_argument("--extra", default="", help="more flags for the pretraining run")
    parser.add_argument("--ways", nargs="+", default=["full", "frozen", "probe"], choices=["full", "frozen", "probe"])
    parser.add_argument("--encoders", nargs="+", default=["ssast", "random"], choices=["ssast", "random"])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--results", default=None, help="append every run as a JSON line to this file")
    args = parser.parse_args()

    from ast_hf.drumkits import build_drumkits_dataset

    root = build_drumkits_dataset()
    work = Path(tempfile.mkdtemp(prefix="ast_hf_pretraining_"))
    print(f"{platform.processor() or platform.machine()}, torch {torch.__version__}, {torch.get_num_threads()} "
          f"threads; work {work}", flush=True)
    pretrained = Path(args.pretrained) if args.pretrained else None
    if "ssast" in args.encoders and pretrained is None:
        audio = pretraining_folder(work / "unlabelled", args.speech_clips)
        pretrained = work / "ssast"
        start = time.perf_counter()
        run([sys.executable, str(PRETRAIN), "--train_dir", str(audio), *PRETRAIN_FLAGS, "--num_train_epochs",
             str(args.epochs), "--output_dir", str(pretrained), *args.extra.split()])
        results = json.loads((pretrained / "all_results.json").read_text())
        print(f"pretrained in {time.perf_counter() - start:.0f} s: {pretrained}; final training accuracy "
              f"{results.get('final_discriminative_accuracy')}, MSE {results.get('final_generative_loss')}",
              flush=True)
    # SSAST fine-tunes with overlapping patches (stride 10, the benchmark's) and the saved mean pooling.
    ssast_source = ["--model_name_or_path", str(pretrained), "--time_stride", "10", "--frequency_stride", "10"]
    summary: dict[tuple[str, str], list[float]] = {}
    for encoder in args.encoders:
        for way in args.ways:
            for seed in args.seeds:
                start = time.perf_counter()
                if encoder == "random":
                    if way == "probe":
                        score = probe(root, seed, random_encoder(work / f"random_{seed}", seed))
                    else:
                        score = fine_tune(root, seed, ["--model_size", "tiny", "--compute_stats"],
                                          ["--freeze_encoder"] if way == "frozen" else [])
                elif way == "probe":
                    score = probe(root, seed, pretrained)
                elif way == "frozen":  # the encoder's own normalisation and input convention, as pretrained
                    score = fine_tune(root, seed, ssast_source, ["--freeze_encoder", "--pad_to_max_length", "true"])
                else:  # the data's statistics, as SSAST fine-tunes
                    score = fine_tune(root, seed, [*ssast_source, "--compute_stats"], [])
                record(summary, dict(encoder=encoder, way=way, seed=seed, accuracy=score,
                                     seconds=time.perf_counter() - start, pretrained=str(pretrained)), args.results)
    print_summary(summary)

if __name__ == "__main__":
    main()
