"""Conversion (DeiT/ViT -> AST, the authors' checkpoints, re-targeting) against values computed independently here:
a numpy bilinear interpolation and centre cuts of the positional grid, a plain-torch AST forward written from the
timm weights, and transformers' built-in AST."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import transformers
from conftest import load_conversion_script, randomize, tiny_model
from safetensors.torch import load_file, save_file

import ast_hf
from ast_hf import checkpoint_surgery, convert

ROOT = Path(__file__).resolve().parents[1]
SOURCE_GRID = 24  # DeiT-base-384: 24 x 24 patches



deit_cli = load_conversion_script("convert_deit_to_ast")
original_cli = load_conversion_script("convert_original_ast")
retarget_cli = load_conversion_script("retarget_ast")


@pytest.fixture(scope="module")
def deit_dir(tmp_path_factory) -> Path:
    """A random transformers DeiT-with-teacher at 384 px (24 x 24 grid), tiny width."""
    config = transformers.DeiTConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
                                     image_size=384, num_labels=7)
    model = randomize(transformers.DeiTForImageClassificationWithTeacher(config), seed=1)
    folder = tmp_path_factory.mktemp("deit")
    model.save_pretrained(folder)
    return folder


def hub_tensors(folder: Path) -> dict[str, torch.Tensor]:
    return load_file(str(folder / "model.safetensors"))


def timm_from_hub(hub: dict[str, torch.Tensor], prefix: str = "deit.") -> dict[str, torch.Tensor]:
    """The same weights under timm / original-DeiT names, written by hand (fused qkv, blocks.N.*)."""
    timm = {"cls_token": hub[prefix + "embeddings.cls_token"],
            "pos_embed": hub[prefix + "embeddings.position_embeddings"],
            "patch_embed.proj.weight": hub[prefix + "embeddings.patch_embeddings.projection.weight"],
            "patch_embed.proj.bias": hub[prefix + "embeddings.patch_embeddings.projection.bias"],
            "norm.weight": hub[prefix + "layernorm.weight"], "norm.bias": hub[prefix + "layernorm.bias"]}
    if prefix + "embeddings.distillation_token" in hub:
        timm["dist_token"] = hub[prefix + "embeddings.distillation_token"]
    layers = {int(k.split(".")[3 if prefix else 2]) for k in hub if ".layer." in k}
    for i in layers:
        layer = f"{prefix}encoder.layer.{i}."
        for kind in ("weight", "bias"):
            timm[f"blocks.{i}.attn.qkv.{kind}"] = torch.cat(
                [hub[f"{layer}attention.attention.{part}.{kind}"] for part in ("query", "key", "value")])
            timm[f"blocks.{i}.attn.proj.{kind}"] = hub[f"{layer}attention.output.dense.{kind}"]
            timm[f"blocks.{i}.norm1.{kind}"] = hub[f"{layer}layernorm_before.{kind}"]
            timm[f"blocks.{i}.norm2.{kind}"] = hub[f"{layer}layernorm_after.{kind}"]
            timm[f"blocks.{i}.mlp.fc1.{kind}"] = hub[f"{layer}intermediate.dense.{kind}"]
            timm[f"blocks.{i}.mlp.fc2.{kind}"] = hub[f"{layer}output.dense.{kind}"]
    if "cls_classifier.weight" in hub:
        timm.update({"head.weight": hub["cls_classifier.weight"], "head.bias": hub["cls_classifier.bias"],
                     "head_dist.weight": hub["distillation_classifier.weight"],
                     "head_dist.bias": hub["distillation_classifier.bias"]})
    return {k: v.clone() for k, v in timm.items()}


# ---- independent references ------------------------------------------------------------------------------------


def bilinear_axis(x: np.ndarray, size: int, axis: int) -> np.ndarray:
    """1-D linear interpolation with align_corners=False (half-pixel centres, edges clamped), by hand."""
    old = x.shape[axis]
    source = np.maximum((np.arange(size) + 0.5) * old / size - 0.5, 0.0)
    low = np.floor(source).astype(int)
    high = np.minimum(low + 1, old - 1)
    weight = (source - low).reshape([-1 if a == axis else 1 for a in range(x.ndim)])
    return np.take(x, low, axis=axis) * (1 - weight) + np.take(x, high, axis=axis) * weight


def expected_positions(source: torch.Tensor, f: int, t: int, old: tuple[int, int] = (SOURCE_GRID, SOURCE_GRID),
                       prefix: int = 2) -> np.ndarray:
    """REFERENCE section 3: time first (centre cut when t <= old, else interpolate), then frequency."""
    grid = source[0, prefix:].double().numpy().reshape(old[0], old[1], -1)  # (F, T, D)
    if t <= old[1]:
        start = old[1] // 2 - t // 2
        grid = grid[:, start:start + t]
    else:
        grid = bilinear_axis(grid, t, axis=1)
    if f <= old[0]:
        start = old[0] // 2 - f // 2
        grid = grid[start:start + f]
    else:
        grid = bilinear_axis(grid, f, axis=0)
    return np.concatenate([source[0, :prefix].double().numpy(), grid.reshape(f * t, -1)])


def reference_forward(timm: dict[str, torch.Tensor], head: dict[str, torch.Tensor], positions: torch.Tensor,
                      spectrogram: torch.Tensor, strides: tuple[int, int], heads: int, eps: float,
                      head_eps: float | None = None) -> torch.Tensor:
    """An AST forward written from the timm weights: summed-channel patch conv, pre-LN blocks, averaged tokens;
    `head_eps` is the head LayerNorm's (default `eps`; the authors' nn.LayerNorm(768) has 1e-5)."""
    x = spectrogram.transpose(1, 2).unsqueeze(1)  # (B, 1, F, T)
    weight = timm["patch_embed.proj.weight"].sum(dim=1, keepdim=True)
    x = F.conv2d(x, weight, timm["patch_embed.proj.bias"], stride=strides).flatten(2).transpose(1, 2)  # (B, N, D)
    batch, _, dim = x.shape
    tokens = [timm["cls_token"].expand(batch, -1, -1), timm["dist_token"].expand(batch, -1, -1), x]
    x = torch.cat(tokens, dim=1) + positions
    i = 0
    while f"blocks.{i}.norm1.weight" in timm:
        p = lambda name: timm[f"blocks.{i}.{name}"]  # noqa: B023
        h = F.layer_norm(x, (dim,), p("norm1.weight"), p("norm1.bias"), eps)
        q, k, v = F.linear(h, p("attn.qkv.weight"), p("attn.qkv.bias")).chunk(3, dim=-1)
        split = lambda z: z.view(batch, -1, heads, dim // heads).transpose(1, 2)  # (B, H, N, d)
        attention = torch.softmax(split(q) @ split(k).transpose(-1, -2) / (dim // heads) ** 0.5, dim=-1)
        h = (attention @ split(v)).transpose(1, 2).reshape(batch, -1, dim)
        x = x + F.linear(h, p("attn.proj.weight"), p("attn.proj.bias"))
        h = F.layer_norm(x, (dim,), p("norm2.weight"), p("norm2.bias"), eps)
        x = x + F.linear(F.gelu(F.linear(h, p("mlp.fc1.weight"), p("mlp.fc1.bias"))), p("mlp.fc2.weight"),
                         p("mlp.fc2.bias"))
        i += 1
    x = F.layer_norm(x, (dim,), timm["norm.weight"], timm["norm.bias"], eps)
    pooled = (x[:, 0] + x[:, 1]) / 2
    pooled = F.layer_norm(pooled, (dim,), head["classifier.layernorm.weight"], head["classifier.layernorm.bias"],
                          eps if head_eps is None else head_eps)
    return F.linear(pooled, head["classifier.dense.weight"], head["classifier.dense.bias"])


# ---- DeiT -> AST ------------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_transformers_and_timm_formats_give_identical_weights(deit_dir, tmp_path):
    timm = timm_from_hub(hub_tensors(deit_dir))
    torch.save({"model": timm}, tmp_path / "deit.pth")
    save_file(timm, str(tmp_path / "deit.safetensors"))
    common = ["--max_length", "512", "--num_labels", "5", "--seed", "3"]
    # One real process (the CLI as a user runs it), the other sources in-process.
    done = subprocess.run([sys.executable, str(ROOT / "conversion" / "convert_deit_to_ast.py"), "--deit",
                           str(deit_dir), "--output_dir", str(tmp_path / "from_hf"), *common],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "no missing or unexpected keys" in done.stdout and "grid 12 x 50" in done.stdout
    assert "forward on" in done.stdout
    for name in ("deit.pth", "deit.safetensors"):
        # A raw state dict has no config: heads are given, layer-norm eps set to transformers' for a like compare.
        assert deit_cli.main(["--deit", str(tmp_path / name), "--output_dir", str(tmp_path / name.replace(".", "_")),
                              "--num_attention_heads", "4", "--layer_norm_eps", "1e-12", *common]) == 0
        ours, reference = hub_tensors(tmp_path / name.replace(".", "_")), hub_tensors(tmp_path / "from_hf")
        assert ours.keys() == reference.keys()
        for key in reference:
            assert torch.equal(ours[key], reference[key]), key
    config = ast_hf.ASTConfig.from_pretrained(tmp_path / "deit_pth")
    assert config.layer_norm_eps == 1e-12 and config.num_attention_heads == 4


@pytest.mark.parametrize(
    "num_mel_bins, max_length, fstride, tstride",
    [(128, 128, 10, 10),  # f = 12 cut, t = 12 cut
     (128, 512, 10, 10),  # t = 50 interpolated
     (128, 1024, 10, 10),  # t = 101
     (128, 1024, 12, 12),  # 10 x 85
     (128, 1024, 16, 16),  # 8 x 64
     (128, 512, 16, 16),  # t = 32
     (272, 1024, 10, 10),  # f = 26 > 24 interpolated
     (272, 128, 12, 12)],  # f = 22 cut, t = 10 cut
)
def test_positional_adaptation_against_hand_computed_values(deit_dir, num_mel_bins, max_length, fstride, tstride):
    canonical = checkpoint_surgery.hf_vit_to_canonical(hub_tensors(deit_dir))
    config = ast_hf.ASTConfig(hidden_size=32, num_attention_heads=4, num_mel_bins=num_mel_bins, max_length=max_length,
                              frequency_stride=fstride, time_stride=tstride)
    adapted = checkpoint_surgery.adapt_image_encoder(canonical, (SOURCE_GRID, SOURCE_GRID), config)
    f, t = config.patch_grid
    ours = adapted[checkpoint_surgery.PREFIX + "embeddings.position_embeddings"]
    assert ours.shape == (1, 2 + f * t, 32)
    expected = expected_positions(canonical["embeddings.position_embeddings"], f, t)
    np.testing.assert_allclose(ours[0].double().numpy(), expected, rtol=0, atol=1e-5)
    patch = adapted[checkpoint_surgery.PREFIX + "embeddings.patch_embeddings.projection.weight"]
    torch.testing.assert_close(patch, canonical["embeddings.patch_embeddings.projection.weight"].sum(1, keepdim=True))


def test_one_token_source_duplicates_the_cls_token():
    vit = randomize(transformers.ViTModel(transformers.ViTConfig(hidden_size=32, num_hidden_layers=1,
                                                                 num_attention_heads=4, intermediate_size=64)))
    canonical = checkpoint_surgery.hf_vit_to_canonical(vit.state_dict())
    config = ast_hf.ASTConfig(hidden_size=32, num_attention_heads=4, num_hidden_layers=1, intermediate_size=64,
                              max_length=128)
    adapted = checkpoint_surgery.adapt_image_encoder(canonical, (14, 14), config, channel_reduction="mean")
    assert torch.equal(adapted[checkpoint_surgery.PREFIX + "embeddings.distillation_token"],
                       canonical["embeddings.cls_token"])
    positions = adapted[checkpoint_surgery.PREFIX + "embeddings.position_embeddings"]
    assert torch.equal(positions[0, 0], positions[0, 1])
    expected = expected_positions(canonical["embeddings.position_embeddings"], 12, 12, old=(14, 14), prefix=1)
    np.testing.assert_allclose(positions[0, 1:].double().numpy(), expected, atol=1e-5)
    patch = adapted[checkpoint_surgery.PREFIX + "embeddings.patch_embeddings.projection.weight"]
    torch.testing.assert_close(patch, canonical["embeddings.patch_embeddings.projection.weight"].mean(1, keepdim=True))


@pytest.mark.parametrize("strides, max_length", [((10, 10), 512), ((12, 16), 128), ((10, 10), 1024)])
def test_converted_logits_equal_an_independent_forward(deit_dir, tmp_path, speech, strides, max_length):
    timm = timm_from_hub(hub_tensors(deit_dir))
    torch.save(timm, tmp_path / "deit.pth")
    out = tmp_path / "ast"
    assert deit_cli.main(["--deit", str(tmp_path / "deit.pth"), "--output_dir", str(out), "--num_attention_heads",
                          "4", "--max_length", str(max_length), "--frequency_stride", str(strides[0]),
                          "--time_stride", str(strides[1]), "--dataset", "esc50"]) == 0
    model = transformers.AutoModelForAudioClassification.from_pretrained(out).eval()
    extractor = transformers.AutoFeatureExtractor.from_pretrained(out)
    assert type(model).__module__ == "ast_hf.modeling_ast" and model.config.layer_norm_eps == 1e-6
    assert model.config.id2label[0] == "dog" and (extractor.mean, extractor.max_length) == (-6.6268077, max_length)
    features = extractor(speech[:2], sampling_rate=16000, return_tensors="pt")
    f, t = model.config.patch_grid
    positions = torch.from_numpy(expected_positions(timm["pos_embed"], f, t)).float()
    head = {k: v for k, v in model.state_dict().items() if k.startswith("classifier.")}
    with torch.no_grad():
        expected = reference_forward(timm, head, positions, features["input_values"], strides, heads=4, eps=1e-6)
        torch.testing.assert_close(model(**features).logits, expected, rtol=0, atol=1e-4)


# ---- the authors' checkpoints and transformers' AST -------------------------------------------------------------


def builtin_ast(**overrides) -> transformers.ASTForAudioClassification:
    """A built-in AST shaped like the authors' one-head-per-64 checkpoints (35 Speech Commands labels)."""
    fields = dict(hidden_size=64, num_attention_heads=1, intermediate_size=128, num_labels=35, layer_norm_eps=1e-6)
    return tiny_model(builtin=True, seed=2, **{**fields, **overrides})


