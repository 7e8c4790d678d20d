"""Physical removal on real torchvision models: function-preserving surgery, protocols, plans, save/load."""
from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F
import torchvision
from torch import nn

import pruning
from pruning import surgery
from test_pruning_registry import TinyVGG, batches, randomize_bn

ARCHS = ["vgg16", "vgg16_bn", "resnet18", "resnet50", "mobilenet_v2", "densenet121", "efficientnet_b0"]


def _build(arch: str) -> nn.Module:
    torch.manual_seed(0)
    model = TinyVGG() if arch == "tiny" else getattr(torchvision.models, arch)(num_classes=10)
    return randomize_bn(model).double().eval()


def _zero_and_plan(model: nn.Module, x: torch.Tensor, fraction: float = 0.25, seed: int = 0):
    """For every coupled group of the model, pick random filters, make their output exactly zero (conv
    weights/bias and every BatchNorm gamma/beta the group touches), and return the plan removing them."""
    gen = torch.Generator().manual_seed(seed)
    graph = surgery.build_graph(model, x)
    modules = dict(model.named_modules())
    plan = {}
    for layer in pruning.prunable_layers(model, "all", example_input=x):
        conv = modules[layer]
        n = conv.out_channels
        drop = sorted(torch.randperm(n, generator=gen)[: max(1, int(fraction * n))].tolist())
        zero_group(graph, surgery.pruning_group(graph, conv, drop))
        plan[layer] = sorted(set(range(n)) - set(drop))
    return plan


def zero_group(graph, group) -> None:
    """Make the output of the filters a pruning group removes exactly zero: their conv rows and bias, and every
    BatchNorm gamma/beta the group touches (so removing them cannot change the network's output)."""
    with torch.no_grad():
        for dep, idxs in group:
            module, idxs = dep.target.module, list(idxs)
            if isinstance(module, nn.BatchNorm2d):
                module.weight[idxs] = 0
                module.bias[idxs] = 0
            elif isinstance(module, nn.Conv2d) and graph.is_out_channel_pruning_fn(dep.handler):
                module.weight[idxs] = 0
                if module.bias is not None:
                    module.bias[idxs] = 0


