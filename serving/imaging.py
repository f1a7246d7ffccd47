"""Decode untrusted image bytes and reproduce timm/open_clip eval preprocessing on the CPU.

The output is a uint8 ``(H, W, 3)`` array: the runner normalises on its device, so the wire
carries one byte per channel instead of four.
"""

from __future__ import annotations

import io
import math
import warnings
from typing import Literal

import numpy as np
from PIL import Image, ImageOps
from pydantic import BaseModel, Field

from serving.errors import ServiceError

ORIENTATION = 0x0112  # the EXIF tag
SUPPORTED_FORMATS = {"JPEG": "image/jpeg", "PNG": "image/png", "WEBP": "image/webp"}
# beyond this long:short ratio, only the center crop's region is resized: the same pixels up to rounding (a few
# levels on a few pixels), without the whole resized image in memory; up to it, exactly timm's resize-then-crop
BOXED_RESIZE_ASPECT = 32

_RESAMPLE = {
    "nearest": Image.Resampling.NEAREST,
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
    "lanczos": Image.Resampling.LANCZOS,
    "box": Image.Resampling.BOX,
    "hamming": Image.Resampling.HAMMING,
}


class PreprocessConfig(BaseModel):
    """Eval preprocessing, as timm's ``resolve_model_data_config`` reports it; saved with the weights."""

    input_size: tuple[int, int, int] = Field(description="(channels, height, width)")
    interpolation: Literal["nearest", "bilinear", "bicubic", "lanczos", "box", "hamming"]
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    crop_pct: float = Field(gt=0, le=1)
    crop_mode: Literal["center", "squash"] = "center"

    @property
    def height(self) -> int:
        return self.input_size[1]

    @property
    def width(self) -> int:
        return self.input_size[2]


def draft_size(cfg: PreprocessConfig) -> int:
    """The shorter side timm resizes to; JPEGs at least four times this are decoded at reduced scale."""
    return math.floor(min(cfg.height, cfg.width) / cfg.crop_pct)


def decode_image(data: bytes, max_pixels: int, min_side: int | None = None) -> Image.Image:
    """Decode bytes into an RGB image with EXIF orientation applied (see :func:`decode_image_sized`)."""
    return decode_image_sized(data, max_pixels, min_side)[0]


