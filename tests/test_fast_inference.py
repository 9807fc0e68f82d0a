"""Fast inference modes (ast_hf.fast_inference): accuracy against float32 on real speech, the default untouched,
the pipeline's and the command line's switch, and clear refusals."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from conftest import speak, tiny_model
from transformers import pipeline

import ast_hf
from ast_hf.fast_inference import cpu_has_amx, describe, native_bf16, optimize_for_inference, resolve_mode

WORD_CLIPS = [(word, voice, speed) for word in ("yes", "no", "up", "down")
              for voice in ("en", "en-us", "en-gb", "en-sc") for speed in (140, 180)]


def scores(model, extractor, clips):
    batch = extractor(clips, sampling_rate=16000, padding="longest", return_attention_mask=True, return_tensors="pt")
    with torch.inference_mode():
        return model(**batch).logits.float().softmax(-1)


def test_float32_default_is_untouched(word_model, speech):
    """Without `optimize` the pipeline runs the model as loaded: float32, not quantised, not compiled."""
    tagger = pipeline("audio-tagging", model=str(word_model))
    assert describe(tagger.model) == "float32"
    model = ast_hf.ASTForAudioClassification.from_pretrained(word_model).eval()
    extractor = ast_hf.ASTFeatureExtractor.from_pretrained(word_model)
    expected = scores(model, extractor, [speech[0]])[0]
    got = tagger(speech[0], sampling_rate=16000, top_k=5)["clip"]
    for item in got:
        assert item["score"] == pytest.approx(float(expected[model.config.label2id[item["label"]]]), abs=1e-6)


@pytest.mark.parametrize("mode", ["int8", "bf16"])
def test_modes_agree_with_float32_on_the_trained_word_model(word_model, mode):
    """Top-1 agreement with float32 on 32 spoken words (one accent never heard in training) and the largest
    probability change, printed; bounded by the issue's guard (>= 99% agreement, i.e. all 32 here) and 0.05."""
    model = ast_hf.ASTForAudioClassification.from_pretrained(word_model).eval()
    extractor = ast_hf.ASTFeatureExtractor.from_pretrained(word_model)
    clips = [speak(*clip) for clip in WORD_CLIPS]
    reference = scores(model, extractor, clips)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # bf16 warns on CPUs without native bfloat16
        fast = optimize_for_inference(model, mode)
    got = scores(fast, extractor, clips)
    agreement = float((got.argmax(-1) == reference.argmax(-1)).float().mean())
    change = float((got - reference).abs().max())
    print(f"{mode}: top-1 agreement {agreement:.3f}, largest probability change {change:.4f} on {len(clips)} words")
    assert agreement == 1.0 and change < 0.05
    assert describe(model) == "float32"  # a copy was optimised, not the model


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["int8", "bf16"])
def test_modes_on_the_base_configuration_stay_within_0_02(speech, mode):
    """The issue's guard on the base configuration: random weights, 10 s of real speech, probabilities within
    0.02 of float32 (AudioSet's 527 labels, sigmoid and softmax alike)."""
    torch.manual_seed(0)
    model = ast_hf.ASTForAudioClassification(ast_hf.ASTConfig(num_labels=527)).eval()
    extractor = ast_hf.ASTFeatureExtractor()
    clip = np.concatenate([speech[2], speech[1], speech[3], speech[0]] * 2)[:160000]  # 10 s
    batch = extractor(clip, sampling_rate=16000, return_tensors="pt")
    with torch.inference_mode():
        reference = model(**batch).logits
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # bf16 warns where the CPU emulates it
            fast = optimize_for_inference(model, mode)(**batch).logits.float()
    for squash in (torch.sigmoid, lambda logits: logits.softmax(-1)):
        change = float((squash(fast) - squash(reference)).abs().max())
        print(f"{mode} base configuration: largest probability change {change:.4f}")
        assert change < 0.02


def test_the_pipeline_and_the_command_line_take_the_mode(word_model, speech, capsys, tmp_path):
    import soundfile

    from ast_hf import cli

    tagger = pipeline("audio-tagging", model=str(word_model), optimize="int8")
    assert describe(tagger.model) == "int8 dynamic"
    reference = pipeline("audio-tagging", model=str(word_model))
    assert tagger(speech[0], sampling_rate=16000)["clip"][0]["label"] == \
        reference(speech[0], sampling_rate=16000)["clip"][0]["label"]
    path = tmp_path / "up.wav"
    soundfile.write(path, speak("up", "en", 165, 50), 16000)
    status = cli.main(["classify", str(path), "--model", str(word_model), "--optimize", "int8", "--json"])
    captured = capsys.readouterr()
    assert status == 0, captured.err
    assert '"label": "up"' in captured.out