def _check_equivalence(arch: str, size: int = 64):
    model = _build(arch)
    x = torch.randn(2, 3, size, size, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    plan = _zero_and_plan(model, x)
    before_cost = pruning.count_cost(model, (3, size, size))
    with torch.no_grad():
        expected = model(x)
    pruning.apply_plan(model, plan, x[:1])
    with torch.no_grad():
        got = model(x)
    assert got.shape == expected.shape
    torch.testing.assert_close(got, expected, rtol=1e-9, atol=1e-9 * expected.abs().max().item())
    modules = dict(model.named_modules())
    for layer, keep in plan.items():
        assert modules[layer].out_channels == len(keep)
    recorded = pruning.current_plan(model)
    assert set(plan) <= set(recorded) and all(recorded[k] == v for k, v in plan.items())
    after_cost = pruning.count_cost(model, (3, size, size))
    assert after_cost["macs"] < before_cost["macs"] and after_cost["params"] < before_cost["params"]
    return model


@pytest.mark.parametrize("arch", ["tiny", "resnet18", "mobilenet_v2"])
def test_removing_zeroed_filters_preserves_the_output(arch):
    _check_equivalence(arch, size=32)


@pytest.mark.heavy
@pytest.mark.parametrize("arch", ARCHS)
def test_removing_zeroed_filters_preserves_the_output_all_architectures(arch):
    _check_equivalence(arch)


def test_vgg_flatten_linear_and_coupled_members_shrink():
    model = _check_equivalence("tiny", size=32)
    assert model.classifier.in_features == model.features[5].out_channels * 16
    resnet = _build("resnet18")
    pruning.apply_plan(resnet, {"conv1": list(range(0, 64, 2))}, torch.zeros(1, 3, 64, 64, dtype=torch.float64))
    # conv1's filters are coupled to the residual stream of layer1
    for name in ("conv1", "layer1.0.conv2", "layer1.1.conv2"):
        assert dict(resnet.named_modules())[name].out_channels == 32
    assert resnet.layer1[0].conv1.in_channels == 32 and resnet.layer2[0].downsample[0].in_channels == 32
    assert sorted(pruning.current_plan(resnet)) == ["conv1", "layer1.0.conv2", "layer1.1.conv2"]


def test_coupled_plans_must_agree():
    model = _build("resnet18")
    x = torch.zeros(1, 3, 64, 64, dtype=torch.float64)
    with pytest.raises(ValueError, match="inconsistently"):
        pruning.apply_plan(model, {"conv1": list(range(32)), "layer1.0.conv2": list(range(32, 64))}, x)
    model = _build("resnet18")
    pruning.apply_plan(model, {"conv1": list(range(32)), "layer1.0.conv2": list(range(32))}, x)
    assert model.conv1.out_channels == 32


def test_bad_plans_are_refused():
    model = _build("tiny")
    for plan, match in [({"features.1": [0]}, "not a Conv2d"), ({"nope": [0]}, "no such module"),
                        ({"features.0": []}, "keeps no filter"), ({"features.0": [3, 1]}, "sorted"),
                        ({"features.0": [0, 8]}, r"\[0, 8\)"), ({"features.0": [0.5]}, "list of ints"),
                        (["features.0"], "mapping")]:
        with pytest.raises(ValueError, match=match):
            pruning.apply_plan(model, plan, torch.zeros(1, 3, 32, 32, dtype=torch.float64))
    assert model.features[0].out_channels == 8 and pruning.current_plan(model) == {}


def test_plans_compose_and_replay_after_save(tmp_path):
    model = _build("resnet18")
    x = torch.randn(2, 3, 64, 64, dtype=torch.float64)
    pruning.apply_plan(model, {"layer1.0.conv1": list(range(1, 64, 2))}, x[:1])  # 32 odd filters
    pruning.apply_plan(model, {"layer1.0.conv1": [0, 5, 31], "layer2.1.conv1": [7]}, x[:1])
    plan = pruning.current_plan(model)
    assert plan["layer1.0.conv1"] == [1, 11, 63] and plan["layer2.1.conv1"] == [7]
    with torch.no_grad():
        expected = model(x)
    with pytest.raises(ValueError, match="cumulative"):
        pruning.save_pruned(model, {"layer1.0.conv1": [0, 1]}, tmp_path / "bad")
    pruning.save_pruned(model, None, tmp_path / "a")
    pruning.save_pruned(model, plan, tmp_path / "b")
    assert (tmp_path / "a" / "plan.json").read_bytes() == (tmp_path / "b" / "plan.json").read_bytes()
    doc = json.loads((tmp_path / "a" / "plan.json").read_text())
    assert doc["architecture"] == "ResNet" and doc["plan"]["layer1.0.conv1"] == [1, 11, 63]
    assert doc["out_channels"]["layer2.1.conv1"] == 1
    loaded = pruning.load_pruned(lambda: torchvision.models.resnet18(num_classes=10).double(), tmp_path / "a")
    loaded.eval()
    with torch.no_grad():
        assert torch.equal(loaded(x), expected)
    assert pruning.current_plan(loaded) == plan


def test_load_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="plan.json"):
        pruning.load_pruned(torchvision.models.resnet18, tmp_path / "missing")
    model = _build("tiny")
    pruning.apply_plan(model, {"features.5": [0, 3]}, torch.zeros(1, 3, 32, 32, dtype=torch.float64))
    pruning.save_pruned(model, None, tmp_path / "m")
    with pytest.raises(ValueError, match="TinyVGG"):
        pruning.load_pruned(lambda: torchvision.models.resnet18(), tmp_path / "m")
    loaded = pruning.load_pruned(lambda: TinyVGG().double(), tmp_path / "m")
    assert loaded.features[5].out_channels == 2 and loaded.classifier.in_features == 32
    (tmp_path / "m" / "state_dict.pt").unlink()
    with pytest.raises(FileNotFoundError, match="state_dict.pt"):
        pruning.load_pruned(lambda: TinyVGG().double(), tmp_path / "m")
    (tmp_path / "m" / "plan.json").write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        pruning.load_pruned(lambda: TinyVGG().double(), tmp_path / "m")


