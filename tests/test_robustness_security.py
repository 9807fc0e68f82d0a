"""Loading untrusted files runs no code (issue 10, part A): pickles with a payload are refused by the converters and
loaders and the payload never runs; every torch.load of the repository has weights_only=True; a checkpoint
directory's Python files run only with trust_remote_code=True."""

from __future__ import annotations

import ast
import json
import os
import pickle
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from conftest import load_conversion_script, randomize, tiny_config

import ast_hf
from ast_hf import checkpoint_surgery, convert

ROOT = Path(__file__).resolve().parents[1]



class Payload:
    """Unpickling this calls open(marker, "w"): the file appears iff the pickle's code ran."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def repository_python_files() -> list[Path]:
    skip = {".git", "outputs", "build", "dist", "__pycache__", ".venv", "venv"}
    return [path for path in ROOT.rglob("*.py") if not skip & set(path.relative_to(ROOT).parts)]


def test_every_torch_load_uses_weights_only_and_nothing_unpickles():
    """grep, by syntax tree: every torch.load(...) in the repository passes weights_only=True, and no shipped code
    (outside tests/) calls pickle.load(s) or numpy.load(allow_pickle=True)."""
    offenders = []
    loads = 0
    for path in repository_python_files():
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        for node in ast.walk(tree):
            if not isinstance(node, ast.Call) or not isinstance(node.func, ast.Attribute):
                continue
            owner = node.func.value.id if isinstance(node.func.value, ast.Name) else None
            keywords = {k.arg: k.value for k in node.keywords}
            where = f"{path.relative_to(ROOT)}:{node.lineno}"
            if owner == "torch" and node.func.attr == "load":
                loads += 1
                flag = keywords.get("weights_only")
                if not (isinstance(flag, ast.Constant) and flag.value is True):
                    offenders.append(f"{where} torch.load without weights_only=True")
            shipped = path.relative_to(ROOT).parts[0] != "tests"  # the tests unpickle a probe on purpose
            if shipped and owner in ("pickle", "cPickle", "dill") and node.func.attr in ("load", "loads", "Unpickler"):
                offenders.append(f"{where} {owner}.{node.func.attr}")
            allow = keywords.get("allow_pickle")
            if owner in ("np", "numpy") and node.func.attr == "load" and isinstance(allow, ast.Constant) \
                    and allow.value:
                offenders.append(f"{where} numpy.load(allow_pickle=True)")
    assert loads >= 1  # the converters' reader is found, so the walk does see the code
    assert offenders == []


@pytest.fixture()
def payloads(tmp_path) -> tuple[dict[str, Path], Path]:
    """Pickled checkpoints that would create `marker` when unpickled, in every container torch.load reads."""
    marker = tmp_path / "payload_ran"
    folder = tmp_path / "payloads"
    folder.mkdir()
    files = {}
    tensors = {"pos_embed": torch.zeros(1, 3, 4), "patch_embed.proj.weight": torch.zeros(4, 3, 16, 16)}
    torch.save({"model": {**tensors, "evil": Payload(marker)}}, folder / "zip.pth")
    torch.save({"state_dict": Payload(marker)}, folder / "legacy.pth", _use_new_zipfile_serialization=False)
    for protocol in (0, 2, pickle.HIGHEST_PROTOCOL):
        with open(folder / f"raw_protocol{protocol}.bin", "wb") as handle:
            pickle.dump({"model": Payload(marker)}, handle, protocol=protocol)
    files = {path.name: path for path in sorted(folder.iterdir())}
    # The payload is live: a plain unpickler runs it (with another marker, which is then removed).
    probe = tmp_path / "probe_ran"
    with open(tmp_path / "probe.pkl", "wb") as handle:
        pickle.dump(Payload(probe), handle)
    with open(tmp_path / "probe.pkl", "rb") as handle:
        pickle.load(handle).close()  # noqa: S301 - the point of the probe
    assert probe.exists()
    return files, marker


@pytest.mark.slow
def test_pickle_payloads_are_refused_by_every_loader_and_never_run(payloads, tmp_path, capsys):
    files, marker = payloads
    deit_cli = load_conversion_script("convert_deit_to_ast")
    original_cli = load_conversion_script("convert_original_ast")
    retarget_cli = load_conversion_script("retarget_ast")
    for name, path in files.items():
        with pytest.raises(checkpoint_surgery.ConversionError, match="Refused to load|Could not read"):
            convert.load_state_dict_file(path)
        assert deit_cli.main(["--deit", str(path), "--output_dir", str(tmp_path / "out"), "--num_labels", "2"]) == 2
        assert original_cli.main(["--checkpoint", str(path), "--dataset", "esc50", "--output_dir",
                                  str(tmp_path / "out")]) == 2
        err = capsys.readouterr().err
        assert "Traceback" not in err and [line[:6] for line in err.splitlines()] == ["error:"] * 2, err
        assert not marker.exists() and not (tmp_path / "out").exists(), name
        # A save_pretrained directory whose weights are such a pickle: transformers' loader and the converters.
        folder = tmp_path / f"dir_{name}"
        ast_hf.ASTConfig(**tiny_config().to_dict()).save_pretrained(folder)
        shutil.copyfile(path, folder / "pytorch_model.bin")
        with pytest.raises(Exception):  # noqa: B017 - transformers' own error types; what matters is the marker
            ast_hf.ASTForAudioClassification.from_pretrained(folder)
        assert retarget_cli.main(["--model", str(folder), "--output_dir", str(tmp_path / "out")]) == 2
        assert original_cli.main(["--checkpoint", str(folder), "--output_dir", str(tmp_path / "out")]) == 2
        assert "error: " in capsys.readouterr().err
        assert not marker.exists() and not (tmp_path / "out").exists(), name
    # The real command line, once.
    done = subprocess.run([sys.executable, str(ROOT / "conversion" / "convert_original_ast.py"), "--checkpoint",
                           str(files["zip.pth"]), "--dataset", "esc50", "--output_dir", str(tmp_path / "out")],
                          capture_output=True, text=True, timeout=300, stdin=subprocess.DEVNULL)
    assert done.returncode == 2 and done.stderr.strip().splitlines()[-1].startswith("error: Refused to load")
    assert "would build Python objects beyond tensors" in done.stderr and not marker.exists()


@pytest.mark.slow
def test_checkpoint_code_runs_only_with_trust_remote_code(tmp_path, speech):
    """A saved ast_hf directory carries modeling_ast.py & co. Planted code in them must not run unless the user
    passes trust_remote_code=True: in a fresh interpreter that cannot import ast_hf, every loader fails with a
    message naming trust_remote_code; with ast_hf imported, the Auto classes use ast_hf's own classes."""
    folder = tmp_path / "model"
    randomize(ast_hf.ASTForAudioClassification(tiny_config())).save_pretrained(folder)
    ast_hf.ASTFeatureExtractor(max_length=128).save_pretrained(folder)
    markers = {}
    for name in ("configuration_ast.py", "modeling_ast.py", "feature_extraction_ast.py"):
        markers[name] = tmp_path / f"ran_{name}"
        code, future = (folder / name).read_text(), "from __future__ import annotations\n"
        assert future in code
        plant = f"import pathlib\npathlib.Path({str(markers[name])!r}).write_text('ran')\n"
        (folder / name).write_text(code.replace(future, future + plant, 1))
    script = textwrap.dedent(f"""
        import json, sys

        class BlockAstHf:  # ast_hf may be installed (editable): make it unimportable, as on a user's machine
            def find_spec(self, name, path=None, target=None):
                if name == "ast_hf" or name.startswith("ast_hf."):
                    raise ModuleNotFoundError(f"No module named {{name!r}}", name=name)
                return None

        sys.meta_path.insert(0, BlockAstHf())
        from transformers import AutoConfig, AutoFeatureExtractor, AutoModel, AutoModelForAudioClassification, pipeline
        path, trust = {str(folder)!r}, json.loads(sys.argv[1])
        kwargs = {{}} if trust == "default" else {{"trust_remote_code": trust}}
        loaders = {{"AutoConfig": AutoConfig.from_pretrained, "AutoModel": AutoModel.from_pretrained,
                   "AutoModelForAudioClassification": AutoModelForAudioClassification.from_pretrained,
                   "AutoFeatureExtractor": AutoFeatureExtractor.from_pretrained,
                   "pipeline": lambda p, **k: pipeline("audio-classification", model=p, **k).model}}
        results = {{}}
        for name, load in loaders.items():
            try:
                results[name] = type(load(path, **kwargs)).__module__
            except Exception as error:
                results[name] = f"{{type(error).__name__}}: {{error}}"
        print("RESULT " + json.dumps(results))  # transformers prints its [y/N] prompt on stdout too
    """)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "HF_HUB_TRUST_REMOTE_CODE")}
    env["HF_MODULES_CACHE"] = str(tmp_path / "modules")

    def run(trust) -> dict[str, str]:
        done = subprocess.run([sys.executable, "-c", script, json.dumps(trust)], cwd=tmp_path, env=env,
                              capture_output=True, text=True, timeout=300, stdin=subprocess.DEVNULL)
        assert done.returncode == 0, done.stderr[-3000:]
        return json.loads(done.stdout.rsplit("RESULT ", 1)[1])

    for trust in ("default", False):  # not passed (no terminal to ask on), and refused explicitly
        for loader, outcome in run(trust).items():
            assert outcome.startswith("ValueError") and "trust_remote_code=True" in outcome, (trust, loader, outcome)
        assert not any(marker.exists() for marker in markers.values()), trust
    # With ast_hf imported, the registered classes are used, not the directory's code.
    from transformers import AutoConfig, AutoFeatureExtractor, AutoModelForAudioClassification, pipeline

    assert type(AutoConfig.from_pretrained(folder)).__module__ == "ast_hf.configuration_ast"
    assert type(AutoModelForAudioClassification.from_pretrained(folder)).__module__ == "ast_hf.modeling_ast"
    assert type(AutoFeatureExtractor.from_pretrained(folder)).__module__ == "ast_hf.feature_extraction_ast"
    pipeline("audio-classification", model=str(folder))({"array": speech[0], "sampling_rate": 16000})
    assert not any(marker.exists() for marker in markers.values())
    # The planted code is live: trust_remote_code=True runs it (which is why users should pin a revision).
    trusted = run(True)
    assert all(outcome.startswith("transformers_modules") for outcome in trusted.values()), trusted
    assert all(marker.exists() for marker in markers.values())
