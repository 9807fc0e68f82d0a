"""The converters on wrong sources (issue 10, part A): a non-AST directory, weights that do not fit, files that are
not checkpoints, transformers 5 state dicts, audio in any format, patch/stride combinations with gaps. Every refusal
is exit status 2, one line on stderr, and no output directory. Real files and real processes throughout."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile
import torch
import torchaudio
import transformers
from conftest import load_conversion_script, randomize, tiny_model
from safetensors.torch import load_file, save_file

import ast_hf
from ast_hf import audio_io

ROOT = Path(__file__).resolve().parents[1]



deit_cli = load_conversion_script("convert_deit_to_ast")
original_cli = load_conversion_script("convert_original_ast")
retarget_cli = load_conversion_script("retarget_ast")


def deit_config(**overrides) -> transformers.DeiTConfig:
    fields = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64, image_size=384,
                  num_labels=7)
    fields.update(overrides)
    return transformers.DeiTConfig(**fields)


@pytest.fixture(scope="module")
def deit_dirs(tmp_path_factory) -> dict[str, Path]:
    """A DeiTModel and a DeiT-with-teacher saved by transformers' save_pretrained."""
    folder = tmp_path_factory.mktemp("deits")
    models = {"model": transformers.DeiTModel(deit_config()),
              "teacher": transformers.DeiTForImageClassificationWithTeacher(deit_config())}
    for name, model in models.items():
        randomize(model, seed=5).save_pretrained(folder / name)
    return {name: folder / name for name in models}


@pytest.fixture(scope="module")
def ast_dir(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("ast") / "tiny"
    tiny_model(num_hidden_layers=1).save_pretrained(folder)
    return folder


def run_cli(script: str, *arguments: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / "conversion" / script), *arguments], capture_output=True,
                          text=True, timeout=300, stdin=subprocess.DEVNULL)


def error_line(stderr: str) -> str:
    """The converter's message: the last stderr line, which must start with 'error:' (progress bars may precede
    it on successful loads, never a traceback)."""
    assert "Traceback" not in stderr, stderr[-2000:]
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert lines and lines[-1].startswith("error: "), stderr[-2000:]
    return lines[-1]


@pytest.mark.slow
def test_a_deit_directory_is_refused_by_the_ast_converters(deit_dirs, tmp_path, capsys):
    """Defect 1: transformers loaded a DeiT into an AST with every weight missing (random init), and the script
    said 'no missing or unexpected keys', saved it and exited 0."""
    scripts = {"convert_original_ast.py": ("--checkpoint", original_cli.main),
               "retarget_ast.py": ("--model", retarget_cli.main)}
    for (name, source), script in zip(deit_dirs.items(), scripts, strict=True):  # each script once as a process
        for other in scripts:
            flag, main = scripts[other]
            out = tmp_path / f"{name}_{other}"
            arguments = [flag, str(source), "--output_dir", str(out)]
            if other == script:
                done = run_cli(script, *arguments)
                code, stdout, stderr = done.returncode, done.stdout, done.stderr
            else:
                code = main(arguments)
                stdout, stderr = capsys.readouterr()
            assert code == 2, (other, stdout[-1000:], stderr[-2000:])
            message = error_line(stderr)
            assert "holds a 'deit' model (config.json), not an AST" in message and "convert_deit_to_ast.py" in message
            assert "no missing or unexpected keys" not in stdout
            assert not out.exists() and not list(tmp_path.glob(f".{out.name}*"))


def rewrite_weights(folder: Path, change) -> None:
    tensors = load_file(str(folder / "model.safetensors"))
    change(tensors)
    save_file(tensors, str(folder / "model.safetensors"), metadata={"format": "pt"})


@pytest.mark.parametrize("damage, words", [
    (lambda t: t.pop("classifier.dense.bias"), "1 missing (e.g. ['classifier.dense.bias'])"),
    (lambda t: t.update({"extra.weight": torch.zeros(3)}), "1 unexpected (e.g. ['extra.weight'])"),
    (lambda t: t.update({"classifier.dense.weight": torch.zeros(6, 32)}), "1 of the wrong shape"),
])
def test_an_ast_directory_whose_weights_do_not_fit_is_refused(ast_dir, tmp_path, capsys, damage, words):
    import shutil

    source = tmp_path / "source"
    shutil.copytree(ast_dir, source)
    rewrite_weights(source, damage)
    for main, flag in ((original_cli.main, "--checkpoint"), (retarget_cli.main, "--model")):
        assert main([flag, str(source), "--output_dir", str(tmp_path / "out")]) == 2
        captured = capsys.readouterr()
        assert words in error_line(captured.err) and "no missing or unexpected keys" not in captured.out
        assert not (tmp_path / "out").exists()


