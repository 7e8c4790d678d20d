"""``verify_voc`` and the installed ``imagenet52p voc`` commands: counts against what the generator drew,
every problem kind named (all of them, not the first), and clean refusals of a missing or incomplete root."""
from __future__ import annotations

import re

import pytest
from click.testing import CliRunner
from voc_helpers import copy_tree, digest, expected_counts, fake_tree, run, xml_text

from imagenet52p.cli import main
from imagenet52p.voc import VOC_CLASSES
from imagenet52p.voc.fake import make_fake_voc
from imagenet52p.voc.verify import verify_voc

SPECS = ("2007-trainval", "2007-test", "07+12")


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    return fake_tree(tmp_path_factory.mktemp("voccli"))


def test_verify_counts_equal_the_generated_content(tree):
    report = verify_voc(tree.devkit.parent, SPECS)
    assert report.ok and report.problems == [] and report.devkit == tree.devkit
    assert list(report.sets) == ["2007-trainval", "2007-test", "2007-trainval+2012-trainval"]
    for spec, parts in zip(report.sets, [[("2007", "trainval")], [("2007", "test")],
                                         [("2007", "trainval"), ("2012", "trainval")]]):
        n, counts = expected_counts(tree, parts)
        assert report.sets[spec].n_images == n and report.sets[spec].classes == counts
    n, counts = expected_counts(tree, [("2007", "trainval"), ("2007", "test"), ("2012", "trainval")])
    assert (report.total.n_images, report.total.classes) == (52, counts) and n == 52
    assert sum(c[2] for c in counts.values()) > 0  # the tree has difficult objects to count


def _damage(devkit, tree):
    """Break a copy of the tree in every way verify names; return {kind: file named}."""
    v7 = devkit / "VOC2007"
    tv, test = tree.sets["2007", "trainval"], tree.sets["2007", "test"]
    (v7 / "JPEGImages" / f"{tv[0]}.jpg").unlink()
    (v7 / "Annotations" / f"{tv[1]}.xml").unlink()
    (v7 / "Annotations" / f"{tv[2]}.xml").write_text("<annotation><size><width>3")
    (v7 / "Annotations" / f"{tv[3]}.xml").write_text(xml_text([("unicorn", 1, 1, 5, 5, "0")]))
    (v7 / "JPEGImages" / f"{test[0]}.jpg").write_bytes(b"not a jpeg at all")
    w, h = tree.sizes["2007", test[1]]
    (v7 / "Annotations" / f"{test[1]}.xml").write_text(xml_text([("dog", 1, 1, 5, 5, "0")], width=w + 2, height=h))
    lst = v7 / "ImageSets" / "Main" / "trainval.txt"
    lst.write_text(lst.read_text() + "../../secret\n" + f"{tv[5]}\n")
    return {"missing JPEG": f"{tv[0]}.jpg: JPEG missing", "missing XML": f"{tv[1]}.xml: annotation missing",
            "malformed XML": f"{tv[2]}.xml: not readable XML", "unknown class": f"{tv[3]}.xml: object 0",
            "unreadable JPEG": f"{test[0]}.jpg: JPEG unreadable by PIL",
            "size mismatch": f"{test[1]}.jpg: JPEG is {w}x{h} but",
            "bad id": "trainval.txt:21: image id '../../secret'",
            "repeated id": f"trainval.txt: image id '{tv[5]}' on lines 6 and 22"}


def test_verify_collects_and_names_every_problem(tree, tmp_path):
    devkit = copy_tree(tree, tmp_path)
    kinds = _damage(devkit, tree)
    report = verify_voc(devkit, SPECS)
    assert len(report.problems) == len(kinds), report.problems  # each once, though 2007-trainval is in two specs
    for kind, text in kinds.items():
        assert sum(text in p for p in report.problems) == 1, (kind, text, report.problems)
    assert all(str(devkit) in p for p in report.problems)
    assert report.sets["2007-test"].n_images == 12  # images with a bad file still counted, their objects not

    proc = run("voc", "verify", devkit, "--sets", ",".join(SPECS), "--quiet")
    assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr
    fails = [line for line in proc.stderr.splitlines() if line.startswith("FAIL ")]
    assert len(fails) == len(kinds) and f"{len(kinds)} problem(s) in 52 images" in proc.stderr
    for text in kinds.values():
        assert any(text in line for line in fails), text


