"""`ast-hf`, the command line: tag or embed recordings, export a model to ONNX, start the web demo.

    ast-hf classify FILE_OR_DIR... --model ID_OR_DIR [--top-k K] [--hop S] [--threshold T] [--json | --csv]
                    [--events] [--plot OUT.png] [--device cpu|cuda] [--batch-size N] [--[no-]pad-to-max-length]
    ast-hf embed FILE_OR_DIR... --model ID_OR_DIR --output OUT.parquet|OUT.npz [--timestamps] [--pool P]
                 [--layer N...] [--hop S] [--device cpu|cuda] [--batch-size N] [--optimize MODE]
    ast-hf search QUERY... --index EMB.parquet [--model ID_OR_DIR] [--top-k K] [--json]
    ast-hf export-onnx MODEL OUT_DIR [--opset N] [--quantize int8]
    ast-hf demo --model ID_OR_DIR [--host H] [--port P] [--hop S] [--device D] [--share] [--[no-]pad-to-max-length]

Like `huggingface-cli`/`transformers` commands: one entry point, a subcommand per job, `--help` on each. classify
prints a table by default (JSON or CSV on request) to stdout and progress and errors to stderr. A file that cannot be
read gets one line naming it and the reason and the other files are still tagged; the exit status is 0 when every
file was tagged, 1 when some failed (the rest are printed) and 2 when none could be (or the arguments are wrong). A
package or library the command needs and does not find here (FFmpeg for decoding, matplotlib for --plot, gradio for
the demo) is one line naming it and the command that installs it, exit status 2.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import sys
from pathlib import Path
from typing import Any

EXIT_OK, EXIT_SOME_FAILED, EXIT_FAILED = 0, 1, 2
DEVICE_HELP = ("cpu, cuda or cuda:N (default: this process's GPU where CUDA is available, cuda:LOCAL_RANK under "
               "torchrun; the CPU otherwise and for --optimize int8)")
PAD_HELP = ("input convention: default the checkpoint's (preprocessor_config.json pad_to_max_length; padded if "
            "absent)")


class CommandError(Exception):
    """A problem with the command's arguments or model: printed as one line, exit status 2."""


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help(sys.stderr)
        return EXIT_FAILED
    try:
        return args.run(args)
    except CommandError as error:
        print(f"ast-hf {args.command}: error: {error}", file=sys.stderr)
        return EXIT_FAILED
    except KeyboardInterrupt:
        print(f"ast-hf {args.command}: interrupted", file=sys.stderr)
        return 130


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ast-hf", description="Audio Spectrogram Transformer tools (ast_hf).")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    classify = commands.add_parser(
        "classify", help="tag audio files with an AST model",
        description="Tag recordings of any length window by window (the 'audio-tagging' pipeline). Directories are "
                    "searched recursively for audio files.")
    classify.add_argument("inputs", nargs="*", metavar="FILE_OR_DIR", help="audio files or directories")
    classify.add_argument("--model", required=True, help="a model directory or Hub id (ast_hf or transformers AST)")
    classify.add_argument("--top-k", type=int, default=5, help="labels shown per file and per window (default 5)")
    classify.add_argument("--hop", type=float, default=None,
                          help="seconds between window starts (default: half the model's window)")
    classify.add_argument("--threshold", type=float, default=None,
                          help="smallest score of a label in an event (default 0.5); implies --events")
    classify.add_argument("--events", action="store_true",
                          help="merge consecutive windows with the same label into events and print them")
    output = classify.add_mutually_exclusive_group()
    output.add_argument("--json", action="store_true", help="print JSON (one list, every file's full result)")
    output.add_argument("--csv", action="store_true",
                        help="print CSV rows: file,kind,start,end,label,score,error (kind: clip, segment, event or "
                             "error)")
    output.add_argument("--output", metavar="OUT", default=None,
                        help="write results as each group of files finishes to OUT.jsonl (JSON Lines), OUT.csv or "
                             "OUT.parquet; resumable: running the same command again skips the files done")
    classify.add_argument("--plot", metavar="OUT.png", default=None,
                          help="draw the spectrogram and the top labels' scores over time; with several files, a "
                               "directory that gets one FILE_STEM.png each")
    classify.add_argument("--device", default=None, help=DEVICE_HELP)
    classify.add_argument("--batch-size", type=int, default=4, help="windows per forward pass (default 4)")
    add_corpus_flags(classify)
    labels = classify.add_mutually_exclusive_group()
    labels.add_argument("--multi-label", dest="multi_label", action="store_true", default=None,
                        help="sigmoid scores, maximum over windows (default: from the model)")
    labels.add_argument("--single-label", dest="multi_label", action="store_false",
                        help="softmax scores, mean over windows (default: from the model)")
    classify.add_argument("--optimize", choices=["bf16", "int8", "compile", "auto"], default=None,
                          help="faster inference (docs: Fast inference and ONNX): bf16 where the CPU/GPU has native "
                               "bfloat16, int8 dynamic quantisation on CPUs, torch.compile; default float32")
    add_padding_flags(classify)
    classify.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    classify.set_defaults(run=run_classify)

    embed = commands.add_parser(
        "embed", help="write embeddings of audio files (parquet or npz)",
        description="One vector per file, and with --timestamps one per moment (the 'audio-feature-extraction' "
                    "pipeline), written to a parquet file that datasets loads (columns path, duration, windows, "
                    "embedding, and with --timestamps timestamps and timestamp_embeddings, one row per file) or a "
                    ".npz (paths, durations, embeddings; with --timestamps one row per moment: timestamps, "
                    "timestamp_embeddings and file_index). Directories are searched recursively for audio files.")
    embed.add_argument("inputs", nargs="*", metavar="FILE_OR_DIR", help="audio files or directories")
    embed.add_argument("--model", required=True,
                       help="a model directory or Hub id (an AST encoder or classifier, ast_hf or transformers)")
    embed.add_argument("--output", required=True, metavar="OUT",
                       help="the file to write: .parquet or .npz; written as groups of files finish, resumable: "
                            "running the same command again skips the files done")
    embed.add_argument("--timestamps", action="store_true",
                       help="also write one vector per time column of patches, with its centre time in seconds")
    embed.add_argument("--pool", choices=["cls_dist", "mean", "cls"], default="cls_dist",
                       help="the file's vector: mean of the CLS and distillation tokens (default, what the "
                            "classifier head sees), mean of the patch tokens, or the CLS token")
    embed.add_argument("--layer", type=int, nargs="+", default=None, metavar="N",
                       help="hidden states to use (0: patch embeddings, N: layer N, negative from the end); several "
                            "are concatenated; default the last hidden state after the final LayerNorm")
    embed.add_argument("--hop", type=float, default=None,
                       help="seconds between window starts for files longer than the model's window (default: "
                            "windows that tile the patch grid)")
    embed.add_argument("--device", default=None, help=DEVICE_HELP)
    embed.add_argument("--batch-size", type=int, default=4, help="windows per forward pass (default 4)")
    embed.add_argument("--optimize", choices=["bf16", "int8", "compile", "auto"], default=None,
                       help="faster inference (docs: Fast inference and ONNX); default float32")
    add_corpus_flags(embed)
    add_padding_flags(embed)
    embed.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    embed.set_defaults(run=run_embed)

    from .search import add_search_parser

    add_search_parser(commands)

    export = commands.add_parser(
        "export-onnx", help="export a model to ONNX for onnxruntime",
        description="Write OUT_DIR/model.onnx (dynamic batch and time axes, the attention mask as an input) with "
                    "config.json and preprocessor_config.json.")
    export.add_argument("model", metavar="MODEL", help="a model directory or Hub id")
    export.add_argument("output_dir", metavar="OUT_DIR", help="directory to write")
    export.add_argument("--opset", type=int, default=None, help="ONNX opset (default: the exporter's)")
    export.add_argument("--quantize", choices=["int8"], default=None,
                        help="also write an int8 dynamically quantised model next to the float32 one")
    export.set_defaults(run=run_export)

    demo = commands.add_parser("demo", help="start the local web demo (Gradio)",
                               description="Upload or record audio and see its labels and timeline in a browser.")
    demo.add_argument("--model", required=True, help="a model directory or Hub id")
    demo.add_argument("--host", default="127.0.0.1", help="address to serve on (default 127.0.0.1)")
    demo.add_argument("--port", type=int, default=None, help="port (default: Gradio's, 7860 or the next free one)")
    demo.add_argument("--top-k", type=int, default=5, help="labels shown (default 5)")
    demo.add_argument("--hop", type=float, default=None,
                      help="seconds between segment starts (default: half the model's window)")
    demo.add_argument("--device", default=None, help=DEVICE_HELP)
    demo.add_argument("--share", action="store_true",
                      help="also serve a public gradio.live link (Gradio's share=True); anyone with it can use the "
                           "demo")
    add_padding_flags(demo)
    demo.set_defaults(run=run_demo)
    return parser


