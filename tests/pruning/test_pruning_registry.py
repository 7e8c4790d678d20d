"""The criterion registry, plus the small real models and data the other pruning tests import."""
from __future__ import annotations

import pytest
import torch
from torch import nn

import pruning
from pruning.registry import get_criterion, get_pass, pass_kinds, register, register_pass


class TinyVGG(nn.Module):
    """A VGG-like net: conv-ReLU, conv-ReLU, pool, conv-BN-ReLU, pool, flatten -> Linear (4x4 spatial)."""

    def __init__(self, num_classes: int = 5, width: int = 8):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, width, 3, padding=1), nn.ReLU(inplace=True),
            nn.Conv2d(width, width, 3, padding=1), nn.ReLU(inplace=True),
            nn.MaxPool2d(2),
            nn.Conv2d(width, 2 * width, 3, padding=1, bias=False), nn.BatchNorm2d(2 * width), nn.ReLU(inplace=True),
            nn.AdaptiveAvgPool2d(4),
        )
        self.classifier = nn.Linear(2 * width * 16, num_classes)

    def forward(self, x):
        return self.classifier(torch.flatten(self.features(x), 1))


def randomize_bn(model: nn.Module, seed: int = 0) -> nn.Module:
    """Give every BatchNorm non-trivial affine parameters and running statistics (eval-mode outputs then
    vary across channels, and some channels are negative before the ReLU)."""
    gen = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            n = m.num_features
            with torch.no_grad():
                m.weight.copy_(0.5 + torch.rand(n, generator=gen))
                m.bias.copy_(torch.randn(n, generator=gen) * 0.5)
                m.running_mean.copy_(torch.randn(n, generator=gen) * 0.1)
                m.running_var.copy_(0.5 + torch.rand(n, generator=gen))
    return model


def batches(num_batches: int = 2, batch_size: int = 4, size: int = 32, num_classes: int = 5, seed: int = 0,
            dtype=torch.float32):
    """A list of (images, labels) batches of Gaussian images, deterministic in ``seed``."""
    gen = torch.Generator().manual_seed(seed)
    return [(torch.randn(batch_size, 3, size, size, generator=gen, dtype=dtype),
             torch.randint(0, num_classes, (batch_size,), generator=gen)) for _ in range(num_batches)]


EXPECTED = {"random", "l1", "l2", "mean_activation", "apoz", "entropy", "scaled_entropy", "sensitivity",
            "class_specific", "linear_ensemble", "taylor", "bn_scale", "fpgm", "sensitivity_batch"}


def test_every_criterion_of_the_issue_is_registered():
    assert set(pruning.list_criteria()) == EXPECTED
    assert pruning.list_criteria() == sorted(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_criteria_document_their_definition(name):
    crit = get_criterion(name)
    assert crit.name == name and len(crit.doc) > 60
    assert crit.needs in pass_kinds()


def test_each_kind_of_statistics_pass_is_registered_once_in_the_collectors():
    assert pass_kinds() == ["weights", "activations", "per_image_grad", "batch_grad", "masks"]
    for kind in pass_kinds():
        stats_pass = get_pass(kind)
        assert stats_pass.kind == kind and stats_pass.fn.__module__.startswith("pruning.collectors.")
        assert stats_pass.needs_data == (kind != "weights") and stats_pass.doc
    with pytest.raises(KeyError, match="available: weights"):
        get_pass("hessian")


def test_duplicate_registration_is_refused():
    with pytest.raises(ValueError, match=r"criterion 'l1' is already registered \(by pruning.criteria.weight\)"):
        register("l1", "weights")(lambda layer, stats, options, seed: None)
    assert get_criterion("l1").fn.__name__ == "l1_norm"
    with pytest.raises(ValueError, match=r"statistics pass 'masks' is already registered \(by pruning.collectors.masks\)"):
        register_pass("masks")(lambda model, refs, data, group, options, seed: ({}, 0))
    assert get_pass("masks").fn.__name__ == "masks_pass"


def test_every_registry_refuses_a_duplicate_with_the_same_error():
    from pruning.loop.models import register_model
    with pytest.raises(ValueError, match=r"model 'tinyvgg' is already registered \(by pruning.loop.models\); "
                                         "choose another name"):
        register_model("tinyvgg")(lambda num_classes: None)


def test_unknown_criterion_lists_the_available_ones():
    with pytest.raises(KeyError) as err:
        get_criterion("l3")
    assert "no criterion 'l3'" in str(err.value) and "apoz" in str(err.value) and "taylor" in str(err.value)


def test_unknown_option_and_missing_docstring_are_refused():
    with pytest.raises(ValueError, match="valid options: bins"):
        get_criterion("entropy").check_options({"bin": 5})
    with pytest.raises(ValueError, match="docstring"):
        register("undocumented", "weights")(lambda layer, stats, options, seed: None)
    with pytest.raises(ValueError, match="needs="):
        register("x", "nonsense")
    assert "undocumented" not in pruning.list_criteria()


def test_helpers_build_models_with_varied_batchnorm():
    model = randomize_bn(TinyVGG())
    bn = model.features[6]
    assert bn.bias.min() < 0 < bn.bias.max() and not torch.allclose(bn.weight, torch.ones_like(bn.weight))
    data = batches(2, 3)
    assert len(data) == 2 and data[0][0].shape == (3, 3, 32, 32) and torch.equal(data[1][0], batches(2, 3)[1][0])


def _library_imports() -> dict:
    """``{module: modules of pruning it imports}`` (anywhere in the file, lazy imports included; importing a
    package a module is inside of is not counted: Python loads it first anyway)."""
    import ast
    from pathlib import Path
    root = Path(pruning.__file__).parent
    names = {}
    for path in root.rglob("*.py"):
        parts = ("pruning",) + path.relative_to(root).with_suffix("").parts
        names[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    graph = {}
    for name, path in names.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        found = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                found |= {a.name for a in node.names}
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = package.split(".")[:len(package.split(".")) - node.level + 1]
                    base = ".".join(anchor + ([base] if base else []))
                found |= {base} | {f"{base}.{a.name}" for a in node.names}
        graph[name] = {m for m in found if m in names and m != name and not name.startswith(m + ".")}
    return graph


def test_the_library_has_no_import_circle():
    graph, done, path = _library_imports(), set(), []

    def visit(module):
        if module in path:
            raise AssertionError(" -> ".join(path[path.index(module):] + [module]))
        if module not in done:
            path.append(module)
            for nxt in sorted(graph[module]):
                visit(nxt)
            path.pop()
            done.add(module)

    for module in sorted(graph):
        visit(module)
    assert "pruning.criteria" not in graph["pruning.registry"] and graph["pruning.registry"] == set()
