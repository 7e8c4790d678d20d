"""The detector trainer and evaluation (pruning.detection.train / evaluate) on a synthetic VOC tree, on CPU:
config checks, schedule, data order, resume identity, accumulation, frozen layers, evaluation output."""

from __future__ import annotations

import json

import pytest
import torch

from imagenet52p.voc import VOCDetectionDataset, collate, load_images, make_fake_voc
from pruning.detection.evaluate import evaluate_detector
from pruning.detection.model import detector_from_classifier, make_detector
from pruning.detection.train import (DetTrainConfig, IterationData, lr_at, make_optimizer, train_detector,
                                     train_step)
from pruning.loop import Stopped
from pruning.loop.models import TinyVGG
from pruning.loop.train import Runtime

from detector_helpers import CLASSES, FAST, tiny_detector, voc  # noqa: F401 (voc: a fixture)

pytestmark = pytest.mark.usefixtures("one_thread")

@pytest.mark.parametrize("kwargs, option", [
    (dict(iterations=0), "iterations"), (dict(iterations=2.5), "iterations"), (dict(iterations=4, lr=0), "lr"),
    (dict(iterations=4, batch_size=3, accum_steps=2), "accum_steps"), (dict(iterations=4, steps=(5, 3)), "steps"),
    (dict(iterations=4, steps=(0,)), "steps"), (dict(iterations=4, select="top"), "select"),
    (dict(iterations=4, eval_every=0), "eval_every"), (dict(iterations=4, warmup_factor=0), "warmup_factor"),
    (dict(iterations=4, momentum=True), "momentum"), (dict(iterations=4, gamma=2), "gamma"),
])
def test_config_refuses_bad_options_naming_them(kwargs, option):
    with pytest.raises(ValueError, match=option):
        DetTrainConfig(**kwargs)


def test_config_round_trips_and_hashes_stably():
    cfg = DetTrainConfig(iterations=70000, steps=[50000])
    assert cfg.steps == (50000,) and (cfg.lr, cfg.momentum, cfg.weight_decay, cfg.batch_size) == (1e-3, 0.9, 5e-4, 1)
    again = DetTrainConfig.from_dict(json.loads(json.dumps(cfg.to_dict())))
    assert again == cfg and again.hash() == cfg.hash() and len(cfg.hash()) == 16
    assert DetTrainConfig(iterations=70000, steps=(50000,), seed=1).hash() != cfg.hash()
    with pytest.raises(ValueError, match="unknown DetTrainConfig field"):
        DetTrainConfig.from_dict({**cfg.to_dict(), "epochs": 3})


def test_schedule_steps_warmup_and_bias_groups():
    cfg = DetTrainConfig(iterations=100, lr=0.01, steps=(50, 80), gamma=0.1, warmup_iters=10, warmup_factor=0.5)
    assert lr_at(0, cfg) == pytest.approx(0.005) and lr_at(5, cfg) == pytest.approx(0.0075)
    assert lr_at(10, cfg) == pytest.approx(0.01) and lr_at(49, cfg) == pytest.approx(0.01)
    assert lr_at(50, cfg) == pytest.approx(0.001) and lr_at(80, cfg) == pytest.approx(1e-4)
    det = tiny_detector(frozen_convs=1)
    opt = make_optimizer(det, cfg)
    weights, biases = opt.param_groups
    assert (weights["weight_decay"], weights["lr_factor"]) == (5e-4, 1.0)
    assert (biases["weight_decay"], biases["lr_factor"]) == (0.0, 2.0)
    names = {id(p): n for n, p in det.named_parameters()}
    assert all(names[id(p)].endswith(".bias") for p in biases["params"])
    in_opt = {names[id(p)] for g in opt.param_groups for p in g["params"]}
    assert "backbone.0.weight" not in in_opt and "backbone.4.weight" in in_opt  # conv1 frozen, conv2 trained


