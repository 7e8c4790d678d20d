"""Algorithm 1 on a trained detector's backbone (pruning.detection.prune) on a synthetic VOC tree, on CPU:
refused criteria, layer order, activation scoring on VOC images, resume identity, plans that save and load."""

from __future__ import annotations

import json

import pytest
import torch

import pruning
from pruning.detection.io import load_detector
from pruning.detection.model import backbone_layers
from pruning.detection.prune import LOSS_PASSES, DetPruneConfig, ScoreImages, prune_detector, score_layer, target_layers
from pruning.loop import Stopped
from pruning.registry import get_criterion

from detector_helpers import CLASSES, FAST, tiny_detector, voc  # noqa: F401 (voc: a fixture)

pytestmark = pytest.mark.usefixtures("one_thread")

@pytest.mark.parametrize("name", pruning.list_criteria())
def test_gradient_criteria_are_refused_and_the_others_accepted(name):
    if get_criterion(name).needs in LOSS_PASSES:
        with pytest.raises(ValueError, match="detection loss, which is not offered"):
            DetPruneConfig(name, 0.5, 1, 1)
    else:
        assert DetPruneConfig(name, 0.5, 1, 1).criterion == name


@pytest.mark.parametrize("kwargs, option", [
    (dict(criterion="l3"), "criterion"), (dict(ratio=1.0), "ratio"), (dict(iters_per_layer=-1), "iters_per_layer"),
    (dict(order="random"), "order"), (dict(layers="vgg16"), "layers"), (dict(layers=[]), "layers"),
    (dict(batch_size=3, accum_steps=2), "accum_steps"), (dict(lr=-1.0), "lr"), (dict(score_size=4), "score_size"),
    (dict(steps=(3, 2)), "steps"),
])
def test_config_refuses_bad_options_naming_them(kwargs, option):
    base = dict(criterion="l1", ratio=0.5, iters_per_layer=1, final_iters=1)
    with pytest.raises(ValueError, match=option):
        DetPruneConfig(**{**base, **kwargs})


def test_config_round_trips_and_phases():
    cfg = DetPruneConfig("random", 0.5, 10, 100, layers=["backbone.12", "backbone.4"], steps=[60], warmup_iters=5)
    assert DetPruneConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg
    step, final = cfg.finetune(10, final=False), cfg.finetune(100, final=True)
    assert (step.steps, step.warmup_iters, step.iterations) == ((), 0, 10)  # layer steps: constant lr
    assert (final.steps, final.warmup_iters, final.iterations) == ((60,), 5, 100)


def test_layers_are_pruned_last_to_first_by_default():
    det = tiny_detector()
    assert target_layers(det, DetPruneConfig("l1", 0.5, 0, 0)) == backbone_layers(det)[::-1]
    assert target_layers(det, DetPruneConfig("l1", 0.5, 0, 0, order="first_to_last")) == backbone_layers(det)
    given = DetPruneConfig("l1", 0.5, 0, 0, layers=["backbone.4", "backbone.12"], order="given")
    assert target_layers(det, given) == ["backbone.4", "backbone.12"]
    assert target_layers(det, DetPruneConfig("l1", 0.5, 0, 0, layers=["backbone.4", "backbone.12"])) == \
        ["backbone.12", "backbone.4"]
    with pytest.raises(ValueError, match="not backbone convs"):
        target_layers(det, DetPruneConfig("l1", 0.5, 0, 0, layers=["rpn.head.conv.0.0"]))


def test_activation_criterion_scores_the_backbone_on_normalised_square_voc_images(voc):
    train = voc[0]
    det = tiny_detector()
    cfg = DetPruneConfig("mean_activation", 0.5, 0, 0, score_images=5, score_size=64)
    batches = list(ScoreImages(train, det, 5, 64, seed=0, step=0))
    assert [tuple(x.shape) for x, _ in batches] == [(5, 3, 64, 64)] and batches[0][1].tolist() == [0] * 5
    x = batches[0][0]
    mean, std = torch.tensor(det.transform.image_mean), torch.tensor(det.transform.image_std)
    assert x.min() < 0 and torch.all((x * std[:, None, None] + mean[:, None, None]).round(decimals=4) >= 0)
    scores = score_layer(det, "backbone.12", cfg, train, step=0)
    # the last conv's observation site is the backbone's output (conv -> BN -> ReLU): mean over images and positions
    det.eval()
    with torch.no_grad():
        want = det.backbone(x).mean(dim=(0, 2, 3)).double()
    assert scores.shape == (64,) and torch.allclose(scores, want, rtol=1e-5, atol=1e-7)
    other = score_layer(det, "backbone.12", cfg, train, step=1)  # another step reads other images
    assert not torch.allclose(other, scores)