@pytest.fixture(scope="module")
def junk(tmp_path_factory, speech) -> list[tuple[Path, str]]:
    """Files that are not checkpoints, each with the words its error must contain."""
    folder = tmp_path_factory.mktemp("junk")
    (folder / "notes.txt").write_text("weights are in the other folder\n")
    (folder / "model.pth").write_text("version https://git-lfs.github.com/spec/v1\noid sha256:abc\n")  # LFS pointer
    soundfile.write(folder / "speech.wav", speech[0], 16000, subtype="PCM_16")
    soundfile.write(folder / "speech.flac", speech[0], 16000)
    (folder / "audio.pth").write_bytes((folder / "speech.wav").read_bytes())
    np.save(folder / "array.npy", np.zeros(3))
    torch.save([1, 2, 3], folder / "list.pth")
    torch.save({1: torch.zeros(3)}, folder / "int_keys.pth")
    torch.save({"model": {"w": torch.zeros(2), "epoch": 3}}, folder / "mixed.pth")
    cases = {"notes.txt": "it is a text file", "model.pth": "it is a text file", "speech.wav": "RIFF/WAV audio file",
             "speech.flac": "FLAC audio file", "audio.pth": "RIFF/WAV audio file", "array.npy": "numpy .npy array",
             "list.pth": "no state dict of tensors (found list)", "int_keys.pth": "keys are not parameter names",
             "mixed.pth": "no state dict of tensors (found ['epoch', 'w'])"}
    return [(folder / name, words) for name, words in cases.items()]


@pytest.mark.slow
def test_files_that_are_not_checkpoints_get_one_line_errors(junk, tmp_path, capsys):
    """Text and WAV files used to end in unpickler tracebacks (KeyError: 544502645, IndexError: pop from empty
    list); now each is named for what it is, with exit status 2 and nothing written."""
    for path, words in junk:
        for main, flags in ((deit_cli.main, ["--deit", str(path), "--num_labels", "2"]),
                            (original_cli.main, ["--checkpoint", str(path), "--dataset", "esc50"])):
            assert main([*flags, "--output_dir", str(tmp_path / "out")]) == 2, path.name
            message = error_line(capsys.readouterr().err)
            assert words in message, (path.name, message)
            assert not (tmp_path / "out").exists()
    # The real command line, once: exit status 2, one line, no traceback.
    done = run_cli("convert_deit_to_ast.py", "--deit", str(junk[2][0]), "--num_labels", "2", "--output_dir",
                   str(tmp_path / "out"))
    assert done.returncode == 2 and len(done.stderr.strip().splitlines()) == 1
    assert "RIFF/WAV audio file" in error_line(done.stderr) and not (tmp_path / "out").exists()
    # retarget_ast.py takes directories: a checkpoint file is sent to the right script.
    assert retarget_cli.main(["--model", str(junk[2][0]), "--output_dir", str(tmp_path / "out")]) == 2
    assert "is a file; this needs a save_pretrained directory" in error_line(capsys.readouterr().err)


def test_a_transformers5_state_dict_converts_like_the_saved_directory(deit_dirs, tmp_path):
    """`torch.save(DeiTModel(...).state_dict())` holds transformers 5's in-memory names (layers.N.attention.q_proj,
    mlp.fc1, ...), not the Hub names that save_pretrained writes; it used to be called "damaged"."""
    common = ["--num_attention_heads", "4", "--layer_norm_eps", "1e-12", "--num_labels", "3", "--max_length", "256"]
    for name, folder in deit_dirs.items():
        model_class = {"model": transformers.DeiTModel,
                       "teacher": transformers.DeiTForImageClassificationWithTeacher}[name]
        state_dict = model_class.from_pretrained(folder).state_dict()
        on_disk = set(load_file(str(folder / "model.safetensors")))
        assert any(".q_proj." in key for key in state_dict) and not set(state_dict) <= on_disk  # really renamed
        torch.save(state_dict, tmp_path / f"{name}.pth")
        assert deit_cli.main(["--deit", str(tmp_path / f"{name}.pth"), "--output_dir", str(tmp_path / f"{name}_sd"),
                              *common]) == 0
        assert deit_cli.main(["--deit", str(folder), "--output_dir", str(tmp_path / f"{name}_dir"), *common]) == 0
        from_file, from_dir = (load_file(str(tmp_path / f"{name}_{kind}" / "model.safetensors"))
                               for kind in ("sd", "dir"))
        assert from_file.keys() == from_dir.keys()
        for key in from_dir:
            assert torch.equal(from_file[key], from_dir[key]), (name, key)


