"""Saving and loading detectors, and plugging in the model of a classification run.

``save_detector(detector, path)`` writes the directory ``path`` with

``plan.json``, ``state_dict.pt``
    :func:`pruning.save_pruned` of the detector with its cumulative plan (``pruning.current_plan``; conv
    names in the detector's namespace, ``backbone.<i>``), architecture ``"VGGFasterRCNN"``.
``detector.json``
    ``{"format": "pruning-detector", "version": 1, "arch": <make_model name>, "num_classes": <with the
    background>, "preset": <preset name>, "overrides": {field: value}, "classifier_num_classes": <rows of
    the classifier's final Linear, which the detector drops>}`` (sorted keys, 2-space indent: equal
    detectors give byte-identical files).  Written last.

``load_detector(path)`` rebuilds the *unpruned* detector from ``detector.json`` (a fresh ``make_model(arch,
classifier_num_classes)``), replays the plan through the detector's pruning proxy and loads the weights
strictly (``torch.load(weights_only=True)``).

A classification run's model (``model/`` of a run folder: ``plan.json`` + ``state_dict.pt`` written by
:func:`pruning.save_pruned`, as ``pruning.loop`` and ``benchmark`` write it) is rebuilt by
:func:`classifier_from_run` with the number of classes read from the state_dict's final Linear (1000, 52,
...), so any pruned or unpruned VGG of a run plugs in (:func:`detector_from_run`): fc6 then takes the kept
last-conv filters x ``s*s`` inputs.
"""
from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Union

import torch
from torch import nn

from ..files import load_weights, read_state_dict, writing
from ..loop.models import find_classifier, make_model
from ..loop.rundir import MODEL_DIR
from ..plan import PLAN_FILE, WEIGHTS_FILE, load_pruned, read_plan, save_pruned
from ..surgery import apply_plan
from .model import VGGFasterRCNN, detector_from_classifier, make_detector

__all__ = ["DETECTOR_FILE", "classifier_from_run", "detector_from_run", "load_detector", "read_detector_doc",
           "save_detector"]

log = logging.getLogger(__name__)

FORMAT, VERSION = "pruning-detector", 1
DETECTOR_FILE = "detector.json"
_KEYS = ("arch", "num_classes", "preset", "overrides", "classifier_num_classes")
PathLike = Union[str, os.PathLike]


def _json_value(value):
    return list(value) if isinstance(value, tuple) else value


def detector_doc(detector: VGGFasterRCNN) -> dict:
    """The ``detector.json`` document of ``detector`` (module docstring)."""
    if not isinstance(detector, VGGFasterRCNN):
        raise ValueError(f"save_detector needs a VGGFasterRCNN; got {type(detector).__name__}")
    if not detector.arch:
        raise ValueError("the detector does not know its classifier's arch: build it with make_detector(arch, "
                         "classifier=...) or detector_from_classifier(..., arch=...)")
    return {"format": FORMAT, "version": VERSION, "arch": detector.arch,
            "num_classes": int(detector.roi_heads.box_predictor.cls_score.out_features),
            "preset": detector.preset_name,
            "overrides": {k: _json_value(v) for k, v in sorted(detector.overrides.items())},
            "classifier_num_classes": int(detector.classifier_num_classes)}


def save_detector(detector: VGGFasterRCNN, path: PathLike) -> Path:
    """Write ``path/plan.json``, ``path/state_dict.pt`` and ``path/detector.json``; returns ``path``."""
    doc = detector_doc(detector)
    path = Path(path)
    save_pruned(detector, None, path)
    with writing(path / DETECTOR_FILE):
        (path / DETECTOR_FILE).write_text(json.dumps(doc, indent=2, sort_keys=True) + "\n")
    log.info("saved %s detector (%d classes, preset %s) to %s", doc["arch"], doc["num_classes"], doc["preset"], path)
    return path


