"""Save and reload pruned models: a JSON plan beside an ordinary ``state_dict``; no pickled modules.

``save_pruned(model, plan, path)`` writes the directory ``path`` with

``plan.json``
    ``{"format": "pruning-plan", "version": 1, "architecture": <model class name>,
    "input_shape": [N, C, H, W] (the example input used for the surgery), "plan": {conv name: kept
    original filter indices}, "out_channels": {conv name: number of filters it keeps}}`` (sorted keys,
    2-space indent, so equal plans are byte-identical files).
``state_dict.pt``
    ``torch.save(model.state_dict())``.

``plan`` must be *cumulative* (relative to the original architecture); ``None`` takes the plan that
:func:`pruning.apply_plan` recorded on the model (``pruning.current_plan(model)``), which is what you want
after several rounds of pruning.  ``load_pruned(model_fn, path)`` calls ``model_fn()`` for a fresh
original model, replays the plan with :func:`pruning.apply_plan`, and loads the weights with
``torch.load(weights_only=True)`` (strict).
"""
from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Callable, Dict, List, Mapping, Optional, Sequence, Union

import torch
from torch import nn

from .files import read_state_dict, load_weights, writing
from .surgery import _SHAPE_ATTR, apply_plan, current_plan

log = logging.getLogger(__name__)

FORMAT, VERSION = "pruning-plan", 1
PLAN_FILE, WEIGHTS_FILE = "plan.json", "state_dict.pt"


def _plain(plan: Mapping[str, Sequence[int]]) -> Dict[str, List[int]]:
    return {str(name): [int(i) for i in keep] for name, keep in plan.items()}


def save_pruned(model: nn.Module, plan: Optional[Mapping[str, Sequence[int]]], path: Union[str, os.PathLike]) -> Path:
    """Write ``path/plan.json`` and ``path/state_dict.pt`` (module docstring); returns the directory."""
    plan = current_plan(model) if plan is None else _plain(plan)
    modules = dict(model.named_modules())
    for name, keep in plan.items():
        conv = modules.get(name)
        if not isinstance(conv, nn.Conv2d):
            raise ValueError(f"plan names {name!r}, which is not a Conv2d of {type(model).__name__}")
        if conv.out_channels != len(keep):
            raise ValueError(f"plan keeps {len(keep)} filters of {name!r} but the model has {conv.out_channels}: "
                             "the plan must be cumulative (relative to the original model); pass plan=None to "
                             "save what apply_plan recorded")
    shape = getattr(model, _SHAPE_ATTR, None)
    if shape is None:
        first = next((m for m in model.modules() if isinstance(m, nn.Conv2d)), None)
        shape = [1, first.in_channels if first is not None else 3, 64, 64]
    doc = {"format": FORMAT, "version": VERSION, "architecture": type(model).__name__, "input_shape": list(shape),
           "plan": plan, "out_channels": {name: len(keep) for name, keep in plan.items()}}
    path = Path(path)
    with writing(path):
        path.mkdir(parents=True, exist_ok=True)
    with writing(path / PLAN_FILE):
        (path / PLAN_FILE).write_text(json.dumps(doc, indent=2, sort_keys=True) + "\n")
    with writing(path / WEIGHTS_FILE):
        torch.save(model.state_dict(), path / WEIGHTS_FILE)
    log.info("saved pruned %s (%d pruned convs) to %s", type(model).__name__, len(plan), path)
    return path


def read_plan(path: Union[str, os.PathLike]) -> dict:
    """The parsed ``plan.json`` of a saved pruned model, validated."""
    file = Path(path) / PLAN_FILE
    if not file.is_file():
        raise FileNotFoundError(f"{file} not found: expected a directory written by pruning.save_pruned")
    try:
        doc = json.loads(file.read_text())
    except json.JSONDecodeError as exc:
        raise ValueError(f"{file} is not valid JSON ({exc}); re-save the model with pruning.save_pruned") from exc
    if not isinstance(doc, dict) or doc.get("format") != FORMAT or doc.get("version") != VERSION:
        raise ValueError(f"{file} is not a {FORMAT} v{VERSION} file (format={doc.get('format')!r}, "
                         f"version={doc.get('version')!r})")
    for key in ("architecture", "input_shape", "plan"):
        if key not in doc:
            raise ValueError(f"{file} lacks the key {key!r}")
    return doc


def load_pruned(model_fn: Callable[[], nn.Module], path: Union[str, os.PathLike]) -> nn.Module:
    """Rebuild a pruned model: ``model_fn()`` (fresh, original architecture), replay the plan, load weights."""
    doc = read_plan(path)
    weights = Path(path) / WEIGHTS_FILE
    if not weights.is_file():
        raise FileNotFoundError(f"{weights} not found: expected beside {PLAN_FILE} (written by pruning.save_pruned)")
    model = model_fn()
    if not isinstance(model, nn.Module):
        raise ValueError(f"model_fn must return an nn.Module; got {type(model).__name__}")
    if type(model).__name__ != doc["architecture"]:
        raise ValueError(f"{path}: the plan is for a {doc['architecture']}, model_fn built a {type(model).__name__}")
    param = next(model.parameters())
    example = torch.zeros(*doc["input_shape"], device=param.device, dtype=param.dtype)
    apply_plan(model, _plain(doc["plan"]), example)
    state = read_state_dict(weights, map_location=param.device)
    load_weights(model, state, weights, strict=True)
    return model
