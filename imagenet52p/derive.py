"""Derive class lists from WordNet 3.0 and versioned specs (``_info/imagenet52p-v1.toml``,
``_info/random52-v2.toml``).

The derived lists are frozen as package data; :func:`diff_frozen` re-derives them and
reports every difference, so ``imagenet52p classes --derive`` (and a test) can prove
the shipped lists are exactly what the spec and WordNet give.
"""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass, field
from importlib import resources

from .classes import (FROZEN, VOC_CLASSES, ClassInfo, ClassSet, frozen_set, imagenet1k_index, imagenet1k_names,
                      imagenet1k_wnids)
from .wordnet import open_wordnet, synset_from_wnid, wnid_of

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

RANDOM52_SEED = 52
#: The control spec ``random52`` resolves to (see ``_info/random52-v2.toml``).
RANDOM52_SPEC = FROZEN["random52"]
FAMILY_KINDS = ("anchor", "guideline", "lookalike")


class SpecError(ValueError):
    """The spec is malformed, or deriving it breaks one of its invariants."""


@dataclass
class VocEntry:
    name: str
    anchors: list[str]
    exclude: list[dict] = field(default_factory=list)
    include: list[dict] = field(default_factory=list)


@dataclass
class Spec:
    name: str
    max_depth: int
    fallback: str
    expected_count: int
    voc: list[VocEntry]
    sha256: str


def _read_spec(name: str, text: str | None, kind: str) -> tuple[dict, str]:
    """``(parsed TOML, text)`` of spec ``name`` (package data ``_info/<name>.toml`` unless ``text`` is given),
    checked to be for WordNet 3.0."""
    if text is None:
        try:
            text = resources.files("imagenet52p").joinpath("_info", f"{name}.toml").read_text(encoding="utf-8")
        except FileNotFoundError:
            raise SpecError(f"no {kind} spec {name!r} in imagenet52p/_info") from None
    data = tomllib.loads(text)
    if data.get("wordnet") != "3.0":
        raise SpecError(f"spec {data.get('name', name)}: wordnet must be \"3.0\" (ImageNet wnids are WordNet 3.0 "
                        "offsets)")
    return data, text


def load_spec(name: str = "imagenet52p-v1", text: str | None = None) -> Spec:
    data, text = _read_spec(name, text, "class")
    if data.get("fallback", "none") not in ("none", "shallowest"):
        raise SpecError(f"spec {name}: fallback must be 'none' or 'shallowest', found {data['fallback']!r}")
    voc = [VocEntry(v["name"], list(v["anchors"]), list(v.get("exclude", [])), list(v.get("include", [])))
           for v in data["voc"]]
    names = [v.name for v in voc]
    if sorted(names) != sorted(VOC_CLASSES):
        raise SpecError(f"spec {name}: voc entries must be exactly the 20 VOC classes; found {names}")
    return Spec(data["name"], int(data["max_depth"]), data.get("fallback", "none"), int(data["expected_count"]),
                voc, hashlib.sha256(text.encode()).hexdigest())


def hypernym_depth(synset, anchor, max_steps: int = 20) -> int | None:
    """Fewest hypernym (or instance-hypernym) steps from ``synset`` up to ``anchor``; None if not below it."""
    frontier, depth, seen = {synset}, 0, set()
    while frontier and depth <= max_steps:
        if anchor in frontier:
            return depth
        seen |= frontier
        frontier = {h for s in frontier for h in s.hypernyms() + s.instance_hypernyms()} - seen
        depth += 1
    return None


def _nearest_anchor(synset, anchors) -> tuple[int, str] | None:
    hits = [(d, a.name()) for a in anchors if (d := hypernym_depth(synset, a)) is not None]
    return min(hits) if hits else None


