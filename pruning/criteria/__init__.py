"""Built-in criteria; importing this package registers them (see :mod:`pruning.registry`).

Every criterion is ``fn(layer: LayerRef, stats, options: dict, seed: int) -> Tensor[C]`` (float64, one
score per output filter, higher = keep); ``stats`` is what its ``needs`` collected for this layer
(``None`` for weight criteria).
"""
from . import activation, ensemble, gradient, weight  # noqa: F401
