"""Physical removal on real timm CNNs (random init, ``timm.create_model(name, pretrained=False)``): one
model per family (docs/model-families.md).

Per family: random filters of every coupled group are removed; where removal can preserve the function
(groups normalised only by BatchNorm, or not at all) those filters are first made exactly zero and the
float64 output must not change; groups that reach a LayerNorm (ConvNeXt's stage streams) cannot be
zeroed away (LayerNorm normalises over the channels, so a zero channel still moves the mean and variance
of the others), and for them the checks are: shapes shrank, the output is finite, a train step works and
the recorded plan replays exactly.  MACs/params must go down, ``current_plan`` replayed on a copy of the
unpruned model gives the same state_dict, and save/load through a fresh ``timm.create_model`` gives the
same outputs.
"""
from __future__ import annotations

import copy
import logging

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import pruning
from pruning import surgery
from test_pruning_registry import batches, randomize_bn
from test_pruning_surgery import zero_group

timm = pytest.importorskip("timm")

# name -> (create_model kwargs, input size, number of coupled groups prunable_layers(..., "all") returns,
# as found for these architectures; a change means the grouping changed).  Float64 depthwise/grouped
# convs are slow on CPU, hence the smallest variants at 32x32 by default.
FAMILIES = {
    # family: ResNet (timm ResNet, deep stem + avg-pool downsample)
    "resnet26d": ({}, 32, 23),
    # ResNeXt (timm ByobNet, grouped 3x3 convs, groups = width / 32)
    "resnext26ts": ({}, 32, 23),
    # RegNet (grouped convs, group width 8) and RegNetY (+ squeeze-excitation)
    "regnetx_002": ({}, 32, 31),
    "regnety_002": ({}, 32, 44),
    # MobileNet / EfficientNet (depthwise convs, SE, timm BatchNormAct2d)
    "mobilenetv3_small_050": ({}, 32, 26),
    # ConvNeXt (LayerNorm2d, layer scale gamma, depthwise 7x7; atto has 1x1-conv MLPs)
    "convnext_atto": ({}, 32, 16),
}
HEAVY = {
    "resnet18": ({}, 64, 12),
    "mobilenetv2_050": ({}, 32, 25),
    "efficientnet_b0": ({}, 64, 40),
    "tf_efficientnet_lite0": ({}, 64, 24),  # 'SAME' padding: torch.fx cannot trace it (module-order fallback)
    "resnext50_32x4d": ({}, 64, 37),
    # ConvNeXt with Linear MLPs on NHWC tensors (what convnext_tiny and larger use): only the 4 stage streams
    # are conv groups; the MLP hidden units are Linear and not pruned.
    "convnext_atto-linear": ({"conv_mlp": False}, 64, 4),
}


def _create(name: str) -> nn.Module:
    kwargs = (FAMILIES.get(name) or HEAVY[name])[0]
    return timm.create_model(name.split("-")[0], pretrained=False, num_classes=10, **kwargs)


def _build(name: str) -> nn.Module:
    torch.manual_seed(0)
    return randomize_bn(_create(name)).double().eval()


def _touches_norm(graph, group) -> bool:
    return any(isinstance(dep.target.module, (nn.LayerNorm, nn.GroupNorm)) for dep, _ in group)


def _zero_and_plan(model: nn.Module, x: torch.Tensor, fraction: float = 0.25, seed: int = 0):
    """A random plan removing about ``fraction`` of every group (evenly over grouped convs' groups), and
    the names of the groups that cannot be function-preserving (they reach a LayerNorm).  The filters of
    the other groups are made exactly zero (conv weights/bias, BatchNorm gamma/beta of the group)."""
    gen = torch.Generator().manual_seed(seed)
    modules = dict(model.named_modules())
    layers = pruning.prunable_layers(model, "all", example_input=x)
    balance = pruning.channel_groups(model, layers, x)
    scores = {layer: torch.rand(modules[layer].out_channels, generator=gen, dtype=torch.float64) for layer in layers}
    plan = pruning.select_filters(scores, fraction, groups=balance)
    graph = surgery.build_graph(model, x)
    normed = set()
    for layer, keep in plan.items():
        conv = modules[layer]
        drop = sorted(set(range(conv.out_channels)) - set(keep))
        assert drop, layer
        group = surgery.pruning_group(graph, conv, drop)
        if _touches_norm(graph, group):
            normed.add(layer)
            continue
        zero_group(graph, group)
    return plan, normed, balance


