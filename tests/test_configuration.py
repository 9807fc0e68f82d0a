"""ASTConfig under the checks transformers' `ConfigTester` (tests/test_configuration_common.py) runs on every config:
JSON string and file, save/load (also from a subfolder), num_labels, init without parameters, the common keyword
arguments. Then what is ASTConfig's own: when the checks between fields run, the built-in AST's config.json, and
the patch grid."""

from __future__ import annotations

import json

import pytest
import torch
import transformers

import ast_hf
from ast_hf.configuration_ast import samples_for_frames
from ast_hf.feature_extraction_ast import num_frames

INPUTS = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64, num_mel_bins=64,
              max_length=128, frequency_stride=12, time_stride=16, patchout_time=2, layer_norm_eps=1e-6)

# transformers' tests/utils/test_configuration_utils.py `config_common_kwargs`, the entries PreTrainedConfig 5.x
# still has: each given to __init__ must be kept.
COMMON_KWARGS = {
    "return_dict": False,
    "output_hidden_states": True,
    "output_attentions": True,
    "dtype": "float16",
    "chunk_size_feed_forward": 5,
    "is_encoder_decoder": True,
    "architectures": ["ASTForAudioClassification"],
    "id2label": {0: "yes", 1: "no"},
    "label2id": {"yes": 0, "no": 1},
    "problem_type": "multi_label_classification",
}


def test_common_properties():
    config = ast_hf.ASTConfig(**INPUTS)
    for name in ("hidden_size", "num_attention_heads", "num_hidden_layers"):
        assert getattr(config, name) == INPUTS[name]
        setattr(config, name, 8)  # settable, as ConfigTester checks
        assert getattr(config, name) == 8
        assert getattr(ast_hf.ASTConfig(**{name: 8}), name) == 8  # and given to __init__


def test_to_json_string():
    config = ast_hf.ASTConfig(**INPUTS)
    written = json.loads(config.to_json_string())
    assert written["model_type"] == "ast_hf"
    for key, value in INPUTS.items():
        assert written[key] == value, key


def test_to_json_file_and_back(tmp_path):
    first = ast_hf.ASTConfig(**INPUTS)
    first.to_json_file(tmp_path / "config.json")
    second = ast_hf.ASTConfig.from_json_file(tmp_path / "config.json")
    assert second.to_dict() == first.to_dict()


@pytest.mark.parametrize("subfolder", ["", "nested"])
def test_save_and_load_pretrained(tmp_path, subfolder):
    first = ast_hf.ASTConfig(**INPUTS)
    first.save_pretrained(tmp_path / subfolder)
    second = ast_hf.ASTConfig.from_pretrained(tmp_path, subfolder=subfolder)
    assert second.to_dict() == first.to_dict()
    assert type(transformers.AutoConfig.from_pretrained(tmp_path, subfolder=subfolder)) is ast_hf.ASTConfig


def test_num_labels():
    config = ast_hf.ASTConfig(num_labels=5)
    assert len(config.id2label) == 5 and len(config.label2id) == 5
    config.num_labels = 3
    assert len(config.id2label) == 3 and len(config.label2id) == 3


def test_init_without_parameters_gives_the_audioset_model():
    config = ast_hf.ASTConfig()
    config.validate()
    assert (config.hidden_size, config.num_hidden_layers, config.num_attention_heads) == (768, 12, 12)
    assert config.patch_grid == (12, 101) and config.num_labels == 2


def test_common_kwargs_given_to_init_are_kept(tmp_path):
    config = ast_hf.ASTConfig(**COMMON_KWARGS)
    for key, value in COMMON_KWARGS.items():
        expected = torch.float16 if key == "dtype" else value
        assert getattr(config, key) == expected, key
    ast_hf.ASTConfig(**{k: v for k, v in COMMON_KWARGS.items() if k != "output_attentions"}).save_pretrained(tmp_path)
    loaded = ast_hf.ASTConfig.from_pretrained(tmp_path)
    for key in ("return_dict", "output_hidden_states", "chunk_size_feed_forward", "id2label", "label2id",
                "problem_type"):
        assert getattr(loaded, key) == COMMON_KWARGS[key], key


# ---- checks between fields: when a model is built or the config saved -----------------------------------------------


