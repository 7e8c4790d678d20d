"""Bad builds as readers meet them (issue 13): a manifest of the wrong shape, shard paths that leave
the build, a raw ImageNet folder, ``verify --workers 0``.  Each through the installed
``imagenet52p verify`` / ``imagenet52p info`` (exit code, the named file and key, no traceback) and
``ImageNet52P``, then the corrected build in the same folder is read again."""

from __future__ import annotations

import copy
import os
import shutil

import pytest
from errors_helpers import (BUILD, TOOL, build_cli, clean_root, copy_build, good_build, read_manifest, refused,  # noqa: F401
                            run, write_manifest)

from imagenet52p import ImageNet52P
from imagenet52p.format import ManifestError


def _del(*keys):
    def edit(m):
        obj = m
        for k in keys[:-1]:
            obj = obj[k]
        del obj[keys[-1]]
        return m
    return edit


def _set(value, *keys):
    def edit(m):
        obj = m
        for k in keys[:-1]:
            obj = obj[k]
        obj[keys[-1]] = value
        return m
    return edit


SHAPES = {  # name: (edit of a good manifest, the key the message must name)
    "top-level list": (lambda m: [m], "top level"),
    "no splits": (_del("splits"), "'splits'"),
    "splits a list": (_set([], "splits"), "splits must be"),
    "split without shards": (_del("splits", "train", "shards"), "splits.train.shards"),
    "shard without sha256": (_del("splits", "train", "shards", 1, "sha256"), "splits.train.shards[1].sha256"),
    "shard without path": (_del("splits", "train", "shards", 0, "path"), "splits.train.shards[0].path"),
    "shard without num_samples": (_del("splits", "val", "shards", 0, "num_samples"),
                                  "splits.val.shards[0].num_samples"),
    "num_samples a string": (_set("3", "splits", "test", "shards", 2, "num_samples"),
                             "splits.test.shards[2].num_samples"),
    "sha256 not hex": (_set("xyz", "splits", "train", "shards", 0, "sha256"), "splits.train.shards[0].sha256"),
    "shard a string": (_set("train/x.tar", "splits", "train", "shards", 0), "splits.train.shards[0]"),
    "class_set without sha256": (_del("class_set", "sha256"), "class_set.sha256"),
    "skipped not a list": (_set({}, "skipped"), "skipped"),
    "ignored without count": (_set({}, "ignored"), "ignored.count"),
}


@pytest.mark.parametrize("name", list(SHAPES))
def test_wrong_shape_manifest_is_one_clear_error(good_build, tmp_path, name):
    out = copy_build(good_build, tmp_path / "b")
    good = read_manifest(out)
    edit, key = SHAPES[name]
    write_manifest(out, edit(copy.deepcopy(good)))
    manifest = str(out / "manifest.json")
    for cmd in ("verify", "info"):
        refused(run(TOOL, cmd, out), manifest, key, "rebuild")
    with pytest.raises(ManifestError) as exc:
        ImageNet52P(out, "train")
    assert manifest in str(exc.value) and key in str(exc.value) and "rebuild" in str(exc.value)
    write_manifest(out, good)  # the corrected build reads again
    assert run(TOOL, "verify", out).returncode == 0
    assert run(TOOL, "info", out).returncode == 0
    assert len(ImageNet52P(out, "train")) == good["splits"]["train"]["num_samples"]


def _escape_cases(out, other, shard):
    """(name, manifest path of train shard 0, symlink to plant at the shard's own path or None)."""
    return [("dot-dot to /etc/passwd", "../../../../../../../../etc/passwd", None),
            ("absolute path", "/etc/passwd", None),
            ("another build's valid shard", f"../{other.name}/{shard}", None),
            ("symlink leaving the build", shard, other / shard)]