def _check_family(name: str, spec, tmp_path):
    _kwargs, size, num_groups = spec
    model = _build(name)
    x = torch.randn(2, 3, size, size, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    plan, normed, balance = _zero_and_plan(model, x)
    assert len(plan) == num_groups
    original = copy.deepcopy(model)
    before_cost = pruning.count_cost(model, (3, size, size))
    with torch.no_grad():
        expected = model(x)
    pruning.apply_plan(model, plan, x[:1])
    modules = dict(model.named_modules())
    for layer, keep in plan.items():
        assert modules[layer].out_channels == len(keep)
    with torch.no_grad():
        got = model(x)
    assert got.shape == expected.shape and torch.isfinite(got).all()
    if not normed:  # every group was zeroed: the pruned network computes the same function
        torch.testing.assert_close(got, expected, rtol=1e-9, atol=1e-9 * expected.abs().max().item())
    else:  # LayerNorm-coupled groups changed the function; check the zeroed groups alone on a fresh copy
        partial = copy.deepcopy(original)
        pruning.apply_plan(partial, {k: v for k, v in plan.items() if k not in normed}, x[:1])
        with torch.no_grad():
            torch.testing.assert_close(partial(x), expected, rtol=1e-9, atol=1e-9 * expected.abs().max().item())
    recorded = pruning.current_plan(model)
    assert set(plan) <= set(recorded) and all(recorded[k] == v for k, v in plan.items())
    after_cost = pruning.count_cost(model, (3, size, size))
    assert after_cost["macs"] < 0.9 * before_cost["macs"] and after_cost["params"] < 0.9 * before_cost["params"]
    # grouped convs were pruned evenly and still have `groups` groups
    for module_name, module in modules.items():
        if isinstance(module, nn.Conv2d) and module.groups > 1:
            assert module.in_channels % module.groups == 0 and module.out_channels % module.groups == 0, module_name
    # replay of the cumulative plan on the unpruned copy: the identical state_dict
    pruning.apply_plan(original, recorded, x[:1])
    replayed, pruned_state = original.state_dict(), model.state_dict()
    assert list(replayed) == list(pruned_state)
    for key, value in pruned_state.items():
        assert torch.equal(replayed[key], value), key
    # save / load onto a fresh timm.create_model: same outputs
    pruning.save_pruned(model, None, tmp_path / name)
    loaded = pruning.load_pruned(lambda: _create(name).double(), tmp_path / name).eval()
    with torch.no_grad():
        assert torch.equal(loaded(x), got)
    assert pruning.current_plan(loaded) == recorded
    # a training step on the pruned model
    model.float().train()
    images, labels = batches(1, 4, size=size, num_classes=10)[0]
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    first = modules[next(iter(plan))]
    before = first.weight.detach().clone()
    loss = F.cross_entropy(model(images), labels)
    loss.backward()
    opt.step()
    assert torch.isfinite(loss) and not torch.equal(first.weight, before)
    assert first.weight.grad.shape == first.weight.shape
    return model, plan, normed, balance


@pytest.mark.parametrize("name", list(FAMILIES))
def test_timm_family_prunes_exactly(name, tmp_path):
    model, plan, normed, balance = _check_family(name, FAMILIES[name], tmp_path)
    grouped = [n for n, m in model.named_modules() if isinstance(m, nn.Conv2d) and 1 < m.groups < m.out_channels]
    if name in ("resnext26ts", "regnetx_002", "regnety_002"):
        assert grouped and balance  # grouped convs were met, and pruned evenly over their groups
    else:
        assert not balance
    if name.startswith("convnext"):
        # the 4 stage streams (stem/downsample convs + depthwise convs + LayerNorm + gamma) reach a LayerNorm;
        # the MLP hidden groups (1x1-conv fc1 -> GELU -> fc2) do not and were checked for preservation
        assert sorted(normed) == ["stages.1.downsample.1", "stages.2.downsample.1", "stages.3.downsample.1",
                                  "stem.0"]
        assert model.stages[0].blocks[0].gamma.shape == (model.stem[0].out_channels,)
    else:
        assert not normed


@pytest.mark.heavy
@pytest.mark.parametrize("name", list(HEAVY))
def test_timm_family_prunes_exactly_heavy(name, tmp_path):
    _check_family(name, HEAVY[name], tmp_path)


def test_grouped_convs_refuse_uneven_plans_and_compose():
    model = _build("regnetx_002")
    x = torch.zeros(1, 3, 32, 32, dtype=torch.float64)
    conv = model.s1.b1.conv1.conv  # feeds s1.b1.conv2.conv: 24 channels, groups=3 (8 per group)
    assert model.s1.b1.conv2.conv.groups == 3 and conv.out_channels == 24
    state = copy.deepcopy(model.state_dict())
    with pytest.raises(ValueError, match=r"RegNet.*unevenly.*s1\.b1\.conv2\.conv.*groups=3.*\[2, 0, 0\].*channel_groups"):
        pruning.apply_plan(model, {"s1.b1.conv1.conv": list(range(2, 24))}, x)
    assert conv.out_channels == 24 and pruning.current_plan(model) == {}
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in state.items())  # nothing was changed
    assert pruning.channel_groups(model, ["s1.b1.conv1.conv", "s1.b1.conv2.conv", "stem.conv"]) == {
        "s1.b1.conv1.conv": 3, "s1.b1.conv2.conv": 3}
    # different positions in each group: Torch-Pruning alone would index out of range (ConvPruner keeps
    # keep_idxs[:len // groups]); two rounds compose and replay
    reference = copy.deepcopy(model)
    xr = torch.randn(2, 3, 32, 32, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    w = model.s1.b1.conv2.conv.weight.detach().clone()
    pruning.apply_plan(model, {"s1.b1.conv1.conv": [i for i in range(24) if i not in (0, 9, 23)]}, x)
    kept = [i for i in range(24) if i not in (0, 9, 23)]
    assert model.s1.b1.conv2.conv.weight.shape == (24, 7, 3, 3)
    # each output row keeps the weights of its own group's remaining inputs
    assert torch.equal(model.s1.b1.conv2.conv.weight[0], w[0, [1, 2, 3, 4, 5, 6, 7]])
    assert torch.equal(model.s1.b1.conv2.conv.weight[8], w[8, [0, 2, 3, 4, 5, 6, 7]])
    assert torch.equal(model.s1.b1.conv2.conv.weight[16], w[16, [0, 1, 2, 3, 4, 5, 6]])
    pruning.apply_plan(model, {"s1.b1.conv1.conv": [i for i in range(21) if i not in (1, 8, 15)]}, x)
    plan = pruning.current_plan(model)
    assert plan["s1.b1.conv1.conv"] == [k for j, k in enumerate(kept) if j not in (1, 8, 15)]
    assert model.s1.b1.conv2.conv.in_channels == 18
    pruning.apply_plan(reference, plan, x)
    with torch.no_grad():
        assert torch.equal(reference.eval()(xr), model.eval()(xr))


def test_scores_carry_channel_groups_into_select():
    torch.manual_seed(0)
    model = timm.create_model("resnext26ts", pretrained=False, num_classes=10).eval()
    layers = pruning.prunable_layers(model, "all", torch.zeros(1, 3, 32, 32))
    scores = pruning.score_filters(model, "l1", layers)
    assert scores.channel_groups["stages.0.0.conv1_1x1.conv"] == 2  # its conv2_kxk has groups=2
    plan = pruning.select_filters(scores, 0.3)
    pruning.apply_plan(model, plan, torch.zeros(1, 3, 32, 32))
    assert model(torch.zeros(1, 3, 32, 32)).shape == (1, 10)
    conv2 = model.stages[0][0].conv2_kxk.conv
    assert conv2.groups == 2 and conv2.in_channels == len(plan["stages.0.0.conv1_1x1.conv"])
    # without the balance the same scores give an uneven plan, refused
    uneven = pruning.select_filters(dict(scores), 0.3)
    fresh = timm.create_model("resnext26ts", pretrained=False, num_classes=10)
    with pytest.raises(ValueError, match="unevenly"):
        pruning.apply_plan(fresh, uneven, torch.zeros(1, 3, 32, 32))


def test_timm_norm_act_layers_observe_after_the_activation():
    model = timm.create_model("mobilenetv3_small_050", pretrained=False, num_classes=10).eval()
    refs = {r.name: r for r in pruning.resolve_layers(model, ["blocks.1.0.conv_pw", "blocks.1.0.conv_pwl"])}
    pw, pwl = refs["blocks.1.0.conv_pw"], refs["blocks.1.0.conv_pwl"]
    assert pw.bn_name == "blocks.1.0.bn1" and pw.hook_name == "blocks.1.0.bn1" and pw.has_activation
    assert isinstance(pw.fused_act, nn.ReLU)
    assert pwl.bn_name == "blocks.1.0.bn3" and not pwl.has_activation  # linear bottleneck: no activation
    resnet = timm.create_model("resnet26d", pretrained=False, num_classes=10)
    ref = pruning.resolve_layers(resnet, ["layer1.0.conv1"])[0]
    assert ref.hook_name == "layer1.0.act1"  # through the disabled drop_block (nn.Identity)
    data = batches(1, 4, size=32, num_classes=10)
    scores = pruning.score_filters(model, "apoz", ["blocks.1.0.conv_pw"], data=data)
    assert scores["blocks.1.0.conv_pw"].shape == (pw.num_filters,)
    assert (scores["blocks.1.0.conv_pw"] < 1).any()  # zeros after the ReLU were seen


@pytest.mark.parametrize("name", ["vit_tiny_patch16_224", "mixer_s16_224"])
def test_token_models_are_refused_clearly(name, caplog):
    model = timm.create_model(name, pretrained=False, num_classes=10, img_size=32).eval()
    x = torch.zeros(1, 3, 32, 32)
    cls = type(model).__name__
    embed = "patch_embed.proj" if name.startswith("vit") else "stem.proj"
    with pytest.raises(ValueError, match=rf"{cls} has no conv this library can prune.*{embed}.*token.*model-families"):
        pruning.prunable_layers(model, "all", x)
    with pytest.raises(ValueError, match=rf"{cls}: cannot prune '{embed}'.*token"):
        pruning.apply_plan(model, {embed: list(range(0, 16))}, x)
    assert dict(model.named_modules())[embed].out_channels in (192, 512)  # unchanged
    assert model(x).shape == (1, 10)


def test_a_model_without_convs_is_refused():
    with pytest.raises(ValueError, match="Sequential has no nn.Conv2d.*model-families"):
        pruning.prunable_layers(nn.Sequential(nn.Linear(4, 4)), "all")


def test_mixed_model_leaves_out_the_token_group(caplog):
    class Hybrid(nn.Module):  # a conv stem (prunable) feeding a token Linear through its second conv
        def __init__(self):
            super().__init__()
            self.conv1, self.bn1 = nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8)
            self.embed = nn.Conv2d(8, 16, 4, stride=4)
            self.mix = nn.Linear(16, 16)
            self.head = nn.Linear(16, 10)

        def forward(self, x):
            tokens = self.embed(torch.relu(self.bn1(self.conv1(x)))).flatten(2).transpose(1, 2)
            return self.head(self.mix(tokens).mean(1))

    model = Hybrid().eval()
    with caplog.at_level(logging.WARNING, logger="pruning.layers"):
        assert pruning.prunable_layers(model, "all", torch.zeros(1, 3, 16, 16)) == ["conv1"]
    assert "leaving out" in caplog.text and "'embed'" in caplog.text
    pruning.apply_plan(model, {"conv1": [0, 2, 4]}, torch.zeros(1, 3, 16, 16))
    assert model.embed.in_channels == 3 and model(torch.zeros(1, 3, 16, 16)).shape == (1, 10)
