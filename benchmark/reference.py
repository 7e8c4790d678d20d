"""Published numbers, for context only (never mixed with our measurements).

Each reference table has a ``key``, ``title``, ``source`` (paper and table), ``baseline`` (the
unpruned model the numbers were measured against) and rows as published (accuracies as
fractions, as in the paper; md and html show them in percent, :func:`display_rows`, as our tables).  Sources: Mittal et al., "Recovering from Random Pruning: On the
Plasticity of Deep Convolutional Neural Networks", WACV 2018 (arXiv:1801.10447; here ``001``);
torchvision's model documentation (weights ``IMAGENET1K_V1``/``V2``); Crowley et al. 2018
(arXiv:1810.04622, ``003``) and Hubens et al. 2021 (arXiv:2112.08227, ``004``), whose abstracts
state qualitative results only, quoted as such.
"""

from __future__ import annotations

import re

PAPER = "Mittal et al., WACV 2018 (arXiv:1801.10447)"


def _grid(text: str) -> list[list[str]]:
    """A table as published, one row a line, cells separated by ``|``; the numbers stay strings
    with the paper's own digits (Table 2 has four decimals, Table 7 both ``0.47`` and ``0.4345``)."""
    return [[c.strip() for c in line.split("|")] for line in text.strip().splitlines()]


REFERENCES: dict[str, dict] = {
    "paper_table1": {
        "title": "Paper Table 1: VGG-16 on ImageNet-1k, top-1 after Algorithm 1 (p=1 epoch per layer, "
                 "q=12 epochs on 1/10 of the training data)",
        "source": f"{PAPER}, Table 1", "baseline": "their VGG-16, 69% top-1 on the ImageNet test set",
        "header": ["Heuristic", "25%", "50%", "75%"],
        "rows": _grid("""
            Random          | 0.650 | 0.569 | 0.415
            Mean Activation | 0.652 | 0.570 | 0.409
            Entropy         | 0.641 | 0.549 | 0.405
            Scaled Entropy  | 0.637 | 0.550 | 0.401
            l1-norm         | 0.667 | 0.593 | 0.436
            APoZ            | 0.647 | 0.564 | 0.422
            Sensitivity     | 0.636 | 0.543 | 0.379
        """),
    },
    "paper_table2": {
        "title": "Paper Table 2: VGG-16, 50% pruning, final fine-tune on the full training data",
        "source": f"{PAPER}, Table 2", "baseline": "their VGG-16, 69% top-1",
        "header": ["Heuristic", "50%"],
        "rows": _grid("""
            Random          | 0.6701
            Mean Activation | 0.6662
            Entropy         | 0.6635
            Scaled Entropy  | 0.6625
            l1-norm         | 0.6759
            APoZ            | 0.6706
            Sensitivity     | 0.6659
        """),
    },
    "paper_table3": {
        "title": "Paper Table 3: ResNet-50 on ImageNet-1k, random vs l1 (16 or 32 layers pruned, 1/10 data)",
        "source": f"{PAPER}, Table 3", "baseline": "their ResNet-50, 74.5% top-1",
        "header": ["Heuristic", "#Layers", "25%", "50%", "75%"],
        "rows": _grid("""
            Random  | 16 | 0.722 | 0.683 | 0.617
            l1-norm | 16 | 0.714 | 0.677 | 0.610
            Random  | 32 | 0.696 | 0.637 | 0.518
            l1-norm | 32 | 0.691 | 0.633 | 0.514
        """),
    },
    "paper_table4": {
        "title": "Paper Table 4: VGG-16 fine-tuned and evaluated on ImageNet-52P",
        "source": f"{PAPER}, Table 4",
        "baseline": "ImageNet-1k VGG-16 evaluated on ImageNet-52P test: 74%; VGG-16 trained on ImageNet-52P: 87%",
        "header": ["Heuristic", "25%", "50%", "75%"],
        "rows": _grid("""
            Random            | 0.859 | 0.820 | 0.692
            Mean Activation   | 0.866 | 0.816 | 0.698
            Entropy           | 0.860 | 0.802 | 0.684
            Scaled Entropy    | 0.863 | 0.813 | 0.691
            l1-norm           | 0.867 | 0.823 | 0.729
            APoZ              | 0.858 | 0.811 | 0.700
            Important Classes | 0.857 | 0.795 | 0.655
            Sensitivity       | 0.849 | 0.793 | 0.634
        """),
    },
    "paper_table5": {
        "title": "Paper Table 5: Faster R-CNN mAP on VOC 2007 with a pruned VGG-16 backbone",
        "source": f"{PAPER}, Table 5", "baseline": "unpruned VGG-16 backbone: mAP 0.66",
        "header": ["Heuristic", "25%", "50%", "75%"],
        "rows": _grid("""
            Random          | 0.647 | 0.600 | 0.505
            Mean Activation | 0.647 | 0.601 | 0.489
            Entropy         | 0.635 | 0.584 | 0.501
            Scaled Entropy  | 0.640 | 0.593 | 0.507
            l1-norm         | 0.628 | 0.608 | 0.520
            APoZ            | 0.646 | 0.598 | 0.514
            Sensitivity     | 0.636 | 0.592 | 0.485
        """),
    },
    "paper_table6": {
        "title": "Paper Table 6: Faster R-CNN pruned directly (random), VOC 2007",
        "source": f"{PAPER}, Table 6", "baseline": "unpruned Faster R-CNN: mAP 0.66 at 7.5 fps",
        "header": ["", "Baseline", "25%", "50%", "75%"],
        "rows": [["mAP", "0.66", "0.655", "0.648", "0.530"], ["fps", "7.5", "10", "13", "16"]],
    },
    "paper_table7": {
        "title": "Paper Table 7: Faster R-CNN with VGG-16 backbones pruned and fine-tuned on ImageNet-52P",
        "source": f"{PAPER}, Table 7", "baseline": "unpruned VGG-16 backbone: mAP 0.66",
        "header": ["Heuristic", "25%", "50%", "75%"],
        "rows": _grid("""
            Random            | 0.647 | 0.580 | 0.469
            Mean Activation   | 0.644 | 0.583 | 0.454
            Entropy           | 0.642 | 0.578 | 0.47
            Scaled Entropy    | 0.645 | 0.580 | 0.443
            l1-norm           | 0.648 | 0.601 | 0.487
            APoZ              | 0.641 | 0.585 | 0.466
            Important Classes | 0.631 | 0.568 | 0.432
            Sensitivity       | 0.637 | 0.576 | 0.4345
        """),
    },
    "paper_text": {
        "title": "Other numbers stated in the paper's text",
        "source": f"{PAPER}, sections 4.1, 4.2 and 5", "baseline": "as stated per row",
        "header": ["Setting", "Top-1"],
        "rows": [["VGG-16 unpruned (their training), ImageNet test", "0.69"],
                 ["ResNet-50 unpruned (their training), ImageNet test", "0.745"],
                 ["VGG-16, 50%, ThiNet protocol (layers 1-10), ThiNet", "0.69"],
                 ["VGG-16, 50%, ThiNet protocol (layers 1-10), random", "0.68"],
                 ["ImageNet-1k model evaluated on ImageNet-52P test", "0.74"],
                 ["Model trained on ImageNet-52P, evaluated on ImageNet-52P test", "0.87"]],
    },
    "torchvision": {
        "title": "Standard unpruned ImageNet-1k models (torchvision weights, single 224 centre crop, val set)",
        "source": "torchvision model documentation (weights' meta['_metrics'])",
        "baseline": "these are the unpruned models themselves",
        "header": ["Weights", "Top-1", "Top-5"],
        "rows": [["VGG16_Weights.IMAGENET1K_V1", "0.71592", "0.90382"],
                 ["ResNet50_Weights.IMAGENET1K_V1", "0.76130", "0.92862"],
                 ["ResNet50_Weights.IMAGENET1K_V2", "0.80858", "0.95434"]],
    },
    "crowley2018": {
        "title": "Pruned vs reduced networks trained from scratch (qualitative)",
        "source": "Crowley, Turner, Storkey, O'Boyle, 'Pruning neural networks: is it time to nip it in the "
                  "bud?', arXiv:1810.04622 (abstract, v2)",
        "baseline": "ResNets and DenseNets (CIFAR in the paper)",
        "header": ["Claim"],
        "rows": [["Reduced networks (smaller versions of the original trained from scratch) consistently "
                  "outperform pruned networks"],
                 ["The architecture of a pruned network trained from scratch is significantly more competitive"]],
    },
    "hubens2021": {
        "title": "Pruning a pre-trained vs a from-scratch network (qualitative)",
        "source": "Hubens, Mancas, Gosselin, Preda, Zaharia, 'An Experimental Study of the Impact of "
                  "Pre-training on the Pruning of a CNN', arXiv:2112.08227 (abstract)",
        "baseline": "VGG16 and MobileNet on CIFAR10, CIFAR100, SVHN, Caltech101",
        "header": ["Claim"],
        "rows": [["A network pre-trained on ImageNet then fine-tuned can be pruned much more efficiently "
                  "(up to 80% parameter reduction) than the same network trained from scratch"]],
    },
}