def authors_state_dict(hub: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The authors' layout, by hand: module.v.* (timm DeiT, with its unused image heads) + module.mlp_head.{0,1}."""
    encoder = {k[len("audio_spectrogram_transformer."):]: v for k, v in hub.items()
               if k.startswith("audio_spectrogram_transformer.")}
    timm = timm_from_hub(encoder, prefix="")
    timm.update({"head.weight": torch.randn(1000, 64), "head.bias": torch.zeros(1000),
                 "head_dist.weight": torch.randn(1000, 64), "head_dist.bias": torch.zeros(1000)})
    state = {f"module.v.{k}": v for k, v in timm.items()}
    state.update({"module.mlp_head.0.weight": hub["classifier.layernorm.weight"],
                  "module.mlp_head.0.bias": hub["classifier.layernorm.bias"],
                  "module.mlp_head.1.weight": hub["classifier.dense.weight"],
                  "module.mlp_head.1.bias": hub["classifier.dense.bias"]})
    return state


def test_authors_checkpoint_converts_with_the_same_logits(tmp_path, speech):
    reference = builtin_ast()  # hidden 64 -> 1 head by the hidden/64 rule, as in the authors' base models
    reference.save_pretrained(tmp_path / "builtin")
    authors = authors_state_dict(hub_tensors(tmp_path / "builtin"))
    torch.save(authors, tmp_path / "speechcommands_10_10.pth")
    out = tmp_path / "ast"
    assert original_cli.main(["--checkpoint", str(tmp_path / "speechcommands_10_10.pth"), "--dataset",
                              "speechcommands", "--output_dir", str(out)]) == 0
    model = ast_hf.ASTForAudioClassification.from_pretrained(out).eval()
    assert model.config.id2label[0] == "backward" and model.config.num_labels == 35
    # The authors' model: timm blocks (LayerNorm eps 1e-6), head nn.LayerNorm(768) (PyTorch's 1e-5).
    assert (model.config.layer_norm_eps, model.classifier.layernorm.eps) == (1e-6, 1e-5)
    extractor = ast_hf.ASTFeatureExtractor.from_pretrained(out)
    assert (extractor.mean, extractor.std, extractor.max_length) == (-6.845978, 5.5654526, 128)
    # Their dataloader: waveform - waveform.mean(), then the fbank padded/cut to the target length.
    saved = json.loads((out / "preprocessor_config.json").read_text())
    assert saved["subtract_waveform_mean"] is True and saved["pad_to_max_length"] is True
    features = extractor(speech, sampling_rate=16000, return_tensors="pt")
    assert features["input_values"].shape == (len(speech), 128, 128)
    timm = {k[len("module.v."):]: v for k, v in authors.items() if k.startswith("module.v.")}
    head = {"classifier.layernorm.weight": authors["module.mlp_head.0.weight"],
            "classifier.layernorm.bias": authors["module.mlp_head.0.bias"],
            "classifier.dense.weight": authors["module.mlp_head.1.weight"],
            "classifier.dense.bias": authors["module.mlp_head.1.bias"]}
    with torch.no_grad():
        logits = model(**features).logits
        theirs = reference_forward(timm, head, timm["pos_embed"], features["input_values"], (10, 10), heads=1,
                                   eps=1e-6, head_eps=1e-5)
        timm_eps_head = reference_forward(timm, head, timm["pos_embed"], features["input_values"], (10, 10), heads=1,
                                          eps=1e-6)
        torch.testing.assert_close(logits, theirs, rtol=0, atol=2e-6)  # ~2e-7; with the head at 1e-6 it was ~4e-5
        assert (timm_eps_head - theirs).abs().max() > 1e-5  # the head's eps is visible at this tolerance
        torch.testing.assert_close(logits, reference.eval()(**features).logits, rtol=0, atol=1e-4)


def test_audioset_settings_make_a_multi_label_model(tmp_path):
    reference = builtin_ast(num_labels=527, max_length=1024)
    reference.save_pretrained(tmp_path / "builtin")
    torch.save({"state_dict": authors_state_dict(hub_tensors(tmp_path / "builtin"))}, tmp_path / "audioset.pth")
    assert original_cli.main(["--checkpoint", str(tmp_path / "audioset.pth"), "--dataset", "audioset",
                              "--output_dir", str(tmp_path / "ast")]) == 0
    config = ast_hf.ASTConfig.from_pretrained(tmp_path / "ast")
    assert config.problem_type == "multi_label_classification" and config.id2label[0] == "Speech"
    # The wrong data set for the head is refused, and nothing is written.
    assert original_cli.main(["--checkpoint", str(tmp_path / "audioset.pth"), "--dataset", "esc50",
                              "--output_dir", str(tmp_path / "wrong")]) == 2
    assert not (tmp_path / "wrong").exists()


def test_builtin_ast_is_resaved_as_ast_hf(tmp_path, speech):
    reference = builtin_ast(layer_norm_eps=1e-12, num_attention_heads=4)
    reference.save_pretrained(tmp_path / "mit")
    transformers.ASTFeatureExtractor(max_length=128, mean=-6.845978, std=5.5654526).save_pretrained(tmp_path / "mit")
    assert original_cli.main(["--checkpoint", str(tmp_path / "mit"), "--output_dir", str(tmp_path / "ours")]) == 0
    model = transformers.AutoModelForAudioClassification.from_pretrained(tmp_path / "ours").eval()
    assert type(model).__module__ == "ast_hf.modeling_ast"
    extractor = transformers.AutoFeatureExtractor.from_pretrained(tmp_path / "ours")
    assert type(extractor).__module__ == "ast_hf.feature_extraction_ast" and extractor.mean == -6.845978
    features = extractor(speech, sampling_rate=16000, return_tensors="pt")
    with torch.no_grad():
        torch.testing.assert_close(model(**features).logits, reference.eval()(**features).logits, rtol=0, atol=1e-4)


# ---- re-targeting --------------------------------------------------------------------------------------------------


def trained_ast(**overrides) -> ast_hf.ASTForAudioClassification:
    """A one-layer AST with the AudioSet model's 1024-frame grid, as if trained."""
    return tiny_model(seed=4, **{"num_hidden_layers": 1, "num_labels": 4, "max_length": 1024, **overrides})


@pytest.mark.parametrize("changes, grid", [(dict(max_length=128), (12, 12)), (dict(max_length=2048), (12, 204)),
                                           (dict(num_mel_bins=64), (5, 101)), (dict(num_mel_bins=256), (25, 101)),
                                           (dict(max_length=512, time_stride=12, frequency_stride=12), (10, 42))])
def test_retarget_grid_against_hand_computed_values(changes, grid):
    source = trained_ast()
    model = convert.retarget_model(source, **changes)
    assert model.config.patch_grid == grid
    ours = model.state_dict()[checkpoint_surgery.PREFIX + "embeddings.position_embeddings"]
    stored = source.state_dict()[checkpoint_surgery.PREFIX + "embeddings.position_embeddings"]
    expected = expected_positions(stored, *grid, old=(12, 101))  # centre cut 50 - t//2 / 6 - f//2, or interpolate
    np.testing.assert_allclose(ours[0].double().numpy(), expected, rtol=0, atol=1e-5)
    # Same labels: the head and the encoder are kept.
    for key in ("classifier.dense.weight", checkpoint_surgery.PREFIX + "encoder.layer.0.intermediate.dense.weight"):
        assert torch.equal(model.state_dict()[key], source.state_dict()[key])
    model(torch.randn(1, model.config.max_length, model.config.num_mel_bins))  # runs at the new size


def test_retarget_with_new_labels_gets_a_new_head_and_cli_writes_it(tmp_path):
    source = trained_ast()
    source.save_pretrained(tmp_path / "src")
    (tmp_path / "words.txt").write_text("yes\nno\nup\n")
    assert retarget_cli.main(["--model", str(tmp_path / "src"), "--output_dir", str(tmp_path / "out"),
                              "--labels_file", str(tmp_path / "words.txt"), "--max_length", "128",
                              "--num_mel_bins", "64"]) == 0
    model = ast_hf.ASTForAudioClassification.from_pretrained(tmp_path / "out")
    assert model.config.id2label == {0: "yes", 1: "no", 2: "up"} and model.config.patch_grid == (5, 12)
    assert model.classifier.dense.weight.shape == (3, 32)
    extractor = ast_hf.ASTFeatureExtractor.from_pretrained(tmp_path / "out")
    assert (extractor.max_length, extractor.num_mel_bins) == (128, 64)


# ---- bad input ----------------------------------------------------------------------------------------------------


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith(".out"))


