"""Starting weights by name or by file: torchvision weight enums, timm pretrained tags, ``state_dict`` files.

A model is named as :func:`pruning.loop.make_model` takes it: ``tinyvgg``, a torchvision classification
model (``vgg16``, ``resnet50``, ...) or a timm model, ``timm/<name>`` or ``timm:<name>`` (``<name>`` may
carry a pretrained tag: ``timm/resnet50.a1_in1k``).  Its weights (:func:`resolve_weights`) are one of:

``None`` / ``"none"``
    Random initialisation (seeded by the caller).
a torchvision weight name (torchvision models)
    ``"IMAGENET1K_V1"``, ``"DEFAULT"`` or the full ``"VGG16_Weights.IMAGENET1K_V1"``, resolved through the
    model's weight enum (``torchvision.models.get_model_weights``).  ``DEFAULT`` is recorded as the entry it
    stands for in the installed torchvision (``ResNet50_Weights.IMAGENET1K_V2`` in 0.29).  The file is
    torchvision's own cache file, ``<torch.hub.get_dir()>/checkpoints/<basename of the enum's url>``
    (``$TORCH_HOME/hub/checkpoints/``, default ``~/.cache/torch/hub/checkpoints/``), the very file
    ``torchvision.models.get_model(name, weights=...)`` reads.  The model is then built by torchvision's own
    builder with that enum, so its per-model adjustments (Inception's ``transform_input``, GoogLeNet's aux
    heads) are torchvision's.
a timm pretrained tag (timm models)
    ``"DEFAULT"`` (the tag in the model name, else timm's default tag for the architecture) or a tag such as
    ``"a1_in1k"`` for ``timm/resnet50``.  The file is the Hugging Face hub cache's copy of the model's
    ``hf_hub_id`` repository (``model.safetensors``, else ``pytorch_model.bin``), found with
    ``huggingface_hub.try_to_load_from_cache`` under ``$HF_HUB_CACHE`` (default ``$HF_HOME/hub``,
    ``~/.cache/huggingface/hub``), and loaded by timm's own pretrained loader (its checkpoint filters).
a file
    Anything else is a path: a ``state_dict`` of the model *as built* (``torch.save`` file, or a
    ``.safetensors`` file), loaded strictly.

**Downloads.**  A named weight that is not in its cache is downloaded into that cache, with a timeout on
every network read (:data:`TIMEOUT_S`; torchvision's file is checked against the sha256 prefix in its name,
as ``torch.hub`` does), unless ``IMAGENET52P_OFFLINE=1`` (or ``HF_HUB_OFFLINE=1`` for timm) is set.  When the
file is neither cached nor fetched, :class:`WeightsNotFound` names the exact file and folder it must be
placed in, the URL or repository it comes from, and a command that fetches it on a machine with internet
(a cluster's login node).  Nothing hangs on a download.

**Identity.**  :meth:`WeightsSource.identity` is what a run records: the kind, the canonical name
(``VGG16_Weights.IMAGENET1K_V1``, ``timm/resnet50.a1_in1k``; None for a file) and the sha256 of the file
read.  :meth:`WeightsSource.label` is the short form a leaderboard shows.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import logging
import os
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

#: Seconds any single network operation of a download may take (connect, each read).
TIMEOUT_S = 30.0
#: The weight spelling that means "the model's default pretrained weights", for torchvision and timm.
DEFAULT = "DEFAULT"
_TIMM_PREFIXES = ("timm/", "timm:")
_HF_FILES = ("model.safetensors", "pytorch_model.bin")


class WeightsNotFound(FileNotFoundError):
    """Named weights that are neither in their cache nor could be downloaded (``str()`` says where to put
    them), or a weights file that does not exist and is no weight name of the model."""

    def __str__(self) -> str:
        return str(self.args[0])


def _truthy(var: str) -> bool:
    return os.environ.get(var, "").strip().lower() in ("1", "true", "yes", "on")


def offline(timm: bool = False) -> bool:
    """``IMAGENET52P_OFFLINE=1`` (any model) or, for timm models, ``HF_HUB_OFFLINE=1``: no download is tried."""
    return _truthy("IMAGENET52P_OFFLINE") or (timm and _truthy("HF_HUB_OFFLINE"))


def timm_arch(model: str) -> str | None:
    """``"resnet50.a1_in1k"`` for ``"timm/resnet50.a1_in1k"`` or ``"timm:resnet50.a1_in1k"``; None for others."""
    for p in _TIMM_PREFIXES:
        if model.startswith(p):
            return model[len(p):]
    return None


def _import_timm(model: str):
    try:
        import timm
    except ImportError:
        raise ValueError(f"model {model!r} is a timm model, and timm is not installed: pip install timm "
                         "(or pip install 'imagenet52p[timm]')") from None
    return timm


def check_timm_model(model: str) -> str:
    """The timm architecture name of ``model`` (``timm/<name>``); a ValueError when timm has no such model."""
    arch = timm_arch(model)
    timm = _import_timm(model)
    base = arch.split(".", 1)[0]
    if "@" in arch:
        raise ValueError(f"{model!r}: a hub revision (@...) in a timm model name is not supported; name the "
                         "model and its tag (timm/resnet50.a1_in1k), or give the weights file of that revision")
    if not arch or not timm.is_model(base):
        near = timm.list_models(f"*{base[:6]}*")[:12] if base else []
        raise ValueError(f"timm has no model {arch!r} (from {model!r}); "
                         + (f"similar names: {', '.join(near)}" if near else "see timm.list_models()"))
    return arch


@functools.lru_cache(maxsize=None)
def _torchvision_enum(model: str):
    import torchvision

    try:
        return torchvision.models.get_model_weights(model)
    except (ValueError, KeyError):
        return None


def _torchvision_entry(model: str, spec: str):
    """The weight enum entry ``spec`` names for torchvision model ``model``, or None when it names none."""
    enum = _torchvision_enum(model)
    if enum is None:
        return None
    name = spec.split(".", 1)[1] if spec.startswith(enum.__name__ + ".") else spec
    if name == DEFAULT:
        return enum.DEFAULT
    return enum.__members__.get(name)


def _timm_tags(arch: str) -> list[str]:
    import timm

    base = arch.split(".", 1)[0]
    return [n.split(".", 1)[1] for n in timm.list_pretrained(f"{base}.*")]


def _timm_full_name(model: str, spec: str) -> str | None:
    """``resnet50.a1_in1k`` for (``timm/resnet50``, ``a1_in1k``) or (``timm/resnet50.a1_in1k``, ``DEFAULT``);
    None when ``spec`` is no tag of the architecture."""
    arch = timm_arch(model)
    base, _, tag = arch.partition(".")
    tags = _timm_tags(arch)
    if spec == DEFAULT:
        if tag:
            return arch if tag in tags else None
        import timm
        cfg = timm.models.get_pretrained_cfg(base)
        return f"{base}.{cfg.tag}" if cfg is not None and cfg.tag else (f"{base}.{tags[0]}" if tags else None)
    if spec in tags and (not tag or tag == spec):
        return f"{base}.{spec}"
    return None


def is_weight_name(model: str, spec) -> bool:
    """Whether ``spec`` names pretrained weights of ``model`` (a torchvision enum entry, a timm tag or
    ``DEFAULT``) rather than a file; the benchmark's configs resolve only files against ``--data-root``."""
    if spec is None or isinstance(spec, os.PathLike) or str(spec) in ("", "none"):
        return False
    spec = str(spec)
    if timm_arch(model) is not None:
        check_timm_model(model)
        return _timm_full_name(model, spec) is not None or spec == DEFAULT
    return _torchvision_entry(model, spec) is not None


