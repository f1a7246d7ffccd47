"""Species answers a person can trust, through a real ``bentoml serve``: lineage, common names, the roll-up and a
status on /classify and /classify/batch, and danactive/history's organism shape on /classify/organism.

danactive/history's backend (``apps/api/classifier_engine.py``, ``apps/api/taxonomy.py``, its route
``POST /classify/organism`` in ``apps/api/main.py`` and the types in ``src/models/classifier.ts``): the raw image as
the body, optional ``X-Photo-*`` metadata headers; the answer ``{"status", "model", "predictions": [{"taxonId",
"scientificName", "commonName", "kingdom", "family", "genus", "lineage": [strings], "score", "matchStrength"}],
"diagnostics"}`` with status identified | uncertain | not_organism and matchStrength strong | possible | weak.
"""

from __future__ import annotations

import json

import httpx
import pytest

from tests.conftest import encode, photo, shared_file

pytestmark = pytest.mark.integration

PHOTOS = ["chelsea", "coffee", "astronaut", "rocket"]
STATUSES = {"identified", "uncertain", "not_organism"}


def classify(server, name: str, top_k: int = 5) -> dict:
    response = httpx.post(f"{server.url}/classify?top_k={top_k}", content=encode(photo(name)), timeout=60)
    assert response.status_code == 200, response.text
    return response.json()


@pytest.fixture(scope="module")
def taxonomy_rows() -> dict[str, dict]:
    """The real taxonomy file's rows by species name (the test's point is that real data)."""
    rows = json.loads(shared_file("inat21/inat21_taxonomy.json").read_text())
    names = json.loads(shared_file("inat21/inat21_common_names_birder.json").read_text())
    for row, named in zip(rows, names):
        row["common"] = named.get("birder_common_name") or None
    return {row["name"]: row for row in rows}


def test_every_lineage_ends_in_its_species_and_agrees_with_the_taxonomy_file(server, taxonomy_rows) -> None:
    for name in PHOTOS:
        answer = classify(server, name, 10)
        assert answer["status"] in STATUSES
        for p in answer["predictions"]:
            row = taxonomy_rows[p["species"]]
            assert p["lineage"] == [row[r] for r in ("kingdom", "phylum", "class", "order", "family", "genus")] + [
                p["species"]]
            assert p["rank"] == "species" and p["common_name"] == row["common"]
        ranks = answer["ranks"]
        assert [r["rank"] for r in ranks] == ["genus", "family", "order", "class", "phylum", "kingdom"]
        for r in ranks:  # every best taxon is a real one of its rank
            assert any(row[r["rank"]] == r["name"] for row in taxonomy_rows.values())


@pytest.mark.parametrize("name", PHOTOS)
def test_top_k_1_still_gets_the_roll_up_over_all_classes(server, name: str) -> None:
    one, ten = classify(server, name, 1), classify(server, name, 10)
    assert len(one["predictions"]) == 1 and one["ranks"] == ten["ranks"] and one["rollup"] == ten["rollup"]
    assert one["status"] == ten["status"]
    scores = [r["score"] for r in one["ranks"]]
    assert scores == sorted(scores)  # a best genus lies in a family holding at least as much, and so on up
    assert scores[-1] > sum(p["score"] for p in ten["predictions"]) or scores[-1] == pytest.approx(1.0)
    rolled = one["rollup"]
    sure = [r for r in one["ranks"] if r["score"] >= 0.8]
    if one["predictions"][0]["score"] >= 0.8:
        assert rolled["rank"] == "species"
    elif sure:
        assert (rolled["rank"], rolled["name"], rolled["score"]) == (sure[0]["rank"], sure[0]["name"],
                                                                   sure[0]["score"])
        assert rolled["lineage"][-1] == rolled["name"]
    else:
        assert rolled is None


def test_the_batch_route_answers_what_classify_answers(server) -> None:
    files = [("images", (f"{n}.jpg", encode(photo(n)), "image/jpeg")) for n in PHOTOS[:3]]
    results = httpx.post(f"{server.url}/classify/batch?top_k=5", files=files, timeout=120).json()["results"]
    for name, got in zip(PHOTOS, results):
        single = classify(server, name)
        assert got["status"] == single["status"] and (got["rollup"] is None) == (single["rollup"] is None)
        for a, b in zip(got["ranks"] + [got["rollup"] or {}], single["ranks"] + [single["rollup"] or {}]):
            assert a.get("name") == b.get("name") and a.get("score") == pytest.approx(b.get("score"), abs=1e-5)
        assert [p["lineage"] for p in got["predictions"]] == [p["lineage"] for p in single["predictions"]]


@pytest.mark.parametrize("name", PHOTOS[:2])
def test_the_organism_route_answers_in_danactives_shape(server, name: str) -> None:
    headers = {"Content-Type": "image/jpeg", "X-Photo-City": "Tarangire%20%E2%80%94%20M%C5%8Dto",
               "X-Photo-Metadata-Encoding": "percent"}
    response = httpx.post(f"{server.url}/classify/organism", content=encode(photo(name)), headers=headers,
                          timeout=60)
    assert response.status_code == 200, response.text
    body = response.json()
    assert set(body) == {"status", "model", "predictions", "diagnostics"} and body["status"] in STATUSES
    assert set(body["model"]) == {"id", "revision", "taxonomy"} and body["model"]["id"].startswith("eva02-inat21:")
    assert len(body["predictions"]) == 5
    plain = classify(server, name, 5)
    for n, (p, q) in enumerate(zip(body["predictions"], plain["predictions"])):
        assert set(p) == {"taxonId", "scientificName", "commonName", "kingdom", "family", "genus", "lineage",
                          "score", "matchStrength"}
        assert p["scientificName"] == q["species"] and p["lineage"] == q["lineage"] and p["score"] == q["score"]
        assert (p["kingdom"], p["family"], p["genus"]) == (q["lineage"][0], q["lineage"][4], q["lineage"][5])
        assert p["taxonId"].startswith("inat21-") and p["matchStrength"] in {"strong", "possible", "weak"}
        assert (p["matchStrength"] == "strong") == (n == 0 and body["status"] == "identified")
    d = body["diagnostics"]
    assert d["candidateCount"] == 10_000 and d["metadataAvailable"] is True and d["metadataApplied"] is False
    assert d["topMargin"] == pytest.approx(plain["predictions"][0]["score"] - plain["predictions"][1]["score"])
    assert isinstance(d["topTwoSameFamily"], bool) and isinstance(d["topTwoSameGenus"], bool)
    assert 0 <= d["organismScore"] <= 1 and d["organismScore"] + d["nonOrganismScore"] == pytest.approx(1)


def test_the_organism_route_keeps_the_error_shape(server) -> None:
    response = httpx.post(f"{server.url}/classify/organism", content=b"not-an-image", timeout=60)
    assert response.status_code == 400 and response.json()["error"] == "invalid_image"
    empty = httpx.post(f"{server.url}/classify/organism", content=b"", timeout=60)
    assert empty.status_code == 400 and empty.json()["error"] == "empty_body"


def test_the_gate_answers_on_every_classification(server) -> None:
    """The gate runs on the aesthetic tower for every /classify (dev weights: the values mean nothing, but they
    are there and sum to one)."""
    answer = classify(server, "coffee")
    assert answer["gate"] is not None and answer["gate"]["organism"] + answer["gate"]["not_organism"] == (
        pytest.approx(1.0))
    assert (answer["status"] == "not_organism") == (answer["gate"]["not_organism"] >= 0.6)