def decode_image_sized(data: bytes, max_pixels: int,
                       min_side: int | None = None) -> tuple[Image.Image, tuple[int, int]]:
    """Decode bytes into an RGB image with EXIF orientation applied, and the original's (width, height) as shown
    (orientation applied; a JPEG decoded at reduced scale keeps its full size here).

    The bytes decide the format, not any declared content type. With ``min_side``, a JPEG at least four times as
    large is decoded by libjpeg at 1/2, 1/4 or 1/8 scale (DCT scaling) keeping at least twice ``min_side``, so the
    resize that follows still antialiases: a 4000 px photo decodes several times faster. Smaller images are
    decoded in full and match timm's and open_clip's transforms exactly.
    Raises ``ServiceError`` (400, 413 or 415) with a message that says what to send instead.
    """
    if not data:
        raise ServiceError(400, "empty_body", "The request body is empty; send the image bytes as the body.")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data))
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise ServiceError(413, "image_too_large", f"The image has more than {max_pixels} pixels.") from None
    except Exception:  # UnidentifiedImageError, truncated headers (OSError, struct.error, EOFError, ...)
        raise ServiceError(
            400, "invalid_image", "The body is not a readable image; send JPEG, PNG or WebP bytes."
        ) from None
    if img.format not in SUPPORTED_FORMATS:
        raise ServiceError(
            415,
            "unsupported_media_type",
            f"{img.format} images are not supported; send one of: {', '.join(SUPPORTED_FORMATS.values())}.",
        )
    width, height = img.size
    if width * height > max_pixels:
        raise ServiceError(
            413,
            "image_too_large",
            f"The image is {width}x{height} = {width * height} pixels; the limit is {max_pixels}. Downscale it first.",
        )
    try:
        if min_side and img.format == "JPEG" and min(width, height) >= 4 * min_side:
            img.draft("RGB", (2 * min_side, 2 * min_side))
        img.load()
        if img.getexif().get(ORIENTATION, 1) in (5, 6, 7, 8):  # turned a quarter: shown with the sides swapped
            width, height = height, width
        img = ImageOps.exif_transpose(img)
        if img.mode in ("I;16", "I;16L", "I;16B", "I"):  # 16-bit grey: scale to 8 bits; PIL's convert would clip
            img = Image.fromarray((np.asarray(img, dtype=np.uint32) // 257).clip(0, 255).astype(np.uint8))
        return img.convert("RGB"), (width, height)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise ServiceError(413, "image_too_large", f"The image has more than {max_pixels} pixels.") from None
    except Exception as exc:  # any decoder failure is the image's fault, never a 500
        raise ServiceError(
            400, "invalid_image",
            f"The {img.format} image is truncated or corrupt ({type(exc).__name__}); re-encode it and retry.",
        ) from None


def resize_and_crop(img: Image.Image, cfg: PreprocessConfig) -> Image.Image:
    """Resize and crop exactly as timm's ``transforms_imagenet_eval`` does for ``cfg`` (without normalising)."""
    out_h, out_w = cfg.height, cfg.width
    resample = _RESAMPLE[cfg.interpolation]
    if cfg.crop_mode == "squash":
        scale = (math.floor(out_h / cfg.crop_pct), math.floor(out_w / cfg.crop_pct))
        img = img.resize((scale[1], scale[0]), resample)
    else:
        scale_h, scale_w = math.floor(out_h / cfg.crop_pct), math.floor(out_w / cfg.crop_pct)
        if scale_h != scale_w:
            raise ValueError("center crop with a non-square scale is not supported; use crop_mode='squash'")
        # torchvision Resize(int): the shorter side becomes `scale_h`, the longer keeps the aspect ratio.
        w, h = img.size
        short, long = (w, h) if w <= h else (h, w)
        new_short, new_long = scale_h, int(scale_h * long / short)
        size = (new_short, new_long) if w <= h else (new_long, new_short)
        if new_long > BOXED_RESIZE_ASPECT * new_short:  # resized whole, a 10 KB PNG of 10,000,000 x 1 px needs GBs
            sx, sy = img.width / size[0], img.height / size[1]
            left, top, right, bottom = _center_box(size, out_w, out_h)
            return img.resize((out_w, out_h), resample, box=(left * sx, top * sy, right * sx, bottom * sy))
        if size != img.size:
            img = img.resize(size, resample)
    return img.crop(_center_box(img.size, out_w, out_h))


def _center_box(size: tuple[int, int], out_w: int, out_h: int) -> tuple[int, int, int, int]:
    """The ``out_w`` x ``out_h`` center crop of an image of ``size``, as torchvision's CenterCrop rounds it."""
    left, top = int(round((size[0] - out_w) / 2.0)), int(round((size[1] - out_h) / 2.0))
    return left, top, left + out_w, top + out_h


def preprocess(img: Image.Image, cfg: PreprocessConfig) -> np.ndarray:
    """RGB image -> uint8 array ``(H, W, 3)`` ready for the runner."""
    return np.asarray(resize_and_crop(img, cfg), dtype=np.uint8)


def prepare(data: bytes, cfg: PreprocessConfig, max_pixels: int) -> np.ndarray:
    """Image bytes -> the uint8 ``(H, W, 3)`` array a runner takes: the one path from bytes to pixels, used by
    the service and by bulk scoring alike. Raises ``ServiceError`` as :func:`decode_image` does."""
    return preprocess(decode_image(data, max_pixels, draft_size(cfg)), cfg)
