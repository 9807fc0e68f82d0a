"""ASTModel / ASTForAudioClassification against transformers' built-in AST and hand-computed values."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import transformers
from conftest import randomize, tiny_config, tiny_model

import ast_hf
from ast_hf.patch_grid import resample_patch_grid, resample_position_embeddings


def builtin_model(**overrides) -> transformers.ASTForAudioClassification:
    return tiny_model(builtin=True, **overrides)


@pytest.mark.parametrize("implementation", ["eager", "sdpa"])
@pytest.mark.parametrize("stride, max_length", [(10, 1024), (12, 1024), (10, 128), (12, 128)])
def test_loads_builtin_checkpoint_with_same_logits(tmp_path, implementation, stride, max_length):
    theirs = builtin_model(frequency_stride=stride, time_stride=stride, max_length=max_length)
    theirs.save_pretrained(tmp_path)
    ours = ast_hf.ASTForAudioClassification.from_pretrained(tmp_path, attn_implementation=implementation).eval()
    assert ours.config.model_type == "ast_hf" and ours.config.max_length == max_length
    inputs = torch.randn(2, max_length, 128)
    with torch.no_grad():
        torch.testing.assert_close(ours(inputs).logits, theirs(inputs).logits, rtol=0, atol=1e-4)


@pytest.mark.parametrize("implementation", ["eager", "sdpa"])
def test_builtin_class_loads_our_checkpoint_with_same_logits(tmp_path, implementation):
    ours = tiny_model(frequency_stride=12, time_stride=12)
    ours.save_pretrained(tmp_path)
    theirs = transformers.ASTForAudioClassification.from_pretrained(tmp_path, attn_implementation=implementation)
    assert type(theirs).__module__.startswith("transformers.")
    inputs = torch.randn(3, 128, 128)
    with torch.no_grad():
        torch.testing.assert_close(theirs.eval()(inputs).logits, ours(inputs).logits, rtol=0, atol=1e-4)


def test_hub_key_names_on_disk(tmp_path):
    from safetensors import safe_open

    ast_hf.ASTForAudioClassification(tiny_config()).save_pretrained(tmp_path)
    with safe_open(tmp_path / "model.safetensors", "pt") as handle:
        keys = set(handle.keys())
    prefix = "audio_spectrogram_transformer."
    for key in ("embeddings.cls_token", "embeddings.distillation_token", "embeddings.position_embeddings",
                "embeddings.patch_embeddings.projection.weight", "encoder.layer.1.attention.attention.query.weight",
                "encoder.layer.0.attention.output.dense.bias", "encoder.layer.0.intermediate.dense.weight",
                "encoder.layer.0.output.dense.weight", "encoder.layer.0.layernorm_before.weight",
                "encoder.layer.0.layernorm_after.bias", "layernorm.weight"):
        assert prefix + key in keys
    assert {"classifier.layernorm.weight", "classifier.dense.weight"} <= keys


def test_positional_rule_by_hand():
    grid = torch.arange(2 * 3 * 4, dtype=torch.float32).reshape(1, 2, 3, 4)  # (1, D=2, f=3, t=4)
    assert resample_patch_grid(grid, (3, 4)) is grid
    torch.testing.assert_close(resample_patch_grid(grid, (2, 3)), grid[:, :, :2, :3])
    torch.testing.assert_close(resample_patch_grid(grid, (1, 2), crop="center"), grid[:, :, 1:2, 1:3])
    # Bilinear, align_corners=False, along time only: output column j samples x = (j + 0.5) * 4 / 8 - 0.5.
    wide = resample_patch_grid(grid, (3, 8))
    row = grid[0, 0, 0].numpy()
    x = np.clip((np.arange(8) + 0.5) * 4 / 8 - 0.5, 0, 3)
    np.testing.assert_allclose(wide[0, 0, 0].numpy(), np.interp(x, np.arange(4), row), atol=1e-6)
    # Prefix tokens are kept, patch rows are frequency-major.
    embeddings = torch.randn(1, 2 + 3 * 4, 5)
    out = resample_position_embeddings(embeddings, (3, 4), (2, 2))
    torch.testing.assert_close(out[:, :2], embeddings[:, :2])
    torch.testing.assert_close(out[0, 2:].reshape(2, 2, 5), embeddings[0, 2:].reshape(3, 4, 5)[:2, :2])


def test_any_length_runs_at_the_configured_mel_size_and_stored_grid_is_unchanged():
    """Frames may vary; the mel count is the config's (a model for 64 or 160 bins is built as such)."""
    for mels in (128, 64, 160):
        model = tiny_model(num_mel_bins=mels)
        stored = model.audio_spectrogram_transformer.embeddings.position_embeddings
        with torch.no_grad():
            for frames in (16, 100, 128, 513):
                outputs = model(torch.randn(2, frames, mels), output_hidden_states=True)
                f, t = (mels - 16) // 10 + 1, (frames - 16) // 10 + 1
                assert outputs.logits.shape == (2, 5)
                assert outputs.hidden_states[-1].shape == (2, 2 + f * t, 32)
            used = model.audio_spectrogram_transformer.embeddings.position_embeddings_for(model.config.patch_grid)
            assert used is stored


