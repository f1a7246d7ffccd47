"""Batch requests: answers go back into their slots, in request order, beside the errors of bad images."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from capabilities.common import image_batches, in_slots
from serving.errors import ServiceError
from serving.imaging import PreprocessConfig
from serving.schemas import ErrorBody
from tests.conftest import encode, photo

CFG = PreprocessConfig(input_size=(3, 32, 32), interpolation="bicubic", mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5),
                       crop_pct=1.0)


def test_good_images_are_stacked_in_order_and_bad_ones_keep_their_slot() -> None:
    images = [encode(photo("chelsea")), b"not an image", encode(photo("coffee"), "PNG"), encode(photo("rocket"), "GIF")]
    pixels, errors = asyncio.run(image_batches(images, CFG))
    assert pixels.shape == (2, 32, 32, 3) and pixels.dtype == np.uint8
    assert [e.status if e else None for e in errors] == [None, 400, None, 415]
    results = in_slots(["first", "third"], errors)
    assert results[0] == "first" and results[2] == "third"
    assert isinstance(results[1], ErrorBody) and results[1].error == "invalid_image"
    assert isinstance(results[3], ErrorBody) and results[3].error == "unsupported_media_type"


def test_a_runner_answer_of_the_wrong_length_is_503() -> None:
    with pytest.raises(ServiceError) as err:
        in_slots(["only one"], [None, None])
    assert err.value.status == 503