def add_padding_flags(command: argparse.ArgumentParser, default: str = PAD_HELP) -> None:
    """--pad-to-max-length / --no-pad-to-max-length (dest pad_to_max_length; None: `default` says what is used)."""
    padding = command.add_mutually_exclusive_group()
    padding.add_argument("--pad-to-max-length", dest="pad_to_max_length", action="store_true", default=None,
                         help=f"pad windows shorter than the model's length to it, unmasked; {default}")
    padding.add_argument("--no-pad-to-max-length", dest="pad_to_max_length", action="store_false",
                         help=f"run short windows at their own length with an attention mask; {default}")


def padding_in_effect(pipe: Any, flag: bool | None) -> bool:
    """--[no-]pad-to-max-length as it takes effect: the flag, or without it the checkpoint's convention (recorded
    with a corpus run's settings, so that restating the default resumes the run)."""
    return pipe.feature_extractor.pad_to_max_length if flag is None else flag


def add_corpus_flags(command: argparse.ArgumentParser) -> None:
    """The flags of a corpus run: file lists, shards, decoding workers, --overwrite."""
    group = command.add_argument_group("many files (docs: Tagging an archive)")
    group.add_argument("--files-from", metavar="LIST", default=None,
                       help="also the files of LIST: a text file of paths (one a line), or a CSV or parquet file with "
                            "a column of paths (--column)")
    group.add_argument("--column", default=None,
                       help="the column of paths in a CSV or parquet --files-from (default: path, file, filename or "
                            "file_name)")
    group.add_argument("--root", default=None,
                       help="where relative paths of --files-from start (default: the current directory); paths are "
                            "stored absolute")
    group.add_argument("--num-shards", type=int, default=None,
                       help="split the files into N shards and do one (--shard-index); default WORLD_SIZE under "
                            "torchrun or accelerate launch, else 1. Each shard writes OUT-0000I-of-0000N.ext")
    group.add_argument("--shard-index", type=int, default=None, help="the shard to do, 0 to N-1 (default RANK)")
    group.add_argument("--num-workers", type=int, default=None,
                       help="processes decoding files ahead of the model (default: 0 on 1-2 CPU cores, else a quarter "
                            "of the cores, at most 8; 0 decodes in the main process)")
    group.add_argument("--group-size", type=int, default=64,
                       help="files per part written while the run goes: a crash loses at most this many (default 64)")
    group.add_argument("--failures-ok", action="store_true", default=None,
                       help="exit 0 when some files cannot be read (they are named, and classify keeps them as error "
                            "rows); the default under torchrun or accelerate launch, whose launcher stops every "
                            "process when one exits non-zero. Without it: exit 1")
    group.add_argument("--overwrite", action="store_true",
                       help="do every file again, replacing the output and any partial run (default: resume)")


