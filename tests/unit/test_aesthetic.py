"""Aesthetic models: the real LAION head loads strictly, bad heads are refused, CLIP towers store and load."""

from __future__ import annotations

import http.server
import threading
from pathlib import Path

import open_clip
import pytest
import torch
from safetensors.torch import load_file

from engines.torch.clip import CONFIG_FILE, WEIGHTS_FILE, load_clip
from model_store.linear_head import HEAD_SHA256, fetch_head, read_head_file, save_head
from model_store.clip import AESTHETIC_CLIP, ClipSpec, make_dev_folder, save_clip
from model_store import SaveError, sha256_file


def test_real_laion_head_loads_strictly(laion_head: Path) -> None:
    from engines.torch.head import load_head

    head = load_head(read_head_file(laion_head))
    assert head.in_features == 512 and head.out_features == 1
    assert head.weight.norm().item() == pytest.approx(28.197, abs=1e-3)  # figures from the file's SOURCE.md
    assert head.bias.item() == pytest.approx(3.150602, abs=1e-6)


@pytest.mark.parametrize(
    "state,fragment",
    [
        ({"weight": torch.zeros(1, 768), "bias": torch.zeros(1)}, "Linear(512, 1)"),  # the ViT-L/14 head
        ({"weight": torch.zeros(1, 512)}, "Linear(512, 1)"),
        ({"weight": torch.zeros(1, 512), "bias": torch.zeros(1), "extra": torch.zeros(1)}, "Linear(512, 1)"),
        ({"layers.0.weight": torch.zeros(1, 512), "layers.0.bias": torch.zeros(1)}, "Linear(512, 1)"),
    ],
)
def test_mismatched_head_files_are_refused(tmp_path: Path, state: dict, fragment: str) -> None:
    path = tmp_path / "head.pth"
    torch.save(state, path)
    with pytest.raises(SaveError, match=fragment.replace("(", r"\(").replace(")", r"\)")):
        save_head(path)


def test_head_file_that_is_not_a_state_dict_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "head.pth"
    torch.save(torch.nn.Linear(512, 1), path)  # a pickled module: refused by weights_only loading
    with pytest.raises(SaveError, match="not a PyTorch state dict"):
        save_head(path)


def test_stored_head_records_provenance(aesthetic_models, laion_head: Path) -> None:
    _, head = aesthetic_models
    meta = head.info.metadata
    assert str(head.tag) == f"laion-aesthetic-vit-b16:{HEAD_SHA256[:12]}"
    assert meta["sha256"] == HEAD_SHA256 == sha256_file(laion_head)
    assert meta["canonical"] is True and "6d122adad522ab246644d9dc1c6d7a3810ee255f" in meta["source"]
    stored = load_file(str(Path(head.path) / "head.safetensors"))
    original = torch.load(laion_head, weights_only=True)
    assert all(torch.equal(stored[k], original[k]) for k in ("weight", "bias"))


class _OneFile(http.server.BaseHTTPRequestHandler):
    body = b""

    def do_GET(self) -> None:  # noqa: N802
        self.send_response(200)
        self.send_header("Content-Length", str(len(self.body)))
        self.end_headers()
        self.wfile.write(self.body)

    def log_message(self, *args) -> None:
        pass


def _serve(body: bytes) -> tuple[str, http.server.HTTPServer]:
    handler = type("Handler", (_OneFile,), {"body": body})
    server = http.server.HTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return f"http://127.0.0.1:{server.server_port}/sa_0_4_vit_b_16_linear.pth", server


def test_download_is_checked_against_the_pinned_sha256(tmp_path: Path, laion_head: Path) -> None:
    url, server = _serve(laion_head.read_bytes())
    try:
        path = fetch_head(tmp_path / "head.pth", url=url)
    finally:
        server.shutdown()
    assert sha256_file(path) == HEAD_SHA256


