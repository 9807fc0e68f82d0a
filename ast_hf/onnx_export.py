"""ONNX export of an ASTForAudioClassification, and onnxruntime inference of the exported file.

`export_onnx(model, output_dir)` writes `model.onnx` (inputs `input_values` (batch, time, mel_bins) float32 and
`attention_mask` (batch, time) int64, output `logits` (batch, num_labels)), `config.json` and
`preprocessor_config.json`; with `quantize="int8"` also `model_quantized.onnx` (the name optimum's ORTQuantizer
writes), weights int8 by onnxruntime's dynamic quantization. `OnnxAudioClassifier` runs such a file.

Exporter: torch.onnx.export's dynamo path (torch.export, then onnxscript's translation), the one torch maintains
(its default since 2.9; the TorchScript exporter is deprecated). What decides it is the time axis. ast_hf takes any
number of frames, and its Python picks the positional embeddings by the input's size (a leading crop within the
stored grid, an interpolation per clip length beyond it). The TorchScript tracer records the branch that the
example input took: with torch 2.14 its graph (dynamic_axes on batch and time) failed with a Reshape error at
every other length and was 0.055 off on a padded batch at the traced one. torch.export records sizes as symbols
and reports what it had to assume about them. Under export, ASTEmbeddings computes the embeddings without branches
(`patch_grid.position_embeddings_per_clip`; the eager model is unchanged), and `export_onnx` refuses a graph
that torch.export could only prove for a bounded range of frames or clips (a branch on the input's size
somewhere) instead of writing a model that is right for some lengths only; the file is then run by onnxruntime
at several lengths against PyTorch.

torch.export proves the graph for >= 2 time patches (26 frames for 16x16 patches at stride 10): with one column
the convolution's output is a memory-layout special case for it. The ONNX graph has no layouts; the check after
each export and the tests run it on the smallest input (16 frames) too. The graph is traced with eager attention
(matmul, softmax) whatever attention the model is set to; the logits agree to float rounding.
"""

from __future__ import annotations

import copy
import logging
import math
import os
import shutil
import tempfile
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
import transformers
from torch import nn

from .configuration_ast import ASTConfig
from .convert import ast_directory, from_builtin_model, load_ast_model
from .feature_extraction_ast import ASTFeatureExtractor
from .model_inputs import check_right_padded
from .modeling_ast import ASTForAudioClassification
from .staging import remove_stale_staging

try:
    import onnxruntime
    from onnxruntime.quantization import QuantType, quantize_dynamic
except ImportError as error:  # the package itself does not need them
    raise ImportError("ast_hf.onnx_export needs onnx, onnxscript and onnxruntime: "
                      "pip install onnx onnxscript onnxruntime") from error

logger = logging.getLogger(__name__)

ONNX_FILE = "model.onnx"
"""The file name of the exported float32 graph."""
QUANTIZED_FILE = "model_quantized.onnx"  # the name optimum's ORTQuantizer writes
"""The file name of the int8 graph that `export_onnx(..., quantize="int8")` writes."""
INPUT_NAMES = ("input_values", "attention_mask")
"""The graph's inputs: `input_values` (batch, time, mel_bins) float32 and `attention_mask` (batch, time) int64."""
OUTPUT_NAMES = ("logits",)
"""The graph's output: `logits` (batch, num_labels) float32."""
# 18: the lowest opset torch's exporter writes without ONNX's version converter, and the widest runtime support;
# 23: the highest torch 2.14 declares (torch.onnx._constants.ONNX_MAX_OPSET).
DEFAULT_OPSET = 18
"""The ONNX opset `export_onnx` writes by default."""
SUPPORTED_OPSETS = range(18, 24)
"""The opsets `export_onnx` accepts: 18 to 23."""
QUANTIZATIONS = ("int8",)
"""The values of `export_onnx`'s `quantize` other than None."""
_STAGING_PREFIX = ".onnx-partial-"
_ONNX_TOLERANCE = 1e-4  # onnxruntime vs PyTorch float32 logits, checked after each export


