"""Bad input to ``imagenet52p-bench`` through the installed CLI, in subprocesses: each probe gets one message
naming the file, option, key or cell, a non-zero exit and no traceback, and leaves its folder usable (the
corrected rerun succeeds).  Real failures only: a path under a regular file (NotADirectoryError, as root
too), ``/proc`` (read-only for everyone), two real processes on one results folder, a real partial cell."""
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from test_bench_runs import CONFIG, builds_and_config  # noqa: E402

BENCH = [str(Path(sys.executable).parent / "imagenet52p-bench")]

#: test_bench_runs' grid, smaller: random init (no pretraining), no baselines, two cells
MINI = (CONFIG.split("[[grid]]")[0].replace('weights = "pretrain"', 'weights = "none"')
        .replace('broken = "broken"\n', "").replace("p = 0.5", "p = 0.25").replace("q = 2.0", "q = 1.0")
        + '[baseline]\nunpruned = false\n\n[[grid]]\ncriterion = ["l1", "random"]\nratio = [0.5]\n')


def bench(*args, cwd=None):
    proc = subprocess.run(BENCH + [str(a) for a in args], capture_output=True, text=True, cwd=cwd, timeout=600)
    assert "Traceback" not in proc.stdout + proc.stderr, proc.stdout + proc.stderr
    return proc


def run_args(cfg, out, data, *extra):
    return ["run", cfg, "--out", out, "--data-root", data, "--device", "cpu", "--no-progress", "--threads", "1",
            *extra]


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    root = tmp_path_factory.mktemp("errors")
    data, cfg = builds_and_config(root, MINI, "mini.toml")
    return {"root": root, "data": data, "cfg": cfg}


def _config(env, name, text):
    path = env["root"] / name
    path.write_text(text)
    return path


def test_run_out_that_cannot_be_a_folder_is_refused(env, tmp_path):
    a_file = tmp_path / "a_file"
    a_file.write_text("x")
    for out, said in ((a_file, "is a file"), (a_file / "results", "Not a directory"),
                      (Path("/proc/helperG_results"), "/proc/helperG_results")):
        proc = bench(*run_args(env["cfg"], out, env["data"]))
        assert proc.returncode == 2 and str(out) in proc.stderr and said in proc.stderr, proc.stderr
    assert a_file.read_text() == "x"
    good = tmp_path / "results"
    proc = bench(*run_args(env["cfg"], good, env["data"]))
    assert proc.returncode == 0 and "2 done" in proc.stdout, proc.stdout + proc.stderr
    assert f"imagenet52p-bench leaderboard {good} --format html -o {good / 'report.html'}" in proc.stdout


@pytest.fixture(scope="module")
def done(env, tmp_path_factory):
    out = tmp_path_factory.mktemp("done") / "results"
    proc = bench(*run_args(env["cfg"], out, env["data"], "-v", "--workers", "0"))
    assert proc.returncode == 0 and "2 done" in proc.stdout, proc.stdout + proc.stderr
    assert "INFO" in proc.stderr  # -v after the subcommand
    return out


def test_leaderboard_output_paths(done, tmp_path):
    a_file = tmp_path / "a_file"
    a_file.write_text("x")
    for out, said in ((a_file / "board.md", "not a folder"), (Path("/proc/helperG/board.md"), "/proc"),
                      (Path("/nonexistent_top_helperG/board.md"), "filesystem root"),
                      (tmp_path, "is a folder")):
        proc = bench("leaderboard", done, "-o", out)
        assert proc.returncode == 2 and str(out) in proc.stderr and said in proc.stderr, proc.stderr
    assert not Path("/nonexistent_top_helperG").exists()
    target = tmp_path / "new" / "deeper" / "board.md"
    proc = bench("leaderboard", done, "-o", target)
    assert proc.returncode == 0 and target.is_file() and "created folder" in proc.stderr, proc.stderr
    assert "l1" in target.read_text()


def test_leaderboard_of_a_folder_without_runs(tmp_path):
    proc = bench("leaderboard", tmp_path)
    assert proc.returncode != 0 and f"no runs found in {tmp_path}" in proc.stderr, proc.stderr


def test_damaged_records_name_their_file(done, tmp_path):
    out = tmp_path / "results"
    shutil.copytree(done, out)
    summary = next(out.glob("*/summary.json"))
    good = summary.read_bytes()
    summary.write_text("{not json")
    proc = bench("leaderboard", out)
    assert proc.returncode == 2 and str(summary) in proc.stderr, proc.stderr
    doc = json.loads(good)
    del doc["cost"]
    summary.write_text(json.dumps(doc))
    proc = bench("leaderboard", out)
    assert proc.returncode == 2 and str(summary.parent) in proc.stderr and "'cost'" in proc.stderr, proc.stderr
    record = next((out / "experiments").glob("*.json"))
    record.write_bytes(b"\xff\xfe\x00bad")
    proc = bench("leaderboard", out)
    assert proc.returncode == 2 and str(record) in proc.stderr, proc.stderr
    summary.write_bytes(good)
    shutil.copy(done / "experiments" / record.name, record)
    assert bench("leaderboard", out).returncode == 0


