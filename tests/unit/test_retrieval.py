"""Retrieval without a server: text limits, truncation by each tokenizer, the job result views, the gateway's
/embed/text with a fake runner, and the search example's ranking."""

from __future__ import annotations

import asyncio
import json
from types import SimpleNamespace

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from serving.errors import ServiceError
from tests.unit.test_gateway import make_ctx


def test_texts_are_checked_in_number_length_and_content() -> None:
    from capabilities.retrieval import check_texts

    assert check_texts(["a cat", "写真"]) == ["a cat", "写真"]
    for bad, what in (([], "Give 1 to 64"), (["ok"] * 65, "got 65"), (["ok", " \n"], "Text 1 is empty"),
                      (["x" * 2001], "2001 characters")):
        with pytest.raises(ServiceError, match=what) as info:
            check_texts(bad)
        assert info.value.status == 400 and info.value.error == "invalid_texts"


@pytest.mark.parametrize("name", ["clip-vit-large-patch14", "open-clip-vit-b32"])
def test_truncation_is_reported_exactly_past_the_tokenizers_context(zero_shot_models, name: str) -> None:
    """CLIP's BPE (ViT-L/14) and XLM-R's SentencePiece (multilingual ViT-B/32): a text whose tokens, with the start
    and end tokens, fill the context is whole; one token more is cut."""
    import engines
    from model_store import open_entry

    engine = engines.load(open_entry(name), engines.EngineOptions(engine="torch"))
    fits = next(" ".join(["cat"] * n) for n in range(200, 0, -1) if not engine.truncated([" ".join(["cat"] * n)])[0])
    words = len(fits.split())
    assert engine.truncated(["a cat", fits, fits + " cat"]) == [False, False, True]
    tokens = engine.tokenizer([fits + " cat"])
    assert tokens.shape[1] == engine.context_length == 77 and words > 30


def test_the_job_result_views_follow_fes() -> None:
    from capabilities.retrieval import EmbeddingTask

    stored = {"embedding": [[0.6, 0.8], [1.0, 0.0]], "truncated": [False, True]}
    per_input = EmbeddingTask.view(stored, batched=True, per_image=True)
    assert [r.model_dump(exclude_none=True) for r in per_input] == [{"embedding": [0.6, 0.8]},
                                                                   {"embedding": [1.0, 0.0], "truncated": True}]
    assert EmbeddingTask.view(stored, True, False).model_dump(exclude_none=True) == stored
    one = EmbeddingTask.view({"embedding": [[0.6, 0.8]]}, batched=False, per_image=False)
    assert one.model_dump(exclude_none=True) == {"embedding": [0.6, 0.8]}


class FakeClip:
    """A CLIP runner: text i embeds to the unit vector e_(len % 4); texts over 10 characters are 'cut'."""

    def __init__(self, short_by: int = 0) -> None:
        self.short_by, self.calls = short_by, []
        self.to_async = SimpleNamespace(embed_texts=self.embed_texts, truncated=self.truncated, info=self.info)

    async def embed_texts(self, texts: list[str]) -> np.ndarray:
        self.calls.append(list(texts))
        return np.eye(4, dtype=np.float32)[[len(t) % 4 for t in texts]][: len(texts) - self.short_by]

    async def truncated(self, texts: list[str]) -> list[bool]:
        return [len(t) > 10 for t in texts]

    async def info(self) -> dict:
        return {"engine": "torch", "precision": "fp32", "context_length": 77}


@pytest.fixture
def gateway(species_dev_model, aesthetic_models, zero_shot_models):
    from service import Gateway

    return Gateway.inner()


def test_embed_text_answers_one_vector_per_text_with_its_truncation_and_the_model(gateway) -> None:
    gateway.zero_shot_l14 = runner = FakeClip()
    answer = asyncio.run(gateway.embed_text("l14", ["cat", "a very long text"], ctx=(ctx := make_ctx())))
    assert answer.embeddings == [[0, 0, 0, 1], [1, 0, 0, 0]] and answer.dim == 4
    assert answer.truncated == [False, True] and answer.context_length == 77
    assert answer.model.tag == "clip-vit-large-patch14:dev" and answer.model.engine == "torch"
    assert ctx.response.headers["X-Model-Tag"] == "clip-vit-large-patch14:dev" and runner.calls == [
        ["cat", "a very long text"]]


def test_a_runner_answering_the_wrong_count_is_503_not_a_misaligned_answer(gateway) -> None:
    gateway.zero_shot_b32 = FakeClip(short_by=1)
    response = asyncio.run(gateway.embed_text("b32", ["cat", "dog"], ctx=make_ctx()))
    assert response.status_code == 503 and json.loads(response.body)["error"] == "inference_failed"


def test_search_ranks_rows_by_similarity_and_skips_rows_without_an_embedding(tmp_path) -> None:
    """A tiny synthetic retrieval: each 'image' is the unit vector of its text, so a text finds its image first."""
    from bulk.search import load_embeddings, rank

    vectors = np.eye(4, dtype=np.float32)
    column = pa.FixedSizeListArray.from_arrays(pa.array(vectors.ravel()), 4)
    table = pa.table({"path": ["cat.jpg", "dog.jpg", "owl.jpg", "sun.jpg"], "embedding_x": column})
    pq.write_table(table, tmp_path / "part-0.parquet")
    broken = pa.table({"path": ["bad.jpg"], "embedding_x": pa.array([None], column.type)})
    pq.write_table(broken, tmp_path / "part-1.parquet")
    paths, found = load_embeddings(str(tmp_path), "embedding_x")
    assert paths == ["cat.jpg", "dog.jpg", "owl.jpg", "sun.jpg"] and found.shape == (4, 4)
    for i, path in enumerate(paths):
        query = vectors[i] * 0.9 + vectors[(i + 1) % 4] * np.sqrt(1 - 0.81)  # near its own, then the next
        hits = rank(found, query, 2)
        assert [paths[r] for r, _ in hits] == [path, paths[(i + 1) % 4]] and hits[0][1] == pytest.approx(0.9)
    with pytest.raises(ValueError, match="no column embedding_y"):
        load_embeddings(str(tmp_path), "embedding_y")
