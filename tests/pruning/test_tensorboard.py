"""``imagenet52p prune --tensorboard`` (pruning/loop/tensorboard.py): every numeric field of every event of
``events.jsonl`` as a TensorBoard scalar, read back with tensorboard's own ``EventAccumulator``; a resumed run
shows each step once; without the package, a one-line error.  Real tiny runs (tinyvgg on a tiny build)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
from click.testing import CliRunner

from benchmark.prune_cli import main
from imagenet52p.classes import load_class_set

pytest.importorskip("tensorboard", reason="the test extra: pip install tensorboard")
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator  # noqa: E402

WNIDS = load_class_set("imagenet52p").wnids[:4]
pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def build(tmp_path_factory):
    from imagenet52p.builder import BuildConfig, build_dataset
    from imagenet52p.fake import FakeSpec, make_fake_imagenet
    base = tmp_path_factory.mktemp("tbdata")
    make_fake_imagenet(base / "tree", WNIDS, FakeSpec(train_per_class=10, val_per_class=2, width=40, height=32))
    (base / "classes.txt").write_text("\n".join(WNIDS) + "\n")
    build_dataset(BuildConfig(root=base / "tree", out=base / "build", classes=str(base / "classes.txt"),
                              val_per_class=3, seed=0, workers=1, shard_size=40, progress=False))
    return base / "build"


ARGS = ["--model", "tinyvgg", "--criterion", "l1", "--ratio", "0.5", "--layers", "features.12,features.4",
        "--p", "0.5", "--q", "2", "--batch-size", "8", "--image-size", "32", "--device", "cpu", "--workers", "0",
        "--no-progress"]


def prune(build, out, *extra):
    result = CliRunner().invoke(main, ["prune", "--data", str(build), "--out", str(out), *ARGS, *extra])
    assert result.exit_code == 0, result.output + repr(result.exception)
    return result


def numeric_fields(value, path: str) -> dict[str, float]:
    """Every int/float (not bool) inside ``value``, by "/"-joined path of dict keys and list indices."""
    if isinstance(value, dict):
        return {k: v for key, x in value.items() for k, v in numeric_fields(x, f"{path}/{key}").items()}
    if isinstance(value, list):
        return {k: v for i, x in enumerate(value) for k, v in numeric_fields(x, f"{path}/{i}").items()}
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return {path: value}
    return {}


def expected(run) -> dict[tuple[str, int], float]:
    """(tag, step) -> value for every numeric field of every line of events.jsonl (step = line index),
    as TensorBoard stores a scalar (32-bit float)."""
    out = {}
    for i, line in enumerate((run / "events.jsonl").read_text().splitlines()):
        ev = json.loads(line)
        kind = ev.pop("event")
        out.update({(tag, i): float(np.float32(v)) for tag, v in numeric_fields(ev, kind).items()})
    return out


def logged(run) -> list[tuple[str, int, float]]:
    acc = EventAccumulator(str(run / "tensorboard"), size_guidance={"scalars": 0})
    acc.Reload()
    return [(tag, s.step, s.value) for tag in acc.Tags()["scalars"] for s in acc.Scalars(tag)]


def test_every_numeric_event_field_is_a_scalar_at_its_event_index(build, tmp_path):
    run = tmp_path / "run"
    prune(build, run, "--tensorboard")
    kinds = [json.loads(line)["event"] for line in (run / "events.jsonl").read_text().splitlines()]
    assert kinds == ["baseline", "layer_step", "layer_step", "epoch", "epoch", "test"]
    want = expected(run)
    got = logged(run)
    assert len(got) == len(want)  # each (tag, step) once
    assert {(t, s): v for t, s, v in got} == want
    tags = {t for t, _, _ in got}
    assert {"baseline/params", "layer_step/acc_damage/top1", "layer_step/timing/score_s", "epoch/val/top5",
            "epoch/images_total", "test/test/top1", "layer_step/per_layer/features.4/1"} <= tags


def test_resume_shows_each_step_once_with_the_final_values(build, tmp_path):
    """A run cut back to an earlier checkpoint (as a kill between an event and its checkpoint leaves it):
    the resumed writer purges the steps from there, and writes them again."""
    run = tmp_path / "run"
    from benchmark.run import RunSpec, run_spec
    from pruning.loop import LoopConfig, RunOptions, Stopped
    cfg = LoopConfig(criterion="l1", ratio=0.5, layers=("features.12", "features.4"), p=0.5, q=2, batch_size=8)
    spec = RunSpec(model="tinyvgg", data=str(build), image_size=32)
    opts = dict(device="cpu", progress=False, num_workers=0, tensorboard=True, keep_step_checkpoints=True)
    with pytest.raises(Stopped):  # checkpoints: baseline, step_00, step_01 (events 0, 1, 2 written)
        run_spec(spec, cfg, run, RunOptions(**opts, stop_after=3))
    before = {(t, s) for t, s, _ in logged(run)}
    assert {s for _, s in before} == {0, 1, 2}
    shutil.copy(run / "checkpoints" / "step_00.pt", run / "checkpoints" / "last.pt")  # back to 2 events
    run_spec(spec, cfg, run, RunOptions(**opts), resume=True)
    assert (run / "summary.json").is_file()
    got = logged(run)
    assert len(got) == len(expected(run))  # step 2 (the second layer step) is not there twice
    assert {(t, s): v for t, s, v in got} == expected(run)  # its values are the resumed run's


def test_missing_tensorboard_is_one_line_saying_pip_install(build, tmp_path):
    shadow = tmp_path / "shadow" / "tensorboard"
    shadow.mkdir(parents=True)
    (shadow / "__init__.py").write_text("raise ImportError('No module named tensorboard (shadowed by the test)')\n")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(shadow.parent), os.environ.get("PYTHONPATH", "")]))
    r = subprocess.run([sys.executable, "-m", "benchmark.prune_cli", "prune", "--data", str(build), "--out",
                        str(tmp_path / "run"), *ARGS, "--tensorboard"], capture_output=True, text=True, env=env,
                       timeout=300)
    assert r.returncode == 1
    assert "pip install tensorboard" in r.stderr and "Traceback" not in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert not (tmp_path / "run" / "tensorboard").exists()
