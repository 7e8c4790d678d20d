"""A results folder written before the three-floor move (issue 12) is still recognised as done.

``fixtures/results_v2/`` holds the ``cell.json``, ``config.json``, ``summary.json`` and ``bench.json`` of
every cell of ``fixtures/results_v2.toml`` (a baseline, weight/gradient/class-specific criteria on the full
set and a subset with both heads, and the ``scratch``/``reduced`` kinds), as the code of commit 835218f
(before the move) wrote them on the builds of :func:`test_bench_runs.make_builds`.  Regenerate with that
commit checked out: ``run_grid(parse_config(results_v2.toml), CellEnv(results_dir=..., data_root=
make_builds(root), device="cpu", num_workers=0))``, then copy those four files of each cell."""
import json
import shutil
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from test_bench_runs import make_builds  # noqa: E402

from benchmark.config import load_config  # noqa: E402
from benchmark.grid import expand_grid  # noqa: E402
from benchmark.leaderboard import build_leaderboard  # noqa: E402
from benchmark.resolve import CellEnv  # noqa: E402
from benchmark.runner import grid_states, run_grid  # noqa: E402

FIX = Path(__file__).resolve().parent / "fixtures"


def test_cell_ids_of_results_written_before_the_move_are_unchanged():
    cells = expand_grid(load_config(FIX / "results_v2.toml"))
    stored = {p.name: json.loads((p / "cell.json").read_text()) for p in (FIX / "results_v2").iterdir()}
    assert sorted(c.id for c in cells) == sorted(stored)
    for c in cells:
        assert stored[c.id]["hash"] == c.hash and stored[c.id]["loop"] == c.identity()["loop"]
    baselines = [c for c in cells if c.is_baseline]
    assert baselines and all(c.criterion is None for c in baselines)  # modelled: no criterion
    from pruning.loop.config import run_hash
    for c in baselines:  # the engine's run hash too, so an interrupted baseline would resume
        written = json.loads((FIX / "results_v2" / c.id / "config.json").read_text())
        assert written["config"]["criterion"] == "none"
        assert run_hash(c.loop_config, written["meta"]) == written["run_hash"]
        assert c.loop_config.hash() == written["config_hash"]  # the leaderboard's "Run config hash"


def test_interrupted_runs_written_before_the_move_resume(tmp_path):
    """Every fixture cell with its summary removed (so only the engine's config.json says what it ran) resumes
    under the new code: the engine refuses a run directory whose run hash differs, so this checks that every
    cell's engine configuration (score_classes, the scratch/reduced architectures' loop) is the one before."""
    data = make_builds(tmp_path)
    cfg = load_config(FIX / "results_v2.toml")
    results = tmp_path / "results"
    shutil.copytree(FIX / "results_v2", results)
    for summary in results.glob("*/summary.json"):
        summary.unlink()
    assert {s["state"] for s in grid_states(cfg, results)} == {"partial"}
    env = CellEnv(results_dir=str(results), data_root=str(data), device="cpu", num_workers=0)
    counts = run_grid(cfg, env, resume=True)
    errors = {p.parent.name: json.loads(p.read_text())["message"] for p in results.glob("*/error.json")}
    assert errors == {} and counts["done"] == len(list((FIX / "results_v2").iterdir()))


def test_results_folder_written_before_the_move_is_done_and_nothing_reruns(tmp_path):
    data = make_builds(tmp_path)
    cfg = load_config(FIX / "results_v2.toml")
    results = tmp_path / "results"
    shutil.copytree(FIX / "results_v2", results)
    before = {p.relative_to(results): p.read_bytes() for p in results.rglob("*") if p.is_file()}
    assert {s["state"] for s in grid_states(cfg, results)} == {"done"}
    env = CellEnv(results_dir=str(results), data_root=str(data), device="cpu", num_workers=0)
    counts = run_grid(cfg, env, resume=True)
    assert counts == {"done": len(before) // 4, "failed": 0, "partial": 0, "pending": 0}
    after = {p.relative_to(results): p.read_bytes() for p in results.rglob("*") if p.is_file()}
    cell_files = {k: v for k, v in after.items() if k.parts[0] != "experiments"}
    assert cell_files == before  # nothing re-run, re-measured or rewritten
    board = build_leaderboard(results)
    assert board["tables"] and all(t["baseline"] is not None for t in board["tables"] if t["kind"] == "prune")
    assert len(board["runs"]) == len(before) // 4


def test_done_cells_are_not_refused_when_their_builds_have_moved(tmp_path):
    """A finished results folder whose builds are no longer where the config says: nothing is left to run, so
    `run` reports it done instead of refusing the grid over builds it does not need."""
    cfg = load_config(FIX / "results_v2.toml")
    results = tmp_path / "results"
    shutil.copytree(FIX / "results_v2", results)
    env = CellEnv(results_dir=str(results), data_root=str(tmp_path / "moved_away"), device="cpu", num_workers=0)
    counts = run_grid(cfg, env, resume=True)
    assert counts["done"] == len(list((FIX / "results_v2").iterdir())) and counts["failed"] == 0


def test_explicit_conv_names_are_checked_as_the_engine_takes_them(tmp_path):
    """Up-front validation accepts any Conv2d of the model, as the engine and apply_plan do (a coupled conv such
    as a downsample included), and names a module that is not a conv."""
    from benchmark.config import parse_config
    from benchmark.validate import grid_problems

    doc = {"name": "convs", "data": {"full": str(tmp_path)}, "model": {"name": "resnet18", "weights": "none"},
           "baseline": {"unpruned": False},
           "grid": [{"criterion": "l1", "ratio": 0.5, "layers": [["layer1.0.conv2", "layer2.0.downsample.0"]]},
                    {"criterion": "l1", "ratio": 0.5, "layers": [["layer1.0.bn1"]]}]}
    cfg = parse_config(doc, "convs.toml")
    problems = grid_problems(cfg, expand_grid(cfg), CellEnv(results_dir=str(tmp_path / "r")))
    layer_problems = {cid: [p for p in found if "layers" in p] for cid, found in problems.items()}
    bad = [cid for cid, found in layer_problems.items() if found]
    assert len(bad) == 1 and "layer1.0.bn1" in layer_problems[bad[0]][0]
