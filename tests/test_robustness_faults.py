"""Writes killed half-way (issue 10, part A). Real processes are killed with SIGKILL while they write:

- a conversion (conversion/*.py, `ast_hf.convert.atomic_directory`) leaves the previous output directory as it
  was, byte for byte, and the next run cleans up after it;
- `ASTForAudioClassification.save_pretrained` over an existing model leaves a directory that loads the previous
  model, loads the new one, or fails to load; never the new config with the old weights, or a part of a file.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import transformers
from conftest import randomize
from safetensors.torch import load_file

import ast_hf
from ast_hf import convert

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.skipif(os.name != "posix", reason="SIGKILL and fork are POSIX")


def snapshot(folder: Path) -> dict[str, bytes]:
    return {path.name: path.read_bytes() for path in sorted(folder.iterdir())}


def staged_files(parent: Path, name: str) -> set[str]:
    """Names of the files under the converter's staging directories `.NAME.partial-*` (nested ones included)."""
    return {file for staging in parent.glob(f".{name}.partial-*")
            for _, _, files in os.walk(staging) for file in files}  # os.walk skips what vanishes meanwhile


@pytest.mark.slow
def test_a_conversion_killed_while_writing_leaves_the_previous_output(tmp_path):
    deit = tmp_path / "deit"
    config = transformers.DeiTConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
                                     image_size=384)
    randomize(transformers.DeiTModel(config), seed=3).save_pretrained(deit)
    out = tmp_path / "out"
    command = [sys.executable, str(ROOT / "conversion" / "convert_deit_to_ast.py"), "--deit", str(deit),
               "--output_dir", str(out), "--max_length", "128"]
    subprocess.run([*command, "--num_labels", "2"], check=True, capture_output=True, timeout=300)
    previous = snapshot(out)
    # Kill the rewrite (3 labels, another head) as each stage of the write appears in the staging directory.
    for trigger in ("", "model.safetensors", "preprocessor_config.json"):
        process = subprocess.Popen([*command, "--num_labels", "3", "--overwrite"], stdout=subprocess.DEVNULL,
                                   stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 300
        while process.poll() is None and time.monotonic() < deadline:
            seen = list(tmp_path.glob(".out.partial-*"))
            if seen and (not trigger or trigger in staged_files(tmp_path, "out")):
                break
            time.sleep(0.0005)
        process.send_signal(signal.SIGKILL)
        assert process.wait() == -signal.SIGKILL, f"the conversion finished before {trigger or 'staging'} was seen"
        assert snapshot(out) == previous, trigger
        assert ast_hf.ASTForAudioClassification.from_pretrained(out).config.num_labels == 2
    assert list(tmp_path.glob(".out.partial-*"))  # what the killed runs left, out of the way
    # The next run completes, replaces the output and removes the killed runs' staging directories.
    subprocess.run([*command, "--num_labels", "3", "--overwrite"], check=True, capture_output=True, timeout=300)
    assert ast_hf.ASTConfig.from_pretrained(out).num_labels == 3
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".out")) == []


