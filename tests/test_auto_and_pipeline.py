"""Auto classes, the audio-classification pipeline and remote code, with real checkpoints saved to disk."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import wave
from pathlib import Path

import numpy as np
import pytest
import torch
import transformers
from conftest import tiny_config, tiny_model
from transformers import (
    AutoConfig,
    AutoFeatureExtractor,
    AutoModel,
    AutoModelForAudioClassification,
    pipeline,
)

import ast_hf

LABELS = ["yes", "no", "up", "down", "left"]


def save_checkpoint(folder: Path, **config) -> ast_hf.ASTForAudioClassification:
    model = tiny_model(id2label=dict(enumerate(LABELS)), label2id={n: i for i, n in enumerate(LABELS)}, **config)
    model.save_pretrained(folder)
    ast_hf.ASTFeatureExtractor(max_length=128).save_pretrained(folder)
    return model


def test_auto_classes_return_ast_hf(tmp_path):
    save_checkpoint(tmp_path)
    assert type(AutoConfig.from_pretrained(tmp_path)).__module__ == "ast_hf.configuration_ast"
    assert type(AutoModel.from_pretrained(tmp_path)).__module__ == "ast_hf.modeling_ast"
    assert type(AutoModel.from_pretrained(tmp_path)).__name__ == "ASTModel"
    assert type(AutoModelForAudioClassification.from_pretrained(tmp_path)).__module__ == "ast_hf.modeling_ast"
    extractor = AutoFeatureExtractor.from_pretrained(tmp_path)
    assert type(extractor).__module__ == "ast_hf.feature_extraction_ast" and extractor.max_length == 128


def test_builtin_checkpoints_still_load_into_transformers_classes(tmp_path):
    builtin = tiny_model(builtin=True, num_hidden_layers=1)
    builtin.save_pretrained(tmp_path)
    transformers.ASTFeatureExtractor().save_pretrained(tmp_path)
    assert type(AutoConfig.from_pretrained(tmp_path)) is transformers.ASTConfig
    assert type(AutoModel.from_pretrained(tmp_path)) is transformers.ASTModel
    assert type(AutoModelForAudioClassification.from_pretrained(tmp_path)) is transformers.ASTForAudioClassification
    assert type(AutoFeatureExtractor.from_pretrained(tmp_path)) is transformers.ASTFeatureExtractor
    assert type(pipeline("audio-classification", model=str(tmp_path)).model) is transformers.ASTForAudioClassification


def test_pipeline_scores_softmax_and_sigmoid(tmp_path, speech):
    for problem_type, squash in (("single_label_classification", lambda x: x.softmax(-1)),
                                 ("multi_label_classification", torch.sigmoid)):
        folder = tmp_path / problem_type
        model = save_checkpoint(folder, problem_type=problem_type)
        classifier = pipeline("audio-classification", model=str(folder))
        assert type(classifier.model).__module__ == "ast_hf.modeling_ast"
        assert type(classifier.feature_extractor).__module__ == "ast_hf.feature_extraction_ast"
        results = classifier({"array": speech[1], "sampling_rate": 16000}, top_k=5)
        features = ast_hf.ASTFeatureExtractor(max_length=128)(speech[1], sampling_rate=16000, return_tensors="pt")
        with torch.no_grad():
            expected = squash(model(**features).logits[0])
        got = {r["label"]: r["score"] for r in results}
        for i, label in enumerate(LABELS):
            assert got[label] == pytest.approx(float(expected[i]), abs=1e-5)
        if problem_type == "multi_label_classification":
            assert sum(got.values()) != pytest.approx(1.0, abs=1e-3)  # independent sigmoids


def test_pipeline_reads_a_wav_file_through_ffmpeg(tmp_path, speech):
    save_checkpoint(tmp_path / "model")
    path = tmp_path / "clip.wav"
    with wave.open(str(path), "wb") as handle:
        handle.setnchannels(1)
        handle.setsampwidth(2)
        handle.setframerate(16000)
        handle.writeframes((speech[0] * 32767).astype(np.int16).tobytes())
    results = pipeline("audio-classification", model=str(tmp_path / "model"))(str(path))
    assert {r["label"] for r in results} <= set(LABELS) and len(results) == 5


CODE_FILES = {"configuration_ast.py", "modeling_ast.py", "feature_extraction_ast.py"}
AUTO_MAP = {"AutoConfig": "configuration_ast.ASTConfig", "AutoModel": "modeling_ast.ASTModel",
            "AutoModelForAudioClassification": "modeling_ast.ASTForAudioClassification",
            "AutoModelForPreTraining": "modeling_ast.ASTForPreTraining",
            "AutoFeatureExtractor": "feature_extraction_ast.ASTFeatureExtractor"}


def test_saved_directory_carries_code_and_auto_map(tmp_path):
    save_checkpoint(tmp_path / "model")
    config = json.loads((tmp_path / "model" / "config.json").read_text())
    assert config["model_type"] == "ast_hf" and config["auto_map"] == AUTO_MAP
    assert CODE_FILES <= set(os.listdir(tmp_path / "model"))
    for name in CODE_FILES:  # the package's own files, byte for byte
        assert (tmp_path / "model" / name).read_bytes() == (Path(ast_hf.__file__).parent / name).read_bytes()
    extractor_config = json.loads((tmp_path / "model" / "preprocessor_config.json").read_text())
    assert "feature_extractor_type" not in extractor_config and "auto_map" not in extractor_config
    # The base model and a config alone carry their code too (transformers' register_for_auto_class).
    ast_hf.ASTModel(tiny_config()).save_pretrained(tmp_path / "base")
    assert json.loads((tmp_path / "base" / "config.json").read_text())["auto_map"] == AUTO_MAP
    tiny_config().save_pretrained(tmp_path / "config")
    assert json.loads((tmp_path / "config" / "config.json").read_text())["auto_map"] == {
        "AutoConfig": "configuration_ast.ASTConfig"}
    assert {"configuration_ast.py", "feature_extraction_ast.py"} <= set(os.listdir(tmp_path / "config"))


@pytest.mark.slow
def test_remote_code_loads_without_ast_hf(tmp_path, speech):
    """A fresh interpreter whose sys.path cannot reach ast_hf loads the checkpoint with trust_remote_code."""
    model = save_checkpoint(tmp_path / "model", problem_type="multi_label_classification")
    saved = {path.name for path in (tmp_path / "model").glob("*.py")}
    # Every file the classes import (relatively) travels with them.
    assert {"configuration_ast.py", "modeling_ast.py", "feature_extraction_ast.py", "kaldi_fbank.py", "patch_grid.py",
            "model_inputs.py", "staging.py"} <= saved, saved
    np.save(tmp_path / "clip.npy", speech[2])
    features = ast_hf.ASTFeatureExtractor(max_length=128)(speech[2], sampling_rate=16000, return_tensors="pt")
    with torch.no_grad():
        expected = model(**features).logits[0]
    script = textwrap.dedent(f"""
        import sys, json

        class BlockAstHf:  # ast_hf may be installed (editable) here: make it unimportable, as on a user's machine
            def find_spec(self, name, path=None, target=None):
                if name == "ast_hf" or name.startswith("ast_hf."):
                    raise ModuleNotFoundError(f"No module named {{name!r}}", name=name)
                return None

        sys.meta_path.insert(0, BlockAstHf())
        sys.path = [p for p in sys.path if p not in ("", {str(Path.cwd())!r}, {str(Path(__file__).parent)!r})]
        try:
            import ast_hf
            raise SystemExit("ast_hf is importable; the test needs a clean sys.path")
        except ImportError:
            pass
        import numpy as np, torch
        from transformers import (AutoConfig, AutoFeatureExtractor, AutoModel, AutoModelForAudioClassification,
                                  pipeline)
        path = {str(tmp_path / "model")!r}
        config = AutoConfig.from_pretrained(path, trust_remote_code=True)
        model = AutoModelForAudioClassification.from_pretrained(path, trust_remote_code=True).eval()
        base = AutoModel.from_pretrained(path, trust_remote_code=True)
        extractor = AutoFeatureExtractor.from_pretrained(path, trust_remote_code=True)
        clip = np.load({str(tmp_path / "clip.npy")!r})
        with torch.no_grad():
            logits = model(**extractor(clip, sampling_rate=16000, return_tensors="pt")).logits[0]
        scores = pipeline("audio-classification", model=path, trust_remote_code=True)(
            {{"array": clip, "sampling_rate": 16000}}, top_k=5)
        print(json.dumps({{"config": type(config).__name__, "model": type(model).__module__,
                          "base": type(base).__name__, "extractor": type(extractor).__module__,
                          "logits": logits.tolist(), "scores": {{s["label"]: s["score"] for s in scores}}}}))
    """)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["HF_MODULES_CACHE"] = str(tmp_path / "modules")
    done = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["config"] == "ASTConfig" and result["base"] == "ASTModel"
    assert result["model"].startswith("transformers_modules")
    assert result["extractor"].startswith("transformers_modules")
    torch.testing.assert_close(torch.tensor(result["logits"]), expected, rtol=0, atol=1e-4)
    for i, label in enumerate(LABELS):
        assert result["scores"][label] == pytest.approx(float(torch.sigmoid(expected[i])), abs=1e-5)
