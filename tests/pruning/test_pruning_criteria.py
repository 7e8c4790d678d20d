"""Criteria on real models: invariants over the whole registry, and equality with direct computations."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import torchvision

import pruning
from test_pruning_registry import TinyVGG, batches, randomize_bn

TINY_LAYERS = ["features.0", "features.2", "features.5"]
OPTIONS = {"linear_ensemble": {"num_masks": 6}}


def _options(name):
    return OPTIONS.get(name)


def _kwargs(name):
    return {"classes": [0, 1, 2, 3, 4]} if pruning.get_criterion(name).requires_classes else {}


@pytest.fixture(scope="module")
def resnet18():
    torch.manual_seed(0)
    return randomize_bn(torchvision.models.resnet18(num_classes=5)).eval()


@pytest.fixture(scope="module")
def all_layers(tiny, resnet18):
    return {id(m): pruning.prunable_layers(m, "all") for m in (tiny, resnet18)}


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    return randomize_bn(TinyVGG()).eval()


@pytest.mark.parametrize("name", pruning.list_criteria())
def test_one_finite_deterministic_score_per_filter(name, tiny, resnet18, all_layers):
    data = batches(2, 2, size=32)
    for model in (tiny, resnet18):
        layers = all_layers[id(model)]
        if name == "bn_scale" and model is tiny:
            layers = ["features.5"]  # the only conv followed by a BatchNorm
        if pruning.get_criterion(name).needs == "activations":  # only convs with an activation after them
            layers = [r.name for r in pruning.resolve_layers(model, layers) if r.has_activation]
        a = pruning.score_filters(model, name, layers, data=data, seed=3, options=_options(name), **_kwargs(name))
        b = pruning.score_filters(model, name, layers, data=data, seed=3, options=_options(name), **_kwargs(name))
        modules = dict(model.named_modules())
        assert list(a) == list(layers) and a.criterion == name
        for layer in layers:
            assert a[layer].shape == (modules[layer].out_channels,) and a[layer].dtype == torch.float64
            assert torch.isfinite(a[layer]).all()
            assert torch.equal(a[layer], b[layer])
        needs_data = pruning.get_criterion(name).needs != "weights"
        assert a.num_images == (4 if needs_data else 0)


def test_seed_changes_random_scores_and_layers_differ(tiny):
    a = pruning.score_filters(tiny, "random", TINY_LAYERS, seed=0)
    b = pruning.score_filters(tiny, "random", TINY_LAYERS, seed=1)
    assert not torch.equal(a["features.0"], b["features.0"])
    assert not torch.equal(a["features.0"], a["features.2"])


def _permute_tiny(model, perm2, perm5):
    """Permute the filters of features.2 and features.5 (and their consumers); the function is unchanged."""
    f = model.features
    with torch.no_grad():
        f[2].weight.copy_(f[2].weight[perm2]); f[2].bias.copy_(f[2].bias[perm2])
        f[5].weight.copy_(f[5].weight[:, perm2])
        f[5].weight.copy_(f[5].weight[perm5])
        for t in (f[6].weight, f[6].bias, f[6].running_mean, f[6].running_var):
            t.copy_(t[perm5])
        w = model.classifier.weight.view(model.classifier.out_features, -1, 16)
        model.classifier.weight.copy_(w[:, perm5].reshape(model.classifier.out_features, -1))


def _permute_block(model, perm):
    """Permute the filters of resnet18 layer1.0.conv1 (its BN and the consumer conv2)."""
    b = model.layer1[0]
    with torch.no_grad():
        b.conv1.weight.copy_(b.conv1.weight[perm])
        for t in (b.bn1.weight, b.bn1.bias, b.bn1.running_mean, b.bn1.running_var):
            t.copy_(t[perm])
        b.conv2.weight.copy_(b.conv2.weight[:, perm])


EQUIVARIANT = [n for n in pruning.list_criteria() if pruning.get_criterion(n).equivariant]


def test_scores_permute_with_the_filters():
    assert "random" not in EQUIVARIANT and "linear_ensemble" not in EQUIVARIANT and len(EQUIVARIANT) == 12
    data = batches(2, 2, size=32, dtype=torch.float64)
    torch.manual_seed(1)
    model = randomize_bn(TinyVGG()).double().eval()
    kw = dict(data=data, classes=[0, 1, 2, 3, 4])
    crits = [c for c in EQUIVARIANT if c != "bn_scale"]
    before = pruning.score_filters_multi(model, crits, TINY_LAYERS, **kw)
    x = data[0][0]
    out = model(x)
    perm2, perm5 = torch.randperm(8), torch.randperm(16)
    _permute_tiny(model, perm2, perm5)
    assert torch.allclose(model(x), out, atol=1e-10)  # the permutation is function-preserving
    after = pruning.score_filters_multi(model, crits, TINY_LAYERS, **kw)
    for c in crits:
        torch.testing.assert_close(after[c]["features.0"], before[c]["features.0"], msg=c)
        torch.testing.assert_close(after[c]["features.2"], before[c]["features.2"][perm2], msg=c)
        torch.testing.assert_close(after[c]["features.5"], before[c]["features.5"][perm5], msg=c)

    resnet = randomize_bn(torchvision.models.resnet18(num_classes=5)).double().eval()
    layers = ["layer1.0.conv1", "layer1.1.conv1"]
    before = pruning.score_filters_multi(resnet, EQUIVARIANT, layers, **kw)
    perm = torch.randperm(64)
    _permute_block(resnet, perm)
    after = pruning.score_filters_multi(resnet, EQUIVARIANT, layers, **kw)
    for c in EQUIVARIANT:
        torch.testing.assert_close(after[c]["layer1.0.conv1"], before[c]["layer1.0.conv1"][perm], msg=c)
        torch.testing.assert_close(after[c]["layer1.1.conv1"], before[c]["layer1.1.conv1"], msg=c)


def _capture(model, sites, x):
    """Feature maps at the given modules (our own hooks, independent of pruning.collectors)."""
    got = {}
    handles = [dict(model.named_modules())[m].register_forward_hook(
        lambda mod, i, o, key=key: got.__setitem__(key, o.detach().clone())) for key, m in sites.items()]
    with torch.no_grad():
        model(x)
    for h in handles:
        h.remove()
    return {k: v.double().numpy() for k, v in got.items()}


def _reference(a, bins):
    """Direct NumPy definitions of the activation criteria for one layer's maps a[N, C, H, W]."""
    s = a.mean(axis=(2, 3))
    mean = s.mean(axis=0)
    apoz = 1.0 - (a == 0).mean(axis=(0, 2, 3))
    ent = []
    for c in range(a.shape[1]):
        hist, _ = np.histogram(s[:, c], bins=bins, range=(s[:, c].min(), s[:, c].max()))
        p = hist / s.shape[0]
        ent.append(-(p[p > 0] * np.log(p[p > 0])).sum())
    ent = np.array(ent)
    return {"mean_activation": mean, "apoz": apoz, "entropy": ent, "scaled_entropy": ent * mean}


