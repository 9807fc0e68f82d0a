"""Tagging recordings of any length: the "audio-tagging" pipeline.

`pipeline("audio-tagging", model=ID_OR_DIR)` (registered with transformers' PIPELINE_REGISTRY when ast_hf is
imported) classifies a whole recording window by window and answers "what, and when":

- Windows of the extractor's `max_length` frames (10.255 s of audio for AudioSet's 1024 frames: 400 + 1023 x 160
  samples) start every `hop` seconds (half a window by default). The last window is the audio that remains; a
  recording shorter than one window is one window. A window shorter than `max_length` is fed the way the
  checkpoint was trained (the extractor's `pad_to_max_length`, saved in preprocessor_config.json): padded to
  `max_length` frames without a mask for a padded-trained checkpoint (every released AST, and any checkpoint
  whose file lacks the field), at its own length with an attention mask for one trained on masked batches. So a
  short file gets the scores `pipeline("audio-classification")` gives it. `pad_to_max_length=` overrides.
- The file is decoded chunk by chunk (`ast_hf.audio_io.open_audio`: torchcodec/FFmpeg, resampled to the
  extractor's rate and averaged to mono as it is decoded), windows are classified `batch_size` at a time and only
  each window's logits are kept, so memory does not grow with the recording's length beyond 4 bytes per label
  per window (2 KB a window for AudioSet's 527).
- Scores: sigmoid per label for multi-label models (`problem_type="multi_label_classification"`, or AudioSet's 527
  labels), softmax otherwise; `multi_label=` overrides. The whole recording's scores (`clip`) are the maximum over
  windows for multi-label models (a sound present anywhere is present) and the mean of the windows' probabilities
  for single-label ones.
- `events=True` merges consecutive windows in which a label is active (among the window's `top_k` with a score of
  at least `threshold`; for single-label models only the window's top label can be active) into events with start,
  end, label and peak score.

Any transformers AST checkpoint works too: the built-in `ASTForAudioClassification` and its extractor are turned
into ast_hf's (same weights, same features), which run windows shorter than the stored grid.
"""

from __future__ import annotations

import os
import types
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from transformers import AutoModelForAudioClassification, Pipeline
from transformers.pipelines import PIPELINE_REGISTRY
from transformers.utils import logging

from .audio_io import AudioStream, open_audio
from .configuration_ast import BUILTIN_AST_MODEL_TYPE, samples_for_frames
from .fast_inference import optimized, set_pipeline_device
from .feature_extraction_ast import ASTFeatureExtractor, num_frames
from .modeling_ast import ASTForAudioClassification

logger = logging.get_logger(__name__)

TASK = "audio-tagging"
DEFAULT_TOP_K = 5
DEFAULT_BATCH_SIZE = 4  # windows per forward pass: 4 x 1024 frames is where a 2-core CPU's throughput levels off
DEFAULT_THRESHOLD = 0.5


def is_multi_label(config: Any) -> bool:
    """Tell whether a classifier's labels are independent (sigmoid) rather than exclusive (softmax).

    They are when its `problem_type` is "multi_label_classification", or when it sets no `problem_type` and has
    AudioSet's 527 labels (the released AudioSet checkpoints do not set `problem_type`).

    Args:
        config: The model's config (`problem_type`, `num_labels`, `id2label`).

    Returns:
        True for a multi-label classifier.
    """
    if config.problem_type == "multi_label_classification":
        return True
    if config.problem_type is not None or config.num_labels != 527:
        return False
    from .presets import dataset_labels

    return [config.id2label[i] for i in range(527)] == dataset_labels("audioset")


def windows(chunks: Iterable[torch.Tensor], window: int, hop: int) -> Iterator[tuple[int, torch.Tensor]]:
    """Cut a stream of audio chunks into windows of `window` samples starting every `hop` samples.

    The last window is what remains after the previous one, shorter than `window`; none follows a window that
    reaches the end. A stream shorter than one window gives one window. Holds at most one window plus one chunk.

    Args:
        chunks: The audio as a stream of 1-D tensors of samples.
        window: Samples per window.
        hop: Samples between two window starts, `0 < hop <= window`.

    Yields:
        (first sample, samples) of each window, in order.

    Raises:
        ValueError: When `hop` is not positive or larger than `window`.

    Example:
        ```python
        [(start, len(w)) for start, w in windows([torch.zeros(25)], window=10, hop=5)]
        # [(0, 10), (5, 10), (10, 10), (15, 10)]
        ```
    """
    if not 0 < hop <= window:
        raise ValueError(f"hop={hop} samples must be positive and at most the window ({window} samples).")
    buffer = torch.zeros(0)
    offset = 0  # sample index of buffer[0]
    start = 0  # first sample of the next window
    last_end = 0  # end of the last window given out
    for chunk in chunks:
        buffer = torch.cat([buffer, chunk])
        while offset + buffer.shape[0] >= start + window:
            yield start, buffer[start - offset:start - offset + window].clone()
            last_end = start + window
            start += hop
            buffer, offset = buffer[start - offset:], start
    total = offset + buffer.shape[0]
    if total > last_end or last_end == 0:
        yield start, buffer[start - offset:].clone()


