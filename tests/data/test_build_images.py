"""The per-image fast path agrees with PIL and tarfile, and cut-off files never slip through."""

from __future__ import annotations

import io
import tarfile

import pytest
from fake_layouts import quirk_files
from PIL import Image

from imagenet52p.builder.images import BadImage, baseline_rgb_jpeg_header, prepare_image
from imagenet52p.fake import FakeSpec, encode_jpeg, render_image
from imagenet52p.format.tar import tar_header
from imagenet52p.transforms import jpeg_size

SPEC = FakeSpec(width=96, height=64)
WN = ["n01440764", "n01443537", "n01491361"]


def _tarfile_header(name, size):
    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.mode, info.uid, info.gid, info.uname, info.gname = size, 0, 0o644, 0, 0, "", ""
    return info.tobuf(tarfile.PAX_FORMAT, "utf-8", "surrogateescape")


@pytest.mark.parametrize("name,size", [("a.jpg", 0), ("train_n01440764_n01440764_10026.jpg", 123456),
                                       ("x" * 99, 5), ("x" * 100, 5), ("é.json", 3), ("k.cls", 8 ** 11 - 1),
                                       ("k.cls", 8 ** 11)])
def test_fast_tar_header_equals_tarfile(name, size):
    assert tar_header(name, size) == _tarfile_header(name, size)


def _with_exif_thumbnail(jpeg: bytes, thumb: bytes) -> bytes:
    app1 = b"\xff\xe1" + (len(thumb) + 8).to_bytes(2, "big") + b"Exif\0\0" + thumb
    return jpeg[:2] + app1 + jpeg[2:]


def _pil_view(data):
    try:
        im = Image.open(io.BytesIO(data))
    except Exception:
        return None
    ok = im.format == "JPEG" and im.mode == "RGB" and not im.info.get("progressive")
    return im.size if ok else None


def test_header_walk_agrees_with_pil_on_every_quirk():
    arr = render_image(WN[0], 0, SPEC)
    cases = [(q.expect, d) for q, d in quirk_files(WN, SPEC) if q.expect != "ignored"]
    cases += [("kept", _with_exif_thumbnail(encode_jpeg(arr), encode_jpeg(arr[:16, :16])))]
    for expect, data in cases:
        head = baseline_rgb_jpeg_header(data)
        if head is not None:  # never claims a file PIL would not open as a baseline RGB JPEG
            assert head[:2] == _pil_view(data)
        if expect == "kept":  # and recognises every good one without PIL
            assert head is not None and head[:2] == _pil_view(data)
        if expect == "converted":
            assert head is None
    assert baseline_rgb_jpeg_header(cases[-1][1])[:2] == (96, 64)


def test_transforms_size_peek_shares_the_walk_and_agrees_with_pil():
    """transforms.jpeg_size (the dataset's per-sample peek) walks headers like the builder: every
    JPEG quirk (CMYK, grayscale, progressive, cut off, an EXIF thumbnail of another size) gives
    PIL's size, from bytes and from a memoryview; non-JPEG data gives None."""
    arr = render_image(WN[0], 0, SPEC)
    files = [d for _, d in quirk_files(WN, SPEC)]
    files.append(_with_exif_thumbnail(encode_jpeg(arr), encode_jpeg(arr[:16, :16])))
    jpegs = 0
    for data in files:
        try:
            im = Image.open(io.BytesIO(data))
        except Exception:
            assert jpeg_size(data) is None
            continue
        if im.format != "JPEG":
            assert jpeg_size(data) is None
            continue
        assert jpeg_size(data) == jpeg_size(memoryview(data)) == im.size
        jpegs += 1
    assert jpegs >= 8 and jpeg_size(files[-1]) == (96, 64)


@pytest.mark.parametrize("cut", [0.3, 0.6, 0.95, 0.999])
def test_cut_off_jpeg_is_bad_even_with_an_exif_thumbnail(cut):
    arr = render_image(WN[1], 3, SPEC)
    full = _with_exif_thumbnail(encode_jpeg(arr), encode_jpeg(arr[:16, :16]))
    assert prepare_image(full) == (full, 96, 64, None)
    with pytest.raises(BadImage, match="truncated"):
        prepare_image(full[: int(len(full) * cut)])


def test_trailing_bytes_after_eoi_are_kept_and_decode_check_decodes():
    data = encode_jpeg(render_image(WN[2], 1, SPEC)) + b"\0\0trailer"
    assert prepare_image(data)[0] == data
    assert prepare_image(data, decode_check=True)[0] == data


@pytest.mark.parametrize("mode,reason", [("CMYK", "CMYK JPEG"), ("L", "grayscale JPEG")])
def test_conversions_give_rgb_baseline_jpegs(mode, reason):
    buf = io.BytesIO()
    Image.fromarray(render_image(WN[0], 2, SPEC)).convert(mode).save(buf, "JPEG")
    out, w, h, why = prepare_image(buf.getvalue(), quality=85)
    im = Image.open(io.BytesIO(out))
    assert why == reason and (im.format, im.mode, im.size) == ("JPEG", "RGB", (w, h))
    assert baseline_rgb_jpeg_header(out) is not None
    assert prepare_image(buf.getvalue(), quality=85)[0] == out  # deterministic re-encoding
