"""Tagging an archive: throughput, memory and crash recovery of `ast-hf classify --output` on a generated corpus.

The corpus (made once, cached): N short clips of real audio, espeak-ng words in six voices and recorded drum hits
(Debian's hydrogen-drumkits), at 8, 16, 22.05 and 44.1 kHz, mono and stereo, as WAV, FLAC, MP3 and Ogg, in nested
folders with spaces in their names, plus four 5-minute recordings.

(a) The tiny model (2 layers, 32 wide) over every file, `--num-workers` 0, 1 and 2: files/s, audio hours per hour,
    against the model-only rate in the same run (the same windows' features already in memory, forward passes
    only).
(b) Peak RSS of the main process at 2,000 files and at N files.
(c) The base configuration (86 M parameters, random weights; clips at their own length with a mask) over
    `--base-files` files, float32 and `--optimize auto`: the model-only rate and a `run_corpus` call in this process
    (model loaded), alternated `--rounds` times, then `ast-hf classify` as a fresh process (start and load
    included), on the same files.
(d) transformers' built-in AST doing the same work the obvious way: its `pipeline("audio-classification")` over the
    file paths, batched (batch_size 8), padded to 1024 frames as its extractor does; against `ast-hf classify`
    with the same weights (converted) and the same padded convention, on `--builtin-files` files.
(e) SIGKILL at three random moments on the 2,000-file subset, each followed by the same command: the final
    output against an uninterrupted run's (files missing, twice, largest score difference).
(f) onnxruntime as a candidate for `--optimize auto`: the base configuration exported by `export_onnx` (float32 and
    int8), against torch float32, int8 and (where native) bf16, forward passes only on the same windows of
    `--onnx-files` files: files/s and the accuracy guard's measures (top-1 agreement, largest probability change);
    then each on 8 clips of 1024 frames.

Prints a table and the machine; nothing is asserted (tests/test_corpus.py checks correctness on small corpora).

    python benchmarks/corpus.py [--files 20000] [--base-files 500] [--builtin-files 24] [--onnx-files 100] [--rounds 3]
                                [--parts a b c d e f] [--cache DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile
import torch
import torchaudio

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchmark import machine_description  # noqa: E402

import ast_hf  # noqa: E402
from ast_hf.audio_io import espeak_speech  # noqa: E402

WORDS = ("yes no up down left right stop go on off one two three four five six seven eight nine zero bed bird cat "
         "dog happy house tree wow marvin sheila learn follow forward backward visual").split()
VOICES = ("en", "en-us", "en-gb", "de", "fr", "es")
RATES = (8000, 16000, 22050, 44100)
PEAK = ("import atexit, resource, sys\n"
        "atexit.register(lambda: print(f'PEAK_RSS_KB {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}', "
        "file=sys.stderr))\n"
        "from ast_hf.cli import main\n"
        "sys.exit(main(sys.argv[1:]))\n")


def sources() -> list[np.ndarray]:
    """Real sounds at 16 kHz: espeak-ng words in six voices, and drum hits from hydrogen-drumkits when installed."""
    sounds = [espeak_speech(word, voice=voice, speed=140 + 20 * (i % 3))
              for i, (word, voice) in enumerate((w, v) for v in VOICES for w in WORDS)]
    kits = sorted(Path("/usr/share/hydrogen/data/drumkits").glob("*/*.flac")) + sorted(
        Path("/usr/share/hydrogen/data/drumkits").glob("*/*.wav"))
    for path in kits[:400]:
        try:
            audio, rate = soundfile.read(path, dtype="float32", always_2d=True)
        except RuntimeError:
            continue
        clip = torch.from_numpy(audio.mean(axis=1)[: rate * 2].copy())
        sounds.append(torchaudio.functional.resample(clip, rate, 16000).numpy())
    return sounds


def build_corpus(root: Path, count: int) -> Path:
    """`count` clips and four long recordings under root/corpus (skipped when already there)."""
    corpus = root / f"corpus_{count}"
    if (corpus / "DONE").exists():
        return corpus
    rng = np.random.default_rng(0)
    sounds = sources()
    converts = []
    for i in range(count):
        folder = corpus / f"batch {i // 500:03d}" / ("speech" if i % 10 < 7 else "mixed")
        folder.mkdir(parents=True, exist_ok=True)
        audio = sounds[rng.integers(len(sounds))] * float(rng.uniform(0.3, 1.0))
        rate = int(RATES[rng.integers(len(RATES))])
        if rate != 16000:
            audio = torchaudio.functional.resample(torch.from_numpy(audio), 16000, rate).numpy()
        if rng.random() < 0.3:
            audio = np.stack([audio, audio * 0.7], axis=1)
        kind = rng.random()
        suffix = ".flac" if kind < 0.12 else ".wav"
        path = folder / f"clip {i:06d}{suffix}"
        soundfile.write(path, audio, rate)
        if kind > 0.95:
            converts.append((path, path.with_suffix(".mp3" if kind > 0.975 else ".ogg")))
    for source, target in converts:
        subprocess.run(["ffmpeg", "-v", "error", "-y", "-i", str(source), str(target)], check=True)
        source.unlink()
    for j in range(4):
        pieces = [sounds[k] for k in rng.integers(len(sounds), size=400)]
        long = np.concatenate([np.concatenate([p, np.zeros(4000, np.float32)]) for p in pieces])[: 300 * 16000]
        soundfile.write(corpus / f"long recording {j}.flac", long, 16000)
    (corpus / "DONE").write_text("")
    return corpus


def save_model(folder: Path, pad: bool = False, **fields) -> Path:
    config = ast_hf.ASTConfig(num_labels=10, **fields)
    torch.manual_seed(0)
    model = ast_hf.ASTForAudioClassification(config).eval()
    model.save_pretrained(folder)
    ast_hf.ASTFeatureExtractor(max_length=config.max_length, pad_to_max_length=pad
                               ).save_pretrained(folder)
    return folder


def run_classify(model: Path, inputs: list[str], output: Path, *extra: str) -> dict:
    """`ast-hf classify ... --output` in a fresh process: wall seconds, peak RSS of the main process, exit status."""
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", PEAK, "classify", *inputs, "--model", str(model), "--output",
                           str(output), "--no-progress", "--overwrite", *extra], capture_output=True, text=True)
    seconds = time.perf_counter() - start
    peak = next((int(line.split()[1]) for line in done.stderr.splitlines() if line.startswith("PEAK_RSS_KB")), 0)
    return {"seconds": seconds, "peak_mb": peak / 1024, "status": done.returncode, "stderr": done.stderr[-400:]}


def rows(output: Path) -> dict[str, dict]:
    import pyarrow.parquet as pq

    table = pq.read_table(output).to_pylist()
    return {row["path"]: row for row in table}


def audio_hours(table: dict[str, dict]) -> float:
    return sum(row["duration"] or 0.0 for row in table.values()) / 3600


def window_batches(model_dir: Path, paths: list[str], batch_size: int) -> list[dict]:
    """Every window's model inputs, computed up front, in batches of `batch_size` windows."""
    from ast_hf.audio_io import open_audio
    from ast_hf.configuration_ast import samples_for_frames
    from ast_hf.tagging import window_features, windows

    extractor = ast_hf.ASTFeatureExtractor.from_pretrained(model_dir)
    config = ast_hf.ASTConfig.from_pretrained(model_dir)
    window = samples_for_frames(extractor.max_length)
    clips = [samples for path in paths for _, samples in windows(open_audio(path, 16000).chunks(), window,
                                                                   window // 2)]
    return [window_features(extractor, clips[i:i + batch_size], extractor.pad_to_max_length, config.patch_shape[1])
            for i in range(0, len(clips), batch_size)]


def timed_logits(run, batches: list[dict]) -> tuple[float, np.ndarray]:
    """(seconds, logits of every window) of `run(batch) -> logits` over `batches`, after one warm-up batch."""
    run(batches[0])
    start = time.perf_counter()
    logits = [np.asarray(run(batch), dtype=np.float32) for batch in batches]
    return time.perf_counter() - start, np.concatenate(logits)


def model_only_rate(model_dir: Path, paths: list[str], batch_size: int, optimize: str | None = None) -> float:
    """Files per second of the forward passes alone: every window's features computed first, in memory."""
    from transformers import pipeline

    model = pipeline("audio-tagging", model=str(model_dir), device="cpu", optimize=optimize).model
    with torch.inference_mode():
        seconds, _ = timed_logits(lambda batch: model(**batch).logits, window_batches(model_dir, paths, batch_size))
    return len(paths) / seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--files", type=int, default=20000)
    parser.add_argument("--base-files", type=int, default=500)
    parser.add_argument("--builtin-files", type=int, default=24)
    parser.add_argument("--onnx-files", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=3, help="alternated rounds of (c)'s two rates")
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--cache", default=os.path.expanduser("~/.cache/ast_hf/benchmarks"))
    parser.add_argument("--parts", nargs="+", default=list("abcdef"), choices=list("abcdef"),
                        help="which measurements to run (default all; (b) needs (a))")
    args = parser.parse_args()
    print(machine_description())
    cache = Path(args.cache)
    cache.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    corpus = build_corpus(cache, args.files)
    files = sorted(str(p) for p in corpus.rglob("*") if p.suffix in (".wav", ".flac", ".mp3", ".ogg"))
    print(f"corpus: {len(files)} files ({len([f for f in files if 'long' in f])} of 5 minutes), built or found in "
          f"{time.perf_counter() - start:.0f} s")
    work = Path(tempfile.mkdtemp(prefix="corpus_bench_"))
    tiny = save_model(work / "tiny", hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                      intermediate_size=64, max_length=128, frequency_stride=10, time_stride=10)
    subset = files[:: max(1, len(files) // 2000)][:2000]
    (work / "subset.txt").write_text("\n".join(subset) + "\n")

    short = [f for f in files if "long" not in f][: args.base_files]
    if "a" in args.parts:
        tiny_sweep(args, tiny, corpus, files, subset, work)
    if "c" in args.parts:
        base_rates(short, args.rounds, work)
    if "d" in args.parts:
        against_builtin(short[: args.builtin_files], work)
    if "e" in args.parts:
        kills(tiny, work)
    if "f" in args.parts:
        onnx_candidates(short[: args.onnx_files], work)
    print(json.dumps({"work": str(work)}))


def tiny_sweep(args, tiny, corpus, files, subset, work) -> None:
    print("\n(a) tiny model, every file, float32, batch 16 windows")
    rate = model_only_rate(tiny, subset[:500], 16)
    print(f"  model only (features in memory): {rate:.0f} files/s")
    runs = {}
    for workers in args.workers:
        result = runs[workers] = run_classify(tiny, [str(corpus)], work / f"tiny_{workers}.parquet", "--num-workers",
                                              str(workers), "--batch-size", "16")
        table = rows(work / f"tiny_{workers}.parquet")
        print(f"  --num-workers {workers}: {len(table)} files in {result['seconds']:.0f} s = "
              f"{len(table) / result['seconds']:.0f} files/s, {audio_hours(table) / (result['seconds'] / 3600):.0f} "
              f"audio hours/hour, {len(table) / result['seconds'] / rate:.2f} of the model-only rate; peak RSS "
              f"{result['peak_mb']:.0f} MB; exit {result['status']}")
    best = max(args.workers)
    if "b" not in args.parts:
        return
    print("\n(b) peak RSS of the main process")
    small = run_classify(tiny, [], work / "small.parquet", "--files-from", str(work / "subset.txt"),
                         "--num-workers", str(best), "--batch-size", "16")
    large = runs[best]
    print(f"  {len(subset)} files: {small['peak_mb']:.0f} MB; {len(files)} files: {large['peak_mb']:.0f} MB "
          f"({large['peak_mb'] / small['peak_mb']:.2f}x), --num-workers {best}")


def base_rates(short, rounds, work) -> None:
    """(c): the model-only rate and the corpus run on the same files, alternated `rounds` times (this CPU's speed
    drifts by 10-20% between minutes, so single runs are not compared); the run in this process with the model loaded
    (as `run_corpus` is called from Python), then once as a fresh `ast-hf classify` process (start and load
    included)."""
    print(f"\n(c) base model (86 M parameters), clips at their own length, batch 8, the same {len(short)} files for "
          f"each rate, {rounds} alternated rounds (mean +- std)")
    from transformers import pipeline

    from ast_hf.corpus import run_corpus

    base = work / "base" if (work / "base").is_dir() else save_model(work / "base", max_length=1024)
    (work / "base.txt").write_text("\n".join(short) + "\n")
    batches = window_batches(base, short, 8)
    for optimize in (None, "auto"):
        tagger = pipeline("audio-tagging", model=str(base), device="cpu", optimize=optimize)
        model_only, in_process = [], []
        for _ in range(rounds):
            with torch.inference_mode():
                seconds, _ = timed_logits(lambda batch, m=tagger.model: m(**batch).logits, batches)
            model_only.append(len(short) / seconds)
            start = time.perf_counter()
            run_corpus(tagger, "classify", short, str(work / "base_in_process.parquet"), overwrite=True,
                       options={"batch_size": 8}, log=lambda line: None)
            in_process.append(len(short) / (time.perf_counter() - start))
        del tagger
        extra = ["--optimize", optimize] if optimize else []
        result = run_classify(base, [], work / "base.parquet", "--files-from", str(work / "base.txt"),
                              "--batch-size", "8", *extra)
        fresh = len(short) / result["seconds"]
        rate, run = float(np.mean(model_only)), float(np.mean(in_process))
        print(f"  {optimize or 'float32'}: model only {rate:.2f} +- {np.std(model_only):.2f} files/s; corpus run in "
              f"process {run:.2f} +- {np.std(in_process):.2f} files/s = {run / rate:.2f} of it; `ast-hf classify` "
              f"{fresh:.2f} files/s ({result['seconds']:.0f} s, process start and model load included) = "
              f"{fresh / rate:.2f} of it")


def against_builtin(few, work) -> None:
    """(d): both in this process with the model loaded, the same files, the same weights."""
    print("\n(d) against transformers' built-in AST, padded to 1024 frames, same weights, batch 8 (in process)")
    import transformers

    from ast_hf.convert import from_builtin_model
    from ast_hf.corpus import run_corpus

    torch.manual_seed(0)
    builtin = transformers.ASTForAudioClassification(transformers.ASTConfig(num_labels=10)).eval()
    builtin.save_pretrained(work / "builtin")
    transformers.ASTFeatureExtractor().save_pretrained(work / "builtin")
    from_builtin_model(builtin).save_pretrained(work / "ours_padded")
    ast_hf.ASTFeatureExtractor(pad_to_max_length=True).save_pretrained(work / "ours_padded")
    classifier = transformers.pipeline("audio-classification", model=str(work / "builtin"), device="cpu")
    classifier(few[0])
    start = time.perf_counter()
    theirs = classifier(few, batch_size=8, top_k=3)
    theirs_rate = len(few) / (time.perf_counter() - start)
    print(f"  built-in pipeline over the paths: {theirs_rate:.3f} files/s")
    for optimize in (None, "auto"):
        tagger = transformers.pipeline("audio-tagging", model=str(work / "ours_padded"), device="cpu",
                                       optimize=optimize)
        tagger(few[0])
        output = work / f"ours_{optimize}.parquet"
        start = time.perf_counter()
        run_corpus(tagger, "classify", few, str(output), num_workers=1, overwrite=True,
                   options={"top_k": 3, "batch_size": 8}, log=lambda line: None)
        ours_rate = len(few) / (time.perf_counter() - start)
        ours_rows = rows(output)
        difference = max(abs(a["score"] - b["score"]) for path, got in zip(few, theirs, strict=True)
                         for a, b in zip(sorted(got, key=lambda x: x["label"]),
                                         sorted(ours_rows[path]["clip"], key=lambda x: x["label"]), strict=True))
        print(f"  ast_hf corpus run, {optimize or 'float32'}: {ours_rate:.3f} files/s = "
              f"{ours_rate / theirs_rate:.2f}x the built-in; largest score difference {difference:.1e}")


def kills(tiny, work) -> None:
    print("\n(e) SIGKILL at three random moments, then the same command (2,000 files, tiny model)")
    command = [sys.executable, "-m", "ast_hf.cli", "classify", "--files-from", str(work / "subset.txt"), "--model",
               str(tiny), "--output", str(work / "killed.parquet"), "--no-progress", "--batch-size", "16",
               "--group-size", "32"]
    if not (work / "small.parquet").exists():  # the uninterrupted run, from (b) or made here
        run_classify(tiny, [], work / "small.parquet", "--files-from", str(work / "subset.txt"), "--batch-size", "16")
    random_moment = random.Random(0)
    for kill in range(3):
        process = subprocess.Popen(command, stderr=subprocess.DEVNULL)
        time.sleep(random_moment.uniform(6, 14))
        process.send_signal(signal.SIGKILL)
        process.wait()
        parts = len(list((work / "killed.parquet.partial").glob("part-*")))
        print(f"  kill {kill + 1}: {parts} part(s) of 32 files on disk; output present: "
              f"{(work / 'killed.parquet').exists()}")
    subprocess.run(command, stderr=subprocess.DEVNULL)
    reference, killed = rows(work / "small.parquet"), rows(work / "killed.parquet")
    largest = max(abs(a["score"] - b["score"]) for path in reference if reference[path]["error"] is None
                  for a, b in zip(reference[path]["clip"], killed[path]["clip"], strict=True))
    print(f"  final output: {len(killed)} rows, {len(set(reference) - set(killed))} missing, "
          f"{len(set(killed) - set(reference))} extra, largest score difference {largest:.1e}")



def onnx_candidates(few, work) -> None:
    """(f): onnxruntime (the package's own ONNX export) against torch's modes, forward passes only, the same
    windows, with the accuracy guard's two measures against float32."""
    print("\n(f) onnxruntime as a candidate for --optimize auto: base model, forward passes only, batch 8")
    from ast_hf.fast_inference import native_bf16, optimize_for_inference, resolve_mode
    from ast_hf.onnx_export import OnnxAudioClassifier, export_onnx

    base = work / "base" if (work / "base").is_dir() else save_model(work / "base", max_length=1024)
    start = time.perf_counter()
    written = export_onnx(base, work / "base_onnx", quantize="int8")
    print(f"  export (float32 and int8, onnxruntime check included): {time.perf_counter() - start:.0f} s")
    batches = window_batches(base, few, 8)
    model = ast_hf.ASTForAudioClassification.from_pretrained(base).eval()
    config = model.config
    runs = {"torch float32": model, "torch int8": optimize_for_inference(model, "int8")}
    if native_bf16():
        runs["torch bf16"] = optimize_for_inference(model, "bf16")
    results = {}
    for name, candidate in runs.items():
        with torch.inference_mode():
            results[name] = timed_logits(lambda batch, m=candidate: m(**batch).logits.float(), batches)
    for name, path in (("onnxruntime float32", written["onnx"]), ("onnxruntime int8", written["quantized"])):
        session = OnnxAudioClassifier(path, config)
        results[name] = timed_logits(lambda batch, s=session: s(batch["input_values"], batch.get("attention_mask")),
                                     batches)
    reference = torch.from_numpy(results["torch float32"][1]).softmax(-1)
    auto = f"torch {resolve_mode('auto')}"
    for name, (seconds, logits) in results.items():
        probabilities = torch.from_numpy(logits).softmax(-1)
        agreement = float((probabilities.argmax(-1) == reference.argmax(-1)).float().mean())
        change = float((probabilities - reference).abs().max())
        print(f"  {name:20s} {len(few) / seconds:5.2f} files/s = {results['torch float32'][0] / seconds:.2f}x "
              f"float32, {results[auto][0] / seconds:.2f}x auto ({auto}); top-1 agreement {agreement:.1%}, largest "
              f"probability change {change:.3f}")
    # The same candidates on 10-second clips (1024 frames), where attention is a third of the work.
    long = {"input_values": torch.randn(8, 1024, config.num_mel_bins), "attention_mask": torch.ones(8, 1024).long()}
    sessions = {name: OnnxAudioClassifier(path, config) for name, path in (("onnxruntime float32", written["onnx"]),
                                                                           ("onnxruntime int8", written["quantized"]))}
    seconds = {}
    for name, candidate in runs.items():
        with torch.inference_mode():
            seconds[name] = timed_logits(lambda batch, m=candidate: m(**batch).logits.float(), [long, long])[0] / 2
    for name, session in sessions.items():
        seconds[name] = timed_logits(lambda batch, s=session: s(batch["input_values"], batch["attention_mask"]),
                                     [long, long])[0] / 2
    print("  8 clips x 1024 frames: " + ", ".join(f"{name} {value:.2f} s ({seconds[auto] / value:.2f}x auto)"
                                                  for name, value in seconds.items()))


if __name__ == "__main__":
    main()
