"""Faster inference, opt-in: `optimize_for_inference(model, mode)`. The float32 default is untouched.

Modes, and what decides between them (the documentation's "Fast inference and ONNX" page has the measured speeds
and accuracy):

- "bf16": weights and activations in bfloat16 (as `from_pretrained(..., dtype=torch.bfloat16)` does). Fast only on
  CPUs with native bfloat16 matrix units (AVX512-BF16 or AMX; `native_bf16()`) and on GPUs; on a CPU without them
  oneDNN emulates it and it is several times *slower* than float32, so this mode warns there.
- "int8": every Linear layer of the encoder dynamically quantised to int8 weights (activations quantised per batch
  at run time), with torch's own `quantize_dynamic` (fbgemm kernels; AVX2 and better, faster still with VNNI).
  CPU only. torchao's int8 configuration was measured too and is ~10x slower than float32 in eager mode on CPU
  here (its speed needs torch.compile), so torch's kernels are used; torch marks them deprecated in favour of
  torchao.
- "compile": `model.compile()` (torch.compile, in place, so the model stays an ASTForAudioClassification); the first
  call at each new input shape compiles (tens of seconds on 2 cores); same dtype, same logits within float rounding.
- "auto": the fastest of them that passes the accuracy guard, by hardware: "bf16" on a GPU that supports bfloat16
  and on a CPU with AMX; "int8" on other CPUs, AVX512-BF16 ones included (measured on a 2-core AVX512-BF16 EPYC
  without AMX: int8 7.44 s against bf16 8.67 s for 8 x 1024 frames of the base model, in the same run; attention,
  which both run as sdpa's fused kernel at the same speed, is 42% of the bf16 forward); "compile" on a GPU without
  native bfloat16 (compute capability below 8.0: V100, T4). onnxruntime is not a candidate: slower than torch on
  10-second clips (benchmarks/corpus.py, part f).

Devices: `default_device` is the one rule for every entry point given no device (the GPU where CUDA is available,
the CPU otherwise and for int8); `Hardware` lets both decisions be asked about another machine.
"""

from __future__ import annotations

import copy
import functools
import os
import warnings
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

MODES = ("bf16", "int8", "compile", "auto")
"""The modes `optimize_for_inference` accepts: "bf16", "int8", "compile" and "auto" (float32, the default, needs no
call). The module docstring says what each does and where it is fast."""


def native_bf16(device: torch.device | str = "cpu") -> bool:
    """Tell whether bfloat16 matrix products run natively on `device`.

    Native means a CUDA GPU of compute capability 8.0 or later (Ampere and newer; V100 and T4 only emulate
    bfloat16), or a CPU with AVX512-BF16 or AMX (oneDNN's own check). Where it is emulated it is several times
    slower than float32.

    Args:
        device: The device to ask about; a `torch.device` or its name ("cpu", "cuda", "cuda:1", ...). For "cuda"
            without an index the current CUDA device is asked about, else the one named.

    Returns:
        True where bfloat16 is native; False otherwise, also where the check itself is unavailable (a torch build
            without oneDNN) or CUDA is not available.

    Example:
        ```python
        mode = "bf16" if native_bf16() else "int8"
        ```
    """
    device = torch.device(device)
    if device.type == "cuda":
        # torch.cuda.is_bf16_supported() also says True where bfloat16 is only emulated, and asks about the current
        # device rather than the model's: the compute capability of the named device is what decides.
        return torch.cuda.is_available() and torch.cuda.get_device_capability(device) >= (8, 0)
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


@dataclass(frozen=True)
class Hardware:
    """What `resolve_mode` and `default_device` decide by, as plain values: `hardware()` reads them from this
    machine; pass others to ask what would be chosen on another one.

    Attributes:
        device_type: Where the model runs: "cpu" or "cuda".
        native_bf16: bfloat16 matrix products are native there (see `native_bf16`).
        amx: A CPU with AMX-BF16 tiles (see `cpu_has_amx`).
        cuda_available: A CUDA GPU can be used by this process.
    """

    device_type: str = "cpu"
    native_bf16: bool = False
    amx: bool = False
    cuda_available: bool = False