def test_data_order_resumes_exactly_and_sets_the_epoch(voc):
    train = voc[0]
    order = IterationData(train, batch_size=4, seed=3)
    n = len(train)
    full = order.iterate(0)
    ref = [[(t["image_id"], t["boxes"].clone(), img.clone()) for img, t in next(full)] for _ in range(12)]
    ids = [i for batch in ref for i, _, _ in batch]
    assert sorted(ids[:n]) == sorted(ids[n:2 * n]) and ids[:n] != ids[n:2 * n]  # each pass a new permutation
    for k in (1, 4, 8):  # 4: images 16..19, across the 1st and 2nd pass; 9: the 3rd pass begins
        it = order.iterate(k)
        for want in ref[k:k + 2]:
            got = next(it)
            for (img, t), (i, boxes, pixels) in zip(got, want):
                assert t["image_id"] == i and torch.equal(t["boxes"], boxes) and torch.equal(img, pixels)
    workers = IterationData(train, batch_size=4, seed=3, num_workers=2).iterate(4)  # loader workers: same items
    for want in ref[4:6]:
        got = next(workers)
        assert all(t["image_id"] == i and torch.equal(img, p) for (img, t), (i, _, p) in zip(got, want))
    perm = order.order(1)
    train.set_epoch(1)  # positions 20..23 (iteration 5) are offsets 2..5 of pass 1, flipped as epoch 1 says
    for j, (i, boxes, pixels) in enumerate(ref[5]):
        img, t = train[perm[2 + j]]
        assert t["image_id"] == i and torch.equal(t["boxes"], boxes) and torch.equal(img, pixels)
    flips = []
    for epoch in range(4):
        train.set_epoch(epoch)
        flips.append([train.is_flipped(i) for i in range(n)])
    assert len({tuple(f) for f in flips}) == 4  # flips change with the epoch (the order above replays them)


def _strip(rows):
    return [{k: v for k, v in r.items() if k != "images_per_s"} for r in rows]


def _events(run):
    return [json.loads(line) for line in (run / "events.jsonl").read_text().splitlines()]


def test_stopped_and_resumed_run_is_bit_identical_to_an_uninterrupted_one(voc, tmp_path):
    from pruning.detection.io import load_detector

    train, val, _ = voc
    cfg = DetTrainConfig(iterations=6, batch_size=2, accum_steps=2, lr=0.01, steps=(4,), checkpoint_every=2,
                         log_every=2, eval_every=3, select="best", seed=1)
    kw = dict(val_data=val, device="cpu", class_names=CLASSES, meta={"test": "resume"})
    ref = train_detector(tiny_detector(), train, cfg, tmp_path / "ref", **kw)
    with pytest.raises(Stopped):
        train_detector(tiny_detector(), train, cfg, tmp_path / "run", stop_after=3, **kw)  # killed at 3, saved at 2
    assert not (tmp_path / "run" / "summary.json").exists()
    resumed = tiny_detector()
    out = train_detector(resumed, train, cfg, tmp_path / "run", **kw)
    ref_sd = load_detector(tmp_path / "ref" / "detector").state_dict()
    got_sd = load_detector(tmp_path / "run" / "detector").state_dict()
    assert ref_sd.keys() == got_sd.keys() and all(torch.equal(ref_sd[k], got_sd[k]) for k in ref_sd)
    assert all(torch.equal(v, got_sd[k]) for k, v in resumed.state_dict().items())
    assert _strip(_events(tmp_path / "run")) == _strip(_events(tmp_path / "ref"))
    drop = ("time_s",)
    assert {k: v for k, v in out.items() if k not in drop} == {k: v for k, v in ref.items() if k not in drop}
    assert out["iterations"] == 6 and out["images"] == 12 and out["selected"] == "best"
    vals = [e for e in _events(tmp_path / "ref") if e["event"] == "val"]
    assert [e["iteration"] for e in vals] == [3, 6] and all(0 <= e["map07"] <= 1 for e in vals)
    losses = [e for e in _events(tmp_path / "ref") if e["event"] == "iteration"]
    assert [e["iteration"] for e in losses] == [2, 4, 6] and losses[-1]["lr"] == pytest.approx(0.001)
    assert {"loss_classifier", "loss_box_reg", "loss_objectness", "loss_rpn_box_reg"} <= set(losses[0])
    assert json.loads((tmp_path / "ref" / "config.json").read_text())["config"] == cfg.to_dict()
    assert train_detector(tiny_detector(), train, cfg, tmp_path / "ref", **kw) == ref  # complete: its summary


