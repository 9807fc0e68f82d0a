"""Tag or embed a corpus on a Ray cluster: Ray Data reads the file list, an actor pool of ast_hf predictors (one
model each, on a CPU or a GPU) computes the rows, and Ray writes a folder of parquet files that `datasets` loads.

    python examples/tag_with_ray.py ARCHIVE/ --model path/or/hub-id --task embed --output-dir embeddings/ \
        [--concurrency 4] [--num-gpus 1] [--address auto]

On one machine it starts a local Ray cluster (`--num-cpus`); with `--address auto` it joins the cluster this
machine belongs to (`ray start --head` / a KubeRay or Slurm-started cluster).
"""

from __future__ import annotations

import argparse
import sys


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("inputs", nargs="*", metavar="FILE_OR_DIR", help="audio files or directories")
    parser.add_argument("--model", required=True, help="a model directory or Hub id")
    parser.add_argument("--task", choices=["classify", "embed"], default="classify")
    parser.add_argument("--output-dir", required=True, help="the folder of parquet files to write")
    parser.add_argument("--files-from", default=None, help="a list of paths (text, CSV or parquet)")
    parser.add_argument("--concurrency", type=int, default=2, help="actors, each holding one model (default 2)")
    parser.add_argument("--files-per-batch", type=int, default=32, help="files an actor computes at a time")
    parser.add_argument("--batch-size", type=int, default=4, help="windows per forward pass (default 4)")
    parser.add_argument("--num-gpus", type=float, default=0, help="GPUs per actor (default 0: CPU actors)")
    parser.add_argument("--num-cpus", type=int, default=None, help="CPUs of a local cluster (default: all)")
    parser.add_argument("--address", default=None, help="a Ray cluster to join ('auto'); default a local one")
    args = parser.parse_args(argv)
    if not args.inputs and args.files_from is None:
        parser.error("pass audio files or directories, or --files-from LIST")
    try:
        import ray
    except ImportError:
        print("error: Ray is not installed: pip install 'ast_hf[ray]'", file=sys.stderr)
        return 2
    from ast_hf.corpus.ray_engine import run_with_ray

    ray.init(address=args.address, num_cpus=None if args.address else args.num_cpus, include_dashboard=False)
    try:
        failures = run_with_ray(args.model, args.task, args.inputs, args.output_dir, files_from=args.files_from,
                                options={"batch_size": args.batch_size}, concurrency=args.concurrency,
                                batch_size=args.files_per_batch, num_gpus=args.num_gpus)
    finally:
        ray.shutdown()
    for name, reason in failures:
        print(f"error: {name}: {reason}", file=sys.stderr)
    print(f"rows written to {args.output_dir}", file=sys.stderr)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