def test_another_mel_count_is_refused_with_the_fix():
    """A (batch, mels, frames) tensor (torchaudio's layout) and the features of an extractor with another mel count
    used to run silently (128 frames x 300 mel bins); now each is a ValueError with the shape and the fix."""
    model = tiny_model()  # 128 mel bins
    with pytest.raises(ValueError) as transposed:
        model(torch.randn(1, 128, 300))
    message = str(transposed.value)
    assert "(1, 128, 300)" in message and "(batch, frames, num_mel_bins) = (batch, frames, 128)" in message
    assert "looks like (batch, mels, frames): transpose it with input_values.transpose(1, 2)" in message
    assert model(torch.randn(1, 128, 300).transpose(1, 2)).logits.shape == (1, 5)
    speech = np.sin(np.arange(32000) / 10.0).astype(np.float32)
    for max_length, transpose_hint in ((200, False), (128, True)):  # 128 frames could also be a transposed input
        extractor = ast_hf.ASTFeatureExtractor(num_mel_bins=64, max_length=max_length)
        with pytest.raises(ValueError) as other:
            model(**extractor(speech, sampling_rate=16000, return_tensors="pt", truncation=True))
        message = str(other.value)
        assert f"(1, {max_length}, 64): 64 mel bins" in message and "ASTFeatureExtractor(num_mel_bins=128)" in message
        assert "from_pretrained of the same checkpoint" in message and ("transpose" in message) == transpose_hint
    with pytest.raises(ValueError, match="transpose"):
        ast_hf.ASTModel(tiny_config())(torch.randn(2, 128, 100), attention_mask=torch.ones(2, 128))


@pytest.mark.parametrize("implementation", ["eager", "sdpa"])
def test_padded_batch_equals_each_clip_alone(speech, implementation):
    extractor = ast_hf.ASTFeatureExtractor(max_length=128)
    for max_length in (128, 64):  # stored grid longer than the batch, and shorter (interpolated)
        model = ast_hf.ASTForAudioClassification._from_config(tiny_config(max_length=max_length),
                                                              attn_implementation=implementation)
        assert model.config._attn_implementation == implementation
        randomize(model)
        batch = extractor(speech, sampling_rate=16000, padding="longest", max_length=400, return_tensors="pt",
                          return_attention_mask=True)
        assert len(set(batch["attention_mask"].sum(1).tolist())) == len(speech)
        with torch.no_grad():
            together = model(**batch).logits
            for i, clip in enumerate(speech):
                alone = extractor(clip, sampling_rate=16000, padding="longest", max_length=400, return_tensors="pt")
                torch.testing.assert_close(together[i], model(**alone).logits[0], rtol=0, atol=1e-4)
            # Without the mask the padding changes the answer: the mask is doing the work.
            assert (model(batch["input_values"]).logits - together).abs().max() > 1e-3


