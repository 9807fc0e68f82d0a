"""Feature extractor of the Audio Spectrogram Transformer (Gong, Chung, Glass, Interspeech 2021).

A batched torch implementation of the Kaldi log-mel filterbank that every AST checkpoint was trained on
(`torchaudio.compliance.kaldi.fbank(w, htk_compat=True, sample_frequency=16000, use_energy=False,
window_type="hanning", num_mel_bins=128, dither=0.0, frame_shift=10)`; the other Kaldi windows are an option):
the whole batch is framed, transformed and mel-projected in one pass, on CPU or on a GPU. Padding, truncation and
normalisation follow transformers' `ASTFeatureExtractor`, whose constructor arguments and saved config this class
shares.
"""

from __future__ import annotations

import inspect
import math
import numbers
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from transformers.feature_extraction_sequence_utils import SequenceFeatureExtractor
from transformers.feature_extraction_utils import BatchFeature
from transformers.utils import logging

from .kaldi_fbank import (  # noqa: F401 (FFT_SIZE ... project_mel: also importable from here)
    CPU_BLOCK_FRAMES,
    FFT_SIZE,
    FRAME_LENGTH,
    FRAME_SHIFT,
    WINDOW_TYPES,
    MelBlock,
    banded_kaldi_fbank,
    batched_kaldi_fbank,
    check_window_type,
    hann_window,
    kaldi_mel_banks,
    kaldi_window,
    mel_band_groups,
    num_frames,
    project_mel,
)
from .presets import DATASETS

logger = logging.get_logger(__name__)

# Largest sample magnitude accepted. A frame's samples reach at most 2 (waveform mean) x 2 (frame DC removal) x 1.97
# (pre-emphasis) = 7.88 times the peak, and by Parseval a power bin or mel energy is at most FFT_SIZE x FRAME_LENGTH x
# that squared: float32 cannot overflow below sqrt(3.4e38 / (512 * 400)) / 7.88 = 5.2e15. Real audio is in [-1, 1];
# past this bound the power spectrum would become Inf and the features NaN, so such clips are refused.
MAX_AMPLITUDE = 1e15
# A 2-D input of at most this many columns and more rows than columns is taken for (samples, channels) audio and
# refused: audio files carry at most 8 channels (7.1 surround), while a batch of clips has more samples than clips.
MAX_AUDIO_CHANNELS = 8
# Frames per second of the Kaldi framing (10 ms shift), for messages in seconds.
FRAMES_PER_SECOND = 100
# The shortest default output of a checkpoint that runs clips at their own length: one 16-frame patch, the patch
# size of every AST (a shorter spectrogram has no patch to embed).
MIN_DEFAULT_FRAMES = 16
# A call-time max_length more than this many times the extractor's own is most likely a number of samples given
# where frames are meant (transformers' tutorials pass max_length=16000 to waveform extractors): it warns once.
SUSPICIOUS_MAX_LENGTH_RATIO = 4

# Integer PCM is scaled to [-1, 1) by these full-scale values.
_PCM_FULL_SCALE = {np.dtype(np.int16): 2.0**15, np.dtype(np.int32): 2.0**31, np.dtype(np.int8): 2.0**7}


