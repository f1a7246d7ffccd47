"""Settings read from the environment: values that change what a user sees, and errors that say how to fix them."""

from __future__ import annotations

import pytest

import runners.factory as factory
from serving.settings import Settings


def test_request_timeout_s_is_the_limit_of_the_gateway_and_of_every_runner(monkeypatch) -> None:
    monkeypatch.delenv("REQUEST_TIMEOUT_S", raising=False)
    assert Settings.from_env().request_timeout_s == 120
    monkeypatch.setenv("REQUEST_TIMEOUT_S", "300")
    settings = Settings.from_env()
    monkeypatch.setattr(factory, "settings", settings)
    assert settings.request_timeout_s == 300 and factory.runner_config()["traffic"]["timeout"] == 300


@pytest.mark.parametrize(("raw", "message"), [("0", "REQUEST_TIMEOUT_S=0: give a number of seconds above 0"),
                                              ("2m", "REQUEST_TIMEOUT_S='2m' is not an integer")])
def test_a_bad_request_timeout_is_refused_with_how_to_fix_it(monkeypatch, raw: str, message: str) -> None:
    monkeypatch.setenv("REQUEST_TIMEOUT_S", raw)
    with pytest.raises(ValueError, match=message):
        Settings.from_env()


def test_a_runner_precision_overrides_precision_for_that_runner_and_its_head_only(monkeypatch) -> None:
    import catalog

    monkeypatch.setenv("PRECISION", "bf16")
    monkeypatch.setenv("ZERO_SHOT_PRECISION", "fp32")
    monkeypatch.setenv("AESTHETIC_PRECISION", "fp32")
    monkeypatch.delenv("SPECIES_PRECISION", raising=False)
    settings = Settings.from_env()
    by_name = {m.name: settings.engine_options(m).precision for m in catalog.MODELS}
    assert by_name["eva02-inat21"] == "bf16"
    assert by_name["clip-vit-large-patch14"] == by_name["open-clip-vit-b32"] == "fp32"
    assert by_name["clip-vit-b16-openai"] == by_name["laion-aesthetic-vit-b16"] == "fp32"  # the head follows
