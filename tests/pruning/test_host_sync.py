"""No host-device synchronisation per batch in the hot loops (training, evaluation, statistics passes).

On a GPU the host runs ahead of the device; every read of a device value on the host (``.item()``,
``bool(t)``, ``.tolist()``, boolean-mask indexing, ``nonzero``, ``bincount``, ...) stalls it until the
device has caught up.  One such read per batch is enough to cost the loop its overhead target, and it is
invisible on the CPU.  These tests run the real loops on CPU under a ``TorchDispatchMode`` that counts every
ATen op known to force that synchronisation on CUDA, and check that the count does not grow with the
number of batches.  The data are pre-made batches in a list, so the only ops seen are the loop's own.
The counter does not see blocking copies between host and device (``.to("cpu")``, a copy from pageable
memory without ``non_blocking``); on a GPU, ``test_no_sync_per_batch_on_cuda`` checks the same claims
with ``torch.cuda.set_sync_debug_mode("warn")``, which also reports the synchronising copies.
"""

from __future__ import annotations

import collections

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from pruning.loop.data import DataStream
from pruning.loop.evaluate import evaluate
from pruning.loop.models import make_model
from pruning.loop.train import Runtime, make_optimizer, train_chunk

# ATen ops whose CUDA kernels read a device value on the host (the output size or a scalar result)
_SYNCING = {"_local_scalar_dense", "nonzero", "masked_select", "bincount", "_unique2", "unique_dim",
            "unique_consecutive", "repeat_interleave", "equal", "is_nonzero", "histc", "masked_scatter"}


class HostSyncCounter(TorchDispatchMode):
    """Counts the ops of ``_SYNCING``, indexing with a boolean mask, and ``Tensor.tolist/numpy/cpu`` calls."""

    def __init__(self):
        super().__init__()
        self.counts = collections.Counter()
        self._patched = {}

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = func.overloadpacket.__name__
        if name in _SYNCING:
            self.counts[name] += 1
        elif name in ("index", "index_put", "index_put_") and any(
                isinstance(i, torch.Tensor) and i.dtype == torch.bool for i in (args[1] or ())):
            self.counts[f"{name}[bool mask]"] += 1
        return func(*args, **(kwargs or {}))

    def __enter__(self):
        for meth in ("tolist", "numpy", "cpu"):
            orig = getattr(torch.Tensor, meth)
            self._patched[meth] = orig

            def counted(t, *a, _orig=orig, _meth=meth, **k):
                self.counts[f"Tensor.{_meth}"] += 1
                return _orig(t, *a, **k)

            setattr(torch.Tensor, meth, counted)
        return super().__enter__()

    def __exit__(self, *exc):
        for meth, orig in self._patched.items():
            setattr(torch.Tensor, meth, orig)
        return super().__exit__(*exc)

    @property
    def total(self) -> int:
        return sum(self.counts.values())


