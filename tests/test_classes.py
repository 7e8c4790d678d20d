"""ImageNet-52P derivation from real WordNet 3.0, the frozen lists, control sets and user lists."""
from __future__ import annotations

import json
import subprocess
from collections import Counter

import pytest
from conftest import cli

from imagenet52p import classes as C
from imagenet52p import derive as D
from imagenet52p.wordnet import open_wordnet, synset_from_wnid


@pytest.fixture(scope="module")
def wn():
    return open_wordnet()[1]


@pytest.fixture(scope="module")
def derived():
    return D.derive_class_set()


def test_derivation_equals_frozen_list(derived):
    frozen = C.load_class_set("imagenet52p")
    assert D.diff_sets(frozen, derived) == []
    assert frozen == derived and frozen.sha256 == derived.sha256


def test_frozen_synsets_txt_matches_json():
    frozen = C.load_class_set("imagenet52p-v1")
    assert C._info_text("imagenet52p-v1_synsets.txt").split() == frozen.wnids


def test_imagenet52p_invariants(wn):
    cs = C.load_class_set("imagenet52p")
    assert len(cs) == 52
    assert [c.index for c in cs] == list(range(52))
    assert len(set(cs.wnids)) == 52  # no class twice, hence under one VOC class only
    assert {c.voc_class for c in cs} == set(C.VOC_CLASSES)  # every VOC class covered
    in1k = C.imagenet1k_index()
    assert all(in1k[c.wnid] == c.imagenet1k_index for c in cs)
    assert cs.imagenet1k_indices == sorted(cs.imagenet1k_indices)  # label order = ImageNet order
    spec = D.load_spec()
    anchors = {v.name: v.anchors for v in spec.voc}
    for c in cs:
        assert c.voc_synset in anchors[c.voc_class]
        # the declared depth is the real hypernym distance to the declared anchor ...
        assert D.hypernym_depth(synset_from_wnid(wn, c.wnid), wn.synset(c.voc_synset)) == c.depth
        assert c.name == synset_from_wnid(wn, c.wnid).lemma_names()[0].replace("_", " ")
    # ... and only fallback/inclusion classes are deeper than max_depth
    deep = {c.wnid for c in cs if c.depth > spec.max_depth}
    included = {i["wnid"] for v in spec.voc for i in v.include}
    fallback_vocs = {c.voc_class for c in cs if c.depth > spec.max_depth and c.wnid not in included}
    assert deep - included == {c.wnid for c in cs if c.voc_class in fallback_vocs}
    assert fallback_vocs == {"person", "sofa"}


def test_excluded_classes_are_out(derived):
    spec = D.load_spec()
    for v in spec.voc:
        for ex in v.exclude:
            assert ex["wnid"] not in derived.wnids, ex
            assert ex["reason"]


def test_depth_zero_without_fallback_leaves_voc_classes_uncovered(wn):
    spec = D.load_spec()
    spec0 = D.Spec(spec.name, 0, "none", 0, [D.VocEntry(v.name, v.anchors) for v in spec.voc], spec.sha256)
    with pytest.raises(D.SpecError, match="gets no ImageNet-1k class"):
        D.derive_class_set(spec0)


def test_spec_errors_are_clear():
    text = C._info_text("imagenet52p-v1.toml")
    with pytest.raises(D.SpecError, match="yields 52 classes, expected 53"):
        D.derive_class_set(D.load_spec(text=text.replace("expected_count = 52", "expected_count = 53")))
    bad_ex = text.replace('wnid = "n02701002"', 'wnid = "n01440764"')  # tench is not a car
    with pytest.raises(D.SpecError, match="n01440764.*does not select"):
        D.derive_class_set(D.load_spec(text=bad_ex))
    with pytest.raises(D.SpecError, match="unknown anchor synset 'dog.n.99'"):
        D.derive_class_set(D.load_spec(text=text.replace('"dog.n.01"', '"dog.n.99"')))
    with pytest.raises(D.SpecError, match="wordnet must be"):
        D.load_spec(text=text.replace('wordnet = "3.0"', 'wordnet = "3.1"'))


def test_random52_deterministic_and_disjoint():
    frozen = C.load_class_set("random52")
    assert len(frozen) == 52 and len(set(frozen.wnids)) == 52
    assert D.diff_sets(frozen, D.derive_random52()) == []
    assert not set(frozen.wnids) & set(C.load_class_set("imagenet52p").wnids)
    assert not set(frozen.wnids) & D.voc_related_wnids()  # no dog breed, bird species, ...
    assert D.derive_random52(seed=53).wnids != frozen.wnids  # the seed matters
    assert all(c.voc_class is None for c in frozen)