def corpus_device(device: str | None) -> str | None:
    """--device, with "cuda" meaning this process's own GPU under torchrun or accelerate launch (LOCAL_RANK); None
    stays None (`load_tagger` applies the default rule, which also takes LOCAL_RANK)."""
    if device == "cuda" and os.environ.get("LOCAL_RANK") and int(os.environ.get("WORLD_SIZE", "1") or 1) > 1:
        return f"cuda:{int(os.environ['LOCAL_RANK'])}"
    return device


def run_corpus_command(args: argparse.Namespace, task: str, pipe: Any, settings: dict[str, Any],
                       options: dict[str, Any]) -> int:
    """`ast-hf classify/embed --output`: every file into the output through `ast_hf.corpus.run_corpus`."""
    from .corpus import run_corpus

    if args.num_workers is not None and args.num_workers < 0:
        raise CommandError(f"--num-workers {args.num_workers}: pass 0 or more worker processes.")
    if args.group_size < 1:
        raise CommandError(f"--group-size {args.group_size}: pass a positive number of files.")
    progress = ProgressBar(0, enabled=not args.no_progress)
    try:
        summary = run_corpus(pipe, task, args.inputs, args.output, files_from=args.files_from, column=args.column,
                             root=args.root, num_shards=args.num_shards, shard_index=args.shard_index,
                             num_workers=args.num_workers, overwrite=args.overwrite, settings=settings,
                             options=options, group_size=args.group_size, failures_ok=args.failures_ok,
                             log=lambda line: progress.write(f"ast-hf {args.command}: {line}"),
                             progress=progress.bar)
    except ValueError as error:
        raise CommandError(str(error)) from error
    finally:
        progress.close()
    return summary.exit_status


