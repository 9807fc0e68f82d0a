"""Embeddings of recordings of any length: the "audio-feature-extraction" pipeline.

`pipeline("audio-feature-extraction", model=ID_OR_DIR)` (registered with transformers' PIPELINE_REGISTRY when
ast_hf is imported; transformers' own "feature-extraction" and "image-feature-extraction" are its text and image
siblings) gives one vector per recording, and with `timestamps=True` one vector per moment:

- What a vector is (`pool=`): "cls_dist" (default), the mean of the CLS and distillation tokens, which is what the
  classifier head sees (`ASTModel`'s `pooler_output`); "mean", the mean of the patch tokens of the real audio (the
  padding's patches left out); "cls", the CLS token. From the last hidden state after the final LayerNorm by
  default; `layer=` picks any of the encoder's `hidden_states` instead (0: the patch embeddings, n: layer n's output
  before the final LayerNorm, negative from the end), and a list of layers concatenates their vectors in its order.
- Per moment (`timestamps=True`): the patch tokens of each time column of the patch grid, averaged over the
  frequency rows, with the column's centre time in seconds (the centre of the 16 frames it covers, from the start
  of the recording). Columns are `time_stride` frames apart (100 ms for AudioSet's base model, 160 ms for the
  unoverlapped patches of the small models).
- A recording longer than the extractor's `max_length` is embedded window by window with bounded memory, as the
  "audio-tagging" pipeline does: windows of `max_length` frames start every `hop` seconds. The default hop tiles the
  patch grid: the next window starts where the previous window's next column would, so every moment's vector is
  computed once and the time columns of a long recording are evenly spaced. With a shorter `hop` (overlapping
  windows) each time column is taken from the window whose centre is nearest to it. The recording's vector is the
  mean of its windows' vectors weighted by each window's number of samples (so a short last window counts for
  what it holds).
- Windows shorter than `max_length` are fed the way the checkpoint was trained (the extractor's
  `pad_to_max_length`, as in the tagging pipeline): padded to `max_length` without a mask, or at their own length
  with an attention mask. Either way the columns and the "mean" pool cover only the real audio, and windows of
  several inputs are batched together (`batch_size`), each getting the vectors it gets alone.

Any AST checkpoint loads: an encoder (`AutoModel`), a classifier (its encoder is used, the head ignored), ast_hf's
or transformers' built-in one (converted, same weights).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

import numpy as np
import torch
from transformers import AutoConfig, AutoModel, AutoModelForAudioClassification, Pipeline
from transformers.pipelines import PIPELINE_REGISTRY
from transformers.utils import logging

from .audio_io import AudioStream
from .configuration_ast import BUILTIN_AST_MODEL_TYPE, patches_along, samples_for_frames
from .fast_inference import optimized, set_pipeline_device
from .feature_extraction_ast import ASTFeatureExtractor
from .kaldi_fbank import FRAME_LENGTH, FRAME_SHIFT, num_frames
from .modeling_ast import ASTForAudioClassification, ASTModel
from .patch_grid import NUM_PREFIX_TOKENS
from .tagging import (
    WindowedRecording,
    check_batch_size,
    check_hop_seconds,
    check_pad_option,
    decoded_inputs,
    hop_in_samples,
    input_collection,
    open_input,
    window_features,
    windows_across,
)

logger = logging.get_logger(__name__)

TASK = "audio-feature-extraction"
POOLS = ("cls_dist", "mean", "cls")
"""The clip vectors `pool=` selects: the mean of the CLS and distillation tokens (what the classifier head sees),
the mean of the real audio's patch tokens, the CLS token."""
DEFAULT_BATCH_SIZE = 4
RETURN_TENSORS = ("np", "pt")


