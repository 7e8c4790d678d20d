"""`imagenet52p prune` on a real build: run directory contents, class-subset settings, errors."""

from __future__ import annotations

import json

import pytest
import torch
from click.testing import CliRunner

from benchmark import prune_cli
from benchmark.prune_cli import main
from imagenet52p.classes import imagenet1k_index, load_class_set

WNIDS = load_class_set("imagenet52p").wnids[:6]
TRAIN_PER_CLASS, HELD_OUT, TEST_PER_CLASS = 16, 4, 4


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def build(tmp_path_factory):
    from imagenet52p.builder import BuildConfig, build_dataset
    from imagenet52p.fake import FakeSpec, make_fake_imagenet
    base = tmp_path_factory.mktemp("clidata")
    make_fake_imagenet(base / "tree", WNIDS, FakeSpec(train_per_class=TRAIN_PER_CLASS, val_per_class=TEST_PER_CLASS,
                                                      width=40, height=32))
    (base / "classes.txt").write_text("\n".join(WNIDS) + "\n")
    build_dataset(BuildConfig(root=base / "tree", out=base / "build", classes=str(base / "classes.txt"),
                              val_per_class=HELD_OUT, seed=0, workers=1, shard_size=40, progress=False))
    return base / "build"


def prune(build, out, *extra, ok=True):
    args = ["prune", "--model", "tinyvgg", "--criterion", "l1", "--ratio", "0.5", "--data", str(build), "--out",
            str(out), "--p", "0.25", "--q", "1", "--batch-size", "16", "--image-size", "32", "--device", "cpu",
            "--workers", "0", "--no-progress", *extra]
    result = CliRunner().invoke(main, args)
    if ok:
        assert result.exit_code == 0, result.output + repr(result.exception)
    return result


def test_run_directory(tmp_path, build):
    result = prune(build, tmp_path / "run", "--layers", "features.12,features.4", "--keep-step-checkpoints")
    assert "test top-1" in result.output
    run = tmp_path / "run"
    config = json.loads((run / "config.json").read_text())
    summary = json.loads((run / "summary.json").read_text())
    assert config["run_hash"] == summary["run_hash"] and len(config["run_hash"]) == 16
    assert config["config"]["layers"] == ["features.12", "features.4"]
    assert [s["layer"] for s in summary["steps"]] == ["features.4", "features.12"][::-1]
    assert summary["images"]["train_images_per_epoch"] == 6 * (TRAIN_PER_CLASS - HELD_OUT)
    assert summary["test"]["images"] == 6 * TEST_PER_CLASS and summary["baseline"]["val"]["images"] == 6 * HELD_OUT
    plan = json.loads((run / "model" / "plan.json").read_text())
    assert plan["out_channels"] == {"features.12": 32, "features.4": 16}
    assert (run / "checkpoints" / "last.pt").is_file() and (run / "timing.json").is_file()
    for i, layers in enumerate([["features.12"], ["features.12", "features.4"]]):
        ck = torch.load(run / "checkpoints" / f"step_{i:02d}.pt", weights_only=True)  # plain data only
        plans = json.loads(ck["plans"])
        assert [next(iter(p)) for p in plans] == layers and ck["position"]["step"] == i + 1
        assert [len(next(iter(p.values()))) for p in plans] == [32, 16][:i + 1]
    kinds = [json.loads(line)["event"] for line in (run / "events.jsonl").read_text().splitlines()]
    assert kinds == ["baseline", "layer_step", "layer_step", "epoch", "test"]


def test_restricted_head_from_a_1000_way_model(tmp_path, build):
    prune(build, tmp_path / "run", "--head", "restrict", "--layers", "features.12")
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["meta"]["num_classes"] == 1000
    state = torch.load(tmp_path / "run" / "model" / "state_dict.pt", weights_only=True)
    assert state["classifier.3.weight"].shape[0] == 6  # the 6 rows of the build's classes were kept
    assert summary["test"]["images"] == 6 * TEST_PER_CLASS


