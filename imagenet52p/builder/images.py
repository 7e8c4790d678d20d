"""Per-image checks and conversions: what goes into a shard's ``.jpg``.

:func:`prepare_image` returns the bytes to store, the stored width and height, and the
re-encoding reason (None when the original bytes are kept).  Definitions:

* kept as is: a JPEG whose PIL mode is ``RGB``, not progressive, whose last start-of-scan marker
  (``FF DA``) is followed by an end-of-image marker (``FF D9``), and (with ``--resize N``) whose
  shorter side is at most N.  Checking costs a walk over the header segments
  (:func:`baseline_rgb_jpeg_header`, PIL only when that is unsure) and one backwards byte search,
  not a decode; a file that fails the marker test is fully decoded, and skipped if that fails.
  ``decode_check=True`` decodes every kept file.
* converted (re-encoded as baseline RGB JPEG at ``quality``, reason recorded): other modes
  (CMYK, grayscale ``L``, ...), progressive JPEGs, non-JPEG data (PNG, GIF, ... whatever the
  file name says).  Transparent images are composited on white.
* resized (reason ``"resize"``): shorter side above ``resize``, scaled to exactly ``resize``
  (bicubic, aspect kept, sides rounded).
* bad (:class:`BadImage`, skipped or fatal by ``on_error``): empty, not an image, truncated or
  undecodable.
"""

from __future__ import annotations

import io
import re
import warnings

from PIL import Image, UnidentifiedImageError

from ..jpeg import jpeg_frame

Image.MAX_IMAGE_PIXELS = None  # ImageNet has a few very large (but genuine) images


class BadImage(Exception):
    """The file cannot be used; ``str(exc)`` is the reason recorded in the manifest."""


def jpeg_complete(data: bytes) -> bool:
    """True when an end-of-image marker follows the last start-of-scan marker.

    Inside entropy-coded data ``FF`` is always stuffed (``FF 00``) and restart markers are
    ``FF D0..D7``, so ``FF DA``/``FF D9`` only occur as real markers; an embedded EXIF thumbnail
    ends before the main image's scans start, so it cannot satisfy the test for a cut-off file.
    """
    sos = data.rfind(b"\xff\xda")
    return sos >= 0 and data.rfind(b"\xff\xd9") > sos


_SOF_BASELINE = (0xC0, 0xC1)  # baseline / extended sequential, Huffman coded


def baseline_rgb_jpeg_header(data: bytes) -> tuple[int, int, int] | None:
    """(width, height, offset of the start-of-scan marker) when ``data`` starts like a baseline,
    8-bit, 3-component JPEG, else None.

    The header walk is :func:`imagenet52p.jpeg.jpeg_frame` (no decoding); any surprise returns
    None and the caller falls back to PIL.  3 components is what PIL opens as mode ``RGB``.  A
    baseline JPEG has one scan, so it is complete iff an end-of-image marker follows this SOS.
    """
    f = jpeg_frame(data, to_scan=True)
    if (f is None or f.sos is None or f.marker not in _SOF_BASELINE or f.precision != 8 or f.components != 3
            or not f.width or not f.height):
        return None
    return f.width, f.height, f.sos


def _message(exc: Exception) -> str:
    """``Type: message`` without memory addresses (the manifest must be reproducible)."""
    return re.sub(r" at 0x[0-9a-fA-F]+", "", f"{type(exc).__name__}: {exc}")


def _open(data: bytes) -> Image.Image:
    if not data:
        raise BadImage("empty file (0 bytes)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            im = Image.open(io.BytesIO(data))
            im.size  # noqa: B018 - header parsed
        return im
    except UnidentifiedImageError:
        raise BadImage("not a readable image (unknown or damaged format)") from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise BadImage(f"truncated or corrupt image header ({_message(exc)})") from None


def _decode(im: Image.Image) -> None:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            im.load()
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        raise BadImage(f"truncated or corrupt image data ({_message(exc)})") from None


def conversion_reason(im: Image.Image) -> str | None:
    """Why ``im`` cannot be stored as is (None: a baseline RGB JPEG)."""
    if im.format != "JPEG":
        return f"{im.format or 'unknown'} data, not JPEG"
    if im.mode != "RGB":
        return {"L": "grayscale JPEG", "CMYK": "CMYK JPEG"}.get(im.mode, f"{im.mode} JPEG")
    if im.info.get("progressive") or im.info.get("progression"):
        return "progressive JPEG"
    return None


def _to_rgb(im: Image.Image) -> Image.Image:
    if im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info):
        rgba = im.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    return im.convert("RGB")


def resized_size(w: int, h: int, short: int) -> tuple[int, int]:
    """(width, height) with the shorter side equal to ``short``, aspect ratio kept (rounded)."""
    if w <= h:
        return short, max(1, round(h * short / w))
    return max(1, round(w * short / h)), short


def encode_jpeg(im: Image.Image, quality: int) -> bytes:
    buf = io.BytesIO()
    im.save(buf, format="JPEG", quality=quality, optimize=False, progressive=False)
    return buf.getvalue()


def prepare_image(data: bytes, resize: int | None = None, quality: int = 90,
                  decode_check: bool = False) -> tuple[bytes, int, int, str | None]:
    """(bytes to store, width, height, re-encoding reason or None); raises :class:`BadImage`."""
    if not decode_check:
        head = baseline_rgb_jpeg_header(data)
        if head is not None and (resize is None or min(head[:2]) <= resize) and data.rfind(b"\xff\xd9", head[2]) > 0:
            return data, head[0], head[1], None  # the common case: no PIL, no decode
    im = _open(data)
    w, h = im.size
    reason = conversion_reason(im)
    too_big = resize is not None and min(w, h) > resize
    if reason is None and not too_big:
        if decode_check or not jpeg_complete(data):
            _decode(im)
        return data, w, h, None
    if too_big:
        target = resized_size(w, h, resize)
        if im.format == "JPEG":
            im.draft(im.mode, target)  # decode at a reduced DCT scale >= target (fast, deterministic)
    _decode(im)
    out = _to_rgb(im)
    if too_big:
        out = out.resize(target, Image.Resampling.BICUBIC)
        reason = "resize" if reason is None else f"{reason}; resize"
    return encode_jpeg(out, quality), out.width, out.height, reason