@pytest.mark.slow
def test_attention_kernels_switch_at_run_time_and_agree(speech, tmp_path):
    """eager, sdpa and flex attention (compiled by torch on CPU) give the same logits on a padded batch; a clip's
    logits equal its logits alone; output_attentions falls back to eager with the right mask under every kernel."""
    extractor = ast_hf.ASTFeatureExtractor(max_length=128)
    clips = speech[:2]
    batch = extractor(clips, sampling_rate=16000, padding="longest", max_length=300, return_tensors="pt",
                      return_attention_mask=True)
    assert batch["attention_mask"][0].sum() < batch["attention_mask"][1].sum() == batch["attention_mask"].shape[1]
    alone = extractor(clips[0], sampling_rate=16000, padding="longest", return_tensors="pt")
    model = randomize(ast_hf.ASTForAudioClassification._from_config(tiny_config(), attn_implementation="eager"))
    model.save_pretrained(tmp_path)
    with torch.no_grad():
        reference = model(**batch, output_attentions=True)
        for implementation in ("sdpa", "flex_attention", "eager"):
            model.set_attn_implementation(implementation)
            assert model.config._attn_implementation == implementation
            torch.testing.assert_close(model(**batch).logits, reference.logits, rtol=0, atol=1e-5)
            torch.testing.assert_close(model(**alone).logits[0], reference.logits[0], rtol=0, atol=1e-4)
            weights = model(**batch, output_attentions=True).attentions
            for ours, expected in zip(weights, reference.attentions, strict=True):
                torch.testing.assert_close(ours, expected, rtol=0, atol=1e-6)
        loaded = ast_hf.ASTForAudioClassification.from_pretrained(tmp_path, attn_implementation="flex_attention")
        assert loaded.config._attn_implementation == "flex_attention"
        torch.testing.assert_close(loaded(**batch).logits, reference.logits, rtol=0, atol=1e-5)
    padded_keys = reference.attentions[0][0, :, :, -10:]  # clip 0's last time patches are padding
    assert padded_keys.abs().max() == 0


def test_losses_match_torch_functions():
    torch.manual_seed(0)
    inputs = torch.randn(3, 64, 128)
    labels = {"single_label_classification": torch.tensor([0, 4, 2]),
              "multi_label_classification": (torch.rand(3, 5) > 0.5).float(),
              "regression": torch.randn(3, 5)}
    expected = {"single_label_classification": F.cross_entropy,
                "multi_label_classification": F.binary_cross_entropy_with_logits, "regression": F.mse_loss}
    for problem_type, target in labels.items():
        model = tiny_model(problem_type=problem_type)
        out = model(inputs, labels=target)
        torch.testing.assert_close(out.loss, expected[problem_type](out.logits, target))
    with pytest.raises(ValueError, match="multi-hot labels"):
        model = ast_hf.ASTForAudioClassification(tiny_config(problem_type="multi_label_classification"))
        model(inputs, labels=torch.tensor([0, 1, 2]))


