"""Reading, checking and writing AST checkpoints: the I/O around the pure state-dict surgery of
`ast_hf.checkpoint_surgery`.

- Reading weights safely (`ast_hf.checkpoint_files`, re-exported here): safetensors or
  `torch.load(weights_only=True)`, files that are not checkpoints named for what they are, `save_pretrained`
  directories (sharded too); Hub ids (`download_checkpoint`, the one Hub download).
- Loading models with every weight accounted for: `load_deit_as_ast` (DeiT/ViT source -> AST), `load_ast_model`
  (an ast_hf or transformers AST directory or Hub id).
- Writing: `atomic_directory` (a SIGKILL leaves the previous output or none), `write_checkpoint`, and the common
  tail of the command-line converters (`run_conversion`: build, verify on real audio, write, push; exit status 2
  with a one-line error).
"""

from __future__ import annotations

import json
import math
import os
import sys
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch

from .audio_io import espeak_available, espeak_speech, read_audio_file
from .checkpoint_files import (
    atomic_directory,
    check_ast_checkpoint,
    check_output_dir,
    exchange_paths,
    load_pretrained_weights,
    load_state_dict_file,
    looks_like_local_path,
    sniff_file_format,
    write_checkpoint,
)
from .checkpoint_surgery import (
    ConversionError,
    adapt_image_encoder,
    canonical_architecture,
    default_heads,
    detect_format,
    hf_vit_to_canonical,
    label_fields,
    new_head,
    retarget_state_dict,
    swin_message,
    timm_to_canonical,
)
from .configuration_ast import AST_MODEL_TYPES, ASTConfig
from .modeling_ast import ASTForAudioClassification
from .presets import dataset_labels, read_labels

# --------------------------------------------------------------------------------------------------------------
# Image-model sources (DeiT/ViT files, directories, Hub ids) -> an AST


def download_checkpoint(source: str, cache_dir: str | None = None, allow_patterns: list[str] | None = None) -> str:
    """Download a Hub repository and return its local folder; the one Hub download of the converters.

    Called for a `source` that is not an existing local path. Downloads with huggingface_hub's
    `snapshot_download` into its cache.

    Args:
        source: A Hub id, `owner/name`.
        cache_dir: The huggingface_hub cache to use; None for its default.
        allow_patterns: Glob patterns of the repository's files to download; None for all of them.

    Returns:
        The local folder of the downloaded snapshot.

    Raises:
        ConversionError: When `source` is not shaped like a Hub id (not exactly one "/", a weights-file suffix
            such as `.pth` or `.safetensors`, a leading "." or "~", or an owner part that is a local folder: a
            local path that does not exist), or when the download fails (offline, missing, private).
    """
    if source.count("/") != 1 or source.endswith((".pth", ".pt", ".bin", ".safetensors")) \
            or source.startswith((".", "~")) or Path(source).parent.is_dir():
        # owner/name whose owner is a local folder: a local path that does not exist, not a Hub id
        raise ConversionError(f"{source!r} does not exist (no such file or directory), and is not a Hub id "
                              "(owner/name).")
    from huggingface_hub import snapshot_download

    try:
        return snapshot_download(source, cache_dir=cache_dir, allow_patterns=allow_patterns)
    except Exception as error:  # the Hub client raises many types (offline, 404, auth)
        raise ConversionError(
            f"Could not fetch {source!r} from the Hub ({type(error).__name__}: {' '.join(str(error).split())[:200]})."
            " Download it elsewhere and pass the local path."
        ) from error