@pytest.mark.parametrize("case", range(4))
def test_shard_paths_must_stay_inside_the_build(good_build, clean_root, class_file, tmp_path, case):
    other = tmp_path / "other"
    assert build_cli(clean_root, other, class_file).returncode == 0  # a second real build, same content
    out = copy_build(good_build, tmp_path / "b")
    good = read_manifest(out)
    shard = good["splits"]["train"]["shards"][0]["path"]
    name, path, link = _escape_cases(out, other, shard)[case]
    bad = copy.deepcopy(good)
    bad["splits"]["train"]["shards"][0]["path"] = path
    write_manifest(out, bad)
    if link is not None:
        os.replace(out / shard, tmp_path / "kept.tar")
        os.symlink(link, out / shard)
    where = "splits.train.shards[0].path"
    text = refused(run(TOOL, "verify", out), str(out / "manifest.json"), where)
    assert "absolute path" in text or "outside the build folder" in text, name
    assert "OK" not in text
    with pytest.raises(ManifestError, match=r"splits\.train\.shards\[0\]\.path"):
        ImageNet52P(out, "train")
    if link is not None:  # the corrected build, in the same folder, verifies and reads again
        (out / shard).unlink()
        os.replace(tmp_path / "kept.tar", out / shard)
    write_manifest(out, good)
    assert run(TOOL, "verify", out).returncode == 0
    assert sum(1 for _ in ImageNet52P(out, "train", shuffle=False)) == good["splits"]["train"]["num_samples"]


def test_symlinked_shard_inside_the_build_is_read(good_build, tmp_path):
    """A symlink that stays inside the build is fine (only leaving the build is refused)."""
    out = copy_build(good_build, tmp_path / "b")
    shard = read_manifest(out)["splits"]["train"]["shards"][0]["path"]
    os.replace(out / shard, out / "kept.tar")
    os.symlink(out / "kept.tar", out / shard)
    assert run(TOOL, "verify", out).returncode == 0
    assert len(ImageNet52P(out, "train")) > 0


def test_raw_imagenet_folder_is_not_a_build(clean_root, class_file, tmp_path):
    hint = f"build-imagenet52p --root {clean_root} --out DIR"
    with pytest.raises(FileNotFoundError, match="is not a build") as exc:
        ImageNet52P(clean_root, "train")
    assert hint in str(exc.value)
    for cmd in ("info", "verify"):
        refused(run(TOOL, cmd, clean_root), "is not a build", hint)
    out = tmp_path / "DIR"  # the advice works
    assert build_cli(clean_root, out, class_file).returncode == 0
    assert len(ImageNet52P(out, "train")) > 0


def test_verify_workers_0_is_refused_like_the_builder(good_build, clean_root, class_file, tmp_path):
    text = refused(run(TOOL, "verify", good_build, "--workers", "0"), "--workers must be a positive integer, got 0")
    builder = refused(run(BUILD, "--root", clean_root, "--out",
                          tmp_path / "o", "--classes", class_file, "--workers", "0"), "--workers")
    assert text.strip().splitlines()[-1] == builder.strip().splitlines()[-1]
    assert run(TOOL, "verify", good_build, "--workers", "2").returncode == 0


def test_unfinished_build_still_says_resume(good_build, tmp_path):
    out = copy_build(good_build, tmp_path / "b")
    (out / "manifest.json").unlink()
    refused(run(TOOL, "info", out), "did not finish", "resume")
    shutil.rmtree(out / ".build")
    refused(run(TOOL, "info", out), "did not finish")  # shards alone still mean an unfinished build


@pytest.mark.parametrize("name", ["manifest.json", "classes.json"])
def test_read_error_names_the_file(good_build, tmp_path, name):
    """A file that fails on read (EIO: a symlink to /proc/self/mem) is named, with the errno's text."""
    out = copy_build(good_build, tmp_path / "b")
    os.replace(out / name, tmp_path / name)
    os.symlink("/proc/self/mem", out / name)
    for cmd in ("verify", "info") if name == "manifest.json" else ("verify",):
        refused(run(TOOL, cmd, out), str(out / name), "Input/output error")
    (out / name).unlink()
    os.replace(tmp_path / name, out / name)
    assert run(TOOL, "verify", out).returncode == 0
