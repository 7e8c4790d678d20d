"""Filter pruning for torchvision CNNs: every importance criterion, physical removal, cost accounting, and the
Algorithm 1 engine (:mod:`pruning.loop`; docs/algorithm1.md).

Where things are: :mod:`pruning.registry` (criteria and statistics passes by name),
:mod:`pruning.collectors` (the statistics passes), :mod:`pruning.criteria` (the criteria),
:mod:`pruning.score` (scoring), :mod:`pruning.select` (scores -> plan), :mod:`pruning.surgery` (removal),
:mod:`pruning.plan` (saving plans), :mod:`pruning.cost`, :mod:`pruning.layers` (layer protocols).
A *plan* is always ``{conv name: kept filter indices}``.

Public API (see docs/pruning.md):

- :func:`list_criteria` -- registered criterion names
- :func:`prunable_layers` -- conv names of a layer protocol (``vgg16``, ``resnet50-16``, ``resnet50-32``, ``all``)
- :func:`score_filters` / :func:`score_filters_multi` -- one score per output filter (higher = keep)
- :func:`select_filters` -- scores -> plan ``{conv name: kept filter indices}``
- :func:`apply_plan` -- physical removal, in place (coupled channels via Torch-Pruning)
- :func:`channel_groups` -- per layer, the blocks a removal must hit evenly (grouped convs: ResNeXt, RegNet)
- :func:`save_pruned` / :func:`load_pruned` -- JSON plan + state_dict
- :func:`count_cost` / :func:`measure_latency` -- params, MACs, latency
"""
from .files import WriteError, read_state_dict
from .cost import count_cost, count_params, measure_latency
from .layers import PROTOCOLS, prunable_layers, resolve_layers
from .plan import load_pruned, read_plan, save_pruned
from .registry import get_criterion, list_criteria, register
from . import collectors, criteria  # noqa: F401  (register the statistics passes, then the criteria)
from .score import Scores, score_filters, score_filters_multi
from .select import select_filters
from .surgery import apply_plan, channel_groups, coupling_classes, current_plan

__all__ = [
    "PROTOCOLS", "Scores", "apply_plan", "channel_groups", "count_cost", "count_params", "coupling_classes", "current_plan", "get_criterion",
    "WriteError", "list_criteria", "load_pruned", "read_state_dict", "measure_latency", "prunable_layers", "read_plan", "register",
    "resolve_layers", "save_pruned", "score_filters", "score_filters_multi", "select_filters",
]
from .loop import prune_finetune  # noqa: E402,F401
