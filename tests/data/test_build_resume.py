"""Crash and resume, refusing other builds, verify, and the installed CLIs (real subprocesses)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest
from build_helpers import BIN, WNIDS, build, tree_digest
from click.testing import CliRunner

from imagenet52p.builder import BuildError, verify_build
from imagenet52p.builder.sources import Source
from imagenet52p.builder.writer import THROTTLE_ENV, Sample, ShardTask, write_shard
from imagenet52p.cli import main as imagenet52p_main
from imagenet52p.fake import FakeSpec, make_fake_imagenet

BUILD = str(BIN / "build-imagenet52p")
TOOL = str(BIN / "imagenet52p")


def run(*args, env=None, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([str(a) for a in args], capture_output=True, text=True, env=env, timeout=300, **kw)


@pytest.fixture(scope="module")
def medium(tmp_path_factory, class_file):
    """A 4-class tree with 12 train + 3 val images per class, and an uninterrupted reference build."""
    base = tmp_path_factory.mktemp("medium")
    make_fake_imagenet(base / "src", WNIDS, FakeSpec(train_per_class=12, val_per_class=3, width=40, height=32))
    ref = base / "ref"
    r = run(BUILD, "--root", base / "src", "--out", ref, "--classes", class_file, "--val-per-class", 2,
            "--shard-size", 2, "--eval-shard-size", 2, "--workers", 1, "--quiet")
    assert r.returncode == 0, r.stderr
    assert "split" in r.stdout and "train" in r.stdout and "wall s" in r.stdout  # the summary table
    return base / "src", ref


def test_kill_9_then_rerun_equals_uninterrupted_build(medium, class_file, tmp_path):
    src, ref = medium
    out = tmp_path / "out"
    args = [BUILD, "--root", src, "--out", out, "--classes", class_file, "--val-per-class", 2, "--shard-size", 2,
            "--eval-shard-size", 2, "--workers", 2, "--quiet"]
    env = dict(os.environ, **{THROTTLE_ENV: "0.05"})
    proc = subprocess.Popen([str(a) for a in args], env=env, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline and len(list((out / "train").glob("*.tar"))) < 4:
        time.sleep(0.02)
    os.killpg(proc.pid, signal.SIGKILL)  # the CLI and its worker processes
    proc.wait()
    done = sorted((out / "train").glob("*.tar"))
    total = len(list((ref / "train").glob("*.tar")))
    assert 4 <= len(done) < total, "the build was not killed part-way"
    assert not (out / "manifest.json").exists()
    inodes = {p.name: p.stat().st_ino for p in done}
    with pytest.raises(FileNotFoundError, match="no complete build"):
        verify_build(out)
    r = run(*args)  # resume, no throttle
    assert r.returncode == 0, r.stderr
    assert tree_digest(out) == tree_digest(ref)
    assert not list(out.rglob("*.tmp"))
    kept = [n for n, ino in inodes.items() if (out / "train" / n).stat().st_ino == ino]
    assert kept, "no finished shard was reused"


def test_resume_rebuilds_a_damaged_shard_and_reuses_the_rest(medium, class_file, tmp_path):
    src, ref = medium
    out = tmp_path / "out"
    shutil.copytree(ref, out)
    victim = sorted((out / "train").glob("*.tar"))[1]
    data = bytearray(victim.read_bytes())
    data[700] ^= 0xFF
    victim.write_bytes(bytes(data))
    other = sorted((out / "train").glob("*.tar"))[0]
    ino = other.stat().st_ino
    build(src, out, class_file, val_per_class=2, shard_size=2, eval_shard_size=2)
    assert tree_digest(out) == tree_digest(ref)
    assert other.stat().st_ino == ino  # reused, not rewritten


def test_out_holding_a_different_build_is_refused_unless_overwrite(medium, class_file, tmp_path):
    src, ref = medium
    out = tmp_path / "out"
    shutil.copytree(ref, out)
    with pytest.raises(BuildError, match=r"different build \(.*seed: 0 -> 1"):
        build(src, out, class_file, val_per_class=2, shard_size=2, eval_shard_size=2, seed=1)
    assert (out / "manifest.json").exists()  # untouched
    r = run(BUILD, "--root", src, "--out", out, "--classes", "imagenet52p", "--quiet", "--allow-missing")
    assert r.returncode != 0 and "different build" in r.stderr and "--overwrite" in r.stderr
    m = build(src, out, class_file, val_per_class=2, shard_size=3, eval_shard_size=2, overwrite=True)
    assert m["options"]["shard_size"] == 3 and verify_build(out) == []
    names = {p.name for p in (out / "train").glob("*.tar")}
    assert names == {Path(sh["path"]).name for sh in m["splits"]["train"]["shards"]}  # no stale shards


def test_non_empty_foreign_out_dir_is_refused(medium, class_file, tmp_path):
    src, _ = medium
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "thesis.tex").write_text("precious")
    with pytest.raises(BuildError, match="not empty and holds no imagenet52p build"):
        build(src, tmp_path / "out", class_file, val_per_class=2)
    build(src, tmp_path / "out", class_file, val_per_class=2, overwrite=True)
    assert (tmp_path / "out" / "thesis.tex").read_text() == "precious"
    (tmp_path / "file").write_text("x")
    with pytest.raises(BuildError, match="not a directory"):
        build(src, tmp_path / "file", class_file, val_per_class=2)


def test_unwritable_out_fails_cleanly(medium, class_file, tmp_path):
    """/sys refuses new files even to root: the build stops with a clear error and no manifest."""
    src, _ = medium
    if not Path("/sys/kernel").is_dir():
        pytest.skip("needs Linux /sys")
    with pytest.raises(BuildError, match="cannot write to --out /sys/kernel/imagenet52p-out"):
        build(src, "/sys/kernel/imagenet52p-out", class_file, val_per_class=2)
    sample = Sample("k", 0, Source("train", WNIDS[0], "x.JPEG", 0, str(src / "none")), 0, None)
    task = ShardTask("train", 0, "x.tar", "/sys/kernel", (sample,), "0", None, 90, False, "skip")
    with pytest.raises(BuildError, match="cannot write shard /sys/kernel/x.tar"):
        write_shard(task)


def test_verify_catches_a_flipped_byte_and_a_missing_shard(medium, tmp_path):
    _, ref = medium
    out = tmp_path / "out"
    shutil.copytree(ref, out)
    r = run(TOOL, "verify", out)
    assert r.returncode == 0 and "OK" in r.stdout, r.stderr
    shard = sorted((out / "val").glob("*.tar"))[0]
    data = bytearray(shard.read_bytes())
    data[len(data) // 3] ^= 0x01
    shard.write_bytes(bytes(data))
    r = run(TOOL, "verify", out, "--workers", "2")
    assert r.returncode == 1
    assert f"val/{shard.name}" in r.stderr and "sha256 mismatch" in r.stderr
    (out / "test" / sorted(p.name for p in (out / "test").glob("*.tar"))[-1]).unlink()
    problems = verify_build(out)
    assert len(problems) == 2 and any("missing" in p for p in problems)


def test_on_error_fail_names_the_file(quirky, class_file, tmp_path):
    src, _ = quirky
    r = run(BUILD, "--root", src, "--out", tmp_path / "out", "--classes", class_file, "--val-per-class", 1,
            "--on-error", "fail", "--workers", 1, "--quiet")
    assert r.returncode == 1
    assert "bad image" in r.stderr and "--on-error skip" in r.stderr
    assert any(n in r.stderr for n in ("_empty.JPEG", "_trunc.JPEG", "_garbage.JPEG"))
    assert not (tmp_path / "out" / "manifest.json").exists()


def test_cli_errors_and_info(medium, class_file, tmp_path):
    src, ref = medium
    r = run(BUILD, "--root", tmp_path, "--out", tmp_path / "o", "--classes", class_file)
    assert r.returncode == 1 and "matches no ImageNet layout" in r.stderr
    r = run(BUILD, "--root", src, "--out", tmp_path / "o", "--classes", "nope")
    assert r.returncode == 1 and "unknown class set" in r.stderr
    r = run(BUILD, "--root", src, "--out", tmp_path / "o", "--layout", "zip")
    assert r.returncode == 2 and "zip" in r.stderr
    res = CliRunner().invoke(imagenet52p_main, ["info", str(ref)])
    assert res.exit_code == 0 and "fish4 (4 classes" in res.output and "train" in res.output
    man = json.loads((ref / "manifest.json").read_text())
    assert str(man["splits"]["train"]["num_samples"]) in res.output
    res = CliRunner().invoke(imagenet52p_main, ["info", str(tmp_path)])
    assert res.exit_code == 1 and "manifest.json does not exist" in res.output


def test_cli_help_lists_every_option():
    r = run(BUILD, "--help")
    assert r.returncode == 0
    for opt in ("--root", "--out", "--classes", "--val-per-class", "--seed", "--workers", "--shard-size",
                "--layout", "--resize", "--on-error", "--allow-missing", "--overwrite"):
        assert opt in r.stdout


def test_info_and_verify_refuse_another_format_version(medium, tmp_path):
    """The CLIs read manifests through the dataset's loader: a manifest of another format version is
    refused with a clear message, not summarised or verified as if it were format 1."""
    _, ref = medium
    out = tmp_path / "future"
    shutil.copytree(ref, out)
    man = json.loads((out / "manifest.json").read_text())
    (out / "manifest.json").write_text(json.dumps(dict(man, format=2)))
    res = CliRunner().invoke(imagenet52p_main, ["info", str(out)])
    assert res.exit_code == 1 and "format 2" in res.output and "format 1" in res.output
    with pytest.raises(ValueError, match="format 2"):
        verify_build(out)
    (out / "manifest.json").write_text("{not json")
    res = CliRunner().invoke(imagenet52p_main, ["verify", str(out)])
    assert res.exit_code == 1 and "not valid JSON" in res.output