def canonical_name(model: str, spec):
    """The canonical name of weight name ``spec`` for ``model`` (``IMAGENET1K_V1`` and ``DEFAULT`` of vgg16 ->
    ``VGG16_Weights.IMAGENET1K_V1``; ``DEFAULT`` of ``timm/resnet50`` -> ``timm/resnet50.a1_in1k``), found
    without reading any file; ``spec`` unchanged when it is no weight name (a file, none)."""
    if not is_weight_name(model, spec):
        return spec
    spec = str(spec)
    if timm_arch(model) is not None:
        full = _timm_full_name(model, spec)
        return spec if full is None else f"timm/{full}"
    entry = _torchvision_entry(model, spec)
    return spec if entry is None else f"{type(entry).__name__}.{entry.name}"


@dataclass(frozen=True)
class WeightsSource:
    """Where a model's starting weights come from (:func:`resolve_weights`).

    ``kind``: ``random``, ``file``, ``torchvision`` or ``timm``.  ``name``: the canonical weight name
    (``VGG16_Weights.IMAGENET1K_V1``, ``timm/resnet50.a1_in1k``), None for a file or random init.  ``path``:
    the file that is read.  ``num_classes``: the classes of a named weight's classifier (None otherwise).
    """

    kind: str
    name: str | None = None
    path: Path | None = None
    num_classes: int | None = None
    revision: str | None = None  # timm: the hub snapshot the file was read from

    @functools.cached_property
    def sha256(self) -> str | None:
        if self.path is None:
            return None
        st = self.path.stat()
        return _file_sha256(str(self.path.resolve()), st.st_size, st.st_mtime_ns)

    def identity(self) -> dict | None:
        """``{"kind", "name", "file", "sha256"}`` (``"revision"`` for timm); None for random init; for a
        starting model another tool makes (the benchmark's ``pretrain``), ``{"kind", "name"}``."""
        if self.kind == "random":
            return None
        if self.path is None:
            return {"kind": self.kind, "name": self.name}
        doc = {"kind": self.kind, "name": self.name, "file": self.path.name, "sha256": self.sha256}
        if self.revision:
            doc["revision"] = self.revision
        return doc

    def label(self) -> str:
        """Short and citable (:func:`weights_label`)."""
        return weights_label(self.identity())