@dataclass
class WindowedRecording:
    """One recording's windows once all have run: the model's output of each window, in order, or the error that
    stopped it (`error`, a message naming the recording)."""

    error: str | None = None
    duration: float = 0.0  # seconds, to the end of the last window
    starts: list[int] = field(default_factory=list)  # first sample of each window
    lengths: list[int] = field(default_factory=list)  # samples of each window
    outputs: list[Any] = field(default_factory=list)  # what `run_batch` gave for each window


def windows_across(sources: Iterable[Any], open_source: Callable[[Any], AudioStream], *, window: int, hop: int,
                   rate: int, batch_size: int, run_batch: Callable[[list[torch.Tensor]], Sequence[Any]],
                   keep_errors: bool = False,
                   progress: Callable[[float, float | None], Any] | None = None) -> Iterator[WindowedRecording]:
    """Cut recordings into windows and run them `batch_size` at a time, a batch holding windows of several
    recordings; the engine of the tagging and embedding pipelines and of corpus runs.

    Each recording is opened when its turn comes (`open_source`) and decoded chunk by chunk, so memory holds one
    batch of windows and the outputs of the recordings not yet given out, whatever the number or length of the
    recordings.

    Args:
        sources: The inputs, in order (a generator works).
        open_source: Opens one input as an `AudioStream` at `rate`.
        window: Samples per window.
        hop: Samples between window starts.
        rate: The streams' sampling rate.
        batch_size: Windows per `run_batch` call.
        run_batch: Runs a list of windows (1-D sample tensors) and returns one output per window.
        keep_errors: Give an input that cannot be read (a ValueError or TypeError of `open_source` or of its
            decoding; an `AudioReadError` is a ValueError) as a WindowedRecording with `error` set, and go on;
            otherwise the error is raised.
        progress: Called after each batch with (seconds done in the current recording, its duration or None).

    Yields:
        One WindowedRecording per source, in order.
    """
    pending: list[WindowedRecording] = []  # recordings not yet given out, in order
    buffer: list[tuple[WindowedRecording, int, torch.Tensor]] = []  # windows waiting for a forward pass

    def run_buffer(duration: float | None) -> None:
        outputs = run_batch([samples for _, _, samples in buffer])
        for (recording, start, samples), output in zip(buffer, outputs, strict=True):
            recording.starts.append(start)
            recording.lengths.append(samples.shape[0])
            recording.outputs.append(output)
        if progress is not None:
            progress(buffer[-1][0].duration, duration)
        buffer.clear()

    for source in sources:
        recording = WindowedRecording()
        pending.append(recording)
        try:
            stream = open_source(source)
            for start, samples in windows(stream.chunks(), window, hop):
                recording.duration = (start + samples.shape[0]) / rate
                buffer.append((recording, start, samples))
                if len(buffer) == batch_size:
                    run_buffer(stream.duration)
        except (ValueError, TypeError) as error:  # AudioReadError is a ValueError
            if not keep_errors:
                raise
            recording.error = str(error)
            buffer[:] = [item for item in buffer if item[0] is not recording]
        # Every pending recording has had all its windows cut; those with none left in the buffer are done.
        while pending and not any(item[0] is pending[0] for item in buffer):
            yield pending.pop(0)
    if buffer:
        run_buffer(None)
    yield from pending


def check_batch_size(batch_size: Any) -> int:
    """A ValueError unless `batch_size` is a positive integer (windows per forward pass)."""
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size={batch_size!r} must be a positive integer (windows per forward pass).")
    return batch_size


def check_pad_option(pad_to_max_length: Any) -> bool | None:
    """A TypeError unless `pad_to_max_length` is True, False or None (the checkpoint's convention)."""
    if pad_to_max_length is not None and not isinstance(pad_to_max_length, bool):
        raise TypeError(f"pad_to_max_length={pad_to_max_length!r} must be True, False or None (the checkpoint's "
                        "convention).")
    return pad_to_max_length


