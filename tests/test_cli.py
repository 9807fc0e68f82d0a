"""`ast-hf`, the command line, on real recordings: the console script as a process, and `ast_hf.cli.main` in this
process for the many argument and file cases (same code, no process start-up each time)."""

from __future__ import annotations

import argparse
import csv
import io
import json
import shutil
import subprocess

import numpy as np
import pytest
import soundfile
import torch
from conftest import speak
from transformers import pipeline

from ast_hf import cli


@pytest.fixture(scope="module")
def recordings(tmp_path_factory):
    """Three spoken words (a voice the word model heard) as wav, flac and mp3, and a folder holding two of them."""
    folder = tmp_path_factory.mktemp("recordings")
    files = {}
    for word, suffix in (("up", ".wav"), ("no", ".flac"), ("yes", ".mp3")):
        # Shorter than the model's 1.28 s window: one window per file. Quiet noise around it, as in a recording.
        clip = np.concatenate([np.zeros(3200, np.float32), speak(word, "en", 165, 50), np.zeros(3200, np.float32)])
        clip += np.random.default_rng(0).standard_normal(len(clip)).astype(np.float32) * 1e-4
        path = folder / "words" / f"{word}{suffix}"
        path.parent.mkdir(exist_ok=True)
        if suffix == ".mp3":
            soundfile.write(path.with_suffix(".wav.tmp"), clip, 16000, format="WAV")
            subprocess.run(["ffmpeg", "-loglevel", "error", "-y", "-f", "wav", "-i", str(path.with_suffix(".wav.tmp")),
                            str(path)], check=True)
            path.with_suffix(".wav.tmp").unlink()
        else:
            soundfile.write(path, clip, 16000)
        files[word] = path
    (folder / "words" / "notes.txt").write_text("not audio, skipped by the directory search")
    return files


