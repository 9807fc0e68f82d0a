"""A 20-second plumbing demo with random weights: build an AST, featurise real speech, classify it.

1. Speak the ten Speech Commands words with espeak-ng (real speech, no network), at 16 kHz.
2. Featurise them in one batched call (padding="longest" + attention mask) and check the fbank against
   torchaudio's Kaldi reference.
3. Build a small ASTForAudioClassification with the ten labels and the Speech Commands preset's statistics and
   length, save it (weights, config, code, extractor), load it back through pipeline("audio-classification") and
   classify every word.
The weights are random, so the labels it picks are arbitrary: this shows the plumbing, not accuracy. The README's
main command (examples/run_audio_classification.py with examples/recipes/espeak_commands.json) trains one.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch
import torchaudio
from transformers import pipeline

import ast_hf
from ast_hf.audio_io import espeak_available, espeak_speech
from ast_hf.espeak_commands import WORDS
from ast_hf.presets import dataset_settings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output_dir", default="outputs/demo", help="where the model directory is written")
    args = parser.parse_args()
    if not espeak_available():
        raise SystemExit("espeak-ng is missing: run `bash scripts/setup.sh` first.")

    clips = [espeak_speech(word, voice="en-us") for word in WORDS]
    print(f"spoke {len(clips)} words, {min(map(len, clips))}-{max(map(len, clips))} samples at 16 kHz")

    preset = dataset_settings("speechcommands")
    extractor = ast_hf.ASTFeatureExtractor(max_length=preset["max_length"], mean=preset["mean"], std=preset["std"])
    start = time.perf_counter()
    batch = extractor(clips, sampling_rate=16000, padding="longest", return_attention_mask=True,
                      return_tensors="pt")
    print(f"features {tuple(batch['input_values'].shape)} in {1000 * (time.perf_counter() - start):.1f} ms")
    reference = torchaudio.compliance.kaldi.fbank(
        torch.from_numpy(clips[0])[None], htk_compat=True, sample_frequency=16000, use_energy=False,
        window_type="hanning", num_mel_bins=128, dither=0.0, frame_shift=10)
    ours = batch["input_values"][0, : reference.shape[0]] * 2 * extractor.std + extractor.mean
    print(f"max |ours - torchaudio kaldi fbank| on '{WORDS[0]}': {float((ours - reference).abs().max()):.2e}")

    config = ast_hf.ASTConfig(hidden_size=192, num_hidden_layers=4, num_attention_heads=3, intermediate_size=768,
                              max_length=preset["max_length"], id2label=dict(enumerate(WORDS)),
                              label2id={w: i for i, w in enumerate(WORDS)})
    torch.manual_seed(0)
    model = ast_hf.ASTForAudioClassification(config).eval()
    output_dir = Path(args.output_dir)
    model.save_pretrained(output_dir)
    extractor.save_pretrained(output_dir)
    print(f"saved a {sum(p.numel() for p in model.parameters()) / 1e6:.2f} M-parameter AST to {output_dir}")

    classifier = pipeline("audio-classification", model=str(output_dir))
    for word, clip in zip(WORDS, clips, strict=True):
        top = classifier({"array": clip, "sampling_rate": 16000}, top_k=3)
        print(f"  {word:>5}: " + ", ".join(f"{r['label']} {r['score']:.2f}" for r in top))
    print("(random weights: the labels are arbitrary until the model is fine-tuned)")


if __name__ == "__main__":
    main()
