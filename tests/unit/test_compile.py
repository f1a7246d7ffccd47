"""TORCH_COMPILE: the runners' image towers through torch.compile give the same answers as eager PyTorch."""

from __future__ import annotations

import asyncio
import dataclasses

import numpy as np
import pytest

from engines.torch.common import compile_model, warm_up_sizes
from serving.imaging import decode_image, preprocess
from tests.conftest import encode, photo


def test_off_leaves_the_model_as_it_is_and_unknown_modes_are_refused() -> None:
    def forward(x):
        return x

    assert compile_model(forward, "off") is forward and warm_up_sizes("off") == (1,)
    with pytest.raises(ValueError, match="TORCH_COMPILE='fast': use one of off, default, reduce-overhead"):
        compile_model(forward, "fast")


def test_a_compiled_aesthetic_runner_scores_like_the_eager_one(aesthetic_models, monkeypatch) -> None:
    from torch._dynamo.utils import counters

    import runners.factory as factory
    from runners import services

    monkeypatch.setattr(factory, "settings", dataclasses.replace(factory.settings, precision="fp32"))  # exact
    eager = services()["aesthetic"].inner()
    batch = np.stack([preprocess(decode_image(encode(photo(n)), 10**8), eager.cfg)
                      for n in ("chelsea", "coffee", "rocket")])
    expected = asyncio.run(eager.score(batch))

    graphs = counters["stats"]["unique_graphs"]
    monkeypatch.setattr(factory, "settings", dataclasses.replace(factory.settings, torch_compile="default"))
    compiled = services()["aesthetic"].inner()
    assert compiled.engine.backend == "torch"  # ENGINE=auto leaves OpenVINO for torch when TORCH_COMPILE is set
    assert counters["stats"]["unique_graphs"] > graphs  # warm-up compiled the image tower
    np.testing.assert_allclose(asyncio.run(compiled.score(batch)), expected, rtol=0, atol=1e-4)
    np.testing.assert_allclose(asyncio.run(compiled.score(batch[:1])), expected[:1], rtol=0, atol=1e-4)
