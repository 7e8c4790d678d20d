"""Crowley et al. (003) as they compare: on the same data with the same training budget, the pruned
network vs its architecture trained from scratch vs a uniformly reduced network with the SAME parameter
count (found by bisection over one ratio for every prunable conv)."""

from __future__ import annotations

import pytest
import torch

import pruning
from benchmark.config import load_config, parse_config
from benchmark.estimate import n_layers
from benchmark.architectures import first_filters as _first_filters, match_reduced
from benchmark.grid import expand_grid
from pruning.loop import make_model
from pruning.select import _num_keep


def _cell(layers, ratio, model="tinyvgg"):
    doc = {"name": "m", "data": {"full": "x"}, "model": {"name": model},
           "grid": [{"kind": "reduced", "criterion": "l1", "ratio": ratio, "layers": [layers]}]}  # a list is an axis
    (cell,) = expand_grid(parse_config(doc, "m.toml"))
    return cell


@pytest.mark.parametrize("name,layers,size,ratio", [
    ("tinyvgg", ["features.4"], 24, 0.25), ("tinyvgg", ["features.4"], 24, 0.75),
    ("tinyvgg", ["features.8", "features.0"], 24, 0.5), ("resnet18", "resnet50-16", 32, 0.5)])
def test_reduced_network_matches_the_pruned_architectures_parameter_count(name, layers, size, ratio):
    model = make_model(name, 10, seed=0)
    example = torch.zeros(1, 3, size, size)
    cell = _cell(layers, ratio, name)
    m = match_reduced(model, cell, example)
    target = pruning.count_params(_first_filters(make_model(name, 10), pruning.prunable_layers(model, layers)
                                        if isinstance(layers, str) else layers, ratio, cell.loop_config, example))
    assert m["params_target"] == target
    reduced = _first_filters(make_model(name, 10), pruning.prunable_layers(model, "all"), m["reduced_ratio"],
                             cell.loop_config, example)
    assert pruning.count_params(reduced) == m["params_matched"]
    # the closest a uniform reduction gets: the next thinner and the next wider uniform network (one filter
    # less / more where the rounding allows) are not closer to the target
    every = pruning.prunable_layers(model, "all")
    for r in (m["reduced_ratio"] - 0.01, m["reduced_ratio"] + 0.01):
        if 0 <= r < 1:
            other = pruning.count_params(_first_filters(make_model(name, 10), every, r, cell.loop_config, example))
            assert abs(m["params_matched"] - target) <= abs(other - target), (r, other, m)
    assert abs(m["params_matched"] - target) / target < 0.05
    # uniform: every prunable conv keeps n - floor(r n) of its n filters (pruning.select_filters' rule), one r for all
    before = {n: mod.out_channels for n, mod in model.named_modules() if isinstance(mod, torch.nn.Conv2d)}
    r = m["reduced_ratio"]
    assert 0 < r < 1
    for n in pruning.prunable_layers(model, "all"):
        assert reduced.get_submodule(n).out_channels == _num_keep(before[n], r, 1, 1), n


def test_scratch_baselines_compares_on_the_same_data_with_the_same_budget():
    """Every cell trains on ImageNet-52P only; the pruned network's total (training from scratch on the subset,
    then L layer steps of p epochs and q final epochs) equals the scratch/reduced cells' q epochs, with the
    same recipe as the pruned network's own training from scratch."""
    cfg = load_config("scratch_baselines")
    cells = expand_grid(cfg)
    assert {c.class_set for c in cells} == {"imagenet52p"}
    pruned = [c for c in cells if c.kind == "prune" and c.ratio > 0]
    scratch = [c for c in cells if c.kind in ("scratch", "reduced")]
    assert pruned and scratch and all(c.init == "scratch" for c in pruned)
    for c in pruned:
        lc = c.loop_config
        total = float(cfg.pretrain["epochs"]) + n_layers(c.model, lc.layers) * lc.p + lc.q
        for s in scratch:
            sl = s.loop_config
            assert sl.q == total, (c.id, s.id)
            assert sl.data_fraction == lc.data_fraction == 1.0
            assert (sl.lr, sl.schedule, sl.weight_decay, sl.batch_size) == (
                cfg.pretrain["lr"], cfg.pretrain["schedule"], cfg.pretrain["weight_decay"], cfg.pretrain["batch_size"])
