"""The /ui page in a real headless Chromium against a real server with dev models."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest

from tests.browser.conftest import API_KEY
from tests.conftest import encode, photo

pytestmark = pytest.mark.browser
DONE_MS = 120_000


def _write(tmp_path: Path, name: str, data: bytes) -> str:
    path = tmp_path / name
    path.write_bytes(data)
    return str(path)


def _open(page, server) -> None:
    page.goto(f"{server.url}/ui")
    page.locator("#model option[value]:not([value=''])").first.wait_for(state="attached")


def _finished_cards(page, n: int) -> list:
    """The cards once ``n`` of them have all three answers (locators: the page's CSP allows no eval)."""
    page.locator(".card[data-done=true]").nth(n - 1).wait_for(state="attached", timeout=DONE_MS)
    return page.query_selector_all(".card")


def test_a_photo_gets_species_a_score_and_the_dev_badge(page, ui_server, species_dev_model, tmp_path) -> None:
    names = set(json.loads((Path(species_dev_model.path) / "config.json").read_text())["label_names"])
    _open(page, ui_server)
    page.select_option("#top-k", "7")
    page.fill("#classes", "")  # species and score only
    page.set_input_files("#files", _write(tmp_path, "chelsea.jpg", encode(photo("chelsea"))))
    (card,) = _finished_cards(page, 1)
    rows = card.query_selector_all(".species .bars li")
    assert len(rows) == 7 and all(r.get_attribute("data-name").split(" (")[0] in names for r in rows)
    answer = httpx.post(f"{ui_server.url}/classify?top_k=7", content=encode(photo("chelsea")), timeout=60).json()
    verdict = card.query_selector(".species .verdict")
    assert verdict.get_attribute("data-status") == answer["status"]
    assert rows[0].get_attribute("title") == " › ".join(answer["predictions"][0]["lineage"])
    assert "dev model: answers are meaningless" in card.inner_text()
    score = float(card.query_selector(".aesthetic .value").inner_text().split("/")[0])
    assert 0 <= score <= 10
    assert card.query_selector(".aesthetic .value").get_attribute("title").startswith("raw ")
    overall = card.query_selector(".aesthetic .overall")  # the photo report: overall, five measures, notes
    assert 0 <= float(overall.get_attribute("data-overall")) <= 100 and "451×300 px" in overall.inner_text()
    measures = card.query_selector_all(".aesthetic .bars li")
    assert [li.get_attribute("data-name") for li in measures] == [
        "sharpness", "exposure", "resolution", "rule of thirds", "visual interest"]
    assert all(0 <= float(li.get_attribute("data-p")) <= 1 and li.inner_text().endswith("/ 10") for li in measures)
    assert card.query_selector_all(".aesthetic .notes li")
    assert card.query_selector(".zero-shot .state").get_attribute("data-status") == "skipped"
    img = card.query_selector("img")  # the photo is shown
    assert img.get_attribute("src").startswith("blob:") and img.bounding_box()["height"] > 50
    assert not [m for m in page.console_messages if m.startswith(("error", "pageerror"))]


def test_a_zero_shot_job_shows_its_status_and_sorted_bars_summing_to_one(page, ui_server, tmp_path) -> None:
    _open(page, ui_server)
    page.fill("#classes", "cat\ncoffee cup\nrocket")
    page.fill("#templates", "a photo of a {}.\na blurry photo of a {}.")
    page.set_input_files("#files", _write(tmp_path, "coffee.png", encode(photo("coffee"), "PNG")))
    (card,) = _finished_cards(page, 1)
    state = card.query_selector(".zero-shot .state")
    assert state.get_attribute("data-status") == "complete", state.inner_text()
    assert state.inner_text().startswith("job ") and state.inner_text().endswith("complete")
    probs = [float(li.get_attribute("data-p")) for li in card.query_selector_all(".zero-shot .bars li")]
    assert len(probs) == 3 and abs(sum(probs) - 1) < 1e-4 and probs == sorted(probs, reverse=True)
    assert {li.get_attribute("data-name") for li in card.query_selector_all(".zero-shot .bars li")} == {
        "cat", "coffee cup", "rocket"}


def test_three_photos_at_once_give_three_finished_cards(page, ui_server, tmp_path) -> None:
    _open(page, ui_server)
    files = [_write(tmp_path, f"{name}.jpg", encode(photo(name))) for name in ("chelsea", "astronaut", "rocket")]
    page.set_input_files("#files", files)
    cards = _finished_cards(page, 3)
    assert len(cards) == 3
    for card in cards:
        assert card.query_selector(".species .state").get_attribute("data-status") == "done"
        assert card.query_selector(".aesthetic .state").get_attribute("data-status") == "done"
        assert card.query_selector(".zero-shot .state").get_attribute("data-status") == "complete"


def test_a_gif_shows_the_415_detail_on_its_own_card_only(page, ui_server, tmp_path) -> None:
    _open(page, ui_server)
    page.fill("#classes", "")
    gif = _write(tmp_path, "cat.gif", encode(photo("chelsea"), "GIF"))
    jpeg = _write(tmp_path, "cat.jpg", encode(photo("chelsea")))
    page.set_input_files("#files", [gif, jpeg])
    cards = {c.query_selector(".name").inner_text().split(" ")[0]: c for c in _finished_cards(page, 2)}
    detail = httpx.post(f"{ui_server.url}/classify", content=Path(gif).read_bytes(), timeout=60).json()["detail"]
    species = cards["cat.gif"].query_selector(".species .state")
    assert species.get_attribute("data-status") == "error"
    assert detail in species.inner_text() and "415" in species.inner_text()
    assert cards["cat.jpg"].query_selector(".species .state").get_attribute("data-status") == "done"


def test_behind_an_api_key_the_page_asks_for_it_once_and_then_works(page, keyed_server, tmp_path) -> None:
    page.goto(f"{keyed_server.url}/ui")
    page.wait_for_selector("#key-form:not([hidden])")  # the models route answered 401
    page.fill("#key", API_KEY)
    page.click("#key-form button")
    page.locator("#model option[value]:not([value=''])").first.wait_for(state="attached")
    page.fill("#classes", "cat, dog")
    page.set_input_files("#files", _write(tmp_path, "chelsea.jpg", encode(photo("chelsea"))))
    (card,) = _finished_cards(page, 1)
    assert card.query_selector(".zero-shot .state").get_attribute("data-status") == "complete"
    assert card.query_selector(".species .state").get_attribute("data-status") == "done"
    assert page.is_hidden("#key-form")
    page.reload()  # the key is kept for the tab: no second prompt
    _open(page, keyed_server)
    assert page.is_hidden("#key-form")


def test_the_page_and_its_assets_load_without_the_key_and_from_this_server_only(keyed_server) -> None:
    html = httpx.get(f"{keyed_server.url}/ui", timeout=10)
    assert html.status_code == 200 and html.headers["content-type"].startswith("text/html")
    for asset in ("/ui/ui.js", "/ui/ui.css"):
        assert httpx.get(f"{keyed_server.url}{asset}", timeout=10).status_code == 200
    assert "http://" not in html.text and "https://" not in html.text  # no CDN, works offline
    assert httpx.get(f"{keyed_server.url}/classify", timeout=10).status_code == 401  # the API still needs it


def test_the_start_up_log_points_to_the_page(ui_server) -> None:
    assert "Try it in a browser: open /ui" in Path(ui_server.log).read_text()


def test_searching_the_photos_on_the_page_orders_them_by_similarity_to_the_words(page, ui_server, tmp_path) -> None:
    """The order the page shows is the dot-product order of the service's own /embed/text and /embed answers."""
    import numpy as np

    names = ("chelsea", "astronaut", "rocket")
    _open(page, ui_server)
    page.fill("#classes", "")
    page.set_input_files("#files", [_write(tmp_path, f"{n}.jpg", encode(photo(n))) for n in names])
    _finished_cards(page, 3)
    page.locator("#search-model option[value='open-clip-vit-b32']").wait_for(state="attached")
    page.select_option("#search-model", "open-clip-vit-b32")
    page.fill("#query", "ein Astronaut im Raumanzug")
    page.click("#search button")
    page.locator("#search-state[data-status=done]").wait_for(timeout=DONE_MS)
    assert "3 photos ranked by open-clip-vit-b32" in page.inner_text("#search-state")
    assert "dev model" in page.inner_text("#search-state")
    shown = [card.query_selector(".name").inner_text().split(" ")[0] for card in page.query_selector_all(".card")]
    assert [c.get_attribute("data-rank") for c in page.query_selector_all(".card")] == ["1", "2", "3"]
    query = httpx.post(f"{ui_server.url}/embed/text", json={"model": "b32", "texts": ["ein Astronaut im Raumanzug"]},
                       timeout=60).json()["embeddings"][0]
    images = {f"{n}.jpg": httpx.post(f"{ui_server.url}/embed?model=b32", content=encode(photo(n)), timeout=60).json()
              ["embedding"] for n in names}
    assert shown == sorted(images, key=lambda n: -float(np.dot(images[n], query)))
    assert not [m for m in page.console_messages if m.startswith(("error", "pageerror"))]
