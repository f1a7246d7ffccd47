"""The save script registers complete, labelled store entries from every source, once."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import bentoml
import pytest
import timm
import torch

from engines.torch.classifier import load_species
from model_store.timm_classifier import save_species
from model_store import SaveError, sha256_file
from tests.conftest import HEAD_TAG, REAL_HEAD, ROOT


def test_dev_model_is_complete_and_marked_dev(species_dev_model) -> None:
    model = species_dev_model
    assert str(model.tag) == "eva02-inat21:dev"
    assert model.info.labels["variant"] == "dev"
    meta = model.info.metadata
    assert meta["architecture"] == "eva02_tiny_patch14_224"
    assert meta["num_classes"] == 10_000
    assert meta["sha256"] == sha256_file(Path(model.path) / "model.safetensors")
    assert {"source", "revision", "licence"} <= meta.keys()
    expected = timm.data.resolve_data_config({}, pretrained_cfg=timm.get_pretrained_cfg("eva02_tiny_patch14_224").to_dict())
    assert meta["preprocess"]["input_size"] == list(expected["input_size"])
    assert meta["preprocess"]["crop_pct"] == expected["crop_pct"]
    assert meta["preprocess"]["interpolation"] == expected["interpolation"]
    names = json.loads((Path(model.path) / "config.json").read_text())["label_names"]
    assert len(names) == len(set(names)) == 10_000


def test_dev_model_carries_the_real_inat21_names_in_index_order(species_dev_model, inat21_labels) -> None:
    names = json.loads((Path(species_dev_model.path) / "config.json").read_text())["label_names"]
    reference = json.loads(inat21_labels.read_text())
    assert names[3867] == reference["3867"] == "Agelaius phoeniceus"
    assert names == [reference[str(i)] for i in range(10_000)]


def test_dev_model_without_labels_has_numbered_dev_class_names(tmp_path: Path) -> None:
    env = {**os.environ, "BENTOML_HOME": str(tmp_path)}
    code = ("import json, pathlib; from model_store.timm_classifier import save_species; m = save_species(dev=True); "
            "print(json.dumps(json.loads((pathlib.Path(m.path) / 'config.json').read_text())['label_names'][:2]))")
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert json.loads(proc.stdout.splitlines()[-1]) == ["dev class 0000", "dev class 0001"]


def test_saving_again_is_a_no_op_unless_forced(species_dev_model, tmp_path: Path) -> None:
    names = json.loads((Path(species_dev_model.path) / "config.json").read_text())["label_names"]
    first = species_dev_model.info.creation_time
    again = save_species(dev=True)
    assert again.tag == species_dev_model.tag and again.info.creation_time == first

    label_file = tmp_path / "labels.json"
    label_file.write_text(json.dumps({str(i): n for i, n in enumerate(names)}))
    forced = save_species(dev=True, labels=label_file, force=True)
    assert forced.info.creation_time > first
    assert forced.info.metadata["sha256"] == species_dev_model.info.metadata["sha256"]  # seeded: same weights


def _tiny_classifier(num_classes: int, seed: int) -> torch.nn.Module:
    torch.manual_seed(seed)
    return timm.create_model("eva02_tiny_patch14_224", pretrained=False, num_classes=num_classes).eval()


def _same_logits(original: torch.nn.Module, stored: bentoml.Model) -> None:
    loaded, _, cfg = load_species(Path(stored.path), torch.device("cpu"))
    x = torch.randn(2, 3, cfg.height, cfg.width, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        torch.testing.assert_close(loaded(x), original(x), rtol=0, atol=1e-5)


def test_from_dir_round_trip_keeps_logits(tmp_path: Path) -> None:
    original = _tiny_classifier(10_000, seed=1)
    names = [f"species {i}" for i in range(10_000)]
    timm.models.save_for_hf(original, tmp_path, model_config={"label_names": names}, safe_serialization=True)

    stored = save_species(from_dir=tmp_path)

    assert stored.tag.version.startswith("local-")
    assert stored.info.labels["variant"] == "release"
    assert stored.info.metadata["source"] == f"local-dir:{tmp_path}"
    assert stored.info.metadata["licence"] == "cc-by-nc-4.0"
    _same_logits(original, stored)
    assert save_species(from_dir=tmp_path).info.creation_time == stored.info.creation_time


def test_from_dir_accepts_a_bare_pytorch_bin_with_labels(tmp_path: Path) -> None:
    original = _tiny_classifier(12, seed=2)
    torch.save(original.state_dict(), tmp_path / "pytorch_model.bin")
    labels = tmp_path / "labels.json"
    labels.write_text(json.dumps({str(i): f"taxon {i}" for i in range(12)}))

    stored = save_species(from_dir=tmp_path, labels=labels, arch="eva02_tiny_patch14_224")

    assert stored.info.metadata["num_classes"] == 12
    _same_logits(original, stored)


def test_from_dir_without_weights_says_what_is_missing(tmp_path: Path) -> None:
    with pytest.raises(SaveError, match="model.safetensors nor pytorch_model.bin"):
        save_species(from_dir=tmp_path)


def test_labels_file_with_wrong_count_is_rejected(tmp_path: Path) -> None:
    timm.models.save_for_hf(_tiny_classifier(5, seed=3), tmp_path, safe_serialization=True)
    labels = tmp_path / "labels.json"
    labels.write_text(json.dumps({str(i): f"taxon {i}" for i in range(4)}))
    with pytest.raises(SaveError, match='keys "0".."4"'):
        save_species(from_dir=tmp_path, labels=labels)


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _silent_server() -> tuple[int, threading.Event]:
    """A loopback server that accepts connections and never answers."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    stop = threading.Event()

    def hold() -> None:
        held = []
        server.settimeout(0.5)
        while not stop.is_set():
            try:
                held.append(server.accept()[0])
            except OSError:
                continue
        for conn in held:
            conn.close()
        server.close()

    threading.Thread(target=hold, daemon=True).start()
    return server.getsockname()[1], stop


