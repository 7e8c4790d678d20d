"""The WordNet 3.0 locator on real WordNet files: Debian layout, NLTK layout, none, wrong version."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from imagenet52p import wordnet as W

DEBIAN = Path("/usr/share/wordnet")


def _system_dict() -> Path:
    loc = W.locate_wordnet()
    src = loc.path if loc.source != "nltk" else loc.corpus_dir
    assert (src / "data.noun").is_file(), f"no WordNet dict files at {src}"
    return src


def _copy_dict(dst: Path, with_lexnames: bool) -> Path:
    dst.mkdir(parents=True)
    src = _system_dict()
    for name in W.DICT_FILES:
        shutil.copyfile(src / name, dst / name)
    if with_lexnames:
        (dst / "lexnames").write_bytes(Path(W.__file__).with_name("_info").joinpath("lexnames").read_bytes())
    return dst


def _run(code: str, **env) -> subprocess.CompletedProcess:
    full = {**os.environ, **env}
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=full, timeout=300)


def test_debian_layout_is_staged_with_lexnames(tmp_path):
    """A dict dir without lexnames (Debian's layout) is staged into our cache and read by NLTK."""
    dict_dir = _copy_dict(tmp_path / "dict", with_lexnames=False)
    assert not (dict_dir / "lexnames").exists()
    out = _run(
        "from imagenet52p.wordnet import open_wordnet\n"
        f"loc, wn = open_wordnet({str(dict_dir)!r})\n"
        "print(loc.source, loc.corpus_dir, wn.get_version(), wn.synset_from_pos_and_offset('n', 2084071).name())",
        IMAGENET52P_CACHE=str(tmp_path / "cache"))
    assert out.returncode == 0, out.stderr
    source, corpus_dir, version, dog = out.stdout.split()
    assert (source, version, dog) == ("explicit", "3.0", "dog.n.01")
    assert Path(corpus_dir).is_relative_to(tmp_path / "cache")
    assert (Path(corpus_dir) / "lexnames").is_file()
    # NLTK's path security is still on: it refuses the un-staged directory.
    refused = _run(
        "import nltk\nfrom nltk.corpus.reader.wordnet import WordNetCorpusReader\n"
        f"WordNetCorpusReader({str(dict_dir)!r}, None)")
    assert refused.returncode != 0


@pytest.mark.skipif(not DEBIAN.is_dir(), reason="Debian's wordnet-base is not installed here")
def test_system_directory_found_without_configuration(tmp_path, monkeypatch):
    import nltk

    monkeypatch.setattr(nltk.data, "path", [str(tmp_path / "empty_nltk")])
    monkeypatch.delenv("IMAGENET52P_WORDNET_DIR", raising=False)
    monkeypatch.delenv("NLTK_DATA", raising=False)
    monkeypatch.setenv("IMAGENET52P_CACHE", str(tmp_path / "cache"))
    if W._nltk_find_wordnet() is not None:
        pytest.skip("an NLTK wordnet corpus is installed in a default location")
    loc = W.locate_wordnet(system_dirs=("/nonexistent/wordnet", str(DEBIAN)))
    assert loc.source == "system" and loc.path == DEBIAN
    assert loc.corpus_dir == tmp_path / "cache" / "nltk_data" / "corpora" / "wordnet"
    assert (loc.corpus_dir / "lexnames").read_bytes() == (W.Path(W.__file__).parent / "_info" / "lexnames").read_bytes()


def test_nltk_layout_directory(tmp_path):
    """An NLTK data dir (corpora/wordnet with lexnames) on NLTK_DATA is used as is, not staged."""
    corpus = _copy_dict(tmp_path / "nltk_data" / "corpora" / "wordnet", with_lexnames=True)
    out = _run(
        "from imagenet52p.wordnet import open_wordnet\n"
        "loc, wn = open_wordnet()\n"
        "print(loc.source, loc.corpus_dir, wn.get_version())",
        NLTK_DATA=str(tmp_path / "nltk_data"), IMAGENET52P_WORDNET_DIR="")
    assert out.returncode == 0, out.stderr
    source, corpus_dir, version = out.stdout.split()
    assert source == "nltk" and Path(corpus_dir) == corpus and version == "3.0"


def test_error_lists_places_and_install_help(tmp_path, monkeypatch):
    import nltk

    monkeypatch.setattr(nltk.data, "path", [str(tmp_path / "empty_nltk")])
    monkeypatch.delenv("IMAGENET52P_WORDNET_DIR", raising=False)
    monkeypatch.delenv("NLTK_DATA", raising=False)
    if W._nltk_find_wordnet() is not None:
        pytest.skip("an NLTK wordnet corpus is installed in a default location")
    nowhere = tmp_path / "no_wordnet"
    with pytest.raises(W.WordNetNotFoundError) as err:
        W.locate_wordnet(system_dirs=(str(nowhere),))
    msg = str(err.value)
    assert str(nowhere) in msg and str(tmp_path / "empty_nltk") in msg
    assert "nltk.downloader wordnet" in msg and "apt-get install wordnet-base" in msg


def test_explicit_dir_errors_name_the_problem(tmp_path):
    with pytest.raises(W.WordNetNotFoundError, match="does not exist"):
        W.locate_wordnet(tmp_path / "missing")
    (tmp_path / "half").mkdir()
    (tmp_path / "half" / "data.noun").write_text("x")
    with pytest.raises(W.WordNetNotFoundError, match="missing .*index.noun"):
        W.locate_wordnet(tmp_path / "half")


def test_other_version_is_refused(tmp_path):
    """A dict whose header says 3.1 is refused: other versions renumber the offsets that are wnids."""
    dict_dir = _copy_dict(tmp_path / "dict31", with_lexnames=False)
    for name in ("data.adj", "data.noun"):
        data = (dict_dir / name).read_bytes()
        assert b"WordNet 3.0" in data[:3000]
        (dict_dir / name).write_bytes(data.replace(b"WordNet 3.0", b"WordNet 3.1", 1))
    out = _run(f"from imagenet52p.wordnet import open_wordnet\nopen_wordnet({str(dict_dir)!r})",
               IMAGENET52P_CACHE=str(tmp_path / "cache"))
    assert out.returncode != 0
    assert "WordNetVersionError" in out.stderr and "not 3.0" in out.stderr


def test_wordnet_command(tmp_path):
    from conftest import cli

    out = subprocess.run([cli("imagenet52p"), "wordnet"], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert "version 3.0" in out.stdout
    bad = subprocess.run([cli("imagenet52p"), "wordnet", "--wordnet-dir", str(tmp_path / "nope")],
                         capture_output=True, text=True, timeout=300)
    assert bad.returncode == 1 and "does not exist" in bad.stderr