def export_onnx(model: str | os.PathLike | nn.Module, output_dir: str | os.PathLike, opset: int | None = None,
                quantize: str | None = None, *, feature_extractor: ASTFeatureExtractor | None = None
                ) -> dict[str, Any]:
    """Export an AST classifier to `output_dir/model.onnx` with dynamic batch and time axes.

    Writes `model.onnx` (inputs `input_values` (batch, time, mel_bins) float32 and `attention_mask` (batch, time)
    int64, output `logits` (batch, num_labels) float32), `config.json` and `preprocessor_config.json`, and with
    `quantize="int8"` also `model_quantized.onnx`. The graph comes from torch.export (traced with eager attention,
    whatever the model is set to); a graph that torch.export could prove only for a bounded range of frames or
    clips is refused rather than written.

    The exported file is then run by onnxruntime on a padded batch (clips longer than, as long as and shorter than
    the stored grid) and on a clip of one patch, and compared with PyTorch: logits that differ by more than 1e-4
    (times the largest logit, where that is above 1) are an error.

    Args:
        model: A `save_pretrained` directory or Hub id (ast_hf's or transformers' built-in AST), or an
            `ASTForAudioClassification` instance (ast_hf's or transformers'); it must be float32.
        output_dir: Created if missing; the files above are replaced, others left alone. Everything is written to a
            hidden staging directory inside it first, so a failed export changes nothing (and removes a directory
            it created).
        opset: The ONNX opset, 18 to 23; None for 18.
        quantize: None, or "int8" for `model_quantized.onnx` next to the float32 file (onnxruntime's dynamic
            quantization: int8 weights, activations quantized at run time). A `model_quantized.onnx` left from an
            earlier export is removed when `quantize` is None, as it would not match the new `model.onnx`.
        feature_extractor: The extractor to save as `preprocessor_config.json`. By default the model directory's,
            or, for an instance without one, an `ASTFeatureExtractor` with the config's mel bins and max_length and
            AudioSet's mean/std (a warning says so: pass the extractor the model was trained with).

    Returns:
        What was written: `{"onnx": path, "quantized": path or None, "config": path, "preprocessor_config": path,
            "opset": int, "inputs": ["input_values", "attention_mask"], "outputs": ["logits"],
            "max_abs_difference": float}`, the last being the largest logit difference of the onnxruntime check.

    Raises:
        ValueError: When `opset` or `quantize` is not supported; when `output_dir` is a file; when a `model`
            instance is not float32; when the extractor's mel bins differ from the model's; when a directory or
            Hub id is not an AST checkpoint or its weights do not fit (a `ConversionError`, see
            `ast_hf.convert.load_ast_model`).
        TypeError: When `model` is not an AST classifier (nor the directory or Hub id of one), or
            `feature_extractor` is not an ast_hf `ASTFeatureExtractor`.
        RuntimeError: When torch.export could prove the graph only for a bounded batch size or number of frames,
            or when onnxruntime fails on the exported graph or its logits differ from PyTorch's.

    Example:
        ```python
        from ast_hf.onnx_export import OnnxAudioClassifier, export_onnx

        written = export_onnx("path/or/hub-id", "ast-onnx", quantize="int8")
        classifier = OnnxAudioClassifier.from_directory("ast-onnx", quantized=True)
        ```
    """
    opset = DEFAULT_OPSET if opset is None else opset
    if isinstance(opset, bool) or not isinstance(opset, int) or opset not in SUPPORTED_OPSETS:
        raise ValueError(f"opset={opset!r} is not supported; pass an int from {SUPPORTED_OPSETS.start} to "
                         f"{SUPPORTED_OPSETS.stop - 1} (default {DEFAULT_OPSET}).")
    if quantize is not None and quantize not in QUANTIZATIONS:
        raise ValueError(f"quantize={quantize!r} is not supported; pass None (float32 only) or one of "
                         f"{QUANTIZATIONS}.")
    output_dir = Path(output_dir)
    if output_dir.exists() and not output_dir.is_dir():
        raise ValueError(f"output_dir {str(output_dir)!r} exists and is a file; pass a directory path (it is created "
                         "if missing).")
    model, extractor = _load_model_and_extractor(model, feature_extractor)
    if model.device.type != "cpu":
        # Exported and checked from a CPU copy: the graph is device-independent, and a GPU's reference logits (TF32
        # matrix products in cuDNN) would differ from onnxruntime's float32 by more than the check allows.
        model = copy.deepcopy(model).cpu()
    if extractor.num_mel_bins != model.config.num_mel_bins:
        raise ValueError(f"The feature extractor computes {extractor.num_mel_bins} mel bins but the model was built "
                         f"for {model.config.num_mel_bins}; pass the extractor the model was trained with.")

    created = not output_dir.exists()
    output_dir.mkdir(parents=True, exist_ok=True)
    remove_stale_staging(output_dir, _STAGING_PREFIX)
    staging = Path(tempfile.mkdtemp(prefix=f"{_STAGING_PREFIX}{os.getpid()}-", dir=output_dir))
    try:
        _export_graph(model, staging / ONNX_FILE, opset)
        difference = _check_against_pytorch(model, staging / ONNX_FILE)
        if quantize == "int8":
            _quantize_int8(staging / ONNX_FILE, staging / QUANTIZED_FILE)
        model.config.save_pretrained(staging)
        extractor.save_pretrained(staging)
        if quantize is None and (output_dir / QUANTIZED_FILE).is_file():
            os.remove(output_dir / QUANTIZED_FILE)
        for name in sorted(os.listdir(staging), key=lambda name: name == ONNX_FILE):  # model.onnx last
            os.replace(staging / name, output_dir / name)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        if created:
            shutil.rmtree(output_dir, ignore_errors=True)
        raise
    shutil.rmtree(staging, ignore_errors=True)
    return {
        "onnx": str(output_dir / ONNX_FILE),
        "quantized": str(output_dir / QUANTIZED_FILE) if quantize else None,
        "config": str(output_dir / "config.json"),
        "preprocessor_config": str(output_dir / "preprocessor_config.json"),
        "opset": opset,
        "inputs": list(INPUT_NAMES),
        "outputs": list(OUTPUT_NAMES),
        "max_abs_difference": difference,
    }


