"""The HEAR 2021 API: AST embeddings in the common interface of the Holistic Evaluation of Audio Representations.

The HEAR benchmark (Turian et al., 2022) evaluates an audio representation through three functions of a Python
module; this module is one, so `hear-validator ast_hf.hear -m CHECKPOINT` and the benchmark's evaluation kit take
any AST checkpoint:

- `load_model(model_file_path, ...)`: a checkpoint directory or Hub id (an encoder or a classifier, ast_hf's or
  transformers' built-in) as a `torch.nn.Module` with `sample_rate`, `scene_embedding_size` and
  `timestamp_embedding_size`;
- `get_scene_embeddings(audio, model)`: (n_sounds, n_samples) -> (n_sounds, scene_embedding_size), one vector per
  sound: what the "audio-feature-extraction" pipeline gives (`ast_hf.embeddings`; by default the mean of the CLS and
  distillation tokens, the windows of a long sound averaged by their length);
- `get_timestamp_embeddings(audio, model)`: -> (embeddings (n_sounds, n_timestamps, timestamp_embedding_size),
  timestamps (n_sounds, n_timestamps) in milliseconds): one vector per time column of the patch grid, at the
  column's centre, evenly spaced (every `time_stride` x 10 ms: 100 ms for AudioSet's base model) from the start to
  the end of the sound.

Audio is float32 mono in [-1, 1] at the model's `sample_rate` (16 kHz by default; 22.05, 44.1 and 48 kHz, the other
rates the API lists, are resampled to the extractor's 16 kHz inside).
"""

from __future__ import annotations

from typing import Any

import torch
import torchaudio

from .audio_io import AudioStream
from .embeddings import POOLS, as_ast_encoder, check_layers, embed_recordings

HEAR_SAMPLE_RATES = (16000, 22050, 44100, 48000)
"""The sample rates the HEAR 2021 API lists for a model's `sample_rate`."""
DEFAULT_MODEL = "MIT/ast-finetuned-audioset-10-10-0.4593"
"""What `load_model("")` loads: AudioSet's base AST (transformers' conversion of the authors' checkpoint)."""


class HEARModel(torch.nn.Module):
    """An AST encoder with the attributes the HEAR API asks for.

    Attributes:
        sample_rate (int): The rate of the audio the API functions take.
        scene_embedding_size (int): Size of a scene embedding (hidden size x number of layers).
        timestamp_embedding_size (int): Size of a timestamp embedding (the same).
        encoder (ast_hf.ASTModel): The encoder; `.to(device)` moves it.
        feature_extractor (ast_hf.ASTFeatureExtractor): Its feature extractor.
    """

    def __init__(self, encoder: Any, feature_extractor: Any, sample_rate: int = 16000, pool: str = "cls_dist",
                 layer: Any = None, batch_size: int = 4) -> None:
        super().__init__()
        check_sample_rate(sample_rate)
        if pool not in POOLS:
            raise ValueError(f"pool={pool!r} is not one of {', '.join(POOLS)}.")
        self.encoder, self.feature_extractor = as_ast_encoder(encoder, feature_extractor, task="HEAR API")
        self.layers = check_layers(layer, self.encoder.config.num_hidden_layers)
        self.pool = pool
        self.batch_size = batch_size
        self.sample_rate = int(sample_rate)
        size = self.encoder.config.hidden_size * (1 if self.layers is None else len(self.layers))
        self.scene_embedding_size = int(size)
        self.timestamp_embedding_size = int(size)

    def embed(self, audio: torch.Tensor, timestamps: bool) -> list[dict[str, Any]]:
        """Run `embed_recordings` on each row of a (n_sounds, n_samples) batch at `sample_rate`."""
        audio = check_audio(audio)
        rate = self.feature_extractor.sampling_rate
        waves = audio.detach().float().cpu()
        if self.sample_rate != rate:
            waves = torchaudio.functional.resample(waves, self.sample_rate, rate)  # (n_sounds, samples at 16 kHz)

        def open_row(row: torch.Tensor) -> AudioStream:
            return AudioStream("<audio row>", rate, row.shape[0] / rate, lambda: iter([row]))

        self.encoder.eval()
        return list(embed_recordings(self.encoder, self.feature_extractor, list(waves), open_row, pool=self.pool,
                                     layers=self.layers, timestamps=timestamps, batch_size=self.batch_size,
                                     device=self.encoder.device))


def check_sample_rate(sample_rate: Any) -> None:
    """A ValueError unless `sample_rate` is one of `HEAR_SAMPLE_RATES`."""
    if isinstance(sample_rate, bool) or sample_rate not in HEAR_SAMPLE_RATES:
        raise ValueError(f"sample_rate={sample_rate!r} is not a rate of the HEAR API; pass one of "
                         f"{', '.join(map(str, HEAR_SAMPLE_RATES))} (the audio is resampled to the model's 16 kHz "
                         "inside).")


