"""The ``"weights"`` pass: no data is read; a weight criterion finds the conv (and the BatchNorm after it) on
its ``LayerRef``, so the statistics of every layer are ``None`` and no image is used."""
from __future__ import annotations

from ..registry import register_pass


@register_pass("weights", needs_data=False)
def weights_pass(model, refs, data, group, options, seed):
    """Nothing to collect: ``{layer: None}`` and 0 images."""
    return {ref.name: None for ref in refs}, 0
