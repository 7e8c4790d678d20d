"""``submit`` on submitit's real LocalExecutor (real controller and task processes) and ``status``: a grid
split over 2 array tasks, one task SIGKILLed mid-cell and resubmitted, gives the leaderboard of a
single-process ``run``; ``status`` counts the cells before and after; ``--executor slurm`` without ``sbatch``
is one clear error; a bad config submits nothing."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from benchmark.cli import main
from test_shared_results import COMMON, build_full  # tinyvgg, random init, a 'full' build: the same tiny cells


BENCH = [sys.executable, "-m", "benchmark.cli"]
TIMING = {"speedup", "speedup_std", "latency_ms", "latency_ms_std"}

CONFIG = 'name = "tiny_submit"\ndescription = "submit test grid"\nreference = ["paper_table1"]\n' + COMMON + """
[[grid]]
criterion = ["random", "l1"]
ratio = [0.5]
seed = [0, 1]
"""


def bench(*args, **kw):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run(BENCH + [str(a) for a in args], capture_output=True, text=True, env=env, **kw)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("submit")
    build_full(root)
    (root / "tiny.toml").write_text(CONFIG)
    return root


def _common(root):
    return ["--data-root", root / "data", "--device", "cpu"]


def _status(results):
    """``status --json``, in-process (the CLI's own function; polled, so no interpreter start per call)."""
    res = CliRunner().invoke(main, ["status", str(results), "--json"])
    assert res.exit_code == 0, res.output
    return json.loads(res.output)


def _wait_jobs(results, n, timeout=300):
    """Until the last ``n`` recorded jobs are no longer RUNNING; their states."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        jobs = _status(results)["jobs"][-n:]
        if all(j["state"] != "RUNNING" for j in jobs):
            return [j["state"] for j in jobs]
        time.sleep(0.5)
    raise AssertionError(f"jobs still running after {timeout} s: {jobs}")


def _kill_jobs(results):
    """SIGKILL every recorded local job still alive (its controller and the task under it): a failing test
    leaves no process behind (submitit's tasks ignore SIGTERM)."""
    from benchmark.submit import read_jobs

    for sub in read_jobs(results) if results.is_dir() else []:
        for j in sub["jobs"]:
            pid = int(j["job_id"])
            children = Path(f"/proc/{pid}/task/{pid}/children")
            kids = children.read_text().split() if children.is_file() else []
            for p in [*map(int, kids), pid]:
                try:
                    os.kill(p, signal.SIGKILL)
                except ProcessLookupError:
                    pass


def _board(results):
    from benchmark.leaderboard import build_leaderboard

    b = build_leaderboard(results)
    out = {}
    for t in b["tables"]:
        for e in t["entries"]:
            out[(t["key"], e["criterion"], e["ratio"])] = {k: v for k, v in e.items() if k not in TIMING}
    runs = {r["id"]: {k: v for k, v in r.items() if k not in TIMING and not k.startswith("latency")}
            for r in b["runs"]}
    return out, {i: (r.get("top1"), r.get("steps"), r.get("epochs")) for i, r in runs.items()}


def test_slurm_without_sbatch_is_one_clear_error(tiny, tmp_path):
    if any((Path(p) / "sbatch").exists() for p in os.environ.get("PATH", "").split(os.pathsep)):
        pytest.skip("this machine has sbatch")
    proc = bench("submit", tiny / "tiny.toml", "--out", tmp_path / "r", "--executor", "slurm", *_common(tiny))
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "`sbatch` not found" in proc.stderr and "--executor local" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "r" / "submitit" / "jobs.json").exists()


def _invoke(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def test_a_bad_config_submits_nothing(tiny, tmp_path):
    res = _invoke("submit", tiny / "tiny.toml", "--out", tmp_path / "r", "--executor", "local", "--tasks", "2",
                  "--data-root", tmp_path / "nowhere", "--device", "cpu")
    assert res.exit_code == 2 and "full" in res.output and "submitted" not in res.output, res.output
    assert not (tmp_path / "r" / "submitit").exists()
    res = _invoke("submit", tiny / "tiny.toml", "--out", tmp_path / "r", "--executor", "local", "--tasks", "9",
                  *_common(tiny))
    assert res.exit_code == 2 and "--tasks 9" in res.output and "4 cells" in res.output, res.output
    res = _invoke("submit", tiny / "tiny.toml", "--out", tmp_path / "r", "--executor", "local", "--tasks", "2",
                  "--only-task", "2", *_common(tiny))
    assert res.exit_code == 2 and "--only-task 2" in res.output and "0..1" in res.output, res.output
    assert not (tmp_path / "r" / "submitit").exists()


def test_gpus_per_task_are_the_tasks_ddp_ranks_checked_as_run_checks_them(tiny, tmp_path):
    """--gpus-per-task G runs each cell on G ranks (run --nproc-per-node G), so submit makes run's DDP checks up
    front: a detection grid, which trains on one device, and a global batch that does not split are refused."""
    res = _invoke("submit", "detect_demo", "--out", tmp_path / "d", "--executor", "local", "--gpus-per-task", "2")
    assert res.exit_code == 2 and "--nproc-per-node 2: detection cells train on one device" in res.output, res.output
    res = _invoke("submit", tiny / "tiny.toml", "--out", tmp_path / "r", "--executor", "local", "--gpus-per-task",
                  "3", *_common(tiny))
    assert res.exit_code == 2 and "with --nproc-per-node 3" in res.output, res.output
    assert not (tmp_path / "r" / "submitit").exists() and not (tmp_path / "d").exists()


def test_status_of_a_missing_folder_is_a_clear_error(tmp_path):
    res = _invoke("status", tmp_path / "nope")
    assert res.exit_code == 2 and "nope" in res.output and "not found" in res.output, res.output


def test_the_task_checkpoints_as_itself_with_the_same_share():
    """submitit's requeue hook: checkpoint() resubmits the same callable (picklable, as submitit pickles it)
    for the same task index; the rerun resumes (run_grid with resume=True)."""
    import pickle

    import submitit

    from benchmark.config import load_config
    from benchmark.resolve import CellEnv
    from benchmark.submit import GridTask

    task = GridTask(load_config("demo"), CellEnv(results_dir="/tmp/x", device="cpu"), 3)
    again = pickle.loads(pickle.dumps(task.checkpoint(2)))
    assert isinstance(again, submitit.helpers.DelayedSubmission) and isinstance(task, submitit.helpers.Checkpointable)
    assert again.args == (2,) and again.kwargs == {}
    assert isinstance(again.function, GridTask) and again.function.num_tasks == 3
    assert again.function.cfg.name == "demo" and again.function.env == task.env


@pytest.fixture(scope="module")
def single(tiny):
    """The same grid run by one process (``run``), the reference leaderboard."""
    out = tiny / "single"
    one = bench("run", tiny / "tiny.toml", "--out", out, *_common(tiny), "--no-progress", "--threads", "1")
    assert one.returncode == 0, one.stderr[-3000:]
    return _board(out)


def _catch_mid_cell(results, timeout=300):
    """``(cell folder, pid)`` of a cell that has a checkpoint and no summary yet, with its lock holder."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        for lock in results.glob("*.lock"):
            d = results / lock.stem
            if (d / "checkpoints").is_dir() and any((d / "checkpoints").iterdir()) and not (d / "summary.json").exists():
                pid = lock.read_text().strip()
                if pid:
                    return d, int(pid)
        time.sleep(0.02)
    raise AssertionError("no cell could be caught mid-run")


def test_submit_local_two_tasks_both_finish(tiny, tmp_path):
    """The default-suite check: a 2-cell grid as 2 local array tasks; status reports both jobs and cells."""
    cfg = tmp_path / "two.toml"
    cfg.write_text(CONFIG.replace('"tiny_submit"', '"two"').replace('["random", "l1"]', '["l1"]'))
    results = tmp_path / "results"
    try:
        proc = bench("submit", cfg, "--out", results, "--executor", "local", "--tasks", "2", "--gpus-per-task", "0",
                     *_common(tiny), timeout=120)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        assert "task 0: job" in proc.stdout and "task 1: job" in proc.stdout and str(results.resolve()) in proc.stdout
        assert _wait_jobs(results, 2) == ["FINISHED", "FINISHED"]
    finally:
        _kill_jobs(results)
    st = _status(results)
    assert st["config"] == "two" and st["counts"]["done"] == 2 and len(st["cells"]) == 2, st
    assert [j["task_index"] for j in st["jobs"]] == [0, 1] and all(Path(j["log"]).is_file() for j in st["jobs"])
    human = bench("status", results)  # the real entry point once
    assert human.returncode == 0 and "two: 2 cells: 2 done" in human.stdout and "FINISHED" in human.stdout
    from benchmark.leaderboard import build_leaderboard
    assert sorted(r["id"] for r in build_leaderboard(results)["runs"]) == sorted(c["id"] for c in st["cells"])


@pytest.mark.heavy
def test_a_preempted_task_is_requeued_by_submitit_and_resumes(tiny, tmp_path, single):
    """SIGUSR2 (what SLURM sends before preemption or the time limit) to a task mid-cell: submitit calls
    GridTask.checkpoint, the controller reruns the task, and it resumes the partial cell."""
    results = tmp_path / "results"
    try:
        proc = bench("submit", tiny / "tiny.toml", "--out", results, "--executor", "local", "--tasks", "2",
                     "--gpus-per-task", "0", *_common(tiny), timeout=120)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        victim, pid = _catch_mid_cell(results)
        os.kill(pid, signal.SIGUSR2)
        assert _wait_jobs(results, 2) == ["FINISHED", "FINISHED"]
    finally:
        _kill_jobs(results)
    logs = "".join(p.read_text() for p in (results / "submitit").glob("*_log.*"))
    assert "Requeued job" in logs and "preempted" in logs, logs[-3000:]
    assert _status(results)["counts"]["done"] == 4
    assert _board(results) == single


@pytest.mark.heavy
def test_submit_local_two_tasks_one_killed_and_resubmitted_equals_one_run(tiny, tmp_path, single):
    from benchmark.config import parse_config
    from benchmark.runner import grid_states
    import tomllib

    results = tmp_path / "results"
    try:
        _submit_kill_resubmit(tiny, results)
    finally:
        _kill_jobs(results)
    assert _board(results) == single


def _submit_kill_resubmit(tiny, results):
    from benchmark.config import parse_config
    from benchmark.runner import grid_states
    import tomllib

    proc = bench("submit", tiny / "tiny.toml", "--out", results, "--executor", "local", "--tasks", "2",
                 "--gpus-per-task", "0", *_common(tiny), timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.count("job ") == 2 and f"status {results.resolve()}" in proc.stdout, proc.stdout
    owner = {r["id"]: r["task"] for r in grid_states(parse_config(tomllib.loads(CONFIG), "tiny.toml"), results, 2)}
    victim = _catch_mid_cell(results)
    os.kill(victim[1], signal.SIGSTOP)  # frozen mid-cell (holding its lock) while status looks, then killed
    running = _status(results)
    assert running["counts"]["running"] >= 1 and any(c["pid"] == str(victim[1]) for c in running["cells"])
    os.kill(victim[1], signal.SIGKILL)  # a real kill: no signal handler, no checkpoint() call
    states = _wait_jobs(results, 2)
    assert "ENDED" in states and "FINISHED" in states, states
    after = _status(results)
    assert after["counts"]["partial"] >= 1 and after["counts"]["running"] == 0, after["counts"]
    assert after["counts"]["done"] + after["counts"]["partial"] + after["counts"]["pending"] == 4
    task = owner[victim[0].name]
    again = bench("submit", tiny / "tiny.toml", "--out", results, "--executor", "local", "--tasks", "2",
                  "--only-task", task, "--gpus-per-task", "0", *_common(tiny), timeout=120)
    assert again.returncode == 0 and f"task {task}: job" in again.stdout, again.stdout + again.stderr
    assert _wait_jobs(results, 1) == ["FINISHED"]
    final = _status(results)
    assert final["counts"]["done"] == 4 and len(final["jobs"]) == 3, final
    human = bench("status", results).stdout
    assert "4 cells: 4 done" in human and "ENDED" in human, human


def test_local_tasks_get_their_own_gpus_and_too_few_are_refused(monkeypatch):
    """The GPU-only path's logic on CPU: task k of N takes the k-th slice of CUDA_VISIBLE_DEVICES (local tasks
    start together, so they must not share); N x G beyond what is visible, or ids that are not indices, refused."""
    from benchmark.submit import local_gpu_slice, local_gpus

    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2,3,5,7")
    assert local_gpus() == [2, 3, 5, 7]
    assert [local_gpu_slice(k, 2, 2) for k in range(2)] == [[2, 3], [5, 7]]
    assert [local_gpu_slice(k, 4, 1) for k in range(4)] == [[2], [3], [5], [7]]
    with pytest.raises(ValueError, match="needs 6 GPUs, and this machine shows 4"):
        local_gpu_slice(0, 3, 2)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "GPU-1a2b,GPU-3c4d")
    with pytest.raises(ValueError, match="not a list of GPU indices"):
        local_gpus()
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    assert local_gpus() == []


def test_status_asks_sacct_once_for_every_slurm_job(tmp_path, monkeypatch):
    """`status` reads SLURM job states through submitit's own SlurmJob/watcher with a stand-in `sacct` on PATH
    (the real command's --parsable2 output): ten recorded jobs, one sacct call, every state parsed."""
    from benchmark.status import grid_status

    bin_dir, calls = tmp_path / "bin", tmp_path / "calls.txt"
    bin_dir.mkdir()
    (bin_dir / "sacct").write_text(
        "#!/bin/sh\necho call >> " + str(calls) + "\necho 'JobID|State|NodeList'\n"
        + "".join(f"echo '77_{i}|{'COMPLETED' if i % 2 else 'RUNNING'}|node{i}'\n" for i in range(10)))
    (bin_dir / "sacct").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    results = tmp_path / "results"
    (results / "submitit").mkdir(parents=True)
    (results / "submitit" / "jobs.json").write_text(json.dumps({"submissions": [{
        "config": "x", "source": "x.toml", "executor": "slurm", "folder": str(results / "submitit"),
        "num_tasks": 10, "jobs": [{"task_index": i, "job_id": f"77_{i}"} for i in range(10)], "time": "t"}]}))
    status = grid_status(results)
    assert [j["state"] for j in status["jobs"]] == ["COMPLETED" if i % 2 else "RUNNING" for i in range(10)]
    assert calls.read_text().count("call") == 1
