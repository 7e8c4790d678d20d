"""The on-disk contract of a build (docs/FORMAT.md), imported by both the writer
(:mod:`imagenet52p.builder`) and the reader (:mod:`imagenet52p.dataset`).

* :mod:`.tar`: the shard tar layout (deterministic member headers; the fast member reader).
* :mod:`.manifest`: :data:`FORMAT_VERSION`, :data:`SPLITS`, :func:`load_manifest`, :func:`verify_build`.
* :mod:`.schema`: :class:`ManifestError`, :func:`check_manifest_shape` (the manifest's shape, checked by
  :func:`load_manifest`) and :func:`resolve_shard` (a shard path, which must stay inside the build).
* :mod:`.files`: :func:`file_sha256` (the shard checksums) and :func:`write_json_atomic`.
"""

from .files import file_sha256, write_json_atomic
from .manifest import FORMAT_VERSION, SPLITS, check_shard, load_manifest, verify_build
from .schema import ManifestError, check_manifest_shape, resolve_shard
from .tar import iter_tar, read_tar_samples, tar_end, tar_header, tar_pad

__all__ = ["FORMAT_VERSION", "SPLITS", "ManifestError", "check_manifest_shape", "check_shard", "file_sha256",
           "iter_tar", "load_manifest", "read_tar_samples", "resolve_shard", "tar_end", "tar_header", "tar_pad",
           "verify_build", "write_json_atomic"]