def check_audio(audio: Any) -> torch.Tensor:
    """The HEAR API's audio: a 2-D (n_sounds, n_samples) float tensor with at least one sound and one sample."""
    if not isinstance(audio, torch.Tensor):
        raise TypeError(f"audio must be a torch tensor of shape (n_sounds, n_samples); got {type(audio).__name__}. "
                        "Use torch.as_tensor(array) for numpy audio.")
    if audio.ndim != 2 or audio.shape[0] == 0 or audio.shape[1] == 0:
        raise ValueError(f"audio has shape {tuple(audio.shape)}; the HEAR API takes (n_sounds, n_samples) with at "
                         "least one sound of at least one sample (add a batch axis with audio[None] for one sound).")
    if not audio.is_floating_point():
        raise TypeError(f"audio has dtype {audio.dtype}; pass float samples in [-1, 1] (int16 PCM / 32768).")
    return audio


def load_model(model_file_path: str = "", sample_rate: int = 16000, pool: str = "cls_dist", layer: Any = None,
               batch_size: int = 4) -> HEARModel:
    """Load an AST checkpoint for the HEAR API.

    Args:
        model_file_path: A `save_pretrained` directory or Hub id of an AST (encoder or classifier, ast_hf's or
            transformers' built-in); "" (what the HEAR tools pass without a model) loads AudioSet's base model,
            `DEFAULT_MODEL`, from the Hub.
        sample_rate: The rate of the audio the API functions will get, one of `HEAR_SAMPLE_RATES`.
        pool: The scene embedding: "cls_dist" (default), "mean" or "cls" (see `ast_hf.embeddings`).
        layer: Hidden states to use (an index or a list; see `ast_hf.embeddings`); None: the last hidden state.
        batch_size: Windows per forward pass.

    Returns:
        A `HEARModel` (a torch module) in eval mode.

    Raises:
        ValueError: For a rate the HEAR API does not list, an unknown pool, a layer out of range, a local path that
            is missing or not an AST checkpoint directory, or a checkpoint without a feature extractor.
        TypeError: When a Hub checkpoint is not an AST.
        OSError: When the checkpoint cannot be found or downloaded.
    """
    from transformers import AutoFeatureExtractor

    from .checkpoint_files import check_ast_checkpoint
    from .embeddings import AnyASTCheckpoint

    source = model_file_path or DEFAULT_MODEL
    check_sample_rate(sample_rate)  # before loading anything
    check_ast_checkpoint(source, "model_file_path")
    model = AnyASTCheckpoint.from_pretrained(source)
    try:
        extractor = AutoFeatureExtractor.from_pretrained(source)
    except (OSError, ValueError) as error:
        raise ValueError(f"{source}: no feature extractor (preprocessor_config.json) loads from it ({error}); save "
                         "the extractor the model was trained with next to it.") from error
    return HEARModel(model, extractor, sample_rate=sample_rate, pool=pool, layer=layer, batch_size=batch_size).eval()


def get_scene_embeddings(audio: torch.Tensor, model: HEARModel) -> torch.Tensor:
    """One embedding per sound.

    Args:
        audio: (n_sounds, n_samples) float audio in [-1, 1] at `model.sample_rate`, on any device.
        model: A `HEARModel` from `load_model`.

    Returns:
        (n_sounds, model.scene_embedding_size) float32, on the model's device.
    """
    results = model.embed(audio, timestamps=False)
    return torch.stack([result["embedding"] for result in results]).to(model.encoder.device)


def get_timestamp_embeddings(audio: torch.Tensor, model: HEARModel) -> tuple[torch.Tensor, torch.Tensor]:
    """Embeddings at evenly spaced moments of each sound.

    Args:
        audio: (n_sounds, n_samples) float audio in [-1, 1] at `model.sample_rate`, on any device.
        model: A `HEARModel` from `load_model`.

    Returns:
        (embeddings (n_sounds, n_timestamps, model.timestamp_embedding_size) float32, timestamps (n_sounds,
            n_timestamps) float32 centre times in milliseconds), on the model's device.
    """
    results = model.embed(audio, timestamps=True)
    device = model.encoder.device
    embeddings = torch.stack([result["timestamp_embeddings"] for result in results]).to(device)
    timestamps = torch.stack([result["timestamps"] for result in results]).double() * 1000
    return embeddings, timestamps.float().to(device)


__all__ = ["DEFAULT_MODEL", "HEAR_SAMPLE_RATES", "HEARModel", "check_audio", "check_sample_rate",
           "get_scene_embeddings", "get_timestamp_embeddings", "load_model"]