def check_hop_seconds(hop: Any) -> float:
    """A ValueError unless `hop` is a positive, finite number of seconds."""
    if isinstance(hop, bool) or not isinstance(hop, (int, float)) or not 0 < hop < float("inf"):
        raise ValueError(f"hop={hop!r} must be a positive, finite number of seconds.")
    return float(hop)


def hop_in_samples(hop: float, window: int, rate: int, max_length: int) -> int:
    """`hop` seconds in samples; a ValueError when it is longer than the window or shorter than one sample."""
    samples = round(hop * rate)
    if samples > window:
        raise ValueError(f"hop={hop} s is longer than the window ({window / rate:.2f} s: {max_length} frames); "
                         "windows would skip audio. Pass a hop of at most the window.")
    if samples < 1:
        raise ValueError(f"hop={hop} s is shorter than one sample at {rate} Hz.")
    return samples


def refuse_number_lists(inputs: Any) -> None:
    """A TypeError for a list of numbers, which a pipeline would take for a batch of inputs."""
    if isinstance(inputs, (list, tuple)) and inputs and isinstance(inputs[0], (int, float, np.number)):
        raise TypeError("A list of numbers is ambiguous here (a list is a batch of inputs); pass one clip as a numpy "
                        "array or torch tensor with sampling_rate=.")


def open_input(source: Any, rate: int, sampling_rate: int | None, task: str) -> AudioStream:
    """`open_audio` for a pipeline, with a warning (once) for an array given without its rate."""
    if isinstance(source, (np.ndarray, torch.Tensor)) and sampling_rate is None:
        logger.warning_once(f"The {task!r} pipeline got an array without sampling_rate; it is taken to be at {rate} "
                            "Hz. Pass sampling_rate= (or a dict with 'sampling_rate') to be sure.")
    return open_audio(source, rate, source_rate=sampling_rate)


def as_ast_hf(model: Any, feature_extractor: Any) -> tuple[ASTForAudioClassification, ASTFeatureExtractor]:
    """Turn an AST checkpoint's classifier and feature extractor, loaded either way, into ast_hf's.

    ast_hf's are returned as they are; transformers' built-in ones are converted (`convert.from_builtin_model`:
    same weights, every one checked; the extractor with the same settings).

    Args:
        model: An AST classifier: ast_hf's `ASTForAudioClassification` or transformers' built-in one.
        feature_extractor: Its feature extractor, ast_hf's or transformers' built-in one.

    Returns:
        ast_hf's classifier and feature extractor.

    Raises:
        TypeError: When `model` is not an AST classifier.
        ValueError: When `feature_extractor` is None (the checkpoint has no preprocessor_config.json): pass
            `feature_extractor=ast_hf.ASTFeatureExtractor(...)` with the settings it was trained with.
    """
    if not isinstance(model, ASTForAudioClassification):
        if getattr(model.config, "model_type", None) != BUILTIN_AST_MODEL_TYPE or not hasattr(model, "classifier"):
            raise TypeError(f"The {TASK!r} pipeline runs Audio Spectrogram Transformer classifiers (ast_hf's or "
                            f"transformers' built-in); got {type(model).__name__}. Pass an AST checkpoint.")
        from .convert import from_builtin_model

        model = from_builtin_model(model)
    if feature_extractor is None:
        raise ValueError(f"The {TASK!r} pipeline needs the checkpoint's feature extractor (preprocessor_config.json);"
                         " pass feature_extractor=ast_hf.ASTFeatureExtractor(...) with the settings it was trained "
                         "with.")
    if not isinstance(feature_extractor, ASTFeatureExtractor):
        feature_extractor = ASTFeatureExtractor.from_dict(feature_extractor.to_dict())
    return model, feature_extractor


