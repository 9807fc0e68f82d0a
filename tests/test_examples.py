"""examples/demo.py (a 20-second plumbing demo with random weights) runs end to end in a real process and prints
what it claims: the fbank's distance to torchaudio's Kaldi fbank, and the pipeline's top labels for every word."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from ast_hf.espeak_commands import WORDS

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_demo_runs(tmp_path):
    done = subprocess.run([sys.executable, str(ROOT / "examples" / "demo.py"), "--output_dir", str(tmp_path / "m")],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    distance = re.search(r"max \|ours - torchaudio kaldi fbank\| on '\w+': (\S+)", done.stdout)
    assert distance and float(distance.group(1)) <= 1e-3, done.stdout  # measured ~1e-5 (float32 rounding)
    lines = {m.group(1): m.group(2) for m in re.finditer(r"^ +(\w+): (.+)$", done.stdout, re.M)}
    assert sorted(lines) == sorted(WORDS), done.stdout
    for word, line in lines.items():
        top = [(label, float(score)) for label, score in re.findall(r"(\w+) ([0-9.]+)", line)]
        assert len(top) == 3 and all(label in WORDS for label, _ in top), (word, line)
        scores = [score for _, score in top]
        assert scores == sorted(scores, reverse=True) and sum(scores) <= 1.0 + 0.02, (word, line)
    assert (tmp_path / "m" / "model.safetensors").exists()
