"""ast_hf on transformers' own paths: PEFT/LoRA with gradient checkpointing, a directory re-saved by the built-in
class, and loading at another clip length (`from_pretrained(..., max_length=...)`). Tiny random models, no network."""

from __future__ import annotations

import json
import os

import pytest
import torch
import transformers
from conftest import tiny_model
from transformers.testing_utils import CaptureLogger

import ast_hf
from ast_hf import convert
from ast_hf.patch_grid import resample_position_embeddings

peft = pytest.importorskip("peft", reason="peft is a dev extra (pip install -e .[dev]); the LoRA test needs it")


# ---- PEFT / LoRA with gradient checkpointing ---------------------------------------------------------------------


def enable_checkpointing(model: torch.nn.Module) -> None:
    # transformers 5.2x renamed it; gradient_checkpointing_enable is a deprecated alias there (FutureWarning).
    enable = getattr(model, "activation_checkpointing_enable", None) or model.gradient_checkpointing_enable
    enable()


def test_enable_input_require_grads_hooks_a_tensor():
    """transformers' enable_input_require_grads calls requires_grad_ on the output of get_input_embeddings();
    it raised AttributeError ('tuple' object has no attribute 'requires_grad_') when that output was a tuple."""
    model = tiny_model()
    model.enable_input_require_grads()
    seen = []
    model.get_input_embeddings().register_forward_hook(lambda module, args, output: seen.append(output))
    with torch.no_grad():
        model(torch.randn(1, 128, 128))
    assert isinstance(seen[0], torch.Tensor) and seen[0].shape == (1, 144, 32)


def test_lora_with_gradient_checkpointing_trains_saves_and_reloads(tmp_path):
    """The issue's script: gradient checkpointing on, LoRA on query/value, forward + backward; then a few AdamW steps
    on fixed data, and the saved adapter reloaded onto the saved base gives the same logits."""
    base = tiny_model(hidden_dropout_prob=0.0)
    base.save_pretrained(tmp_path / "base")
    enable_checkpointing(base)
    model = peft.get_peft_model(base.train(), peft.LoraConfig(r=4, target_modules=["query", "value"]))
    layers = base.audio_spectrogram_transformer.encoder.layer
    assert all(layer.gradient_checkpointing for layer in layers)
    adapters = {name: p for name, p in model.named_parameters() if p.requires_grad}
    assert len(adapters) == 2 * 2 * 2  # 2 layers x (query, value) x (lora_A, lora_B)
    assert all("lora_" in name and (".query." in name or ".value." in name) for name in adapters)
    frozen = {name: p.detach().clone() for name, p in model.named_parameters() if not p.requires_grad}

    generator = torch.Generator().manual_seed(0)
    inputs, labels = torch.randn(4, 64, 128, generator=generator), torch.tensor([0, 1, 2, 3])
    optimizer = torch.optim.AdamW(adapters.values(), lr=1e-2)
    losses = []
    for step in range(6):
        loss = model(input_values=inputs, labels=labels).loss
        optimizer.zero_grad()
        loss.backward()
        if step == 0:
            # B starts at zero (so A's first gradient is zero); B's gradient is what proves the path is connected.
            assert all(p.grad is not None for p in adapters.values())
            assert all(p.grad.abs().sum() > 0 for n, p in adapters.items() if "lora_B" in n)
        optimizer.step()
        losses.append(loss.item())
    assert all(p.grad.abs().sum() > 0 for p in adapters.values())  # A's too, once B has moved
    assert losses[-1] < losses[0] - 0.05, losses
    for name, p in model.named_parameters():
        if name in frozen:
            assert torch.equal(p, frozen[name]), name  # base weights untouched

    model.eval()
    with torch.no_grad():
        trained = model(input_values=inputs).logits
    model.save_pretrained(tmp_path / "adapter")
    fresh = ast_hf.ASTForAudioClassification.from_pretrained(tmp_path / "base")
    reloaded = peft.PeftModel.from_pretrained(fresh, tmp_path / "adapter").eval()
    plain = ast_hf.ASTForAudioClassification.from_pretrained(tmp_path / "base").eval()
    with torch.no_grad():
        torch.testing.assert_close(reloaded(input_values=inputs).logits, trained, rtol=0, atol=1e-6)
        assert (trained - plain(inputs).logits).abs().max() > 1e-3  # the adapter is what was reloaded