def _events(run):
    return [{k: v for k, v in json.loads(line).items() if k != "images_per_s"}
            for line in (run / "events.jsonl").read_text().splitlines()]


def test_stopped_and_resumed_prune_run_is_bit_identical_to_an_uninterrupted_one(voc, tmp_path):
    train, val, test = voc
    cfg = DetPruneConfig("mean_activation", 0.5, iters_per_layer=2, final_iters=3, layers=["backbone.12", "backbone.8"],
                         score_images=4, score_size=48, batch_size=2, lr=0.01, checkpoint_every=1, log_every=2, seed=2)
    few = lambda ds: torch.utils.data.Subset(ds, [0, 1, 2])  # noqa: E731  (evaluation is most of the time)
    kw = dict(val_data=few(val), test_data=few(test), device="cpu", class_names=CLASSES)
    ref = prune_detector(tiny_detector(frozen_convs=1), cfg, train, tmp_path / "ref", **kw)
    # checkpoints: step 1 (1 inside + end), step 2 (1 + end), final (2 inside + end) = 7
    for k in (1, 2, 5):  # inside a layer step's fine-tune, after a layer step, inside the final fine-tune
        run = tmp_path / f"stop{k}"
        with pytest.raises(Stopped):
            prune_detector(tiny_detector(frozen_convs=1), cfg, train, run, stop_after=k, **kw)
        assert not (run / "summary.json").exists()
        out = prune_detector(tiny_detector(frozen_convs=1), cfg, train, run, **kw)
        ref_sd = load_detector(tmp_path / "ref" / "detector").state_dict()
        got_sd = load_detector(run / "detector").state_dict()
        assert ref_sd.keys() == got_sd.keys() and all(torch.equal(ref_sd[n], got_sd[n]) for n in ref_sd), k
        plan_file = "detector/plan.json"
        assert (run / plan_file).read_bytes() == (tmp_path / "ref" / plan_file).read_bytes(), k
        assert {n: v for n, v in out.items() if n != "time_s"} == {n: v for n, v in ref.items() if n != "time_s"}, k
        assert _events(run) == _events(tmp_path / "ref"), k
    steps = ref["steps"]
    assert [(s["layer"], s["filters_before"], s["filters_kept"]) for s in steps] == \
        [("backbone.12", 64, 32), ("backbone.8", 32, 16)]
    assert steps[0]["val_before"] == ref["baseline"]["val"] and steps[1]["val_before"] == steps[0]["val_after"]
    assert ref["cost"]["params_after"] < ref["cost"]["params_before"] and 0 <= ref["final"]["test"]["map07"] <= 1
    assert ref["plan"] == json.loads((tmp_path / "ref" / "detector" / "plan.json").read_text())["plan"]
    kinds = [e["event"] for e in _events(tmp_path / "ref")]
    assert kinds[0] == "baseline" and kinds[-1] == "final" and kinds.count("layer_step") == 2


def test_pruned_detector_plan_matches_its_shapes_and_saves_and_loads(voc, tmp_path):
    train = voc[0]
    cfg = DetPruneConfig("random", 0.5, iters_per_layer=1, final_iters=1, seed=3)
    det = tiny_detector(frozen_convs=1)
    frozen = {n for n, p in det.named_parameters() if not p.requires_grad}
    out = prune_detector(det, cfg, train, tmp_path / "run", device="cpu")
    assert {n for n, p in det.named_parameters() if not p.requires_grad} == frozen  # still frozen after surgery
    plan = out["plan"]
    assert sorted(plan) == sorted(backbone_layers(det)) and len(out["steps"]) == 4
    for name, keep in plan.items():
        assert dict(det.named_modules())[name].out_channels == len(keep)
    last = len(plan["backbone.12"])
    assert det.rpn.head.conv[0][0].in_channels == last  # the RPN conv follows conv "5_3"
    assert det.roi_heads.box_head[0].in_features == last * det.roi_size ** 2  # and so does fc6
    loaded = load_detector(tmp_path / "run" / "detector")
    assert all(torch.equal(v, loaded.state_dict()[k]) for k, v in det.state_dict().items())
    det.eval()
    loaded.eval()
    image = train[0][0]
    with torch.no_grad():
        a, b = det([image]), loaded([image])
    assert torch.equal(a[0]["boxes"], b[0]["boxes"]) and torch.equal(a[0]["scores"], b[0]["scores"])
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["plan"] == plan and summary["final"]["val"] is None and summary["final"]["test"] is None