def as_ast_encoder(model: Any, feature_extractor: Any, task: str = TASK) -> tuple[ASTModel, ASTFeatureExtractor]:
    """Turn an AST checkpoint, loaded any way, into ast_hf's encoder and feature extractor.

    Args:
        model: ast_hf's `ASTModel` or `ASTForAudioClassification` (its encoder is taken), or transformers' built-in
            `ASTModel` / `ASTForAudioClassification` (converted: same weights, every one checked).
        feature_extractor: Its feature extractor, ast_hf's or transformers' built-in one.
        task: The name used in messages.

    Returns:
        ast_hf's encoder, in eval mode, and feature extractor.

    Raises:
        TypeError: When `model` is not an Audio Spectrogram Transformer.
        ValueError: When `feature_extractor` is None (the checkpoint has no preprocessor_config.json).
    """
    if isinstance(model, ASTForAudioClassification):
        model = model.audio_spectrogram_transformer
    elif not isinstance(model, ASTModel):
        if getattr(getattr(model, "config", None), "model_type", None) != BUILTIN_AST_MODEL_TYPE:
            raise TypeError(f"The {task!r} pipeline of ast_hf embeds audio with Audio Spectrogram Transformers "
                            f"(ast_hf's or transformers' built-in); got {type(model).__name__}. Pass an AST "
                            "checkpoint.")
        model = _from_builtin_encoder(model)
    if feature_extractor is None:
        raise ValueError(f"The {task!r} pipeline needs the checkpoint's feature extractor (preprocessor_config.json);"
                         " pass feature_extractor=ast_hf.ASTFeatureExtractor(...) with the settings it was trained "
                         "with.")
    if not isinstance(feature_extractor, ASTFeatureExtractor):
        feature_extractor = ASTFeatureExtractor.from_dict(feature_extractor.to_dict())
    return model.eval(), feature_extractor


def _from_builtin_encoder(model: Any) -> ASTModel:
    """transformers' built-in AST encoder or classifier as ast_hf's encoder (a save_pretrained round trip)."""
    import tempfile

    from .convert import load_ast_model

    with tempfile.TemporaryDirectory(prefix="ast_hf_builtin_") as folder:
        model.save_pretrained(folder)
        if hasattr(model, "classifier"):
            return load_ast_model(folder).audio_spectrogram_transformer.to(model.device)
        return ASTModel.from_pretrained(folder).to(model.device)


def check_layers(layer: Any, num_hidden_layers: int) -> tuple[int, ...] | None:
    """Validate `layer=`: None (the last hidden state after the final LayerNorm), an index of the encoder's
    `hidden_states` (0 to `num_hidden_layers`, or negative from the end), or a non-empty list of them.

    Returns:
        The indices made non-negative, or None.

    Raises:
        TypeError: For a layer that is not an integer, or a container of another kind.
        ValueError: For an index out of range or an empty list.
    """
    if layer is None:
        return None
    chosen = [layer] if not isinstance(layer, (list, tuple)) else list(layer)
    if not chosen:
        raise ValueError("layer=[] names no layer; pass an index, a list of indices, or None for the last hidden "
                         "state.")
    indices = []
    for item in chosen:
        if isinstance(item, bool) or not isinstance(item, (int, np.integer)):
            raise TypeError(f"layer={layer!r}: layers are integer indices of the encoder's hidden states; got "
                            f"{type(item).__name__}.")
        if not -(num_hidden_layers + 1) <= item <= num_hidden_layers:
            raise ValueError(f"layer={item} is out of range: this model has {num_hidden_layers} layers, so its "
                             f"hidden states are 0 (the patch embeddings) to {num_hidden_layers} (the last layer), "
                             f"or -1 to -{num_hidden_layers + 1} from the end; None is the last hidden state after "
                             "the final LayerNorm.")
        indices.append(int(item) % (num_hidden_layers + 1))
    return tuple(indices)


def column_centres(num_columns: int, patch_size: int, time_stride: int) -> torch.Tensor:
    """Centre time in seconds of each time column of patches, from the first sample of the spectrogram.

    Column j covers frames j * time_stride to j * time_stride + patch_size - 1; frame k covers samples k * 160 to
    k * 160 + 399 at 16 kHz (25 ms windows, 10 ms apart). The centre is the middle of the samples the column covers.

    Returns:
        (num_columns,) float64 seconds.
    """
    first = torch.arange(num_columns, dtype=torch.float64) * time_stride * FRAME_SHIFT  # first sample of each column
    last = first + (patch_size - 1) * FRAME_SHIFT + FRAME_LENGTH  # one past its last sample
    return (first + last) / 2 / 16000