@pytest.mark.parametrize("targets, expected", [
    (["query", "key", "value"], ["attention.attention.query", "attention.attention.key", "attention.attention.value"]),
    (["attention.output.dense"], ["attention.output.dense"]),
    (["intermediate.dense"], ["intermediate.dense"]),
    (r".*\.layer\.\d+\.output\.dense", ["output.dense"]),  # "output.dense" alone would match attention.output too
])
def test_lora_target_names_of_the_model_docstring(targets, expected):
    from peft.tuners.tuners_utils import check_target_module_exists

    model = tiny_model(num_hidden_layers=1)
    config = peft.LoraConfig(r=2, target_modules=targets)
    found = [name for name, _ in model.named_modules() if check_target_module_exists(config, name)]
    assert found == [f"audio_spectrogram_transformer.encoder.layer.0.{name}" for name in expected]


# ---- an ast_hf directory re-saved by transformers' built-in class ------------------------------------------------

BUILTIN_WARNING = ("You are using a model of type `ast_hf` to instantiate a model of type "
                   "`audio-spectrogram-transformer`. This may be expected if you are loading a checkpoint that shares "
                   "a subset of the architecture")


def test_directory_resaved_by_the_builtin_class_loads_with_the_auto_classes(tmp_path):
    """ast_hf's config.json carries an auto_map (remote code); transformers' built-in class kept it on re-save without
    the code files, so trust_remote_code=True failed with OSError (configuration_ast.py). Now the built-in's save
    leaves out the entries whose code is not in the directory, and every Auto load gives the original logits."""
    original = tiny_model()
    original.save_pretrained(tmp_path / "ours")
    assert "AutoConfig" in json.loads((tmp_path / "ours" / "config.json").read_text())["auto_map"]
    configuration_logger = transformers.utils.logging.get_logger("transformers.configuration_utils")
    verbosity = transformers.utils.logging.get_verbosity()
    transformers.utils.logging.set_verbosity_warning()  # other tests (the CLI in-process) may have set "error"
    try:
        with CaptureLogger(configuration_logger) as captured:
            builtin = transformers.ASTForAudioClassification.from_pretrained(tmp_path / "ours")
    finally:
        transformers.utils.logging.set_verbosity(verbosity)
    assert BUILTIN_WARNING in captured.out  # transformers' own warning; the docs quote it
    assert type(builtin).__module__.startswith("transformers.models.audio_spectrogram_transformer")
    builtin.save_pretrained(tmp_path / "resaved")
    config = json.loads((tmp_path / "resaved" / "config.json").read_text())
    assert config["model_type"] == "audio-spectrogram-transformer" and "auto_map" not in config
    assert sorted(os.listdir(tmp_path / "resaved")) == ["config.json", "model.safetensors"]
    assert builtin.config.auto_map  # the in-memory config is left as loaded

    inputs = torch.randn(2, 128, 128, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected = original(inputs).logits
        for kwargs in ({}, {"trust_remote_code": True}, {"trust_remote_code": False}):
            model = transformers.AutoModelForAudioClassification.from_pretrained(tmp_path / "resaved", **kwargs)
            torch.testing.assert_close(model.eval()(inputs).logits, expected, rtol=0, atol=1e-5)
        ours = ast_hf.ASTForAudioClassification.from_pretrained(tmp_path / "resaved").eval()
        torch.testing.assert_close(ours(inputs).logits, expected, rtol=0, atol=1e-5)

    # Saved over a directory that has ast_hf's code, the entries still load, and so are kept.
    builtin.save_pretrained(tmp_path / "ours")
    kept = json.loads((tmp_path / "ours" / "config.json").read_text())
    assert kept["model_type"] == "audio-spectrogram-transformer" and kept["auto_map"] == builtin.config.auto_map


# ---- from_pretrained at another clip length or stride --------------------------------------------------------------


@pytest.mark.parametrize("ignore_mismatched_sizes", [True, False])
@pytest.mark.parametrize("changes, grid", [(dict(max_length=256), (12, 25)), (dict(max_length=64), (12, 5)),
                                           (dict(max_length=256, frequency_stride=12, time_stride=12), (10, 21))])
def test_loading_at_another_grid_resamples_the_stored_positions(tmp_path, changes, grid, ignore_mismatched_sizes):
    """from_pretrained(ckpt, max_length=256, ignore_mismatched_sizes=True) re-initialised the whole positional
    embedding (CLS and distillation rows too), and refused to load without ignore_mismatched_sizes. Now the stored
    12 x 12 grid is resampled as retarget_model does, both ways, with one log line."""
    source = tiny_model()
    source.save_pretrained(tmp_path)
    stored = source.audio_spectrogram_transformer.embeddings.position_embeddings.detach()
    logger = transformers.utils.logging.get_logger("ast_hf.modeling_ast")
    with CaptureLogger(logger) as captured:
        model = ast_hf.ASTForAudioClassification.from_pretrained(
            tmp_path, ignore_mismatched_sizes=ignore_mismatched_sizes, **changes).eval()
    assert model.config.patch_grid == grid and all(getattr(model.config, k) == v for k, v in changes.items())
    settings = ", ".join(f"{name} {getattr(source.config, name)} -> {value}" for name, value in changes.items())
    assert captured.out.strip() == (f"Resampled the stored position embeddings from the 12 x 12 patch grid to "
                                    f"{grid[0]} x {grid[1]} ({settings}), CLS and distillation rows kept.")
    positions = model.audio_spectrogram_transformer.embeddings.position_embeddings
    expected = resample_position_embeddings(stored, (12, 12), grid, crop="center")
    assert positions.shape == (1, 2 + grid[0] * grid[1], 32)
    torch.testing.assert_close(positions.detach(), expected, rtol=0, atol=0)
    assert torch.equal(positions[:, :2], stored[:, :2])  # CLS and distillation rows as stored

    reference = convert.retarget_model(source, **changes)
    inputs = torch.randn(2, 256, 128, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        logits = model(inputs).logits
        assert bool(torch.isfinite(logits).all())
        torch.testing.assert_close(logits, reference(inputs).logits, rtol=0, atol=1e-6)


def test_auto_class_and_builtin_checkpoint_load_at_another_length(tmp_path):
    """The Auto classes hand from_pretrained a config with the new max_length already in it; a checkpoint of
    transformers' built-in AST resamples the same way."""
    inputs = torch.randn(1, 256, 128, generator=torch.Generator().manual_seed(1))
    for builtin in (False, True):
        source = tiny_model(builtin=builtin, seed=3)
        source.save_pretrained(tmp_path / str(builtin))
        reference = convert.retarget_model(convert.load_ast_model(str(tmp_path / str(builtin))), max_length=256)
        # A built-in checkpoint loads into transformers' own class through the Auto classes (which refuses another
        # max_length), so it goes through ast_hf's class here.
        loader = ast_hf.ASTForAudioClassification if builtin else transformers.AutoModelForAudioClassification
        model = loader.from_pretrained(tmp_path / str(builtin), max_length=256)
        assert type(model).__module__ == "ast_hf.modeling_ast" and model.config.patch_grid == (12, 25)
        with torch.no_grad():
            torch.testing.assert_close(model.eval()(inputs).logits, reference(inputs).logits, rtol=0, atol=1e-6)
    # The same grid as stored: nothing resampled, nothing logged.
    logger = transformers.utils.logging.get_logger("ast_hf.modeling_ast")
    with CaptureLogger(logger) as captured:
        same = ast_hf.ASTForAudioClassification.from_pretrained(tmp_path / "False", max_length=128)
    assert captured.out == "" and same.config.patch_grid == (12, 12)
