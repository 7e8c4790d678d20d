"""Bad input to the builder (issue 13): a non-UTF-8 or unreadable class list, a dangling symlink in
the source tree, two builds into one ``--out``.  Each through the installed CLIs in subprocesses
(exit code, the named file, no traceback), then the corrected rerun in the same folder."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time

from build_helpers import SPEC, WNIDS, tree_digest
from errors_helpers import (BUILD, BUILD_ARGS, TOOL, build_cli, clean_root, good_build, read_manifest,  # noqa: F401
                            refused, run)

from imagenet52p.builder.writer import THROTTLE_ENV
from imagenet52p.fake import make_fake_imagenet


def test_non_utf8_class_list(clean_root, tmp_path):
    classes = tmp_path / "fish.txt"
    classes.write_bytes(b"n01440764\n\xff\xfe tench\n")
    out = tmp_path / "out"
    want = (str(classes), "UTF-8 text with one wnid per line")
    refused(build_cli(clean_root, out, classes), *want)
    refused(run(TOOL, "classes", "--set", classes), *want, rc=2)
    classes.write_text("\n".join(WNIDS) + "\n")  # corrected: the same commands work
    assert run(TOOL, "classes", "--set", classes).returncode == 0
    assert build_cli(clean_root, out, classes).returncode == 0
    assert run(TOOL, "verify", out).returncode == 0


def test_unreadable_class_list_names_the_file(clean_root, tmp_path):
    """A read error (EIO from /proc/self/mem) names the file and the errno's text, no traceback."""
    refused(build_cli(clean_root, tmp_path / "out", "/proc/self/mem"), "/proc/self/mem", "Input/output error")
    refused(run(TOOL, "classes", "--set", "/proc/self/mem"), "/proc/self/mem", "Input/output error")


def _tree_with_dangling_symlink(tmp_path):
    root = make_fake_imagenet(tmp_path / "src", WNIDS, SPEC)
    link = root / "train" / WNIDS[0] / "zz_dangling.JPEG"
    os.symlink(tmp_path / "gone" / "x.JPEG", link)
    return root, link, f"train/{WNIDS[0]}/zz_dangling.JPEG"


def test_dangling_symlink_is_skipped_and_listed(class_file, tmp_path):
    root, link, rel = _tree_with_dangling_symlink(tmp_path)
    out = tmp_path / "out"
    proc = build_cli(root, out, class_file)
    assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr
    m = read_manifest(out)
    entry = [e for e in m["skipped"] if e["source"] == rel]
    assert entry and entry[0]["split"] == "train" and "dangling symlink" in entry[0]["reason"], m["skipped"]
    assert m["splits"]["train"]["num_samples"] + m["splits"]["val"]["num_samples"] == len(WNIDS) * SPEC.train_per_class
    info = run(TOOL, "info", out)
    assert info.returncode == 0 and rel in info.stdout and "dangling symlink" in info.stdout, info.stdout
    assert "skipped (1)" in info.stdout
    assert run(TOOL, "verify", out).returncode == 0


def test_dangling_symlink_with_on_error_fail_names_it(class_file, tmp_path):
    root, link, rel = _tree_with_dangling_symlink(tmp_path)
    out = tmp_path / "out"
    refused(build_cli(root, out, class_file, "--on-error", "fail"), rel, "dangling symlink", "--on-error skip")
    link.unlink()  # corrected: the same command, in the same folder, builds
    assert build_cli(root, out, class_file, "--on-error", "fail").returncode == 0
    assert run(TOOL, "verify", out).returncode == 0


def _wait_for_lock(out, proc, timeout=60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        lock = out / ".lock"
        if lock.is_file() and lock.read_text().strip() == str(proc.pid):
            return
        assert proc.poll() is None, "the first build ended before taking the lock"
        time.sleep(0.02)
    raise AssertionError("the first build never took the lock")


def _start(root, out, classes, throttle: str) -> subprocess.Popen:
    env = dict(os.environ, **{THROTTLE_ENV: throttle})
    return subprocess.Popen([BUILD, "--root", str(root), "--out", str(out), "--classes", str(classes), *BUILD_ARGS],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)


def test_second_build_into_the_same_out_is_refused(clean_root, good_build, class_file, tmp_path):
    out = tmp_path / "out"
    first = _start(clean_root, out, class_file, "0.2")  # about 5 s of writing
    try:
        _wait_for_lock(out, first)
        second = build_cli(clean_root, out, class_file)
        text = refused(second, f"pid {first.pid}", str(out), "wait", "another --out")
        assert "permission" not in text.lower() and "space" not in text.lower(), text
        _, err = first.communicate(timeout=120)
    finally:
        if first.poll() is None:
            first.kill()
    assert first.returncode == 0 and "Traceback" not in err, err
    assert run(TOOL, "verify", out).returncode == 0
    assert tree_digest(out) == tree_digest(good_build)  # the first build is exactly the uninterrupted one


def test_lock_of_a_killed_build_does_not_block(clean_root, good_build, class_file, tmp_path):
    out = tmp_path / "out"
    first = _start(clean_root, out, class_file, "0.2")
    _wait_for_lock(out, first)
    os.killpg(first.pid, signal.SIGKILL)
    first.wait(timeout=60)
    assert (out / ".lock").read_text().strip() == str(first.pid)  # the stale pid is still written there
    proc = build_cli(clean_root, out, class_file)
    assert proc.returncode == 0, proc.stderr
    assert run(TOOL, "verify", out).returncode == 0
    assert tree_digest(out) == tree_digest(good_build)
    assert json.loads((out / "manifest.json").read_text())["skipped"] == []


def test_build_killed_before_recording_its_identity_does_not_block(clean_root, good_build, class_file, tmp_path):
    """What a kill between taking the lock and writing .build/build.json leaves must not block the rerun."""
    out = tmp_path / "out"
    (out / ".build").mkdir(parents=True)
    (out / ".build" / "build.json.tmp").write_text('{"form')
    (out / ".lock").write_text("999999\n")
    assert build_cli(clean_root, out, class_file).returncode == 0
    assert tree_digest(out) == tree_digest(good_build)
