"""The gateway's CPU preprocessing must equal timm's eval transform, and bad bytes must get clear 4xx errors."""

from __future__ import annotations

import io

import numpy as np
import pytest
import timm
import torch
from PIL import Image

from serving.errors import ServiceError
from serving.imaging import PreprocessConfig, decode_image, preprocess
from tests.conftest import encode, photo

PHOTOS = ["chelsea", "coffee", "astronaut", "rocket"]
# EVA02-L/14 CLIP @ 336 (the real classifier's base: 336 px, crop_pct 1.0, bicubic) and the dev model's
# config (224 px, crop_pct 0.9), both from timm's registry; no weights needed.
CONFIGS = ["eva02_large_patch14_clip_336.merged2b", "eva02_tiny_patch14_224.mim_in22k"]
BIG = 10_000_000


def timm_config(name: str) -> dict:
    return timm.data.resolve_data_config({}, pretrained_cfg=timm.get_pretrained_cfg(name).to_dict())


@pytest.mark.parametrize("cfg_name", CONFIGS)
@pytest.mark.parametrize("name", PHOTOS)
def test_preprocess_matches_timm_eval_transform(name: str, cfg_name: str) -> None:
    cfg_dict = timm_config(cfg_name)
    reference = timm.data.create_transform(**cfg_dict, is_training=False)
    img = decode_image(encode(photo(name)), BIG)

    ours = torch.from_numpy(np.array(preprocess(img, PreprocessConfig.model_validate(cfg_dict)))).permute(2, 0, 1).float() / 255
    mean = torch.tensor(cfg_dict["mean"]).view(3, 1, 1)
    std = torch.tensor(cfg_dict["std"]).view(3, 1, 1)
    theirs = reference(img) * std + mean  # undo timm's Normalize to compare in [0, 1] pixel units

    assert ours.shape == theirs.shape == (3, *cfg_dict["input_size"][1:])
    assert (ours - theirs).abs().max().item() <= 1 / 255 + 1e-6


def test_preprocess_portrait_and_tiny_images_keep_timm_geometry() -> None:
    cfg_dict = timm_config(CONFIGS[0])
    reference = timm.data.create_transform(**cfg_dict, is_training=False)
    for size in [(300, 900), (17, 40), (336, 336)]:
        img = Image.fromarray(np.random.default_rng(0).integers(0, 255, (*size, 3), dtype=np.uint8))
        ours = preprocess(img, PreprocessConfig.model_validate(cfg_dict)).astype(np.float32) / 255
        theirs = (reference(img) * torch.tensor(cfg_dict["std"]).view(3, 1, 1)
                  + torch.tensor(cfg_dict["mean"]).view(3, 1, 1)).permute(1, 2, 0).numpy()
        assert np.abs(ours - theirs).max() <= 1 / 255 + 1e-6



@pytest.mark.parametrize("cfg_name", CONFIGS)
@pytest.mark.parametrize("size", [(2400, 200), (150, 1500), (5000, 7)])
def test_panoramas_match_timm_geometry(cfg_name: str, size: tuple[int, int]) -> None:
    """Exactly up to 32:1; beyond, only the crop's region is resized, which may round a few pixels apart."""
    cfg_dict = timm_config(cfg_name)
    reference = timm.data.create_transform(**cfg_dict, is_training=False)
    img = Image.fromarray(photo("astronaut")).resize(size, Image.Resampling.BICUBIC)
    ours = preprocess(img, PreprocessConfig.model_validate(cfg_dict)).astype(np.float32) / 255
    theirs = (reference(img) * torch.tensor(cfg_dict["std"]).view(3, 1, 1)
              + torch.tensor(cfg_dict["mean"]).view(3, 1, 1)).permute(1, 2, 0).numpy()
    assert ours.shape == theirs.shape
    diff = np.abs(ours - theirs)
    if max(size) <= 32 * min(size):
        assert diff.max() <= 1 / 255 + 1e-6
    else:
        assert diff.max() <= 3 / 255 + 1e-6 and (diff > 1 / 255 + 1e-6).mean() < 1e-4


