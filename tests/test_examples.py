"""The README's main command runs end to end in a real process."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_demo_runs(tmp_path):
    done = subprocess.run([sys.executable, str(ROOT / "examples" / "demo.py"), "--output_dir", str(tmp_path / "m")],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "max |ours - torchaudio kaldi fbank|" in done.stdout
    assert done.stdout.count(": ") >= 10  # one line per word
    assert (tmp_path / "m" / "model.safetensors").exists()