def test_1000_way_on_the_subset_and_subset_logits(tmp_path, build):
    prune(build, tmp_path / "full", "--label-space", "imagenet1k", "--layers", "features.12", "--q", "0")
    prune(build, tmp_path / "logits", "--head", "subset-logits", "--layers", "features.12", "--q", "0")
    full = json.loads((tmp_path / "full" / "summary.json").read_text())
    logits = json.loads((tmp_path / "logits" / "summary.json").read_text())
    assert full["meta"]["num_classes"] == logits["meta"]["num_classes"] == 1000
    assert full["test"]["images"] == logits["test"]["images"] == 6 * TEST_PER_CLASS
    # same model, same data: the subset arg-max can only be right more often than the 1000-way one
    # (both heads train all 1000 logits on the same batches: bit-identical weights, so this compares
    # like with like and holds on any CPU)
    a, b = (torch.load(tmp_path / d / "model" / "state_dict.pt", weights_only=True) for d in ("full", "logits"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert logits["test"]["top1"] >= full["test"]["top1"]
    assert set(logits["config"]["classes"]) == {imagenet1k_index()[w] for w in WNIDS}


def test_class_subset_from_a_list(tmp_path, build):
    subset = tmp_path / "three.txt"
    subset.write_text("\n".join(WNIDS[:3]) + "\n")
    prune(build, tmp_path / "run", "--classes", str(subset), "--layers", "features.12", "--q-epochs", "2",
          "--p-epochs", "0.5", "--criterion", "mean_activation")  # the spellings torchrun leaves alone
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["config"]["criterion"] == "mean_activation"
    assert summary["steps"][0]["score_images"] == 3 * (TRAIN_PER_CLASS - HELD_OUT)  # the subset's train images
    assert [r["epoch"] for r in summary["final"]["epochs"]] == [1.0, 2.0]
    assert summary["steps"][0]["finetune_images"] == round(0.5 * 3 * (TRAIN_PER_CLASS - HELD_OUT))
    assert summary["images"]["train_images_per_epoch"] == 3 * (TRAIN_PER_CLASS - HELD_OUT)
    assert summary["test"]["images"] == 3 * TEST_PER_CLASS
    assert summary["config"]["classes"] == [0, 1, 2]  # the build's labels of the first three wnids


def test_clear_errors(tmp_path, build):
    r = prune(tmp_path / "nowhere", tmp_path / "run", ok=False)
    assert r.exit_code != 0 and "nowhere" in r.output and "does not exist" in r.output
    r = prune(build, tmp_path / "run2", "--criterion-options", "{bins", ok=False)
    assert r.exit_code != 0 and "--criterion-options" in r.output
    r = prune(build, tmp_path / "run3", "--model", "vgg17", ok=False)
    assert r.exit_code != 0 and "no model 'vgg17'" in r.output
    r = prune(build, tmp_path / "run4", "--ratio", "1.5", ok=False)
    assert r.exit_code != 0 and "ratio" in r.output


def test_cli_choices_are_the_librarys_and_help_stays_torch_free():
    import subprocess
    import sys

    from benchmark import data
    from pruning.loop import config
    assert prune_cli.ORDERS.choices == config.ORDERS and prune_cli.SCHEDULES.choices == config.SCHEDULES
    assert prune_cli.SELECTIONS.choices == config.SELECTIONS
    assert prune_cli.HEADS.choices == data.HEADS and prune_cli.LABEL_SPACES.choices == data.LABEL_SPACES
    import pruning
    assert prune_cli.PROTOCOLS.choices == tuple(pruning.PROTOCOLS)
    code = ("import sys; from click.testing import CliRunner; from benchmark.prune_cli import main; "
            "r = CliRunner().invoke(main, ['--help']); assert r.exit_code == 0, r.output; "
            "assert 'torch' not in sys.modules, 'imagenet52p --help imported torch'")
    subprocess.run([sys.executable, "-c", code], check=True)
    r = CliRunner().invoke(main, ["prune", "--order", "sideways"])
    assert r.exit_code != 0 and "last_to_first" in r.output  # the library's choices, in the error


def test_weights_file_and_restricted_rows_are_the_pretrained_ones(tmp_path, build):
    from pruning.loop import make_model
    pretrained = make_model("tinyvgg", 1000, seed=123)
    torch.save(pretrained.state_dict(), tmp_path / "in1k.pt")
    prune(build, tmp_path / "run", "--weights", str(tmp_path / "in1k.pt"), "--head", "restrict", "--ratio", "0",
          "--q", "0")
    state = torch.load(tmp_path / "run" / "model" / "state_dict.pt", weights_only=True)
    rows = [imagenet1k_index()[w] for w in WNIDS]
    assert torch.equal(state["classifier.3.weight"], pretrained.classifier[3].weight.detach()[rows])
    assert torch.equal(state["classifier.3.bias"], pretrained.classifier[3].bias.detach()[rows])
    assert torch.equal(state["features.0.weight"], pretrained.features[0].weight.detach())
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert len(summary["meta"]["weights_sha256"]) == 64
    r = prune(build, tmp_path / "run2", "--weights", str(tmp_path / "missing.pt"), ok=False)
    assert r.exit_code != 0 and "missing.pt" in r.output


def test_folders_tree_as_data(tmp_path, build):
    tree = build.parent / "tree"  # train/<wnid>/, val/<wnid>/ (no test/): torchvision ImageFolder
    prune(tree, tmp_path / "run", "--layers", "features.12", "--label-space", "imagenet1k")
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["meta"]["data"]["format"] == "folders" and summary["meta"]["num_classes"] == 1000
    assert summary["images"]["train_images_per_epoch"] == 6 * TRAIN_PER_CLASS
    assert summary["baseline"]["val"]["images"] == 6 * TEST_PER_CLASS and summary["test"] is None


def test_the_imagenet52p_console_script_keeps_the_data_commands_and_their_options():
    """`imagenet52p` is composed in benchmark from the data floor's commands plus prune: the real installed
    script answers -h/--help for the group and every command, and --version, as the data CLI does."""
    import subprocess

    from conftest import cli
    for args in (["-h"], ["--help"], ["prune", "-h"], ["classes", "-h"], ["verify", "--help"], ["info", "-h"],
                 ["wordnet", "-h"]):
        r = subprocess.run([cli("imagenet52p"), *args], capture_output=True, text=True)
        assert r.returncode == 0 and r.stdout.startswith("Usage: imagenet52p"), (args, r.stdout, r.stderr)
    r = subprocess.run([cli("imagenet52p"), "--version"], capture_output=True, text=True)
    assert r.returncode == 0 and "version" in r.stdout


def test_a_timm_resnext_from_a_safetensors_file_prunes_grouped_convs_group_balanced(tmp_path, build):
    """`imagenet52p prune --model timm/resnext26ts --weights FILE.safetensors`, an activation criterion, on
    the two convs of a block whose 3x3 conv is grouped (16 groups): the run finishes, kept widths are whole
    multiples of the groups, and the saved model is replayed onto a fresh timm model with identical outputs."""
    import safetensors.torch
    import timm

    import pruning

    torch.manual_seed(0)
    net = timm.create_model("resnext26ts", num_classes=6)
    weights = tmp_path / "resnext.safetensors"
    safetensors.torch.save_file(net.state_dict(), str(weights))
    layers = "stages.3.1.conv2_kxk.conv,stages.3.1.conv1_1x1.conv"
    result = CliRunner().invoke(main, [
        "prune", "--model", "timm/resnext26ts", "--weights", str(weights), "--criterion", "apoz", "--ratio", "0.3",
        "--data", str(build), "--out", str(tmp_path / "run"), "--layers", layers, "--p", "0.25", "--q", "0.25",
        "--batch-size", "16", "--image-size", "32", "--device", "cpu", "--workers", "0", "--no-progress"])
    assert result.exit_code == 0, result.output + repr(result.exception)
    run = tmp_path / "run"
    summary = json.loads((run / "summary.json").read_text())
    assert [s["layer"] for s in summary["steps"]] == layers.split(",")
    widths = json.loads((run / "model" / "plan.json").read_text())["out_channels"]
    for name in layers.split(","):
        original = net.get_submodule(name).out_channels
        assert widths[name] < original and widths[name] % 16 == 0, (name, widths[name])
    config = json.loads((run / "config.json").read_text())
    assert config["meta"]["weights_sha256"] and "weights_name" not in config["meta"]
    loaded = pruning.load_pruned(lambda: timm.create_model("resnext26ts", num_classes=6), run / "model")
    saved = torch.load(run / "model" / "state_dict.pt", weights_only=True)
    state = loaded.state_dict()
    assert state.keys() == saved.keys() and all(torch.equal(state[k], saved[k]) for k in saved)
    # the grouped 3x3 conv after conv1 lost the same number of inputs in each of its 16 groups
    grouped = loaded.get_submodule("stages.3.1.conv2_kxk.conv")
    conv1 = "stages.3.1.conv1_1x1.conv"
    assert grouped.groups == 16 and grouped.in_channels == widths[conv1]
    assert grouped.weight.shape[1] * grouped.groups == widths[conv1]
    with torch.no_grad():
        assert torch.isfinite(loaded.eval()(torch.randn(2, 3, 32, 32))).all()