def hardware(device: torch.device | str = "cpu") -> Hardware:
    """This machine's `Hardware` for a model on `device` (the named GPU's capability for "cuda:N").

    Args:
        device: The device the model runs on; a `torch.device` or its name.

    Returns:
        A `Hardware`.
    """
    device = torch.device(device)
    cuda = torch.cuda.is_available()
    return Hardware(device.type, native_bf16(device), device.type == "cpu" and cpu_has_amx(), cuda)


def default_device(mode: str | None = None, hardware_: Hardware | None = None,
                   local_rank: int | str | None = None) -> str:
    """The device an entry point uses when none is given: one rule for the pipelines and the `ast-hf` commands.

    This process's GPU where CUDA is available, as transformers' pipelines choose ("cuda:0", or "cuda:LOCAL_RANK"
    under torchrun or accelerate launch, one GPU per process); the CPU where it is not, and for "int8", which runs on
    the CPU only.

    Args:
        mode: The inference mode asked for (one of `MODES`, or None for float32).
        hardware_: The machine to decide for; None reads this one (`hardware()`).
        local_rank: This process's rank on its machine; None reads LOCAL_RANK from the environment (0 without it).

    Returns:
        "cpu" or "cuda:N".

    Example:
        ```python
        default_device("int8", Hardware(cuda_available=True))  # "cpu"
        ```
    """
    hardware_ = hardware_ if hardware_ is not None else Hardware(cuda_available=torch.cuda.is_available())
    if not hardware_.cuda_available or mode == "int8":
        return "cpu"
    if local_rank is None:
        local_rank = os.environ.get("LOCAL_RANK") or 0
    return f"cuda:{int(local_rank)}"


def set_pipeline_device(args: tuple, kwargs: dict[str, Any], optimize: str | None) -> None:
    """Give a pipeline made without a device the one `default_device` chooses (in `kwargs`, before
    `Pipeline.__init__` sees them): the GPU where there is one, the CPU for "int8" or an int8-quantised model.
    A model spread over devices by `device_map` keeps its placement."""
    model = args[0] if args else kwargs.get("model")
    if kwargs.get("device") is not None or getattr(model, "hf_device_map", None) is not None:
        return
    quantized = isinstance(model, nn.Module) and _quantized(model)
    kwargs["device"] = default_device("int8" if quantized else optimize)


def resolve_mode(mode: str, device: torch.device | str = "cpu", hardware_: Hardware | None = None) -> str:
    """Resolve a mode name to the concrete mode `optimize_for_inference` applies.

    "auto" picks the fastest mode by hardware: "bf16" on a GPU with native bfloat16 (compute capability 8.0 or
    later) and on a CPU with AMX-BF16; "int8" on other CPUs (also those with AVX512-BF16 but no AMX, where int8's
    VNNI kernels were as fast or faster); "compile" on a GPU without native bfloat16 (V100, T4). Every other mode in
    `MODES` is returned as it is.

    Args:
        mode: One of `MODES`: "bf16", "int8", "compile" or "auto".
        device: The device the model runs on; a `torch.device` or its name.
        hardware_: The capabilities to decide by; None reads them for `device` (`hardware(device)`).

    Returns:
        "bf16", "int8" or "compile".

    Raises:
        ValueError: When `mode` is not one of `MODES`; the message names the choices.

    Example:
        ```python
        resolve_mode("auto", "cpu")  # "bf16" on a CPU with AMX, else "int8"
        resolve_mode("auto", hardware_=Hardware("cuda", native_bf16=False))  # "compile": a T4, say
        ```
    """
    if mode not in MODES:
        raise ValueError(f"mode={mode!r} is not an inference mode; choose one of {list(MODES)} (float32, the "
                         "default, needs no call).")
    if mode != "auto":
        return mode
    hardware_ = hardware_ if hardware_ is not None else hardware(device)
    if hardware_.device_type == "cpu":
        return "bf16" if hardware_.native_bf16 and hardware_.amx else "int8"
    return "bf16" if hardware_.native_bf16 else "compile"


