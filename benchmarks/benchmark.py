"""ast_hf vs transformers' built-in AST, side by side in one process; prints times and ratios.

(a) feature extraction of 32 ten-second clips (default settings, padded to 1024 frames);
(b) forward of the base config (86.6 M parameters), batch 4, 1024 frames, sdpa, the same weights;
(c) 1-second clips (batch 8): ours with padding="longest" + attention mask vs the built-in padded to 1024 frames,
    feature extraction and forward together.
Also prints the GFLOP/s that (b) achieves next to a large float32 matmul's in the same run.
Ratios are built-in time / ast_hf time (above 1 means ast_hf is faster).
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time

import numpy as np
import torch
import transformers

import ast_hf


def paired_times(theirs, ours, repeats: int) -> tuple[float, float]:
    """Median times of two functions, run alternately so that drift in machine load hits both alike."""
    theirs()  # warm-up
    ours()
    times: tuple[list[float], list[float]] = ([], [])
    for _ in range(repeats):
        for function, bucket in ((theirs, times[0]), (ours, times[1])):
            start = time.perf_counter()
            function()
            bucket.append(time.perf_counter() - start)
    return statistics.median(times[0]), statistics.median(times[1])


def best_time(function, repeats: int) -> float:
    function()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def kernel_floor(frames: int, repeats: int) -> dict[str, float]:
    """Times of the three kernels that any torch fbank of `frames` frames must run, alone on ready-made data:
    the 512-point rfft, the banded mel projection of ast_hf (the cheapest exact one found) and the log.
    Their sum bounds how fast (a) can get with torch's CPU kernels, before framing, pre-emphasis and window."""
    from ast_hf.feature_extraction_ast import CPU_BLOCK_FRAMES, kaldi_mel_banks, mel_band_groups, project_mel

    rows = torch.randn(CPU_BLOCK_FRAMES, 512)
    squares = torch.view_as_real(torch.fft.rfft(rows)).square().view(CPU_BLOCK_FRAMES, -1)  # (block, 514)
    groups = mel_band_groups(kaldi_mel_banks(128, 16000))
    energies = torch.empty(CPU_BLOCK_FRAMES, 128)
    blocks = frames / CPU_BLOCK_FRAMES
    return {
        "rfft": blocks * best_time(lambda: torch.fft.rfft(rows), repeats),
        "mel": blocks * best_time(lambda: project_mel(squares, groups, energies), repeats),
        "log": blocks * best_time(lambda: torch.log(energies), repeats),
    }


def forward_flops(config: ast_hf.ASTConfig, batch: int, frames: int) -> float:
    f, t = config.patch_grid_for(frames)
    n, d, m = f * t + 2, config.hidden_size, config.intermediate_size
    per_layer = 2 * n * (4 * d * d + 2 * d * m) + 4 * n * n * d  # projections + MLP, then QK^T and AV
    patch = 2 * f * t * d * config.patch_size**2
    return batch * (config.num_hidden_layers * per_layer + patch)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=15, help="timed runs of (a); the median is reported")
    parser.add_argument("--forward_repeats", type=int, default=3, help="timed runs of (b) and (c)")
    args = parser.parse_args()
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    print(f"machine: {platform.processor() or platform.machine()}, {torch.get_num_threads()} torch threads, "
          f"torch {torch.__version__}, transformers {transformers.__version__}")
    rows = []

    # (a) feature extraction
    clips = [(rng.standard_normal(160_000) * 0.1).astype(np.float32) for _ in range(32)]
    ours_fe, theirs_fe = ast_hf.ASTFeatureExtractor(), transformers.ASTFeatureExtractor()
    theirs, ours = paired_times(lambda: theirs_fe(clips, sampling_rate=16000, return_tensors="pt"),
                                lambda: ours_fe(clips, sampling_rate=16000, return_tensors="pt"), args.repeats)
    rows.append(("(a) features, 32 x 10 s clips", theirs, ours))
    frames = sum(ast_hf.feature_extraction_ast.num_frames(len(clip)) for clip in clips)
    floor = kernel_floor(frames, args.repeats)

    # (b) base forward, same weights
    config = ast_hf.ASTConfig(num_labels=527)
    ours_model = ast_hf.ASTForAudioClassification._from_config(config, attn_implementation="sdpa").eval()
    builtin_config = transformers.ASTConfig(num_labels=527)
    theirs_model = transformers.ASTForAudioClassification._from_config(builtin_config,
                                                                       attn_implementation="sdpa").eval()
    missing = theirs_model.load_state_dict(_as_builtin(ours_model, theirs_model), strict=True)
    assert not missing.missing_keys
    inputs = torch.randn(4, 1024, 128)
    with torch.inference_mode():
        difference = (ours_model(inputs).logits - theirs_model(inputs).logits).abs().max().item()
        theirs, ours = paired_times(lambda: theirs_model(inputs), lambda: ours_model(inputs), args.forward_repeats)
    rows.append(("(b) base forward, 4 x 1024 frames", theirs, ours))
    flops = forward_flops(config, 4, 1024)
    a = torch.randn(4096, 4096)
    matmul = best_time(lambda: a @ a, 3)

    # (c) 1-second clips
    short = [(rng.standard_normal(16_000) * 0.1).astype(np.float32) for _ in range(8)]

    def ours_short():
        features = ours_fe(short, sampling_rate=16000, padding="longest", return_attention_mask=True,
                           return_tensors="pt")
        return ours_model(**features)

    def theirs_short():
        return theirs_model(**theirs_fe(short, sampling_rate=16000, return_tensors="pt"))

    with torch.inference_mode():
        theirs, ours = paired_times(theirs_short, ours_short, args.forward_repeats)
    rows.append(("(c) 8 x 1 s clips, features + forward", theirs, ours))

    print("\n| case | transformers (s) | ast_hf (s) | speed-up |\n|---|---|---|---|")
    for name, theirs, ours in rows:
        print(f"| {name} | {theirs:.3f} | {ours:.3f} | {theirs / ours:.2f}x |")
    parts = ", ".join(f"{name} {seconds * 1e3:.1f} ms" for name, seconds in floor.items())
    total = sum(floor.values())
    print(f"\n(a) kernels alone on the same {frames} frames: {parts}; sum {total * 1e3:.1f} ms, i.e. at most "
          f"{rows[0][1] / total:.2f}x even if framing, DC removal, pre-emphasis, window and normalisation were free.")
    print(f"(b) max |logit difference| {difference:.2e}; ast_hf forward {flops / rows[1][2] / 1e9:.1f} GFLOP/s, "
          f"built-in {flops / rows[1][1] / 1e9:.1f} GFLOP/s, 4096^2 float32 matmul {2 * 4096**3 / matmul / 1e9:.1f} "
          f"GFLOP/s ({flops / 1e12:.2f} TFLOP per forward)")


def _as_builtin(ours: torch.nn.Module, theirs: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Our state dict under the built-in's in-memory names (transformers 5 renames on load), via a save/load."""
    import tempfile

    with tempfile.TemporaryDirectory() as folder:
        ours.save_pretrained(folder)
        loaded = type(theirs).from_pretrained(folder)
    return loaded.state_dict()


if __name__ == "__main__":
    main()