def test_bad_sources_give_clear_errors_and_no_output(deit_dir, tmp_path, capsys):
    timm = timm_from_hub(hub_tensors(deit_dir))
    torch.save(timm, tmp_path / "good.pth")
    data = (tmp_path / "good.pth").read_bytes()
    (tmp_path / "truncated.pth").write_bytes(data[: len(data) // 2])
    (tmp_path / "text.pth").write_text("not a checkpoint")
    torch.save({"optimizer": {"lr": 0.1}}, tmp_path / "no_tensors.pth")
    torch.save({"foo.weight": torch.zeros(3)}, tmp_path / "other_model.pth")
    save_file({"x": torch.zeros(2)}, str(tmp_path / "small.safetensors"))
    (tmp_path / "cut.safetensors").write_bytes((tmp_path / "small.safetensors").read_bytes()[:20])
    cases = [
        (["--deit", str(tmp_path / "missing.pth")], "does not exist"),
        (["--deit", str(tmp_path / "truncated.pth")], "truncated"),
        (["--deit", str(tmp_path / "text.pth")], "Could not read"),
        (["--deit", str(tmp_path / "no_tensors.pth")], "no state dict of tensors"),
        (["--deit", str(tmp_path / "other_model.pth")], "Unrecognised checkpoint"),
        (["--deit", str(tmp_path / "cut.safetensors")], "not a readable safetensors"),
        (["--deit", str(tmp_path / "good.pth"), "--num_attention_heads", "5"], "does not divide hidden_size=32"),
        (["--deit", str(deit_dir), "--num_attention_heads", "8"], "contradicts the source config"),
    ]
    for arguments, message in cases:
        code = deit_cli.main([*arguments, "--output_dir", str(tmp_path / "out"), "--num_labels", "2"])
        error = capsys.readouterr().err
        assert code == 2 and message in error, (arguments, error)
        assert not (tmp_path / "out").exists() and leftovers(tmp_path) == []
    code = deit_cli.main(["--deit", str(tmp_path / "good.pth"), "--output_dir", str(tmp_path / "out")])
    assert code == 2 and "--num_labels N" in capsys.readouterr().err
    assert original_cli.main(["--checkpoint", str(tmp_path / "good.pth"), "--dataset", "esc50",
                              "--output_dir", str(tmp_path / "out")]) == 2
    assert "not the authors' AST" in capsys.readouterr().err and not (tmp_path / "out").exists()


def test_existing_output_is_not_overwritten_without_asking(deit_dir, tmp_path, capsys):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "keep.txt").write_text("mine")
    arguments = ["--deit", str(deit_dir), "--output_dir", str(tmp_path / "out"), "--num_labels", "2"]
    assert deit_cli.main(arguments) == 2 and "--overwrite" in capsys.readouterr().err
    assert (tmp_path / "out" / "keep.txt").exists()
    assert deit_cli.main([*arguments, "--overwrite"]) == 0
    assert not (tmp_path / "out" / "keep.txt").exists() and (tmp_path / "out" / "model.safetensors").exists()
    assert leftovers(tmp_path) == []


def test_a_failure_inside_the_write_leaves_nothing(tmp_path):
    with pytest.raises(RuntimeError), convert.atomic_directory(tmp_path / "out") as staging:
        (staging / "config.json").write_text("{}")
        raise RuntimeError("disk full")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.slow
def test_converter_pushes_to_a_local_hub(deit_dir, tmp_path):
    from fake_hub import serve

    server, url = serve(tmp_path / "hub")
    env = {**os.environ, "HF_ENDPOINT": url, "HF_TOKEN": "hf_local_test", "HF_HUB_DISABLE_XET": "1",
           "HF_HOME": str(tmp_path / "hf_home")}
    try:
        done = subprocess.run([sys.executable, str(ROOT / "conversion" / "convert_deit_to_ast.py"), "--deit",
                               str(deit_dir), "--output_dir", str(tmp_path / "out"), "--dataset", "esc50",
                               "--push_to_hub", "tester/ast-from-deit"], capture_output=True, text=True, env=env,
                              timeout=300)
        assert done.returncode == 0, done.stderr[-3000:]
        repo = tmp_path / "hub" / "tester" / "ast-from-deit"
        for name in ("model.safetensors", "config.json", "modeling_ast.py", "preprocessor_config.json"):
            assert (repo / name).is_file(), name
        assert load_file(str(repo / "model.safetensors")).keys() == hub_tensors(tmp_path / "out").keys()
    finally:
        server.shutdown()


def test_one_regression_target_through_the_converters(deit_dir, tmp_path, capsys):
    """--num_labels 1 is a single regression target (MSE) when --problem_type regression says so; without it the
    converters refuse it and name the option."""
    out = tmp_path / "regression"
    assert deit_cli.main(["--deit", str(deit_dir), "--output_dir", str(out), "--num_labels", "1", "--problem_type",
                          "regression", "--max_length", "128"]) == 0
    model = ast_hf.ASTForAudioClassification.from_pretrained(out).eval()
    assert (model.config.num_labels, model.config.problem_type) == (1, "regression")
    inputs, targets = torch.randn(2, 128, 128), torch.tensor([[0.5], [-1.0]])
    output = model(inputs, labels=targets)
    torch.testing.assert_close(output.loss, F.mse_loss(output.logits, targets))
    assert retarget_cli.main(["--model", str(out), "--output_dir", str(tmp_path / "retargeted"), "--num_labels", "1",
                              "--problem_type", "regression", "--max_length", "64"]) == 0
    retargeted = ast_hf.ASTConfig.from_pretrained(tmp_path / "retargeted")
    assert (retargeted.num_labels, retargeted.problem_type, retargeted.max_length) == (1, "regression", 64)
    capsys.readouterr()
    for main, source in ((deit_cli.main, ["--deit", str(deit_dir)]), (retarget_cli.main, ["--model", str(out)])):
        assert main([*source, "--output_dir", str(tmp_path / "refused"), "--num_labels", "1"]) == 2
        assert "--problem_type regression" in capsys.readouterr().err and not (tmp_path / "refused").exists()
    (tmp_path / "one.txt").write_text("loudness\n")
    assert deit_cli.main(["--deit", str(deit_dir), "--output_dir", str(tmp_path / "named"), "--labels_file",
                          str(tmp_path / "one.txt"), "--problem_type", "regression", "--max_length", "128"]) == 0
    assert ast_hf.ASTConfig.from_pretrained(tmp_path / "named").id2label == {0: "loudness"}


def test_a_non_empty_output_dir_is_refused_before_reading_anything(deit_dir, tmp_path, capsys):
    """The converters refused a non-empty --output_dir only after converting; now before any source is read."""
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "keep.txt").write_text("mine")
    bogus = str(tmp_path / "no_such_checkpoint.pth")
    runs = [(deit_cli.main, ["--deit", bogus, "--num_labels", "2"]), (deit_cli.main, ["--deit", str(deit_dir),
                                                                                     "--num_labels", "2"]),
            (original_cli.main, ["--checkpoint", bogus, "--dataset", "esc50"]),
            (retarget_cli.main, ["--model", bogus, "--num_labels", "2"])]
    for main, arguments in runs:
        assert main([*arguments, "--output_dir", str(tmp_path / "out")]) == 2
        captured = capsys.readouterr()
        assert "exists and is not empty; pass --overwrite" in captured.err and "does not exist" not in captured.err
        assert captured.out == ""  # nothing read ("read N tensors from ...") and nothing converted
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["keep.txt"]