def derive_class_set(spec: Spec | None = None, wordnet_dir: str | None = None) -> ClassSet:
    """Apply ``spec`` to WordNet 3.0 and the ImageNet-1k synsets; raise :class:`SpecError` on a broken invariant."""
    spec = spec or load_spec()
    _loc, wn = open_wordnet(wordnet_dir)
    inet = {w: synset_from_wnid(wn, w) for w in imagenet1k_wnids()}
    names, idx = imagenet1k_names(), imagenet1k_index()
    chosen: dict[str, ClassInfo] = {}
    for entry in spec.voc:
        anchors = []
        for a in entry.anchors:
            try:
                anchors.append(wn.synset(a))
            except Exception as exc:  # nltk raises WordNetError / ValueError
                raise SpecError(f"spec {spec.name}, {entry.name}: unknown anchor synset {a!r} ({exc})") from None
        found = {w: hit for w, s in inet.items() if (hit := _nearest_anchor(s, anchors)) is not None}
        within = {w: h for w, h in found.items() if h[0] <= spec.max_depth}
        if not within and spec.fallback == "shallowest" and found:
            shallowest = min(h[0] for h in found.values())
            within = {w: h for w, h in found.items() if h[0] == shallowest}
        for ex in entry.exclude:
            if ex["wnid"] not in within:
                raise SpecError(f"spec {spec.name}, {entry.name}: excludes {ex['wnid']} ({ex.get('name')}), "
                                "which the rule does not select: remove the exclusion")
            if not ex.get("reason"):
                raise SpecError(f"spec {spec.name}, {entry.name}: exclusion of {ex['wnid']} needs a reason")
            del within[ex["wnid"]]
        for inc in entry.include:
            w = inc["wnid"]
            if w not in inet:
                raise SpecError(f"spec {spec.name}, {entry.name}: includes {w}, not an ImageNet-1k class")
            if not inc.get("reason"):
                raise SpecError(f"spec {spec.name}, {entry.name}: inclusion of {w} needs a reason")
            if w in within:
                raise SpecError(f"spec {spec.name}, {entry.name}: includes {w}, which the rule already selects")
            hit = found.get(w)
            if hit is None:
                raise SpecError(f"spec {spec.name}, {entry.name}: includes {w}, which is under none of its anchors")
            within[w] = hit
        if not within:
            raise SpecError(f"spec {spec.name}: VOC class {entry.name} gets no ImageNet-1k class")
        for w, (depth, anchor) in within.items():
            if w in chosen:
                raise SpecError(f"spec {spec.name}: {w} ({names[w]}) falls under both {chosen[w].voc_class} "
                                f"and {entry.name}: exclude it from one")
            chosen[w] = ClassInfo(0, w, names[w], idx[w], entry.name, anchor, depth)
    ordered = sorted(chosen.values(), key=lambda c: c.imagenet1k_index)
    result = ClassSet(spec.name, tuple(ClassInfo(i, c.wnid, c.name, c.imagenet1k_index, c.voc_class,
                                                 c.voc_synset, c.depth) for i, c in enumerate(ordered)))
    if len(result) != spec.expected_count:
        raise SpecError(f"spec {spec.name} yields {len(result)} classes, expected {spec.expected_count}")
    return result


def voc_related_wnids(spec: Spec | None = None, wordnet_dir: str | None = None) -> set[str]:
    """ImageNet-1k classes at *any* depth below any VOC anchor (what a control set must avoid)."""
    spec = spec or load_spec()
    _loc, wn = open_wordnet(wordnet_dir)
    anchors = [wn.synset(a) for e in spec.voc for a in e.anchors]
    return {w for w in imagenet1k_wnids() if _nearest_anchor(synset_from_wnid(wn, w), anchors) is not None}


def derive_random52(spec: Spec | None = None, wordnet_dir: str | None = None, seed: int = RANDOM52_SEED,
                    subset: ClassSet | None = None) -> ClassSet:
    """``random52-v1`` (frozen, superseded by :func:`derive_control`'s ``random52-v2``): 52 ImageNet-1k
    classes, seeded, none of them under a VOC anchor at any depth.

    That rule lets VOC objects through (a liner is a VOC boat, a passenger car a VOC train); it is
    kept so the v1 list can still be re-derived and checked.

    ``random.Random(seed).sample`` over the sorted remaining wnids; Python guarantees this
    sequence for a given seed, and the result is frozen anyway.  ``subset`` is the derived
    ImageNet-52P set when the caller already has it (else it is derived here).
    """
    spec = spec or load_spec()
    subset = subset if subset is not None else derive_class_set(spec, wordnet_dir)
    excluded = voc_related_wnids(spec, wordnet_dir) | set(subset.wnids)
    pool = [w for w in imagenet1k_wnids() if w not in excluded]
    picked = random.Random(seed).sample(pool, spec.expected_count)
    idx, names = imagenet1k_index(), imagenet1k_names()
    ordered = sorted(picked, key=idx.__getitem__)
    return ClassSet("random52-v1", tuple(ClassInfo(i, w, names[w], idx[w]) for i, w in enumerate(ordered)))


@dataclass
class ControlSpec:
    """A random control set's exclusion rule (``_info/random52-v2.toml``)."""

    name: str
    subset: str  # the ImageNet-52P spec whose anchors are families and whose classes are excluded
    seed: int
    count: int
    families: list[dict]  # {synset, kind, voc: tuple, reason}
    exclude: list[dict]  # {wnid, name, voc: tuple, reason}
    sha256: str