class AudioTaggingPipeline(Pipeline):
    """Tag a recording of any length window by window: what sounds, and when.

    Made by `transformers.pipeline("audio-tagging", model=...)` once ast_hf is imported (see the module
    docstring for how windows are cut, fed to the model and scored). Call it with one input or a list of inputs
    (a generator gives a generator of results). Each input is one of:

    - a file path (wav, flac, ogg, mp3, m4a, anything FFmpeg reads);
    - file bytes, or a binary file object;
    - a dict `{"array" or "raw": samples, "sampling_rate": rate}`;
    - a numpy array or torch tensor with `sampling_rate=` (mono, (channels, samples) or (samples, channels)).

    Any rate and channel count: the audio is resampled to the extractor's rate and averaged to mono.

    Each input gives a dict with these keys:

    - "clip": the recording's `top_k` labels, best first: `[{"label", "score"}, ...]`;
    - "segments": one per window, `[{"start", "end", "labels": [{"label", "score"}, ...]}, ...]`, times in
      seconds, each window's `top_k` labels;
    - "duration": the recording's length in seconds;
    - "timeline": `{"labels": the recording's top_k labels, "scores": [[score of each, ...] per window]}`, what
      `plot_timeline` draws;
    - "events", with `events=True` only: `[{"start", "end", "label", "score"}, ...]` (see `merge_events`).

    Args:
        *args: transformers' `Pipeline` arguments, as `transformers.pipeline` passes them: the model (an AST
            classifier, ast_hf's or transformers' built-in one, which is converted; see `as_ast_hf`) and its
            feature extractor.
        optimize: An inference mode of `ast_hf.fast_inference.optimize_for_inference` applied to the model:
            "bf16", "int8", "compile" or "auto"; None (default) keeps it float32 as loaded. At construction only.
        **kwargs: transformers' `Pipeline` keyword arguments (`model`, `feature_extractor`, `device`, ...), and
            any of the call options below, which then apply to every call.

    Keyword Args:
        top_k (int): Labels per window and for the recording; default 5.
        hop (float): Seconds between window starts; default half a window. Positive and at most the window.
        batch_size (int): Windows per forward pass; default 4.
        events (bool): Merge consecutive windows in which a label is active into events; default False.
        threshold (float): An event label's smallest score, between 0 and 1; default 0.5.
        multi_label (bool): True: sigmoid scores, the recording's the maximum of its windows'; False: softmax
            scores, the recording's the mean of its windows'. Default from the model (`is_multi_label`).
        pad_to_max_length (bool): True: pad windows shorter than `max_length` to `max_length`, unmasked; False: run
            them at their own length, masked. Default the extractor's, i.e. how the checkpoint was trained.
        sampling_rate (int): The rate of array input; without it an array is taken to be at the extractor's rate
            (with a warning).
        progress (Callable[[float, float | None], Any]): Called after each batch with (seconds done, seconds in
            all or None when unknown).

    Raises:
        TypeError: At construction, when the model is not an AST classifier. At a call, for an unknown option, a
            `pad_to_max_length` that is not a bool or None, a list of numbers as input, or an input of another
            kind.
        ValueError: At construction, when there is no feature extractor, or for an unknown `optimize` mode. At a
            call, for a `top_k`, `batch_size`, `hop` or `threshold` out of range, or audio that cannot be read
            (an `AudioReadError`, which names the file and the reason).

    Example:
        ```python
        import ast_hf  # registers "audio-tagging"
        from transformers import pipeline

        tagger = pipeline("audio-tagging", model="MIT/ast-finetuned-audioset-10-10-0.4593")
        result = tagger("recording.wav", top_k=3, events=True)
        result["clip"]  # the recording's 3 best labels: [{"label": ..., "score": ...}, ...]
        ast_hf.tagging.plot_timeline("recording.wav", result, "timeline.png")
        ```
    """

    _load_feature_extractor = True
    _load_processor = False
    _load_image_processor = False
    _load_tokenizer = False

    def __init__(self, *args: Any, optimize: str | None = None, **kwargs: Any) -> None:
        set_pipeline_device(args, kwargs, optimize)  # no device given: default_device's rule
        super().__init__(*args, **kwargs)
        self.model, self.feature_extractor = as_ast_hf(self.model, self.feature_extractor)
        self.model = optimized(self.model, optimize)

    def __call__(self, inputs: Any, **kwargs: Any) -> Any:
        """Tag one recording, or each of a list (or generator) of recordings.

        Args:
            inputs: One recording (a path, bytes, a binary file object, an audio dict, or an array or tensor with
                `sampling_rate=`), a list or tuple of them, or a generator of them.
            **kwargs: Call options, over those given at construction: `top_k`, `hop`, `batch_size`, `events`,
                `threshold`, `multi_label`, `pad_to_max_length`, `sampling_rate` and `progress` (see the class
                docstring), and `num_workers` (worker processes that decode the next recordings of a list while the
                model runs; see `tag_many`).

        Returns:
            One result dict for one input (see the class docstring), a list of them for a list or tuple, a generator
                of them for a generator.

        Raises:
            TypeError: For an unknown option, a `pad_to_max_length` that is not a bool or None, a list of numbers
                (pass one clip as an array or tensor), or an input of another kind.
            ValueError: When `batch_size` or `top_k` is not a positive integer, `hop` is not a positive, finite
                number of seconds, is longer than the window or shorter than one sample, `threshold` is not between
                0 and 1, or the audio cannot be read (an `AudioReadError`).
        """
        collection = input_collection(inputs)
        if collection is not None:
            results = self.tag_many(collection, **kwargs)
            return list(results) if isinstance(inputs, (list, tuple)) else results
        batch_size = kwargs.pop("batch_size", None)
        batch_size = self._batch_size if batch_size is None else batch_size
        batch_size = check_batch_size(DEFAULT_BATCH_SIZE if batch_size is None else batch_size)
        kwargs.pop("num_workers", None)  # one recording: nothing to decode ahead
        preprocess_params, forward_params, postprocess_params = self._sanitize_parameters(**kwargs)
        preprocess_params = {**self._preprocess_params, **preprocess_params}
        forward_params = {**self._forward_params, "batch_size": batch_size, **forward_params}
        postprocess_params = {**self._postprocess_params, **postprocess_params}
        return self.run_single(inputs, preprocess_params, forward_params, postprocess_params)

    def _sanitize_parameters(self, top_k: int | None = None, hop: float | None = None, events: bool | None = None,
                             threshold: float | None = None, multi_label: bool | None = None,
                             sampling_rate: int | None = None, progress: Callable[[float, float | None], Any] | None
                             = None, pad_to_max_length: bool | None = None,
                             **unknown: Any) -> tuple[dict, dict, dict]:
        if unknown:
            raise TypeError(f"Unknown argument(s) {sorted(unknown)} for the {TASK!r} pipeline; it takes top_k, hop, "
                            "batch_size, events, threshold, multi_label, pad_to_max_length, sampling_rate and "
                            "progress.")
        preprocess, forward, postprocess = {}, {}, {}
        if check_pad_option(pad_to_max_length) is not None:
            forward["pad_to_max_length"] = pad_to_max_length
        if sampling_rate is not None:
            preprocess["sampling_rate"] = sampling_rate
        if hop is not None:
            forward["hop"] = check_hop_seconds(hop)
        if progress is not None:
            forward["progress"] = progress
        if top_k is not None:
            if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1:
                raise ValueError(f"top_k={top_k!r} must be a positive integer.")
            postprocess["top_k"] = top_k
        if events is not None:
            postprocess["events"] = bool(events)
        if threshold is not None:
            if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or not 0 <= threshold <= 1:
                raise ValueError(f"threshold={threshold!r} must be a score between 0 and 1.")
            postprocess["threshold"] = float(threshold)
        if multi_label is not None:
            postprocess["multi_label"] = bool(multi_label)
        return preprocess, forward, postprocess

    def preprocess(self, inputs: Any, sampling_rate: int | None = None) -> dict[str, Any]:
        """Open one input as a stream of audio at the extractor's rate (`ast_hf.audio_io.open_audio`).

        Args:
            inputs: One recording, of any kind the pipeline takes.
            sampling_rate: The rate of an array or tensor input; None takes it to be at the extractor's rate (with a
                warning). Not for files, which carry their own.

        Returns:
            `{"audio": AudioStream}`, decoded chunk by chunk as the windows are cut.

        Raises:
            ValueError: An `AudioReadError` naming the file and the reason when it is missing, not audio or
                truncated; when an audio dict lacks "array"/"raw" or "sampling_rate"; when `sampling_rate` is given
                with a file.
            TypeError: For an input of another kind.
        """
        return {"audio": open_input(inputs, self.feature_extractor.sampling_rate, sampling_rate, TASK)}

    def _forward(self, model_inputs: dict[str, Any], hop: float | None = None, batch_size: int = DEFAULT_BATCH_SIZE,
                 progress: Callable[[float, float | None], Any] | None = None,
                 pad_to_max_length: bool | None = None) -> dict[str, Any]:
        outputs = tag_recordings(self.model, self.feature_extractor, [model_inputs["audio"]], lambda stream: stream,
                                 hop=hop, batch_size=batch_size, pad_to_max_length=pad_to_max_length,
                                 device=self.device, progress=progress)
        return next(outputs)

    def tag_many(self, inputs: Iterable[Any], keep_errors: bool = False, num_workers: int = 0,
                 **kwargs: Any) -> Iterator[dict[str, Any]]:
        """Tag many recordings, windows of several recordings batched together (what a call with a list does).

        Args:
            inputs: The recordings, each of any kind a call takes; a sequence (list, tuple, `KeyDataset`,
                `datasets` column) is decoded in `num_workers` worker processes, anything else in this one.
            keep_errors: Give a recording that cannot be read as `{"error": message}` and go on, instead of
                raising its `AudioReadError`.
            num_workers: Worker processes that decode (and resample) the next recordings while the model runs;
                0 decodes here.
            **kwargs: Call options (see the class docstring).

        Yields:
            One result per input, in order.
        """
        batch_size = kwargs.pop("batch_size", None)
        batch_size = check_batch_size(self._batch_size or DEFAULT_BATCH_SIZE if batch_size is None else batch_size)
        preprocess_params, forward_params, postprocess_params = self._sanitize_parameters(**kwargs)
        preprocess_params = {**self._preprocess_params, **preprocess_params}
        forward_params = {**self._forward_params, "batch_size": batch_size, **forward_params}
        postprocess_params = {**self._postprocess_params, **postprocess_params}
        rate = self.feature_extractor.sampling_rate

        def open_source(source: Any) -> AudioStream:
            return open_input(source, rate, preprocess_params.get("sampling_rate"), TASK)

        sources, open_source = decoded_inputs(inputs, open_source, num_workers, self.device)
        for output in tag_recordings(self.model, self.feature_extractor, sources, open_source,
                                     keep_errors=keep_errors, device=self.device, **forward_params):
            yield output if "error" in output else self.postprocess(output, **postprocess_params)

    def postprocess(self, model_outputs: dict[str, Any], top_k: int = DEFAULT_TOP_K, events: bool = False,
                    threshold: float = DEFAULT_THRESHOLD, multi_label: bool | None = None) -> dict[str, Any]:
        """Turn the windows' logits into the result of one input (see the class docstring).

        Args:
            model_outputs: What the forward pass returns: the windows' "logits" (windows, labels), their "starts"
                and "ends" in samples and the sampling "rate".
            top_k: Labels per window and for the recording (capped at the model's number of labels).
            events: Add the "events" of `merge_events`.
            threshold: An event label's smallest score.
            multi_label: Sigmoid scores and the maximum over windows (True), or softmax and the mean over windows
                (False); None asks `is_multi_label`.

        Returns:
            `{"clip", "segments", "duration", "timeline"}`, plus "events" when `events`.
        """
        config = self.model.config
        multi_label = is_multi_label(config) if multi_label is None else multi_label
        logits = model_outputs["logits"]  # (windows, labels)
        scores = logits.sigmoid() if multi_label else logits.softmax(dim=-1)
        overall = scores.max(dim=0).values if multi_label else scores.mean(dim=0)  # (labels,)
        top_k = min(top_k, config.num_labels)
        rate = model_outputs["rate"]
        starts = [start / rate for start in model_outputs["starts"].tolist()]
        ends = [end / rate for end in model_outputs["ends"].tolist()]
        segments = [{"start": start, "end": end, "labels": _top(row, top_k, config.id2label)}
                    for start, end, row in zip(starts, ends, scores, strict=True)]
        clip = _top(overall, top_k, config.id2label)
        chosen = overall.topk(top_k).indices  # the recording's top labels, whose scores the timeline plot draws
        timeline = {"labels": [item["label"] for item in clip], "scores": scores[:, chosen].tolist()}
        result = {"clip": clip, "segments": segments, "duration": max(ends), "timeline": timeline}
        if events:
            result["events"] = merge_events(segments, threshold, single_label=not multi_label)
        return result