def read_image_source(source: str, cache_dir: str | None = None) -> tuple[dict[str, torch.Tensor],
                                                                         dict[str, Any] | None, str]:
    """Read the weights and config of an image-model source.

    Args:
        source: A weights file (read with `load_state_dict_file`), a `save_pretrained` directory (its weights with
            `load_pretrained_weights`, its `config.json` if present) or a Hub id (its `config.json`, `*.json`,
            `*.safetensors` and `*.bin` files downloaded with `download_checkpoint`).
        cache_dir: The huggingface_hub cache for a Hub id; None for its default.

    Returns:
        A tuple `(state_dict, config, description)`: the tensors by name; the transformers config as a dict, or
            None for a file or a directory without `config.json`; a short description of the source for messages.

    Raises:
        ConversionError: When the source does not exist and is not a Hub id, cannot be downloaded, or holds no
            readable weights.
    """
    path = Path(source)
    if path.is_file():
        return load_state_dict_file(path), None, f"state dict file {source}"
    if path.is_dir():
        config_file = path / "config.json"
        config = json.loads(config_file.read_text()) if config_file.is_file() else None
        return load_pretrained_weights(path), config, f"directory {source}"
    folder = download_checkpoint(source, cache_dir,
                                 allow_patterns=["config.json", "*.safetensors", "*.bin", "*.json"])
    return read_image_source(folder)


def load_image_encoder(source: str, num_attention_heads: int | None = None, layer_norm_eps: float | None = None,
                       cache_dir: str | None = None, describe: Callable[[str], None] = print
                       ) -> tuple[dict[str, torch.Tensor], dict[str, Any], tuple[int, int]]:
    """Read a DeiT/ViT image encoder and the `ASTConfig` architecture it implies.

    timm / original DeiT files and transformers DeiT/ViT weights are both accepted. The number of attention heads
    comes from the source config, else `num_attention_heads`, else hidden_size / 64 (DeiT-tiny 3, small 6, base
    12). The layer-norm epsilon comes from `layer_norm_eps` if given, else from the source config (1e-12 where it
    does not say), else timm's 1e-6 for a source without a config.

    Args:
        source: A weights file, a `save_pretrained` directory or a Hub id (see `read_image_source`).
        num_attention_heads: The head count, for a source without a config (its weights do not say).
        layer_norm_eps: The layer-norm epsilon, overriding the source's.
        cache_dir: The huggingface_hub cache for a Hub id; None for its default.
        describe: Called with a line about what was read and found (`print` by default).

    Returns:
        A tuple `(weights, fields, grid)`: the encoder weights under Hub ViT names (no prefix, image heads
            dropped); the `ASTConfig` architecture fields (hidden_size, num_hidden_layers, intermediate_size,
            qkv_bias, patch_size, hidden_act, layer_norm_eps, num_attention_heads); the source's square patch grid
            `(rows, columns)`, e.g. `(24, 24)` for a 384-pixel model with 16-pixel patches.

    Raises:
        ConversionError: When the source cannot be read (see `read_image_source`); when it is a Swin model, or
            already an AST checkpoint (use the AST converters), or holds tensors that have no place in an AST
            encoder, or a patch grid that is not square; when `num_attention_heads` contradicts the source
            config, the config's hidden_size contradicts the weights, or the head count does not divide
            hidden_size.
    """
    state_dict, source_config, description = read_image_source(source, cache_dir)
    model_type = str((source_config or {}).get("model_type", ""))
    if model_type.startswith("swin"):
        raise ConversionError(swin_message(f"{source!r} has model_type {model_type!r} (config.json)"))
    describe(f"read {len(state_dict)} tensors from {description}")
    kind = detect_format(state_dict)
    if kind == "timm":
        canonical = timm_to_canonical(state_dict)
    elif kind == "hf_vit":
        canonical = hf_vit_to_canonical(state_dict)
    else:
        raise ConversionError(
            f"{source!r} is already an AST checkpoint ({kind}); use conversion/convert_original_ast.py (authors' "
            "checkpoints, transformers' MIT/ast-*) or conversion/retarget_ast.py (new length, strides or labels)."
        )
    arch = canonical_architecture(canonical)
    hidden = arch["hidden_size"]
    fields: dict[str, Any] = dict(hidden_size=hidden, num_hidden_layers=arch["num_hidden_layers"],
                                  intermediate_size=arch["intermediate_size"], qkv_bias=arch["qkv_bias"],
                                  patch_size=arch["patch_size"], hidden_act="gelu", layer_norm_eps=1e-6,
                                  num_attention_heads=num_attention_heads or default_heads(hidden))
    if source_config is not None:
        heads = source_config.get("num_attention_heads", fields["num_attention_heads"])
        if num_attention_heads and num_attention_heads != heads:
            raise ConversionError(
                f"--num_attention_heads {num_attention_heads} contradicts the source config's "
                f"num_attention_heads={heads}; drop the option (the config is read) or fix it."
            )
        fields.update(num_attention_heads=heads, layer_norm_eps=source_config.get("layer_norm_eps", 1e-12),
                      hidden_act=source_config.get("hidden_act", "gelu"))
        if source_config.get("hidden_size", hidden) != hidden:
            raise ConversionError(f"config.json says hidden_size={source_config['hidden_size']} but the weights "
                                  f"have {hidden}; the directory mixes two models.")
    if layer_norm_eps is not None:
        fields["layer_norm_eps"] = layer_norm_eps
    if hidden % fields["num_attention_heads"]:
        raise ConversionError(
            f"num_attention_heads={fields['num_attention_heads']} does not divide hidden_size={hidden}; pass "
            "--num_attention_heads with the source model's head count (DeiT-tiny 3, small 6, base 12)."
        )
    describe(f"source: {kind} layout, {arch['num_hidden_layers']} layers, hidden {hidden}, "
             f"{fields['num_attention_heads']} heads, grid {arch['grid'][0]} x {arch['grid'][1]}, "
             f"{arch['prefix_tokens']} prefix token(s)"
             + ("" if arch["prefix_tokens"] == 2 else " (cls token duplicated as the distillation token)"))
    return canonical, fields, arch["grid"]


