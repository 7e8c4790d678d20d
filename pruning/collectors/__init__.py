"""The statistics collectors, one module per kind of pass; importing this package registers them in
:mod:`pruning.registry` in the order :mod:`pruning.score` runs them (weights, activations, per-image
gradients, per-batch gradients, masks).

Each module holds its pass's statistics class, its collection function and the registered pass
``fn(model, refs, data, group, options, seed) -> ({layer: stats}, num_images)`` (:mod:`pruning.registry`).
"""
from . import weights, activations, gradients, masks  # noqa: F401  (registration order = pass order)
