"""ast_hf vs transformers' built-in AST, side by side in one process; prints times and ratios.

(a) feature extraction of 32 ten-second clips (default settings, padded to 1024 frames);
(b) forward of the base config (86.6 M parameters), batch 4, 1024 frames, sdpa, the same weights;
(c) 1-second clips (batch 8), feature extraction and forward together, as each checkpoint must be fed:
    a padded-trained checkpoint (every released AST): both padded to 1024 frames, the same logits;
    (c') a checkpoint trained on masked batches (ast_hf's fine-tuning default): ast_hf runs the clips at their own
    length with the attention mask, against the built-in, which can only pad (its logits then differ: the speed-up
    holds for models trained that way only).
Also prints the GFLOP/s that (b) achieves next to a large float32 matmul's in the same run.
Ratios are built-in time / ast_hf time (above 1 means ast_hf is faster).
(d) fast inference (issue 13), base config, 8 clips x 1024 frames, the same weights: the built-in in float32 and
    loaded in bfloat16, ast_hf in float32 and in each mode of `ast_hf.optimize_for_inference` this machine runs
    natively, with the float32/bfloat16 matmul GFLOP/s of the same run; skip with --skip_fast.
(e) training steps (forward + backward + Adam), base config, 2 clips x 1024 frames, float32 weights: the built-in
    against ast_hf with sdpa, structured Patchout, bfloat16 autocast, gradient checkpointing and torch.compile, in
    clips/s and the process's peak memory (each case in a fresh process); skip with --skip_training.
Everything printed is also written to benchmarks/RESULTS.md with the machine (CPU model and flags, cores, versions).
"""

from __future__ import annotations

import argparse
import builtins
import os
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


def best_time(function, repeats: int, warm_up: bool = True) -> float:
    if warm_up:
        function()
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
    from ast_hf.kaldi_fbank import CPU_BLOCK_FRAMES, kaldi_mel_banks, mel_band_groups, project_mel

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
    parser.add_argument("--skip_fast", action="store_true", help="skip (d), the fast-inference modes")
    parser.add_argument("--compile", action="store_true", help="(d) also times mode 'compile' (minutes to compile)")
    parser.add_argument("--skip_training", action="store_true", help="skip (e), the training steps")
    parser.add_argument("--training_steps", type=int, default=3, help="timed steps of each (e) case")
    parser.add_argument("--results", default="benchmarks/RESULTS.md", help="where the report is written")
    args = parser.parse_args()
    report = Report()
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    print = report.print  # noqa: A001 (everything printed also goes to RESULTS.md)
    print(machine_description())
    rows = []

    # (a) feature extraction
    clips = [(rng.standard_normal(160_000) * 0.1).astype(np.float32) for _ in range(32)]
    ours_fe, theirs_fe = ast_hf.ASTFeatureExtractor(), transformers.ASTFeatureExtractor()
    theirs, ours = paired_times(lambda: theirs_fe(clips, sampling_rate=16000, return_tensors="pt"),
                                lambda: ours_fe(clips, sampling_rate=16000, return_tensors="pt"), args.repeats)
    rows.append(("(a) features, 32 x 10 s clips", theirs, ours))
    frames = sum(ast_hf.kaldi_fbank.num_frames(len(clip)) for clip in clips)
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

    masked_fe = ast_hf.ASTFeatureExtractor(pad_to_max_length=False)  # the extractor saved by masked training

    def ours_padded():  # the default call of a padded-trained checkpoint's extractor: 1024 frames, no mask
        return ours_model(**ours_fe(short, sampling_rate=16000, return_tensors="pt"))

    def ours_masked():  # the default call of a masked-trained checkpoint's extractor: 98 frames and the mask
        return ours_model(**masked_fe(short, sampling_rate=16000, return_tensors="pt"))

    def theirs_short():
        return theirs_model(**theirs_fe(short, sampling_rate=16000, return_tensors="pt"))

    with torch.inference_mode():
        short_difference = (ours_padded().logits - theirs_short().logits).abs().max().item()
        theirs, ours = paired_times(theirs_short, ours_padded, args.forward_repeats)
        rows.append(("(c) 8 x 1 s clips, padded-trained checkpoint: both padded to 1024 frames", theirs, ours))
        theirs, ours = paired_times(theirs_short, ours_masked, args.forward_repeats)
        rows.append(("(c') 8 x 1 s clips, checkpoint trained on masked batches: ast_hf at 98 frames + mask",
                     theirs, ours))

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
    print(f"(c) max |logit difference| {short_difference:.2e} (the same computation); (c') differs by design: a model "
          "trained on masked batches is run masked, one trained padded is run padded.")
    if not args.skip_fast:
        fast_inference(ours_model, theirs_model, config, print, args.compile)
    if not args.skip_training:
        del ours_model, theirs_model
        training_throughput(print, args.training_steps)
    report.write(args.results)