@pytest.mark.parametrize("bins", [4, 10])
def test_activation_criteria_equal_numpy_on_captured_maps(tiny, resnet18, bins):
    x, y = batches(1, 16, size=32, seed=5)[0]
    crits = ["mean_activation", "apoz", "entropy", "scaled_entropy"]
    opts = {"entropy": {"bins": bins}, "scaled_entropy": {"bins": bins}}
    cases = [(tiny, {"features.0": "features.1", "features.2": "features.3", "features.5": "features.7"}, False),
             (resnet18, {"layer1.0.conv1": "layer1.0.bn1", "layer2.1.conv1": "layer2.1.bn1"}, True)]
    for model, sites, resnet in cases:
        got = pruning.score_filters_multi(model, crits, list(sites), data=[(x, y)], options=opts)
        maps = _capture(model, sites, x)
        if resnet:  # conv1 -> bn1 -> the block's (shared) relu
            maps = {k: np.maximum(v, 0) for k, v in maps.items()}
        for layer, a in maps.items():
            ref = _reference(a, bins)
            for c in crits:
                np.testing.assert_allclose(got[c][layer].numpy(), ref[c], rtol=1e-5, atol=1e-7, err_msg=f"{c} {layer}")
        assert got["apoz"]["features.0" if not resnet else "layer1.0.conv1"].min() < 1.0  # some zeros really seen