def window_features(extractor: ASTFeatureExtractor, clips: list[torch.Tensor], pad_to_max_length: bool,
                    patch: int, device: Any = None) -> dict[str, Any]:
    """Compute the model inputs of a batch of windows (each at most `max_length` frames).

    Args:
        extractor: The feature extractor.
        clips: The windows' samples, 1-D tensors at the extractor's rate.
        pad_to_max_length: True: padded to `max_length` with no mask, as padded-trained models saw clips in
            training. False: at the batch's longest window with the attention mask (a window shorter than one
            patch padded to one, the padding masked).
        patch: The model's patch size, the fewest frames a window is padded to.
        device: Where the tensors go (None: the CPU).

    Returns:
        `{"input_values"}` of shape (windows, frames, mel bins), plus "attention_mask" when not
            `pad_to_max_length`.
    """
    common = dict(sampling_rate=extractor.sampling_rate, padding="max_length", truncation=True,
                  return_tensors="pt", device=device)
    if pad_to_max_length:
        features = extractor(clips, max_length=extractor.max_length, return_attention_mask=False, **common)
        return {"input_values": features["input_values"]}
    width = max(max(num_frames(clip.shape[0]) for clip in clips), patch)
    features = extractor(clips, max_length=width, return_attention_mask=True, **common)
    return {"input_values": features["input_values"], "attention_mask": features["attention_mask"]}