class ASTFeatureExtractor(SequenceFeatureExtractor):
    """Turns 16 kHz mono audio into the normalised log-mel spectrograms an AST expects, `(batch, frames, mel bins)`.

    Accepts what transformers' `ASTFeatureExtractor` accepts (the same constructor, saved config and output of the
    default call) and more: torch tensors, clips of different lengths in one batch computed in a single vectorised
    pass (`ast_hf.kaldi_fbank`), `padding="longest"` with an `attention_mask`, call-time `max_length` and
    `truncation`, integer PCM, and a `device` to compute on a GPU.

    Padding is always at the end: `padding_side="left"` is refused, as `ASTModel` reads the attention mask as real
    frames first.

    Args:
        feature_size: Values per audio sample (1).
        sampling_rate: The rate of the audio; 16000, the rate every AST checkpoint was trained at (the Kaldi framing
            here is 400/160 samples, 25/10 ms at 16 kHz).
        num_mel_bins: Mel filters of the fbank (128 in every released AST).
        max_length: Frames to pad or cut to, 100 per second: 1024 for AudioSet, 512 for ESC-50, 128 for Speech
            Commands.
        padding_value: Value of padded frames in the log-mel domain, before normalisation.
        do_normalize: Apply `(fbank - mean) / (2 * std)`.
        mean: Fbank mean of the training data; AudioSet's by default (`ast_hf.presets`; compute another with
            `ast_hf.compute_normalization_stats`).
        std: Fbank standard deviation of the training data; AudioSet's by default.
        return_attention_mask: Also return the (batch, frames) mask of real frames by default.
        subtract_waveform_mean: Subtract each clip's mean before the fbank, as the authors' training code does
            (transformers' extractor does not).
        window_type: Kaldi's analysis window, as `torchaudio.compliance.kaldi.fbank`'s `window_type`: "hanning"
            (Hann), "hamming", "povey", "rectangular" or "blackman" (see `ast_hf.kaldi_fbank.kaldi_window`). Keep
            "hanning" with pretrained checkpoints: every released AST was trained with it (the paper's text says
            Hamming, but the authors' code calls Kaldi's fbank with "hanning"). From scratch either works; keep the
            window the model was trained with. A saved file without the field loads as "hanning";
            transformers' extractor ignores the field.
        pad_to_max_length: How the checkpoint was trained, and so how every entry point feeds it by default. True:
            every clip was padded to `max_length` frames and the model saw the padding (the paper's recipes, every
            released AST): the default call pads to `max_length` and returns no mask. False: clips ran at their own
            length in masked batches (the fine-tuning scripts' default): the default call pads to the longest clip
            of the call (at least 16 frames) and returns the mask. None (the default): `not return_attention_mask`,
            which reads a file without the field (transformers' extractor, older ast_hf files) as padded-trained.
            Explicit call arguments (`padding=`, `return_attention_mask=`) override it.
        **kwargs: Passed on to transformers' `SequenceFeatureExtractor` (e.g. `padding_side`, which must stay
            "right").

    Raises:
        TypeError: For a constructor value of the wrong type (e.g. `sampling_rate="16000"`).
        ValueError: For a value out of range (e.g. `num_mel_bins=0`, a NaN `mean`, a sampling rate other than
            16000, an unknown `window_type`).

    Example:
        ```python
        extractor = ASTFeatureExtractor(max_length=300)
        batch = extractor(clips, sampling_rate=16000, padding="longest", return_attention_mask=True,
                          return_tensors="pt")
        batch["input_values"].shape   # (len(clips), longest clip in frames, 128)
        ```
    """

    model_input_names = ["input_values", "attention_mask"]

    def __init__(
        self,
        feature_size: int = 1,
        sampling_rate: int = 16000,
        num_mel_bins: int = 128,
        max_length: int = 1024,
        padding_value: float = 0.0,
        do_normalize: bool = True,
        mean: float = DATASETS["audioset"]["mean"],
        std: float = DATASETS["audioset"]["std"],
        return_attention_mask: bool = False,
        subtract_waveform_mean: bool = False,
        window_type: str = "hanning",
        pad_to_max_length: bool | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(feature_size=feature_size, sampling_rate=sampling_rate, padding_value=padding_value, **kwargs)
        if _check_number("sampling_rate", sampling_rate) != 16000:
            raise ValueError(
                f"sampling_rate={sampling_rate}: the Kaldi framing here is 400/160 samples (25/10 ms at 16 kHz). "
                "Keep sampling_rate=16000 and resample the audio to 16 kHz instead."
            )
        num_mel_bins = _check_integer("num_mel_bins", num_mel_bins, minimum=1)
        max_length = _check_integer("max_length", max_length, minimum=1)
        for name, value in (("mean", mean), ("std", std), ("padding_value", padding_value)):
            if not math.isfinite(_check_number(name, value)):
                raise ValueError(f"{name}={value} is not finite; every feature would be NaN. Pass a real number.")
        if std <= 0:
            raise ValueError(f"std={std} must be positive; compute it with ast_hf.compute_normalization_stats.")
        check_window_type(window_type)
        if self.padding_side != "right":
            raise ValueError(
                f"padding_side={self.padding_side!r} is not supported: padding goes at the end of each clip and "
                "ASTModel reads the attention mask as real frames first, then padding (it refuses other masks). "
                "Leave padding_side='right'; padded frames are masked, so the side does not change any clip's output."
            )
        self.num_mel_bins = num_mel_bins
        self.max_length = max_length
        self.do_normalize = do_normalize
        self.mean = mean
        self.std = std
        self.return_attention_mask = return_attention_mask
        self.subtract_waveform_mean = subtract_waveform_mean
        self.window_type = window_type
        if pad_to_max_length is None:
            pad_to_max_length = not return_attention_mask
        if not isinstance(pad_to_max_length, bool):
            raise TypeError(f"pad_to_max_length={pad_to_max_length!r} must be True (the model was trained on clips "
                            "padded to max_length) or False (on clips at their own length with an attention mask).")
        if pad_to_max_length and return_attention_mask:
            raise ValueError(
                "pad_to_max_length=True with return_attention_mask=True: a padded-trained model saw its padding "
                "unmasked, and a mask would hide it. Pass pad_to_max_length=False for a model trained on masked "
                "batches, or return_attention_mask=False for a padded-trained one (call-time "
                "return_attention_mask=True still gives the mask where you need it)."
            )
        self.pad_to_max_length = pad_to_max_length
        # Filterbank blocks and window, made once per (device, num_mel_bins, window_type).
        self._constants: dict[tuple[torch.device, int, str], tuple[list[MelBlock], torch.Tensor]] = {}
        self._warned_truncation = False  # the implicit-truncation warning is given once per extractor
        self._warned_max_length = False  # and the samples-for-frames one

    @classmethod
    def from_dict(cls, feature_extractor_dict: dict[str, Any], **kwargs: Any) -> Any:
        """Build an extractor from a saved config, as transformers' `from_dict` (which `from_pretrained` calls).

        Unlike transformers', a constructor argument passed to `from_pretrained` is used even when the saved config
        lacks it (transformers drops such an argument silently, so that `from_pretrained(<a config written by
        transformers' extractor>, window_type="hamming")` would give "hanning"). A file without
        `pad_to_max_length` is read as padded-trained unless it returns an attention mask.

        Args:
            feature_extractor_dict: The saved config (preprocessor_config.json).
            **kwargs: Constructor arguments that override the saved ones, and transformers' loading options.

        Returns:
            The feature extractor (and the unused kwargs when `return_unused_kwargs=True`).
        """
        arguments = [
            name
            for name, parameter in inspect.signature(cls.__init__).parameters.items()
            if parameter.kind is inspect.Parameter.POSITIONAL_OR_KEYWORD and name != "self"
        ]
        saved = dict(feature_extractor_dict)
        if "pad_to_max_length" in kwargs:  # a load-time choice of the input convention brings its mask default along
            pad = kwargs.pop("pad_to_max_length")
            saved.update(pad_to_max_length=pad, return_attention_mask=not pad if isinstance(pad, bool) else False)
        elif "pad_to_max_length" not in saved:  # transformers' extractor and older files: padded unless masked
            saved["pad_to_max_length"] = not kwargs.get("return_attention_mask", saved.get("return_attention_mask"))
        missing = {name: kwargs.pop(name) for name in arguments if name in kwargs and name not in saved}
        settings = {**saved, **missing}
        return super().from_dict(settings, **kwargs)

    def to_dict(self) -> dict[str, Any]:
        """The config saved as preprocessor_config.json, without `feature_extractor_type`.

        Returns:
            The constructor settings. `feature_extractor_type` is left out: "ASTFeatureExtractor" there would make
            `AutoFeatureExtractor` pick transformers' class of that name; without it, the Auto class goes through
            the model's config (model_type "ast_hf").
        """
        output = super().to_dict()
        output.pop("_constants", None)
        output.pop("_warned_truncation", None)
        output.pop("_warned_max_length", None)
        # "ASTFeatureExtractor" as feature_extractor_type would make AutoFeatureExtractor pick transformers' class of
        # the same name. Without it, AutoFeatureExtractor goes through the model config (model_type "ast_hf").
        output.pop("feature_extractor_type", None)
        return output

    def _mel_blocks_and_window(self, device: torch.device) -> tuple[list[MelBlock], torch.Tensor]:
        """The `mel_band_groups` blocks of the filterbank and the `window_type` window on `device`.

        Made once per device and kept; the key holds the settings too, so that changing `num_mel_bins` or
        `window_type` on an existing extractor takes effect (an unknown window_type is refused here).
        """
        key = (device, self.num_mel_bins, self.window_type)
        if key not in self._constants:
            mel = kaldi_mel_banks(self.num_mel_bins, self.sampling_rate).to(device)
            self._constants[key] = (mel_band_groups(mel), kaldi_window(self.window_type).to(device))
        return self._constants[key]

    def __call__(
        self,
        raw_speech: np.ndarray | torch.Tensor | Sequence[float] | Sequence[np.ndarray | torch.Tensor],
        sampling_rate: int | None = None,
        return_tensors: str | None = None,
        padding: bool | str | None = None,
        max_length: int | None = None,
        truncation: bool | None = None,
        return_attention_mask: bool | None = None,
        device: str | torch.device | None = None,
        **kwargs: Any,
    ) -> BatchFeature:
        """Featurise one clip or a batch of clips.

        Args:
            raw_speech: A 1-D array, tensor or list (one clip), a 2-D array or tensor (batch, samples), or a list of
                1-D clips of any lengths. Float audio in [-1, 1]; int8/int16/int32 PCM is divided by its full scale.
            sampling_rate: The rate of `raw_speech`; it must be `self.sampling_rate` (16000). Without it, 16 kHz is
                assumed, with a warning (once), as transformers' extractors do.
            return_tensors: "pt", "np" or None (a list of numpy arrays, one per clip).
            padding: "max_length" (every clip to `max_length` frames), "longest" or True (to the longest clip of
                the batch, at most `max_length` when truncating) or False / "do_not_pad" (each clip keeps its frames;
                with `return_tensors` "np" or None a list of per-clip arrays). Default: the checkpoint's convention
                (`pad_to_max_length`): "max_length" for a padded-trained checkpoint, else "longest" with at least
                16 frames.
            max_length: Frames (10 ms each, not samples) for this call instead of `self.max_length`. A value more
                than 4 times `self.max_length` warns once: it is most likely a number of samples.
            truncation: Cut clips longer than `max_length` frames. The default (None) cuts too, and warns once per
                extractor the first time a clip loses frames, since a pipeline over a long file otherwise classifies
                only its first `max_length` frames; True cuts without the warning.
            return_attention_mask: Return the (batch, frames) integer mask of real frames. Default:
                `self.return_attention_mask`, and always for a checkpoint trained on masked batches.
            device: Where to compute ("cpu", "cuda", ...); with `return_tensors="pt"` the tensors stay there.
            **kwargs: Not accepted: an unknown argument is a TypeError.

        Returns:
            A `BatchFeature` with `input_values` of shape (batch, frames, `num_mel_bins`), normalised, and with
            `attention_mask` (batch, frames) when asked for or implied by the convention.

        Raises:
            ValueError: For an empty clip, NaN/Inf samples, samples beyond +-1e15 (where the float32 power spectrum
                would overflow), a 3-D array, `(samples, channels)` stereo, a sampling rate other than 16000, or
                `padding_side="left"`; each message names the clip or value and the fix.
            TypeError: For input of an unsupported type (e.g. a file path string) or an unknown argument.
        """
        # Arguments, checked in this order so that the first wrong one is the one reported.
        if self.padding_side != "right":
            raise ValueError(f"padding_side={self.padding_side!r} is not supported; set it back to 'right'.")
        self._check_sampling_rate(sampling_rate)
        if kwargs:
            raise TypeError(f"Unexpected argument(s) {sorted(kwargs)} to {type(self).__name__}.__call__.")
        explicit_length = max_length is not None
        max_length = _check_integer("max_length", self.max_length if max_length is None else max_length, minimum=1)
        if explicit_length:
            self._warn_if_samples(max_length)
        warn_if_cut = truncation is None
        truncation = True if truncation is None else truncation
        pad_to_max_length = self.pad_to_max_length
        if return_attention_mask is None:
            return_attention_mask = self.return_attention_mask or not pad_to_max_length
        min_frames = 1
        if padding is None:
            padding = "max_length" if pad_to_max_length else "longest"
            min_frames = 1 if pad_to_max_length else min(MIN_DEFAULT_FRAMES, max_length)
        padding = _padding_strategy(padding)
        if return_tensors not in (None, "pt", "np"):
            raise ValueError(f"return_tensors={return_tensors!r} is not supported; use 'pt', 'np' or None.")
        device = torch.device(device) if device is not None else torch.device("cpu")

        # Frames: of each whole clip, and kept in the output.
        clips = _as_clip_list(raw_speech)
        lengths = [num_frames(clip.shape[0]) for clip in clips]
        kept = [min(n, max_length) if truncation else n for n in lengths]
        if warn_if_cut and not self._warned_truncation and max(lengths) > max_length:
            self._warn_truncation(lengths, max_length)
        width = _padded_width(padding, kept, max_length, return_tensors)  # None: each clip keeps its own frames
        if width is not None:
            width = max(width, min_frames)

        # Features, then padding after each clip's kept frames.
        fbank = torch.empty(len(clips), max(width or 0, max(kept)), self.num_mel_bins, device=device)  # (B, T, M)
        normalize = (self.mean, self.std) if self.do_normalize else None
        self._log_mel_into(clips, fbank, normalize)
        self._fill_padding(fbank, kept, normalize)

        values, mask = _split_padded(fbank, kept, width, return_attention_mask)
        data = {"input_values": _as_return_type(values, return_tensors)}
        if return_attention_mask:
            data["attention_mask"] = _as_return_type(mask, return_tensors)
        return BatchFeature(data, tensor_type=None)

    def _check_sampling_rate(self, sampling_rate: int | None) -> None:
        if sampling_rate is None:
            # As transformers' extractors: audio at another rate would give wrong features without any error.
            logger.warning_once(
                f"{type(self).__name__} was called without sampling_rate; the audio is assumed to be at "
                f"{self.sampling_rate} Hz. Pass sampling_rate={self.sampling_rate} to have other rates refused."
            )
        elif _check_number("sampling_rate", sampling_rate) != self.sampling_rate:
            raise ValueError(
                f"The audio is sampled at {sampling_rate} Hz but this feature extractor expects "
                f"{self.sampling_rate} Hz. Resample it first, e.g. "
                f"torchaudio.functional.resample(waveform, {sampling_rate}, {self.sampling_rate}), or cast a "
                f"datasets column with Audio(sampling_rate={self.sampling_rate})."
            )

    def _warn_if_samples(self, max_length: int) -> None:
        """Warn once when a call-time max_length is far above the checkpoint's: most likely samples, not frames."""
        if max_length <= SUSPICIOUS_MAX_LENGTH_RATIO * self.max_length or self._warned_max_length:
            return
        as_frames = num_frames(max_length)
        warnings.warn(
            f"max_length={max_length} is in frames (10 ms each): {max_length / FRAMES_PER_SECOND:.2f} s per clip, "
            f"while this feature extractor (its checkpoint) uses max_length={self.max_length} frames "
            f"({self.max_length / FRAMES_PER_SECOND:.2f} s). If {max_length} was meant as samples, that is "
            f"{as_frames} frames at {self.sampling_rate} Hz: pass max_length={as_frames}, or leave max_length out to "
            "use the checkpoint's. Padding far beyond the training length changes a padded-trained model's "
            "predictions and costs time. (Shown once per feature extractor.)",
            UserWarning,
            stacklevel=3,
        )
        self._warned_max_length = True

    def _warn_truncation(self, lengths: list[int], max_length: int) -> None:
        longest = max(range(len(lengths)), key=lengths.__getitem__)
        frames, cut = lengths[longest], sum(n > max_length for n in lengths)
        warnings.warn(
            f"Clip {longest} has {frames} frames ({frames / FRAMES_PER_SECOND:.2f} s) but max_length={max_length} "
            f"frames ({max_length / FRAMES_PER_SECOND:.2f} s): only its first {max_length} frames are used and "
            f"{frames - max_length} frames ({(frames - max_length) / FRAMES_PER_SECOND:.2f} s) are dropped"
            + (f" ({cut} of {len(lengths)} clips in this call were cut)" if cut > 1 else "")
            + ". Pass truncation=True to cut without this warning, truncation=False with padding='longest' to keep "
            "every frame, or classify the audio in windows of max_length frames. (Shown once per feature extractor.)",
            UserWarning,
            stacklevel=3,
        )
        self._warned_truncation = True

    def _log_mel_into(
        self, clips: list[torch.Tensor], out: torch.Tensor, normalize: tuple[float, float] | None
    ) -> None:
        """(Normalised) log-mel of the first out.shape[1] frames of every clip into `out` (B, T, M) on its device.

        Frames past a clip's end are left for the caller to fill.
        """
        waveforms = self._prepare_waveforms(clips, out.shape[1], out.device)
        mel_blocks, window = self._mel_blocks_and_window(out.device)
        banded_kaldi_fbank(waveforms, mel_blocks, window, out=out, normalize=normalize)

    def _prepare_waveforms(self, clips: list[torch.Tensor], frames: int, device: torch.device) -> list[torch.Tensor]:
        """Each clip as float32 on `device`, cut to the samples its first `frames` frames touch; minus its mean
        over the whole clip (as the authors' code does) when `subtract_waveform_mean`."""
        needed = FRAME_LENGTH + (frames - 1) * FRAME_SHIFT
        prepared = []
        for clip in clips:
            if self.subtract_waveform_mean:
                clip = clip - clip.mean()
            prepared.append(clip[:needed].to(device=device, dtype=torch.float32))
        return prepared

    def _fill_padding(self, fbank: torch.Tensor, kept: list[int], normalize: tuple[float, float] | None) -> None:
        """Frames past each clip's kept frames: padding_value in the log-mel domain, normalised like the frames
        (with the same float32 operations)."""
        padding_value = torch.tensor(self.padding_value, dtype=torch.float32)
        if normalize is not None:
            padding_value = padding_value.sub_(normalize[0]).div_(2 * normalize[1])
        for i, n in enumerate(kept):
            fbank[i, n:] = padding_value


def _padded_width(padding: str, kept: list[int], max_length: int, return_tensors: str | None) -> int | None:
    """Frames of the padded output, or None when each clip keeps its own number of frames (no padding)."""
    if padding == "max_length":
        return max(max_length, max(kept))
    if padding == "longest":
        return max(kept)
    if return_tensors is not None and len(set(kept)) > 1:
        raise ValueError(
            f"padding=False with return_tensors={return_tensors!r} needs clips of equal length, got "
            f"{sorted(set(kept))} frames. Use padding='longest' (with return_attention_mask=True) instead."
        )
    # Clips of one length stack into one array or tensor, as transformers' extractors return them; without
    # return_tensors each clip is its own array.
    return kept[0] if return_tensors is not None else None


def _split_padded(
    fbank: torch.Tensor, kept: list[int], width: int | None, with_mask: bool
) -> tuple[torch.Tensor | list[torch.Tensor], torch.Tensor | list[torch.Tensor] | None]:
    """The features and the int32 mask of real frames: (B, T, M) and (B, T), or per clip when `width` is None."""
    mask = None
    if with_mask:
        frame = torch.arange(fbank.shape[1], device=fbank.device)  # (T,)
        real = frame[None, :] < torch.tensor(kept, device=fbank.device)[:, None]  # (B, T)
        mask = real.to(torch.int32) if width is not None else [real[i, :n].to(torch.int32) for i, n in enumerate(kept)]
    if width is None:
        return [fbank[i, :n] for i, n in enumerate(kept)], mask
    return fbank, mask


def _as_return_type(values: Any, return_tensors: str | None) -> Any:
    """Tensors as they are for "pt"; else numpy: one array for "np", a list of per-clip arrays for None."""
    if return_tensors == "pt":
        return values
    if isinstance(values, list):
        return [v.cpu().numpy() for v in values]
    array = values.cpu().numpy()
    return list(array) if return_tensors is None else array


def _check_number(name: str, value: Any) -> float:
    """`value` as a float; a TypeError naming it when it is not a real number (e.g. the string "16000")."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        hint = f" ({name}={value})" if isinstance(value, str) and _is_number(value) else ""
        raise TypeError(f"{name}={value!r} is a {type(value).__name__}; pass a number{hint}.")
    return float(value)


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _check_integer(name: str, value: Any, minimum: int) -> int:
    """`value` as an int >= minimum; a TypeError/ValueError naming it otherwise (floats must be whole)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not float(value).is_integer():
        raise TypeError(f"{name}={value!r} must be an integer.")
    if value < minimum:
        raise ValueError(f"{name}={value} must be at least {minimum}.")
    return int(value)


def _padding_strategy(padding: bool | str) -> str:
    if padding is True or padding == "longest":
        return "longest"
    if padding == "max_length":
        return "max_length"
    if padding is False or padding in ("do_not_pad", None):
        return "do_not_pad"
    raise ValueError(f"padding={padding!r} is not one of 'max_length', 'longest' (True) or 'do_not_pad' (False).")


def _as_clip_list(raw_speech: Any) -> list[torch.Tensor]:
    """Validate the input and return a list of 1-D float32 CPU (or device) tensors, one per clip."""
    if isinstance(raw_speech, (np.ndarray, torch.Tensor)):
        if raw_speech.ndim == 1:
            items = [raw_speech]
        elif raw_speech.ndim == 2:
            rows, columns = raw_speech.shape
            if rows == 0:
                raise ValueError(f"Got a 2-D array of shape {tuple(raw_speech.shape)}: a batch of 0 clips. Pass at "
                                 "least one clip.")
            if columns == 1:
                items = [raw_speech[:, 0]]  # (N, 1): one mono clip
            elif 1 < columns <= MAX_AUDIO_CHANNELS and rows > columns:
                raise ValueError(
                    f"Got a 2-D array of shape {tuple(raw_speech.shape)}, which looks like multi-channel audio laid "
                    "out (samples, channels). AST takes mono audio: mix it down first (e.g. audio.mean(axis=1)). "
                    "A 2-D input is read as (batch, samples)."
                )
            else:
                items = list(raw_speech)
        else:
            raise ValueError(
                f"Got a {raw_speech.ndim}-D array of shape {tuple(raw_speech.shape)}; expected one mono clip "
                "(samples,) or a batch (batch, samples). Mix channels down to mono and pass a list of clips."
            )
    elif isinstance(raw_speech, (list, tuple)):
        if len(raw_speech) == 0:
            raise ValueError("Got an empty list of audio; pass at least one clip.")
        if all(isinstance(x, (int, float, np.number)) and not isinstance(x, bool) for x in raw_speech):
            items = [np.asarray(raw_speech, dtype=np.float32)]
        else:
            items = list(raw_speech)
    else:
        raise TypeError(
            f"Audio of type {type(raw_speech).__name__} is not supported; pass a numpy array, a torch tensor, a "
            "list of floats or a list of clips."
        )
    clips = [_as_clip(item, index) for index, item in enumerate(items)]
    _check_values(clips)
    return clips


def _check_values(clips: list[torch.Tensor]) -> None:
    """Refuse NaN/Inf and overflowing amplitudes. One min/max reduction per clip, brought to the host together: one
    device sync for a batch of GPU clips, not two per clip."""
    bounds: list[tuple[float, float]] = []
    for device in dict.fromkeys(clip.device for clip in clips):
        on = [i for i, clip in enumerate(clips) if clip.device == device]
        found = torch.stack([torch.stack(torch.aminmax(clips[i])) for i in on]).cpu().tolist()  # (clips, 2)
        bounds += list(zip(on, found, strict=True))
    for index, (low, high) in sorted(bounds):
        # min/max are NaN or Inf iff some sample is, and bound the power spectrum.
        if not (math.isfinite(low) and math.isfinite(high)):
            raise ValueError(
                f"Clip {index} contains NaN or Inf samples (or values beyond float32's range); clean the audio first "
                "(e.g. np.nan_to_num) or drop it."
            )
        peak = max(-low, high)
        if peak > MAX_AMPLITUDE:
            raise ValueError(
                f"Clip {index} peaks at {peak:.3g}; float audio is expected in [-1, 1], and above {MAX_AMPLITUDE:.0e} "
                "its power spectrum would overflow float32 (NaN features). Scale it first, e.g. audio / "
                "np.abs(audio).max(), or pass integer PCM as its int16/int32 array."
            )


def _as_clip(item: Any, index: int) -> torch.Tensor:
    if isinstance(item, (list, tuple)):
        item = np.asarray(item)
    if isinstance(item, torch.Tensor) and not item.is_floating_point():
        item = item.detach().cpu().numpy()  # integer PCM: scaled by the numpy branch below
    if isinstance(item, np.ndarray):
        if item.dtype in _PCM_FULL_SCALE:
            item = item.astype(np.float32) / np.float32(_PCM_FULL_SCALE[item.dtype])
        elif item.dtype == np.uint8:
            item = (item.astype(np.float32) - 128.0) / 128.0  # 8-bit WAV is unsigned, centred on 128
        elif not np.issubdtype(item.dtype, np.floating):
            raise TypeError(
                f"Clip {index} has dtype {item.dtype}; pass float audio in [-1, 1] or int8/int16/int32 PCM."
            )
        item = np.ascontiguousarray(item, dtype=np.float32)
        item = torch.from_numpy(item if item.flags.writeable else item.copy())
    elif isinstance(item, torch.Tensor):
        item = item.detach().to(torch.float32)
    else:
        raise TypeError(f"Clip {index} is a {type(item).__name__}; pass numpy arrays, torch tensors or lists.")
    if item.ndim == 2 and 1 in item.shape:
        item = item.reshape(-1)  # (1, N) or (N, 1): one mono clip
    if item.ndim != 1:
        raise ValueError(
            f"Clip {index} has shape {tuple(item.shape)}; each clip must be mono, shape (samples,). Mix channels "
            "down to mono first (e.g. audio.mean(axis=0))."
        )
    if item.shape[0] == 0:
        raise ValueError(f"Clip {index} is empty (0 samples); drop it or pass at least one sample.")
    return item


__all__ = ["ASTFeatureExtractor"]