def _batches(n, batch=4, size=16, classes=10, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [(torch.randint(0, 256, (batch, 3, size, size), dtype=torch.uint8, generator=g),
             torch.randint(0, classes, (batch,), generator=g)) for _ in range(n)]


def _syncs(fn, n):
    data = _batches(n)
    with HostSyncCounter() as counter:
        fn(data)
    return counter


def test_counter_sees_the_usual_ways_of_reading_a_device_value():
    x = torch.randn(8, 3)
    with HostSyncCounter() as c:
        x.sum().item()
        bool(x.sum() > 0)
        x[x > 0]
        x.nonzero()
        torch.bincount(torch.tensor([1, 2]))
        x.tolist()
    assert c.counts["_local_scalar_dense"] == 2 and c.counts["index[bool mask]"] == 1
    assert c.counts["nonzero"] == 1 and c.counts["bincount"] == 1 and c.counts["Tensor.tolist"] == 1
    with HostSyncCounter() as c:  # device-side ops only
        (x * 2).sum(dim=0).add_(1)
        x[torch.tensor([0, 2])]
    assert c.total == 0


@pytest.mark.parametrize("accum", [1, 2])
def test_training_does_not_synchronise_per_batch(accum):
    rt = Runtime(torch.device("cpu"), amp=True, channels_last=True)  # the CUDA settings, on the CPU

    def run(data):
        model = rt.prepare(make_model("tinyvgg", 10, seed=0))
        opt = make_optimizer(model, 0.01, 0.9, 1e-4)
        stats = train_chunk(model, DataStream(data, name="train"), 0, 4 * len(data), opt, rt, accum_steps=accum,
                            lr_fn=lambda t: 0.01)
        assert stats.images == 4 * len(data)

    few, many = _syncs(run, 2), _syncs(run, 6)
    assert few.counts == many.counts, (few.counts, many.counts)
    assert few.total <= 1  # the loss total, read once at the end of the chunk


@pytest.mark.parametrize("subset", [None, [1, 3, 5, 7]])
def test_evaluation_does_not_synchronise_per_batch(subset):
    rt = Runtime(torch.device("cpu"), amp=True, channels_last=True)  # the CUDA settings, on the CPU
    model = make_model("tinyvgg", 10, seed=0)

    def run(data):
        if subset is not None:  # labels of the subset's classes only
            data = [(x, torch.tensor(subset)[y % len(subset)]) for x, y in data]
        r = evaluate(model, DataStream(data, shuffle=False, name="val"), rt, logit_subset=subset)
        assert r["images"] == 4 * len(data)

    few, many = _syncs(run, 2), _syncs(run, 6)
    assert few.counts == many.counts, (few.counts, many.counts)


@pytest.mark.parametrize("criterion", ["mean_activation", "apoz", "entropy", "scaled_entropy", "sensitivity",
                                       "sensitivity_batch", "taylor", "class_specific", "linear_ensemble"])
def test_statistics_passes_do_not_synchronise_per_batch(criterion):
    """The scoring pass of each data-driven criterion (the accumulators stay on the device)."""
    import pruning
    model = make_model("tinyvgg", 10, seed=0).eval()
    subset = [1, 3]
    extra = {"classes": subset} if pruning.get_criterion(criterion).requires_classes else {}
    if criterion == "linear_ensemble":
        extra = {"options": {"num_masks": 4}}

    def run(data):
        # class_specific: the batches hold only the subset's classes, as the loop's scoring stream gives them
        batches = [(x.float() / 255, torch.tensor(subset)[y % 2] if "classes" in extra else y) for x, y in data]
        pruning.score_filters(model, criterion, ["features.4", "features.8"], batches, **extra)

    few, many = _syncs(run, 2), _syncs(run, 6)
    if "classes" in extra:  # the class filter reads one host-side bool per batch (`keep.all()` on host labels)
        few.counts["_local_scalar_dense"] -= 2
        many.counts["_local_scalar_dense"] -= 6
    assert few.counts == many.counts, (criterion, few.counts, many.counts)


def _cuda_syncs(fn) -> int:
    """Synchronising CUDA calls made by ``fn()``, as reported by ``torch.cuda.set_sync_debug_mode``."""
    import warnings
    torch.cuda.synchronize()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            fn()
        finally:
            torch.cuda.set_sync_debug_mode("default")
    return sum("synchroniz" in str(w.message) for w in caught)


@pytest.mark.gpu
def test_no_sync_per_batch_on_cuda():
    """The same claims checked by CUDA itself: the number of synchronising calls of a training chunk, an
    evaluation, an activation-statistics pass and the loop's class-specific scoring does not grow with the
    number of batches."""
    from pruning.layers import resolve_layers
    from pruning.collectors.activations import collect_activations
    rt = Runtime.create("cuda")
    torch.backends.cudnn.benchmark = False  # no autotuning of batch sizes the warm-up did not see
    model = rt.prepare(make_model("tinyvgg", 10, seed=0))
    opt = make_optimizer(model, 0.01, 0.9, 1e-4)
    refs = resolve_layers(model, ["features.4", "features.8"])

    def data(n):
        return [(x.pin_memory(), y.pin_memory()) for x, y in _batches(n, batch=8, size=32)]

    def train(d):
        train_chunk(model, DataStream(d), 0, 8 * len(d), opt, rt)

    def stats(d):
        collect_activations(model, refs, [rt.to_device(x, y) for x, y in d], bins=[16])

    def val(d):
        evaluate(model, DataStream(d, shuffle=False), rt, logit_subset=[1, 3, 5])

    def scoring(d):  # the loop's class-specific scoring path: pre-filtered stream, host labels
        import pruning
        from pruning.loop.scoring import ScoringBatches
        stream = DataStream(d, classes=[1, 3, 5], shuffle=False)
        pruning.score_filters(model, "class_specific", ["features.4"], ScoringBatches(stream, 0, None, rt, 8), classes=[1, 3, 5])

    for fn in (train, stats, val, scoring):
        fn(data(2))  # warm-up: lazy initialisation may synchronise once
        few, many = _cuda_syncs(lambda: fn(data(2))), _cuda_syncs(lambda: fn(data(6)))
        assert few == many, (fn.__name__, few, many)


@pytest.mark.parametrize("prefiltered", [True, False])
def test_class_specific_scoring_in_the_loop_never_masks_a_device_batch(prefiltered):
    """The loop's scoring stream keeps only the scoring classes on the host, so the scores' own class filter
    (which checks host labels) leaves the device images alone; a mask on device images needs ``nonzero``,
    a sync.  Control: a stream that does not pre-filter makes the same filter mask the device batch."""
    import pruning
    from pruning.loop.scoring import ScoringBatches
    rt = Runtime(torch.device("cpu"), amp=True, channels_last=True)
    model = make_model("tinyvgg", 10, seed=0).eval()
    subset = [1, 3, 5]
    device_images, masked = set(), []

    class Tracked(ScoringBatches):
        def __iter__(self):
            for x, y in super().__iter__():
                device_images.add(x.data_ptr())  # what the loop puts on the device
                yield x, y

    class Watch(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            if func.overloadpacket.__name__ in ("index", "masked_select", "nonzero") and \
                    isinstance(args[0], torch.Tensor) and args[0].data_ptr() in device_images:
                masked.append(str(func))
            return func(*args, **(kwargs or {}))

    data = _batches(4)
    stream = DataStream(data, classes=subset if prefiltered else None, name="score", shuffle=False)
    with Watch():
        s = pruning.score_filters(model, "class_specific", ["features.4"], Tracked(stream, 0, None, rt, 8),
                                  classes=subset)
    assert s.num_images == sum(int(torch.isin(y, torch.tensor(subset)).sum()) for _, y in data)
    assert (masked == []) if prefiltered else masked