def tag_recordings(model: ASTForAudioClassification, extractor: ASTFeatureExtractor, sources: Iterable[Any],
                   open_source: Callable[[Any], AudioStream], *, hop: float | None = None,
                   batch_size: int = DEFAULT_BATCH_SIZE, pad_to_max_length: bool | None = None, device: Any = None,
                   keep_errors: bool = False,
                   progress: Callable[[float, float | None], Any] | None = None) -> Iterator[dict[str, Any]]:
    """Run recordings window by window through a classifier, windows of several recordings batched together.

    Args:
        model: ast_hf's classifier, in eval mode.
        extractor: Its feature extractor.
        sources: The recordings, in order; each is opened when its turn comes.
        open_source: Opens one as an `AudioStream` at the extractor's rate.
        hop: Seconds between window starts; None: half a window.
        batch_size: Windows per forward pass.
        pad_to_max_length: The input convention; None: the extractor's.
        device: Where the features go (None: the CPU).
        keep_errors: Give a recording that cannot be read as {"error": message} instead of raising.
        progress: Called after each batch with (seconds done in the current recording, its duration or None).

    Yields:
        Per recording, in order: {"logits": (windows, labels) float32, "starts", "ends": (windows,) samples,
            "rate"}, what `AudioTaggingPipeline.postprocess` turns into the result; or {"error": message}.
    """
    pad_to_max_length = extractor.pad_to_max_length if pad_to_max_length is None else pad_to_max_length
    rate = extractor.sampling_rate
    window = samples_for_frames(extractor.max_length)
    hop_samples = window // 2 if hop is None else hop_in_samples(hop, window, rate, extractor.max_length)
    patch = model.config.patch_shape[1]

    def run_batch(clips: list[torch.Tensor]) -> torch.Tensor:
        with torch.inference_mode():
            output = model(**window_features(extractor, clips, pad_to_max_length, patch, device))
        return output.logits.float().cpu()  # (b, labels)

    for recording in windows_across(sources, open_source, window=window, hop=hop_samples, rate=rate,
                                    batch_size=batch_size, run_batch=run_batch, keep_errors=keep_errors,
                                    progress=progress):
        if recording.error is not None:
            yield {"error": recording.error}
            continue
        starts = torch.tensor(recording.starts)
        yield {"logits": torch.stack(recording.outputs), "starts": starts,
               "ends": starts + torch.tensor(recording.lengths), "rate": rate}