def _voc_list(where: str, value) -> tuple[str, ...]:
    vocs = (value,) if isinstance(value, str) else tuple(value or ())
    if not vocs or any(v not in VOC_CLASSES for v in vocs):
        raise SpecError(f"{where}: voc must name VOC classes ({', '.join(VOC_CLASSES)}); found {value!r}")
    return vocs


def load_control_spec(name: str = RANDOM52_SPEC, text: str | None = None) -> ControlSpec:
    """Read and check a control spec; its ``anchor`` families must be exactly the subset spec's anchors."""
    data, text = _read_spec(name, text, "control")
    sname = data.get("name", name)
    families, seen = [], set()
    for f in data.get("family", []):
        where = f"spec {sname}, family {f.get('synset')!r}"
        if f.get("kind") not in FAMILY_KINDS:
            raise SpecError(f"{where}: kind must be one of {', '.join(FAMILY_KINDS)}; found {f.get('kind')!r}")
        if not f.get("reason"):
            raise SpecError(f"{where}: needs a reason")
        if f["synset"] in seen:
            raise SpecError(f"{where}: listed twice")
        seen.add(f["synset"])
        families.append({"synset": f["synset"], "kind": f["kind"], "voc": _voc_list(where, f.get("voc")),
                         "reason": f["reason"]})
    exclude = []
    for e in data.get("exclude", []):
        where = f"spec {sname}, exclusion of {e.get('wnid')} ({e.get('name')})"
        if not e.get("reason"):
            raise SpecError(f"{where}: needs a reason")
        exclude.append({"wnid": e["wnid"], "name": e.get("name"), "voc": _voc_list(where, e.get("voc")),
                        "reason": e["reason"]})
    if len({e["wnid"] for e in exclude}) != len(exclude):
        raise SpecError(f"spec {sname}: a class is excluded twice")
    subset = load_spec(data["subset"])
    want = {(a, v.name) for v in subset.voc for a in v.anchors}
    have = {(f["synset"], voc) for f in families if f["kind"] == "anchor" for voc in f["voc"]}
    if want != have:
        missing = ", ".join(f"{a} ({v})" for a, v in sorted(want - have)) or "none"
        extra = ", ".join(f"{a} ({v})" for a, v in sorted(have - want)) or "none"
        raise SpecError(f"spec {sname}: the anchor families must be exactly the anchors of {subset.name}; "
                        f"missing {missing}; not anchors there: {extra}")
    return ControlSpec(sname, data["subset"], int(data["seed"]), int(data["count"]), families, exclude,
                       hashlib.sha256(text.encode()).hexdigest())


def _hypernym_closure(synset) -> set:
    """``synset`` and every synset above it (hypernyms and instance hypernyms, any depth)."""
    seen, frontier = {synset}, {synset}
    while frontier:
        frontier = {h for s in frontier for h in s.hypernyms() + s.instance_hypernyms()} - seen
        seen |= frontier
    return seen


def family_members(cspec: ControlSpec | None = None, wordnet_dir: str | None = None) -> dict[str, list[str]]:
    """Family synset name -> the ImageNet-1k wnids at or below it (any depth), in ImageNet-1k order.

    Raises :class:`SpecError` for a synset WordNet 3.0 lacks or one that covers no ImageNet-1k class.
    """
    cspec = cspec or load_control_spec()
    _loc, wn = open_wordnet(wordnet_dir)
    closures = {w: _hypernym_closure(synset_from_wnid(wn, w)) for w in imagenet1k_wnids()}
    out = {}
    for f in cspec.families:
        try:
            fam = wn.synset(f["synset"])
        except Exception as exc:  # nltk raises WordNetError / ValueError
            raise SpecError(f"spec {cspec.name}: unknown family synset {f['synset']!r} ({exc})") from None
        out[f["synset"]] = [w for w in imagenet1k_wnids() if fam in closures[w]]
        if not out[f["synset"]]:
            raise SpecError(f"spec {cspec.name}: family {f['synset']} covers no ImageNet-1k class: remove it")
    return out


