"""A run that cannot write (a full disk, an unwritable folder) says which file and that it resumes; progress
bars and labels; Ctrl-C says how to continue.  Every failure is real: the full disk is ``/dev/full`` (writes
fail with ENOSPC, and torch.save with its own ``unexpected pos`` RuntimeError) reached through a symlink at
the path the run writes; the unwritable folder is a path under a regular file (root ignores chmod) and, when
not root, a folder of mode 0o500."""

from __future__ import annotations

import errno
import json
import os
import signal

import pytest
import torch

import pruning
from benchmark.synthetic import synthetic_splits
from pruning.files import writing
from pruning.loop import Interrupted, RunOptions, WriteError, make_model, prune_finetune
from pruning.loop.stages import progress_bar

pytestmark = [pytest.mark.usefixtures("one_thread"),
              pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full")]

QUIET = RunOptions(device="cpu", progress=False)


@pytest.fixture(scope="module")
def data():
    return synthetic_splits(3, 8, 4, 4, size=16, seed=0)


def _run(data, out, ratio=0.5, options=QUIET, train=None, **kw):
    kw = {"p": 0, "q": 1, "batch_size": 8, **kw}
    return prune_finetune(make_model("tinyvgg", 3, seed=0), "l1" if ratio else None, ratio, "all",
                          train if train is not None else data[0], data[1], out_dir=out, options=options, **kw)


def _same(a: dict, b: dict) -> bool:
    drop = ("timing", "code_version")
    return {k: v for k, v in a.items() if k not in drop} == {k: v for k, v in b.items() if k not in drop}


def _assert_resumable(err: WriteError, file) -> None:
    msg = str(err)
    assert isinstance(err, OSError) and err.filename == str(file) and str(file) in msg and "--resume" in msg


def test_a_full_disk_at_the_checkpoint_names_it_and_the_run_resumes(tmp_path, data):
    reference = _run(data, tmp_path / "ref")
    out = tmp_path / "run"
    (out / "checkpoints").mkdir(parents=True)
    tmp = out / "checkpoints" / "last.pt.tmp"  # where torch.save writes before the atomic rename
    tmp.symlink_to("/dev/full")
    with pytest.raises(WriteError) as info:
        _run(data, out)
    _assert_resumable(info.value, out / "checkpoints" / "last.pt")
    assert info.value.errno == errno.ENOSPC and "No space left on device" in str(info.value)
    assert "unexpected pos" not in str(info.value)
    tmp.unlink()  # space again
    assert _same(_run(data, out, resume=True), reference)


@pytest.mark.parametrize("name", ["events.jsonl", "summary.json"])
def test_a_full_disk_at_a_json_file_names_it(tmp_path, data, name):
    out = tmp_path / "run"
    out.mkdir()
    target = out / (name if name == "events.jsonl" else f"{name}.{os.getpid()}.tmp")
    target.symlink_to("/dev/full")
    with pytest.raises(WriteError) as info:
        _run(data, out)
    _assert_resumable(info.value, out / name)
    assert "No space left on device" in str(info.value)


def test_an_unwritable_out_dir_names_it_before_anything_runs(tmp_path, data):
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    with pytest.raises(WriteError) as info:
        _run(data, blocker / "run")
    _assert_resumable(info.value, blocker / "run")
    with pytest.raises(ValueError, match="is a file, not a directory"):
        _run(data, blocker)
    if os.geteuid() != 0:  # root writes through mode bits
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o500)
        with pytest.raises(WriteError) as info:
            _run(data, locked / "run")
        assert info.value.errno == errno.EACCES


def test_torch_save_failures_become_write_errors(tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    with pytest.raises(WriteError) as info:  # torch's "Parent directory ... does not exist"
        with writing(blocker / "w.pt"):
            torch.save({"w": torch.zeros(3)}, blocker / "w.pt")
    _assert_resumable(info.value, blocker / "w.pt")
    with pytest.raises(WriteError) as info:  # torch's "unexpected pos 704 vs 598"
        with writing("/dev/full"):
            torch.save({"w": torch.zeros(10_000)}, "/dev/full")
    assert info.value.errno == errno.ENOSPC and "No space left on device" in str(info.value)
    with pytest.raises(WriteError, match="cannot write"):
        pruning.save_pruned(make_model("tinyvgg", 3), {}, blocker / "model")
    with pytest.raises(RuntimeError, match="not a write"):  # any other RuntimeError passes through
        with writing(tmp_path / "x"):
            raise RuntimeError("not a write")


# ------------------------------------------------------------------ progress bars, labels, Ctrl-C
def test_no_bars_when_stderr_is_not_a_terminal_and_labels_name_the_phase(tmp_path, data, capfd, caplog):
    assert progress_bar(10, "x", True).disable  # pytest's stderr is no terminal
    with caplog.at_level("INFO", logger="pruning.loop.stages"):
        _run(data, tmp_path / "base", ratio=0, options=RunOptions(device="cpu", progress=True))
    assert "\r" not in capfd.readouterr().err
    assert "training epoch 1/1" in caplog.text and "final" not in caplog.text.replace("final_", "")
    caplog.clear()
    with caplog.at_level("INFO", logger="pruning.loop.stages"):
        _run(data, tmp_path / "pruned", p=1, options=RunOptions(device="cpu", progress=True))
    assert "final fine-tune epoch 1/1" in caplog.text and "layer step 1 fine-tune features.12" in caplog.text


class _CtrlC(torch.utils.data.TensorDataset):
    """Training images that press Ctrl-C (a real SIGINT to this process) at the ``at``-th image read (l1 reads
    none while scoring, so 12 is the middle of the final fine-tune)."""

    def __init__(self, base, at: int):
        super().__init__(*base.tensors)
        self.reads, self.at = 0, at

    def __getitem__(self, i):
        self.reads += 1
        if self.reads == self.at:
            os.kill(os.getpid(), signal.SIGINT)
        return super().__getitem__(i)


def test_ctrl_c_says_that_resume_continues_and_it_does(tmp_path, data):
    reference = _run(data, tmp_path / "ref")
    out = tmp_path / "run"
    with pytest.raises(Interrupted) as info:
        _run(data, out, train=_CtrlC(data[0], at=12))
    assert isinstance(info.value, KeyboardInterrupt)
    assert "--resume" in str(info.value) and str(out) in str(info.value)
    assert (out / "checkpoints" / "last.pt").exists()
    assert _same(_run(data, out, resume=True), reference)
    assert json.loads((out / "summary.json").read_text())["run_hash"] == reference["run_hash"]
