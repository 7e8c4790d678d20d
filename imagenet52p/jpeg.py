"""The JPEG header walk shared by the builder's keep-as-is check and the transforms' size peek.

:func:`jpeg_frame` reads a JPEG's start-of-frame segment without decoding: it walks the marker
segments from SOI by their length fields, so an EXIF thumbnail inside APP1 (with its own SOI/SOF)
is skipped whole.  Pure Python on the first few hundred bytes; no PIL, no torch.
"""

from __future__ import annotations

from typing import NamedTuple

#: Start-of-frame markers: C0..CF except DHT (C4), JPG (C8) and DAC (CC).
SOF_MARKERS = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}
_STANDALONE = frozenset(range(0xD0, 0xD9)) | {0x01}  # RSTn, SOI, TEM: no length field


class JpegFrame(NamedTuple):
    marker: int  # 0xC0 baseline, 0xC1 extended sequential, 0xC2 progressive, ...
    precision: int  # bits per sample
    width: int
    height: int
    components: int  # 3: what PIL opens as mode RGB (YCbCr, or RGB with an Adobe marker)
    sos: int | None  # offset of the first start-of-scan marker (only with to_scan=True)


def jpeg_frame(data, to_scan: bool = False) -> JpegFrame | None:
    """The first start-of-frame segment of JPEG ``data`` (bytes, bytearray or memoryview).

    None when ``data`` does not start with SOI, or a segment before the SOF is malformed (length
    field below its minimum, a non-marker byte where a marker belongs, data ending), or a
    start-of-scan comes before any SOF.  ``sos`` is None unless ``to_scan``; then the walk goes on
    past the SOF to the first start-of-scan marker and ``sos`` is its offset, left None when a
    second SOF comes first or the walk fails before the scan.
    """
    if bytes(data[:3]) != b"\xff\xd8\xff":
        return None
    i, n, frame = 2, len(data), None  # frame: the SOF fields, as a tuple until returned
    while i + 4 <= n:
        if data[i] != 0xFF:
            break
        marker = data[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
            continue
        if marker in _STANDALONE:
            i += 2
            continue
        if marker == 0xDA:
            return JpegFrame(*frame, i) if frame is not None else None
        length = (data[i + 2] << 8) | data[i + 3]
        if length < 2:
            break
        if marker in SOF_MARKERS:
            if frame is not None or i + 10 > n or length < 8:
                break
            frame = (marker, data[i + 4], (data[i + 7] << 8) | data[i + 8], (data[i + 5] << 8) | data[i + 6],
                     data[i + 9])
            if not to_scan:
                break
        i += 2 + length
    return JpegFrame(*frame, None) if frame is not None else None