def weights_label(identity: dict | None) -> str:
    """``VGG16_Weights.IMAGENET1K_V1``, ``timm/resnet50.a1_in1k``, ``file sha256:<12 hex>`` or ``random init``
    for a :meth:`WeightsSource.identity` (as recorded in a run's files)."""
    if not identity:
        return "random init"
    if identity.get("name"):
        return str(identity["name"])
    sha = identity.get("sha256")
    return f"file sha256:{sha[:12]}" if sha else str(identity.get("kind"))


@functools.lru_cache(maxsize=64)
def _file_sha256(path: str, size: int, mtime_ns: int) -> str:
    """sha256 of a weights file, computed once per process for one (path, size, mtime): a grid's cells all start
    from the same 500 MB file, and each records its sha256."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def torchvision_cache_file(entry) -> Path:
    """The file ``torchvision`` reads for weight enum ``entry``: ``torch.hub.get_dir()/checkpoints/<url name>``."""
    import torch.hub

    return Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(urllib.parse.urlparse(entry.url).path)


def download(url: str, dest: Path, hash_prefix: str | None = None, timeout: float = TIMEOUT_S) -> None:
    """Fetch ``url`` into ``dest`` (a ``dest.*.partial`` of this process, then renamed: never a half file at
    ``dest``, and concurrent downloads of the same file do not disturb each other), every
    network operation bounded by ``timeout`` seconds; with ``hash_prefix``, the file's sha256 must start with
    it (torch.hub's check).  ``OSError`` (``urllib.error.URLError``, ``TimeoutError``) or ``ValueError`` on
    failure."""
    import http.client
    import tempfile

    from tqdm import tqdm

    dest.parent.mkdir(parents=True, exist_ok=True)
    # a file of its own per process (as torch.hub does): concurrent downloads of one file (DDP ranks, array
    # tasks sharing a cache) each rename a complete copy onto dest, never write into each other's
    fd, name = tempfile.mkstemp(prefix=dest.name + ".", suffix=".partial", dir=dest.parent)
    os.close(fd)
    part = Path(name)
    h = hashlib.sha256()
    try:
        with contextlib.ExitStack() as stack:
            try:
                resp = stack.enter_context(urllib.request.urlopen(url, timeout=timeout))
            except http.client.HTTPException as exc:  # a malformed answer (a broken proxy, a captive portal)
                raise OSError(f"bad HTTP answer from {url}: {type(exc).__name__}: {exc}") from None
            f = stack.enter_context(open(part, "wb"))
            total = resp.headers.get("Content-Length")
            with tqdm(total=int(total) if total else None, unit="B", unit_scale=True, desc=dest.name,
                      disable=None) as bar:
                try:
                    for block in iter(lambda: resp.read(1 << 20), b""):
                        f.write(block)
                        h.update(block)
                        bar.update(len(block))
                except http.client.HTTPException as exc:  # IncompleteRead: the connection was cut
                    raise OSError(f"the download from {url} was cut short: {type(exc).__name__}") from None
        if hash_prefix and not h.hexdigest().startswith(hash_prefix):
            raise ValueError(f"the file downloaded from {url} has sha256 {h.hexdigest()[:12]}..., not the "
                             f"{hash_prefix} its name promises; try again")
        os.chmod(part, 0o644)  # mkstemp's 0600 would keep a shared cache's file from its other users
        os.replace(part, dest)
    finally:
        part.unlink(missing_ok=True)


def _fetch_hint_torchvision(url: str, dest: Path) -> str:
    return f"curl -L --create-dirs -o {dest} {url}"


def _resolve_torchvision(model: str, entry) -> WeightsSource:
    name = f"{type(entry).__name__}.{entry.name}"
    path = torchvision_cache_file(entry)
    if not path.is_file():
        where = (f"torchvision's weights {name} for {model} are not in torch's cache: place the file "
                 f"{path.name} in the folder {path.parent} (the file {path}; the folder is "
                 "$TORCH_HOME/hub/checkpoints, TORCH_HOME defaults to ~/.cache/torch), e.g. on a machine with "
                 f"internet: {_fetch_hint_torchvision(entry.url, path)}")
        if offline():
            raise WeightsNotFound(f"{where} (IMAGENET52P_OFFLINE is set, so nothing was downloaded)")
        import torch.hub
        r = torch.hub.HASH_REGEX.search(path.name)  # the sha256 prefix in torchvision's file names
        log.info("downloading %s into %s", entry.url, path)
        try:
            download(entry.url, path, r.group(1) if r else None)
        except (OSError, ValueError) as exc:
            raise WeightsNotFound(f"{where}; the download from {entry.url} failed: {exc}") from None
    return WeightsSource("torchvision", name, path, len(entry.meta.get("categories") or ()) or None)


def _hf_cache_dir() -> Path:
    from huggingface_hub import constants
    explicit = os.environ.get("HF_HUB_CACHE") or os.environ.get("HUGGINGFACE_HUB_CACHE")
    return Path(explicit or Path(os.environ.get("HF_HOME") or constants.HF_HOME) / "hub")


def _hf_cached(repo: str, revision: str | None, filename: str) -> str | None:
    from huggingface_hub import try_to_load_from_cache

    found = try_to_load_from_cache(repo, filename, cache_dir=str(_hf_cache_dir()), revision=revision)
    return found if isinstance(found, str) else None


def _resolve_timm(model: str, full: str) -> WeightsSource:
    import timm

    cfg = timm.models.get_pretrained_cfg(full)
    if cfg is None or not cfg.hf_hub_id:
        raise ValueError(f"timm's pretrained weights {full!r} have no Hugging Face hub repository "
                         "(hf_hub_id); give a weights file instead")
    repo, _, revision = cfg.hf_hub_id.partition("@")
    revision = revision or None
    files = (cfg.hf_hub_filename,) if cfg.hf_hub_filename else _HF_FILES
    name = f"timm/{full}"
    for filename in files:
        found = _hf_cached(repo, revision, filename)
        if found:
            break
    else:
        folder = _hf_cache_dir() / f"models--{repo.replace('/', '--')}"
        where = (f"timm's pretrained weights {name} are not in the Hugging Face cache: the file {files[0]} of the "
                 f"hub repository {repo} must be in {folder}/snapshots/<revision>/ with "
                 f"{folder}/refs/{revision or 'main'} holding that revision (the cache is $HF_HUB_CACHE, default "
                 f"$HF_HOME/hub = ~/.cache/huggingface/hub); fetch it on a machine with internet with "
                 f"`hf download {repo} {files[0]}` (huggingface_hub's CLI) and copy that folder into {_hf_cache_dir()}, or give the "
                 "file itself as the weights")
        if offline(timm=True):
            raise WeightsNotFound(f"{where} (offline: nothing was downloaded)")
        from huggingface_hub import hf_hub_download

        try:
            found = hf_hub_download(repo, files[0], revision=revision, cache_dir=str(_hf_cache_dir()))
        except Exception as exc:  # noqa: BLE001 - any hub/network failure becomes the one message
            reason = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else ""
            raise WeightsNotFound(f"{where}; the download failed: {type(exc).__name__}: {reason}") from None
    path = Path(found)
    snap = path.parent.name if path.parent.parent.name == "snapshots" else None
    return WeightsSource("timm", name, path, cfg.num_classes or None, snap)


def resolve_weights(model: str, spec) -> WeightsSource:
    """What ``spec`` means for ``model`` (see the module docstring); named weights are found in (or
    downloaded into) their cache here, so a missing one fails before any model is built."""
    if isinstance(spec, WeightsSource):
        return spec
    if spec is None or str(spec) in ("", "none"):
        return WeightsSource("random")
    text = str(spec)
    if not isinstance(spec, os.PathLike):
        if timm_arch(model) is not None:
            check_timm_model(model)
            full = _timm_full_name(model, text)
            if full is not None:
                return _resolve_timm(model, full)
            tag = timm_arch(model).partition(".")[2]
            if tag and text in _timm_tags(timm_arch(model)):
                raise ValueError(f"weights {text!r} conflict with the tag {tag!r} in the model name {model!r}: "
                                 f"give the architecture without a tag (timm/{timm_arch(model).split('.')[0]}) "
                                 f"and weights {text!r}, or weights {DEFAULT!r}")
            if text == DEFAULT:
                raise ValueError(f"timm model {model!r} has no pretrained weights (timm.list_pretrained is empty "
                                 "for it); give a weights file, or none")
        else:
            entry = _torchvision_entry(model, text)
            if entry is not None:
                return _resolve_torchvision(model, entry)
            if text == DEFAULT:
                raise ValueError(f"model {model!r} has no torchvision weight enum, so {DEFAULT!r} names no "
                                 "weights; give a state_dict file")
    path = Path(text).expanduser()
    if not path.is_file():
        names = weight_names(model)
        hint = f"; weight names of {model}: {', '.join(names)}" if names else ""
        raise WeightsNotFound(f"weights {text!r}: no such file, and not a weight name of model {model!r}{hint}; "
                                "give a state_dict file saved with torch.save(model.state_dict(), PATH) or a name")
    return WeightsSource("file", None, path)


def weight_names(model: str) -> list[str]:
    """The weight names ``model`` accepts besides files: ``DEFAULT`` and its torchvision enum entries or timm
    tags (empty for a model with none)."""
    try:
        if timm_arch(model) is not None:
            tags = _timm_tags(check_timm_model(model))
            return [DEFAULT, *tags] if tags else []
        enum = _torchvision_enum(model)
    except (ValueError, ImportError):
        return []
    return [] if enum is None else [DEFAULT, *(n for n in enum.__members__ if n != DEFAULT)]