def test_a_swin_checkpoint_is_named_as_such(tmp_path, capsys):
    """A Swin (config model_type "swin", or Swin tensor names) was reported by an unexpected tensor name."""
    config = transformers.SwinConfig(image_size=32, patch_size=4, embed_dim=8, depths=[1, 1], num_heads=[1, 2],
                                     window_size=2)
    swin = randomize(transformers.SwinModel(config))
    swin.save_pretrained(tmp_path / "swin")
    torch.save(swin.state_dict(), tmp_path / "swin_state_dict.pth")  # transformers 5's in-memory names
    timm_names = {"patch_embed.proj.weight": torch.zeros(8, 3, 4, 4), "patch_embed.proj.bias": torch.zeros(8),
                  "layers.0.blocks.0.attn.relative_position_bias_table": torch.zeros(9, 1),
                  "layers.0.blocks.0.attn.qkv.weight": torch.zeros(24, 8)}
    torch.save(timm_names, tmp_path / "swin_timm.pth")
    expected = "this is a Swin model; AST needs a ViT/DeiT checkpoint (e.g. facebook/deit-base-distilled-patch16-384)"
    runs = [(deit_cli.main, ["--deit", str(tmp_path / "swin"), "--num_labels", "2"], "model_type 'swin'"),
            (deit_cli.main, ["--deit", str(tmp_path / "swin_state_dict.pth"), "--num_labels", "2"], "blocks.0"),
            (deit_cli.main, ["--deit", str(tmp_path / "swin_timm.pth"), "--num_labels", "2"],
             "layers.0.blocks.0.attn"),
            (original_cli.main, ["--checkpoint", str(tmp_path / "swin"), "--dataset", "esc50"], "'swin' model"),
            (original_cli.main, ["--checkpoint", str(tmp_path / "swin_timm.pth"), "--dataset", "esc50"], "Swin")]
    for main, arguments, found in runs:
        assert main([*arguments, "--output_dir", str(tmp_path / "out")]) == 2, arguments
        error = capsys.readouterr().err
        assert expected in error and found in error, (arguments, error)
        assert not (tmp_path / "out").exists()