def test_refusals_and_the_automatic_choice(tmp_path):
    model = tiny_model()
    with pytest.raises(ValueError, match="mode='fp8' is not an inference mode"):
        optimize_for_inference(model, "fp8")
    with pytest.raises(TypeError, match="takes a torch model"):
        optimize_for_inference("path/to/model", "int8")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        half = optimize_for_inference(model, "bf16")
    with pytest.raises(ValueError, match="quantises a float32 model"):
        optimize_for_inference(half, "int8")
    if not native_bf16("cpu"):
        with pytest.raises(ValueError, match="mode='auto' \\(here 'int8'\\) quantises a float32 model"):
            optimize_for_inference(half, "auto")
    quantised = optimize_for_inference(model, "int8")
    for mode in ("bf16", "int8"):
        with pytest.raises(ValueError, match=f"mode='{mode}': this model is already int8-quantised"):
            optimize_for_inference(quantised, mode)
    with pytest.raises(ValueError, match="cannot be saved as a checkpoint. Save the float32 model"):
        quantised.save_pretrained(tmp_path / "int8")
    model.save_pretrained(tmp_path / "float32")  # the original is untouched and saves
    # "auto": bf16 on a CPU with AMX, int8 elsewhere (as fast or faster than bf16 on AVX512-BF16 without AMX).
    assert resolve_mode("auto", "cpu") == ("bf16" if native_bf16("cpu") and cpu_has_amx() else "int8")
    if native_bf16("cpu"):  # a model loaded in bfloat16 stays bfloat16 under "auto"
        assert next(optimize_for_inference(half, "auto").parameters()).dtype == torch.bfloat16
    if not native_bf16("cpu"):
        with pytest.warns(UserWarning, match="bfloat16 is not native"):
            optimize_for_inference(model, "bf16")


@pytest.mark.slow
def test_compile_gives_the_same_logits(speech):
    model = tiny_model()
    extractor = ast_hf.ASTFeatureExtractor(max_length=128)
    batch = extractor(speech[:2], sampling_rate=16000, padding="longest", return_attention_mask=True,
                      return_tensors="pt")
    with torch.inference_mode():
        reference = model(**batch).logits
        compiled = optimize_for_inference(model, "compile")
        assert describe(compiled) == "float32 + compiled"
        torch.testing.assert_close(compiled(**batch).logits, reference, rtol=1e-4, atol=1e-5)


def test_mode_and_device_rules_as_functions_of_the_hardware():
    """"auto" and the default device decided from capabilities passed in, for machines this one is not."""
    from ast_hf.fast_inference import Hardware, default_device

    cpu, amx = Hardware("cpu"), Hardware("cpu", native_bf16=True, amx=True)
    avx512_bf16 = Hardware("cpu", native_bf16=True)
    ampere, t4 = Hardware("cuda", native_bf16=True, cuda_available=True), Hardware("cuda", cuda_available=True)
    assert [resolve_mode("auto", hardware_=h) for h in (cpu, avx512_bf16, amx, ampere, t4)] == [
        "int8", "int8", "bf16", "bf16", "compile"]
    assert resolve_mode("int8", hardware_=ampere) == "int8"  # asked for by name: optimize_for_inference refuses it
    # No device given: the GPU where there is one (this process's under torchrun), the CPU for int8 or none.
    assert default_device(None, t4) == "cuda:0" and default_device("auto", ampere) == "cuda:0"
    assert default_device("bf16", ampere, local_rank="3") == "cuda:3"
    assert default_device("int8", ampere) == "cpu" and default_device(None, cpu) == "cpu"
    # This machine: a GPU's capability is asked of the device named, never of emulation.
    if not torch.cuda.is_available():
        assert not native_bf16("cuda:1") and default_device() == "cpu"


def test_an_int8_model_refuses_to_move_to_a_gpu_with_the_fix(word_model):
    """transformers' pipelines move their model to their (default) GPU; int8 kernels are CPU-only: the move is
    refused with what to do, before any CUDA call, and moves that stay on the CPU still work."""
    model = ast_hf.ASTForAudioClassification.from_pretrained(word_model).eval()
    extractor = ast_hf.ASTFeatureExtractor.from_pretrained(word_model)
    quantised = optimize_for_inference(model, "int8")
    for move in (lambda: quantised.to("cuda:0"), lambda: quantised.to(torch.device("cuda")), quantised.cuda,
                 lambda: quantised.to("cpu").to(device="cuda:1", dtype=torch.float32)):
        with pytest.raises(ValueError, match="runs on the CPU only; it cannot move to cuda.*device='cpu'"):
            move()
    assert quantised.to("cpu") is quantised and quantised.to(torch.float32) is quantised
    with pytest.raises(ValueError, match="int8-quantised .* CPU only"):
        pipeline("audio-classification", model=quantised, feature_extractor=extractor, device="cuda:0")
    # Without a device, ast_hf's pipelines choose by the same rule: int8 stays on the CPU.
    assert str(pipeline("audio-tagging", model=str(word_model), optimize="int8").device) == "cpu"
    assert str(pipeline("audio-tagging", model=quantised, feature_extractor=extractor).device) == "cpu"