def test_resume_refuses_another_configuration_naming_file_and_hashes(voc, tmp_path):
    train = voc[0]
    cfg = DetTrainConfig(iterations=2, checkpoint_every=1)
    with pytest.raises(Stopped):
        train_detector(tiny_detector(), train, cfg, tmp_path / "run", device="cpu", stop_after=1)
    other = DetTrainConfig(iterations=2, checkpoint_every=1, lr=0.02)
    with pytest.raises(ValueError, match=r"config\.json is of run [0-9a-f]{16}, this run is [0-9a-f]{16}.*another"):
        train_detector(tiny_detector(), train, other, tmp_path / "run", device="cpu")
    with pytest.raises(ValueError, match="resume=True"):
        train_detector(tiny_detector(), train, cfg, tmp_path / "run", device="cpu", resume=False)
    with pytest.raises(ValueError, match="select='best' needs val_data"):
        train_detector(tiny_detector(), train, DetTrainConfig(iterations=2, select="best"), tmp_path / "b")
    nameless = detector_from_classifier(TinyVGG(1000), 4, "tiny")  # no arch: it could not be saved at the end
    with pytest.raises(ValueError, match="arch"):
        train_detector(nameless, train, cfg, tmp_path / "c")
    assert not (tmp_path / "c").exists()


def _step_grads(det, items, micro, seed=None):
    """Gradients and losses of one step at lr 0 (the weights and BatchNorm statistics are put back)."""
    opt = make_optimizer(det, DetTrainConfig(iterations=1))
    state = {k: v.clone() for k, v in det.state_dict().items()}
    if seed is not None:
        torch.manual_seed(seed)
    losses = train_step(det, items, opt, micro, Runtime.create("cpu"), lr=0.0)
    grads = {n: p.grad.clone() for n, p in det.named_parameters() if p.grad is not None}
    det.load_state_dict(state)
    return grads, losses


def test_accumulation_is_the_image_weighted_mean_and_equals_the_full_batch_where_counts_match(voc):
    train = voc[0]
    det = tiny_detector(dropout=0.0)
    a, b = train[0], train[1]
    g_acc, _ = _step_grads(det, [a, b], micro=1, seed=5)
    torch.manual_seed(5)  # the two single-image steps draw what the accumulated step drew, in that order
    g_a, _ = _step_grads(det, [a], micro=1)
    g_b, _ = _step_grads(det, [b], micro=1)
    for k in g_acc:
        assert torch.allclose(g_acc[k], (g_a[k] + g_b[k]) / 2, atol=1e-6, rtol=1e-4), k
    # the full batch equals accumulation when every image samples the same number of anchors and RoIs at
    # the same padded size: two copies of one image, with every anchor and proposal sampled
    det.rpn.fg_bg_sampler.batch_size_per_image = 10 ** 6
    det.roi_heads.fg_bg_sampler.batch_size_per_image = 10 ** 6
    g_full, l_full = _step_grads(det, [a, a], micro=2, seed=5)
    g_acc, l_acc = _step_grads(det, [a, a], micro=1, seed=5)
    for k in g_full:
        assert torch.allclose(g_full[k], g_acc[k], atol=1e-6, rtol=1e-4), k
    assert all(torch.allclose(l_full[k], l_acc[k], rtol=1e-5) for k in l_full)