def test_a_config_can_be_edited_field_by_field_before_a_model_is_built():
    config = ast_hf.ASTConfig(hidden_size=64)  # 12 heads do not divide 64 ...
    config.num_attention_heads = 4  # ... and 4 do
    config.intermediate_size, config.num_hidden_layers, config.max_length = 128, 1, 64
    assert ast_hf.ASTModel(config).embeddings.grid == (12, 5)


def test_inconsistent_fields_raise_when_a_model_is_built_or_the_config_saved(tmp_path):
    config = ast_hf.ASTConfig(**INPUTS)
    config.num_attention_heads = 5
    message = r"hidden_size=32 is not a multiple of num_attention_heads=5; pick a head count that divides it"
    for build in (ast_hf.ASTModel, ast_hf.ASTForAudioClassification, ast_hf.ASTForAudioClassification._from_config):
        with pytest.raises(ValueError, match=message):
            build(config)
    with pytest.raises(ValueError, match=message):
        config.save_pretrained(tmp_path / "config")
    # A config.json edited by hand loads as a config; the model refuses it.
    ast_hf.ASTForAudioClassification(ast_hf.ASTConfig(**INPUTS)).save_pretrained(tmp_path / "model")
    written = json.loads((tmp_path / "model" / "config.json").read_text())
    (tmp_path / "model" / "config.json").write_text(json.dumps({**written, "time_stride": 20}))
    assert ast_hf.ASTConfig.from_pretrained(tmp_path / "model").time_stride == 20
    with pytest.raises(ValueError, match="time_stride=20 is larger than patch_size=16: 4 frames between"):
        ast_hf.ASTForAudioClassification.from_pretrained(tmp_path / "model")
    # A field changed to a wrong type after construction is caught when the model is built.
    config = ast_hf.ASTConfig(**INPUTS)
    config.max_length = "128"
    with pytest.raises(TypeError, match="max_length='128' is a str; it must be an int"):
        ast_hf.ASTModel(config)


def test_builtin_ast_config_json_loads(tmp_path):
    builtin = transformers.ASTConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
                                     max_length=128, frequency_stride=12, time_stride=12, num_labels=3)
    builtin.save_pretrained(tmp_path)
    assert json.loads((tmp_path / "config.json").read_text())["model_type"] == "audio-spectrogram-transformer"
    for ours in (ast_hf.ASTConfig.from_pretrained(tmp_path), ast_hf.ASTConfig.from_dict(builtin.to_dict())):
        assert ours.model_type == "ast_hf" and ours.architectures is None
        for key in ("hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size", "max_length",
                    "frequency_stride", "time_stride", "num_mel_bins", "layer_norm_eps", "id2label"):
            assert getattr(ours, key) == getattr(builtin, key), key


# ---- the patch grid -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("frames, mel_bins", [(16, 16), (100, None), (1024, 128), (513, 64), (300, 160)])
def test_patch_grid_is_the_patch_convolutions_output_size(frames, mel_bins):
    config = ast_hf.ASTConfig(**INPUTS)
    convolution = torch.nn.Conv2d(1, 1, kernel_size=16, stride=(12, 16))  # as the paper's patch split
    spectrogram = torch.zeros(1, 1, mel_bins or config.num_mel_bins, frames)  # (B, 1, F, T)
    assert config.patch_grid_for(frames, mel_bins) == tuple(convolution(spectrogram).shape[2:])
    assert config.patch_grid == config.patch_grid_for(config.max_length) == (5, 8)


def test_patch_grid_errors_name_the_fix():
    config = ast_hf.ASTConfig()
    assert samples_for_frames(16) == 2800 and num_frames(2800) == 16 and num_frames(2799) == 15
    with pytest.raises(ValueError, match=r"Pad the audio to at least 16 frames .*or about 2800 samples at 16 kHz"):
        config.patch_grid_for(10)
    with pytest.raises(ValueError, match="Compute it with at least 16 mel bins"):
        config.patch_grid_for(100, 10)
    config.num_mel_bins = 8
    with pytest.raises(ValueError, match="num_mel_bins=8 is smaller than patch_size=16: the stored grid"):
        _ = config.patch_grid