def input_collection(inputs: Any) -> Iterable[Any] | None:
    """The inputs of a pipeline call given several recordings, None for one recording.

    Several: a list or tuple (not of numbers), a generator, a sequence data set (`KeyDataset(ds, "audio")`, any
    torch map-style Dataset) or an iterable column (`ds["audio"]` of a `datasets.Dataset` or `IterableDataset`).
    One: a path, bytes, a file object, an audio dict, an array or tensor, a torchcodec `AudioDecoder`.

    Raises:
        TypeError: For a whole `datasets` data set (its rows are dicts of every column): name the audio column.
    """
    if isinstance(inputs, (str, bytes, bytearray, os.PathLike, Mapping, np.ndarray, torch.Tensor)) or hasattr(
            inputs, "get_all_samples") or hasattr(inputs, "read"):
        return None
    if isinstance(inputs, (list, tuple)):
        refuse_number_lists(inputs)
        return inputs
    if hasattr(inputs, "column_names") and hasattr(inputs, "features"):  # datasets.Dataset / IterableDataset
        raise TypeError(f"A whole data set was given (columns {inputs.column_names}); pass its audio column, "
                        "ds['audio'], or KeyDataset(ds, 'audio').")
    if isinstance(inputs, types.GeneratorType) or hasattr(inputs, "__iter__"):
        return inputs
    if isinstance(inputs, torch.utils.data.Dataset) and hasattr(inputs, "__len__"):  # KeyDataset: no __iter__
        return SequenceView(inputs)
    return None