def load_deit_as_ast(source: str, seed: int | None = 0, channel_reduction: str = "sum",
                     num_attention_heads: int | None = None, layer_norm_eps: float | None = None,
                     cache_dir: str | None = None, describe: Callable[[str], None] = print,
                     **config_fields: Any) -> ASTForAudioClassification:
    """Convert a DeiT/ViT image model into an `ASTForAudioClassification` with a new head.

    The encoder is read with `load_image_encoder` and adapted with `checkpoint_surgery.adapt_image_encoder` (the
    RGB patch projection reduced to one channel, the positional grid cut or interpolated to the AST's, a
    one-token source's cls token duplicated as the distillation token); the head is freshly initialised. Every
    weight is checked into the model (`build_model`).

    Args:
        source: A weights file, a `save_pretrained` directory or a Hub id of a DeiT or ViT.
        seed: Seed of the new head's initialisation; None for torch's global random state.
        channel_reduction: How the patch projection's RGB channels become one: "sum" (as the released AST
            checkpoints) or "mean" (as the paper's text).
        num_attention_heads: The head count, for a source without a config (see `load_image_encoder`).
        layer_norm_eps: The layer-norm epsilon, overriding the source's.
        cache_dir: The huggingface_hub cache for a Hub id; None for its default.
        describe: Called with lines about what was read and found (`print` by default).
        **config_fields: The AST's own `ASTConfig` fields: max_length, num_mel_bins, frequency_stride,
            time_stride, labels (id2label/label2id or num_labels, e.g. from `head_labels`), problem_type, ...

    Returns:
        The converted model, in eval mode.

    Raises:
        ConversionError: When the source cannot be read or converted (see `load_image_encoder`), when
            `channel_reduction` is neither "sum" nor "mean", or when the source's patch size differs from the
            config's.
        ValueError: When `config_fields` make an invalid `ASTConfig`.

    Example:
        ```python
        model = load_deit_as_ast("facebook/deit-base-distilled-patch16-384", max_length=1024, num_labels=527)
        ```
    """
    canonical, fields, source_grid = load_image_encoder(source, num_attention_heads, layer_norm_eps, cache_dir,
                                                        describe)
    config = ASTConfig(**{**fields, **config_fields})
    weights = adapt_image_encoder(canonical, source_grid, config, channel_reduction)
    weights.update(new_head(config, seed=seed))
    return build_model(config, weights)


# --------------------------------------------------------------------------------------------------------------
# Re-targeting and loading a trained AST