def embed_windows(encoder: ASTModel, extractor: ASTFeatureExtractor, clips: Sequence[torch.Tensor], *,
                  pad_to_max_length: bool, pool: str = "cls_dist", layers: tuple[int, ...] | None = None,
                  with_columns: bool = False, device: Any = None) -> tuple[torch.Tensor, list[torch.Tensor] | None]:
    """Run a batch of windows (each at most `max_length` frames) through the encoder and pool them.

    Args:
        encoder: ast_hf's `ASTModel`, in eval mode.
        extractor: Its feature extractor.
        clips: The windows' samples, 1-D tensors at the extractor's rate.
        pad_to_max_length: Pad to `max_length` without a mask (True) or to the longest window with one (False).
        pool: One of `POOLS`.
        layers: Indices of `hidden_states`, or None for the last hidden state after the final LayerNorm.
        with_columns: Also return each window's time columns (patch tokens averaged over frequency rows).
        device: Where the features go; the encoder's device when None.

    Returns:
        (windows, size) vectors (size = hidden size x number of layers), and with `with_columns` a list with each
            window's (real columns, size) column vectors, else None.
    """
    config = encoder.config
    device = encoder.device if device is None else device
    features = window_features(extractor, list(clips), pad_to_max_length, config.patch_shape[1], device)
    with torch.inference_mode():
        # Only the asked-for hidden states are kept (the others stay None), not every layer's.
        output = encoder(**features, output_hidden_states=list(layers) if layers is not None else False)
    states = [output.last_hidden_state] if layers is None else [output.hidden_states[i] for i in layers]
    batch, frames, mel_bins = features["input_values"].shape
    grid_f, grid_t = config.patch_grid_for(frames, mel_bins)
    lengths = torch.tensor([num_frames(clip.shape[0]) for clip in clips])
    real = patches_along(lengths.clamp(min=config.patch_shape[1]).clamp(max=frames), config.patch_shape[1],
                         config.time_stride).clamp(max=grid_t)  # (B,) real time columns
    # Pooled where the encoder ran: only the (B, size) vectors (and with_columns the column vectors) reach the CPU.
    on = states[0].device
    real_on = real.to(on)
    keep = torch.arange(grid_t, device=on)[None, :] < real_on[:, None]  # (B, t)
    vectors, columns = [], []
    for state in states:
        state = state.float()  # (B, 2 + f*t, D)
        grid = None
        if pool == "mean" or with_columns:
            grid = state[:, NUM_PREFIX_TOKENS:].reshape(batch, grid_f, grid_t, -1).mean(dim=1)  # (B, t, D)
        if pool == "cls_dist":
            vectors.append((state[:, 0] + state[:, 1]) / 2)
        elif pool == "cls":
            vectors.append(state[:, 0])
        else:
            vectors.append((grid * keep[..., None]).sum(dim=1) / real_on[:, None])
        columns.append(grid)
    vector = torch.cat(vectors, dim=-1).cpu()  # (B, D x layers)
    if not with_columns:
        return vector, None
    grid = torch.cat(columns, dim=-1).cpu()  # (B, t, D x layers)
    return vector, [grid[i, :int(real[i])] for i in range(batch)]