@pytest.mark.parametrize("crit", ["mean_activation", "apoz", "entropy", "scaled_entropy"])
def test_activation_criteria_refuse_a_conv_with_no_activation_after_it(resnet18, crit):
    """ResNet's conv2 of a BasicBlock (conv3 of a Bottleneck, downsample convs) feeds BN into the residual add:
    there is no activation of its own to observe (APoZ would see no zeros and tie every filter, so pruning
    would silently keep the lowest indices).  Refused, naming the layer and the criterion."""
    x, y = batches(1, 4, size=32, seed=5)[0]
    for layer in ("layer2.1.conv2", "layer3.0.downsample.0"):
        assert not pruning.resolve_layers(resnet18, [layer])[0].has_activation
        with pytest.raises(ValueError, match=f"criterion {crit} scores the feature map after each filter's "
                                             f"activation, but {layer} has no activation"):
            pruning.score_filters(resnet18, crit, ["layer1.0.conv1", layer], data=[(x, y)])
    # weight and gradient criteria are fine there
    assert pruning.score_filters(resnet18, "l1", ["layer2.1.conv2"])["layer2.1.conv2"].numel() == 128
    assert pruning.resolve_layers(resnet18, ["layer1.0.conv1"])[0].has_activation


def test_weight_criteria_equal_numpy(tiny, resnet18):
    got = pruning.score_filters_multi(tiny, ["l1", "l2", "fpgm"], TINY_LAYERS)
    for layer in TINY_LAYERS:
        weight = dict(tiny.named_modules())[layer].weight.detach().double().numpy()
        w = weight.reshape(weight.shape[0], -1)
        np.testing.assert_allclose(got["l1"][layer].numpy(), np.abs(w).sum(1), rtol=1e-12)
        np.testing.assert_allclose(got["l2"][layer].numpy(), np.sqrt((w ** 2).sum(1)), rtol=1e-12)
        dist = np.sqrt(((w[:, None, :] - w[None, :, :]) ** 2).sum(-1)).sum(1)
        np.testing.assert_allclose(got["fpgm"][layer].numpy(), dist, rtol=1e-9)
    bn = pruning.score_filters(resnet18, "bn_scale", ["layer1.0.conv1"])
    torch.testing.assert_close(bn["layer1.0.conv1"], resnet18.layer1[0].bn1.weight.detach().double().abs())
    with pytest.raises(ValueError, match="features.0"):
        pruning.score_filters(tiny, "bn_scale", ["features.0"])


def test_per_image_sensitivity_equals_a_loop_over_single_images():
    torch.manual_seed(2)
    model = randomize_bn(torchvision.models.resnet18(num_classes=5)).double().eval()
    data = batches(2, 2, size=32, dtype=torch.float64, seed=7)
    layers = ["conv1", "layer1.0.conv1", "layer3.1.conv2", "layer4.0.downsample.0"]
    got = pruning.score_filters(model, "sensitivity", layers, data=data, options={"chunk_size": 2})
    modules = dict(model.named_modules())
    total = {layer: torch.zeros(modules[layer].out_channels, dtype=torch.float64) for layer in layers}
    for x, y in data:
        for i in range(x.shape[0]):
            model.zero_grad()
            F.cross_entropy(model(x[i:i + 1]), y[i:i + 1]).backward()
            for layer in layers:
                total[layer] += modules[layer].weight.grad.abs().sum(dim=(1, 2, 3))
    assert got.num_images == 4
    for layer in layers:
        torch.testing.assert_close(got[layer], total[layer] / 4, rtol=1e-9, atol=1e-12)
    # the per-batch variant is a different quantity (gradients cancel within a batch)
    batch = pruning.score_filters(model, "sensitivity_batch", layers, data=data)
    assert (batch["conv1"] <= got["conv1"] + 1e-12).all() and not torch.allclose(batch["conv1"], got["conv1"])


