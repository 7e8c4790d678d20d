"""`imagenet52p prune` on bad input, through the installed console script in subprocesses: one message naming
the option or file, a non-zero exit, no traceback, and a folder the corrected command then uses; plus the
end-of-run table, Ctrl-C, and the `criteria` / `layers` commands."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))
from conftest import cli  # noqa: E402
from test_loop_cli import build  # noqa: E402,F401  (the module-scoped 6-class build fixture)

BASE = ["--model", "tinyvgg", "--criterion", "l1", "--ratio", "0.5", "--p", "0.25", "--q", "1", "--batch-size",
        "16", "--image-size", "32", "--device", "cpu", "--workers", "0", "--no-progress", "--threads", "1"]


def prune(build, out, *extra, ok=None, base=BASE):
    args = [cli("imagenet52p"), "prune", "--data", str(build), "--out", str(out), *base, *extra]
    r = subprocess.run(args, capture_output=True, text=True, timeout=600)
    text = r.stdout + r.stderr
    assert "Traceback" not in text, text
    if ok is True:
        assert r.returncode == 0, text
    if ok is False:
        assert r.returncode != 0, text
    return r.returncode, text


def _refused(build, out, args, *names):
    rc, text = prune(build, out, *args, ok=False)
    for name in names:
        assert name in text, (args, text)
    return text


def test_bad_options_name_the_option_and_leave_the_folder_usable(tmp_path, build):
    out = tmp_path / "run"
    cases = [(["--device", "foo"], "--device"), (["--num-classes", "3"], "--num-classes"),
             (["--image-size", "4"], "--image-size"), (["--layers", "features.99"], "features.99"),
             (["--criterion-options", '{"bins": 5}'], "bins"),
             (["--criterion", "class_specific"], "class")]
    for args, name in cases:
        _refused(build, out, args, name)
        # nothing that blocks the corrected command: no checkpoint, and no run of another configuration
        assert not (out / "checkpoints").exists(), args
    rc, text = prune(build, out, ok=True)  # the corrected command, same --out
    assert (out / "summary.json").is_file()


def test_weights_files_that_are_not_state_dicts(tmp_path, build):
    text_file, empty, pickled = tmp_path / "w.txt", tmp_path / "empty.pt", tmp_path / "model.pt"
    text_file.write_text("not weights\n")
    empty.write_bytes(b"")
    from pruning.loop import make_model
    torch.save(make_model("tinyvgg", 6, seed=0), pickled)  # a whole pickled model, not a state_dict
    for f in (text_file, empty, pickled):
        text = _refused(build, tmp_path / f"run_{f.stem}", ["--weights", str(f)], str(f))
        assert "Aborted" not in text and "weights_only=False" not in text, text
        assert "state_dict" in text, text


def test_an_output_folder_that_cannot_be_made(tmp_path, build):
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    text = _refused(build, blocker / "run", [], str(blocker))
    rc, text = prune(build, tmp_path / "run_ok", ok=True)


def test_a_damaged_checkpoint_on_resume_names_the_file(tmp_path, build):
    out = tmp_path / "run"
    prune(build, out, ok=True)
    (out / "summary.json").unlink()
    ck = out / "checkpoints" / "last.pt"
    assert ck.is_file()
    ck.write_bytes(b"garbage, not a checkpoint")
    _refused(build, out, ["--resume"], "last.pt")


def test_a_run_ends_with_a_table_per_layer_step(tmp_path, build):
    rc, text = prune(build, tmp_path / "run", "--layers", "features.12,features.4", ok=True)
    lines = text.splitlines()
    header = next(i for i, line in enumerate(lines) if line.split()[:3] == ["step", "layer", "kept"])
    assert lines[header + 1].split()[:3] == ["0", "features.12", "32/64"]
    assert lines[header + 2].split()[:3] == ["1", "features.4", "16/32"]
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert f"{100 * summary['steps'][0]['damage']:.2f}" in lines[header + 1]
    assert f"{summary['steps'][1]['params']:,}" in lines[header + 2]
    assert any(line.startswith("val top-1:") and "test top-1" in line for line in lines)


def test_ctrl_c_says_how_to_resume_and_the_rerun_continues(tmp_path, build):
    out = tmp_path / "run"
    base = [a if a != "1" or prev != "--q" else "40" for prev, a in zip([None, *BASE], BASE)]  # a long final fine-tune
    args = [cli("imagenet52p"), "prune", "--data", str(build), "--out", str(out), *base]
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 300
    while not (out / "checkpoints" / "last.pt").is_file() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.2)
    assert proc.poll() is None, proc.communicate()
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=300)
    assert proc.returncode == 130 and "--resume" in stderr and "Traceback" not in stdout + stderr, stderr
    assert not (out / "summary.json").exists()
    r = subprocess.run(args + ["--resume"], capture_output=True, text=True, timeout=900)  # the same command
    assert r.returncode == 0 and "Traceback" not in r.stdout + r.stderr, r.stderr
    assert (out / "summary.json").is_file()


def test_criteria_and_layers_commands_come_from_the_library():
    import pruning
    r = subprocess.run([cli("imagenet52p"), "criteria", "--json"], capture_output=True, text=True, check=True)
    rows = json.loads(r.stdout)
    assert [x["name"] for x in rows] == pruning.list_criteria()
    assert next(x for x in rows if x["name"] == "class_specific")["requires_classes"] is True
    assert next(x for x in rows if x["name"] == "entropy")["options"] == {"bins": 10}
    r = subprocess.run([cli("imagenet52p"), "layers", "vgg16", "--json"], capture_output=True, text=True, check=True)
    layers = json.loads(r.stdout)["layers"]
    assert len(layers) == 13 and all("vgg16" in x["protocols"] for x in layers)
    assert layers[0] == {"name": "features.28", "filters": 512, "activation": True, "protocols": ["vgg16", "all"]}
    r = subprocess.run([cli("imagenet52p"), "layers", "resnet50"], capture_output=True, text=True, check=True)
    assert "resnet50-16: 16" in r.stdout and "resnet50-32: 32" in r.stdout
    r = subprocess.run([cli("imagenet52p"), "layers", "vgg17"], capture_output=True, text=True)
    assert r.returncode == 2 and "no model 'vgg17'" in r.stderr and "Traceback" not in r.stderr


def test_a_second_run_on_a_folder_in_use_is_refused_naming_the_pid(tmp_path, build):
    """While a run is in its baseline its folder holds only config.json and an empty events.jsonl, like a
    failed start: a second command on that --out (another configuration, or the same one) is refused naming
    the running one's pid, and never replaces or mixes into the running one's record."""
    out = tmp_path / "run"
    base = [a if a != "1" or prev != "--q" else "5000" for prev, a in zip([None, *BASE], BASE)]  # runs for long
    first = subprocess.Popen([cli("imagenet52p"), "prune", "--data", str(build), "--out", str(out), *base],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 300
        while not (out / "config.json").is_file() and time.time() < deadline and first.poll() is None:
            time.sleep(0.05)
        config = (out / "config.json").read_text()
        for extra in (["--ratio", "0.25"], []):
            rc, text = prune(build, out, *extra, ok=False, base=base)
            assert f"pid {first.pid}" in text and "in use by another run" in text, text
        assert first.poll() is None and (out / "config.json").read_text() == config  # untouched
    finally:
        first.send_signal(signal.SIGINT)
        stdout, stderr = first.communicate(timeout=300)
    assert first.returncode == 130 and "--resume" in stderr, stderr
    assert json.loads(config)["config"]["ratio"] == 0.5