def retarget_model(model: ASTForAudioClassification, seed: int | None = None,
                   **changes: Any) -> ASTForAudioClassification:
    """Re-target a trained AST to a new input length, strides, mel bins or labels.

    The encoder is kept; the positional grid is centre-cut or bilinearly interpolated to the new one (time first),
    and the head is kept when the labels are the same, re-ordered when they are the same names in another order,
    and replaced by a fresh one otherwise (`checkpoint_surgery.retarget_state_dict`). `label2id` is derived from
    a new `id2label` when it is not given.

    Args:
        model: The trained model; it is not changed.
        seed: Seed of a new head's initialisation; None for torch's global random state.
        **changes: Config fields to change: max_length, frequency_stride, time_stride, num_mel_bins,
            id2label/label2id or num_labels, problem_type, ...

    Returns:
        A new model with the changed config and re-targeted weights, in eval mode, with `model`'s attention
            implementation.

    Raises:
        ConversionError: When a change touches the encoder's architecture (hidden_size, num_hidden_layers,
            intermediate_size, patch_size).
        ValueError: When the changed config is invalid.

    Example:
        ```python
        esc50 = retarget_model(audioset_model, max_length=512, num_labels=50)
        ```
    """
    config_dict = model.config.to_dict()
    if "id2label" in changes and "label2id" not in changes:
        changes["label2id"] = {label: int(i) for i, label in dict(changes["id2label"]).items()}
    if "num_labels" in changes and "id2label" not in changes:
        config_dict.pop("id2label", None)
        config_dict.pop("label2id", None)
    config_dict.update(changes)
    new_config = ASTConfig.from_dict(config_dict)
    weights = retarget_state_dict(model.state_dict(), model.config, new_config, seed=seed)
    return build_model(new_config, weights, attn_implementation=model.config._attn_implementation)


def build_model(config: ASTConfig, weights: Mapping[str, torch.Tensor],
                attn_implementation: str | None = None) -> ASTForAudioClassification:
    """Build an `ASTForAudioClassification` holding exactly `weights`.

    Args:
        config: The model's config.
        weights: Every tensor of the model, by parameter name (with the `audio_spectrogram_transformer.` and
            `classifier.` prefixes).
        attn_implementation: The attention implementation ("eager", "sdpa", ...); None for transformers' default.

    Returns:
        The model, in eval mode.

    Raises:
        ConversionError: When any of the model's parameters is missing from `weights`, or `weights` holds a
            tensor the model does not have (the message names the first few).
        RuntimeError: When a tensor has the wrong shape for its parameter (from `load_state_dict`).
    """
    model = ASTForAudioClassification._from_config(config, attn_implementation=attn_implementation)
    result = model.load_state_dict(dict(weights), strict=False)
    if result.missing_keys or result.unexpected_keys:
        raise ConversionError(f"Converted weights do not fit the AST: missing {result.missing_keys[:6]}, "
                              f"unexpected {result.unexpected_keys[:6]}.")
    return model.eval()


def load_ast_model(source: str, cache_dir: str | None = None) -> ASTForAudioClassification:
    """Load an ast_hf or transformers AST, with every weight accounted for.

    `from_pretrained` alone initialises whatever it does not find at random and only logs it, so a DeiT, a
    different model or damaged weights would come back as a random AST. Here the config's model_type must be an
    AST (`ast_directory`), and any missing, unexpected or mis-shaped tensor is an error that names them.

    Args:
        source: A `save_pretrained` directory or a Hub id, of ast_hf's AST or transformers' built-in one.
        cache_dir: The huggingface_hub cache for a Hub id; None for its default.

    Returns:
        The model as ast_hf's `ASTForAudioClassification`, in eval mode.

    Raises:
        ConversionError: When `source` is a file, cannot be found or downloaded, has no `config.json` or not an
            AST's (see `ast_directory`); when loading fails; when any weight is missing, unexpected or of the
            wrong shape.

    Example:
        ```python
        model = load_ast_model("MIT/ast-finetuned-audioset-10-10-0.4593")
        ```
    """
    folder = ast_directory(source, cache_dir)
    from transformers.utils import logging as transformers_logging

    verbosity = transformers_logging.get_verbosity()
    transformers_logging.set_verbosity_error()  # the load report is replaced by the one-line error below
    try:
        model, info = ASTForAudioClassification.from_pretrained(folder, output_loading_info=True,
                                                                ignore_mismatched_sizes=True)
    except Exception as error:  # damaged or hostile files raise many types (UnpicklingError, SafetensorError, ...)
        raise ConversionError(f"Could not load the AST in {source!r} ({type(error).__name__}: "
                              f"{' '.join(str(error).split())[:300]}).") from error
    finally:
        transformers_logging.set_verbosity(verbosity)
    problems = [f"{len(info[name])} {label} (e.g. {[k if isinstance(k, str) else k[0] for k in info[name]][:3]})"
                for name, label in (("missing_keys", "missing"), ("unexpected_keys", "unexpected"),
                                    ("mismatched_keys", "of the wrong shape"), ("error_msgs", "load errors"))
                if info.get(name)]
    if problems:
        raise ConversionError(f"The weights in {source!r} do not fit the AST its config.json describes: "
                              f"{'; '.join(problems)}. The directory mixes two models or is damaged.")
    return model.eval()


