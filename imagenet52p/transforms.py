"""Fast ImageNet transforms that return uint8 tensors, a device-agnostic normaliser, a collate.

The recipes are the standard ones (torchvision's reference scripts):

* :func:`train`: ``RandomResizedCrop(224, scale=(0.08, 1), ratio=(3/4, 4/3))`` + ``RandomHorizontalFlip(0.5)``
* :func:`eval`:  ``Resize(256)`` (shorter side) + ``CenterCrop(224)``

Both return a ``uint8`` tensor ``[3, H, W]`` (RGB, values 0..255). Normalisation is a separate step,
:class:`Normalize`, applied to a whole ``uint8`` batch on whatever device the batch is on (the GPU
in training), so no float work happens in DataLoader workers and 4x fewer bytes cross processes.

Inputs: JPEG bytes (what :class:`~imagenet52p.dataset.ImageNetShards` hands over when the transform
has ``accepts_jpeg = True``), a PIL image (e.g. from ``ImageFolder``) or a ``uint8`` tensor ``[3, H, W]``.

How it is fast, and how it differs numerically from the plain torchvision recipe on PIL images
(same torch RNG draws, so the same crop and flip for the same seed):

1. Decoding. JPEG bytes are decoded by ``torchvision.io.decode_jpeg`` (libjpeg-turbo, the same
   library and settings as PIL: bit-identical pixels, ~10% faster, no RGB copy). When the crop is
   large enough that a 1/2, 1/4 or 1/8 scaled decode still has at least ``size`` pixels across the
   crop (train) or the shorter side is at least ``resize * s`` (eval), PIL's ``draft`` decodes at
   that reduced scale (libjpeg DCT scaling): much less work for big images. Differences: the
   DCT-domain reduction is a different low-pass filter than PIL's antialiased bilinear
   downscaling, and the train crop box is snapped to the reduced pixel grid (at most ``s/2`` source
   pixels per edge). ``draft=False`` turns this off.
2. Resizing uses torch's antialiased bilinear ``interpolate`` on ``uint8`` (channels-last, SIMD):
   it follows PIL's filter; outputs differ from PIL's by at most 1 grey level (mean ~0.01).
   ``tests/data/test_dataset_transforms.py`` checks these bounds against the plain recipe.
3. :class:`Normalize` computes ``x * (1 / (255 * std)) - mean / std`` in float32, equal to
   ``ToTensor`` + ``Normalize`` up to float rounding (~1e-6).

Random parameters are drawn from torch's global RNG in torchvision's order, so DataLoader worker
seeding works as usual.
"""

from __future__ import annotations

import functools
import io
import warnings

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch.utils.data import get_worker_info

from .jpeg import jpeg_frame

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
_DRAFT_SCALES = (8, 4, 2)


def _shape_stub(height: int, width: int) -> torch.Tensor:
    """A zero-memory tensor of shape [1, H, W], so torchvision's ``get_params`` sees the image size."""
    return torch.empty((1, 1, 1)).expand(1, height, width)


def rrc_params(width: int, height: int, scale, ratio) -> tuple[int, int, int, int]:
    """``(top, left, h, w)`` from torchvision's own ``RandomResizedCrop.get_params`` (same RNG draws)."""
    from torchvision.transforms import RandomResizedCrop
    return RandomResizedCrop.get_params(_shape_stub(height, width), list(scale), list(ratio))


def _peek(img) -> tuple[int, int]:
    """(width, height) of bytes | PIL | tensor input, parsing only the JPEG header."""
    if isinstance(img, torch.Tensor):
        if img.dtype != torch.uint8 or img.ndim != 3 or img.shape[0] != 3:
            raise ValueError(f"expected a uint8 tensor [3, H, W], got {img.dtype} {tuple(img.shape)}")
        return int(img.shape[-1]), int(img.shape[-2])
    if isinstance(img, Image.Image):
        return img.size
    if isinstance(img, (bytes, bytearray, memoryview)):
        return jpeg_size(img) or Image.open(io.BytesIO(img)).size
    raise TypeError(f"expected JPEG bytes, a PIL image or a uint8 tensor [3, H, W], got {type(img).__name__}")


def jpeg_size(data) -> tuple[int, int] | None:
    """(width, height) from a JPEG's start-of-frame marker (None when not found: use PIL)."""
    f = jpeg_frame(data)
    return None if f is None else (f.width, f.height)


def draft_factor(crop_w: float, crop_h: float, need_w: float, need_h: float, allowed: bool = True) -> int:
    """Largest JPEG scale ``s`` in (8, 4, 2) with ``crop/s >= need`` in both directions, else 1."""
    if allowed:
        for s in _DRAFT_SCALES:
            if crop_w / s >= need_w and crop_h / s >= need_h:
                return s
    return 1


def _pil_to_tensor(img: Image.Image) -> torch.Tensor:
    if img.mode != "RGB":
        img = img.convert("RGB")
    return torch.from_numpy(np.array(img)).permute(2, 0, 1)  # HWC memory, CHW view