def read_detector_doc(path: PathLike) -> dict:
    """The parsed, validated ``detector.json`` of a saved detector directory."""
    file = Path(path) / DETECTOR_FILE
    if not file.is_file():
        raise FileNotFoundError(f"{file} not found: expected a directory written by "
                                "pruning.detection.save_detector (plan.json, state_dict.pt, detector.json)")
    try:
        doc = json.loads(file.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"{file} is not valid JSON ({exc}); re-save the detector with save_detector") from None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT or doc.get("version") != VERSION:
        found = (doc.get("format"), doc.get("version")) if isinstance(doc, dict) else type(doc).__name__
        raise ValueError(f"{file} is not a {FORMAT} v{VERSION} file (found {found}); re-save it with save_detector")
    missing = [k for k in _KEYS if k not in doc]
    if missing:
        raise ValueError(f"{file} lacks the key(s) {', '.join(missing)}; re-save the detector with save_detector")
    if not isinstance(doc["overrides"], dict):
        raise ValueError(f"{file}: 'overrides' must be an object {{preset field: value}}; got {doc['overrides']!r}")
    return doc


def load_detector(path: PathLike, map_location: Union[str, torch.device] = "cpu") -> VGGFasterRCNN:
    """Rebuild a detector saved by :func:`save_detector` (module docstring), moved to ``map_location``."""
    doc = read_detector_doc(path)
    file = Path(path) / DETECTOR_FILE

    def build() -> VGGFasterRCNN:
        try:
            classifier = make_model(doc["arch"], int(doc["classifier_num_classes"]))
            return make_detector(doc["arch"], int(doc["num_classes"]), doc["preset"], classifier=classifier,
                                 **doc["overrides"])
        except (ValueError, TypeError) as exc:
            raise ValueError(f"{file} describes a detector that cannot be built: {exc}") from None

    detector = load_pruned(build, path)
    log.info("loaded %s detector from %s", doc["arch"], path)
    return detector.to(map_location)


def _run_model_dir(model_dir: PathLike) -> Path:
    """``model_dir``, or ``model_dir/model`` when given a run folder; both files checked."""
    path = Path(model_dir)
    if not (path / PLAN_FILE).is_file() and (path / MODEL_DIR / PLAN_FILE).is_file():
        path = path / MODEL_DIR
    for name in (PLAN_FILE, WEIGHTS_FILE):
        if not (path / name).is_file():
            raise FileNotFoundError(f"{path / name} not found: expected a classification run's {MODEL_DIR}/ folder "
                                    f"({PLAN_FILE} + {WEIGHTS_FILE}, written by pruning.save_pruned) or the run "
                                    "folder holding it")
    return path


def classifier_from_run(model_dir: PathLike, arch: str) -> nn.Module:
    """The (pruned) classifier saved in a classification run's ``model/`` folder (or its run folder), as a
    ``make_model(arch, n)`` with ``n`` = the rows of the saved final Linear, the plan replayed and the
    weights loaded strictly."""
    path = _run_model_dir(model_dir)
    doc, weights = read_plan(path), path / WEIGHTS_FILE
    state = read_state_dict(weights)
    with torch.device("meta"):
        fc_name, _ = find_classifier(make_model(arch, 1))  # unknown arch: ValueError listing the models
    key = f"{fc_name}.weight"
    if key not in state or getattr(state[key], "ndim", 0) != 2:
        raise ValueError(f"{weights} has no final Linear {key!r}: it is not the state_dict of a {arch!r}; "
                         "give the arch the run trained (its plan.json says "
                         f"architecture {doc['architecture']!r})")
    model = make_model(arch, int(state[key].shape[0]))
    if type(model).__name__ != doc["architecture"]:
        raise ValueError(f"{path / PLAN_FILE} is for a {doc['architecture']}, but arch {arch!r} builds a "
                         f"{type(model).__name__}; give the arch the run trained")
    plan = {str(name): [int(i) for i in keep] for name, keep in doc["plan"].items()}
    try:
        apply_plan(model, plan, torch.zeros(*doc["input_shape"]))
    except ValueError as exc:
        raise ValueError(f"{path / PLAN_FILE} does not fit a {arch!r}: {exc}") from None
    load_weights(model, state, weights, strict=True)
    log.info("classifier %s (%d classes, %d pruned convs) from %s", arch, state[key].shape[0], len(plan), path)
    return model


def detector_from_run(model_dir: PathLike, arch: str, num_classes: int = 21, preset: str = "voc-vgg16",
                      **overrides) -> VGGFasterRCNN:
    """``detector_from_classifier(classifier_from_run(model_dir, arch), ...)``: a classification run's model
    plugged into a fresh detector (new RPN and predictor: seed the global RNG for identical ones)."""
    return detector_from_classifier(classifier_from_run(model_dir, arch), num_classes, preset, arch=arch,
                                    **overrides)