def test_download_with_wrong_bytes_is_refused_and_removed(tmp_path: Path) -> None:
    url, server = _serve(b"<html>rate limited</html>")
    try:
        with pytest.raises(SaveError, match="expected 8ad3923d"):
            fetch_head(tmp_path / "head.pth", url=url)
    finally:
        server.shutdown()
    assert list(tmp_path.iterdir()) == []


def test_unreachable_download_names_the_offline_option(tmp_path: Path) -> None:
    with pytest.raises(SaveError, match="--head PATH"):
        fetch_head(tmp_path / "head.pth", url="http://127.0.0.1:1/sa_0_4_vit_b_16_linear.pth")


def test_dev_clip_keeps_both_towers_with_512_outputs(aesthetic_models) -> None:
    clip, _ = aesthetic_models
    assert str(clip.tag) == "clip-vit-b16-openai:dev" and clip.info.labels["variant"] == "dev"
    assert clip.info.metadata["towers"] == ["visual", "text"] and clip.info.metadata["embed_dim"] == 512
    keys = load_file(str(Path(clip.path) / WEIGHTS_FILE)).keys()
    assert any(k.startswith("visual.") for k in keys) and any(k.startswith("transformer.") for k in keys)
    model, cfg = load_clip(Path(clip.path), torch.device("cpu"), ["visual", "text"])
    assert model.encode_image(torch.zeros(2, 3, cfg.height, cfg.width)).shape == (2, 512)


def test_a_dev_clip_saved_with_fewer_towers_than_the_catalog_needs_is_saved_again(tmp_path: Path) -> None:
    image_only = ClipSpec("clip-towers-test", "ViT-B-16", "openai", "MIT", ("visual",))
    assert save_clip(image_only, dev=True).info.metadata["towers"] == ["visual"]
    both = ClipSpec("clip-towers-test", "ViT-B-16", "openai", "MIT", ("visual", "text"))
    again = save_clip(both, dev=True)
    assert again.info.metadata["towers"] == ["visual", "text"] and str(again.tag) == "clip-towers-test:dev"
    assert save_clip(both, dev=True).info.metadata["sha256"] == again.info.metadata["sha256"]  # kept from now on


