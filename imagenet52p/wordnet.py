"""Find and open WordNet 3.0, the version whose noun offsets are ImageNet wnids.

ImageNet-1k wnids are WordNet **3.0** noun offsets (``n02084071`` is
``dog.n.01``); WordNet 3.1 renumbered them, so reading any other version would
silently mislabel classes.  :func:`locate_wordnet` looks, in this order, at

1. an explicit directory (``--wordnet-dir`` or ``IMAGENET52P_WORDNET_DIR``);
2. NLTK's standard ``corpora/wordnet`` corpus (``python -m nltk.downloader wordnet``);
3. a WordNet 3.0 *dict* directory installed by the system, such as Debian's
   ``/usr/share/wordnet`` (packages ``wordnet-base`` and ``wordnet-sense-index``)
   or ``$WNHOME/dict``.

A system dict directory lacks the ``lexnames`` file that NLTK's reader needs and
lies outside NLTK's trusted data roots (NLTK >= 3.9 refuses to read anything
else).  We therefore stage a private copy of the dictionary files, plus the
``lexnames`` file shipped in this package, under our own cache directory and add
that directory to ``nltk.data.path``: the documented way to trust a data root.
NLTK's path security stays on.
"""

from __future__ import annotations

import functools
import logging
import os
import shutil
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

log = logging.getLogger(__name__)

ENV_DIR = "IMAGENET52P_WORDNET_DIR"
ENV_CACHE = "IMAGENET52P_CACHE"
SYSTEM_DIRS = ("/usr/share/wordnet", "/usr/local/share/wordnet", "/usr/share/WordNet-3.0/dict",
               "/usr/local/WordNet-3.0/dict", "/opt/homebrew/share/wordnet", "/usr/local/opt/wordnet/dict")
#: Files NLTK's WordNetCorpusReader opens (``lexnames`` may come from us).
DICT_FILES = tuple(f"{kind}.{pos}" for kind in ("data", "index") for pos in ("noun", "verb", "adj", "adv")) + (
    "noun.exc", "verb.exc", "adj.exc", "adv.exc", "index.sense")
#: dog.n.01 at this offset is true of WordNet 3.0 and false of 3.1.
_PROBE = ("n", 2084071, "dog.n.01")

INSTALL_HELP = (
    "Install WordNet 3.0 in one of two ways:\n"
    "  1. python -m nltk.downloader wordnet            (NLTK's corpus, any OS)\n"
    "  2. sudo apt-get install wordnet-base wordnet-sense-index   (Debian/Ubuntu)\n"
    f"or point --wordnet-dir / {ENV_DIR} at a WordNet 3.0 dict directory."
)


class WordNetNotFoundError(FileNotFoundError):
    """No usable WordNet 3.0 was found; the message lists where we looked."""


class WordNetVersionError(RuntimeError):
    """A WordNet was found, but it is not version 3.0."""


@dataclass(frozen=True)
class WordNetLocation:
    source: str  # "explicit", "nltk" or "system"
    path: Path  # the directory as found
    corpus_dir: Path  # the directory NLTK reads (may be a staged copy)

    def describe(self) -> str:
        staged = "" if self.corpus_dir == self.path else f" (staged for NLTK at {self.corpus_dir})"
        return f"WordNet 3.0 from {self.source} directory {self.path}{staged}"


def cache_dir() -> Path:
    """Per-user cache for staged data (``$IMAGENET52P_CACHE`` or ``~/.cache/imagenet52p``)."""
    env = os.environ.get(ENV_CACHE)
    if env:
        return Path(env).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or "~/.cache"
    return Path(base).expanduser() / "imagenet52p"


def _missing_dict_files(path: Path) -> list[str]:
    return [f for f in DICT_FILES if not (path / f).is_file()]


def _is_dict_dir(path: Path) -> bool:
    return path.is_dir() and not _missing_dict_files(path)


def _stage(dict_dir: Path) -> Path:
    """Copy a dict directory (plus our ``lexnames`` when it has none) into the cache.

    Returns the ``nltk_data`` root whose ``corpora/wordnet`` is the staged copy.
    A copy is refreshed when a source file's size or mtime changed.
    """
    root = cache_dir() / "nltk_data"
    dest = root / "corpora" / "wordnet"
    dest.mkdir(parents=True, exist_ok=True)
    for d in (cache_dir(), root, root / "corpora", dest):
        d.chmod(0o755)  # NLTK refuses group/world-writable data
    for name in DICT_FILES:
        src, dst = dict_dir / name, dest / name
        st = src.stat()
        if dst.is_file() and dst.stat().st_size == st.st_size and int(dst.stat().st_mtime) == int(st.st_mtime):
            continue
        tmp = dst.with_suffix(dst.suffix + ".tmp")
        shutil.copyfile(src, tmp)
        os.utime(tmp, (st.st_atime, st.st_mtime))
        tmp.chmod(0o644)
        tmp.replace(dst)
    lexnames = dict_dir / "lexnames"
    lex_bytes = lexnames.read_bytes() if lexnames.is_file() else (
        resources.files("imagenet52p").joinpath("_info/lexnames").read_bytes())
    if not (dest / "lexnames").is_file() or (dest / "lexnames").read_bytes() != lex_bytes:
        (dest / "lexnames").write_bytes(lex_bytes)
        (dest / "lexnames").chmod(0o644)
    return root


