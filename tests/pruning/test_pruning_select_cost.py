"""select_filters rules, and cost accounting against the analytic MAC count of real models."""
from __future__ import annotations

import math

import pytest
import torch
import torchvision
from torch import nn

import pruning
from test_pruning_registry import TinyVGG


def test_per_layer_selection_keeps_the_top_scores():
    scores = {"a": torch.tensor([0.5, 0.1, 0.9, 0.3]), "b": torch.tensor([2.0, 2.0, 1.0, 2.0, 0.0, 3.0])}
    plan = pruning.select_filters(scores, 0.5)
    assert plan == {"a": [0, 2], "b": [0, 1, 5]}  # b: ties at 2.0 go to the lower index
    assert pruning.select_filters(scores, 0.0) == {"a": [0, 1, 2, 3], "b": [0, 1, 2, 3, 4, 5]}
    assert pruning.select_filters(scores, {"a": 0.75, "b": 0.25}) == {"a": [2], "b": [0, 1, 2, 3, 5]}  # b: floor(1.5) = 1 pruned
    assert pruning.select_filters(scores, 0.75, min_keep=3) == {"a": [0, 2, 3], "b": [0, 1, 5]}


@pytest.mark.parametrize("n,ratio,round_to,expected", [(64, 0.3, 8, 48), (64, 0.5, 8, 32), (64, 0.75, 1, 16),
                                                       (10, 0.25, 1, 8), (10, 0.95, 8, 8), (3, 0.5, 8, 3)])
def test_kept_count_rule(n, ratio, round_to, expected):
    gen = torch.Generator().manual_seed(n)
    scores = torch.rand(n, generator=gen)
    keep = pruning.select_filters({"x": scores}, ratio, round_to=round_to)["x"]
    k = n - math.floor(ratio * n + 1e-9)
    assert len(keep) == expected == min(n, math.ceil(k / round_to) * round_to)
    assert keep == sorted(keep) and set(keep) == set(torch.argsort(scores, descending=True)[:expected].tolist())


def test_global_ranking_normalises_each_layer_and_respects_min_keep():
    small = torch.tensor([1.0, 2.0, 3.0, 4.0])          # mean 2.5
    large = torch.tensor([100.0, 1000.0, 1000.0, 1900.0])  # mean 1000
    plan = pruning.select_filters({"s": small, "l": large}, 0.5, global_ranking=True)
    # normalised: s = .4 .8 1.2 1.6; l = .1 1 1 1.9 -> the 4 lowest: l0 (.1), s0 (.4), s1 (.8), then l1 (1.0, tie -> l first)
    assert plan == {"s": [2, 3], "l": [2, 3]}
    plan = pruning.select_filters({"s": small, "l": large}, 0.75, global_ranking=True, min_keep=2)
    assert plan == {"s": [2, 3], "l": [2, 3]}
    plan = pruning.select_filters({"s": small, "l": large}, 0.5, global_ranking=True, round_to=4)
    assert plan == {"s": [0, 1, 2, 3], "l": [0, 1, 2, 3]}


def test_selection_errors():
    ok = {"a": torch.tensor([1.0, 2.0])}
    for kwargs, match in [(dict(scores=ok, ratio=1.0), r"in \[0, 1\)"), (dict(scores=ok, ratio=-0.1), "ratio"),
                          (dict(scores=ok, ratio=0.5, round_to=0), "round_to"),
                          (dict(scores=ok, ratio=0.5, min_keep=0), "min_keep"),
                          (dict(scores={}, ratio=0.5), "non-empty"),
                          (dict(scores={"a": torch.tensor([1.0, float("nan")])}, ratio=0.5), "non-finite"),
                          (dict(scores={"a": torch.ones(2, 2)}, ratio=0.5), "1-D"),
                          (dict(scores=ok, ratio={"b": 0.5}), "no entry"),
                          (dict(scores=ok, ratio={"a": 0.5}, global_ranking=True), "global_ranking")]:
        with pytest.raises(ValueError, match=match):
            pruning.select_filters(**kwargs)