def run(capsys, *args):
    status = cli.main([str(a) for a in args])
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def test_console_script_tags_files_and_a_directory(word_model, recordings, tmp_path):
    executable = shutil.which("ast-hf")
    assert executable, "the ast-hf console script is not installed; run pip install -e ."
    done = subprocess.run([executable, "classify", str(recordings["up"]), str(recordings["up"].parent),
                           "--model", str(word_model), "--top-k", "2"], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.strip().splitlines()
    assert lines[0].split()[:3] == ["file", "duration", "top"]
    rows = {line.split()[0]: line for line in lines[1:]}
    assert len(lines) == 1 + 3  # up.wav once (named, and in the folder: one file), no.flac, yes.mp3
    for word, path in recordings.items():
        assert rows[str(path)].split()[3] == word, rows[str(path)]
    help_text = subprocess.run([executable, "--help"], capture_output=True, text=True).stdout
    assert "classify" in help_text and "export-onnx" in help_text and "demo" in help_text


def test_json_is_the_pipelines_result(word_model, recordings, capsys):
    status, out, err = run(capsys, "classify", recordings["no"], recordings["yes"], "--model", word_model, "--json",
                           "--events", "--hop", "0.32")
    assert status == 0, err
    results = json.loads(out)
    tagger = pipeline("audio-tagging", model=str(word_model))
    for result, path in zip(results, (recordings["no"], recordings["yes"]), strict=True):
        assert result.pop("file") == str(path)
        expected = tagger(str(path), hop=0.32, events=True)
        assert [i["label"] for i in result["clip"]] == [i["label"] for i in expected["clip"]]
        assert [i["score"] for i in result["clip"]] == pytest.approx([i["score"] for i in expected["clip"]], abs=1e-6)
        assert len(result["segments"]) == len(expected["segments"]) and result["events"]
    assert results[0]["clip"][0]["label"] == "no" and results[1]["clip"][0]["label"] == "yes"


def test_csv_rows_and_events(word_model, recordings, capsys):
    status, out, _ = run(capsys, "classify", recordings["up"], "--model", word_model, "--csv", "--threshold", "0.5",
                         "--top-k", "3")
    assert status == 0
    rows = list(csv.DictReader(io.StringIO(out)))
    kinds = [row["kind"] for row in rows]
    assert kinds.count("clip") == 3 and kinds.count("segment") % 3 == 0 and "event" in kinds
    clip = [row for row in rows if row["kind"] == "clip"]
    assert clip[0]["label"] == "up" and float(clip[0]["score"]) >= float(clip[1]["score"])
    events = [row for row in rows if row["kind"] == "event" and row["label"] == "up"]
    assert events and float(events[0]["start"]) <= 0.25 + 0.05


def test_table_with_events(word_model, recordings, capsys):
    status, out, _ = run(capsys, "classify", recordings["up"], "--model", word_model, "--events")
    assert status == 0
    assert "events in" in out and " up (peak " in out


def test_plots_one_file_and_several(word_model, recordings, tmp_path, capsys):
    status, _, err = run(capsys, "classify", recordings["up"], "--model", word_model, "--plot", tmp_path / "up.png")
    assert status == 0, err
    image = plt_image(tmp_path / "up.png")
    assert image.shape[0] > 300 and image.shape[1] > 1000 and image.std() > 0.05
    status, _, err = run(capsys, "classify", recordings["up"].parent, "--model", word_model, "--plot",
                         tmp_path / "plots")
    assert status == 0, err
    assert sorted(p.name for p in (tmp_path / "plots").iterdir()) == ["no.png", "up.png", "yes.png"]


def plt_image(path):
    import matplotlib.image

    return matplotlib.image.imread(path)


def test_bad_files_get_one_line_each_and_the_rest_is_printed(word_model, recordings, tmp_path, capsys):
    truncated = tmp_path / "cut.wav"
    truncated.write_bytes(recordings["up"].read_bytes()[:3000])
    (tmp_path / "empty.flac").write_bytes(b"")
    (tmp_path / "text.mp3").write_text("hello " * 100)
    status, out, err = run(capsys, "classify", tmp_path / "missing.wav", truncated, recordings["no"],
                           tmp_path / "empty.flac", tmp_path / "text.mp3", "--model", word_model)
    assert status == 1
    lines = err.strip().splitlines()
    assert len(lines) == 4, err
    for name, reason in (("missing.wav", "no such file"), ("cut.wav", "truncated"), ("empty.flac", "empty"),
                         ("text.mp3", "not readable audio")):
        assert any(name in line and reason in line for line in lines), (name, err)
    assert str(recordings["no"]) in out and "Traceback" not in err
    status, out, err = run(capsys, "classify", tmp_path / "missing.wav", "--model", word_model)
    assert status == 2 and out == "" and "missing.wav: no such file" in err


@pytest.mark.parametrize("args, message", [
    (["--model", "/nonexistent/model"], "--model /nonexistent/model: no such directory"),
    (["--model", "/nonexistent"], "--model /nonexistent: no such directory"),
    (["--device", "tpu"], "--device tpu: pass cpu, cuda or cuda:N"),
    (["--hop", "inf"], "--hop inf: pass a positive, finite"),
    (["--top-k", "0"], "--top-k 0"),
    (["--hop", "-1"], "--hop -1.0"),
    (["--threshold", "3"], "--threshold 3.0"),
    (["--hop", "60"], "longer than the window"),
])
def test_bad_arguments_exit_2_with_one_line(word_model, recordings, capsys, args, message):
    if "--model" not in args:
        args = [*args, "--model", str(word_model)]
    status, out, err = run(capsys, "classify", recordings["up"], *args)
    assert status == 2 and message in err and len(err.strip().splitlines()) == 1, err


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message for a machine without a GPU")
def test_cuda_without_a_gpu_is_one_line(word_model, recordings, capsys):
    status, _, err = run(capsys, "classify", recordings["up"], "--model", word_model, "--device", "cuda")
    assert status == 2 and "no CUDA GPU" in err


def test_model_directories_that_are_not_models(word_model, tmp_path, recordings, capsys):
    (tmp_path / "config.json").write_text("{}")
    (tmp_path / "model.safetensors").write_text("garbage")
    (tmp_path / "preprocessor_config.json").write_text("{}")
    status, _, err = run(capsys, "classify", recordings["up"], "--model", tmp_path)
    assert status == 2 and "config.json names no model_type, not an Audio Spectrogram Transformer" in err, err
    assert len(err.strip().splitlines()) == 1, err
    (tmp_path / "config.json").write_text('{"model_type": "ast_hf"}')  # an AST's config, garbage weights
    status, _, err = run(capsys, "classify", recordings["up"], "--model", tmp_path)
    assert status == 2 and "cannot load it" in err and len(err.strip().splitlines()) == 1, err
    for missing, message in (("model.safetensors", "no weights"), ("preprocessor_config.json",
                                                                   "no preprocessor_config.json")):
        folder = tmp_path / f"without_{missing}"
        shutil.copytree(word_model, folder)
        (folder / missing).unlink()
        for command in (["classify", recordings["up"], "--model", folder], ["export-onnx", folder, tmp_path / "x"]):
            status, out, err = run(capsys, *command)
            assert status == 2 and message in err and len(err.strip().splitlines()) == 1, err
    status, _, err = run(capsys, "classify", recordings["up"], "--model", recordings["up"])
    assert status == 2 and "a file, not a model directory" in err


def test_json_and_csv_keep_failed_files(word_model, recordings, tmp_path, capsys):
    status, out, _ = run(capsys, "classify", tmp_path / "missing.wav", recordings["up"], "--model", word_model,
                         "--json")
    assert status == 1
    entries = json.loads(out)
    assert sorted(entries[0]) == ["error", "file"] and "no such file" in entries[0]["error"]
    assert entries[1]["clip"][0]["label"] == "up"
    status, out, _ = run(capsys, "classify", recordings["up"], tmp_path / "gone.flac", "--model", word_model, "--csv")
    rows = list(csv.DictReader(io.StringIO(out)))
    errors = [row for row in rows if row["kind"] == "error"]
    assert status == 1 and len(errors) == 1 and "gone.flac" in errors[0]["file"]
    assert "no such file" in errors[0]["error"] and errors[0]["label"] == ""  # the message in its own column


def test_conflicting_flags_and_demo_arguments(word_model, recordings, capsys):
    with pytest.raises(SystemExit) as exit_status:
        cli.main(["classify", str(recordings["up"]), "--model", str(word_model), "--multi-label", "--single-label"])
    assert exit_status.value.code == 2 and "not allowed with argument" in capsys.readouterr().err
    for args, message in ((["--top-k", "0"], "--top-k 0"), (["--port", "99999"], "--port 99999")):
        status, _, err = run(capsys, "demo", "--model", word_model, *args)
        assert status == 2 and message in err


def test_no_command_prints_help(capsys):
    status, _, err = run(capsys)
    assert status == 2 and "classify" in err


@pytest.mark.slow
def test_export_onnx_command_and_the_int8_files_agreement(word_model, tmp_path, capsys):
    """`ast-hf export-onnx MODEL OUT --quantize int8` on the trained word model; onnxruntime's float32 logits equal
    PyTorch's (1e-4) and the int8 file's top-1 agreement and largest probability change on real speech are
    measured (printed) and bounded loosely."""
    import ast_hf
    from ast_hf.onnx_export import OnnxAudioClassifier

    status, out, err = run(capsys, "export-onnx", word_model, tmp_path / "onnx", "--quantize", "int8")
    assert status == 0, err
    written = json.loads(out)
    assert written["quantized"].endswith("model_quantized.onnx")
    model = ast_hf.ASTForAudioClassification.from_pretrained(word_model).eval()
    extractor = ast_hf.ASTFeatureExtractor.from_pretrained(word_model)
    clips = [speak(word, voice, speed, 50) for word in ("yes", "no", "up", "down")
             for voice in ("en", "en-us", "en-gb", "en-sc") for speed in (140, 180)]
    batch = extractor(clips, sampling_rate=16000, padding="longest", return_attention_mask=True, return_tensors="pt")
    with torch.no_grad():
        expected = model(**batch).logits
    fp32 = OnnxAudioClassifier.from_directory(tmp_path / "onnx")(batch["input_values"], batch["attention_mask"])
    int8 = OnnxAudioClassifier.from_directory(tmp_path / "onnx", quantized=True)(batch["input_values"],
                                                                               batch["attention_mask"])
    assert np.abs(fp32 - expected.numpy()).max() < 1e-4
    agreement = float((int8.argmax(-1) == expected.argmax(-1).numpy()).mean())
    change = float(np.abs(torch.from_numpy(int8).softmax(-1) - expected.softmax(-1)).max())
    print(f"int8 on {len(clips)} spoken words: top-1 agreement {agreement:.3f}, largest probability change "
          f"{change:.4f}")
    assert agreement >= 0.9 and change < 0.2


def test_padding_flags_parse_to_the_pipeline_argument():
    parser = cli.build_parser()
    for command in (["classify", "a.wav"], ["demo"]):
        base = [*command, "--model", "m"]
        assert parser.parse_args(base).pad_to_max_length is None  # the checkpoint's convention
        assert parser.parse_args([*base, "--pad-to-max-length"]).pad_to_max_length is True
        assert parser.parse_args([*base, "--no-pad-to-max-length"]).pad_to_max_length is False
        with pytest.raises(SystemExit):
            parser.parse_args([*base, "--pad-to-max-length", "--no-pad-to-max-length"])
    subcommands = next(action for action in parser._actions if isinstance(action, argparse._SubParsersAction))
    for name in ("classify", "demo"):
        help_text = " ".join(subcommands.choices[name].format_help().split())
        assert "input convention: default the checkpoint's (preprocessor_config.json pad_to_max_length; padded if " \
               "absent)" in help_text, name


def test_padding_flags_reach_the_pipeline(word_model, recordings, capsys):
    """`--pad-to-max-length` / `--no-pad-to-max-length` give the pipeline's result for True / False; no flag its
    default. A file shorter than the model's window is the case where the two differ."""
    tagger = pipeline("audio-tagging", model=str(word_model))
    path = recordings["up"]
    try:
        expected = {value: tagger(str(path), top_k=3, pad_to_max_length=value) for value in (None, True, False)}
    except TypeError as error:
        pytest.skip(f"the audio-tagging pipeline takes no pad_to_max_length yet ({error})")
    for flag, value in (([], None), (["--pad-to-max-length"], True), (["--no-pad-to-max-length"], False)):
        status, out, err = run(capsys, "classify", path, "--model", word_model, "--json", "--top-k", "3", *flag)
        assert status == 0, err
        clip = json.loads(out)[0]["clip"]
        assert [item["label"] for item in clip] == [item["label"] for item in expected[value]["clip"]], flag
        assert [item["score"] for item in clip] == pytest.approx(
            [item["score"] for item in expected[value]["clip"]], abs=1e-6), flag
    assert expected[True]["clip"][0]["score"] != pytest.approx(expected[False]["clip"][0]["score"], abs=1e-6)


def test_demo_hop_and_share_arguments(word_model, capsys):
    args = cli.build_parser().parse_args(["demo", "--model", "m", "--hop", "0.25", "--share"])
    assert args.hop == 0.25 and args.share is True
    assert cli.build_parser().parse_args(["demo", "--model", "m"]).share is False
    for hop, message in (("-1", "--hop -1.0: pass a positive, finite"), ("inf", "--hop inf: pass a positive"),
                         ("60", "--hop 60.0: longer than the window (1.29 s: 128 frames)")):
        status, _, err = run(capsys, "demo", "--model", word_model, "--hop", hop)
        assert status == 2 and message in err and len(err.strip().splitlines()) == 1, err


def test_demo_with_every_option_reaches_the_server(word_model, capsys):
    """A valid --hop, --share and a padding flag pass the checks and reach Gradio's launch, which fails fast here on
    a port already in use (the one-line error of a busy port, not a traceback from an unknown argument)."""
    pytest.importorskip("gradio", reason="the web demo needs gradio (pip install 'ast_hf[demo]')")
    import socket

    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        status, _, err = run(capsys, "demo", "--model", word_model, "--port", port, "--hop", "0.32", "--share",
                             "--no-pad-to-max-length")
    assert status == 2 and f"cannot serve on 127.0.0.1:{port}" in err and "Traceback" not in err, err


@pytest.mark.slow
def test_demo_serves_with_the_hop_and_padding_given(word_model, recordings, tmp_path):
    """`ast-hf demo --hop 0.32 --no-pad-to-max-length` as a process; the page's tag API (gradio_client) returns the
    segments of the pipeline called with hop=0.32 and pad_to_max_length=False."""
    gradio_client = pytest.importorskip("gradio_client", reason="the demo's API client comes with gradio")
    import socket
    import time

    tagger = pipeline("audio-tagging", model=str(word_model))
    path = tmp_path / "yes no up.wav"  # 2.6 s: several windows of 1.3 s, 0.32 s apart
    soundfile.write(path, np.concatenate([speak(word, "en", 165, 50) for word in ("yes", "no", "up")]), 16000)
    try:
        expected = tagger(str(path), hop=0.32, pad_to_max_length=False)
    except TypeError as error:
        pytest.skip(f"the audio-tagging pipeline takes no pad_to_max_length yet ({error})")
    padded = tagger(str(path), hop=0.32, pad_to_max_length=True)  # what the page would show without the flag
    assert padded["clip"][0]["score"] != pytest.approx(expected["clip"][0]["score"], abs=1e-5)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = subprocess.Popen([shutil.which("ast-hf"), "demo", "--model", str(word_model), "--port", str(port),
                               "--hop", "0.32", "--no-pad-to-max-length"], stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True)
    try:
        line = server.stdout.readline()  # "AST demo of ... running on URL" once it serves
        assert "running on" in line, line + server.stdout.read() if server.poll() is not None else line
        client = gradio_client.Client(f"http://127.0.0.1:{port}/", verbose=False)
        deadline = time.monotonic() + 60
        while True:
            try:
                labels, _, table = client.predict(gradio_client.handle_file(str(path)), api_name="/tag")
                break
            except Exception:  # noqa: BLE001 (the app may still be starting)
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.5)
    finally:
        server.terminate()
        server.wait(timeout=30)
    starts = [row[0] for row in table["data"]]
    assert starts == [round(segment["start"], 2) for segment in expected["segments"]]
    assert len(starts) > 1 and starts[1] == pytest.approx(0.32)
    assert labels["label"] == expected["clip"][0]["label"]
    scores = {item["label"]: item["confidence"] for item in labels["confidences"]}
    for item in expected["clip"]:
        assert scores[item["label"]] == pytest.approx(item["score"], abs=1e-5)