_FRACTION = re.compile(r"^(0|1)\.(\d+)$")


def as_percent(cell: str) -> str:
    """A published fraction in percent with the paper's own digits (``0.650`` -> ``65.0``, ``0.4345`` ->
    ``43.45``, ``0.47`` -> ``47``), as our tables show accuracies; any other cell (a layer count, a name,
    a claim) as it is."""
    m = _FRACTION.match(cell.strip())
    if not m:
        return cell
    digits = (m.group(2) + "00")[:max(2, len(m.group(2)))]
    whole, frac = str(int(m.group(1) + digits[:2])), digits[2:]
    return f"{whole}.{frac}" if frac else whole


def display_rows(table: dict) -> list[list[str]]:
    """The rows of a reference table as shown in md/html: fractions in percent (:func:`as_percent`)."""
    return [[as_percent(c) for c in row] for row in table["rows"]]


def reference_tables(keys: tuple[str, ...] | list[str] | None = None) -> list[dict]:
    """The reference tables named by ``keys`` (all of them when None), each with its ``key``."""
    if keys is None:
        keys = tuple(REFERENCES)
    bad = [k for k in keys if k not in REFERENCES]
    if bad:
        raise ValueError(f"unknown reference table(s) {bad}; available: {', '.join(REFERENCES)}")
    return [{"key": k, **REFERENCES[k]} for k in keys]