def model_setting(model: str) -> str:
    """The model as recorded with results: a local directory as an absolute path, a Hub id as it is."""
    return os.path.abspath(model) if os.path.isdir(model) else model


def check_corpus_inputs(args: argparse.Namespace) -> None:
    if not args.inputs and args.files_from is None:
        raise CommandError("no input: pass audio files or directories, or --files-from LIST.")
    if (args.num_shards is None) != (args.shard_index is None):
        raise CommandError("--num-shards and --shard-index go together: pass both (a Slurm array job: --num-shards "
                           "N --shard-index $SLURM_ARRAY_TASK_ID), or neither.")


def check_hop(hop: float | None) -> None:
    if hop is not None and not 0 < hop < float("inf"):
        raise CommandError(f"--hop {hop}: pass a positive, finite number of seconds.")


def require_file_decoding() -> None:
    """A CommandError of one line when audio files cannot be decoded here (torchcodec or FFmpeg missing)."""
    from .audio_io import DecoderUnavailableError, check_file_decoding

    try:
        check_file_decoding()
    except DecoderUnavailableError as error:
        raise CommandError(str(error)) from error


# ---------------------------------------------------------------------------------------------------------------
# classify


def run_classify(args: argparse.Namespace) -> int:
    if args.top_k < 1:
        raise CommandError(f"--top-k {args.top_k}: pass a positive number of labels.")
    if args.batch_size < 1:
        raise CommandError(f"--batch-size {args.batch_size}: pass a positive number of windows.")
    check_hop(args.hop)
    if args.threshold is not None and not 0 <= args.threshold <= 1:
        raise CommandError(f"--threshold {args.threshold}: pass a score between 0 and 1.")
    events = args.events or args.threshold is not None
    check_corpus_inputs(args)
    if args.output is not None:
        if args.plot:
            raise CommandError("--plot draws one picture per file on screen runs; leave it out with --output.")
        try:
            from .corpus.store import output_format

            output_format(args.output, "classify")
        except ValueError as error:
            raise CommandError(str(error)) from error
        require_file_decoding()
        tagger = load_tagger(args.model, corpus_device(args.device), optimize=args.optimize)
        options = {"top_k": args.top_k, "hop": args.hop, "events": events, "threshold": args.threshold,
                   "multi_label": args.multi_label, "pad_to_max_length": args.pad_to_max_length}
        from .tagging import is_multi_label

        # Recorded as they take effect, so that a flag restating the checkpoint's own default resumes the run.
        effective = {"multi_label": is_multi_label(tagger.model.config) if args.multi_label is None else
                     args.multi_label, "pad_to_max_length": padding_in_effect(tagger, args.pad_to_max_length)}
        settings = {"task": "classify", "model": model_setting(args.model), "optimize": args.optimize, **options,
                    **effective}
        options = {key: value for key, value in options.items() if value is not None}
        return run_corpus_command(args, "classify", tagger, settings, {**options, "batch_size": args.batch_size})
    files, failures = expand_inputs(args.inputs, args.files_from, args.column, args.root)
    for name, reason in failures:
        print(f"ast-hf classify: error: {name}: {reason}", file=sys.stderr)
    if not files:
        return EXIT_FAILED
    require_file_decoding()  # before the model loads: without a decoder no file can be tagged
    if args.plot:
        from .timeline import require_matplotlib

        try:
            require_matplotlib()
        except ImportError as error:
            raise CommandError(f"--plot: {error}") from error
    plots = plot_paths(args.plot, files) if args.plot else {}
    tagger = load_tagger(args.model, args.device, optimize=args.optimize)
    options = {}
    if args.pad_to_max_length is not None:  # else the pipeline follows the checkpoint's convention
        options["pad_to_max_length"] = args.pad_to_max_length

    from .audio_io import AudioReadError

    results: list[tuple[str, dict[str, Any]]] = [(name, {"error": f"{name}: {reason}"}) for name, reason in failures]
    progress = ProgressBar(len(files), enabled=not args.no_progress)
    for path in files:
        progress.start_file(path)
        try:
            result = tagger(path, top_k=args.top_k, hop=args.hop, events=events, batch_size=args.batch_size,
                            threshold=args.threshold, multi_label=args.multi_label, progress=progress.update,
                            **options)
        except AudioReadError as error:
            progress.done_file()
            progress.clear()
            print(f"ast-hf classify: error: {error}", file=sys.stderr)
            results.append((path, {"error": str(error)}))
            continue
        except ValueError as error:  # e.g. a hop longer than this model's window
            raise CommandError(str(error)) from error
        progress.done_file()
        results.append((path, result))
        if path in plots:
            from .timeline import plot_timeline

            figure = plot_timeline(path, result, plots[path], title=f"{path}  ·  {args.model}",
                                   extractor=tagger.feature_extractor)
            import matplotlib.pyplot as plt

            plt.close(figure)
    progress.close()

    # Machine-readable output keeps a failed input as {"file", "error"} (a CSV row of kind "error"): inputs that
    # are not files first, then the files in order.
    tagged = [(path, result) for path, result in results if "error" not in result]
    if args.json:
        json.dump([{"file": path, **result} for path, result in results], sys.stdout, indent=1)
        print()
    elif args.csv:
        write_csv(results, sys.stdout)
    else:
        print_table(tagged, events)
    for path, _ in tagged:
        if path in plots:
            print(f"plot: {plots[path]}", file=sys.stderr)
    if len(tagged) < len(results):
        return EXIT_SOME_FAILED if tagged else EXIT_FAILED
    return EXIT_OK