def control_exclusions(cspec: ControlSpec | None = None, wordnet_dir: str | None = None,
                       subset: ClassSet | None = None) -> dict[str, list[str]]:
    """Every ImageNet-1k class a control spec makes ineligible -> what excludes it.

    The reasons are family synset names, ``"exclude"`` (an explicit [[exclude]] entry) and the
    subset's name (a class of ImageNet-52P).  ``subset`` is the derived subset when the caller
    already has it.
    """
    cspec = cspec or load_control_spec()
    subset = subset if subset is not None else derive_class_set(load_spec(cspec.subset), wordnet_dir)
    if subset.name != cspec.subset:
        raise SpecError(f"spec {cspec.name} excludes the classes of {cspec.subset}, but was given {subset.name}")
    names = imagenet1k_names()
    out: dict[str, list[str]] = {}
    for fam, wnids in family_members(cspec, wordnet_dir).items():
        for w in wnids:
            out.setdefault(w, []).append(fam)
    for e in cspec.exclude:
        w = e["wnid"]
        if w not in names:
            raise SpecError(f"spec {cspec.name}: excludes {w}, not an ImageNet-1k class")
        if e["name"] != names[w]:
            raise SpecError(f"spec {cspec.name}: excludes {w} as {e['name']!r}, but ImageNet-1k calls it "
                            f"{names[w]!r}")
        if w in out:
            raise SpecError(f"spec {cspec.name}: excludes {w} ({names[w]}), which family {out[w][0]} already "
                            "excludes: remove the exclusion")
        out[w] = ["exclude"]
    for w in subset.wnids:
        out.setdefault(w, []).append(subset.name)
    return out


def derive_control(cspec: ControlSpec | None = None, wordnet_dir: str | None = None, seed: int | None = None,
                   subset: ClassSet | None = None) -> ClassSet:
    """A control set from its spec (default ``random52-v2``): v1's draw over the spec's eligible pool.

    ``random.Random(seed).sample`` over the eligible wnids in ImageNet-1k order, sorted into
    ImageNet-1k order; ``seed`` defaults to the spec's.
    """
    cspec = cspec or load_control_spec()
    excluded = control_exclusions(cspec, wordnet_dir, subset)
    pool = [w for w in imagenet1k_wnids() if w not in excluded]
    if len(pool) < cspec.count:
        raise SpecError(f"spec {cspec.name}: only {len(pool)} eligible classes, fewer than count = {cspec.count}")
    picked = random.Random(cspec.seed if seed is None else seed).sample(pool, cspec.count)
    idx, names = imagenet1k_index(), imagenet1k_names()
    ordered = sorted(picked, key=idx.__getitem__)
    return ClassSet(cspec.name, tuple(ClassInfo(i, w, names[w], idx[w]) for i, w in enumerate(ordered)))


def derive_imagenet1k_names(wordnet_dir: str | None = None) -> dict[str, str]:
    """wnid -> first WordNet lemma with underscores as spaces."""
    _loc, wn = open_wordnet(wordnet_dir)
    return {w: synset_from_wnid(wn, w).lemma_names()[0].replace("_", " ") for w in imagenet1k_wnids()}


def imagenet1k_names_tsv(names: dict[str, str]) -> str:
    return "wnid\tindex\tname\n" + "".join(f"{w}\t{i}\t{names[w]}\n" for i, w in enumerate(imagenet1k_wnids()))


def diff_sets(frozen: ClassSet, derived: ClassSet) -> list[str]:
    """Human-readable differences between two class sets (empty when equal)."""
    diffs = []
    if frozen.name != derived.name:
        diffs.append(f"name: frozen {frozen.name!r}, derived {derived.name!r}")
    f_map, d_map = {c.wnid: c for c in frozen}, {c.wnid: c for c in derived}
    for w in sorted(f_map.keys() - d_map.keys()):
        diffs.append(f"{w} ({f_map[w].name}) is frozen but no longer derived")
    for w in sorted(d_map.keys() - f_map.keys()):
        diffs.append(f"{w} ({d_map[w].name}) is derived but not in the frozen list")
    for w in sorted(f_map.keys() & d_map.keys()):
        if f_map[w] != d_map[w]:
            diffs.append(f"{w}: frozen {f_map[w].to_dict()} != derived {d_map[w].to_dict()}")
    return diffs


def diff_frozen(wordnet_dir: str | None = None) -> dict[str, list[str]]:
    """Re-derive every frozen list and return its differences, keyed by list name."""
    from .classes import _info_text

    spec = load_spec()
    subset = derive_class_set(spec, wordnet_dir)
    out = {
        "imagenet52p-v1": diff_sets(frozen_set("imagenet52p-v1"), subset),
        "random52-v1": diff_sets(frozen_set("random52-v1"), derive_random52(spec, wordnet_dir, subset=subset)),
        RANDOM52_SPEC: diff_sets(frozen_set(RANDOM52_SPEC), derive_control(wordnet_dir=wordnet_dir, subset=subset)),
    }
    tsv = imagenet1k_names_tsv(derive_imagenet1k_names(wordnet_dir))
    out["imagenet1k_classes.tsv"] = [] if tsv == _info_text("imagenet1k_classes.tsv") else [
        "imagenet1k_classes.tsv differs from the names WordNet gives (regenerate with scripts/freeze_classes.py)"]
    return out