def test_clip_from_dir_round_trip_keeps_embeddings(tmp_path: Path) -> None:
    spec = ClipSpec("clip-roundtrip-test", "ViT-B-16", "openai", "MIT", ("visual",))
    src = tmp_path / "src"
    src.mkdir()
    make_dev_folder(spec, src)
    torch.manual_seed(7)  # different weights from the dev model
    original = open_clip.create_model(f"local-dir:{src}", load_weights=False).eval()
    from safetensors.torch import save_file

    save_file({k: v.contiguous() for k, v in original.state_dict().items()}, str(src / WEIGHTS_FILE))

    stored = save_clip(spec, from_dir=src)

    assert stored.tag.version.startswith("local-") and stored.info.labels["variant"] == "release"
    loaded, cfg = load_clip(Path(stored.path), torch.device("cpu"), ["visual"])
    x = torch.randn(2, 3, cfg.height, cfg.width, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        torch.testing.assert_close(loaded.encode_image(x), original.encode_image(x), rtol=0, atol=1e-5)


def test_clip_from_dir_without_weights_says_so(tmp_path: Path) -> None:
    (tmp_path / CONFIG_FILE).write_text("{}")
    with pytest.raises(SaveError, match="nothing to import"):
        save_clip(AESTHETIC_CLIP, from_dir=tmp_path)


def test_loader_refuses_weights_for_other_towers(aesthetic_models, tmp_path: Path) -> None:
    clip, _ = aesthetic_models
    with pytest.raises(RuntimeError, match="do not match towers"):
        load_clip(Path(clip.path), torch.device("cpu"), ["visual"])


def test_dev_save_without_any_head_registers_the_labelled_dev_head(tmp_path: Path, monkeypatch, caplog) -> None:
    import model_store.linear_head as aesthetic_head
    from engines.torch.head import load_head

    monkeypatch.setattr(aesthetic_head, "DEFAULT_HEAD_PATH", tmp_path / "absent" / "sa_0_4_vit_b_16_linear.pth")
    with caplog.at_level("WARNING"):
        head = save_head(dev=True)  # no --head, nothing at the default path, the download is refused (conftest)
    assert str(head.tag) == "laion-aesthetic-vit-b16:dev" and head.info.labels["variant"] == "dev"
    (warning,) = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert "DEV head" in warning and "\n" not in warning
    state = load_file(str(Path(head.path) / "head.safetensors"))
    assert all(torch.equal(state[k], v) for k, v in aesthetic_head.dev_head_state().items())  # seeded
    scores = load_head(state)(torch.nn.functional.normalize(torch.randn(256, 512), dim=-1)).squeeze(-1)
    assert 3 < scores.mean().item() < 7 and scores.std().item() > 0.5  # spread over the 0-10 scale


def test_without_dev_a_head_that_cannot_be_had_is_an_error(tmp_path: Path, monkeypatch) -> None:
    import model_store.linear_head as aesthetic_head

    monkeypatch.setattr(aesthetic_head, "DEFAULT_HEAD_PATH", tmp_path / "absent" / "sa_0_4_vit_b_16_linear.pth")
    with pytest.raises(SaveError, match="--head PATH"):
        save_head()


def test_dev_save_still_uses_a_head_it_is_given(tmp_path: Path) -> None:
    path = tmp_path / "head.pth"
    torch.save({"weight": torch.full((1, 512), 0.5), "bias": torch.zeros(1)}, path)
    head = save_head(path, dev=True)
    assert head.info.labels["variant"] == "release" and head.tag.version == sha256_file(path)[:12]


def test_a_dev_head_makes_the_score_answer_dev(aesthetic_models, monkeypatch) -> None:
    import dataclasses

    import capabilities.aesthetic
    import serving.settings
    from model_store.linear_head import save_dev_head

    dev = save_dev_head()
    settings = serving.settings.settings
    tags = {**settings.model_tags, "laion-aesthetic-vit-b16": str(dev.tag)}
    monkeypatch.setattr(serving.settings, "settings", dataclasses.replace(settings, model_tags=tags))
    info = capabilities.aesthetic.Aesthetic(lambda key: None, {}).info
    assert info.model_dump() == {"tag": "clip-vit-b16-openai:dev", "variant": "dev",
                                 "head": "laion-aesthetic-vit-b16:dev", "head_variant": "dev", "precision": None,
                                 "engine": None}


def test_multilingual_from_dir_import_keeps_embeddings_and_needs_its_tokenizer(tmp_path: Path) -> None:
    from engines.torch.clip import create_open_clip
    from engines.torch.clip import load_zero_shot
    from model_store.clip import ZERO_SHOT_CLIPS

    spec = ClipSpec("clip-xlmr-roundtrip-test", "xlm-roberta-base-ViT-B-32", "laion5b_s13b_b90k", "MIT",
                    ("visual", "text"), hf_text=ZERO_SHOT_CLIPS["open-clip-vit-b32"].hf_text)
    src = tmp_path / "src"
    src.mkdir()
    make_dev_folder(spec, src)  # an open_clip folder with the XLM-R config and tokenizer beside the weights
    original = create_open_clip(src).eval()
    stored = save_clip(spec, from_dir=src)
    assert {"config.json", "tokenizer.json"} <= set(stored.info.metadata["tokenizer"]["files"])
    loaded, tokenizer, _, _ = load_zero_shot(Path(stored.path), torch.device("cpu"))
    tokens = tokenizer(["кошка", "猫", "a photo of a cat."])
    with torch.inference_mode():
        torch.testing.assert_close(loaded.encode_text(tokens), original.encode_text(tokens), rtol=0, atol=1e-5)

    (src / "tokenizer.json").unlink()
    with pytest.raises(SaveError, match="tokenizer.json"):
        save_clip(spec, from_dir=src, force=True)