class Report:
    """Collects what the benchmark prints, for RESULTS.md."""

    def __init__(self) -> None:
        self.lines: list[str] = []

    def print(self, *parts: object) -> None:
        text = " ".join(str(part) for part in parts)
        self.lines.append(text)
        builtins.print(text, flush=True)

    def write(self, path: str) -> None:
        with open(path, "w", encoding="utf-8") as handle:
            handle.write("# Benchmark results (`python3 benchmarks/benchmark.py`)\n\n```\n")
            handle.write("\n".join(self.lines) + "\n```\n")


def machine_description() -> str:
    """CPU model, the instruction-set flags that decide bf16/int8 speed, cores, torch and transformers versions."""
    model, flags = platform.processor() or platform.machine(), set()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            for line in handle:
                if line.startswith("model name") and model in ("", "x86_64"):
                    model = line.split(":", 1)[1].strip()
                if line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
    except OSError:
        pass
    wanted = ["avx2", "fma", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_bf16", "amx_int8"]
    present = [flag for flag in wanted if flag in flags]
    missing = [flag for flag in wanted if flag not in flags]
    return (f"machine: {model}, {os.cpu_count()} cores, {torch.get_num_threads()} torch threads; CPU flags present: "
            f"{' '.join(present) or '-'}; absent: {' '.join(missing) or '-'}; torch {torch.__version__} "
            f"(CPU capability {torch.backends.cpu.get_cpu_capability()}), transformers {transformers.__version__}")


def fast_inference(ours_model, theirs_model, config, print, with_compile: bool) -> None:
    """(d): throughput of each inference mode on 8 x 1024 frames, against the built-in in float32 and bfloat16."""
    import copy
    import warnings

    from ast_hf.fast_inference import native_bf16, optimize_for_inference

    inputs = torch.randn(8, 1024, 128)
    cases = [("built-in, float32", theirs_model),
             ("built-in, dtype=torch.bfloat16", copy.deepcopy(theirs_model).to(torch.bfloat16)),
             ("ast_hf, float32", ours_model),
             ("ast_hf, int8", optimize_for_inference(ours_model, "int8"))]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cases.append(("ast_hf, bf16", optimize_for_inference(ours_model, "bf16")))
    if with_compile:
        cases.append(("ast_hf, compile", optimize_for_inference(ours_model, "compile")))
    with torch.inference_mode():
        reference = ours_model(inputs).logits.sigmoid()
        times = {}
        for name, model in cases:
            # The built-in does not cast its input to its weights' dtype; ast_hf does (int8 keeps float32 inputs).
            given = inputs.to(next(model.parameters()).dtype)
            # warm-up + 1 run: minutes; emulated bfloat16 (no native support) only the 1 run, it takes many minutes
            emulated = given.dtype == torch.bfloat16 and not native_bf16("cpu")
            times[name] = best_time(lambda model=model, given=given: model(given), 1, warm_up=not emulated)
            change = (model(given).logits.float().sigmoid() - reference).abs().max().item()
            times[name] = (times[name], change)
    a32 = torch.randn(2048, 2048)
    a16 = a32.to(torch.bfloat16)
    gflops = {dtype: 2 * 2048**3 / best_time(lambda a=a: a @ a, 3) / 1e9 for dtype, a in
              (("float32", a32), ("bfloat16", a16))}
    flops = forward_flops(config, 8, 1024)
    base32, base16 = times["built-in, float32"][0], times["built-in, dtype=torch.bfloat16"][0]
    print("\n(d) fast inference, base config, 8 x 1024 frames (random inputs; sigmoid change against ast_hf float32)")
    print("| mode | s | clips/s | vs built-in float32 | vs built-in bf16 | GFLOP/s | max sigmoid change |")
    print("|---|---|---|---|---|---|---|")
    for name, (seconds, change) in times.items():
        print(f"| {name} | {seconds:.2f} | {8 / seconds:.2f} | {base32 / seconds:.2f}x | {base16 / seconds:.2f}x | "
              f"{flops / seconds / 1e9:.0f} | {change:.4f} |")
    print(f"2048^2 matmul: float32 {gflops['float32']:.1f} GFLOP/s, bfloat16 {gflops['bfloat16']:.1f} GFLOP/s "
          f"(native bfloat16: {native_bf16('cpu')})")


# (e): Patchout at the paper scale. PaSST's structured Patchout for 10-second AudioSet clips (a 12 x 99 grid there)
# drops 40 time columns and 4 frequency rows; on AST's 12 x 101 grid the same counts keep 8 x 61 = 488 of the 1212
# patches (40%), the proportions PaSST trained its AudioSet models with.
PATCHOUT = (40, 4)
TRAINING_CASES = {
    "built-in, sdpa": {"builtin": True},
    "built-in, sdpa, bf16 autocast": {"builtin": True, "autocast": True},  # what the Trainer's --bf16 gives it
    "ast_hf, sdpa": {},
    "ast_hf, Patchout 40 x 4": {"patchout": PATCHOUT},
    "ast_hf, Patchout 40 x 4, bf16 autocast": {"patchout": PATCHOUT, "autocast": True},
    "ast_hf, Patchout 40 x 4, gradient checkpointing": {"patchout": PATCHOUT, "checkpointing": True},
    "ast_hf, Patchout 40 x 4, torch.compile": {"patchout": PATCHOUT, "compile": True},
    "ast_hf, Patchout 40 x 4, fused Adam": {"patchout": PATCHOUT, "fused": True},
    "ast_hf, Patchout 40 x 4, bf16 autocast, torch.compile": {"patchout": PATCHOUT, "autocast": True, "compile": True},
}


def peak_rss_mb(reset: bool = False) -> float:
    """The process's peak resident memory (VmHWM) in MB; `reset` first sets the peak to the current size."""
    if reset:
        with open("/proc/self/clear_refs", "w", encoding="utf-8") as handle:
            handle.write("5")
    with open("/proc/self/status", encoding="utf-8") as handle:
        return next(int(line.split()[1]) for line in handle if line.startswith("VmHWM")) / 1024


def training_case(spec: dict, batch: int, frames: int, steps: int, results) -> None:
    """One (e) case in its own process: (median seconds per step, peak MB during the steps) into `results`."""
    torch.manual_seed(0)
    fields = dict(num_labels=527, problem_type="multi_label_classification")
    if spec.get("builtin"):
        model = transformers.ASTForAudioClassification._from_config(transformers.ASTConfig(**fields),
                                                                    attn_implementation="sdpa")
    else:
        time_columns, frequency_rows = spec.get("patchout", (0, 0))
        model = ast_hf.ASTForAudioClassification._from_config(
            ast_hf.ASTConfig(**fields, patchout_time=time_columns, patchout_frequency=frequency_rows),
            attn_implementation="sdpa")
    model.train()
    if spec.get("checkpointing"):
        model.activation_checkpointing_enable()  # transformers 5: gradient_checkpointing_enable is deprecated
    if spec.get("compile"):
        model.compile()  # in place
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-5, fused=bool(spec.get("fused")))
    inputs = torch.randn(batch, frames, 128)
    labels = (torch.rand(batch, 527) < 0.01).float()

    def step() -> None:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bool(spec.get("autocast"))):
            loss = model(inputs, labels=labels).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    step()  # warm-up: Adam's state, compilation
    if spec.get("compile"):
        step()
    peak_rss_mb(reset=True)
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    results.put((statistics.median(times), peak_rss_mb()))


