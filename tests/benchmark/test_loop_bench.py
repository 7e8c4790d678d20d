"""`python -m benchmark.throughput throughput`: our training loop against a minimal loop, run for real on CPU
(the GPU numbers come from the same code with --device cuda)."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest
from dataset_helpers import manifest


def _bench(tmp_path, *args):
    """(JSON written by the bench, its stderr, wall seconds of the whole process)."""
    out = tmp_path / "bench.json"
    t = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "benchmark.throughput", "throughput", "--threads", "1", "--size", "32",
                           "--batch-size", "8", "--repeats", "1", "--out", str(out), *args],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    return json.loads(out.read_text()), proc.stderr, time.perf_counter() - t


def _check_side(side, images):
    assert side["images"] == images and side["images_per_s"] > 0
    assert side["data_time_s"] >= 0 and side["compute_time_s"] > 0


def _check_times_fit(rows, wall):
    """Each side ran a warm-up and one timed pass (--repeats 1): all of them fit in the process's wall time
    (seconds, not milliseconds; one pass, not a sum over passes)."""
    assert sum(2 * r[side]["median_s"] for r in rows for side in ("baseline", "ours")) < wall


def test_throughput_on_a_build_reads_one_pass_of_its_train_split(tmp_path, built):
    _, build = built
    r, err, wall = _bench(tmp_path, "--model", "tinyvgg", "--data", str(build))
    splits = manifest(build)["splits"]
    for side in ("baseline", "ours"):
        _check_side(r[side], splits["train"]["num_samples"])
    assert r["eval"]["images"] == splits["val"]["num_samples"]
    assert r["data"] == str(build) and r["device"].endswith("(1 threads)") and r["dtype"] == "fp32"
    assert 0.2 < r["ratio_ours_over_baseline"] < 5  # the same work on both sides
    assert r["ours"]["data_time_s"] > 0 and r["baseline"]["data_time_s"] > 0  # JPEG decoding in this process
    _check_times_fit([r], wall)
    assert "tinyvgg: ours" in err and "minimal loop" in err


def test_throughput_in_memory_for_several_models(tmp_path):
    rows, _, wall = _bench(tmp_path, "--model", "tinyvgg,resnet18", "--images", "24", "--no-eval")
    _check_times_fit(rows, wall)
    assert [r["model"] for r in rows] == ["tinyvgg", "resnet18"]
    for r in rows:
        _check_side(r["baseline"], 24)
        _check_side(r["ours"], 24)
        assert "eval" not in r


@pytest.mark.heavy
def test_gpu_bench_script_runs_every_step_in_smoke_mode(tmp_path):
    """scripts/bench_gpu.sh at toy sizes on the CPU (DEVICE=cpu SMOKE=1): every step runs and writes its file."""
    import os
    from pathlib import Path
    root = Path(__file__).resolve().parents[2]
    env = {**os.environ, "DEVICE": "cpu", "SMOKE": "1", "PYTHON": sys.executable, "WORKERS": "1"}
    proc = subprocess.run(["bash", str(root / "scripts" / "bench_gpu.sh"), str(tmp_path / "out")], env=env,
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = tmp_path / "out"
    for name in ("loop_throughput.json", "overhead.json", "loop_throughput_data.json", "speedup.json", "stats.json", "loader.json",
                 "detect.json"):
        assert json.loads((out / name).read_text()), name
    assert json.loads((out / "loop_throughput_data.json").read_text())["data"] == str(out / "data" / "build")
    assert "torch" in (out / "env.txt").read_text()


def test_gpu_bench_script_refuses_without_cuda(tmp_path):
    import os
    from pathlib import Path
    import torch
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    root = Path(__file__).resolve().parents[2]
    proc = subprocess.run(["bash", str(root / "scripts" / "bench_gpu.sh"), str(tmp_path / "out")],
                          env={**os.environ, "PYTHON": sys.executable}, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "torch.cuda.is_available() is False" in proc.stderr


def test_overhead_reports_the_added_host_time_per_step():
    t = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "benchmark.throughput", "overhead", "--steps", "40", "--repeats", "2",
                           "--threads", "1"], capture_output=True, text=True, timeout=300)
    wall_us = (time.perf_counter() - t) * 1e6
    assert proc.returncode == 0, proc.stderr
    r = json.loads(proc.stdout)
    assert r["steps"] == 40 and r["baseline_us_per_step"] > 0 and r["ours_us_per_step"] > 0
    # per step, in microseconds: 40 steps x 3 rounds (warm-up + 2) of each side fit in the process's wall time
    assert 40 * 3 * (r["baseline_us_per_step"] + r["ours_us_per_step"]) < wall_us