def from_builtin_model(model: Any) -> ASTForAudioClassification:
    """Convert an instance of transformers' built-in `ASTForAudioClassification` into ast_hf's.

    Goes through a `save_pretrained` round trip in a temporary directory: transformers 5 names the built-in's
    parameters differently in memory, and its `save_pretrained` writes the Hub names that ast_hf loads. Every
    weight is checked by `load_ast_model`.

    Args:
        model: The transformers `ASTForAudioClassification` instance.

    Returns:
        ast_hf's model with the same weights, on `model`'s device, in eval mode.

    Raises:
        ConversionError: When the saved weights do not load as an AST (see `load_ast_model`).
    """
    with tempfile.TemporaryDirectory(prefix="ast_hf_builtin_") as folder:
        model.save_pretrained(folder)
        return load_ast_model(folder).to(model.device)


def ast_directory(source: str, cache_dir: str | None = None) -> str:
    """Find the local directory of an AST checkpoint, after checking that its `config.json` says AST.

    Args:
        source: A `save_pretrained` directory or a Hub id (downloaded with `download_checkpoint`).
        cache_dir: The huggingface_hub cache for a Hub id; None for its default.

    Returns:
        The local directory.

    Raises:
        ConversionError: When `source` is a file (the message says which converter takes it); when it is neither
            a directory nor a Hub id that can be downloaded; when it has no `config.json`, or one that is not a
            JSON object; when its model_type is a Swin or anything else that is not in `AST_MODEL_TYPES`.
    """
    path = Path(source)
    if path.is_file():
        raise ConversionError(
            f"{source!r} is a file; this needs a save_pretrained directory (config.json + model.safetensors) or a Hub "
            "id. The authors' .pth files go through conversion/convert_original_ast.py (with --dataset), DeiT/ViT "
            "weights through conversion/convert_deit_to_ast.py."
        )
    if not path.is_dir():
        path = Path(download_checkpoint(source, cache_dir))
    config_file = path / "config.json"
    if not config_file.is_file():
        raise ConversionError(f"{source!r} has no config.json (found {sorted(p.name for p in path.iterdir())[:10]});"
                              " pass a directory written by save_pretrained.")
    try:
        model_type = json.loads(config_file.read_text(encoding="utf-8")).get("model_type")
    except (ValueError, AttributeError) as error:
        raise ConversionError(f"{str(config_file)!r} is not a JSON object ({error}).") from error
    if str(model_type).startswith("swin"):
        raise ConversionError(swin_message(f"{source!r} holds a {model_type!r} model (config.json)"))
    if model_type not in AST_MODEL_TYPES:
        raise ConversionError(
            f"{source!r} holds a {model_type!r} model (config.json), not an AST ({' or '.join(AST_MODEL_TYPES)}). "
            "For a DeiT/ViT use conversion/convert_deit_to_ast.py; the authors' .pth files go through "
            "conversion/convert_original_ast.py with --dataset."
        )
    return str(path)


# --------------------------------------------------------------------------------------------------------------
# Labels of a new head