def embed_recordings(encoder: ASTModel, extractor: ASTFeatureExtractor, sources: Iterable[Any],
                     open_source: Callable[[Any], AudioStream], *, keep_errors: bool = False,
                     pool: str = "cls_dist", layers: tuple[int, ...] | None = None, timestamps: bool = False,
                     hop: float | None = None, batch_size: int = DEFAULT_BATCH_SIZE,
                     pad_to_max_length: bool | None = None, device: Any = None,
                     progress: Callable[[float, float | None], Any] | None = None) -> Iterator[dict[str, Any]]:
    """Embed recordings window by window, batching windows across recordings; the pipeline's and the HEAR API's
    engine.

    Args:
        encoder: ast_hf's `ASTModel`, in eval mode.
        extractor: Its feature extractor.
        sources: The inputs, in order (a generator works: each is opened when its turn comes).
        open_source: Opens one input as an `ast_hf.audio_io.AudioStream` at the extractor's rate.
        keep_errors: Give an input that cannot be read (an `AudioReadError`, a ValueError or TypeError of
            `open_source`) as {"error": message} and go on, instead of raising.
        pool: As in `embed_windows`.
        layers: As in `embed_windows`.
        timestamps: Also give each recording's time columns and their centre times.
        hop: Seconds between window starts; None tiles the patch grid (see the module docstring).
        batch_size: Windows per forward pass.
        pad_to_max_length: The input convention; None: the extractor's.
        device: Where the features go; the encoder's device when None.
        progress: Called after each batch with (seconds done in the current recording, its duration or None).

    Yields:
        Per recording, in order: {"embedding": (size,), "duration": seconds, "windows": count}, and with
            `timestamps` "timestamps" (n,) seconds and "timestamp_embeddings" (n, size); float32 torch tensors.

    Raises:
        ValueError: For a hop longer than the window or shorter than one sample; an AudioReadError for audio that
            cannot be read.
    """
    config = encoder.config
    pad_to_max_length = extractor.pad_to_max_length if pad_to_max_length is None else pad_to_max_length
    rate = extractor.sampling_rate
    window = samples_for_frames(extractor.max_length)
    patch_frames = config.patch_shape[1]
    grid_t = patches_along(max(extractor.max_length, patch_frames), patch_frames, config.time_stride)
    tiling = grid_t * config.time_stride * FRAME_SHIFT  # samples from a window's first column to the next one's
    # By default the next window starts at the first column this one has no room for.
    hop_samples = min(tiling, window) if hop is None else hop_in_samples(hop, window, rate, extractor.max_length)
    centres = column_centres(grid_t, config.patch_shape[1], config.time_stride)  # (t,) seconds from a window's start
    overlapping = hop_samples < tiling  # windows share moments

    def run_batch(clips: list[torch.Tensor]) -> list[tuple[torch.Tensor, torch.Tensor | None]]:
        vectors, columns = embed_windows(encoder, extractor, clips, pad_to_max_length=pad_to_max_length, pool=pool,
                                         layers=layers, with_columns=timestamps, device=device)
        return [(vectors[i], columns[i] if timestamps else None) for i in range(len(clips))]

    for recording in windows_across(sources, open_source, window=window, hop=hop_samples, rate=rate,
                                    batch_size=batch_size, run_batch=run_batch, keep_errors=keep_errors,
                                    progress=progress):
        yield _finish(recording, timestamps, rate, window, overlapping, centres, patch_frames)


def _finish(recording: WindowedRecording, timestamps: bool, rate: int, window: int, overlapping: bool,
            centres: torch.Tensor, patch_frames: int) -> dict[str, Any]:
    """One recording's result from its windows (see `embed_recordings`)."""
    if recording.error is not None:
        return {"error": recording.error}
    weights = torch.tensor(recording.lengths, dtype=torch.float32)  # samples per window
    vectors = torch.stack([vector for vector, _ in recording.outputs])  # (windows, size)
    result: dict[str, Any] = {"embedding": (vectors * weights[:, None]).sum(dim=0) / weights.sum(),
                              "duration": recording.duration, "windows": len(recording.outputs)}
    if timestamps:
        columns = [column for _, column in recording.outputs]  # each (real columns, size)
        times = []  # each (real columns,) seconds from the recording's start
        for start, length, column in zip(recording.starts, recording.lengths, columns, strict=True):
            if num_frames(length) < patch_frames:  # one padded patch: centred on the audio
                times.append(torch.tensor([(start + length / 2) / rate], dtype=torch.float64))
            else:
                times.append(centres[:column.shape[0]] + start / rate)
        keep = [torch.ones(t.shape[0], dtype=torch.bool) for t in times]
        if overlapping and len(times) > 1:
            keep = _nearest_window_columns(recording.starts, recording.lengths, times, rate, window)
        result["timestamps"] = torch.cat([t[k] for t, k in zip(times, keep, strict=True)])  # float64
        result["timestamp_embeddings"] = torch.cat([c[k] for c, k in zip(columns, keep, strict=True)])
    return result


