"""Statistics collection as the criteria see it: one shared forward pass, histogram edges over all images,
and where activations are observed (functional, other activation modules), on real small models."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import pruning
from test_pruning_criteria import TINY_LAYERS, tiny  # noqa: F401  (the module-scoped fixture)
from test_pruning_registry import batches


def test_all_activation_criteria_share_one_forward_pass(tiny):
    data = batches(3, 2, size=32)
    calls = []
    handle = tiny.register_forward_hook(lambda m, i, o: calls.append(i[0].shape[0]))
    try:
        got = pruning.score_filters_multi(tiny, ["mean_activation", "apoz", "entropy", "scaled_entropy"],
                                          TINY_LAYERS, data=data, options={"entropy": {"bins": 5}})
    finally:
        handle.remove()
    assert calls == [2, 2, 2] and all(s.num_images == 6 for s in got.values())


def test_histogram_edges_span_all_images_not_the_first_batch():
    from pruning.collectors.activations import ActivationStats

    st = ActivationStats(2, bins=[4])
    first = torch.tensor([[0.0, 1.0], [1.0, 1.0], [0.5, 1.0]])          # filter 1 constant in the first batch
    later = torch.tensor([[5.0, 1.5], [-1.0, 0.2], [0.3, 1.9], [0.99, 1.0]])
    st.update(first)
    st.update(later)
    s = torch.cat([first, later]).numpy().astype(np.float64)
    hist0, _ = np.histogram(s[:, 0], bins=4)  # range [-1, 5] over all 7 images, not the first batch's [0, 1]
    hist1, _ = np.histogram(s[:, 1], bins=4)  # range [0.2, 1.9]
    assert st.hist[4][0].tolist() == hist0.tolist() == [3, 3, 0, 1]
    assert st.hist[4][1].tolist() == hist1.tolist() == [1, 4, 0, 2]
    torch.testing.assert_close(st.mean, torch.tensor(s.mean(axis=0), dtype=torch.float64))
    p = hist0 / 7
    p = p[p > 0]
    torch.testing.assert_close(st.entropy(4)[0], torch.tensor(-(p * np.log(p)).sum(), dtype=torch.float64))


class _ConvGeluTanh(torch.nn.Module):
    """conv -> F.gelu(approximate="tanh") as a function call (no module to hook) -> linear head."""

    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 4, 3)
        self.head = torch.nn.Linear(4, 5)

    def forward(self, x):
        return self.head(F.gelu(self.conv(x), approximate="tanh").mean(dim=(2, 3)))


def test_functional_activation_is_observed_with_its_own_arguments():
    torch.manual_seed(0)
    model = _ConvGeluTanh().double().eval()
    data = batches(2, 3, size=8, dtype=torch.float64)
    got = pruning.score_filters(model, "mean_activation", ["conv"], data=data)["conv"]
    with torch.no_grad():
        x = torch.cat([b[0] for b in data])
        tanh = F.gelu(model.conv(x), approximate="tanh").mean(dim=(0, 2, 3))
        exact = F.gelu(model.conv(x)).mean(dim=(0, 2, 3))
    assert not torch.allclose(tanh, exact, rtol=0, atol=1e-9)  # the two forms differ measurably here
    torch.testing.assert_close(got, tanh, rtol=1e-12, atol=1e-12)


class _ConvThen(torch.nn.Module):
    """conv -> ``act`` (a function, method or module call in forward) -> linear head."""

    def __init__(self, act):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 4, 3)
        self.head = torch.nn.Linear(4, 5)
        self.act = act

    def forward(self, x):
        return self.head(self.act(self.conv(x)).mean(dim=(2, 3)))


@pytest.mark.parametrize("name, act", [
    ("F.leaky_relu(x, 0.3)", lambda x: F.leaky_relu(x, 0.3)),
    ("F.leaky_relu(x, negative_slope=0.3, inplace=True)", lambda x: F.leaky_relu(x, negative_slope=0.3, inplace=True)),
    ("F.elu(x, alpha=0.5)", lambda x: F.elu(x, alpha=0.5)),
    ("F.hardtanh(x, -0.2, 0.3)", lambda x: F.hardtanh(x, -0.2, 0.3)),
    ("torch.sigmoid(x)", torch.sigmoid),
    ("x.relu_()", lambda x: x.relu_()),
    ("nn.ELU(0.7)", torch.nn.ELU(0.7)),
    ("nn.PReLU(4)", torch.nn.PReLU(4, init=0.2)),
])
def test_other_activations_are_observed_after_the_activation(name, act):
    """mean_activation equals the mean of the activation's own output, whichever way the model calls it, and
    observing it does not change what the model computes (in-place forms are applied out of place)."""
    torch.manual_seed(0)
    model = _ConvThen(act).double().eval()
    data = batches(2, 3, size=8, dtype=torch.float64)
    x = torch.cat([b[0] for b in data])
    with torch.no_grad():
        before = model(x)
        pre = model.conv(x)
        want = act(pre.clone()).mean(dim=(0, 2, 3))
    assert not torch.allclose(want, pre.mean(dim=(0, 2, 3)), atol=1e-6)  # the activation matters here
    got = pruning.score_filters(model, "mean_activation", ["conv"], data=data)["conv"]
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12, msg=name)
    with torch.no_grad():
        torch.testing.assert_close(model(x), before, rtol=0, atol=0)


def test_linear_ensemble_refuses_to_mask_before_an_activation_that_moves_zero():
    """Masking the map before torch.sigmoid leaves sigmoid(0) = 0.5 where removal leaves nothing: refused with the
    layer named; the same activation as a module is masked after it (allowed), as is a function with f(0) = 0."""
    torch.manual_seed(0)
    data = batches(2, 3, size=8)
    with pytest.raises(ValueError, match=r"\['conv'\].*nn.Sigmoid"):
        pruning.score_filters(_ConvThen(torch.sigmoid).eval(), "linear_ensemble", ["conv"], data=data)
    for act in (torch.nn.Sigmoid(), torch.tanh, lambda x: F.leaky_relu(x, 0.2)):
        s = pruning.score_filters(_ConvThen(act).eval(), "linear_ensemble", ["conv"], data=data,
                                  options={"num_masks": 8})
        assert torch.isfinite(s["conv"]).all()