class SequenceView:
    """A map-style data set (`__len__` and `__getitem__` only, like transformers' `KeyDataset`) as a sequence that
    iterates."""

    def __init__(self, items: Any) -> None:
        self.items = items

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> Any:
        return self.items[index]

    def __iter__(self) -> Iterator[Any]:
        return (self.items[i] for i in range(len(self.items)))


def decoded_inputs(inputs: Iterable[Any], open_source: Callable[[Any], AudioStream], num_workers: Any,
                   device: Any = None) -> tuple[Iterable[Any], Callable[[Any], AudioStream]]:
    """`inputs` and their opener, decoded ahead in `num_workers` worker processes when there are several and the
    inputs are a sequence (see `ast_hf.corpus.decoding.decode_ahead`); as they are otherwise."""
    if isinstance(num_workers, bool) or not isinstance(num_workers, int) or num_workers < 0:
        raise ValueError(f"num_workers={num_workers!r} must be a whole number of worker processes (0: decode in "
                         "this process).")
    if num_workers == 0 or not (hasattr(inputs, "__len__") and hasattr(inputs, "__getitem__")):
        return inputs, open_source
    from .corpus.decoding import decode_ahead

    return decode_ahead(inputs, open_source, num_workers, pin_memory=torch.device(device or "cpu").type == "cuda")


def merge_events(segments: list[dict[str, Any]], threshold: float,
                 single_label: bool) -> list[dict[str, Any]]:
    """Merge consecutive windows in which a label is active into events.

    A label is active in a window when it is among the window's labels with a score >= `threshold` (only the
    window's top label for single-label models). Each maximal run of consecutive windows in which it is active
    becomes one event.

    Args:
        segments: The result's "segments": `[{"start", "end", "labels": [{"label", "score"}, ...]}, ...]`, in
            order, each window's labels best first.
        threshold: An active label's smallest score.
        single_label: Only the window's top label can be active.

    Returns:
        `[{"start", "end", "label", "score"}, ...]` with the run's first start, last end and peak score, ordered
            by start, then label.
    """
    found, open_runs = [], {}
    for segment in segments:
        labels = segment["labels"][:1] if single_label else segment["labels"]
        active = {item["label"]: item["score"] for item in labels if item["score"] >= threshold}
        for label in list(open_runs):
            if label not in active:
                found.append(open_runs.pop(label))
        for label, score in active.items():
            if label in open_runs:
                run = open_runs[label]
                run["end"], run["score"] = segment["end"], max(run["score"], score)
            else:
                open_runs[label] = {"start": segment["start"], "end": segment["end"], "label": label, "score": score}
    found += open_runs.values()
    return sorted(found, key=lambda event: (event["start"], event["label"]))


def _top(scores: torch.Tensor, k: int, id2label: dict[int, str]) -> list[dict[str, Any]]:
    values, indices = scores.topk(k)
    return [{"label": id2label[int(i)], "score": float(v)} for v, i in zip(values, indices, strict=True)]


def plot_timeline(*args: Any, **kwargs: Any) -> Any:
    """Draw a recording's spectrogram and its tagging result: `ast_hf.timeline.plot_timeline`.

    Imported on use: it needs matplotlib.

    Args:
        *args: `ast_hf.timeline.plot_timeline`'s arguments: `audio` (anything the pipeline takes), `result` (the
            pipeline's output for it), `path`, `title`, `sampling_rate`, `extractor`, `max_columns`.
        **kwargs: The same, by name.

    Returns:
        (matplotlib.figure.Figure): The figure; saved to `path` (PNG, or any format matplotlib writes, by the
            suffix) when it is given.

    Raises:
        ImportError: When matplotlib is not installed.
        ValueError: When `result` is not the "audio-tagging" pipeline's output (no "segments" and "timeline").
    """
    from .timeline import plot_timeline as plot

    return plot(*args, **kwargs)


def register_pipeline() -> None:
    """Register the "audio-tagging" task with transformers' `PIPELINE_REGISTRY`.

    Called when ast_hf is imported; registers once (a task already registered is left as it is).
    """
    if TASK not in PIPELINE_REGISTRY.get_supported_tasks():
        PIPELINE_REGISTRY.register_pipeline(TASK, pipeline_class=AudioTaggingPipeline,
                                            pt_model=AutoModelForAudioClassification, type="audio")


__all__ = ["AudioTaggingPipeline", "as_ast_hf", "check_batch_size", "check_hop_seconds", "check_pad_option",
           "hop_in_samples", "is_multi_label", "merge_events", "open_input", "plot_timeline", "refuse_number_lists",
           "register_pipeline", "window_features", "windows"]
