"""`python -m benchmarks.space_gpu --device cpu --smoke`: the GPU Space benchmark's own run, on the CPU."""

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_the_space_benchmark_runs_every_step_on_the_cpu(tmp_path):
    command = [
        sys.executable,
        "-m",
        "benchmarks.space_gpu",
        "--device",
        "cpu",
        "--smoke",
        "--photos-dir",
        str(tmp_path),
    ]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    for step in ("score 6 photos", "re-score after a prompt edit", "quality map", "adaptation, 10 steps", "peak"):
        assert step in done.stdout, done.stdout
    assert "0 image(s) encoded" in done.stdout and "GRMP-IQA (paper)" in done.stdout
