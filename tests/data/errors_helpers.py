"""Helpers of the data floor's bad-input tests (import with ``from errors_helpers import ...``):
a clean fake ImageNet tree, a real small build of it, and running the installed CLIs."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest
from build_helpers import BIN, SPEC, WNIDS

from imagenet52p.fake import make_fake_imagenet

BUILD = str(BIN / "build-imagenet52p")
TOOL = str(BIN / "imagenet52p")
BUILD_ARGS = ("--val-per-class", "1", "--workers", "1", "--shard-size", "5", "--eval-shard-size", "3", "--quiet")


def run(*args, env=None) -> subprocess.CompletedProcess:
    return subprocess.run([str(a) for a in args], capture_output=True, text=True, env=env, timeout=300)


def refused(proc: subprocess.CompletedProcess, *names: str, rc: int = 1) -> str:
    """Assert a clean refusal: exit code ``rc``, no traceback, every name in the message; return it."""
    text = proc.stdout + proc.stderr
    assert proc.returncode == rc, text
    assert "Traceback" not in text, text
    for name in names:
        assert name in text, (name, text)
    return text


def build_cli(root, out, classes, *extra, env=None) -> subprocess.CompletedProcess:
    return run(BUILD, "--root", root, "--out", out, "--classes", classes, *BUILD_ARGS, *extra, env=env)


@pytest.fixture(scope="session")
def clean_root(tmp_path_factory) -> Path:
    """A 4-class folders tree without quirks."""
    return make_fake_imagenet(tmp_path_factory.mktemp("clean") / "imagenet", WNIDS, SPEC)


@pytest.fixture(scope="session")
def good_build(clean_root, class_file, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("good") / "build"
    proc = build_cli(clean_root, out, class_file)
    assert proc.returncode == 0, proc.stderr
    return out


def copy_build(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst, symlinks=True)
    return dst


def read_manifest(out: Path) -> dict:
    return json.loads((Path(out) / "manifest.json").read_text())


def write_manifest(out: Path, obj) -> None:
    (Path(out) / "manifest.json").write_text(json.dumps(obj, indent=1))
