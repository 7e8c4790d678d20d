"""Detection configs without running anything: the shipped tables' shape, canonical machine-free identities,
and the refusals that name the key (seeds, splits that share images, missing iterations, preset fields)."""
import tomllib
from importlib import resources

import pytest

from benchmark.config import load_config, parse_config
from benchmark.grid import expand_grid


def _doc(name: str) -> dict:
    return tomllib.loads((resources.files("benchmark") / "configs" / f"{name}.toml").read_text(encoding="utf-8"))


def _ids(doc: dict) -> list[str]:
    return [c.id for c in expand_grid(parse_config(doc, "x.toml"))]


def test_shipped_detection_tables_have_the_papers_shape():
    t5 = expand_grid(load_config("table5"))
    assert {c.criterion for c in t5 if not c.is_baseline} == {"random", "mean_activation", "entropy",
                                                              "scaled_entropy", "l1", "apoz", "sensitivity"}
    assert {c.ratio for c in t5} == {0.0, 0.25, 0.5, 0.75} and {c.seed for c in t5} == {0, 1, 2}
    assert {c.up_config for c in t5} == {"table1_vgg16"} and all(c.kind == "plugin" for c in t5)
    t6 = expand_grid(load_config("table6"))
    direct = [c for c in t6 if c.kind == "direct"]
    (source,) = [c for c in t6 if c.kind == "plugin"]
    assert {c.criterion for c in direct} == {"random"} and {c.source for c in direct} == {source.hash}
    assert source.is_baseline and source.seed == 0 and source.reference_id == source.id
    assert source.id in {c.id for c in t5}  # table5 and table6 share the trained detector
    t7 = expand_grid(load_config("table7"))
    assert {c.up_config for c in t7} == {"table4_imagenet52p", "random52_control"}
    assert "class_specific" in {c.criterion for c in t7}
    # the upstream cells are the classification grids' own, by hash
    up = {c.hash for c in expand_grid(load_config("table1_vgg16"))}
    assert {c.up_hash for c in t5} <= up


def test_identity_is_canonical_and_machine_free():
    doc = _doc("table6")
    base = _ids(doc)
    same = [
        lambda d: d["upstream"]["imagenet1k"].update(config=str(resources.files("benchmark") / "configs"
                                                                  / "table1_vgg16.toml")),  # a path, not a name
        lambda d: d["voc"].update(train="07"),                         # 07 = 2007-trainval
        lambda d: d["detector"].update(min_size=600, rpn_channels=512),  # preset values written out
        lambda d: d["train"].update(checkpoint_every=500, log_every=5),  # cadence: no number changes
        lambda d: d["prune"].update(checkpoint_every=100),
        lambda d: d["voc"].update(val_seed=7, num_workers=2, root="/elsewhere"),  # no val subset; machine-specific
        lambda d: d["fps"].update(images=10),
    ]
    for change in same:
        d = _doc("table6")
        change(d)
        assert _ids(d) == base, change
    # a number-changing option changes the ids of exactly the cells it changes (direct cells follow their source)
    differ = [(lambda d: d["train"].update(lr=0.002), 10), (lambda d: d["detector"].update(min_size=500), 10),
              (lambda d: d["prune"].update(final_iters=100), 9), (lambda d: d["voc"].update(val_images=100), 10)]
    for change, n in differ:
        d = _doc("table6")
        change(d)
        assert len(set(_ids(d)) - set(base)) == n, change


@pytest.mark.parametrize("change,message", [
    (lambda d: d["train"].update(seed=3), "[train] seed: a cell's seed is the grid's `seed`"),
    (lambda d: d["prune"].update(seed=3), "[prune] seed"),
    (lambda d: d["voc"].update(train="2007-trainval+2007-test"), "holds a test set"),
    (lambda d: d["voc"].update(test="2007-val"), "share images (2007-trainval/val)"),
    (lambda d: d["train"].pop("iterations"), "[train]: `iterations` is required"),
    (lambda d: d["prune"].pop("final_iters"), "`final_iters` required for direct cells"),
    (lambda d: d["detector"].update(min_sise=600), "unknown detector preset field(s) min_sise"),
    (lambda d: d["voc"].update(train="2008-trainval"), "unknown part '2008-trainval'"),
    (lambda d: d["grid"][0].update(criterion=["sensitivity"]), "needs loss gradients"),
    (lambda d: d["upstream"]["imagenet1k"].update(config="nope"), "[upstream.imagenet1k] config = 'nope'"),
])
def test_bad_detection_configs_are_refused_naming_the_key(change, message):
    d = _doc("table6")
    change(d)
    with pytest.raises(ValueError) as e:
        expand_grid(parse_config(d, "t6.toml"))
    assert message in str(e.value) and str(e.value).startswith("t6.toml"), str(e.value)


def test_a_plugin_tables_seeds_are_averaged_not_split(tmp_path):
    """Each seed of a plug-in cell trains its detector with that seed (in the cell's options); the leaderboard
    still puts the seeds of one criterion x ratio in one entry: table5 is one table, n = 3 everywhere."""
    import json

    from benchmark.detection.grid import expand_detection_grid
    from benchmark.leaderboard import build_leaderboard

    cells = expand_detection_grid(load_config("table5"))
    for i, c in enumerate(cells):
        d = tmp_path / c.id
        d.mkdir()
        (d / "cell.json").write_text(json.dumps(c.to_dict()))
        (d / "summary.json").write_text(json.dumps({"test": {"map07": 0.5 + 0.001 * i, "map10": 0.5}}))
    board = build_leaderboard(tmp_path)
    (table,) = board["tables"]
    assert table["baseline"]["n"] == 3 and {e["n"] for e in table["entries"]} == {3}
    assert len(table["entries"]) == 7 * 3  # 7 criteria x 3 ratios, each the mean of its 3 seeds