@pytest.mark.parametrize("kind", ["refused", "silent"])
def test_unreachable_hub_fails_fast_naming_offline_options(tmp_path: Path, kind: str) -> None:
    if kind == "refused":
        port, stop = _closed_port(), None
    else:
        port, stop = _silent_server()
    env = {**os.environ, "HF_ENDPOINT": f"http://127.0.0.1:{port}", "BENTOML_HOME": str(tmp_path), "HF_HOME": str(tmp_path)}
    start = time.monotonic()
    try:
        proc = subprocess.run(
            [sys.executable, "scripts/save_models.py", "species"],
            cwd=ROOT, env=env, capture_output=True, text=True, timeout=120,
        )
    finally:
        if stop is not None:
            stop.set()
    elapsed = time.monotonic() - start
    assert proc.returncode == 2, proc.stderr
    assert "Cannot reach the Hugging Face Hub" in proc.stderr
    assert "--from-dir" in proc.stderr and "--dev" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert proc.stdout == ""
    assert elapsed < 30, f"took {elapsed:.1f}s"


def test_save_all_dev_prints_the_settings_the_service_reads(tmp_path: Path) -> None:
    """With the real head where ../shared has it; offline (no head to download) the dev head."""
    env = {**os.environ, "BENTOML_HOME": str(tmp_path)}
    head = ["--head", str(REAL_HEAD)] if REAL_HEAD.is_file() else []
    proc = subprocess.run([sys.executable, "scripts/save_models.py", "all", "--dev", *head],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    settings = dict(line.split("=", 1) for line in proc.stdout.splitlines())
    assert settings == {
        "SPECIES_MODEL": "eva02-inat21:dev",
        "AESTHETIC_CLIP_MODEL": "clip-vit-b16-openai:dev",
        "AESTHETIC_HEAD_MODEL": HEAD_TAG,
        "ZERO_SHOT_L14_MODEL": "clip-vit-large-patch14:dev",
        "ZERO_SHOT_B32_MODEL": "open-clip-vit-b32:dev",
        "ZERO_SHOT_B32_LAION2B_MODEL": "open-clip-vit-b32-laion2b:dev",
    }
    assert sorted(p.name for p in (tmp_path / "models").iterdir()) == sorted(t.split(":")[0] for t in settings.values())


def test_multilingual_entry_holds_its_tokenizer_and_loads_with_the_hub_off(zero_shot_models) -> None:
    entry = zero_shot_models["open-clip-vit-b32"]
    meta = entry.info.metadata
    assert meta["architecture"] == "xlm-roberta-base-ViT-B-32" and entry.info.labels["variant"] == "dev"
    assert {"config.json", "tokenizer.json", "tokenizer_config.json"} <= set(meta["tokenizer"]["files"])
    code = ("import sys, pathlib, torch; from engines.torch.clip import load_zero_shot; "
            "m, tok, cfg, s = load_zero_shot(pathlib.Path(sys.argv[1]), torch.device('cpu')); "
            "print(m.encode_text(tok(['кошка', '猫', 'chat'])).shape)")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_HOME": "/nonexistent"}
    proc = subprocess.run([sys.executable, "-c", code, entry.path], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip().endswith("torch.Size([3, 512])")


def test_the_dev_model_stores_its_taxonomy_and_a_misordered_file_is_refused(tmp_path: Path) -> None:
    """In a store of its own: a dev model saves a dev taxonomy (labelled dev) without a file, and the save step
    refuses a taxonomy file whose classes are not the model's, naming the first mismatch, and a refused --force
    keeps the stored model as it was."""
    env = {**os.environ, "BENTOML_HOME": str(tmp_path / "home")}
    code = ("import json; from model_store.timm_classifier import save_species; from model_store import taxonomy;"
            "m = save_species(dev=True); t = taxonomy.read_stored(m.path);"
            "print(json.dumps([m.info.metadata['taxonomy'], list(t.lineages[21])]))")
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    meta, lineage = json.loads(proc.stdout.splitlines()[-1])
    assert meta["dev"] is True and meta["file"] == "taxonomy.json" and meta["ranks"][-1] == "genus"
    assert lineage == ["Devkingdom", "Devphylum0", "Devclass0", "Devorder0", "Devfamily1", "Devgenus4"]
    when = "import bentoml; m = bentoml.models.get('eva02-inat21:dev'); print(m.info.creation_time.isoformat())"
    created = subprocess.run([sys.executable, "-c", when], cwd=ROOT, env=env, capture_output=True, text=True,
                             timeout=300).stdout.strip()
    wrong = tmp_path / "taxonomy.json"
    wrong.write_text(json.dumps([{"id": 0, "name": "Lumbricus terrestris", "kingdom": "Animalia"}]))
    bad = subprocess.run([sys.executable, "scripts/save_models.py", "species", "--dev", "--force", "--taxonomy",
                          str(wrong)], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert bad.returncode == 2 and "has 1 classes; the model has 10000" in bad.stderr
    assert "eva02-inat21:dev: not replaced; the stored one is kept" in bad.stderr
    after = subprocess.run([sys.executable, "-c", when], cwd=ROOT, env=env, capture_output=True, text=True,
                           timeout=300).stdout.strip()
    assert created and after == created  # the same entry, not a new save
    assert sorted(p.name for p in (tmp_path / "home").iterdir() if p.name.startswith("replacing-")) == []
