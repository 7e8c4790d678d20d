"""Deprecated alias of :mod:`imagenet52p.builder` (the builder package was ``imagenet52p/build/``).

``from imagenet52p.build import BuildConfig, build_dataset, verify_build, BuildError`` keeps working
for one release, with a DeprecationWarning; import from ``imagenet52p.builder`` instead.
"""

import warnings

from .builder import (LAYOUTS, SPLITS, BuildConfig, BuildError, BuildResult, build_dataset, format_summary,
                      load_manifest, run_build, verify_build)

__all__ = ["BuildConfig", "BuildError", "BuildResult", "LAYOUTS", "SPLITS", "build_dataset", "format_summary",
           "load_manifest", "run_build", "verify_build"]

warnings.warn("imagenet52p.build is deprecated and will be removed in the next release; "
              "import from imagenet52p.builder instead", DeprecationWarning, stacklevel=2)