def test_cli_help_version_and_option_names(env, done):
    assert bench("-h").returncode == 0 and "leaderboard" in bench("-h").stdout
    version = bench("--version")
    assert version.returncode == 0 and "imagenet52p-bench, version" in version.stdout
    assert "--workers" in bench("run", "-h").stdout and "--num-workers" not in bench("run", "-h").stdout
    proc = bench(*run_args(env["cfg"], done, env["data"], "--num-workers", "0"))  # the old name still works
    assert proc.returncode == 0 and "2 done" in proc.stdout, proc.stderr
    md = bench("leaderboard", done).stdout  # published numbers in percent, as ours
    assert "| 65.0 | 56.9 | 41.5 |" in md and "0.650" not in md, md[-3000:]


def test_invalid_cells_are_refused_before_anything_is_written(env, tmp_path):
    bad = MINI.replace('[[grid]]\ncriterion = ["l1", "random"]',
                       '[[grid]]\ncriterion = ["l1"]\nlayers = [["features.0", "nope.3"]]') + '\n[[grid]]\ncriterion = ["l1"]\nlayers = "vgg16"\n\n[[grid]]\ncriterion = ["l1"]\nclass_set = ["gone"]\n'
    bad = bad.replace('sub = "sub"', 'sub = "sub"\ngone = "no_such_build"')
    cfg = _config(env, "invalid.toml", bad)
    out = tmp_path / "results"
    proc = bench(*run_args(cfg, out, env["data"]))
    assert proc.returncode == 2, proc.stdout + proc.stderr
    for said in ("3 of 3 cells cannot run", "nope.3", "protocol 'vgg16'", "no_such_build"):
        assert said in proc.stderr, proc.stderr
    assert not out.exists()
    rows = json.loads(bench("list", cfg, "--out", out, "--data-root", env["data"], "--json").stdout)
    assert {r["state"] for r in rows} == {"invalid"} and all(r["problems"] for r in rows)
    weights = _config(env, "weights.toml", MINI.replace('weights = "none"', 'weights = "missing.pth"'))
    proc = bench(*run_args(weights, out, env["data"]))
    assert proc.returncode == 2 and "missing.pth" in proc.stderr and not out.exists(), proc.stderr
    model = _config(env, "model.toml", MINI.replace('name = "tinyvgg"', 'name = "nosuchnet"'))
    proc = bench(*run_args(model, out, env["data"]))
    assert proc.returncode == 2 and "unknown model 'nosuchnet'" in proc.stderr, proc.stderr
    typed = _config(env, "typed.toml", MINI.replace("p = 0.25", 'p = "fast"'))
    proc = bench(*run_args(typed, out, env["data"]))
    assert proc.returncode == 2 and str(typed) in proc.stderr and "[base] p = 'fast'" in proc.stderr, proc.stderr
    proc = bench(*run_args(env["cfg"], out, env["data"]))  # corrected: the same folder works
    assert proc.returncode == 0 and "2 done" in proc.stdout, proc.stderr


def _partial_results(env, out: Path) -> Path:
    """A real interrupted cell: the engine stopped after its first checkpoint (as if killed)."""
    import torch

    from benchmark.config import load_config
    from benchmark.resolve import CellEnv
    from benchmark.runner import run_grid

    torch.set_num_threads(1)
    cfg = load_config(env["cfg"])
    run_grid(cfg, CellEnv(results_dir=str(out), data_root=str(env["data"]), device="cpu", stop_after=1))
    for err in out.glob("*/error.json"):
        err.unlink()  # Stopped is recorded like a failure; without it the folder is what a kill leaves
    return next(p.parent for p in out.glob("*/checkpoints"))


def _files(d: Path) -> dict:
    return {p.relative_to(d): p.read_bytes() for p in sorted(d.rglob("*")) if p.is_file()}


def test_partial_cells_need_resume_and_are_never_deleted(env, tmp_path):
    out = tmp_path / "results"
    cell = _partial_results(env, out)
    before = _files(out)
    proc = bench(*run_args(env["cfg"], out, env["data"]))
    assert proc.returncode == 2 and cell.name in proc.stderr and "--resume" in proc.stderr, proc.stderr
    assert "clean" in proc.stderr and _files(out) == before  # refused before any work
    listed = bench("list", env["cfg"], "--out", out, "--data-root", env["data"], "--json").stdout
    states = {r["id"]: r["state"] for r in json.loads(listed)}
    assert set(states.values()) == {"partial"}
    proc = bench(*run_args(env["cfg"], out, env["data"], "--resume"))
    assert proc.returncode == 0 and "2 done" in proc.stdout, proc.stderr