def _nearest_window_columns(window_starts: list[int], window_lengths: list[int], times: list[torch.Tensor], rate: int,
                            window: int) -> list[torch.Tensor]:
    """For overlapping windows: which columns of each window to keep, each moment from the window whose centre is
    nearest to it (ties to the earlier window). Only windows within reach of one window length are compared."""
    starts = torch.tensor(window_starts, dtype=torch.float64)
    lengths = torch.tensor(window_lengths, dtype=torch.float64)
    begins, ends, centres = starts / rate, (starts + lengths) / rate, (starts + lengths / 2) / rate
    hop = float(starts[1] - starts[0])
    reach = int(np.ceil(window / hop)) + 1  # windows that can cover a moment of window i: i - reach ... i + reach
    keep = []
    for i, column_times in enumerate(times):
        lo, hi = max(0, i - reach), min(len(starts), i + reach + 1)
        t = column_times.double()[:, None]  # (columns, 1)
        covers = (begins[None, lo:hi] <= t) & (t <= ends[None, lo:hi])
        distance = (t - centres[None, lo:hi]).abs().masked_fill(~covers, float("inf"))
        keep.append(distance.argmin(dim=1) + lo == i)
    return keep


def _as_output(value: torch.Tensor, return_tensors: Any) -> Any:
    if return_tensors in ("pt", True):
        return value
    if return_tensors is False:
        return value.tolist()
    return value.numpy()