def _load_model_and_extractor(model: Any, extractor: ASTFeatureExtractor | None
                              ) -> tuple[ASTForAudioClassification, ASTFeatureExtractor]:
    """An ast_hf ASTForAudioClassification and its feature extractor from a directory, Hub id or instance."""
    folder = None
    if isinstance(model, (str, os.PathLike)):
        folder = ast_directory(os.fspath(model))  # ValueError (ConversionError) for a file or a non-AST config
        model = load_ast_model(folder).float()  # transformers 5 keeps the stored dtype (float16 checkpoints)
    elif isinstance(model, transformers.ASTForAudioClassification):
        folder = model.name_or_path or None
        model = from_builtin_model(model).float()
    elif isinstance(model, ASTForAudioClassification):
        folder = model.name_or_path or None
    else:
        raise TypeError(
            f"model has type {type(model).__name__}; export_onnx exports an AST classifier: an "
            "ASTForAudioClassification (ast_hf's or transformers'), or the directory or Hub id of one. For an encoder "
            "without a head, add one and fine-tune it first (examples/run_audio_classification.py)."
        )
    if model.dtype != torch.float32:
        raise ValueError(f"The model is {model.dtype}; export a float32 model (model.float(), or pass its directory). "
                         "For a smaller file use quantize='int8'.")
    if extractor is None:
        if folder is not None and os.path.isfile(os.path.join(folder, "preprocessor_config.json")):
            extractor = ASTFeatureExtractor.from_pretrained(folder)
        else:
            logger.warning("No preprocessor_config.json for this model: writing an ASTFeatureExtractor with %d mel "
                           "bins, max_length=%d and AudioSet's mean/std. Pass feature_extractor= if the model was "
                           "trained with other settings.", model.config.num_mel_bins, model.config.max_length)
            extractor = ASTFeatureExtractor(num_mel_bins=model.config.num_mel_bins,
                                            max_length=model.config.max_length)
    elif not isinstance(extractor, ASTFeatureExtractor):
        raise TypeError(f"feature_extractor has type {type(extractor).__name__}; pass an ast_hf.ASTFeatureExtractor "
                        "(ast_hf.ASTFeatureExtractor.from_pretrained reads transformers' files too).")
    return model, extractor


