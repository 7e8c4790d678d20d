"""`make demo` end to end: synthetic tree -> two builds -> the `demo` config -> leaderboard + HTML.
The default test uses --tiny (fewer images per class, same config and cells); the full demo is heavy."""
import json
import subprocess
import sys
from pathlib import Path

import pytest

DEMO = [sys.executable, str(Path(__file__).resolve().parents[2] / "scripts" / "demo.py")]


def _check(out: Path, stdout: str, sfx: str):
    assert "SYNTHETIC DATA" in stdout
    report = out / f"report{sfx}.html"
    assert f"HTML report: {report.resolve()}" in stdout
    html = report.read_text()
    assert "SYNTHETIC DATA" in html and html.count("data:image/png;base64,") >= 6
    board = json.loads((out / f"leaderboard{sfx}.json").read_text())
    assert len(board["runs"]) == 18 and all(r["state"] == "done" for r in board["runs"])
    tables = {t["class_set"]: t for t in board["tables"]}
    assert set(tables) == {"full", "imagenet52p"}
    for t in tables.values():
        assert t["criteria"] == ["apoz", "l1", "mean_activation", "random"] and t["ratios"] == [0.25, 0.5]
        assert t["baseline"]["n"] == 1
        for e in t["entries"]:
            assert 0 <= e["top1"] <= 1 and e["macs_reduction"] > 0.2 and e["damage"] is not None
    # the subset build has 52 classes, the full one 104: different class lists
    assert tables["full"]["entries"][0]["class_sha256"] != tables["imagenet52p"]["entries"][0]["class_sha256"]
    return board


def test_demo_tiny_end_to_end_and_rerun_reuses_everything(tmp_path):
    out = tmp_path / "demo"
    first = subprocess.run(DEMO + ["--tiny", "--quiet", "--out", str(out)], capture_output=True, text=True)
    assert first.returncode == 0, first.stderr[-3000:]
    board = _check(out, first.stdout, "_tiny")
    assert "| Criterion | 25% | 50% |" in first.stdout
    second = subprocess.run(DEMO + ["--tiny", "--quiet", "--out", str(out)], capture_output=True, text=True)
    assert second.returncode == 0
    assert second.stdout.count("reusing build") == 2 and "'done': 18" in second.stdout
    again = json.loads((out / "leaderboard_tiny.json").read_text())
    assert [r["top1"] for r in again["runs"]] == [r["top1"] for r in board["runs"]]


@pytest.mark.heavy
def test_demo_full_size(tmp_path):
    out = tmp_path / "demo"
    proc = subprocess.run(DEMO + ["--quiet", "--out", str(out)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    _check(out, proc.stdout, "")