def test_batch_gradient_criteria_equal_a_manual_backward(tiny):
    data = batches(3, 4, size=32, seed=9)
    got = pruning.score_filters_multi(tiny, ["taylor", "sensitivity_batch"], TINY_LAYERS, data=data)
    modules = dict(tiny.named_modules())
    taylor = {layer: 0 for layer in TINY_LAYERS}
    l1 = {layer: 0 for layer in TINY_LAYERS}
    for x, y in data:
        tiny.zero_grad()
        F.cross_entropy(tiny(x), y).backward()
        for layer in TINY_LAYERS:
            conv = modules[layer]
            t = (conv.weight.grad * conv.weight).sum(dim=(1, 2, 3)).double()
            if conv.bias is not None:
                t = t + (conv.bias.grad * conv.bias).double()
            taylor[layer] = taylor[layer] + t ** 2
            l1[layer] = l1[layer] + conv.weight.grad.abs().sum(dim=(1, 2, 3)).double()
    tiny.zero_grad()
    for layer in TINY_LAYERS:
        torch.testing.assert_close(got["taylor"][layer], taylor[layer] / 3, rtol=1e-4, atol=1e-12)
        torch.testing.assert_close(got["sensitivity_batch"][layer], l1[layer] / 3, rtol=1e-4, atol=1e-9)


def test_class_specific_equals_sensitivity_on_the_subset_only(tiny):
    data = batches(3, 6, size=32, seed=11)
    classes = [1, 3]
    subset = [(x[torch.isin(y, torch.tensor(classes))], y[torch.isin(y, torch.tensor(classes))]) for x, y in data]
    n = sum(x.shape[0] for x, _ in subset)
    assert 0 < n < 18
    cs = pruning.score_filters(tiny, "class_specific", TINY_LAYERS, data=data, classes=classes)
    ref = pruning.score_filters(tiny, "sensitivity", TINY_LAYERS, data=[b for b in subset if b[0].shape[0]])
    full = pruning.score_filters(tiny, "sensitivity", TINY_LAYERS, data=data)
    assert cs.num_images == ref.num_images == n and full.num_images == 18
    for layer in TINY_LAYERS:
        torch.testing.assert_close(cs[layer], ref[layer], rtol=1e-6, atol=1e-9)
        assert not torch.allclose(cs[layer], full[layer])
    with pytest.raises(ValueError, match="needs `classes`"):
        pruning.score_filters(tiny, "class_specific", TINY_LAYERS, data=data)


def test_num_images_budget_truncates_and_is_reported(tiny):
    data = batches(3, 4, size=32, seed=13)
    got = pruning.score_filters(tiny, "mean_activation", TINY_LAYERS, data=data, num_images=6)
    ref = pruning.score_filters(tiny, "mean_activation", TINY_LAYERS, data=[data[0], (data[1][0][:2], data[1][1][:2])])
    assert got.num_images == 6 and ref.num_images == 6
    for layer in TINY_LAYERS:
        torch.testing.assert_close(got[layer], ref[layer])
    assert pruning.score_filters(tiny, "apoz", TINY_LAYERS, data=data).num_images == 12


def test_linear_ensemble_finds_the_only_filter_that_matters():
    torch.manual_seed(4)
    model = randomize_bn(TinyVGG()).eval()
    with torch.no_grad():  # only filter 11 of features.5 reaches the classifier
        w = model.classifier.weight.view(5, 16, 16)
        w[:, [c for c in range(16) if c != 11]] = 0
        w[:, 11] *= 20
    data = batches(2, 8, size=32, seed=3)
    got = pruning.score_filters(model, "linear_ensemble", ["features.5"], data=data,
                                options={"num_masks": 64, "drop_prob": 0.3})
    beta = got["features.5"].abs()
    assert int(beta.argmax()) == 11
    others = torch.cat([beta[:11], beta[12:]])
    assert beta[11] > 5 * others.max()