def head_labels(labels_file: str | None = None, num_labels: int | None = None, dataset: str | None = None,
                problem_type: str | None = None) -> dict[str, Any]:
    """Build the config fields of a new head's labels: the converters' `--labels_file`, `--num_labels` and `--dataset`.

    The first of these that is given is used. One output (a single regression target, MSE loss) needs
    `problem_type="regression"` said explicitly: one label of a classifier would be a model that always predicts
    it.

    Args:
        labels_file: A CSV with a `display_name` (or `label`/`name`) column, or a text file with one label a line.
        num_labels: A number of outputs, named LABEL_0, LABEL_1, ...; at least 2, or 1 with
            `problem_type="regression"`.
        dataset: A data-set preset whose labels are used: "audioset", "esc50" or "speechcommands".
        problem_type: The head's problem type; only "regression" changes what is accepted here (one label or
            output). It is not part of the returned fields.

    Returns:
        `{"id2label": ..., "label2id": ...}` for a labels file or a preset, `{"num_labels": n}` for a count, or
            `{}` when none is given (the head keeps its labels).

    Raises:
        ConversionError: When the labels file holds fewer than two labels (one without `problem_type="regression"`)
            or repeated labels, or `num_labels` is below 2 (1 without `problem_type="regression"`).
        ValueError: When the labels file does not exist or is empty, or `dataset` is not a preset.

    Example:
        ```python
        model = load_deit_as_ast("facebook/deit-base-distilled-patch16-384", **head_labels(dataset="esc50"))
        ```
    """
    if labels_file:
        return label_fields(read_labels(labels_file), problem_type)
    if num_labels is not None:
        if num_labels == 1 and problem_type == "regression":
            return {"num_labels": 1}
        if num_labels < 2:
            raise ConversionError(
                f"--num_labels {num_labels}: a classifier needs at least 2 labels"
                + ("; for one regression target (MSE loss) pass --problem_type regression." if num_labels == 1
                   else ", a regression head at least 1 output.")
            )
        return {"num_labels": num_labels}
    if dataset:
        return label_fields(dataset_labels(dataset))
    return {}


def count_parameters(model: torch.nn.Module) -> int:
    """Count the parameters of a model.

    Args:
        model: Any torch model.

    Returns:
        The number of elements of all its parameters, shared ones counted once.
    """
    return sum(p.numel() for p in model.parameters())


def summarize(model: ASTForAudioClassification, describe: Callable[[str], None] = print) -> None:
    """Describe a model's architecture in one line.

    The line gives the parameter count, the patch grid (frequency x time), num_mel_bins, max_length, the strides,
    the number of labels and the problem type.

    Args:
        model: The model to describe.
        describe: Called with the line (`print` by default).
    """
    config = model.config
    f, t = config.patch_grid
    describe(f"parameters: {count_parameters(model):,}; grid {f} x {t} = {f * t} patches "
             f"(num_mel_bins {config.num_mel_bins}, max_length {config.max_length}, strides "
             f"{config.frequency_stride}/{config.time_stride}); {config.num_labels} labels, "
             f"problem_type {config.problem_type}")


# --------------------------------------------------------------------------------------------------------------
# Shared by the command-line converters


def verification_clip(audio: str | None = None) -> tuple[torch.Tensor, str]:
    """Pick a real 16 kHz clip for the converters' final forward pass.

    Args:
        audio: An audio file (WAV, FLAC, Ogg, MP3, ...; mixed to mono and resampled to 16 kHz); None for speech
            synthesised by espeak-ng, or a synthetic 1 s chirp where espeak-ng is not installed.

    Returns:
        A tuple `(samples, name)`: the mono float32 samples at 16 kHz, and what they are (the file name,
            "espeak-ng speech '...'" or "synthetic 1 s chirp (no espeak-ng)").

    Raises:
        ConversionError: When the audio file holds no samples.
        AudioReadError: When the audio file does not exist or cannot be decoded (a `ValueError`).
    """
    if audio is None and espeak_available():
        text = "audio spectrogram transformer"
        return torch.from_numpy(espeak_speech(text)), f"espeak-ng speech '{text}'"
    if audio is None:
        seconds = torch.arange(16000) / 16000
        return torch.sin(2 * math.pi * (200 + 1800 * seconds) * seconds) * 0.3, "synthetic 1 s chirp (no espeak-ng)"
    clip = read_audio_file(audio)
    if clip.numel() == 0:
        raise ConversionError(f"--audio {audio!r} holds no samples; pass a non-empty audio file.")
    return clip, str(audio)