class _Logits(nn.Module):
    """The classifier's logits as the graph's only output: (B, T, F) float32, (B, T) int64 -> (B, num_labels)."""

    def __init__(self, model: ASTForAudioClassification) -> None:
        super().__init__()
        self.model = model

    def forward(self, input_values: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.model(input_values, attention_mask=attention_mask).logits


def _example_frames(config: ASTConfig) -> int:
    """Frames of the example input: one time patch more than the stored grid, so that no size of the trace equals a
    size of the model (a branch on equality would not show in the proven ranges) and there are >= 2 time patches."""
    return config.max_length + config.time_stride


def _export_graph(model: ASTForAudioClassification, path: Path, opset: int) -> None:
    config = model.config
    frames = _example_frames(config)
    device = model.device
    example = (torch.zeros(2, frames, config.num_mel_bins, device=device),  # (B, T, F)
               torch.ones(2, frames, dtype=torch.long, device=device))  # (B, T)
    dynamic = {0: torch.export.Dim.DYNAMIC, 1: torch.export.Dim.DYNAMIC}
    was_training, attention = model.training, config._attn_implementation
    model.eval()
    model.set_attn_implementation("eager")
    try:
        with torch.no_grad():
            program = torch.export.export(_Logits(model), example, strict=False,
                                          dynamic_shapes={"input_values": dynamic, "attention_mask": dynamic})
        _check_dynamic_ranges(program, min_frames=config.patch_shape[1] + config.time_stride)
        with warnings.catch_warnings():  # the renaming below names each axis twice, once per input; it is meant so
            warnings.filterwarnings("ignore", message=".*will not be used, since it shares the same shape")
            parameter_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
            torch.onnx.export(program, example, str(path), input_names=list(INPUT_NAMES),
                              output_names=list(OUTPUT_NAMES), opset_version=opset, verbose=False,
                              dynamic_shapes={"input_values": {0: "batch", 1: "time"},
                                              "attention_mask": {0: "batch", 1: "time"}},
                              external_data=parameter_bytes >= 2**31 - 2**26)  # protobuf's 2 GB limit, with margin
    finally:
        model.set_attn_implementation(attention)
        model.train(was_training)


def _check_dynamic_ranges(program: torch.export.ExportedProgram, min_frames: int) -> None:
    """Refuse a graph that torch.export could only prove for a bounded batch size or number of frames, or for
    none below `min_frames` (two time patches) or 2 clips: some code branched on the input's size, and the graph
    would be wrong outside that range."""
    user_inputs = set(program.graph_signature.user_inputs)
    for node in program.graph.nodes:
        if node.op != "placeholder" or node.name not in user_inputs:
            continue
        for axis, name, lowest in ((0, "batch size", 2), (1, "number of frames", min_frames)):
            size = node.meta["val"].shape[axis]
            ranges = program.range_constraints.get(size.node.expr) if isinstance(size, torch.SymInt) else None
            if ranges is None or not math.isinf(float(ranges.upper)) or int(ranges.lower) > lowest:
                proven = "one value" if ranges is None else f"{ranges.lower}..{ranges.upper}"
                raise RuntimeError(
                    f"torch.export proved the graph of {node.name!r} only for a {name} in {proven}: code in the model "
                    "branches on the input's size (see ASTEmbeddings.position_embeddings_for for how the "
                    "positional embeddings avoid that under torch.compiler.is_exporting())."
                )


def _check_against_pytorch(model: ASTForAudioClassification, path: Path) -> float:
    """Max |onnxruntime - PyTorch| logits on lengths other than the traced one: a padded batch of a clip two time
    patches longer than the stored grid (interpolated positions), one of the stored length and one of two patches
    (cropped positions, masked padding), and a clip of one patch alone (the smallest input, below the range
    torch.export proves)."""
    config = model.config
    patch_frames = config.patch_shape[1]
    lengths = (config.max_length + 2 * config.time_stride, config.max_length, patch_frames + config.time_stride)
    generator = torch.Generator().manual_seed(0)
    padded = torch.randn(len(lengths), lengths[0], config.num_mel_bins, generator=generator)  # (3, T, F)
    mask = (torch.arange(lengths[0])[None, :] < torch.tensor(lengths)[:, None]).long()  # (3, T)
    smallest = torch.randn(1, config.patch_shape[1], config.num_mel_bins, generator=generator)  # (1, 16, F)
    classifier = OnnxAudioClassifier(path, config)
    was_training = model.training
    model.eval()
    difference = 0.0
    try:
        for input_values, attention_mask in ((padded, mask), (smallest, torch.ones(smallest.shape[:2]).long())):
            with torch.no_grad():
                expected = model(input_values.to(model.device), attention_mask=attention_mask.to(model.device)).logits
            expected = expected.float().cpu().numpy()
            try:
                logits = classifier(input_values.numpy(), attention_mask.numpy())
            except Exception as error:  # onnxruntime raises its own exception types
                raise RuntimeError(f"The exported graph fails on {input_values.shape[1]} frames ({error}); the export "
                                   "is wrong. Please report it with the model's config.") from error
            difference = max(difference, float(np.abs(logits - expected).max()))
            if not difference <= _ONNX_TOLERANCE * max(1.0, float(np.abs(expected).max())):
                raise RuntimeError(f"The exported graph's logits differ from PyTorch's by {difference:.3g} on "
                                   f"{input_values.shape[1]} frames; the export is wrong. Please report it with the "
                                   "model's config.")
    finally:
        model.train(was_training)
    return difference


def _quantize_int8(source: Path, target: Path) -> None:
    """Dynamic quantization: the weights of MatMul and Conv as int8, activations quantized per batch at run time."""
    # quantize_dynamic advises its pre-processing through logging.warning, which also installs a handler on the root
    # logger of a process that has none. That pre-processing (onnxruntime's symbolic shape inference) stops with
    # "Incomplete symbolic shape inference" on this graph, so the advice is silenced: a NullHandler keeps
    # logging.warning from configuring the root logger, the level drops the message.
    root, quiet = logging.getLogger(), logging.NullHandler()
    level = root.level
    root.addHandler(quiet)
    root.setLevel(max(level, logging.ERROR))
    try:
        quantize_dynamic(source, target, weight_type=QuantType.QInt8)
    finally:
        root.setLevel(level)
        root.removeHandler(quiet)


class OnnxAudioClassifier:
    """An exported `model.onnx` run by onnxruntime: ASTFeatureExtractor's features in, logits out.

    `classify` labels one recording as the audio-classification pipeline does; calling the classifier on features
    (`classifier(input_values, attention_mask)`) returns (batch, num_labels) logits. The features come from the
    export directory's `preprocessor_config.json`, called with its defaults, so the input convention the checkpoint
    was trained with (padded to max_length, or its own length with a mask) is followed. Computing them needs torch
    (ast_hf's extractor); onnxruntime then runs the model without it.

    Usually made with `from_directory`. Made directly, `config` and `feature_extractor` are optional, but
    `classify` needs both.

    Args:
        path: The `.onnx` file, as written by `export_onnx`.
        config: The model's config: its labels for `classify`, and its patch size and strides to refuse inputs
            shorter than one patch. None: no labels, and no such check.
        providers: onnxruntime execution providers, in order of preference; None for
            `["CPUExecutionProvider"]`.
        feature_extractor: The extractor for `classify`; None when only features will be passed.

    Raises:
        FileNotFoundError: When there is no file at `path`.
        ValueError: When `providers` names one this onnxruntime cannot use (CUDA without onnxruntime-gpu, say) and
            does not list "CPUExecutionProvider" as an allowed fallback.

    Example:
        ```python
        classifier = OnnxAudioClassifier.from_directory("ast-onnx")  # or quantized=True
        classifier.classify("speech.wav", top_k=3)  # [{"label": ..., "score": ...}, ...]
        features = classifier.feature_extractor(clips, sampling_rate=16000, return_tensors="np")
        logits = classifier(features["input_values"], features.get("attention_mask"))  # (batch, num_labels)
        ```
    """

    def __init__(self, path: str | os.PathLike, config: ASTConfig | None = None,
                 providers: list[str] | None = None, feature_extractor: ASTFeatureExtractor | None = None) -> None:
        if not os.path.isfile(path):
            raise FileNotFoundError(f"No ONNX file at {str(path)!r}; write one with ast_hf.onnx_export.export_onnx.")
        self.path = str(path)
        """The path of the `.onnx` file."""
        self.config = config
        """The model's config, or None."""
        self.feature_extractor = feature_extractor
        """The feature extractor `classify` uses, or None."""
        self.id2label = dict(config.id2label) if config is not None else {}
        """The label of each output index; empty without a config."""
        self.session = onnxruntime.InferenceSession(self.path, providers=providers or ["CPUExecutionProvider"])
        """The `onnxruntime.InferenceSession` that runs the file."""
        unused = [name for name in providers or [] if name not in self.session.get_providers()]
        if unused and "CPUExecutionProvider" not in providers:  # onnxruntime itself falls back to the CPU
            raise ValueError(f"onnxruntime cannot use {unused} here (this installation has "
                             f"{onnxruntime.get_available_providers()}); for CUDA install onnxruntime-gpu in place of "
                             "onnxruntime, or add 'CPUExecutionProvider' to providers to allow the CPU.")
        self.num_mel_bins = self.session.get_inputs()[0].shape[2]  # static in the exported graph
        """The mel bins the graph takes (its last input axis, fixed at export)."""

    @classmethod
    def from_directory(cls, directory: str | os.PathLike, quantized: bool = False,
                       providers: list[str] | None = None) -> OnnxAudioClassifier:
        """Load the classifier of an `export_onnx` directory.

        Args:
            directory: The directory `export_onnx` wrote.
            quantized: Run `model_quantized.onnx` (written with `quantize="int8"`) instead of `model.onnx`.
            providers: onnxruntime execution providers, in order of preference; None for
                `["CPUExecutionProvider"]`.

        Returns:
            The classifier, with the directory's `config.json` (labels) and, where there is a
                `preprocessor_config.json`, its feature extractor.

        Raises:
            FileNotFoundError: When the directory has no `model.onnx` (or no `model_quantized.onnx` for
                `quantized`).

        Example:
            ```python
            classifier = OnnxAudioClassifier.from_directory("ast-onnx", quantized=True)
            ```
        """
        path = Path(directory) / (QUANTIZED_FILE if quantized else ONNX_FILE)
        if not path.is_file():
            hint = " Export with quantize='int8' to write it." if quantized else ""
            raise FileNotFoundError(f"{str(path)!r} does not exist; write it with "
                                    f"ast_hf.onnx_export.export_onnx(model, {str(directory)!r}).{hint}")
        extractor = None
        if (Path(directory) / "preprocessor_config.json").is_file():
            extractor = ASTFeatureExtractor.from_pretrained(directory)
        return cls(path, ASTConfig.from_pretrained(directory), providers=providers, feature_extractor=extractor)

    def classify(self, audio: Any, sampling_rate: int | None = None, top_k: int = 5) -> list[dict[str, Any]]:
        """Label one recording, as `pipeline("audio-classification")` does.

        The audio is read as the pipelines read it (any rate and channel count, resampled and mixed to mono),
        featurised by the directory's extractor with the checkpoint's convention, and cut to its max_length frames
        (with a warning). Scores are softmax probabilities, or sigmoids for a multi-label config.

        Args:
            audio: A file path, encoded file bytes, a binary file-like object, an audio dict (`{"array": samples,
                "sampling_rate": rate}`), or a numpy array or tensor of samples (mono, or with a channel axis of at
                most 16 channels).
            sampling_rate: The rate of an array's samples; None for the extractor's rate (16000). Not allowed
                with a file, which carries its own rate.
            top_k: How many labels to return, at most the number of labels.

        Returns:
            The `top_k` best labels, best first, as `[{"label": str, "score": float}, ...]`.

        Raises:
            ValueError: When the classifier has no config or feature extractor (make it with `from_directory`);
                when the audio cannot be read (an `AudioReadError`), or `sampling_rate` is given with a file.
            TypeError: When `audio` is of another kind, or its samples of an unsupported dtype.

        Example:
            ```python
            classifier.classify("speech.wav", top_k=3)  # [{"label": ..., "score": ...}, ...], best first
            ```
        """
        if self.feature_extractor is None or self.config is None:
            raise ValueError("classify needs the export directory's config.json and preprocessor_config.json; load "
                             "the classifier with OnnxAudioClassifier.from_directory(directory).")
        from .audio_io import open_audio
        from .tagging import _top as top_labels

        extractor = self.feature_extractor
        samples = open_audio(audio, extractor.sampling_rate, source_rate=sampling_rate).samples()
        features = extractor(samples, sampling_rate=extractor.sampling_rate, return_tensors="np")
        logits = torch.from_numpy(self(features["input_values"], features.get("attention_mask")))[0]
        multi = self.config.problem_type == "multi_label_classification"
        scores = logits.sigmoid() if multi else logits.softmax(-1)
        return top_labels(scores, min(top_k, scores.shape[0]), self.id2label)

    def __call__(self, input_values: Any, attention_mask: Any = None) -> np.ndarray:
        """Run the graph on a batch of features.

        Args:
            input_values: Features (batch, frames, mel_bins) from `ASTFeatureExtractor`, float; a numpy array or
                a torch tensor.
            attention_mask: The (batch, frames) mask of real frames, right-padded as the extractor returns it with
                `padding="longest"`; a numpy array or a torch tensor. None: every frame is real.

        Returns:
            The logits, a float32 numpy array of shape (batch, num_labels).

        Raises:
            ValueError: When `input_values` is not (batch, frames, mel_bins) with the graph's mel bins, or (with a
                config) holds fewer frames than one patch; when `attention_mask` has another shape, or is not
                right-padded 0/1 with at least one real frame per clip.
            TypeError: When `input_values` is not float, or either input is neither a numpy array nor a tensor.
        """
        input_values = _as_numpy("input_values", input_values)
        if input_values.ndim != 3 or input_values.shape[2] != self.num_mel_bins:
            raise ValueError(f"input_values has shape {input_values.shape}; the model takes (batch, frames, "
                             f"{self.num_mel_bins}) features from ASTFeatureExtractor (add a batch axis with [None] "
                             "for one clip).")
        if not np.issubdtype(input_values.dtype, np.floating):
            raise TypeError(f"input_values must be float features, got {input_values.dtype}.")
        if self.config is not None:
            self.config.patch_grid_for(input_values.shape[1], input_values.shape[2])  # too few frames: ValueError
        if attention_mask is None:
            attention_mask = np.ones(input_values.shape[:2], dtype=np.int64)
        attention_mask = _as_numpy("attention_mask", attention_mask)
        if attention_mask.shape != input_values.shape[:2]:
            raise ValueError(f"attention_mask has shape {attention_mask.shape} but input_values has "
                             f"{input_values.shape[:2]} (batch, frames); pass the mask returned with these features.")
        mask = torch.from_numpy(np.ascontiguousarray(attention_mask))
        real = mask != 0
        check_right_padded(mask, real, real.sum(dim=1))
        inputs = {"input_values": input_values.astype(np.float32, copy=False),
                  "attention_mask": attention_mask.astype(np.int64, copy=False)}
        return self.session.run(list(OUTPUT_NAMES), inputs)[0]


def _as_numpy(name: str, value: Any) -> np.ndarray:
    if isinstance(value, torch.Tensor):
        return value.detach().cpu().numpy()
    if isinstance(value, np.ndarray):
        return value
    raise TypeError(f"{name} has type {type(value).__name__}; pass a numpy array (return_tensors='np') or a torch "
                    "tensor.")


__all__ = ["OnnxAudioClassifier", "export_onnx"]