def expand_inputs(inputs: list[str], files_from: str | None = None, column: str | None = None,
                  root: str | None = None) -> tuple[list[str], list[tuple[str, str]]]:
    """Files to tag, as absolute paths (directories searched recursively for audio file endings, sorted; then the
    files of a --files-from list) and (input, reason) for those that are not audio files
    (`ast_hf.corpus.collect_files`)."""
    from .corpus.sources import collect_files

    try:
        return collect_files(inputs, files_from, column, root)
    except ValueError as error:
        raise CommandError(str(error)) from error


def plot_paths(plot: str, files: list[str]) -> dict[str, str]:
    """Where each file's plot goes: for one file `plot` itself (".png" added when it has no suffix), or
    `plot`/STEM.png when `plot` is an existing directory; for several files `plot` is a directory (created) with
    one STEM.png per file (STEM_2.png, ... when stems repeat). Missing parent directories are created."""
    if len(files) == 1 and not os.path.isdir(plot):
        path = plot if Path(plot).suffix else f"{plot}.png"
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        return {files[0]: path}
    if os.path.isfile(plot):
        raise CommandError(f"--plot {plot} is a file; with {len(files)} inputs pass a directory for one plot each.")
    os.makedirs(plot, exist_ok=True)
    paths, used = {}, set()
    for path in files:
        stem, n = Path(path).stem, 1
        name = f"{stem}.png"
        while name in used:
            n += 1
            name = f"{stem}_{n}.png"
        used.add(name)
        paths[path] = os.path.join(plot, name)
    return paths


def load_tagger(model: str, device: str | None, optimize: str | None = None, task: str = "audio-tagging") -> Any:
    """The "audio-tagging" pipeline (or `task`'s) for `model` on `device` (`optimize`: a fast_inference mode; None
    for the device: `fast_inference.default_device`'s rule); a CommandError saying what is wrong otherwise."""
    import re

    import torch

    import ast_hf  # noqa: F401 (registers the pipeline and the Auto classes)

    from .fast_inference import default_device

    if device is None:
        device = default_device(optimize)

    if not re.fullmatch(r"cpu|cuda(:\d+)?", device):
        raise CommandError(f"--device {device}: pass cpu, cuda or cuda:N.")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise CommandError(f"--device {device}: no CUDA GPU is available here; use --device cpu.")
    check_model_directory(model)
    from transformers import pipeline
    from transformers.utils import logging

    logging.disable_progress_bar()  # stderr is for this command's progress and errors, not "Loading weights"
    logging.set_verbosity_error()
    if optimize == "auto":
        from .fast_inference import resolve_mode

        print(f"--optimize auto: {resolve_mode('auto', device)} on this machine", file=sys.stderr)
    try:
        return pipeline(task, model=model, device=device, optimize=optimize)
    except Exception as error:  # noqa: BLE001 (safetensors, Hub and config errors of every kind: one line each)
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        local = "" if os.path.exists(model) else " (there is no local directory of that name either)"
        kind = "an AST classifier" if task == "audio-tagging" else "an AST"
        raise CommandError(f"--model {model}: cannot load it as {kind} ({first}){local}") from error