@pytest.mark.parametrize("size", [(10_000_000, 1), (1, 10_000_000)])
def test_a_tiny_file_of_extreme_aspect_is_preprocessed(size: tuple[int, int]) -> None:
    buf = io.BytesIO()
    Image.new("L", size, 128).save(buf, "PNG", optimize=True)  # about 10 KB; resized whole: 2.2e9 x 224 px
    cfg = PreprocessConfig.model_validate(timm_config(CONFIGS[0]))
    out = preprocess(decode_image(buf.getvalue(), 10**8), cfg)
    assert out.shape == (cfg.height, cfg.width, 3) and (out == 128).all()

@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP"])
def test_supported_formats_decode_to_rgb(fmt: str) -> None:
    img = decode_image(encode(photo("chelsea"), fmt), BIG)
    assert img.mode == "RGB" and img.size == (451, 300)


def _error(data: bytes, max_pixels: int = BIG) -> ServiceError:
    with pytest.raises(ServiceError) as info:
        decode_image(data, max_pixels)
    return info.value


def test_empty_body_is_400() -> None:
    err = _error(b"")
    assert (err.status, err.error) == (400, "empty_body")


def test_non_image_bytes_are_400() -> None:
    err = _error(b"%PDF-1.4 definitely not an image")
    assert (err.status, err.error) == (400, "invalid_image")
    assert "JPEG, PNG or WebP" in err.detail


def test_truncated_jpeg_is_400() -> None:
    data = encode(photo("coffee"))
    err = _error(data[: len(data) // 2])
    assert (err.status, err.error) == (400, "invalid_image")


def test_unsupported_format_is_415() -> None:
    err = _error(encode(photo("chelsea"), "GIF"))
    assert (err.status, err.error) == (415, "unsupported_media_type")
    assert "GIF" in err.detail and "image/png" in err.detail


def test_too_many_pixels_is_413() -> None:
    err = _error(encode(np.zeros((100, 200, 3), np.uint8), "PNG"), max_pixels=10_000)
    assert (err.status, err.error) == (413, "image_too_large")
    assert "20000" in err.detail


def test_exif_orientation_is_applied() -> None:
    array = photo("chelsea")  # 451 wide, 300 high
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    img = decode_image(encode(array, "JPEG", exif=exif.tobytes()), BIG)
    assert img.size == (300, 451)


@pytest.mark.parametrize("mode", ["L", "RGBA", "CMYK", "P"])
def test_other_colour_modes_become_rgb(mode: str) -> None:
    source = Image.fromarray(photo("astronaut")).convert(mode)
    fmt = "JPEG" if mode in ("L", "CMYK") else "PNG"
    data = encode(source, fmt)
    img = decode_image(data, BIG)
    assert img.mode == "RGB"
    expected = Image.open(io.BytesIO(data)).convert("RGB")
    assert np.array_equal(np.asarray(img), np.asarray(expected))


def _big_jpeg(long_side: int) -> bytes:
    img = Image.fromarray(photo("astronaut")).resize((long_side, long_side * 3 // 4), Image.Resampling.BICUBIC)
    return encode(img, "JPEG", quality=90)


def test_large_jpegs_decode_at_reduced_scale_close_to_a_full_decode() -> None:
    from serving.imaging import draft_size

    cfg = PreprocessConfig.model_validate(timm_config(CONFIGS[0]))
    data = _big_jpeg(4000)
    drafted = decode_image(data, 10**8, draft_size(cfg))
    full = decode_image(data, 10**8)
    assert full.size == (4000, 3000)
    assert min(drafted.size) >= 2 * draft_size(cfg) and drafted.size[0] <= 4000 // 4  # 1/4 scale
    diff = np.abs(preprocess(drafted, cfg).astype(float) - preprocess(full, cfg).astype(float))
    assert diff.mean() < 2.0  # in 0-255 units


@pytest.mark.parametrize("fmt", ["JPEG", "PNG"])
def test_images_less_than_four_times_the_target_are_decoded_in_full(fmt: str) -> None:
    data = encode(photo("astronaut"), fmt)  # 512x512 against a 224 px target (CLIP)
    assert decode_image(data, BIG, 224).size == (512, 512)