def training_throughput(print, steps: int, batch: int = 2, frames: int = 1024) -> None:
    """(e): each case of TRAINING_CASES in a fresh process (peak memory is per process), side by side."""
    import multiprocessing

    from ast_hf.fast_inference import native_bf16

    context = multiprocessing.get_context("spawn")
    measured: dict[str, list[tuple[float, float]]] = {}
    skipped = []
    # The cases run one after another and the machine's speed drifts: the built-in runs first and again last, and
    # its mean is the baseline.
    for name in [*TRAINING_CASES, "built-in, sdpa"]:
        spec = TRAINING_CASES[name]
        if spec.get("autocast") and not native_bf16("cpu"):
            skipped.append(name)  # emulated: minutes a step (measured 206 s, 0.07x, on an AVX2-only EPYC)
            continue
        results = context.Queue()
        process = context.Process(target=training_case, args=(spec, batch, frames, steps, results))
        process.start()
        measured.setdefault(name, []).append(results.get())
        process.join()
        seconds, peak = measured[name][-1]
        builtins.print(f"  (e) {name}: {seconds:.2f} s/step, peak {peak:.0f} MB", flush=True)
    measured = {name: (statistics.mean(t for t, _ in visits), max(m for _, m in visits))
                for name, visits in measured.items()}
    base_seconds, base_peak = measured["built-in, sdpa"]
    bf16_seconds, bf16_peak = measured.get("built-in, sdpa, bf16 autocast", (float("nan"), float("nan")))
    print(f"\n(e) training steps (forward + backward + Adam), base config, {batch} x {frames} frames, float32 "
          f"weights, median of {steps} steps (the built-in: mean of a first and a last run); peak = the process's "
          "peak resident memory during the steps")
    print("| setting | s/step | clips/s | vs built-in | vs built-in bf16 autocast | peak MB | vs built-in peak | "
          "vs built-in bf16 peak |\n|---|---|---|---|---|---|---|---|")
    for name, (seconds, peak) in measured.items():
        print(f"| {name} | {seconds:.2f} | {batch / seconds:.2f} | {base_seconds / seconds:.2f}x | "
              f"{bf16_seconds / seconds:.2f}x | {peak:.0f} | {peak - base_peak:+.0f} MB | "
              f"{peak - bf16_peak:+.0f} MB |")
    if skipped:
        print(f"skipped (bfloat16 is emulated on this CPU, minutes a step): {', '.join(skipped)}")


def _as_builtin(ours: torch.nn.Module, theirs: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Our state dict under the built-in's in-memory names (transformers 5 renames on load), via a save/load."""
    import tempfile

    with tempfile.TemporaryDirectory() as folder:
        ours.save_pretrained(folder)
        loaded = type(theirs).from_pretrained(folder)
    return loaded.state_dict()


if __name__ == "__main__":
    main()