class AudioFeatureExtractionPipeline(Pipeline):
    """Embed recordings of any length: one vector per recording, and one per moment with `timestamps=True`.

    Made by `transformers.pipeline("audio-feature-extraction", model=...)` once ast_hf is imported (the module
    docstring says what the vectors are and how long recordings are windowed). Call it with one input or a list of
    inputs (a generator gives a generator of results); the windows of several inputs are batched together. Each input
    is one of: a file path (anything FFmpeg reads), file bytes or a binary file object, a dict `{"array" or "raw":
    samples, "sampling_rate": rate}`, or a numpy array or torch tensor with `sampling_rate=`; any rate and channel
    count (resampled to the extractor's rate, averaged to mono).

    Each input gives a dict:

    - "embedding": the recording's vector, (hidden size x layers,);
    - "duration": its length in seconds; "windows": how many windows it was cut into;
    - with `timestamps=True`: "timestamps", each moment's centre time in seconds, (n,), and "timestamp_embeddings",
      (n, hidden size x layers).

    Arrays are numpy float32 by default; `return_tensors="pt"` (or True, as in transformers' feature-extraction
    pipelines) gives torch tensors, `return_tensors=False` Python lists.

    Args:
        *args: transformers' `Pipeline` arguments: the model (an AST encoder or classifier, ast_hf's or
            transformers' built-in one; see `as_ast_encoder`) and its feature extractor.
        optimize: An inference mode of `ast_hf.fast_inference.optimize_for_inference` ("bf16", "int8", "compile",
            "auto"); None (default) keeps float32.
        **kwargs: transformers' `Pipeline` keyword arguments, and any call option below for every call.

    Keyword Args:
        pool (str): "cls_dist" (default), "mean" or "cls".
        layer (int | list[int] | None): Hidden states to use (0 = patch embeddings, n = layer n, negative from the
            end; a list is concatenated); None (default) the last hidden state after the final LayerNorm.
        timestamps (bool): Also return one vector per time column of patches; default False.
        hop (float): Seconds between window starts for recordings longer than the window; default: windows that
            tile the patch grid (no moment computed twice).
        batch_size (int): Windows per forward pass; default 4.
        pad_to_max_length (bool): The input convention for windows shorter than `max_length`; default the
            extractor's.
        return_tensors (str | bool): "np" (default), "pt"/True or False (lists).
        sampling_rate (int): The rate of array input.
        progress (Callable[[float, float | None], Any]): Called after each batch with (seconds done in the current
            input, its duration or None).

    Raises:
        TypeError: At construction, when the model is not an AST. At a call, for an unknown option, a layer that is
            not an integer, or an input of another kind.
        ValueError: At construction, when there is no feature extractor. At a call, for an unknown pool, a layer
            out of range, a bad hop or batch size, or audio that cannot be read (an `AudioReadError`, naming the
            file and the reason).

    Example:
        ```python
        import ast_hf  # registers "audio-feature-extraction"
        from transformers import pipeline

        embedder = pipeline("audio-feature-extraction", model="path/or/hub-id")
        result = embedder("meeting.mp3", timestamps=True)
        result["embedding"].shape  # (hidden size,)
        result["timestamp_embeddings"].shape  # (moments, hidden size), at result["timestamps"] seconds
        ```
    """

    _load_feature_extractor = True
    _load_processor = False
    _load_image_processor = False
    _load_tokenizer = False

    def __init__(self, *args: Any, optimize: str | None = None, **kwargs: Any) -> None:
        set_pipeline_device(args, kwargs, optimize)  # no device given: default_device's rule
        super().__init__(*args, **kwargs)
        self.model, self.feature_extractor = as_ast_encoder(self.model, self.feature_extractor)
        self.model = optimized(self.model, optimize)

    def __call__(self, inputs: Any, **kwargs: Any) -> Any:
        """Embed one recording, or each of a list (or generator) of recordings.

        Args:
            inputs: One recording, a list or tuple of them, or a generator of them.
            **kwargs: Call options over those given at construction (see the class docstring).

        Returns:
            One result dict for one input, a list for a list or tuple, a generator for a generator.
        """
        collection = input_collection(inputs)
        if collection is not None:
            results = self.embed_many(collection, **kwargs)
            return list(results) if isinstance(inputs, (list, tuple)) else results
        kwargs.pop("num_workers", None)  # one recording: nothing to decode ahead
        options = {**self._preprocess_params, **self._forward_params, **self._postprocess_params}
        options.update(self._check_options(**kwargs))
        return next(self._embed([inputs], options))

    def embed_many(self, inputs: Iterable[Any], keep_errors: bool = False, num_workers: int = 0,
                   **kwargs: Any) -> Iterator[dict[str, Any]]:
        """Embed many recordings, windows of several recordings batched together (what a call with a list does).

        Args:
            inputs: The recordings; a sequence (list, tuple, `KeyDataset`, `datasets` column) is decoded in
                `num_workers` worker processes, anything else in this one.
            keep_errors: Give a recording that cannot be read as `{"error": message}` and go on, instead of
                raising its `AudioReadError`.
            num_workers: Worker processes that decode (and resample) the next recordings while the model runs.
            **kwargs: Call options (see the class docstring).

        Yields:
            One result per input, in order.
        """
        options = {**self._preprocess_params, **self._forward_params, **self._postprocess_params}
        options.update(self._check_options(**kwargs))
        return self._embed(inputs, options, keep_errors=keep_errors, num_workers=num_workers)

    def _check_options(self, pool: str | None = None, layer: Any = None, timestamps: bool | None = None,
                       hop: float | None = None, batch_size: int | None = None, pad_to_max_length: bool | None = None,
                       return_tensors: Any = None, sampling_rate: int | None = None,
                       progress: Callable[[float, float | None], Any] | None = None,
                       **unknown: Any) -> dict[str, Any]:
        if unknown:
            raise TypeError(f"Unknown argument(s) {sorted(unknown)} for the {TASK!r} pipeline; it takes pool, layer, "
                            "timestamps, hop, batch_size, pad_to_max_length, return_tensors, sampling_rate and "
                            "progress.")
        options: dict[str, Any] = {}
        if pool is not None:
            if pool not in POOLS:
                raise ValueError(f"pool={pool!r} is not one of {', '.join(POOLS)} (the mean of the CLS and "
                                 "distillation tokens, the mean of the patch tokens, the CLS token).")
            options["pool"] = pool
        if layer is not None:
            options["layers"] = check_layers(layer, self.model.config.num_hidden_layers)
        if timestamps is not None:
            options["timestamps"] = bool(timestamps)
        if hop is not None:
            options["hop"] = check_hop_seconds(hop)
        if batch_size is not None:
            options["batch_size"] = check_batch_size(batch_size)
        if check_pad_option(pad_to_max_length) is not None:
            options["pad_to_max_length"] = pad_to_max_length
        if return_tensors is not None:
            if return_tensors not in (*RETURN_TENSORS, True, False):
                raise ValueError(f"return_tensors={return_tensors!r}: pass 'np' (numpy, the default), 'pt' or True "
                                 "(torch) or False (lists).")
            options["return_tensors"] = return_tensors
        if sampling_rate is not None:
            options["sampling_rate"] = sampling_rate
        if progress is not None:
            options["progress"] = progress
        return options

    def _embed(self, inputs: Iterable[Any], options: dict[str, Any], keep_errors: bool = False,
               num_workers: int = 0) -> Iterator[dict[str, Any]]:
        rate = self.feature_extractor.sampling_rate
        source_rate = options.get("sampling_rate")
        return_tensors = options.get("return_tensors", "np")

        def open_source(source: Any) -> AudioStream:
            return open_input(source, rate, source_rate, TASK)

        inputs, open_source = decoded_inputs(inputs, open_source, num_workers, self.device)
        results = embed_recordings(self.model, self.feature_extractor, inputs, open_source, keep_errors=keep_errors,
                                   pool=options.get("pool", "cls_dist"), layers=options.get("layers"),
                                   timestamps=options.get("timestamps", False), hop=options.get("hop"),
                                   batch_size=options.get("batch_size", DEFAULT_BATCH_SIZE),
                                   pad_to_max_length=options.get("pad_to_max_length"), device=self.device,
                                   progress=options.get("progress"))
        for result in results:
            yield {key: _as_output(value, return_tensors) if isinstance(value, torch.Tensor) else value
                   for key, value in result.items()}

    # transformers' Pipeline declares these; __call__ above batches windows across inputs instead.
    def _sanitize_parameters(self, **kwargs: Any) -> tuple[dict, dict, dict]:
        return self._check_options(**kwargs), {}, {}

    def preprocess(self, inputs: Any, **options: Any) -> dict[str, Any]:
        return {"inputs": inputs, "options": options}

    def _forward(self, model_inputs: dict[str, Any]) -> dict[str, Any]:
        return next(self._embed([model_inputs["inputs"]], model_inputs["options"]))

    def postprocess(self, model_outputs: dict[str, Any]) -> dict[str, Any]:
        return model_outputs