def test_cli_fake_then_verify_end_to_end(tree, tmp_path):
    out = tmp_path / "cli-tree"
    proc = run("voc", "fake", out, "--seed", "0", "--years", "2007,2012", "--trainval", "20", "--test", "12")
    assert proc.returncode == 0 and "52 images" in proc.stdout, proc.stdout + proc.stderr
    assert digest(out) == digest(tree.devkit.parent)  # the command is the library function, same bytes
    proc = run("voc", "verify", out, "--sets", ",".join(SPECS), "--quiet")
    assert proc.returncode == 0 and proc.stderr == "" and "OK, 52 images, no problem" in proc.stdout, proc.stderr
    header, rule, *rows = proc.stdout.splitlines()[1:]
    assert header.split() == ["class", *SPECS[:2], "2007-trainval+2012-trainval", "total"]
    table = {r.split()[0]: r.split()[1:] for r in rows if r.split() and r.split()[0] in VOC_CLASSES + ("images",)}
    n, counts = expected_counts(tree, [("2007", "test")])
    assert [table[c][1] for c in VOC_CLASSES] == ["/".join(map(str, counts[c])) for c in VOC_CLASSES]
    assert table["images"] == ["20", "12", "40", "52"]
    result = CliRunner().invoke(main, ["voc", "fake", str(tmp_path / "small"), "--years", "2007", "--trainval", "4",
                                       "--test", "0", "--classes", "dog,cat"])
    assert result.exit_code == 0 and "4 images" in result.output, result.output
    assert not (tmp_path / "small" / "VOCdevkit" / "VOC2007" / "ImageSets" / "Main" / "test.txt").exists()


def _refused(code: int, err: str, rc: int, message: str) -> None:
    """Exit ``rc`` with one ``Error:`` line naming ``message``, no traceback."""
    assert code == rc and "Traceback" not in err and message in err, (code, err)
    assert re.findall(r"^Error: ", err, re.M) == ["Error: "], err


def test_cli_refuses_a_missing_or_incomplete_root_in_one_line(tree, tmp_path):
    proc = run("voc", "verify", tmp_path / "nope", "--quiet")  # the installed script
    _refused(proc.returncode, proc.stderr, 2, f"VOC root {tmp_path / 'nope'} does not exist or is not a folder")
    devkit = copy_tree(tree, tmp_path)
    (devkit / "VOC2007" / "ImageSets" / "Main" / "test.txt").unlink()
    runner = CliRunner()  # the same command in-process (each subprocess start costs ~1 s here)
    cases = [(("verify", devkit / "VOC2007"), 2, f"one year's folder; pass its parent {devkit} "),
             (("verify", devkit), 2, f"{devkit}/VOC2007/ImageSets/Main/test.txt is missing"),
             (("verify", devkit, "--sets", "2012-test"), 2, "VOC2012's test annotations are not public"),
             (("fake", tree.devkit.parent), 1, "VOC2007 already exists and is not empty"),
             (("fake", tmp_path / "x", "--classes", "dog,unicorn"), 2, "classes ['dog', 'unicorn']")]
    for args, rc, message in cases:
        quiet = ["--quiet"] if args[0] == "verify" else []
        result = runner.invoke(main, ["voc", *map(str, args), *quiet])
        _refused(result.exit_code, result.stderr, rc, message)
    assert "voc" in runner.invoke(main, ["--help"]).output


def test_verify_with_decode_catches_a_truncated_jpeg(tree, tmp_path):
    devkit = copy_tree(tree, tmp_path)
    jpg = devkit / "VOC2007" / "JPEGImages" / f"{tree.sets['2007', 'test'][2]}.jpg"
    data = jpg.read_bytes()
    jpg.write_bytes(data[: len(data) // 2])
    assert verify_voc(devkit, ["2007-test"]).ok  # open + verify reads headers only
    problems = verify_voc(devkit, ["2007-test"], decode=True).problems
    assert len(problems) == 1 and f"{jpg}: JPEG unreadable by PIL" in problems[0], problems
    with pytest.raises(ValueError, match="no set spec"):
        verify_voc(devkit, [])
    make_fake_voc(tmp_path / "only12", years=("2012",), trainval=3)
    assert verify_voc(tmp_path / "only12", ["12"]).total.n_images == 3
