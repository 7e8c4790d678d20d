"""Shared fixtures: RNG state restored around every test; paths of the installed CLIs."""
from __future__ import annotations

import os
import random
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

BIN = Path(sys.executable).parent

# Tests never download: named weights come only from caches the tests lay out (pruning.weights); the
# subprocesses the tests start inherit this.
os.environ.setdefault("IMAGENET52P_OFFLINE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

# The data floor's helpers (tests/data: build_helpers, dataset_helpers, fake_layouts) are imported by
# their plain names, from tests/data and from other floors' tests alike; tests/data is put on sys.path
# (as pytest does for a test folder without __init__.py) so that they are one module each.
DATA_TESTS = str(Path(__file__).resolve().parent / "data")
if DATA_TESTS not in sys.path:
    sys.path.insert(0, DATA_TESTS)

# Session fixtures of the build and dataset tests, registered once (importing them into each test
# module would make one copy per module, each set up again).
pytest_plugins = ["build_helpers", "dataset_helpers"]


def cli(name: str) -> str:
    """Path of an installed console script (the real entry point, as a user runs it)."""
    path = BIN / name
    if not path.exists():
        raise FileNotFoundError(f"{path} is not installed: run `make install` (pip install -e .)")
    return str(path)


@pytest.fixture(autouse=True)
def _restore_rng_state():
    py, np_state, torch_state = random.getstate(), np.random.get_state(), torch.get_rng_state()
    yield
    random.setstate(py)
    np.random.set_state(np_state)
    torch.set_rng_state(torch_state)


@pytest.fixture
def one_thread():
    """Run a test with one torch thread (deterministic timing-free CPU numbers, no oversubscription)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)