def test_imagenet1k_set():
    cs = C.load_class_set("imagenet1k")
    assert len(cs) == 1000 and cs.wnids == sorted(cs.wnids)
    assert cs.classes[0].wnid == "n01440764" and cs.classes[0].name == "tench"
    assert Counter(c.name for c in cs).most_common(1)[0][1] == 2  # ImageNet's duplicate names (crane, maillot)


def test_user_list_validation(tmp_path):
    good = tmp_path / "mine.txt"
    good.write_text("# my classes\nn02084071 dog?\nn01440764\n\nn02123045  # tabby\n")
    with pytest.raises(ValueError, match="n02084071 is not an ImageNet-1k class"):
        C.load_class_set(good)
    good.write_text("n04591713\nn01440764\nn02123045\n")
    cs = C.load_class_set(good)
    assert cs.wnids == ["n01440764", "n02123045", "n04591713"] and cs.name == "mine"
    assert [c.index for c in cs] == [0, 1, 2] and cs.imagenet1k_indices == [0, 281, 907]
    bad = tmp_path / "bad.txt"
    bad.write_text("n01440764\nfoo\nn01440764\nn99999999\n")
    with pytest.raises(ValueError) as err:
        C.load_class_set(bad)
    msg = str(err.value)
    assert str(bad) in msg and "'foo' is not a wnid" in msg and "line 3: n01440764 duplicates line 1" in msg
    assert "n99999999 is not an ImageNet-1k class" in msg
    with pytest.raises(FileNotFoundError, match="does not exist"):
        C.load_class_set(tmp_path / "missing.txt")
    with pytest.raises(ValueError, match="unknown class set 'imagenet53p'"):
        C.load_class_set("imagenet53p")


def test_diff_reports_changes(derived):
    smaller = C.ClassSet(derived.name, derived.classes[:-1])
    diffs = D.diff_sets(derived, smaller)
    assert len(diffs) == 1 and derived.classes[-1].wnid in diffs[0] and "no longer derived" in diffs[0]


def test_cli_json_through_entry_point():
    out = subprocess.run([cli("imagenet52p"), "classes", "--format", "json"], capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    rows = json.loads(out.stdout)
    assert len(rows) == 52
    assert [r["index"] for r in rows] == list(range(52))
    for r in rows:
        assert {"index", "wnid", "name", "voc_class", "voc_synset", "depth", "imagenet1k_index"} <= r.keys()
    assert {r["voc_class"] for r in rows} == set(C.VOC_CLASSES)


def test_cli_table_tsv_sets_and_errors(tmp_path):
    table = subprocess.run([cli("imagenet52p"), "classes"], capture_output=True, text=True, timeout=120)
    assert table.returncode == 0
    for voc in C.VOC_CLASSES:
        assert f"\n{voc} (" in table.stdout
    tsv = subprocess.run([cli("imagenet52p"), "classes", "--set", "random52", "--format", "tsv"],
                         capture_output=True, text=True, timeout=120)
    assert tsv.returncode == 0 and len(tsv.stdout.strip().splitlines()) == 53
    bad = tmp_path / "bad.txt"
    bad.write_text("n00000000\n")
    err = subprocess.run([cli("imagenet52p"), "classes", "--set", str(bad)], capture_output=True, text=True,
                         timeout=120)
    assert err.returncode == 2 and "n00000000 is not an ImageNet-1k class" in err.stderr


def test_cli_derive_agrees():
    out = subprocess.run([cli("imagenet52p"), "classes", "--derive"], capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stdout + out.stderr
    assert out.stdout.count("OK, matches WordNet 3.0") == 3


def test_every_info_file_is_declared_package_data():
    """A file in imagenet52p/_info that pyproject's package-data misses would vanish from the wheel."""
    import fnmatch
    import tomllib
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    patterns = tomllib.loads((root / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]["imagenet52p"]
    files = [p.relative_to(root / "imagenet52p").as_posix() for p in (root / "imagenet52p" / "_info").iterdir()]
    assert files
    missing = [f for f in files if not any(fnmatch.fnmatch(f, pat) for pat in patterns)]
    assert missing == []
