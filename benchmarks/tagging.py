"""Tagging long recordings with the "audio-tagging" pipeline: real-time factor and peak memory.

(1) Real-time factor of the base configuration (86.6 M parameters, AudioSet's 527 labels, random weights: speed
    does not depend on the values) on a long file (espeak-ng speech over pink noise, 44.1 kHz stereo FLAC, so that
    decoding, resampling and downmixing are part of the time), float32, default hop (half a 10.24 s window),
    batch_size 4, and with optimize="int8", "bf16" (where the CPU has native bfloat16) and "auto". RTF = processing
    seconds / audio seconds (below 1 is faster than real time).
(2) Peak memory (ru_maxrss of a fresh process) of tagging a 1-minute and a 1-hour file with a tiny model: what
    streaming decode keeps bounded is the audio, not the model.
Prints a table; nothing is asserted (tests/test_tagging.py checks the memory bound).
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import numpy as np
import soundfile
import torch
from transformers import pipeline

import ast_hf
from ast_hf.audio_io import espeak_speech
from ast_hf.fast_inference import native_bf16, resolve_mode
from ast_hf.presets import dataset_labels

PEAK_MEMORY = textwrap.dedent("""
    import json, resource, sys, time
    import ast_hf
    from transformers import pipeline
    tagger = pipeline("audio-tagging", model=sys.argv[1])
    start = time.perf_counter()
    result = tagger(sys.argv[2])
    print(json.dumps({"peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                      "seconds": time.perf_counter() - start, "duration": result["duration"]}))
""")


def long_recording(path: Path, seconds: float) -> Path:
    """Sentences of espeak-ng speech every few seconds over quiet pink noise, 44.1 kHz stereo FLAC."""
    rate = 16000
    generator = np.random.default_rng(0)
    audio = generator.standard_normal(int(seconds * rate)).astype(np.float32) * 0.003
    sentences = ["the quick brown fox jumps over the lazy dog", "turn left at the next light", "seven eight nine"]
    position, index = 1.0, 0
    while position < seconds - 4:
        clip = espeak_speech(sentences[index % len(sentences)], voice=("en", "en-us", "en-gb")[index % 3])
        begin = int(position * rate)
        audio[begin:begin + len(clip)] += clip[:len(audio) - begin]
        position += len(clip) / rate + 2.0
        index += 1
    stereo = torch.from_numpy(audio)
    import torchaudio

    stereo = torchaudio.functional.resample(stereo, rate, 44100)
    soundfile.write(path, torch.stack([stereo, 0.8 * stereo], dim=1).numpy(), 44100)
    return path


def base_model(folder: Path) -> Path:
    labels = dataset_labels("audioset")
    config = ast_hf.ASTConfig(num_labels=len(labels), id2label=dict(enumerate(labels)),
                              label2id={n: i for i, n in enumerate(labels)})
    ast_hf.ASTForAudioClassification(config).save_pretrained(folder)
    ast_hf.ASTFeatureExtractor().save_pretrained(folder)
    return folder


def tiny_model(folder: Path) -> Path:
    config = ast_hf.ASTConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
                              frequency_stride=16, time_stride=16, num_labels=5)
    ast_hf.ASTForAudioClassification(config).save_pretrained(folder)
    ast_hf.ASTFeatureExtractor().save_pretrained(folder)
    return folder


def peak_memory(model: Path, audio: Path) -> dict:
    done = subprocess.run([sys.executable, "-c", PEAK_MEMORY, str(model), str(audio)], capture_output=True,
                          text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=120.0, help="length of the real-time-factor recording")
    parser.add_argument("--skip_memory", action="store_true", help="skip (2), the 1-hour file")
    args = parser.parse_args()
    machine = platform.processor() or platform.machine()
    flags = " ".join(flag for flag in ("avx2", "avx512_vnni", "avx512_bf16", "amx_bf16")
                     if flag in Path("/proc/cpuinfo").read_text())
    print(f"{machine}, {torch.get_num_threads()} threads, torch {torch.__version__}; CPU flags: {flags or 'unknown'}")
    with tempfile.TemporaryDirectory() as folder:
        folder = Path(folder)
        audio = long_recording(folder / "long.flac", args.seconds)
        model = base_model(folder / "base")
        for mode in (None, "int8", "bf16", "auto"):  # float32 and the fast modes (docs: "Fast inference and ONNX")
            if mode == "bf16" and not native_bf16():
                print("(1) bf16 skipped: this CPU has no native bfloat16 (oneDNN would emulate it)")
                continue
            tagger = pipeline("audio-tagging", model=str(model), optimize=mode)
            if mode == "auto":
                mode = f"auto = {resolve_mode('auto')}"
            tagger(np.zeros(16000, np.float32), sampling_rate=16000)  # warm-up
            start = time.perf_counter()
            result = tagger(str(audio), batch_size=4)
            elapsed = time.perf_counter() - start
            print(f"(1) base model, {mode or 'float32'}, {result['duration']:.0f} s file, {len(result['segments'])} "
                  f"windows: {elapsed:.1f} s, real-time factor {elapsed / result['duration']:.3f} "
                  f"({result['duration'] / elapsed:.1f}x faster than real time)")
        if args.skip_memory:
            return
        model = tiny_model(folder / "tiny")
        for name, seconds in (("1 minute", 60), ("1 hour", 3600)):
            path = folder / f"{seconds}.wav"
            subprocess.run(["sox", "-n", "-r", "44100", "-c", "2", "-b", "16", str(path), "synth", str(seconds),
                            "pinknoise", "vol", "0.1"], check=True)
            figures = peak_memory(model, path)
            print(f"(2) {name} (44.1 kHz stereo WAV, {path.stat().st_size / 1e6:.0f} MB): peak memory "
                  f"{figures['peak_mb']:.0f} MB, {figures['seconds']:.1f} s")
            path.unlink()


if __name__ == "__main__":
    main()