def test_a_patch8_deit_with_the_default_stride_10_is_refused(tmp_path, capsys):
    """Defect 6: stride 10 over 8-wide patches leaves 2 frames and 2 mel bins between patches unseen."""
    folder = tmp_path / "deit8"
    randomize(transformers.DeiTModel(deit_config(patch_size=8, image_size=64))).save_pretrained(folder)
    assert deit_cli.main(["--deit", str(folder), "--output_dir", str(tmp_path / "out"), "--num_labels", "2",
                          "--max_length", "128"]) == 2
    message = error_line(capsys.readouterr().err)
    assert "frequency_stride=10 is larger than patch_size=8" in message and "Use a stride <= 8" in message
    assert not (tmp_path / "out").exists()
    assert deit_cli.main(["--deit", str(folder), "--output_dir", str(tmp_path / "out"), "--num_labels", "2",
                          "--max_length", "128", "--frequency_stride", "8", "--time_stride", "6"]) == 0
    assert ast_hf.ASTConfig.from_pretrained(tmp_path / "out").patch_grid == (16, 21)


def test_a_head_with_one_label_is_refused(deit_dirs, tmp_path, capsys):
    """A one-line labels file made a 1-label model: transformers then trains it as a regression (MSE) and the
    pipeline answers that label with score 1.0 for every clip."""
    (tmp_path / "labels.txt").write_text("hello\n")
    for flags in (["--labels_file", str(tmp_path / "labels.txt")], ["--num_labels", "1"]):
        assert deit_cli.main(["--deit", str(deit_dirs["model"]), "--output_dir", str(tmp_path / "out"), *flags]) == 2
        assert "at least 2 labels" in error_line(capsys.readouterr().err).replace("two", "2")
        assert not (tmp_path / "out").exists()


def test_verification_audio_in_any_format_and_rate(tmp_path, speech, capsys):
    """--audio used to accept 16-bit WAV only (a FLAC gave wave.Error); any file soundfile or torchaudio decodes
    is mixed to mono and resampled to 16 kHz."""
    stereo = np.stack([speech[1], speech[1] * 0.5], axis=1)  # (N, 2) at 16 kHz
    at_44k = torchaudio.functional.resample(torch.from_numpy(stereo.T.copy()), 16000, 44100).numpy().T
    soundfile.write(tmp_path / "stereo44.flac", at_44k, 44100, subtype="PCM_24")
    soundfile.write(tmp_path / "speech.ogg", speech[1], 16000)
    subprocess.run(["ffmpeg", "-loglevel", "error", "-y", "-i", str(tmp_path / "speech.ogg"), str(tmp_path /
                    "speech.mp3")], check=True)
    clip = audio_io.read_audio_file(tmp_path / "stereo44.flac")
    expected = torchaudio.functional.resample(torch.from_numpy(at_44k.mean(axis=1)).float(), 44100, 16000)
    assert clip.dtype == torch.float32 and clip.shape == expected.shape
    torch.testing.assert_close(clip, expected, rtol=0, atol=1e-5)  # 24-bit FLAC: quantisation ~1e-7
    model = tiny_model(num_hidden_layers=1)
    model.save_pretrained(tmp_path / "ast")
    for name in ("stereo44.flac", "speech.ogg", "speech.mp3"):
        out = tmp_path / f"out_{name.replace('.', '_')}"
        assert retarget_cli.main(["--model", str(tmp_path / "ast"), "--output_dir", str(out), "--audio",
                                  str(tmp_path / name)]) == 0
        assert f"forward on {tmp_path / name}" in capsys.readouterr().out
    (tmp_path / "notes.txt").write_text("not audio")
    assert retarget_cli.main(["--model", str(tmp_path / "ast"), "--output_dir", str(tmp_path / "bad"), "--audio",
                              str(tmp_path / "notes.txt")]) == 2
    assert "Could not decode" in error_line(capsys.readouterr().err) and not (tmp_path / "bad").exists()