def decode(img, scale: int = 1) -> tuple[torch.Tensor, int]:
    """Decode to uint8 ``[3, H, W]`` (RGB), at 1/``scale`` when the input is undecoded JPEG.

    Returns ``(tensor, s)`` with ``s`` the reduction actually applied (1 for tensors, loaded PIL
    images and non-JPEG data).
    """
    if isinstance(img, torch.Tensor):
        _peek(img)
        return img, 1
    if isinstance(img, Image.Image):
        width = img.size[0]
        used = 1
        if scale > 1 and img.draft("RGB", (img.size[0] // scale, img.size[1] // scale)) is not None:
            used = scale if img.size[0] < width else 1
        return _pil_to_tensor(img), used
    op = _jpeg_op() if scale == 1 and bytes(img[:2]) == b"\xff\xd8" else None
    if op is not None:
        return op(torch.frombuffer(bytearray(img), dtype=torch.uint8)), 1
    return decode(Image.open(io.BytesIO(img)), scale)


_JPEG_OP: list = []


def _jpeg_op():
    """torchvision's CPU JPEG decode op (RGB), or None where torchvision has no image ops.

    The op is called directly: the public ``torchvision.io.decode_jpeg`` wrapper warns on every
    call since torchvision 0.29 (deprecated in favour of TorchCodec). Without it PIL decodes
    (identical pixels, ~10% slower).
    """
    if not _JPEG_OP:
        try:
            from torchvision.io import ImageReadMode
            op = torch.ops.image.decode_jpeg
            _JPEG_OP.append(functools.partial(op, mode=ImageReadMode.RGB.value, apply_exif_orientation=False))
        except (ImportError, AttributeError, RuntimeError):
            _JPEG_OP.append(None)
    return _JPEG_OP[0]


def resize(t: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Antialiased bilinear resize of a uint8 ``[3, H, W]`` tensor (PIL's filter, within 1 level)."""
    if t.shape[-2] == height and t.shape[-1] == width:
        return t
    return F.interpolate(t.unsqueeze(0), size=(height, width), mode="bilinear", antialias=True,
                         align_corners=False)[0]


class TrainTransform:
    """``RandomResizedCrop(size, scale, ratio)`` + ``RandomHorizontalFlip(hflip)`` -> uint8 ``[3, size, size]``."""

    accepts_jpeg = True  # ImageNetShards hands over the undecoded JPEG bytes

    def __init__(self, size: int = 224, scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3), hflip: float = 0.5,
                 draft: bool = True):
        if not isinstance(size, int) or size < 1:
            raise ValueError(f"size must be a positive integer, got {size!r}")
        if not (0 < scale[0] <= scale[1] <= 1) or not (0 < ratio[0] <= ratio[1]):
            raise ValueError(f"need 0 < scale[0] <= scale[1] <= 1 and 0 < ratio[0] <= ratio[1], got {scale}, {ratio}")
        if not 0 <= hflip <= 1:
            raise ValueError(f"hflip is a probability in [0, 1], got {hflip!r}")
        self.size, self.scale, self.ratio, self.hflip, self.draft = size, tuple(scale), tuple(ratio), hflip, draft

    def __call__(self, img) -> torch.Tensor:
        width, height = _peek(img)
        i, j, h, w = rrc_params(width, height, self.scale, self.ratio)
        flip = self.hflip > 0 and bool(torch.rand(1) < self.hflip)
        t, s = decode(img, draft_factor(w, h, self.size, self.size, self.draft))
        if s > 1:  # crop box snapped to the reduced grid
            top, left = round(i / s), round(j / s)
            bottom = max(min(round((i + h) / s), t.shape[-2]), top + 1)
            right = max(min(round((j + w) / s), t.shape[-1]), left + 1)
            crop = t[:, top:bottom, left:right]
        else:
            crop = t[:, i:i + h, j:j + w]
        out = resize(crop, self.size, self.size)
        if flip:
            out = out.flip(-1)
        return out.contiguous()

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(size={self.size}, scale={self.scale}, ratio={tuple(round(r, 4) for r in self.ratio)}, "
                f"hflip={self.hflip}, draft={self.draft})")


class EvalTransform:
    """``Resize(resize)`` (shorter side, torchvision's rounding) + ``CenterCrop(size)`` -> uint8 ``[3, size, size]``."""

    accepts_jpeg = True

    def __init__(self, size: int = 224, resize: int = 256, draft: bool = True):
        if not isinstance(size, int) or not isinstance(resize, int) or not 1 <= size <= resize:
            raise ValueError(f"need integers 1 <= size <= resize, got size={size!r}, resize={resize!r}")
        self.size, self.resize_to, self.draft = size, resize, draft

    def output_size(self, width: int, height: int) -> tuple[int, int]:
        """(new_w, new_h) of torchvision's ``Resize(resize)`` for a ``width x height`` image."""
        short, long = min(width, height), max(width, height)
        new_short, new_long = self.resize_to, int(self.resize_to * long / short)
        return (new_short, new_long) if width <= height else (new_long, new_short)

    def __call__(self, img) -> torch.Tensor:
        width, height = _peek(img)
        new_w, new_h = self.output_size(width, height)
        t, _ = decode(img, draft_factor(width, height, new_w, new_h, self.draft))
        r = resize(t, new_h, new_w)
        top, left = int(round((new_h - self.size) / 2.0)), int(round((new_w - self.size) / 2.0))
        return r[:, top:top + self.size, left:left + self.size].contiguous()

    def __repr__(self) -> str:
        return f"{type(self).__name__}(size={self.size}, resize={self.resize_to}, draft={self.draft})"


def train(size: int = 224, scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3), hflip: float = 0.5, draft: bool = True):
    """The standard ImageNet training transform, uint8 output (see the module docstring)."""
    return TrainTransform(size, scale, ratio, hflip, draft)


def eval(size: int = 224, resize: int = 256, draft: bool = True):  # noqa: A001 - the issue's name
    """The standard ImageNet evaluation transform, uint8 output (see the module docstring)."""
    return EvalTransform(size, resize, draft)


class Normalize(torch.nn.Module):
    """uint8 ``[..., 3, H, W]`` -> float ``(x / 255 - mean) / std``, on the batch's device.

    Computed as ``x * (1 / (255 * std)) + (-mean / std)`` (one fused multiply-add), equal to
    torchvision's ``ToTensor`` + ``Normalize`` up to float rounding. ``dtype`` may be
    ``torch.float16``/``bfloat16`` for mixed precision (computed in float32, then cast).
    """

    def __init__(self, mean=IMAGENET_MEAN, std=IMAGENET_STD, dtype: torch.dtype = torch.float32):
        super().__init__()
        mean_t = torch.as_tensor(mean, dtype=torch.float64).reshape(-1, 1, 1)
        std_t = torch.as_tensor(std, dtype=torch.float64).reshape(-1, 1, 1)
        if mean_t.numel() != std_t.numel() or bool((std_t <= 0).any()):
            raise ValueError(f"mean and std need the same length and std > 0, got mean={mean}, std={std}")
        self.register_buffer("scale", (1.0 / (255.0 * std_t)).float(), persistent=False)
        self.register_buffer("shift", (-mean_t / std_t).float(), persistent=False)
        self.dtype = dtype

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dtype != torch.uint8:
            raise TypeError(f"Normalize expects a uint8 image batch, got {x.dtype}; it already looks normalised")
        if x.ndim < 3 or x.shape[-3] != self.scale.shape[0]:
            raise ValueError(f"expected [..., {self.scale.shape[0]}, H, W], got {tuple(x.shape)}")
        scale, shift = self.scale.to(x.device), self.shift.to(x.device)
        y = x.to(torch.float32)
        return torch.addcmul(shift, y, scale, out=y).to(self.dtype)  # in place: one float buffer

    def extra_repr(self) -> str:
        return f"dtype={self.dtype}"


def normalize(x: torch.Tensor, mean=IMAGENET_MEAN, std=IMAGENET_STD, dtype: torch.dtype = torch.float32):
    """Functional form of :class:`Normalize`."""
    return Normalize(mean, std, dtype)(x)


def collate(batch):
    """Stack ``(uint8 image, int target[, meta dict])`` items into ``(uint8 [B,3,H,W], int64 [B][, dict of lists])``.

    In a DataLoader worker the batch is written straight into shared memory (like torch's
    ``default_collate``), so nothing is copied again on the way to the main process.
    """
    if not batch:
        raise ValueError("collate got an empty batch")
    imgs = [b[0] for b in batch]
    first = imgs[0]
    if not isinstance(first, torch.Tensor) or any(im.shape != first.shape or im.dtype != first.dtype for im in imgs):
        shapes = sorted({(str(getattr(im, 'dtype', type(im).__name__)), tuple(getattr(im, 'shape', ()))) for im in imgs})
        raise TypeError(f"collate needs image tensors of one shape and dtype (use transforms.train()/eval()), got {shapes}")
    out = None
    if get_worker_info() is not None:
        numel = first.numel() * len(imgs)
        storage = first._typed_storage()._new_shared(numel, device=first.device)
        out = first.new(storage).resize_(len(imgs), *first.shape)
    images = torch.stack(imgs, 0, out=out)
    targets = torch.as_tensor([b[1] for b in batch], dtype=torch.int64)
    if len(batch[0]) == 2:
        return images, targets
    metas = [b[2] for b in batch]
    return images, targets, {k: [m[k] for m in metas] for k in metas[0]}


def decode_jpeg_batch(datas, device: str | torch.device = "cuda") -> list[torch.Tensor]:
    """Decode a list of JPEG byte strings (or uint8 1-D tensors) in one batched call on ``device``.

    On CUDA this is nvJPEG via ``torchvision.io.decode_jpeg(list, device="cuda")``; on CPU the same
    call decodes one by one. Returns RGB uint8 ``[3, H, W]`` tensors on ``device``.
    """
    from torchvision.io import ImageReadMode, decode_jpeg
    tensors = [d if isinstance(d, torch.Tensor) else torch.frombuffer(bytearray(d), dtype=torch.uint8) for d in datas]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # torchvision >= 0.29 points to TorchCodec
        return decode_jpeg(tensors, mode=ImageReadMode.RGB, device=device)
