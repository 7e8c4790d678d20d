"""The runner on real builds and real training runs (tinyvgg on synthetic images):
failure recording, leaderboard numbers against the run summaries, output formats,
the HTML report in headless Chromium, and kill-then-resume giving the same leaderboard."""
import base64
import csv
import io
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

import pytest

from imagenet52p.classes import load_class_set
from imagenet52p.fake import FakeSpec, make_fake_imagenet

BENCH = [sys.executable, "-m", "benchmark.cli"]
TIMING = {"speedup", "latency_ms"}

CONFIG = """
name = "tiny"
description = "test grid"
reference = ["paper_table1"]

[data]
full = "full"
sub = "sub"
broken = "broken"
image_size = 24
resize = 24
train_scale_min = 0.7
latency_batch_size = 2

[model]
name = "tinyvgg"
weights = "pretrain"

[pretrain]
epochs = 3
lr = 0.05
batch_size = 16

[base]
layers = "all"
p = 0.5
q = 2.0
lr = 0.01
batch_size = 16
score_images = 32

[[grid]]
criterion = ["random", "l1"]
ratio = [0.5]
seed = [0, 1]

[[grid]]
criterion = ["apoz"]
ratio = [0.5]
class_set = ["sub"]

[[grid]]
criterion = ["l1"]
ratio = [0.5]
class_set = ["broken"]
"""


def make_builds(root: Path) -> Path:
    """A 6-class "full" build and a 3-class subset of it, from a synthetic tree."""
    from imagenet52p.builder import BuildConfig, build_dataset

    sub = load_class_set("imagenet52p").wnids[:3]
    full = sorted(sub + load_class_set("random52").wnids[:3])
    tree = root / "tree"
    make_fake_imagenet(tree, full, FakeSpec(train_per_class=12, val_per_class=4, width=32, height=24, seed=1))
    data = root / "data"
    for name, wnids in (("full", full), ("sub", sub)):
        lst = root / f"{name}.txt"
        lst.write_text("\n".join(wnids) + "\n")
        build_dataset(BuildConfig(root=tree, out=data / name, classes=str(lst), val_per_class=3, seed=0,
                                  shard_size=40, eval_shard_size=20, workers=1, progress=False))
    return data


def make_broken_build(data: Path) -> Path:
    """``data/broken``: the subset build with its training shards removed. It passes the checks made before
    any cell runs (a build folder with a manifest) and fails when the cell reads its data."""
    broken = data / "broken"
    shutil.copytree(data / "sub", broken)
    for shard in (broken / "train").glob("*.tar"):
        shard.unlink()
    return broken


def builds_and_config(root: Path, text: str, name: str) -> tuple[Path, Path]:
    """:func:`make_builds` and :func:`make_broken_build` under ``root``, and the config ``text`` written to
    ``root/name``: ``(data root, config file)``."""
    data = make_builds(root)
    make_broken_build(data)
    cfg = root / name
    cfg.write_text(text)
    return data, cfg


def run_doc(root: Path, doc: dict, source: str):
    """Builds from :func:`make_builds` under ``root`` and every cell of the config ``doc`` run in-process on
    CPU (one thread): ``(config, results folder, state counts, data root)``."""
    import torch

    from benchmark.config import parse_config
    from benchmark.resolve import CellEnv
    from benchmark.runner import run_grid

    torch.set_num_threads(1)
    data = make_builds(root)
    cfg = parse_config(doc, source)
    results = root / "results"
    counts = run_grid(cfg, CellEnv(results_dir=str(results), data_root=str(data), device="cpu"))
    return cfg, results, counts, data


def run_cli(args, **kw):
    return subprocess.run(BENCH + args, capture_output=True, text=True, **kw)


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("bench")
    data, cfg = builds_and_config(root, CONFIG, "tiny.toml")
    results = root / "results"
    proc = run_cli(["run", str(cfg), "--out", str(results), "--data-root", str(data), "--device", "cpu",
                    "--no-progress", "--threads", "1"])
    return {"root": root, "data": data, "cfg": cfg, "results": results, "proc": proc}


