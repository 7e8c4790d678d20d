"""The ``build-imagenet52p`` shard builder (library side).

``build_dataset(BuildConfig(root, out, ...)) -> manifest`` turns any ImageNet copy (folders,
Kaggle, devkit, or the official tar archives) into deterministic, verified, resumable webdataset
shards (docs/FORMAT.md, docs/build.md); ``verify_build(out) -> [problems]`` re-checks a build.
"""

from .config import LAYOUTS, SPLITS, BuildConfig, BuildError
from .core import BuildResult, build_dataset, run_build
from .manifest import format_summary, load_manifest, verify_build

__all__ = ["BuildConfig", "BuildError", "BuildResult", "LAYOUTS", "SPLITS", "build_dataset", "format_summary",
           "load_manifest", "run_build", "verify_build"]
