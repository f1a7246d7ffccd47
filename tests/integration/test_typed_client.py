"""The typed Python client against a real server: every operation, and errors as exceptions."""

from __future__ import annotations

from pathlib import Path

import pytest

from vision_client import ServiceError, VisionClient
from tests.conftest import encode, photo

pytestmark = pytest.mark.integration


@pytest.fixture
def photo_file(tmp_path: Path) -> Path:
    path = tmp_path / "photo.jpg"
    path.write_bytes(encode(photo("coffee")))
    return path


def test_client_covers_classify_score_and_jobs(server, photo_file: Path) -> None:
    with VisionClient(server.url) as vc:
        top = vc.classify(photo_file, top_k=5)
        assert len(top.predictions) == 5 and top.model.variant == "dev"
        assert [p.score for p in top.predictions] == sorted((p.score for p in top.predictions), reverse=True)

        score = vc.score(photo_file.read_bytes())
        assert 0 <= score.score <= 10 and score.model.head.startswith("laion-aesthetic-vit-b16:")

        single = vc.wait(vc.submit_zero_shot("open-clip-vit-b32", [photo_file], ["cup", "cat"]).id)
        batched = vc.wait(vc.submit_zero_shot("clip-vit-large-patch14", [photo_file] * 3, ["cup", "cat"],
                                              templates=["a photo of a {}.", "a {}."]).id)
        direct = vc.zero_shot("open-clip-vit-b32", photo_file, ["cup", "cat"])
        assert single.status == batched.status == "complete"
        assert len(single.result.probabilities) == 2 and len(batched.result.probabilities) == 3
        assert direct.probabilities == pytest.approx(single.result.probabilities, abs=1e-6)
        assert [m["id"] for m in vc.models()] == ["clip-vit-large-patch14", "open-clip-vit-b32", "open-clip-vit-b32-laion2b"]


def test_client_raises_the_service_error(server, photo_file: Path) -> None:
    with VisionClient(server.url) as vc:
        with pytest.raises(ServiceError) as info:
            vc.classify(b"not an image")
        assert (info.value.status, info.value.error) == (400, "invalid_image")
        with pytest.raises(ServiceError) as info:
            vc.submit_zero_shot("no-such-model", [photo_file], ["a"])
        assert info.value.status == 404 and "open-clip-vit-b32" in info.value.detail
        done = vc.wait(vc.submit_zero_shot("open-clip-vit-b32", [photo_file], ["a", "b"]).id)
        with pytest.raises(ServiceError) as info:
            vc.cancel(done.id)
        assert (info.value.status, info.value.error) == (409, "job_finished")