def board(results):
    out = run_cli(["leaderboard", str(results), "--format", "json"], check=True).stdout
    return json.loads(out)


def test_failing_cell_is_recorded_and_the_rest_complete(setup):
    proc, results = setup["proc"], setup["results"]
    assert proc.returncode == 1, proc.stderr[-3000:]  # a failed cell makes the exit status 1
    assert "2 failed" in proc.stdout and "8 done" in proc.stdout, proc.stdout
    states = json.loads(run_cli(["list", str(setup["cfg"]), "--out", str(results), "--data-root", str(setup["data"]),
                                 "--json"], check=True).stdout)
    assert len(states) == 10
    for s in states:
        assert s["state"] == ("failed" if s["class_set"] == "broken" else "done"), s
    err = json.loads((results / next(s["id"] for s in states if s["class_set"] == "broken") / "error.json").read_text())
    assert err["type"] == "FileNotFoundError" and "broken" in err["message"], err
    md = run_cli(["leaderboard", str(results)], check=True).stdout
    assert "FileNotFoundError" in md and "failed" in md


def test_a_build_whose_classes_json_does_not_match_its_manifest_fails_its_cell(setup, tmp_path):
    """classes.json is read through imagenet52p.dataset.load_classes, so a copy mixing two builds is refused
    (before, the other build's classes were used silently)."""
    data = tmp_path / "data"
    shutil.copytree(setup["data"] / "sub", data / "mixed")
    shutil.copy(setup["data"] / "full" / "classes.json", data / "mixed" / "classes.json")
    shutil.copytree(setup["data"] / "full", data / "full")
    cfg = tmp_path / "mixed.toml"
    cfg.write_text(CONFIG.split("[[grid]]")[0].replace('broken = "broken"', 'mixed = "mixed"')
                   + '[baseline]\nunpruned = false\n\n[[grid]]\ncriterion = ["l1"]\nratio = [0.5]\n'
                   'class_set = ["mixed"]\n')
    proc = run_cli(["run", str(cfg), "--out", str(tmp_path / "results"), "--data-root", str(data),
                    "--device", "cpu", "--no-progress"])
    assert proc.returncode == 1 and "1 failed" in proc.stdout, proc.stdout + proc.stderr[-3000:]
    err = json.loads(next((tmp_path / "results").glob("*/error.json")).read_text())
    assert err["type"] == "ValueError", err
    assert "classes.json" in err["message"] and "manifest.json" in err["message"], err["message"]
    assert not (tmp_path / "results" / "_pretrain").exists()  # refused before any training


def _summary(results, run_id):
    return json.loads((results / run_id / "summary.json").read_text())


