"""imagenet52p.transforms against the plain torchvision recipes on PIL images (same seeds), the
documented bounds of draft decoding, Normalize against ToTensor+Normalize, and collate."""
from __future__ import annotations

import io

import numpy as np
import pytest
import torch
import torchvision.transforms as T
from PIL import Image

from imagenet52p import transforms as IT
from imagenet52p.fake import FakeSpec, encode_jpeg, render_image


def jpegs(width, height, n=6):
    spec = FakeSpec(width=width, height=height, noise=20)
    return [encode_jpeg(render_image("n02084071", i, spec), 90) for i in range(n)]


def plain_train():
    return T.Compose([T.RandomResizedCrop(224), T.RandomHorizontalFlip(), T.PILToTensor()])


def plain_eval():
    return T.Compose([T.Resize(256), T.CenterCrop(224), T.PILToTensor()])


def diff(ours, data, ref, seed):
    torch.manual_seed(seed)
    a = ours(data)
    torch.manual_seed(seed)
    b = ref(Image.open(io.BytesIO(data)).convert("RGB"))
    assert a.dtype == torch.uint8 and a.shape == b.shape == (3, 224, 224)
    return (a.int() - b.int()).abs()


@pytest.mark.parametrize("size", [(500, 375), (180, 240)])
def test_without_draft_matches_torchvision_within_one_level(size):
    for k, data in enumerate(jpegs(*size)):
        for ours, ref in ((IT.train(draft=False), plain_train()), (IT.eval(draft=False), plain_eval())):
            d = diff(ours, data, ref, seed=k)
            assert d.max() <= 1 and d.float().mean() < 0.05, (type(ours).__name__, k)


def test_draft_decodes_smaller_and_stays_close():
    data = jpegs(1200, 900, n=4)
    t, s = IT.decode(data[0], 4)
    assert s == 4 and tuple(t.shape) == (3, 225, 300)
    ev = IT.eval()
    assert IT.draft_factor(1200, 900, *ev.output_size(1200, 900)) == 2  # 900/2 >= 256, 1200/2 >= 341
    e = torch.stack([diff(ev, d, plain_eval(), k).float() for k, d in enumerate(data)])
    tr = torch.stack([diff(IT.train(scale=(0.5, 1.0)), d, T.Compose([T.RandomResizedCrop(224, scale=(0.5, 1.0)),
                      T.RandomHorizontalFlip(), T.PILToTensor()]), k).float() for k, d in enumerate(data)])
    # documented in the module docstring: DCT-domain reduction vs antialiased bilinear
    assert 0 < e.mean() < 3 and 0 < tr.mean() < 4


def test_input_kinds_agree():
    data = jpegs(300, 200, n=1)[0]
    pil = Image.open(io.BytesIO(data)).convert("RGB")
    tensor = torch.from_numpy(np.array(pil)).permute(2, 0, 1)
    for make in (lambda: IT.train(draft=False), IT.eval):
        outs = []
        for inp in (data, pil, tensor):
            torch.manual_seed(7)
            outs.append(make()(inp))
        assert torch.equal(outs[0], outs[1]) and torch.equal(outs[0], outs[2])
    png = io.BytesIO()
    pil.save(png, "PNG")  # not JPEG: decoded by PIL, same pixels
    torch.manual_seed(7)
    assert torch.equal(IT.eval()(png.getvalue()), outs[0])
    with pytest.raises(TypeError, match="expected JPEG bytes"):
        IT.train()(np.zeros((3, 4, 4)))
    with pytest.raises(ValueError, match="uint8 tensor"):
        IT.eval()(torch.zeros(3, 8, 8))


def test_bad_transform_options():
    with pytest.raises(ValueError, match="size <= resize"):
        IT.eval(size=300, resize=256)
    with pytest.raises(ValueError, match="hflip"):
        IT.train(hflip=2)
    with pytest.raises(ValueError, match="scale"):
        IT.train(scale=(0.5, 0.1))


def test_normalize_matches_totensor_normalize():
    x = torch.randint(0, 256, (4, 3, 17, 9), dtype=torch.uint8)
    ref = torch.stack([T.Normalize(IT.IMAGENET_MEAN, IT.IMAGENET_STD)(T.ToTensor()(im.permute(1, 2, 0).numpy()))
                       for im in x])
    out = IT.Normalize()(x)
    assert out.dtype == torch.float32 and torch.allclose(out, ref, atol=1e-5)
    assert torch.allclose(IT.normalize(x[0]), ref[0], atol=1e-5)
    assert IT.Normalize(dtype=torch.bfloat16)(x).dtype == torch.bfloat16
    with pytest.raises(TypeError, match="uint8"):
        IT.Normalize()(x.float())
    assert len(list(IT.Normalize().state_dict())) == 0  # constants, not checkpoint state


def test_collate_stacks_uint8_and_meta():
    items = [(torch.full((3, 4, 4), i, dtype=torch.uint8), i, {"key": f"k{i}", "padded": False}) for i in range(3)]
    x, y, meta = IT.collate(items)
    assert x.dtype == torch.uint8 and x.shape == (3, 3, 4, 4) and x[2].eq(2).all()
    assert y.tolist() == [0, 1, 2] and y.dtype == torch.int64
    assert meta == {"key": ["k0", "k1", "k2"], "padded": [False, False, False]}
    x2, y2 = IT.collate([(it[0], it[1]) for it in items])
    assert torch.equal(x2, x)
    with pytest.raises(TypeError, match="one shape"):
        IT.collate([(torch.zeros(3, 4, 4, dtype=torch.uint8), 0), (torch.zeros(3, 5, 4, dtype=torch.uint8), 1)])


def test_decode_jpeg_batch_cpu_equals_pil():
    data = jpegs(120, 90, n=3)
    out = IT.decode_jpeg_batch(data, device="cpu")
    for d, t in zip(data, out):
        assert torch.equal(t, torch.from_numpy(np.array(Image.open(io.BytesIO(d)).convert("RGB"))).permute(2, 0, 1))


@pytest.mark.gpu
def test_decode_jpeg_batch_cuda_close_to_cpu():
    data = jpegs(500, 375, n=4)
    gpu = IT.decode_jpeg_batch(data, device="cuda")
    cpu = IT.decode_jpeg_batch(data, device="cpu")
    for g, c in zip(gpu, cpu):
        assert g.is_cuda and g.shape == c.shape
        assert (g.cpu().int() - c.int()).abs().float().mean() < 2  # nvJPEG's IDCT differs slightly
    assert IT.Normalize().cuda()(torch.stack([IT.eval()(d) for d in data]).cuda()).is_cuda