def check_model_directory(model: str) -> None:
    """A CommandError naming what is missing when `model` is a local path that is not a model directory. Anything
    else that does not exist locally is taken for a Hub id (owner/name or name)."""
    from .checkpoint_files import check_ast_checkpoint

    try:
        check_ast_checkpoint(model, "--model")  # a missing local path, a file, no config.json, not an AST
    except ValueError as error:
        raise CommandError(str(error)) from error
    if not os.path.isdir(model):
        return  # a Hub id
    names = set(os.listdir(model))
    weights = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin",
               "pytorch_model.bin.index.json")
    if not names.intersection(weights):
        raise CommandError(f"--model {model}: no weights (model.safetensors); pass a directory written by "
                           "save_pretrained (an ONNX export directory is for onnxruntime).")
    if "preprocessor_config.json" not in names:
        raise CommandError(f"--model {model}: no preprocessor_config.json; save the feature extractor the model was "
                           "trained with next to it: ast_hf.ASTFeatureExtractor(mean=..., std=..., max_length=...)"
                           f".save_pretrained({model!r}).")


class ProgressBar:
    """A tqdm bar on stderr over files, showing the seconds tagged in the current file; silent when stderr is not
    a terminal (tqdm's own rule) or when disabled."""

    def __init__(self, total_files: int, enabled: bool) -> None:
        from tqdm.auto import tqdm

        self.bar = tqdm(total=total_files, unit="file", disable=None if enabled else True, file=sys.stderr,
                        leave=False, dynamic_ncols=True)
        self.name = ""

    def start_file(self, path: str) -> None:
        self.name = os.path.basename(path)
        self.bar.set_postfix_str(self.name)

    def update(self, seconds: float, total: float | None) -> None:
        where = f"{seconds:.0f}/{total:.0f} s" if total else f"{seconds:.0f} s"
        self.bar.set_postfix_str(f"{self.name} {where}")

    def done_file(self) -> None:
        self.bar.update(1)

    def clear(self) -> None:
        self.bar.clear()

    def write(self, line: str) -> None:
        """A line on stderr above the bar."""
        self.bar.write(line, file=sys.stderr)

    def close(self) -> None:
        self.bar.close()


def print_table(results: list[tuple[str, dict[str, Any]]], events: bool) -> None:
    if not results:
        return
    width = max(len("file"), *(len(path) for path, _ in results))
    print(f"{'file':<{width}}  {'duration':>9}  top labels (score)")
    for path, result in results:
        labels = ", ".join(f"{item['label']} ({item['score']:.3f})" for item in result["clip"])
        print(f"{path:<{width}}  {result['duration']:>7.2f} s  {labels}")
    if events:
        for path, result in results:
            print(f"\nevents in {path}:")
            if not result["events"]:
                print("  (none above the threshold)")
            for event in result["events"]:
                print(f"  {event['start']:8.2f} - {event['end']:8.2f} s  {event['label']} (peak {event['score']:.3f})")


def write_csv(results: list[tuple[str, dict[str, Any]]], stream: Any) -> None:
    writer = csv.writer(stream, lineterminator="\n")
    writer.writerow(["file", "kind", "start", "end", "label", "score", "error"])
    for path, result in results:
        if "error" in result:
            writer.writerow([path, "error", "", "", "", "", result["error"]])
            continue
        for item in result["clip"]:
            writer.writerow([path, "clip", 0.0, round(result["duration"], 4), item["label"], round(item["score"], 6),
                             ""])
        for segment in result["segments"]:
            for item in segment["labels"]:
                writer.writerow([path, "segment", round(segment["start"], 4), round(segment["end"], 4), item["label"],
                                 round(item["score"], 6), ""])
        for event in result.get("events", []):
            writer.writerow([path, "event", round(event["start"], 4), round(event["end"], 4), event["label"],
                             round(event["score"], 6), ""])