def test_leaderboard_numbers_equal_the_run_summaries(setup):
    results = setup["results"]
    b = board(results)
    tables = {t["class_set"]: t for t in b["tables"]}
    assert set(tables) == {"full", "sub", "broken"}
    full = tables["full"]
    assert full["criteria"] == ["l1", "random"] and full["ratios"] == [0.5]
    checked = 0
    for e in full["entries"] + [full["baseline"]]:
        assert e["n"] == 2 and e["seeds"] == [0, 1]
        sums = [_summary(results, i) for i in e["ids"]]
        top1 = [s["test"]["top1"] for s in sums]
        assert e["top1"] == pytest.approx(statistics.mean(top1), abs=1e-12)
        assert e["top1_std"] == pytest.approx(statistics.stdev(top1), abs=1e-12)
        top5 = [s["test"]["top5"] for s in sums]
        assert e["top5"] == pytest.approx(statistics.mean(top5), abs=1e-12)
        red = [1 - s["cost"]["macs"] / s["baseline"]["macs"] for s in sums]
        assert e["macs_reduction"] == pytest.approx(statistics.mean(red), abs=1e-12)
        if e["criterion"] != "none":
            dmg = [statistics.mean(st["acc_before"]["top1"] - st["acc_damage"]["top1"] for st in s["steps"])
                   for s in sums]
            rec = [statistics.mean(st["acc_recovery"]["top1"] - st["acc_damage"]["top1"] for st in s["steps"])
                   for s in sums]
            assert e["damage"] == pytest.approx(statistics.mean(dmg), abs=1e-12)
            assert e["recovery"] == pytest.approx(statistics.mean(rec), abs=1e-12)
            assert e["macs_reduction"] > 0.3  # half the filters of every conv removed
            assert len(sums[0]["steps"]) == 4  # tinyvgg: 4 conv layers, one step each
        else:
            assert e["macs_reduction"] == 0
        imgs = [s["images"]["finetune_total"] for s in sums]
        assert e["images_finetune"] == statistics.mean(imgs)
        assert e["speedup"] is not None and e["speedup"] > 0
        assert len(e["class_sha256"]) == 1 and len(e["class_sha256"][0]) == 64
        assert e["device"] == ["cpu"] and e["code_version"] and e["hash"]
        checked += 1
    assert checked == 3
    sub = tables["sub"]
    assert sub["entries"][0]["n"] == 1 and sub["entries"][0]["top1_std"] is None
    assert sub["baseline"] is not None
    # ranking: one column (full, 50%) with two criteria
    ranks = {o["criterion"]: o for o in b["overall"]}
    assert set(ranks) == {"l1", "random"}
    better = max(full["entries"], key=lambda e: e["top1"])["criterion"]
    full_by_crit = {e["criterion"]: e for e in full["entries"]}
    if full["entries"][0]["top1"] != full["entries"][1]["top1"]:
        assert ranks[better]["norm_rank"] == 0.0 and ranks[better]["wins"] == 1
    for e in full["entries"]:  # one column: the ranking's means are that column's entries
        o = ranks[e["criterion"]]
        assert o["columns"] == 1 and o["mean_top1"] == e["top1"] and o["mean_damage"] == e["damage"]
    # seeds 0 and 1 of l1 and random pair up: the paired mean difference is the difference of the means
    l1, rnd = full_by_crit["l1"], full_by_crit["random"]
    assert ranks["l1"]["vs_random"] == pytest.approx(l1["top1"] - rnd["top1"], abs=1e-12)
    assert ranks["l1"]["vs_random_n"] == 2 and ranks["l1"]["vs_random_unpaired"] == 0
    top1 = {(r["criterion"], r["seed"]): r["top1"] for r in b["runs"] if r["class_set"] == "full" and r["ratio"]}
    d = [top1["l1", s] - top1["random", s] for s in (0, 1)]
    assert ranks["l1"]["vs_random_std"] == pytest.approx(statistics.stdev(d), abs=1e-12)
    assert ranks["random"]["vs_random"] is None  # the reference itself


def test_formats_agree(setup):
    results = setup["results"]
    b = board(results)
    rows = list(csv.DictReader(io.StringIO(run_cli(["leaderboard", str(results), "--format", "csv"],
                                                   check=True).stdout)))
    n_entries = sum(len(t["entries"]) + (t["baseline"] is not None) for t in b["tables"])
    assert len(rows) == n_entries
    full_l1 = next(r for r in rows if r["class_set"] == "full" and r["criterion"] == "l1")
    entry = next(e for t in b["tables"] if t["class_set"] == "full" for e in t["entries"] if e["criterion"] == "l1")
    assert float(full_l1["top1"]) == pytest.approx(entry["top1"])
    md = run_cli(["leaderboard", str(results), "--format", "md"], check=True).stdout
    assert "| Criterion | 50% |" in md
    assert f"{100 * entry['top1']:.2f} ± {100 * entry['top1_std']:.2f} (2)" in md
    assert "NOT measured" in md and "| 66.7 |" in md  # the reference section (in percent), kept apart


def _chromium():
    return shutil.which("chromium") or shutil.which("chromium-browser")


PROBE = """<script>
window.addEventListener('load', () => {
  const imgs = [...document.images];
  document.body.setAttribute('data-images', imgs.length);
  document.body.setAttribute('data-decoded', imgs.filter(i => i.complete && i.naturalWidth > 0).length);
  document.body.setAttribute('data-tables', document.querySelectorAll('table').length);
});
</script></body>"""


