"""`pipeline("audio-classification")` for AST checkpoints reads files as the other ast_hf entry points do.

transformers' AudioClassificationPipeline decodes a file path or bytes with the `ffmpeg` program (`-ac 1`), whose
mono downmix adds the channels at -3 dB: a stereo file then reaches the model sqrt(2) times louder than the mean of
its channels, which the tagging pipeline, `ast-hf classify`, the demo and the ONNX classifier hear (torchcodec,
`ast_hf.audio_io.open_audio`), and the scores differ (by 0.4 on a stereo FLAC, a label flipped). For AST models
(ast_hf's and transformers' built-in) this subclass decodes paths and bytes with `open_audio` first, so the same
file gets one answer from every entry point; arrays, dicts, URLs and other models go through transformers' code
unchanged.
"""

from __future__ import annotations

import os
from typing import Any

from transformers.pipelines import PIPELINE_REGISTRY
from transformers.pipelines.audio_classification import AudioClassificationPipeline

from .audio_io import open_audio
from .configuration_ast import AST_MODEL_TYPES

TASK = "audio-classification"


class ASTAudioClassificationPipeline(AudioClassificationPipeline):
    """transformers' audio-classification pipeline; a local file path, file bytes or a torchcodec `AudioDecoder`
    (what a `datasets` audio column holds) given to an AST model are decoded by ast_hf (torchcodec: resampled to the
    extractor's rate while decoding, the mean of the channels). A `datasets` column (`ds["audio"]`) is run like
    transformers runs a `KeyDataset`: a generator of results."""

    def __call__(self, inputs: Any, *args: Any, **kwargs: Any) -> Any:
        if hasattr(inputs, "column_names") and hasattr(inputs, "features"):  # a whole datasets.Dataset
            raise TypeError(f"A whole data set was given (columns {inputs.column_names}); pass its audio column, "
                            "ds['audio'], or KeyDataset(ds, 'audio').")
        if type(inputs).__name__ in ("Column", "IterableColumn"):  # datasets' lazy columns: not lists, not Datasets
            inputs = (item for item in inputs)
        return super().__call__(inputs, *args, **kwargs)

    def preprocess(self, inputs: Any) -> Any:
        is_file = isinstance(inputs, (bytes, bytearray, os.PathLike)) or hasattr(inputs, "get_all_samples") or (
            isinstance(inputs, str) and not inputs.startswith(("http://", "https://")))
        if is_file and getattr(self.model.config, "model_type", None) in AST_MODEL_TYPES:
            inputs = open_audio(inputs, self.feature_extractor.sampling_rate).samples().numpy()  # mono, (samples,)
        return super().preprocess(inputs)


def register_classification_pipeline() -> None:
    """Make ASTAudioClassificationPipeline the class of the "audio-classification" task (called on import; the
    task's default model and everything else of its registry entry stay transformers')."""
    entry = PIPELINE_REGISTRY.supported_tasks[TASK]  # "impl": transformers' class, or its dotted name (imported late)
    entry["impl"] = ASTAudioClassificationPipeline


__all__ = ["ASTAudioClassificationPipeline", "register_classification_pipeline"]
