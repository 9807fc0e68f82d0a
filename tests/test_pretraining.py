"""SSAST pretraining (ASTForPreTraining): its losses and accuracy against an independent implementation of the
authors' `mpc` / `mpg` on a state dict with their names (which is also the check of the conversion of their
checkpoints), the masking, the errors, and examples/run_pretraining.py on real audio through the Trainer (every
data source kind, streaming, resume after SIGKILL, torchrun), its checkpoint fine-tuned by both example scripts."""

from __future__ import annotations

import json
import math
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile
import torch
import torch.nn.functional as F
from conftest import load_conversion_script, speak
from safetensors.torch import load_file

import ast_hf
from ast_hf import ASTConfig, ASTForAudioClassification, ASTForPreTraining, ASTModel
from ast_hf.modeling_ast import sample_patch_mask

ROOT = Path(__file__).resolve().parents[1]
PRETRAIN = ROOT / "examples" / "run_pretraining.py"
TRAINER = ROOT / "examples" / "run_audio_classification.py"
LOOP = ROOT / "examples" / "run_audio_classification_no_trainer.py"


# ---- the authors' math, written independently ---------------------------------------------------------------

def authors_state_dict(hidden: int, layers: int, patch: tuple[int, int], fdim: int, tdim: int,
                       seed: int = 0) -> dict[str, torch.Tensor]:
    """A random SSAST pretraining state dict under the authors' names (a timm DeiT in `module.v`, fused qkv)."""
    generator = torch.Generator().manual_seed(seed)

    def rand(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=generator) * 0.2

    grid = (fdim // patch[0]) * (tdim // patch[1])
    state = {"module.v.cls_token": rand(1, 1, hidden), "module.v.dist_token": rand(1, 1, hidden),
             "module.v.pos_embed": rand(1, grid + 2, hidden),
             "module.v.patch_embed.proj.weight": rand(hidden, 1, *patch),
             "module.v.patch_embed.proj.bias": rand(hidden),
             "module.v.norm.weight": 1 + rand(hidden), "module.v.norm.bias": rand(hidden),
             "module.v.head.weight": rand(1000, hidden), "module.v.head.bias": rand(1000),
             "module.v.head_dist.weight": rand(1000, hidden), "module.v.head_dist.bias": rand(1000),
             "module.mask_embed": rand(1, 1, hidden),
             "module.p_input_fdim": torch.tensor(fdim), "module.p_input_tdim": torch.tensor(tdim)}
    for block in range(layers):
        prefix = f"module.v.blocks.{block}."
        state.update({prefix + "norm1.weight": 1 + rand(hidden), prefix + "norm1.bias": rand(hidden),
                      prefix + "attn.qkv.weight": rand(3 * hidden, hidden), prefix + "attn.qkv.bias": rand(3 * hidden),
                      prefix + "attn.proj.weight": rand(hidden, hidden), prefix + "attn.proj.bias": rand(hidden),
                      prefix + "norm2.weight": 1 + rand(hidden), prefix + "norm2.bias": rand(hidden),
                      prefix + "mlp.fc1.weight": rand(4 * hidden, hidden), prefix + "mlp.fc1.bias": rand(4 * hidden),
                      prefix + "mlp.fc2.weight": rand(hidden, 4 * hidden), prefix + "mlp.fc2.bias": rand(hidden)})
    for head in ("cpredlayer", "gpredlayer"):
        state.update({f"module.{head}.0.weight": rand(hidden, hidden), f"module.{head}.0.bias": rand(hidden),
                      f"module.{head}.2.weight": rand(patch[0] * patch[1], hidden),
                      f"module.{head}.2.bias": rand(patch[0] * patch[1])})
    return state


def authors_forward(state: dict[str, torch.Tensor], x: torch.Tensor, mask_index: torch.Tensor,
                    heads: int) -> tuple[float, float, float]:
    """SSAST's mpc (accuracy, InfoNCE) and mpg (MSE) for given mask indices, as their ast_models.py computes them:
    x (B, T, F) -> (B, 1, F, T), patches by nn.Unfold, the masked patch embeddings replaced by mask_embed before the
    tokens and positions, timm blocks, then per clip total = targets @ preds.T, nce = -mean diag log_softmax(-1),
    correct = argmax(softmax(total), dim=0) == arange, mse = mean((pred - target)^2)."""
    weight = state["module.v.patch_embed.proj.weight"]
    patch = tuple(weight.shape[-2:])
    batch, masked = mask_index.shape
    image = x.unsqueeze(1).transpose(2, 3)
    patches = torch.nn.Unfold(kernel_size=patch, stride=patch)(image).transpose(1, 2)
    tokens = F.conv2d(image, weight, state["module.v.patch_embed.proj.bias"], stride=patch).flatten(2).transpose(1, 2)
    keep = torch.ones_like(tokens)
    for i in range(batch):
        keep[i, mask_index[i], :] = 0
    tokens = tokens * keep + (1 - keep) * state["module.mask_embed"].expand(batch, tokens.shape[1], -1)
    prefix = [state["module.v.cls_token"].expand(batch, -1, -1), state["module.v.dist_token"].expand(batch, -1, -1)]
    h = torch.cat([*prefix, tokens], dim=1) + state["module.v.pos_embed"]
    hidden = h.shape[-1]
    block = 0
    while f"module.v.blocks.{block}.norm1.weight" in state:
        p = f"module.v.blocks.{block}."
        y = F.layer_norm(h, (hidden,), state[p + "norm1.weight"], state[p + "norm1.bias"], eps=1e-6)
        qkv = (y @ state[p + "attn.qkv.weight"].T + state[p + "attn.qkv.bias"]).reshape(
            batch, -1, 3, heads, hidden // heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]
        attention = ((q @ k.transpose(-2, -1)) * (hidden // heads) ** -0.5).softmax(dim=-1)
        y = (attention @ v).transpose(1, 2).reshape(batch, -1, hidden)
        h = h + y @ state[p + "attn.proj.weight"].T + state[p + "attn.proj.bias"]
        y = F.layer_norm(h, (hidden,), state[p + "norm2.weight"], state[p + "norm2.bias"], eps=1e-6)
        y = F.gelu(y @ state[p + "mlp.fc1.weight"].T + state[p + "mlp.fc1.bias"])
        h = h + y @ state[p + "mlp.fc2.weight"].T + state[p + "mlp.fc2.bias"]
        block += 1
    h = F.layer_norm(h, (hidden,), state["module.v.norm.weight"], state["module.v.norm.bias"], eps=1e-6)

    def predict(head: str, rows: torch.Tensor) -> torch.Tensor:
        y = torch.relu(rows @ state[f"module.{head}.0.weight"].T + state[f"module.{head}.0.bias"])
        return y @ state[f"module.{head}.2.weight"].T + state[f"module.{head}.2.bias"]

    nce, correct, squared = 0.0, 0.0, 0.0
    for i in range(batch):
        target = patches[i, mask_index[i], :]
        pred = predict("cpredlayer", h[i, mask_index[i] + 2, :])
        total = target @ pred.T
        correct += float((total.softmax(dim=-1).argmax(dim=0) == torch.arange(masked)).sum())
        nce += float(torch.diag(total.log_softmax(dim=-1)).sum())
        squared += float(((predict("gpredlayer", h[i, mask_index[i] + 2, :]) - target) ** 2).sum())
    return correct / (batch * masked), nce / (-batch * masked), squared / (batch * masked * target.shape[1])


def converted_model(state: dict[str, torch.Tensor]) -> ASTForPreTraining:
    from ast_hf.checkpoint_surgery import ssast_to_hf

    weights, fields = ssast_to_hf(state)
    model = ASTForPreTraining(ASTConfig(**fields))
    result = model.load_state_dict(weights, strict=False)
    assert not result.missing_keys and not result.unexpected_keys, result
    return model.eval()


@pytest.mark.parametrize("patch", [(16, 16), (32, 2)], ids=["patch", "frame"])
def test_losses_and_accuracy_equal_the_authors_on_their_state_dict(patch):
    """The conversion of an authors'-format state dict, then the same input and mask through ASTForPreTraining and
    the independent implementation: accuracy, InfoNCE and MSE agree (patch and frame variants)."""
    fdim, tdim = 32, 64
    state = authors_state_dict(128, 2, patch, fdim, tdim)
    model = converted_model(state)
    assert model.config.patch_shape == patch and model.config.patch_grid == (fdim // patch[0], tdim // patch[1])
    assert model.config.masking == ("cluster" if patch[0] == patch[1] else "random")
    generator = torch.Generator().manual_seed(1)
    x = torch.randn(3, tdim, fdim, generator=generator)
    patches = model.config.patch_grid[0] * model.config.patch_grid[1]
    # Ascending indices, the order of the masked positions in both: argmax ties (a saturated softmax) then resolve
    # alike.
    mask_index = torch.stack([torch.randperm(patches, generator=generator)[:5].sort().values for _ in range(3)])
    bool_masked_pos = torch.zeros(3, patches, dtype=torch.bool).scatter_(1, mask_index, True)
    with torch.no_grad():
        output = model(x, bool_masked_pos=bool_masked_pos)
    accuracy, nce, mse = authors_forward(state, x, mask_index, heads=2)
    assert math.isclose(float(output.discriminative_accuracy), accuracy, abs_tol=1e-6)
    assert math.isclose(float(output.discriminative_loss), nce, rel_tol=1e-4)
    assert math.isclose(float(output.generative_loss), mse, rel_tol=1e-4)
    assert math.isclose(float(output.loss), nce + 10 * mse, rel_tol=1e-4)
    assert 0.0 < accuracy < 1.0 or accuracy in (0.0, 1.0)


def test_conversion_script_writes_a_checkpoint_that_loads_in_every_class(tmp_path, caplog):
    state = authors_state_dict(128, 2, (16, 16), 128, 64)
    pth = tmp_path / "SSAST-Tiny-Patch.pth"
    torch.save(state, pth)
    script = load_conversion_script("convert_ssast")
    assert script.main(["--checkpoint", str(pth), "--output_dir", str(tmp_path / "out")]) == 0
    model = ASTForPreTraining.from_pretrained(tmp_path / "out").eval()
    x = torch.randn(2, 64, 128)
    mask = torch.zeros(2, 8 * 4, dtype=torch.bool)
    mask[:, [1, 5, 9, 30]] = True
    with torch.no_grad():
        ours = model(x, bool_masked_pos=mask)
    accuracy, nce, mse = authors_forward(state, x, mask.nonzero()[:, 1].view(2, 4), heads=2)
    assert math.isclose(float(ours.discriminative_loss), nce, rel_tol=1e-4)
    assert math.isclose(float(ours.generative_loss), mse, rel_tol=1e-4)
    extractor = ast_hf.ASTFeatureExtractor.from_pretrained(tmp_path / "out")
    assert extractor.max_length == 64 and extractor.pad_to_max_length and abs(extractor.mean + 4.2677393) < 1e-6
    # Into a classifier: the encoder unchanged, a new head, and a message that says so; SSAST's mean pooling.
    classifier = ASTForAudioClassification.from_pretrained(tmp_path / "out", num_labels=3)
    assert "SSAST pretraining checkpoint" in caplog.text and "classifier head" in caplog.text
    assert classifier.config.pooling == "mean"
    encoder = {k: v for k, v in model.audio_spectrogram_transformer.state_dict().items() if "mask_token" not in k}
    for key, value in classifier.audio_spectrogram_transformer.state_dict().items():
        assert torch.equal(value, encoder[key]), key
    # The authors' fine-tuning (ft_avgtok): mean of the patch tokens after the final norm, then the head.
    with torch.no_grad():
        tokens = classifier.audio_spectrogram_transformer(x).last_hidden_state[:, 2:].mean(dim=1)
        assert torch.allclose(classifier(x).logits, classifier.classifier(tokens), atol=1e-5)


def test_conversion_refuses_other_checkpoints(tmp_path, capsys):
    script = load_conversion_script("convert_ssast")
    state = authors_state_dict(64, 1, (16, 16), 128, 32)
    fine_tuned = {k: v for k, v in state.items() if k.startswith("module.v.")}
    fine_tuned.update({"module.mlp_head.0.weight": torch.ones(64), "module.mlp_head.0.bias": torch.zeros(64),
                       "module.mlp_head.1.weight": torch.zeros(5, 64), "module.mlp_head.1.bias": torch.zeros(5)})
    torch.save(fine_tuned, tmp_path / "ast.pth")
    assert script.main(["--checkpoint", str(tmp_path / "ast.pth"), "--output_dir", str(tmp_path / "o")]) == 2
    assert "convert_original_ast.py" in capsys.readouterr().err and not (tmp_path / "o").exists()
    nokd = {k: v for k, v in state.items() if k != "module.v.dist_token"}
    torch.save(nokd, tmp_path / "nokd.pth")
    assert script.main(["--checkpoint", str(tmp_path / "nokd.pth"), "--output_dir", str(tmp_path / "o")]) == 2
    assert "dist_token" in capsys.readouterr().err
    original = load_conversion_script("convert_original_ast")
    torch.save(state, tmp_path / "ssast.pth")
    assert original.main(["--checkpoint", str(tmp_path / "ssast.pth"), "--output_dir", str(tmp_path / "o"),
                          "--dataset", "esc50"]) == 2
    assert "convert_ssast.py" in capsys.readouterr().err


# ---- masking and errors -------------------------------------------------------------------------------------

def test_masks_have_the_count_stay_in_real_columns_and_cluster():
    generator = torch.Generator().manual_seed(0)
    cluster = sample_patch_mask((8, 16), [16, 10, 6], 30, "cluster", generator)
    assert cluster.shape == (3, 128) and cluster.sum(dim=1).tolist() == [30, 30, 30]
    grid = cluster.view(3, 8, 16)
    assert not grid[1, :, 10:].any() and not grid[2, :, 6:].any()

    def neighbours(masks: torch.Tensor) -> float:  # masked patches with a masked right or lower neighbour
        right = (masks[:, :, :-1] & masks[:, :, 1:]).sum()
        below = (masks[:, :-1, :] & masks[:, 1:, :]).sum()
        return float(right + below) / float(masks.sum())

    clusters = sample_patch_mask((8, 16), [16] * 50, 30, "cluster", generator).view(50, 8, 16)
    randoms = sample_patch_mask((8, 16), [16] * 50, 30, "random", generator).view(50, 8, 16)
    assert randoms.sum(dim=(1, 2)).eq(30).all()
    assert neighbours(clusters) > 1.2 > 0.6 > neighbours(randoms)  # neighbourhoods vs about 2 x 30/128


def tiny_pretraining(**overrides) -> ASTForPreTraining:
    fields = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64, num_mel_bins=32,
                  max_length=64, frequency_stride=16, time_stride=16, mask_patches=3)
    return ASTForPreTraining(ASTConfig(**{**fields, **overrides}))


def test_infonce_scores_stay_float32_under_autocast():
    """bmm is on autocast's half-precision list: the InfoNCE scores are computed in float32 anyway (every bmm of
    the forward is recorded by a dispatch mode, the real kernels running)."""
    from torch.utils._python_dispatch import TorchDispatchMode

    class BmmDtypes(TorchDispatchMode):
        def __init__(self):
            super().__init__()
            self.dtypes = []

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            if func is torch.ops.aten.bmm.default:
                self.dtypes.append(args[0].dtype)
            return func(*args, **(kwargs or {}))

    model = tiny_pretraining().eval()
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16), BmmDtypes() as seen:
        output = model(torch.randn(2, 64, 32))
    assert seen.dtypes[-1] == torch.float32 and output.discriminative_loss.dtype == torch.float32


def test_the_pretraining_forward_reads_no_values_back_from_a_device():
    """Masks drawn with tensor operations on the model's device, masked positions gathered without boolean
    indexing: on the meta device (no values, so any read back to the host raises) the training forward runs with
    an attention mask, both masking kinds. On a GPU it therefore queues its work without waiting."""
    for masking in ("cluster", "random"):
        model = tiny_pretraining(masking=masking, mask_patches=5).train().to("meta")
        output = model(torch.empty(2, 64, 32, device="meta"),
                       attention_mask=torch.ones(2, 64, dtype=torch.long, device="meta"))
        assert output.loss.shape == () and output.bool_masked_pos.shape == (2, 8)


def test_padded_clip_gives_what_it_gives_alone():
    model = tiny_pretraining().eval()
    x = torch.randn(2, 64, 32)
    attention_mask = torch.ones(2, 64, dtype=torch.long)
    attention_mask[1, 40:] = 0  # 2 real time columns of 4
    mask = torch.zeros(2, 2, 4, dtype=torch.bool)
    mask[:, 0, 0] = mask[:, 1, 1] = mask[:, 0, 1] = True
    with torch.no_grad():
        padded = model(x, attention_mask=attention_mask, bool_masked_pos=mask.flatten(1))
        alone = model(x[1:, :40], bool_masked_pos=mask[1:, :, :2].flatten(1))
        drawn = model(x, attention_mask=attention_mask)
    assert torch.allclose(padded.reconstruction[1], alone.reconstruction[0], atol=1e-5)
    assert not drawn.bool_masked_pos.view(2, 2, 4)[1, :, 2:].any()  # drawn masks avoid the padding


def test_bad_input_gets_one_clear_error():
    model = tiny_pretraining()
    x = torch.randn(2, 64, 32)
    with pytest.raises(ValueError, match="takes no labels"):
        model(x, labels=torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="mask_patches=9 is more than the 8 patches"):
        tiny_pretraining(mask_patches=9)(x)
    with pytest.raises(ValueError, match="clip 1 of the batch has only 2 patches"):
        model(x, attention_mask=torch.tensor([[1] * 64, [1] * 20 + [0] * 44]))
    with pytest.raises(ValueError, match="without overlap"):
        tiny_pretraining(time_stride=10)(x)
    with pytest.raises(ValueError, match="same number in every clip"):
        model(x, bool_masked_pos=torch.tensor([[1, 0, 0, 0, 0, 0, 0, 0], [1, 1, 0, 0, 0, 0, 0, 0]]))
    with pytest.raises(ValueError, match="ASTForPreTraining, or build"):
        ASTModel(model.config)(x, bool_masked_pos=torch.ones(2, 8, dtype=torch.bool))
    with pytest.raises(ValueError, match="Patchout"):
        tiny_pretraining(patchout_time=1).train()(x)
    with pytest.raises(ValueError, match="pooling='max' is not one of"):
        ASTConfig(pooling="max")
    with pytest.raises(TypeError, match="patch_size"):
        ASTConfig(patch_size=[16, 2, 1])


def test_training_lowers_both_losses_and_eval_masks_repeat():
    """A few hundred Adam steps on one batch of real speech: both losses fall and the accuracy rises above chance;
    in eval mode the drawn masks are the same at each call."""
    torch.manual_seed(0)
    extractor = ast_hf.ASTFeatureExtractor(max_length=64, num_mel_bins=32, pad_to_max_length=True)
    clips = [speak(word) for word in ("yes", "no", "left", "right")]
    features = extractor(clips, sampling_rate=16000, return_tensors="pt", truncation=True)
    model = tiny_pretraining(mask_patches=4)
    optimizer = torch.optim.Adam(model.parameters(), lr=2e-3)
    first = model(**features)
    for _ in range(150):
        output = model(**features)
        optimizer.zero_grad()
        output.loss.backward()
        optimizer.step()
    assert output.discriminative_loss < first.discriminative_loss and output.generative_loss < first.generative_loss
    assert output.discriminative_accuracy > 0.5  # chance: 1/4
    model.eval()
    assert torch.equal(model(**features).bool_masked_pos, model(**features).bool_masked_pos)


# ---- the example script on real audio -----------------------------------------------------------------------

TINY = ["--model_size", "tiny", "--config_overrides",
        "hidden_size=32,num_hidden_layers=2,num_attention_heads=4,intermediate_size=64", "--max_length", "64",
        "--per_device_train_batch_size", "4", "--learning_rate", "1e-3", "--report_to", "none", "--seed", "1",
        "--mask_patches", "12"]


def run(command: list[str], timeout: int = 600, expect: int = 0) -> str:
    env = {**os.environ, "TOKENIZERS_PARALLELISM": "false"}
    done = subprocess.run(command, capture_output=True, text=True, timeout=timeout, env=env, cwd=ROOT)
    assert done.returncode == expect, done.stdout[-2000:] + done.stderr[-4000:]
    return done.stdout + done.stderr


@pytest.fixture(scope="module")
def unlabelled(tmp_path_factory) -> Path:
    """A flat folder of real audio without labels: espeak-ng words at 16 and 22.05 kHz, WAV and FLAC."""
    folder = tmp_path_factory.mktemp("unlabelled")
    words = ["yes", "no", "up", "down", "left", "right", "on", "off", "stop", "go", "one", "two"]
    for index, word in enumerate(words):
        audio = speak(word, voice=["en", "en-us", "en+f3"][index % 3])
        if index % 2:
            soundfile.write(folder / f"{word}.flac", audio, 16000)
        else:
            import torchaudio

            resampled = torchaudio.functional.resample(torch.from_numpy(audio), 16000, 22050).numpy()
            soundfile.write(folder / f"{word}.wav", resampled, 22050)
    return folder


@pytest.mark.slow
def test_pretraining_script_end_to_end_then_both_fine_tuning_scripts(unlabelled, commands_root, tmp_path):
    out = tmp_path / "ssast"
    log = run([sys.executable, str(PRETRAIN), "--train_dir", str(unlabelled), "--validation_dir", str(unlabelled),
               *TINY, "--num_train_epochs", "2", "--logging_steps", "1", "--eval_strategy", "epoch",
               "--output_dir", str(out)])
    assert "12 masked per clip (cluster)" in log and "training-set fbank mean" in log
    results = json.loads((out / "all_results.json").read_text())
    for key in ("train_discriminative_loss", "train_generative_loss", "train_discriminative_accuracy",
                "eval_discriminative_loss", "eval_generative_loss", "eval_discriminative_accuracy", "eval_loss"):
        assert key in results and math.isfinite(results[key]), key
    assert math.isclose(results["eval_loss"], results["eval_discriminative_loss"]
                        + 10 * results["eval_generative_loss"], rel_tol=1e-3)
    history = json.loads((out / "trainer_state.json").read_text())["log_history"]
    assert sum("discriminative_accuracy" in h for h in history) == 6  # 12 clips / 4 a step, 2 epochs, every step
    for name in ("pretraining_curves.png", "README.md", "model.safetensors", "preprocessor_config.json"):
        assert (out / name).exists(), name
    # The reported evaluation losses are those of the saved model on the same clips (eval masks are seeded).
    model = ASTForPreTraining.from_pretrained(out).eval()
    extractor = ast_hf.ASTFeatureExtractor.from_pretrained(out)
    assert model.config.pooling == "mean" and extractor.pad_to_max_length
    # Fine-tuning from it: overlapping strides (positions resampled), mean pooling, both example scripts.
    common = ["--model_name_or_path", str(out), "--time_stride", "10", "--frequency_stride", "10",
              "--train_dir", str(commands_root / "train"), "--validation_dir", str(commands_root / "validation"),
              "--max_length", "64", "--per_device_train_batch_size", "8", "--learning_rate", "1e-3", "--seed", "1",
              "--num_train_epochs", "1"]
    log = run([sys.executable, str(TRAINER), *common, "--report_to", "none", "--output_dir", str(tmp_path / "ft")])
    assert "new classifier head for the data's 10 labels on the SSAST-pretrained encoder" in log
    tuned = ASTForAudioClassification.from_pretrained(tmp_path / "ft")
    assert tuned.config.pooling == "mean" and tuned.config.patch_grid == (12, 5)
    run([sys.executable, str(LOOP), *common, "--pooling", "cls", "--output_dir", str(tmp_path / "loop")])
    assert ASTConfig.from_pretrained(tmp_path / "loop").pooling == "cls"


@pytest.mark.slow
def test_every_data_source_kind_and_streaming(unlabelled, tmp_path):
    files = sorted(unlabelled.iterdir())
    (tmp_path / "clips.csv").write_text("path\n" + "\n".join(str(f) for f in files) + "\n")
    (tmp_path / "clips.jsonl").write_text("\n".join(json.dumps({"audio": f.name}) for f in files) + "\n")
    shutil.copytree(unlabelled, tmp_path / "audio")
    shutil.copy(tmp_path / "clips.jsonl", tmp_path / "audio" / "clips.jsonl")
    import datasets

    clips = datasets.Dataset.from_dict({"audio": [str(f) for f in files]}).cast_column("audio", datasets.Audio())
    datasets.DatasetDict({"train": clips}).save_to_disk(tmp_path / "saved")
    clips.save_to_disk(tmp_path / "one_split")  # a Dataset, not a DatasetDict: the training split
    script_module = __import__("conftest").load_example("run_pretraining")
    sources = {"csv": ["--train_file", str(tmp_path / "clips.csv"), "--audio_column_name", "path"],
               "jsonl": ["--train_file", str(tmp_path / "audio" / "clips.jsonl")],
               "dataset": ["--dataset_name", str(tmp_path / "saved")],
               "one_split": ["--dataset_name", str(tmp_path / "one_split")],
               "stream": ["--dataset_name", str(tmp_path / "saved"), "--streaming", "true"]}
    for name, flags in sources.items():
        metrics = script_module.main([*flags, *TINY, "--max_steps", "2", "--logging_steps", "1",
                                      "--output_dir", str(tmp_path / name)])
        assert math.isfinite(metrics["train_discriminative_loss"]), name
        assert (tmp_path / name / "model.safetensors").is_file(), name
    # Refused before any training, each with one message.
    for flags, message in ((["--mask_patches", "0"], "mask_patches.0 must be >= 1"),
                           (["--model_size", "huge"], "--model_size 'huge' is not one of")):
        with pytest.raises(ValueError, match=message):
            script_module.main([*sources["csv"], *TINY, *flags, "--max_steps", "1",
                                "--output_dir", str(tmp_path / "bad")])


@pytest.mark.slow
def test_killed_run_resumes_exactly(unlabelled, tmp_path):
    """A pretraining process killed with SIGKILL after its checkpoint at step 4 (6 in all), resumed with
    --resume_from_checkpoint last, ends with the weights of an uninterrupted run (masks and random crops restored)."""
    command = [sys.executable, str(PRETRAIN), "--train_dir", str(unlabelled), *TINY, "--max_steps", "6",
               "--train_crop", "random", "--save_strategy", "steps", "--save_steps", "2"]
    run([*command, "--output_dir", str(tmp_path / "full")])
    killed = tmp_path / "killed"
    process = subprocess.Popen([*command, "--output_dir", str(killed)], cwd=ROOT, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    while not (killed / "checkpoint-4" / "trainer_state.json").is_file() and process.poll() is None \
            and time.monotonic() < deadline:
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert process.returncode == -signal.SIGKILL and not (killed / "model.safetensors").exists()
    run([*command, "--output_dir", str(killed), "--resume_from_checkpoint", "last"])
    full, resumed = load_file(tmp_path / "full" / "model.safetensors"), load_file(killed / "model.safetensors")
    assert max(float((full[k] - resumed[k]).abs().max()) for k in full) <= 1e-6
    # Killed after its last checkpoint (step 6 of 6) but before the model was saved: resuming trains no 7th step.
    (killed / "model.safetensors").unlink()
    log = run([*command, "--output_dir", str(killed), "--resume_from_checkpoint", "last"])
    assert "the run is complete there" in log and not (killed / "checkpoint-7").exists()
    resumed = load_file(killed / "model.safetensors")
    assert max(float((full[k] - resumed[k]).abs().max()) for k in full) <= 1e-6


@pytest.mark.slow
def test_torchrun_two_processes_and_script_errors(unlabelled, tmp_path):
    torchrun = shutil.which("torchrun") or "torchrun"
    log = run([torchrun, "--nproc_per_node", "2", "--master_port", "29531", str(PRETRAIN), "--train_dir",
               str(unlabelled), *TINY, "--max_steps", "3", "--logging_steps", "1", "--output_dir",
               str(tmp_path / "ddp")])
    assert "Process 0 of 2" not in log
    state = json.loads((tmp_path / "ddp" / "trainer_state.json").read_text())
    assert sum("discriminative_accuracy" in h for h in state["log_history"]) == 3
    ASTForPreTraining.from_pretrained(tmp_path / "ddp")
    # Refusals: one line on stderr and exit status 2 from the script; the same messages from main() in-process.
    base = ["--train_dir", str(unlabelled), *TINY, "--max_steps", "1", "--output_dir", str(tmp_path / "bad")]
    assert "error: Pretraining learns from the audio alone and takes no labels" in run(
        [sys.executable, str(PRETRAIN), *base, "--label_column_name", "label"], expect=2)
    script = __import__("conftest").load_example("run_pretraining")
    with pytest.raises(ValueError, match="mask_patches=99 is more than the 32 patches"):
        script.main([*base, "--mask_patches", "99"])
    bert = tmp_path / "bert"
    bert.mkdir()
    (bert / "config.json").write_text(json.dumps({"model_type": "bert"}))
    with pytest.raises(ValueError, match="model_type 'bert', not an Audio Spectrogram Transformer"):
        script.main(["--train_dir", str(unlabelled), "--model_name_or_path", str(bert), "--output_dir",
                     str(tmp_path / "bad2")])


def test_frame_variant_runs_at_any_length():
    """128x2 frame patches (one patch row): clips of any even length, padded batches as alone."""
    model = ASTForPreTraining(ASTConfig(patch_size=[128, 2], frequency_stride=128, time_stride=2, hidden_size=32,
                                        num_hidden_layers=1, num_attention_heads=4, intermediate_size=64,
                                        max_length=64, mask_patches=6, masking="random")).eval()
    x = torch.randn(2, 50, 128)
    with torch.no_grad():
        output = model(x, attention_mask=np.array([[1] * 50, [1] * 30 + [0] * 20]))
    assert output.bool_masked_pos.shape == (2, 25) and not output.bool_masked_pos[1, 15:].any()
    assert output.reconstruction.shape == (2, 6, 256)


def test_a_fine_tuned_ast_pretrains_further_with_patches_side_by_side(tmp_path):
    """A classifier trained with overlapping patches loads into ASTForPreTraining with the strides of the patch
    (its positions resampled, its encoder otherwise unchanged, new heads and mask token), and trains."""
    from conftest import tiny_model

    classifier = tiny_model()
    classifier.save_pretrained(tmp_path)
    model = ASTForPreTraining.from_pretrained(tmp_path, frequency_stride=16, time_stride=16, mask_patches=20)
    assert model.config.patch_grid == (8, 8)
    ours = model.audio_spectrogram_transformer.state_dict()
    theirs = classifier.audio_spectrogram_transformer.state_dict()
    assert all(torch.equal(ours[k], v) for k, v in theirs.items() if "position_embeddings" not in k)
    output = model.train()(torch.randn(2, 128, 128))
    output.loss.backward()
    assert model.audio_spectrogram_transformer.embeddings.mask_token.grad is not None
