"""Entropy and scaled entropy are exact and do not depend on how the scoring images are batched.

Definition (paper 001 section 3.3 items 3 and 6, Luo & Wu 2017; :mod:`pruning.collectors.activations`): for filter c,
``s[n, c]`` is the spatial average of its observed feature map for image n; the bins are ``b`` equal-width
bins over ``[min_n s[n, c], max_n s[n, c]]`` over *all* scoring images, with ``numpy.histogram``'s
semantics (``numpy.histogram(s[:, c], bins=b)``: last bin closed, ``(v - 0.5, v + 0.5)`` for a constant
filter, numpy's own edge arithmetic); ``E[c] = -sum_j p_j log p_j`` (natural log, ``0 log 0 = 0``) with
``p_j`` the fraction of images in bin j; scaled entropy ``E[c] * mean[c]``.

The old rule (edges from the first batch's range, later values clamped into the end bins) fails every
test here except the sync test (the old accumulators were sync-free too; that test guards the new storage).
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

import pruning
from pruning.loop import make_model
from pruning.collectors.activations import ActivationStats, collect_activations
from test_host_sync import HostSyncCounter
from test_pruning_registry import randomize_bn

# loop TinyVGG: conv features.{0,4,8,12} -> BN -> ReLU features.{2,6,10,14} (the observed sites)
LAYERS = {"features.0": "features.2", "features.4": "features.6", "features.8": "features.10"}


def _np_entropy(hist: np.ndarray, n: int) -> np.ndarray:
    p = hist / n
    return np.array([-(row[row > 0] * np.log(row[row > 0])).sum() for row in p])


def _np_hist(s: np.ndarray, bins: int) -> np.ndarray:
    """The definition: numpy.histogram of each filter's column over all images (float64)."""
    return np.stack([np.histogram(s[:, c], bins=bins)[0] for c in range(s.shape[1])])


def _first_batch_hist(s: np.ndarray, bins: int, first: int) -> np.ndarray:
    """The old rule, for the control: range from the first ``first`` rows, later values clamped."""
    lo, hi = s[:first].min(axis=0), s[:first].max(axis=0)
    span = np.where(hi > lo, hi - lo, 1.0)
    j = np.clip(np.floor((s - lo) / span * bins), 0, bins - 1).astype(int)
    return np.stack([np.bincount(j[:, c], minlength=bins) for c in range(s.shape[1])])


def _values(dtype) -> np.ndarray:
    """[N, 5] averages with values on interior bin edges, on the min and the max, and a constant filter.

    col 0: range [0, 1], with 0.25, 0.5, 0.75 (edges of 4 bins), 0.1 .. 0.9 (edges of 10 bins) and 1.0;
    col 1: range [0.1, 0.7] holding numpy's own computed edges for 4 and 10 bins, where numpy's index
           arithmetic needs its correction step (checked by the test); the range appears only late;
    col 2: constant 0.3 (numpy's range (-0.2, 0.8): every image in the middle bin);
    col 3: wide range (x 1e3), extremes in the last rows;  col 4: negative, tiny range (x 1e-4)."""
    rng = np.random.default_rng(0)
    n = 101
    s = np.empty((n, 5))
    s[:, 0] = rng.uniform(0.2, 0.8, n)
    s[:12, 0] = [0.3, 0.0, 0.25, 0.5, 0.75, 1.0, 0.1, 0.2, 0.4, 0.6, 0.8, 0.9]
    s[:, 1] = rng.uniform(0.3, 0.5, n)
    edges = np.unique(np.concatenate([np.linspace(0.1, 0.7, 5), np.linspace(0.1, 0.7, 11)]))
    s[n - len(edges):, 1] = edges
    s[:, 2] = 0.3
    s[:, 3] = rng.normal(size=n) * 1e3
    s[-1, 3], s[-2, 3] = 5e3, -5e3
    s[:, 4] = -1.0 + rng.uniform(0, 1, n) * 1e-4
    return s.astype(dtype).astype(np.float64)  # the values as the given dtype holds them


