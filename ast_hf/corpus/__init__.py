"""Corpus runs: tag or embed an archive of any size, streamed, resumable, crash-safe and sharded.

`run_corpus` is the one place for it (`ast-hf classify/embed --output` and `ast_hf.corpus.ray_engine` use it):
`sources` picks the files and a shard's share, `decoding` decodes ahead in worker processes, the pipelines compute
each file's result, and `store` writes rows as groups of files finish and merges them into the output.
"""

from .runner import CorpusSummary, default_num_workers, result_row, run_corpus
from .sources import collect_files, shard, shard_output
from .store import ResultStore

__all__ = ["CorpusSummary", "ResultStore", "collect_files", "default_num_workers", "result_row", "run_corpus",
           "shard", "shard_output"]