def cpu_has_amx() -> bool:
    """Tell whether this CPU has AMX-BF16 tiles (Linux: /proc/cpuinfo's `amx_bf16` flag; False elsewhere).

    Returns:
        True on a CPU with AMX-BF16, where oneDNN's bfloat16 matrix products are several times its int8 VNNI ones.
    """
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            return any(line.startswith("flags") and " amx_bf16" in line for line in handle)
    except OSError:
        return False


def optimize_for_inference(model: nn.Module, mode: str = "auto", inplace: bool = False) -> nn.Module:
    """Prepare a model for faster inference in one of `MODES`.

    The float32 model is the default and needs no call; this is opt-in. The modes (the module docstring has the
    details, the docs' "Fast inference" page the measured speeds and accuracy):

    - "bf16": weights and activations in bfloat16. Fast on GPUs and on CPUs with AVX512-BF16/AMX; elsewhere
      oneDNN emulates it, several times slower than float32, and a `UserWarning` says so.
    - "int8": the encoder's Linear layers dynamically quantised to int8 with torch's `quantize_dynamic`; the
      classification head stays float32. CPU and float32 models only. The result cannot be saved:
      its `save_pretrained` raises a `ValueError` (save the float32 model and quantise again after loading).
    - "compile": `model.compile()` (torch.compile, applied to the returned model itself, so it stays an
      `ASTForAudioClassification`); the first call at each new input shape compiles. Same dtype, same logits within
      float rounding.
    - "auto": "bf16" on a GPU with bfloat16 and a CPU with AMX, "int8" on other CPUs, "compile" on other GPUs
      (see `resolve_mode`).

    Works for ast_hf's models; transformers' built-in AST too for "bf16" and "int8".

    Args:
        model: The model to prepare, e.g. an `ASTForAudioClassification`, on the device it will run on.
        mode: One of `MODES`: "bf16", "int8", "compile" or "auto".
        inplace: Change `model` itself instead of a deep copy of it. "int8" always builds new Linear modules, so
            use the returned model either way.

    Returns:
        The prepared model, in eval mode: a copy of `model` unless `inplace`.

    Raises:
        TypeError: When `model` is not a `torch.nn.Module`.
        ValueError: When `mode` is not one of `MODES`; when "bf16" or "int8" is asked of a model that is already
            int8-quantised; when "int8" is asked of a model that is not on the CPU or not float32.

    Example:
        ```python
        import ast_hf

        model = ast_hf.ASTForAudioClassification.from_pretrained("path/or/hub-id")
        fast = ast_hf.optimize_for_inference(model, "int8")  # or "auto": picked by the hardware
        ```
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"optimize_for_inference takes a torch model, got {type(model).__name__}.")
    device = next(model.parameters()).device
    requested, mode = mode, resolve_mode(mode, device)
    if requested == "auto" and mode == "int8" and next(model.parameters()).dtype == torch.bfloat16 and native_bf16(
            device):
        mode = "bf16"  # a model loaded in bfloat16 stays so where bfloat16 is native: int8 quantises float32 only
    named = f"mode={mode!r}" if requested == mode else f"mode={requested!r} (here {mode!r})"
    if mode in ("bf16", "int8") and _quantized(model):
        raise ValueError(f"{named}: this model is already int8-quantised (optimize_for_inference(mode='int8')) and "
                         "cannot change its number format again; apply the mode to the float32 model instead.")
    if not inplace:
        model = copy.deepcopy(model)
    model.eval()
    if mode == "bf16":
        if not native_bf16(device):
            warnings.warn(f"bfloat16 is not native on this {device.type.upper()} (no AVX512-BF16/AMX): oneDNN "
                          "emulates it and the model runs several times slower than in float32. Use mode='int8' (or "
                          "'auto') on this machine.", stacklevel=2)
        return model.to(torch.bfloat16)
    if mode == "int8":
        if device.type != "cpu":
            raise ValueError(f"mode='int8' (dynamic quantisation) runs on the CPU only; the model is on {device}. "
                             "Move it with model.cpu(), or use mode='bf16' on a GPU.")
        if next(model.parameters()).dtype != torch.float32:
            raise ValueError(f"{named} quantises a float32 model; this one is "
                             f"{next(model.parameters()).dtype}. Load it in float32.")
        # The classification head stays float32: it is 0.1% of the work, and quantising it moved the base
        # configuration's sigmoid scores by 0.020 instead of 0.018 (docs: "Fast inference and ONNX").
        qconfig = torch.ao.quantization.default_dynamic_qconfig
        encoder_linears = {name: qconfig for name, module in model.named_modules()
                           if isinstance(module, nn.Linear) and not name.startswith("classifier")}
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*deprecated.*")  # torch's notice that torchao replaces them
            model = torch.ao.quantization.quantize_dynamic(model, encoder_linears, dtype=torch.qint8, inplace=True)
        if hasattr(model, "save_pretrained"):  # packed int8 weights are no safetensors: say so, not an AttributeError
            model.save_pretrained = _refuse_saving
        # The packed weights stay on the CPU whatever .to() does, and their kernels are CPU-only: a move (as
        # transformers' pipelines make to their default GPU) is refused with the fix, not failed deep in a kernel.
        model.to = _cpu_only(model.to)
        model.cuda = _cpu_only(model.cuda, always=True)
        return model
    model.compile(dynamic=None)  # "compile"
    return model


def _quantized(model: nn.Module) -> bool:
    return any(type(module).__module__.startswith("torch.ao.nn.quantized") for module in model.modules())


def _cpu_only(move: Any, always: bool = False) -> Any:
    @functools.wraps(move)
    def cpu_only(*args: Any, **kwargs: Any) -> Any:
        target = torch.device("cuda") if always else torch._C._nn._parse_to(*args, **kwargs)[0]
        if target is not None and target.type != "cpu":
            raise ValueError(f"This model was int8-quantised (optimize_for_inference(mode='int8')), which runs on the "
                             f"CPU only; it cannot move to {target}. Pass device='cpu' to pipeline() (transformers' "
                             "pipelines choose the GPU where there is one), or use mode='bf16' on a GPU.")
        return move(*args, **kwargs)

    return cpu_only


def _refuse_saving(*args: Any, **kwargs: Any) -> None:
    raise ValueError("This model was int8-quantised for inference (optimize_for_inference(mode='int8')); its packed "
                     "int8 weights cannot be saved as a checkpoint. Save the float32 model, and quantise it again "
                     "after loading (it takes a second).")


def describe(model: nn.Module) -> str:
    """Name how `model` runs, for logs and benchmark tables.

    Args:
        model: A model, as returned by `optimize_for_inference` or not.

    Returns:
        The number format of its first parameter ("float32", "bfloat16", ...) or "int8 dynamic" for a quantised
            model, followed by " + compiled" for a compiled one: e.g. "float32 + compiled".
    """
    dtype = "int8 dynamic" if _quantized(model) else str(next(model.parameters()).dtype).replace("torch.", "")
    return dtype + (" + compiled" if getattr(model, "_compiled_call_impl", None) is not None else "")


def optimized(model: Any, mode: str | None) -> Any:
    """Apply an optional inference mode in place; the pipelines' helper.

    Args:
        model: The model to prepare.
        mode: One of `MODES`, or None to leave the model as it is.

    Returns:
        `model` itself for None, else `optimize_for_inference(model, mode, inplace=True)`.

    Raises:
        TypeError: As `optimize_for_inference` does, when `mode` is not None.
        ValueError: As `optimize_for_inference` does, when `mode` is not None.
    """
    return model if mode is None else optimize_for_inference(model, mode, inplace=True)


__all__ = ["MODES", "Hardware", "cpu_has_amx", "default_device", "describe", "hardware", "native_bf16",
           "optimize_for_inference", "resolve_mode"]