def _feed(values: np.ndarray, dtype, batch: int, bins):
    st = ActivationStats(values.shape[1], bins=bins)
    t = torch.tensor(values, dtype=dtype)
    for i in range(0, len(t), batch):
        st.update(t[i:i + batch])
    return st


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_histograms_equal_numpy_histogram_for_any_batching(dtype):
    s = _values({torch.float32: np.float32, torch.float64: np.float64}[dtype])
    n = len(s)
    bins = [4, 10]
    for b in bins:
        ref = _np_hist(s, b)
        assert ref[2].tolist() == [0] * (b // 2) + [n] + [0] * (b - b // 2 - 1)  # constant filter: middle bin
        assert ref[0, -1] >= 1 and ref[0, 0] >= 1  # the max (1.0) is in the last bin, the min in the first
        # the control: the first-batch rule (batch of 8) gives other histograms for these values
        assert not np.array_equal(_first_batch_hist(s, b, 8), ref)
        got = {}
        for batch in (1, 8, 32, n):
            st = _feed(s, dtype, batch, bins)
            got[batch] = (st.hist[b].cpu(), st.entropy(b).cpu())
            assert got[batch][0].tolist() == ref.tolist(), (b, batch)
            np.testing.assert_allclose(got[batch][1].numpy(), _np_entropy(ref, n), rtol=0, atol=1e-12)
            np.testing.assert_allclose(st.mean.numpy(), s.mean(axis=0), rtol=1e-12, atol=1e-15)
        for batch in (8, 32, n):  # identical, not just close
            assert torch.equal(got[batch][0], got[1][0]) and torch.equal(got[batch][1], got[1][1])


def test_values_on_numpy_computed_edges_need_and_get_its_correction_step():
    """Column 1 holds numpy's own computed edges; for some of them numpy's first index estimate
    ``trunc((x - lo) / (hi - lo) * b)`` is off by one and corrected by comparing with the edges.  The
    histogram puts them where numpy does (an implementation without the correction step would not)."""
    s = _values(np.float64)[:, 1:2]
    for b in (4, 10):
        edges = np.histogram(s[:, 0], bins=b)[1]
        lo, hi = edges[0], edges[-1]
        raw = np.minimum(((s[:, 0] - lo) / (hi - lo) * b).astype(np.intp), b - 1)
        final = np.searchsorted(edges, s[:, 0], side="right") - 1
        final[s[:, 0] == hi] = b - 1
        assert np.array_equal(np.bincount(final, minlength=b), np.histogram(s[:, 0], bins=b)[0])
        if b == 10:
            assert (raw != final).any(), "the data must exercise numpy's correction step"
        perm = np.random.default_rng(1).permutation(len(s))
        for values in (s, s[perm]):  # order does not matter either
            st = _feed(values, torch.float64, 7, [b])
            assert st.hist[b][0].tolist() == np.bincount(final, minlength=b).tolist()
            assert torch.equal(st.edges(b)[0], torch.tensor(edges))
            st = _feed(values, torch.float64, len(values), [b])  # one batch: the same
            assert st.hist[b][0].tolist() == np.bincount(final, minlength=b).tolist()


def _observed(model, layers):
    """Per-image spatial averages at the given ReLU sites, recorded by our own hooks during scoring
    (``Tensor.mean`` over the positions in the map's dtype, as the definition states)."""
    got = {conv: [] for conv in layers}
    mods = dict(model.named_modules())
    handles = [mods[site].register_forward_hook(
        lambda m, i, o, conv=conv: got[conv].append(o.detach().mean(dim=(2, 3)).double().clone()))
        for conv, site in layers.items()]
    return got, handles


def _score(model, data, batch, bins):
    got, handles = _observed(model, LAYERS)
    try:
        batches = [(data[0][i:i + batch], data[1][i:i + batch]) for i in range(0, len(data[0]), batch)]
        scores = pruning.score_filters_multi(model, ["entropy", "scaled_entropy", "mean_activation"], list(LAYERS),
                                             data=batches, options={"entropy": {"bins": bins},
                                                                    "scaled_entropy": {"bins": bins}})
    finally:
        for h in handles:
            h.remove()
    return scores, {conv: torch.cat(v).numpy() for conv, v in got.items()}


def _reference(s: np.ndarray, bins: int):
    ent = _np_entropy(_np_hist(s, bins), len(s))
    return {"entropy": ent, "scaled_entropy": ent * s.mean(axis=0)}


@pytest.fixture(scope="module")
def data():
    gen = torch.Generator().manual_seed(3)
    return torch.rand(64, 3, 32, 32, generator=gen) * 2 - 0.5, torch.randint(0, 10, (64,), generator=gen)


@pytest.mark.parametrize("bins", [4, 10])
def test_scores_do_not_depend_on_the_scoring_batch_size(data, bins):
    """float64 model (its feature maps do not change with the batch size): entropy and scaled entropy are
    the same for batches of 8, 32 and all 64 images, and equal the NumPy definition on the maps the model
    produced; the first-batch rule would have given other scores."""
    model = randomize_bn(make_model("tinyvgg", 10, seed=0)).double().eval()
    x, y = data[0].double(), data[1]
    runs = {batch: _score(model, (x, y), batch, bins) for batch in (8, 32, 64)}
    maps = runs[64][1]
    for batch, (scores, seen) in runs.items():
        for conv in LAYERS:
            np.testing.assert_array_equal(seen[conv], maps[conv])  # same maps: the comparison is fair
            ref = _reference(seen[conv], bins)
            for crit in ("entropy", "scaled_entropy"):
                np.testing.assert_allclose(scores[crit][conv].numpy(), ref[crit], rtol=0, atol=1e-12,
                                           err_msg=f"{crit} {conv} batch {batch}")
                np.testing.assert_allclose(scores[crit][conv].numpy(), runs[64][0][crit][conv].numpy(),
                                           rtol=0, atol=1e-12, err_msg=f"{crit} {conv} batch {batch}")
    # control: under the first-batch rule (batches of 8) the entropy of some filters differs
    differs = 0
    for conv in LAYERS:
        s = maps[conv]
        old = _np_entropy(_first_batch_hist(s, bins, 8), len(s))
        differs += int((np.abs(old - _reference(s, bins)["entropy"]) > 1e-6).sum())
    assert differs > 0


def test_float32_scores_equal_the_definition_on_the_observed_maps(data):
    """float32 model: a conv's float32 output can change in the last bit with the batch size, so each
    batching is checked against the NumPy definition on the maps that run observed."""
    model = randomize_bn(make_model("tinyvgg", 10, seed=0)).eval()
    for batch in (8, 64):
        scores, seen = _score(model, data, batch, 10)
        for conv in LAYERS:
            ref = _reference(seen[conv], 10)
            for crit in ("entropy", "scaled_entropy"):
                np.testing.assert_allclose(scores[crit][conv].numpy(), ref[crit], rtol=0, atol=1e-12,
                                           err_msg=f"{crit} {conv} batch {batch}")


def test_collection_is_sync_free_and_the_histogram_reads_at_most_once_per_layer(data):
    """Per batch only device ops (the averages are appended); asking for the entropy reads the device at most once
    per layer (the finiteness check), whatever the number of batches."""
    model = randomize_bn(make_model("tinyvgg", 10, seed=0)).eval()
    refs = pruning.resolve_layers(model, list(LAYERS))
    counts = []
    for batch in (32, 4):
        batches = [(data[0][i:i + batch], data[1][i:i + batch]) for i in range(0, 64, batch)]
        with HostSyncCounter() as collecting:
            st = collect_activations(model, refs, batches, bins=[10])
        assert collecting.total == 0, collecting.counts
        with HostSyncCounter() as finishing:
            for s in st.values():
                s.entropy(10), s.entropy(10)  # the second call is cached
        counts.append(dict(finishing.counts))
        assert finishing.total <= len(LAYERS), finishing.counts
    assert counts[0] == counts[1]


def test_later_batches_widen_the_range_and_storage():
    st = ActivationStats(3, bins=[5])
    st.update(torch.ones(4, 3, 2, 2, dtype=torch.float16))
    assert st.hist[5][0].tolist() == [0, 0, 4, 0, 0]  # constant so far: numpy's (0.5, 1.5), middle bin
    assert st.entropy(5).tolist() == [0.0, 0.0, 0.0]
    st.update(torch.full((1, 3), 1.5, dtype=torch.float16))  # widens the range; the cache is invalidated
    assert st.hist[5][0].tolist() == [4, 0, 0, 0, 1]  # bins over [1, 1.5]: 1.5 (the max) in the last bin
    p = np.array([0.8, 0.2])
    np.testing.assert_allclose(st.entropy(5).numpy(), [-(p * np.log(p)).sum()] * 3, rtol=0, atol=1e-15)
    with pytest.raises(ValueError, match="no histogram with 7 bins"):
        st.entropy(7)
    stored = st._pending + st._blocks
    assert [t.dtype for t in stored] == [torch.float32] * 2  # fp16 / bf16 / fp32 kept as float32 (lossless)
    plain = ActivationStats(3)
    plain.update(torch.ones(2, 3))
    assert plain._pending == [] and plain._blocks == []  # nothing stored without bins
    bad = ActivationStats(1, bins=[4])
    bad.update(torch.tensor([[1.0], [float("inf")]]))
    with pytest.raises(ValueError, match="not finite"):
        bad.entropy(4)


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_histograms_on_cuda_equal_numpy_histogram(dtype):
    """The same arithmetic on CUDA (where dividing by a host scalar would be a multiplication by its
    reciprocal, not numpy's division): values on numpy's computed edges, wide random data, batches of 8."""
    rng = np.random.default_rng(2)
    s = np.concatenate([_values(np.float32 if dtype == torch.float32 else np.float64),
                        rng.normal(size=(4000, 5)) * [1e-3, 1, 1e3, 0.1, 7]])
    s = s.astype(np.float32 if dtype == torch.float32 else np.float64).astype(np.float64)
    edges = np.stack([np.histogram(s[:, c], bins=10)[1] for c in range(5)])
    s = np.concatenate([s, edges.T])  # every computed edge as a value (the extremes are unchanged)
    s = s.astype(np.float32 if dtype == torch.float32 else np.float64).astype(np.float64)  # as fed
    st = ActivationStats(5, bins=[3, 10, 37])
    t = torch.tensor(s, dtype=dtype, device="cuda")
    for i in range(0, len(t), 8):
        st.update(t[i:i + 8])
    for b in (3, 10, 37):
        assert st.hist[b].cpu().tolist() == _np_hist(s, b).tolist(), b
        assert torch.equal(st.edges(b).cpu(), torch.tensor(np.stack([np.histogram(s[:, c], bins=b)[1]
                                                                     for c in range(5)])))
        np.testing.assert_allclose(st.entropy(b).cpu().numpy(), _np_entropy(_np_hist(s, b), len(s)), rtol=0, atol=1e-12)