def _analytic_macs(model: nn.Module, size: int) -> int:
    """Sum over convs of k_h k_w (C_in / groups) C_out H_out W_out, plus in*out of each Linear (batch 1)."""
    total, shapes = 0, {}
    hooks = [m.register_forward_hook(lambda m, i, o: shapes.__setitem__(m, o.shape))
             for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    with torch.no_grad():
        model.eval()(torch.zeros(1, 3, size, size))
    for h in hooks:
        h.remove()
    for m, shape in shapes.items():
        if isinstance(m, nn.Conv2d):
            kh, kw = m.kernel_size
            total += kh * kw * (m.in_channels // m.groups) * m.out_channels * shape[2] * shape[3]
        else:
            total += m.in_features * m.out_features
    return total


@pytest.mark.parametrize("arch", ["tiny", "resnet18", "mobilenet_v2"])
def test_count_cost_equals_the_analytic_mac_count_before_and_after_pruning(arch):
    torch.manual_seed(0)
    model = TinyVGG() if arch == "tiny" else getattr(torchvision.models, arch)(num_classes=10)
    size = 32
    cost = pruning.count_cost(model, (3, size, size))
    assert cost["macs"] == _analytic_macs(model, size) and cost["flops"] == 2 * cost["macs"]
    assert cost["macs"] == cost["conv_macs"] + cost["linear_macs"]
    assert cost["params"] == sum(p.numel() for p in model.parameters())
    scores = pruning.score_filters(model, "l1", "all")
    pruning.apply_plan(model, pruning.select_filters(scores, 0.5), torch.zeros(1, 3, size, size))
    pruned = pruning.count_cost(model, (1, 3, size, size))
    assert pruned["macs"] == _analytic_macs(model, size) < cost["macs"]
    assert pruning.count_cost(model, (3, size, size), batch_size=2)["macs"] == 2 * pruned["macs"]


def test_measure_latency_reports_a_median():
    model = TinyVGG()
    row = pruning.measure_latency(model, (3, 32, 32), batch_size=2, device="cpu", warmup=1, repeats=5)
    assert row["p10_ms"] <= row["median_ms"] <= row["p90_ms"] and row["median_ms"] > 0
    assert row["batch_size"] == 2 and row["repeats"] == 5 and row["dtype"] == "float32"
    assert row["images_per_s"] == pytest.approx(2 / (row["median_ms"] / 1e3))
    with pytest.raises(ValueError, match="input_size"):
        pruning.count_cost(model, (32, 32))
    with pytest.raises(ValueError, match="repeats"):
        pruning.measure_latency(model, (3, 32, 32), 1, "cpu", repeats=0)



def test_device_name_has_a_row_style_and_a_summary_style():
    from pruning.cost import device_name
    assert device_name("cpu", style="summary") == "cpu"
    assert device_name("cpu").endswith(f"({torch.get_num_threads()} threads)")
    with pytest.raises(ValueError, match="style"):
        device_name("cpu", style="long")

@pytest.mark.gpu
def test_measure_latency_on_cuda_uses_events():
    row = pruning.measure_latency(TinyVGG(), (3, 32, 32), batch_size=8, device="cuda", dtype=torch.bfloat16,
                                  channels_last=True, warmup=2, repeats=5)
    assert row["median_ms"] > 0 and row["dtype"] == "bfloat16" and row["channels_last"]


@pytest.mark.parametrize("n,g,ratio,round_to,expected", [
    (144, 9, 0.4, 8, 90),    # lcm(9, 8) = 72 would keep all 144: a multiple of 9 alone (logged)
    (144, 9, 0.9, 8, 72),    # 16 -> 72: a multiple of both 9 and 8
    (128, 16, 0.3, 8, 96),   # 90 -> round_to 96 -> lcm 16: 96
    (128, 16, 0.5, 1, 64),
    (96, 3, 0.25, 4, 72),    # 72 is a multiple of lcm(3, 4) = 12
])
def test_grouped_layers_keep_a_multiple_of_the_groups_and_of_round_to_where_possible(n, g, ratio, round_to, expected):
    scores = torch.rand(n, generator=torch.Generator().manual_seed(n + g))
    keep = pruning.select_filters({"x": scores}, ratio, round_to=round_to, groups={"x": g})["x"]
    assert len(keep) == expected and len(keep) % g == 0
    size = n // g
    per_block = [sum(1 for i in keep if b * size <= i < (b + 1) * size) for b in range(g)]
    assert per_block == [expected // g] * g
    for b in range(g):  # each block keeps its own best scores
        block = scores[b * size:(b + 1) * size]
        kept = sorted(i - b * size for i in keep if b * size <= i < (b + 1) * size)
        assert set(kept) == set(torch.argsort(block, descending=True, stable=True)[: expected // g].tolist())