def verify(model: ASTForAudioClassification, extractor: Any, audio: str | None = None,
           describe: Callable[[str], None] = print) -> torch.Tensor:
    """Check a converted model on real audio: describe it and run one clip through extractor and model.

    The clip comes from `verification_clip`; the extractor is called as the pipeline calls it (truncated to its
    max_length). The summary (`summarize`) and a line with the input shape and the top 3 labels go to `describe`.

    Args:
        model: The model to check.
        extractor: Its feature extractor.
        audio: An audio file to run; None for espeak-ng speech or a chirp (see `verification_clip`).
        describe: Called with each line (`print` by default).

    Returns:
        The logits, shape (1, num_labels).

    Raises:
        ConversionError: When the logits are not all finite, or the audio file holds no samples.
        AudioReadError: When the audio file does not exist or cannot be decoded (a `ValueError`).
    """
    summarize(model, describe)
    clip, name = verification_clip(audio)
    features = extractor(clip, sampling_rate=16000, return_tensors="pt", truncation=True)  # as the pipeline cuts
    with torch.no_grad():
        logits = model(**features).logits  # (1, num_labels)
    if not torch.isfinite(logits).all():
        raise ConversionError("The converted model gives non-finite logits on a real clip.")
    top = logits[0].topk(min(3, logits.shape[-1]))
    labels = ", ".join(f"{model.config.id2label[int(i)]} {float(v):.2f}" for v, i in zip(*top, strict=True))
    describe(f"forward on {name} ({clip.shape[0] / 16000:.2f} s): input {tuple(features['input_values'].shape)}, "
             f"top logits {labels}")
    return logits


def run_conversion(build: Callable[[], tuple[ASTForAudioClassification, Any]], output_dir: str | os.PathLike,
                   overwrite: bool = False, audio: str | None = None, push_to_hub: str | None = None) -> int:
    """Run the common tail of the command-line converters.

    Checks `output_dir` first, then builds the model and extractor, verifies them on a real clip (`verify`), writes
    them atomically (`write_checkpoint`) and optionally pushes them to the Hub. A `ConversionError`, `ValueError`,
    `TypeError` or `OSError` on the way is printed as one line `error: ...` on stderr, and nothing is written.

    Args:
        build: Builds and returns `(model, extractor)`; it must check every weight (as `build_model` and
            `load_ast_model` do).
        output_dir: The checkpoint directory to write.
        overwrite: Replace an existing non-empty directory.
        audio: An audio file for the verification; None for espeak-ng speech or a chirp.
        push_to_hub: A Hub id (`owner/name`) to push the model and extractor to after writing; None not to push.

    Returns:
        The exit status: 0 on success, 2 after a one-line error.

    Example:
        ```python
        sys.exit(run_conversion(lambda: (load_deit_as_ast(args.source), extractor), args.output_dir))
        ```
    """

    try:
        check_output_dir(output_dir, overwrite)  # before any reading or converting (checked again when writing)
        model, extractor = build()  # every build path checks the keys: build_model or load_ast_model
        print("weights: no missing or unexpected keys")
        verify(model, extractor, audio)
        write_checkpoint(model, extractor, output_dir, overwrite=overwrite)
    except (ConversionError, ValueError, TypeError, OSError) as error:
        print(f"error: {' '.join(str(error).split())}", file=sys.stderr)  # one line
        return 2
    print(f"saved to {output_dir}")
    if push_to_hub:
        model.push_to_hub(push_to_hub)
        extractor.push_to_hub(push_to_hub)
        print(f"pushed to {push_to_hub}")
    return 0


__all__ = [
    "AST_MODEL_TYPES",
    "ast_directory",
    "atomic_directory",
    "build_model",
    "check_ast_checkpoint",
    "check_output_dir",
    "count_parameters",
    "download_checkpoint",
    "exchange_paths",
    "head_labels",
    "load_ast_model",
    "load_deit_as_ast",
    "load_image_encoder",
    "load_pretrained_weights",
    "load_state_dict_file",
    "looks_like_local_path",
    "read_image_source",
    "retarget_model",
    "run_conversion",
    "sniff_file_format",
    "summarize",
    "verification_clip",
    "verify",
    "write_checkpoint",
]