class AnyASTCheckpoint:
    """The pipeline's model loader: a classifier checkpoint (config `architectures` "...ForAudioClassification")
    loads with AutoModelForAudioClassification, so that its head is not reported as unexpected weights (its
    encoder is then used); anything else with AutoModel."""

    @classmethod
    def from_pretrained(cls, name: Any, *args: Any, **kwargs: Any) -> Any:
        hub = {key: kwargs[key] for key in ("revision", "token", "cache_dir", "local_files_only", "trust_remote_code")
               if key in kwargs}
        architectures = AutoConfig.from_pretrained(name, **hub).architectures or []
        classifier = any(str(name_).endswith("ForAudioClassification") for name_ in architectures)
        loader = AutoModelForAudioClassification if classifier else AutoModel
        return loader.from_pretrained(name, *args, **kwargs)


def register_pipeline() -> None:
    """Register the "audio-feature-extraction" task with transformers' `PIPELINE_REGISTRY`.

    Called when ast_hf is imported; registers once (a task already registered is left as it is).
    """
    if TASK not in PIPELINE_REGISTRY.get_supported_tasks():
        PIPELINE_REGISTRY.register_pipeline(TASK, pipeline_class=AudioFeatureExtractionPipeline,
                                            pt_model=AnyASTCheckpoint, type="audio")


__all__ = ["POOLS", "AudioFeatureExtractionPipeline", "as_ast_encoder", "check_layers", "column_centres",
           "embed_recordings", "embed_windows", "register_pipeline"]