def test_bad_input_gets_clear_errors(tiny):
    data = batches(1, 2, size=32)
    with pytest.raises(ValueError, match="need `data`"):
        pruning.score_filters(tiny, "apoz", TINY_LAYERS)
    with pytest.raises(ValueError, match="not a Conv2d"):
        pruning.score_filters(tiny, "l1", ["features.1"])
    with pytest.raises(ValueError, match="one-shot iterator"):
        pruning.score_filters_multi(tiny, ["apoz", "taylor"], TINY_LAYERS, data=iter(data))
    with pytest.raises(ValueError, match="yields no labels"):
        pruning.score_filters(tiny, "apoz", TINY_LAYERS, data=[data[0][0]], classes=[1])
    with pytest.raises(ValueError, match="need labelled data"):
        pruning.score_filters(tiny, "taylor", TINY_LAYERS, data=[data[0][0]])
    with pytest.raises(ValueError, match="no images were seen"):
        pruning.score_filters(tiny, "apoz", TINY_LAYERS, data=data, classes=[99])
    with pytest.raises(KeyError, match="available"):
        pruning.score_filters(tiny, "l3", TINY_LAYERS)
    # the images-only form works for criteria that need no labels
    assert pruning.score_filters(tiny, "apoz", TINY_LAYERS, data=[data[0][0]]).num_images == 2


@pytest.mark.gpu
def test_scores_on_cuda_match_cpu():
    data = batches(2, 4, size=32)
    crits = ["mean_activation", "apoz", "entropy", "sensitivity", "taylor"]
    torch.manual_seed(0)
    model = randomize_bn(TinyVGG()).eval()
    torch.manual_seed(0)
    cpu = pruning.score_filters_multi(randomize_bn(TinyVGG()).eval(), crits, TINY_LAYERS, data=data)
    gpu = pruning.score_filters_multi(model, crits, TINY_LAYERS, data=data, device="cuda")
    for c in crits:
        for layer in TINY_LAYERS:
            torch.testing.assert_close(gpu[c][layer], cpu[c][layer], rtol=1e-3, atol=1e-6)


@pytest.mark.heavy
@pytest.mark.parametrize("arch", ["vgg16", "vgg16_bn", "resnet50", "mobilenet_v2", "densenet121", "efficientnet_b0"])
def test_every_criterion_runs_on_every_architecture(arch):
    torch.manual_seed(0)
    model = randomize_bn(getattr(torchvision.models, arch)(num_classes=5)).eval()
    layers = pruning.prunable_layers(model, "all")
    refs = pruning.resolve_layers(model, layers)
    # activation criteria only where an activation follows the conv (they refuse the others, tested above)
    with_act = [r.name for r in refs if r.has_activation]
    data = batches(1, 2, size=64)
    modules = dict(model.named_modules())
    for crits, names in (([c for c in pruning.list_criteria() if c != "bn_scale" and
                           pruning.get_criterion(c).needs != "activations"], layers),
                         ([c for c in pruning.list_criteria() if pruning.get_criterion(c).needs == "activations"],
                          with_act)):
        if not names:
            assert arch == "densenet121"  # pre-activation: every conv's BN and ReLU come before it
            with pytest.raises(ValueError, match="has no activation after"):
                pruning.score_filters(model, "apoz", layers[:1], data=data)
            continue
        got = pruning.score_filters_multi(model, crits, names, data=data, classes=list(range(5)),
                                          options={"linear_ensemble": {"num_masks": 4}} if
                                          "linear_ensemble" in crits else None)
        for c in crits:
            assert list(got[c]) == names
            for layer in names:
                assert got[c][layer].shape == (modules[layer].out_channels,) and torch.isfinite(got[c][layer]).all(), (c, layer)
    observed_after_activation = [r for r in refs if r.hook_module is not r.bn and r.hook_module is not r.conv
                                 or r.shared_act is not None or r.post is not None]
    assert (len(observed_after_activation) == len(with_act)) and (with_act or arch == "densenet121")