# ---------------------------------------------------------------------------------------------------------------
# export-onnx and demo


# ---------------------------------------------------------------------------------------------------------------
# embed


def run_embed(args: argparse.Namespace) -> int:
    from .corpus.store import output_format

    try:
        output_format(args.output, "embed")
    except ValueError as error:
        raise CommandError(str(error)) from error
    if args.batch_size < 1:
        raise CommandError(f"--batch-size {args.batch_size}: pass a positive number of windows.")
    check_hop(args.hop)
    check_corpus_inputs(args)
    require_file_decoding()
    if args.output.lower().endswith(".parquet"):
        try:
            import pyarrow  # noqa: F401
        except ImportError as error:
            raise CommandError(f"--output {args.output}: writing parquet needs pyarrow ({error}); pip install "
                               "pyarrow, or write a .npz file.") from error
    embedder = load_tagger(args.model, corpus_device(args.device), optimize=args.optimize,
                           task="audio-feature-extraction")
    from .embeddings import check_layers

    try:
        layers = check_layers(args.layer if args.layer is None or len(args.layer) > 1 else args.layer[0],
                              embedder.model.config.num_hidden_layers)
    except ValueError as error:
        raise CommandError(f"--layer: {error}") from error
    options = {"pool": args.pool, "layers": list(layers) if layers is not None else None, "hop": args.hop,
               "timestamps": args.timestamps, "pad_to_max_length": padding_in_effect(embedder, args.pad_to_max_length)}
    settings = {"task": "embed", "model": model_setting(args.model), "optimize": args.optimize, **options}
    call = {"pool": args.pool, "timestamps": args.timestamps, "batch_size": args.batch_size, "return_tensors": "np"}
    if layers is not None:
        call["layer"] = list(layers)
    if args.hop is not None:
        call["hop"] = args.hop
    if args.pad_to_max_length is not None:
        call["pad_to_max_length"] = args.pad_to_max_length
    return run_corpus_command(args, "embed", embedder, settings, call)


def run_export(args: argparse.Namespace) -> int:
    check_model_directory(args.model)  # a model without its extractor would export AudioSet's statistics
    try:
        from .onnx_export import export_onnx
    except ImportError as error:
        raise CommandError(f"ONNX export needs onnx, onnxscript and onnxruntime ({error}); pip install "
                           "'ast_hf[onnx]'.") from error
    try:
        written = export_onnx(args.model, args.output_dir, opset=args.opset, quantize=args.quantize)
    except (OSError, ValueError, TypeError) as error:
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise CommandError(f"{args.output_dir}: {reason}" if isinstance(error, OSError) else reason) from error
    print(json.dumps(written, indent=1, default=str))
    return EXIT_OK


def run_demo(args: argparse.Namespace) -> int:
    try:
        from .demo_app import launch
    except ImportError as error:  # demo_app's message names the package and the pip command
        raise CommandError(str(error)) from error
    if args.top_k < 1:
        raise CommandError(f"--top-k {args.top_k}: pass a positive number of labels.")
    if args.port is not None and not 0 < args.port < 65536:
        raise CommandError(f"--port {args.port}: pass a port from 1 to 65535.")
    check_hop(args.hop)
    require_file_decoding()  # every upload and recording is a file to decode
    tagger = load_tagger(args.model, args.device)  # the same checks and one-line errors as classify, before serving
    if args.hop is not None:  # the page would only say so at the first upload
        from .configuration_ast import samples_for_frames

        extractor = tagger.feature_extractor
        window = samples_for_frames(extractor.max_length)
        if round(args.hop * extractor.sampling_rate) > window:
            raise CommandError(f"--hop {args.hop}: longer than the window ({window / extractor.sampling_rate:.2f} s: "
                               f"{extractor.max_length} frames); pass at most that many seconds.")
    options = {}
    if args.pad_to_max_length is not None:
        options["pad_to_max_length"] = args.pad_to_max_length
    try:
        launch(tagger, host=args.host, port=args.port, share=args.share, top_k=args.top_k, hop=args.hop,
               **options)
    except (OSError, OverflowError, ValueError) as error:  # a port in use, an address that is not this machine's
        raise CommandError(f"cannot serve on {args.host}:{args.port or 'default port'} ({error}); pick another "
                           "--port or --host.") from error
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
