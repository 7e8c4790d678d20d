"""Speed of recovery (paper Fig. 1c): ``epochs_to_peak`` is measured under a constant final LR, where it
can come out below ``q``; under an annealed LR it is not reported (the peak would be where the LR ends)."""

from __future__ import annotations

import pytest
import torch

from pruning.loop import RunOptions, make_model, prune_finetune
from benchmark.synthetic import pretrain, synthetic_splits

QUIET = RunOptions(progress=False, device="cpu")
Q = 5


@pytest.fixture(scope="module")
def setup():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    # an easy task (little noise): the pretrained model is near-perfect and a mildly pruned one recovers at once
    data = synthetic_splits(4, 24, 12, 4, size=24, seed=0, noise=8.0)
    model = pretrain(make_model("tinyvgg", 4, seed=0), data[0], epochs=6, lr=0.05, batch_size=16)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    yield data, state
    torch.set_num_threads(n)


def _run(setup, schedule):
    data, state = setup
    model = make_model("tinyvgg", 4, seed=0)
    model.load_state_dict(state)
    return prune_finetune(model, "l1", 0.25, ["features.8"], data[0], data[1], p=0, q=Q, lr=0.01, final_lr=0.01,
                          schedule=schedule, batch_size=16, options=QUIET)


def test_recovery_peak_comes_before_the_last_epoch_under_a_constant_lr(setup):
    s = _run(setup, "constant")
    curve = [r["val"]["top1"] for r in s["final"]["epochs"]]
    assert len(curve) == Q
    # the network has recovered (within 0.5 points of its best) well before the last of the q epochs
    assert s["final"]["epochs_to_peak"] is not None and s["final"]["epochs_to_peak"] <= Q - 2, curve
    assert s["final"]["epochs_to_peak_note"] is None
    first = s["final"]["epochs_to_peak"]
    assert curve[int(first) - 1] >= max(curve) - 0.005


@pytest.mark.parametrize("schedule", ["cosine", "step"])
def test_not_reported_under_an_annealed_schedule(setup, schedule):
    s = _run(setup, schedule)
    assert s["final"]["epochs_to_peak"] is None
    assert f"schedule={schedule!r}" in s["final"]["epochs_to_peak_note"]
    assert len(s["final"]["epochs"]) == Q  # the curve itself is still recorded


def test_paper_configs_fine_tune_at_a_constant_lr():
    from benchmark.config import list_configs, load_config
    from benchmark.grid import expand_grid
    for name in list_configs():
        for cell in expand_grid(load_config(name)):
            if cell.kind == "prune":  # scratch/reduced cells train from random init: annealed on purpose
                assert cell.loop_config.schedule == "constant", (name, cell.id)


def test_config_headers_say_what_their_grids_run():
    """A config's header comment is its citation: a "Paper Table N" claim must match its description and
    reference, and a ratio list written in the header ("25/50/75%") must be the grid's ratios."""
    import re
    from importlib import resources

    from benchmark.config import list_configs, load_config
    from benchmark.grid import expand_grid
    for name in list_configs():
        text = (resources.files("benchmark") / "configs" / f"{name}.toml").read_text(encoding="utf-8")
        header = text[:text.index("\nname =")]
        cfg = load_config(name)
        first = header.splitlines()[0]
        claim = re.match(r"# Paper Table (\d)", first)
        if claim:
            assert cfg.description.startswith(f"Paper Table {claim.group(1)}"), name
            assert f"paper_table{claim.group(1)}" in cfg.reference, name
        else:
            assert "Paper Table" not in cfg.description.split(":")[0], name
            if re.search(r"Table \d", first):  # borrows a table's protocol: must say it is not that table
                assert "NOT a table of the paper" in header, name
        ratios = {round(c.ratio * 100) for c in expand_grid(cfg) if c.ratio > 0}
        for listed in re.findall(r"(\d+(?:/\d+)+)%", header):
            assert {int(x) for x in listed.split("/")} == ratios, (name, listed, ratios)