def test_outputs_tuple_attentions_and_gradient_checkpointing():
    model = tiny_model()
    inputs = torch.randn(2, 128, 128)
    out = model(inputs, output_attentions=True, output_hidden_states=True)
    assert len(out.attentions) == 2 and out.attentions[0].shape == (2, 4, 146, 146)
    torch.testing.assert_close(out.attentions[0].sum(-1), torch.ones(2, 4, 146))
    assert len(out.hidden_states) == 3
    as_tuple = model(inputs, return_dict=False)
    torch.testing.assert_close(as_tuple[0], out.logits)
    base = ast_hf.ASTModel(tiny_config())
    sequence, pooled = base(inputs, return_dict=False)[:2]
    torch.testing.assert_close(pooled, (sequence[:, 0] + sequence[:, 1]) / 2)

    model.train()
    labels = torch.tensor([1, 3])
    model(inputs, labels=labels).loss.backward()
    plain = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    # transformers 5.2x renamed it; gradient_checkpointing_enable is a deprecated alias there (FutureWarning).
    enable = getattr(model, "activation_checkpointing_enable", None) or model.gradient_checkpointing_enable
    enable()
    assert all(layer.gradient_checkpointing for layer in model.audio_spectrogram_transformer.encoder.layer)
    model(inputs, labels=labels).loss.backward()
    for a, p in zip(plain, model.parameters(), strict=True):
        torch.testing.assert_close(p.grad, a, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize(
    "inputs, error, words",
    [
        (torch.randn(128, 128), ValueError, "unsqueeze"),
        (torch.randn(1, 1, 128, 128), ValueError, "batch, frames, mel bins"),
        (np.zeros((1, 128, 128), np.float32), TypeError, "return_tensors='pt'"),
        (torch.zeros(1, 128, 128, dtype=torch.long), TypeError, "float"),
        (torch.randn(1, 10, 128), ValueError, "at least 16 frames"),
        (torch.randn(1, 128, 10), ValueError, "transpose it"),
        (torch.randn(1, 200, 64), ValueError, r"num_mel_bins=128\)"),
    ],
)
def test_bad_model_input(inputs, error, words):
    with pytest.raises(error, match=words):
        ast_hf.ASTModel(tiny_config())(inputs)


def test_bad_attention_mask_and_config():
    with pytest.raises(ValueError, match="attention_mask has shape"):
        ast_hf.ASTModel(tiny_config())(torch.randn(2, 64, 128), attention_mask=torch.ones(2, 50))
    config = ast_hf.ASTConfig(hidden_size=100)  # checked when a model is built (or the config saved), not before
    with pytest.raises(ValueError, match="not a multiple of num_attention_heads"):
        ast_hf.ASTModel(config)


# ---- outputs, keyword arguments and loss the transformers 5 way -----------------------------------------------------


def test_hidden_state_selection_and_tuples_as_the_builtin(tmp_path):
    """output_hidden_states may be a flag or indices (transformers 5's capture_outputs); ours and the built-in return
    the same entries, with None for the ones not selected."""
    theirs = builtin_model(max_length=128)
    theirs.save_pretrained(tmp_path)
    ours = ast_hf.ASTForAudioClassification.from_pretrained(tmp_path).eval()
    inputs = torch.randn(2, 128, 128)
    with torch.no_grad():
        for selection in (True, [0, 2], -1, 1):
            mine, builtin = (m(inputs, output_hidden_states=selection).hidden_states for m in (ours, theirs))
            assert [h is None for h in mine] == [h is None for h in builtin], selection
            for a, b in zip(mine, builtin, strict=True):
                if a is not None:
                    torch.testing.assert_close(a, b, rtol=0, atol=1e-4)
        mine, builtin = (m(inputs, output_hidden_states=True, return_dict=False) for m in (ours, theirs))
        assert len(mine) == len(builtin) == 2 and len(mine[1]) == 3
        base = ast_hf.ASTModel.from_pretrained(tmp_path)
        as_tuple = base(inputs, output_hidden_states=[1], return_dict=False)
        assert len(as_tuple) == 3 and as_tuple[2][0] is None and as_tuple[2][1] is not None


def test_extra_keyword_arguments_reach_the_attention_kernel(speech):
    """Unknown keyword arguments are passed on to the attention function, as in transformers' ViT/AST, not refused."""
    from transformers import AttentionInterface
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    seen = []

    def recording_sdpa(module, query, key, value, attention_mask, **kwargs):
        seen.append(kwargs)
        return sdpa_attention_forward(module, query, key, value, attention_mask, **kwargs)

    AttentionInterface.register("ast_hf_test_recording_sdpa", recording_sdpa)
    model = tiny_model()
    inputs = torch.randn(2, 128, 128)
    with torch.no_grad():
        expected = model(inputs).logits
        model.set_attn_implementation("ast_hf_test_recording_sdpa")
        logits = model(inputs, kernel_note="hello", interpolate_pos_encoding=True).logits
    torch.testing.assert_close(logits, expected, rtol=0, atol=1e-5)
    assert len(seen) == 2 and all(kwargs["kernel_note"] == "hello" for kwargs in seen)
    builtin = builtin_model(max_length=128).eval()
    with torch.no_grad():
        builtin(inputs, kernel_note="hello")  # the built-in takes them the same way


def test_loss_goes_through_loss_function_with_each_batchs_problem_type():
    """self.loss_function (transformers' ForSequenceClassificationLoss) computes the loss; the problem type of each
    batch is resolved first and given on a copy, so the model's config is not fixed by the first batch."""
    model = tiny_model()
    calls = []
    builtin_loss = model.loss_function

    def recording(labels, logits, config, **kwargs):
        calls.append((config.problem_type, labels.dtype))
        return builtin_loss(labels, logits, config, **kwargs)

    model.loss_function = recording
    inputs = torch.randn(2, 64, 128)
    indices = torch.tensor([4, 1], dtype=torch.int16)
    out = model(inputs, labels=indices)
    torch.testing.assert_close(out.loss, F.cross_entropy(out.logits, indices.long()))
    multi_hot = torch.tensor([[1.0, 0, 0, 1, 0], [0, 0, 1, 0, 0]])
    out = model(inputs, labels=multi_hot)
    torch.testing.assert_close(out.loss, F.binary_cross_entropy_with_logits(out.logits, multi_hot))
    assert calls == [("single_label_classification", torch.long), ("multi_label_classification", torch.float32)]
    assert model.config.problem_type is None
    # transformers' loss keywords reach it: a sum over the batch divided by num_items_in_batch.
    out = model(inputs, labels=torch.tensor([4, 1]), num_items_in_batch=torch.tensor(4))
    torch.testing.assert_close(out.loss, F.cross_entropy(out.logits, torch.tensor([4, 1]), reduction="sum") / 4)
    # Soft targets (mixup), which transformers' loss does not take, are cross-entropy against probabilities.
    model.config.problem_type = "single_label_classification"
    soft = torch.tensor([[0.5, 0.5, 0, 0, 0], [0, 0, 0.2, 0, 0.8]])
    out = model(inputs, labels=soft)
    torch.testing.assert_close(out.loss, -(soft * out.logits.log_softmax(-1)).sum(-1).mean())
    assert len(calls) == 3


# ---- Patchout -------------------------------------------------------------------------------------------------------


def test_patchout_keeps_the_positions_of_the_kept_patches():
    """After Patchout each kept token is its patch's projection plus the positional embedding of that patch's place
    in the full grid (computed here by hand, without Patchout); whole time columns and frequency rows are dropped."""
    model = randomize(ast_hf.ASTModel(tiny_config(patchout_time=3, patchout_frequency=2)))  # grid 12 x 12
    embeddings = model.embeddings
    inputs = torch.randn(2, 128, 128)
    with torch.no_grad():
        patches = embeddings.patch_embeddings.projection(inputs.transpose(1, 2)[:, None])  # (2, D, 12, 12)
        by_hand = patches.flatten(2).transpose(1, 2) + embeddings.position_embeddings[:, 2:]  # (2, 144, D)
        model.train()
        kept = model(inputs, output_hidden_states=True).hidden_states[0]  # the tokens entering the first layer
    assert kept.shape == (2, 2 + 10 * 9, 32)
    prefix = torch.cat([embeddings.cls_token, embeddings.distillation_token], dim=1)
    prefix = prefix + embeddings.position_embeddings[:, :2]
    torch.testing.assert_close(kept[:, :2], prefix.expand(2, -1, -1), rtol=0, atol=1e-6)
    distances = (kept[0, 2:, None, :] - by_hand[0, None, :, :]).abs().amax(-1)  # (90, 144)
    assert bool((distances.min(dim=1).values < 1e-5).all())
    places = distances.argmin(dim=1)
    rows, columns = sorted(set((places // 12).tolist())), sorted(set((places % 12).tolist()))
    assert len(rows) == 10 and len(columns) == 9
    assert places.tolist() == [f * 12 + t for f in rows for t in columns]  # frequency-major, in order
    torch.testing.assert_close(kept[1, 2:], by_hand[1, places], rtol=0, atol=1e-5)  # the same patches in every clip


def test_patchout_never_drops_patches_in_eval_mode(speech):
    with_patchout = randomize(ast_hf.ASTModel(tiny_config(patchout_time=3, patchout_frequency=2))).eval()
    without = ast_hf.ASTModel(tiny_config()).eval()
    without.load_state_dict(with_patchout.state_dict())
    extractor = ast_hf.ASTFeatureExtractor(max_length=128)
    batch = extractor(speech[:2], sampling_rate=16000, padding="longest", max_length=300, return_tensors="pt",
                      return_attention_mask=True)
    grid_f, grid_t = with_patchout.config.patch_grid_for(batch["input_values"].shape[1])
    with torch.no_grad():
        for _ in range(3):
            on, off = with_patchout(**batch), without(**batch)
            assert on.last_hidden_state.shape == off.last_hidden_state.shape == (2, 2 + grid_f * grid_t, 32)
            torch.testing.assert_close(on.last_hidden_state, off.last_hidden_state, rtol=0, atol=0)
    tokens = torch.randn(2, 2 + grid_f * grid_t, 32)
    assert with_patchout.patchout(tokens, (grid_f, grid_t))[0] is tokens


def test_classifier_layer_norm_eps_defaults_to_layer_norm_eps(tmp_path):
    """The head's LayerNorm eps is its own field (the authors' head: 1e-5 on a 1e-6 encoder); unset, it is
    layer_norm_eps, so built-in checkpoints (no such field) load as before."""
    model = tiny_model(layer_norm_eps=1e-6, classifier_layer_norm_eps=1e-5)
    assert model.classifier.layernorm.eps == 1e-5
    assert {m.eps for n, m in model.named_modules() if isinstance(m, torch.nn.LayerNorm) and "classifier" not in n} \
        == {1e-6}
    builtin_model(layer_norm_eps=1e-6).save_pretrained(tmp_path)
    loaded = ast_hf.ASTForAudioClassification.from_pretrained(tmp_path)
    assert loaded.config.classifier_layer_norm_eps is None and loaded.classifier.layernorm.eps == 1e-6
    with pytest.raises(ValueError, match="classifier_layer_norm_eps=0 must be a small positive number"):
        tiny_config(classifier_layer_norm_eps=0)


@pytest.mark.parametrize("training", [False, True], ids=["eval", "train with Patchout"])
def test_the_forward_reads_no_values_back_from_a_device(training):
    """On an accelerator every value read back to the host (a NaN check, a label range check, "is there any
    padding?") is a device sync. On the meta device, which holds no values, any such read raises: the
    classification forward runs there with an attention mask and labels, so on a GPU it queues its work without
    waiting. (On the CPU the same values are checked, as the input tests show.)"""
    config = ast_hf.ASTConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
                              max_length=128, num_labels=5, patchout_time=2, patchout_frequency=1)
    model = ast_hf.ASTForAudioClassification(config).train(training).to("meta")
    input_values = torch.empty(2, 100, 128, device="meta")
    attention_mask = torch.ones(2, 100, dtype=torch.long, device="meta")
    for labels in (torch.zeros(2, dtype=torch.long, device="meta"), torch.zeros(2, 5, device="meta")):
        output = model(input_values, attention_mask=attention_mask, labels=labels)
        assert output.logits.shape == (2, 5) and output.loss.shape == ()