def test_a_step_under_bf16_autocast_gives_float32_losses_and_weights(voc):
    """The CUDA path's autocast, run on CPU with a hand-built Runtime (Runtime.create enables it on CUDA only)."""
    det = tiny_detector()
    opt = make_optimizer(det, DetTrainConfig(iterations=1))
    losses = train_step(det, [voc[0][0], voc[0][1]], opt, 1, Runtime(torch.device("cpu"), amp=True), lr=0.01)
    assert all(v.dtype == torch.float32 and torch.isfinite(v) for v in losses.values())
    assert {p.dtype for p in det.parameters()} == {torch.float32}


def test_frozen_convs_get_no_gradient_and_do_not_move(voc):
    det = tiny_detector(frozen_convs=1)
    before = det.backbone[0].weight.detach().clone()
    opt = make_optimizer(det, DetTrainConfig(iterations=1))
    train_step(det, [voc[0][0], voc[0][1]], opt, 2, Runtime.create("cpu"), lr=0.1)
    assert det.backbone[0].weight.grad is None and torch.equal(det.backbone[0].weight, before)
    assert det.backbone[4].weight.grad is not None


def test_evaluate_detector_returns_both_metrics_per_class_and_leaves_rng_and_mode(voc):
    _, val, test = voc
    det = tiny_detector()
    det.train()
    state = torch.get_rng_state()
    res = evaluate_detector(det, test, device="cpu", class_names=CLASSES)
    assert torch.equal(torch.get_rng_state(), state) and det.training
    assert set(res) == {"map07", "map10", "ap07", "ap10", "n_positives", "images"} and res["images"] == len(test)
    assert set(res["ap07"]) == set(res["ap10"]) == set(res["n_positives"]) == set(CLASSES)
    for key in ("map07", "map10"):
        assert res[key] is None or 0.0 <= res[key] <= 1.0
    for ap in (*res["ap07"].values(), *res["ap10"].values()):
        assert ap is None or 0.0 <= ap <= 1.0
    positives = sum(int((~t["difficult"]).sum()) for _, t in test)
    assert sum(res["n_positives"].values()) == positives  # difficult objects are not positives
    loader = torch.utils.data.DataLoader(test, batch_size=1, collate_fn=collate)
    assert evaluate_detector(det, loader, class_names=CLASSES) == res  # a loader of (images, targets) batches
    batched = evaluate_detector(det, test, batch_size=3, class_names=CLASSES)  # padded to the batch's largest
    assert batched["images"] == len(test) and 0.0 <= batched["map07"] <= 1.0
    default = evaluate_detector(det, test)
    assert set(default["ap07"]) == {"class1", "class2", "class3"}
    with pytest.raises(ValueError, match="batch_size"):
        evaluate_detector(det, test, batch_size=0)


@pytest.mark.heavy
def test_a_tiny_detector_learns_the_synthetic_task(tmp_path):
    """A few hundred iterations on CPU: test mAP07 far above the untrained detector's (about 0)."""
    root = tmp_path / "voc"
    make_fake_voc(root, years=("2007",), trainval=48, test=24, classes=CLASSES, size=(96, 128), seed=1,
                  difficult_fraction=0.0)
    train = VOCDetectionDataset(load_images(root, "2007-trainval"), train=True, seed=0)
    test = VOCDetectionDataset(load_images(root, "2007-test"), train=False)
    torch.manual_seed(0)
    det = make_detector("tinyvgg", num_classes=len(CLASSES) + 1, preset="tiny", classifier=TinyVGG(1000, dropout=0.0))
    before = evaluate_detector(det, test, class_names=CLASSES)
    cfg = DetTrainConfig(iterations=300, batch_size=2, lr=0.02, steps=(225,), warmup_iters=20, checkpoint_every=100,
                         log_every=50, weight_decay=1e-4)
    train_detector(det, train, cfg, tmp_path / "run", device="cpu", class_names=CLASSES)
    after = evaluate_detector(det, test, class_names=CLASSES)
    print(f"mAP07 before {before['map07']:.3f}, after {after['map07']:.3f} (mAP10 {after['map10']:.3f}); "
          f"AP07 {after['ap07']}")
    assert after["map07"] > 0.3