def test_a_cell_held_by_another_process_is_skipped_naming_its_pid(env, tmp_path):
    from benchmark.grid import expand_grid
    from benchmark.config import load_config
    from benchmark.locks import cell_lock

    out = tmp_path / "results"
    out.mkdir()
    held = expand_grid(load_config(env["cfg"]))[0].id
    with cell_lock(out, held) as other:
        assert other is None
        proc = bench(*run_args(env["cfg"], out, env["data"]))
        assert proc.returncode == 0 and "1 done" in proc.stdout and "1 running" in proc.stdout, proc.stdout
        assert str(os.getpid()) in proc.stderr and held in proc.stderr, proc.stderr
        assert not (out / held).exists()
    proc = bench(*run_args(env["cfg"], out, env["data"]))
    assert proc.returncode == 0 and "2 done" in proc.stdout, proc.stderr
    assert not list(out.glob("*.lock"))  # a released lock leaves no file


def test_two_identical_runs_at_once_never_share_a_cell(env, tmp_path):
    cfg = _config(env, "four.toml", MINI.replace('["l1", "random"]', '["l1", "random", "apoz", "l2"]'))
    out = tmp_path / "results"
    cmd = BENCH + [str(a) for a in run_args(cfg, out, env["data"])]
    procs = [subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outs = [p.communicate(timeout=600) for p in procs]
    for p, (so, se) in zip(procs, outs):
        assert p.returncode == 0 and "Traceback" not in so + se, so + se
    cells = [p.parent for p in out.glob("*/cell.json")]
    assert len(cells) == 4
    for d in cells:
        assert (d / "summary.json").is_file() and not (d / "error.json").exists(), d
    done = sum(int(so.split(" done")[0].split()[-1]) for so, _ in outs if " done" in so)
    assert done >= 4
    # each cell was trained by exactly one process: a cell both had run would hold two baseline evaluations
    # in its event log (or a restarted one), and its summary would not be the one its last events describe
    for d in cells:
        events = [json.loads(line) for line in (d / "events.jsonl").read_text().splitlines()]
        assert [e["event"] for e in events].count("baseline") == 1, d
        assert json.loads((d / "summary.json").read_text())["run_hash"] == \
            json.loads((d / "config.json").read_text())["run_hash"], d


def test_clean_removes_failed_and_partial_cells_only(env, tmp_path):
    out = tmp_path / "results"
    with_broken = MINI.replace('sub = "sub"', 'sub = "sub"\nbroken = "broken"') + \
        '\n[[grid]]\ncriterion = ["l1"]\nratio = [0.5]\nclass_set = ["broken"]\n'
    cfg = _config(env, "clean.toml", with_broken)
    assert bench(*run_args(cfg, out, env["data"])).returncode == 1  # the broken cell fails at run time
    failed = next(p.parent for p in out.glob("*/error.json"))
    partial = sorted(p.parent for p in out.glob("*/summary.json"))[0]
    (partial / "summary.json").unlink()  # what a kill just before the summary leaves
    stale = out / "tinyvgg-full-prune-l1-r50-s9-deadbeef"
    stale.mkdir()
    shutil.copy(partial / "cell.json", stale / "cell.json")
    (stale / "config.json").write_text("{}")
    cell_done = {p.parent: _files(p.parent) for p in out.glob("*/summary.json")}
    assert len(cell_done) == 1
    dry = bench("clean", cfg, "--out", out, "--dry-run", "--stale")
    assert dry.returncode == 0 and f"would remove {failed}: failed" in dry.stdout, dry.stdout
    assert f"would remove {partial}: partial" in dry.stdout and f"would remove {stale}: stale" in dry.stdout
    assert failed.is_dir() and stale.is_dir() and partial.is_dir()
    proc = bench("clean", cfg, "--out", out)
    assert proc.returncode == 0 and f"removed {failed}" in proc.stdout and not failed.exists(), proc.stdout
    assert not partial.exists() and stale.is_dir()  # stale ones only with --stale
    assert bench("clean", cfg, "--out", out, "--stale").returncode == 0 and not stale.exists()
    assert {d: _files(d) for d in cell_done} == cell_done  # done cells untouched
    assert "nothing to clean" in bench("clean", cfg, "--out", out).stdout
    proc = bench(*run_args(cfg, out, env["data"]))  # the folder stays usable: the cleaned cells run again
    assert proc.returncode == 1 and "2 done" in proc.stdout and "1 failed" in proc.stdout, proc.stdout