def _nltk_find_wordnet() -> Path | None:
    import nltk

    for name in ("corpora/wordnet", "corpora/wordnet.zip/wordnet/"):
        try:
            ptr = nltk.data.find(name)
        except LookupError:
            continue
        except (PermissionError, ValueError) as exc:  # refused by NLTK's path security
            log.warning("NLTK refused its wordnet corpus: %s", exc)
            continue
        return Path(str(getattr(ptr, "path", ptr)))
    return None


def candidate_dirs(explicit: str | os.PathLike | None = None,
                   system_dirs: tuple[str, ...] | None = None) -> list[tuple[str, Path | None]]:
    """Places searched, in order, as ``(source, path)``; ``path`` None for NLTK's search."""
    places: list[tuple[str, Path | None]] = []
    explicit = explicit or os.environ.get(ENV_DIR)
    if explicit:
        places.append(("explicit", Path(explicit).expanduser()))
    places.append(("nltk", None))
    if os.environ.get("WNHOME"):
        places.append(("system", Path(os.environ["WNHOME"]) / "dict"))
    places.extend(("system", Path(p)) for p in (SYSTEM_DIRS if system_dirs is None else system_dirs))
    return places


def locate_wordnet(explicit: str | os.PathLike | None = None,
                   system_dirs: tuple[str, ...] | None = None) -> WordNetLocation:
    """Find WordNet 3.0 (see module docstring for the search order; ``system_dirs`` replaces step 3's list)."""
    searched: list[str] = []
    for source, path in candidate_dirs(explicit, system_dirs):
        if source == "nltk":
            import nltk

            found = _nltk_find_wordnet()
            if found is not None:
                return WordNetLocation("nltk", found, found)
            searched.append("NLTK data path: " + ", ".join(str(p) for p in nltk.data.path))
            continue
        if source == "explicit":
            if not path.is_dir():
                raise WordNetNotFoundError(
                    f"WordNet directory {path} (from --wordnet-dir or {ENV_DIR}) does not exist.\n{INSTALL_HELP}")
            missing = _missing_dict_files(path)
            if missing:
                raise WordNetNotFoundError(
                    f"{path} is not a WordNet 3.0 dict directory: missing {', '.join(missing)}.\n{INSTALL_HELP}")
        if path is not None and _is_dict_dir(path):
            return WordNetLocation(source, path, _stage(path) / "corpora" / "wordnet")
        searched.append(f"{path}" + (" (exists, but lacks " + ", ".join(_missing_dict_files(path)) + ")"
                                     if path.is_dir() else ""))
    raise WordNetNotFoundError(
        "WordNet 3.0 was not found. Searched:\n  - " + "\n  - ".join(searched) + "\n" + INSTALL_HELP)


@functools.lru_cache(maxsize=4)
def _open(explicit: str | None):
    import warnings

    import nltk
    from nltk.corpus.reader.wordnet import WordNetCorpusReader

    # NLTK warns that the Open Multilingual WordNet is absent; we only need English 3.0.
    warnings.filterwarnings("ignore", message="The multilingual functions are not available")

    loc = locate_wordnet(explicit)
    data_root = loc.corpus_dir.parent.parent if loc.source != "nltk" else None
    if data_root is not None and str(data_root) not in nltk.data.path:
        nltk.data.path.append(str(data_root))  # trust our private staged copy
    if loc.source == "nltk":
        reader = nltk.corpus.wordnet
        reader.ensure_loaded()
    else:
        reader = WordNetCorpusReader(nltk.data.find("corpora/wordnet", paths=[str(data_root)]), None)
    check_version(reader, loc)
    return loc, reader


def check_version(reader, loc: WordNetLocation) -> None:
    """Raise :class:`WordNetVersionError` unless ``reader`` is WordNet 3.0."""
    version = reader.get_version()
    pos, offset, expected = _PROBE
    try:
        probe = reader.synset_from_pos_and_offset(pos, offset).name()
    except Exception:  # noqa: BLE001 - any failure means offsets do not match 3.0
        probe = None
    if version != "3.0" or probe != expected:
        raise WordNetVersionError(
            f"{loc.path} holds WordNet {version}, not 3.0 (offset {offset:08d} is {probe!r}, expected "
            f"{expected!r}). ImageNet wnids are WordNet 3.0 offsets; other versions mislabel classes.\n"
            + INSTALL_HELP)


def open_wordnet(explicit: str | os.PathLike | None = None):
    """Return ``(WordNetLocation, nltk WordNetCorpusReader)`` for WordNet 3.0."""
    key = str(explicit) if explicit else os.environ.get(ENV_DIR) or None
    return _open(key)


def synset_from_wnid(wn, wnid: str):
    """``n02084071`` -> ``Synset('dog.n.01')``."""
    if len(wnid) != 9 or wnid[0] != "n" or not wnid[1:].isdigit():
        raise ValueError(f"not a WordNet noun id: {wnid!r} (expected 'n' followed by 8 digits)")
    return wn.synset_from_pos_and_offset("n", int(wnid[1:]))


def wnid_of(synset) -> str:
    return f"{synset.pos()}{synset.offset():08d}"