def test_exchange_swaps_two_directories(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    (tmp_path / "a" / "from_a").write_text("a")
    (tmp_path / "b" / "from_b").write_text("b")
    if not convert.exchange_paths(tmp_path / "a", tmp_path / "b"):
        pytest.skip("this system has no atomic exchange (atomic_directory falls back to two renames)")
    assert [p.name for p in (tmp_path / "a").iterdir()] == ["from_b"]
    assert [p.name for p in (tmp_path / "b").iterdir()] == ["from_a"]


# A helper process builds two models with the same shapes and different labels, then forks one child per trial
# that saves the new model over the old one; the parent kills the child after a delay, or as soon as config.json
# changes (the moment when transformers' own save_pretrained has a new config next to the old weights).
HELPER = textwrap.dedent("""
    import json, os, shutil, signal, sys, time
    import torch
    torch.set_num_threads(1)  # no thread pools to inherit across fork
    import ast_hf

    root = sys.argv[1]
    target, old_dir, new_dir = (os.path.join(root, name) for name in ("target", "old", "new"))

    def build(seed, prefix):
        labels = [f"{prefix}{i}" for i in range(3)]
        config = ast_hf.ASTConfig(hidden_size=384, num_hidden_layers=12, num_attention_heads=6,
                                  intermediate_size=1536, max_length=128, id2label=dict(enumerate(labels)),
                                  label2id={label: i for i, label in enumerate(labels)})
        model = ast_hf.ASTForAudioClassification(config)
        generator = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            for parameter in model.parameters():
                parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.02)
        return model

    old, new = build(0, "old_"), build(1, "new_")
    old.save_pretrained(old_dir)
    start = time.perf_counter()
    new.save_pretrained(new_dir)
    print(json.dumps({"seconds": time.perf_counter() - start}), flush=True)

    def stamp(path):
        try:
            status = os.stat(path)
            return status.st_ino, status.st_mtime_ns, status.st_size
        except FileNotFoundError:
            return None

    for line in sys.stdin:
        kind, value = line.split()
        shutil.rmtree(target, ignore_errors=True)
        shutil.copytree(old_dir, target)
        config_before = stamp(os.path.join(target, "config.json"))
        pid = os.fork()
        if pid == 0:
            new.save_pretrained(target)
            os._exit(0)
        status = None
        if kind == "delay":
            time.sleep(float(value))
        else:  # kill as soon as config.json in the target changes
            while stamp(os.path.join(target, "config.json")) == config_before:
                done, exit_status = os.waitpid(pid, os.WNOHANG)
                if done:
                    status = exit_status
                    break
        if status is None:
            os.kill(pid, signal.SIGKILL)  # a child that already exited is a zombie until reaped: no error
            _, status = os.waitpid(pid, 0)
        files = sorted(os.path.relpath(os.path.join(folder, name), target)
                       for folder, _, names in os.walk(target) for name in names)
        print(json.dumps({"killed": os.WIFSIGNALED(status), "files": files}), flush=True)
""")


@pytest.mark.slow
def test_save_pretrained_killed_mid_write_never_loads_a_mix(tmp_path):
    helper = subprocess.Popen([sys.executable, "-c", HELPER, str(tmp_path)], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        seconds = json.loads(helper.stdout.readline())["seconds"]
        reference = {kind: load_file(str(tmp_path / kind / "model.safetensors")) for kind in ("old", "new")}
        trials = [("config", "0")] * 3 + [("delay", f"{seconds * fraction:.4f}")
                                          for fraction in (0.0, 0.1, 0.2, 0.35, 0.5, 0.65, 0.8, 0.95, 1.1, 1.5)]
        outcomes = []
        for kind, value in trials:
            helper.stdin.write(f"{kind} {value}\n")
            helper.stdin.flush()
            report = json.loads(helper.stdout.readline())
            outcomes.append(outcome_of(tmp_path / "target", reference))
            outcomes[-1] += (" mid-save" if any(f.startswith(".partial-") for f in report["files"]) else "")
        # At least one kill landed inside a save (its staging directory was left behind).
        assert any("mid-save" in outcome for outcome in outcomes), outcomes
        # A complete save over a directory with such leftovers removes them.
        ast_hf.ASTForAudioClassification.from_pretrained(tmp_path / "new").save_pretrained(tmp_path / "target")
        assert not [p for p in (tmp_path / "target").iterdir() if p.name.startswith(".partial-")]
        assert outcome_of(tmp_path / "target", reference) == "new"
    finally:
        helper.stdin.close()
        helper.kill()
        helper.wait()


def outcome_of(folder: Path, reference: dict[str, dict]) -> str:
    """'old' or 'new' when the directory loads, with config and every weight from the same save; 'fails' when it
    does not load. A mix (or a load that fills in missing weights) fails the test."""
    try:
        model, info = ast_hf.ASTForAudioClassification.from_pretrained(folder, output_loading_info=True)
    except Exception:  # no weights file, a cut safetensors file, ...: the directory does not load
        return "fails"
    assert not any(info.values()), f"loaded with {info}"  # a load that filled in weights at random
    version = model.config.id2label[0].split("_")[0]
    weights = model.state_dict()
    mixed = [key for key, value in reference[version].items() if not bool((weights[key] == value).all())]
    assert not mixed, f"config of the {version} save with other weights: {mixed[:3]}"
    return version