def test_a_pruned_model_trains_for_a_step():
    torch.manual_seed(0)
    model = torchvision.models.resnet18(num_classes=5)
    scores = pruning.score_filters(model, "l1", "resnet50-16")
    pruning.apply_plan(model, pruning.select_filters(scores, 0.5), torch.zeros(1, 3, 64, 64))
    assert model.layer1[0].conv1.out_channels == 32 and model.layer4[1].conv1.out_channels == 256
    x, y = batches(1, 4, size=64, num_classes=5)[0]
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    model.train()
    before = model.layer1[0].conv1.weight.detach().clone()
    loss = F.cross_entropy(model(x), y)
    loss.backward()
    opt.step()
    assert torch.isfinite(loss) and not torch.equal(model.layer1[0].conv1.weight, before)
    assert model.layer1[0].conv1.weight.grad.shape == (32, 64, 3, 3)


def test_protocols():
    resnet50 = torchvision.models.resnet50()
    p16 = pruning.prunable_layers(resnet50, "resnet50-16")
    p32 = pruning.prunable_layers(resnet50, "resnet50-32")
    assert len(p16) == 16 and p16[0] == "layer4.2.conv1" and p16[-1] == "layer1.0.conv1"
    assert len(p32) == 32 and p32[:2] == ["layer4.2.conv2", "layer4.2.conv1"]
    assert set(p16) < set(p32) and all(n.endswith((".conv1", ".conv2")) for n in p32)
    everything = pruning.prunable_layers(resnet50, "all")
    classes = pruning.coupling_classes(resnet50)
    assert len(everything) == len(classes) == 37
    assert sorted(n for c in classes for n in c) == sorted(n for n, m in resnet50.named_modules()
                                                          if isinstance(m, nn.Conv2d))
    assert ["layer1.0.conv3", "layer1.0.downsample.0", "layer1.1.conv3", "layer1.2.conv3"] in classes
    assert "layer1.0.conv3" in everything and "layer1.1.conv3" not in everything
    resnet18 = torchvision.models.resnet18()
    assert len(pruning.prunable_layers(resnet18, "resnet50-16")) == 8
    with pytest.raises(ValueError, match="BasicBlock"):
        pruning.prunable_layers(resnet18, "resnet50-32")
    with pytest.raises(ValueError, match="13 convs"):
        pruning.prunable_layers(resnet18, "vgg16")
    with pytest.raises(ValueError, match="valid protocols: vgg16, resnet50-16, resnet50-32, all"):
        pruning.prunable_layers(resnet18, "resnet")
    mobilenet = torchvision.models.mobilenet_v2()
    for layer in pruning.prunable_layers(mobilenet, "all"):  # depthwise convs are represented by their producer
        assert dict(mobilenet.named_modules())[layer].groups == 1


def test_vgg16_protocol_is_the_13_convs_last_to_first():
    vgg = torchvision.models.vgg16(num_classes=10)
    names = pruning.prunable_layers(vgg, "vgg16")
    assert names == [f"features.{i}" for i in (28, 26, 24, 21, 19, 17, 14, 12, 10, 7, 5, 2, 0)]
    widths = [dict(vgg.named_modules())[n].out_channels for n in names[::-1]]
    assert widths == [64, 64, 128, 128, 256, 256, 256, 512, 512, 512, 512, 512, 512]
    assert pruning.prunable_layers(vgg, "all") == names