@pytest.mark.skipif(_chromium() is None, reason="needs Debian chromium (run scripts/ensure_chromium.sh)")
def test_html_report_renders_in_headless_chromium(setup, tmp_path):
    results = setup["results"]
    page = tmp_path / "report.html"
    run_cli(["leaderboard", str(results), "--format", "html", "-o", str(page), "--note", "synthetic"], check=True)
    text = page.read_text()
    assert "http://" not in text and "https://" not in text  # self-contained
    n_img = text.count("data:image/png;base64,")
    assert n_img >= 3
    for chunk in text.split("data:image/png;base64,")[1:]:
        png = base64.b64decode(chunk.split('"', 1)[0])
        assert png.startswith(b"\x89PNG")
    probe = tmp_path / "probe.html"
    probe.write_text(text.replace("</body>", PROBE))
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             f"--user-data-dir={tmp_path / 'profile'}", "--virtual-time-budget=5000"]
    dom = subprocess.run([_chromium(), *flags, "--dump-dom", probe.as_uri()], capture_output=True, text=True,
                         timeout=120).stdout
    assert f'data-images="{n_img}"' in dom, dom[:500]
    assert f'data-decoded="{n_img}"' in dom  # every embedded PNG decoded by the browser
    n_tables = text.count("<table")
    assert f'data-tables="{n_tables}"' in dom
    assert 'class="leaderboard"' in dom and 'id="reference"' in dom
    assert dom.index('id="our-results"') < dom.index('id="reference"')
    shot = tmp_path / "shot.png"
    subprocess.run([_chromium(), *flags, f"--screenshot={shot}", "--window-size=1200,2000", page.as_uri()],
                   capture_output=True, timeout=120)
    assert shot.is_file() and shot.stat().st_size > 10_000


def _metrics(b):
    out = {}
    for t in b["tables"]:
        for e in t["entries"] + ([t["baseline"]] if t["baseline"] else []):
            out[(t["key"], e["criterion"], e["ratio"])] = {k: v for k, v in e.items() if k in (
                "top1", "top1_std", "top5", "val_top1", "damage", "recovery", "params", "macs", "macs_reduction",
                "epochs_to_recover", "images_finetune", "n", "n_failed", "seeds", "errors", "ids", "hash",
                "class_sha256")}
    curves = {r["id"]: (r.get("steps"), r.get("epochs"), r.get("top1")) for r in b["runs"]}
    return out, curves


def test_kill_and_resume_gives_the_same_leaderboard(setup, tmp_path):
    results = tmp_path / "results"
    cmd = BENCH + ["run", str(setup["cfg"]), "--out", str(results), "--data-root", str(setup["data"]),
                   "--device", "cpu", "--no-progress", "--threads", "1"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    victim, deadline = None, time.time() + 600
    while victim is None and proc.poll() is None and time.time() < deadline:
        for d in results.glob("tinyvgg-*"):
            if (d / "checkpoints").is_dir() and any((d / "checkpoints").iterdir()) and \
                    not (d / "summary.json").exists() and any(Path(results).glob("*/summary.json")):
                victim = d
                break
        time.sleep(0.02)
    assert victim is not None, "the runner finished before it could be killed"
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    states = json.loads(run_cli(["list", str(setup["cfg"]), "--out", str(results), "--data-root", str(setup["data"]),
                                 "--json"], check=True).stdout)
    assert {s["id"]: s["state"] for s in states}[victim.name] == "partial"
    refused = subprocess.run(cmd, capture_output=True, text=True)  # without --resume: refused, nothing deleted
    assert refused.returncode == 2 and victim.name in refused.stderr and "--resume" in refused.stderr
    assert (victim / "checkpoints").is_dir()
    again = subprocess.run(cmd + ["--resume"], capture_output=True, text=True)
    assert again.returncode == 1 and "8 done" in again.stdout, again.stderr[-3000:]
    assert (victim / "summary.json").is_file()
    got, want = _metrics(board(results)), _metrics(board(setup["results"]))
    assert got[0] == want[0]
    assert got[1] == want[1]
