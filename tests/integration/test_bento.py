"""The Bento: `make bento` builds a versioned, complete Bento that exports, imports and serves elsewhere."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import uuid
from pathlib import Path

import bentoml
import httpx
import pytest
import yaml

from tests.conftest import (HEAD_TAG, REAL_COMMON_NAMES, REAL_HEAD, REAL_LABELS, REAL_TAXONOMY, ROOT, encode, photo,
                            served_engine, served_precision)
from tests.integration.conftest import BENTOML, start_server, stop_server

pytestmark = pytest.mark.integration

VERSION = re.search(r'^version = "(.+)"', (ROOT / "pyproject.toml").read_text(), re.M).group(1)
MODELS = {"eva02-inat21:dev", "clip-vit-b16-openai:dev", HEAD_TAG, "clip-vit-large-patch14:dev",
          "open-clip-vit-b32:dev", "open-clip-vit-b32-laion2b:dev"}
RUNNERS = {"SpeciesRunner", "AestheticRunner", "ClipL14Runner", "OpenClipB32Runner", "OpenClipB32Laion2bRunner"}


@pytest.fixture(scope="module")
def bento(species_dev_model, aesthetic_models, zero_shot_models) -> bentoml.Bento:
    """Built as a user would: with the real head and class names where ../shared has them, else offline."""
    build_id = f"t{uuid.uuid4().hex[:8]}"
    data = [f"{name}={path if path.is_file() else ''}" for name, path in
            (("HEAD", REAL_HEAD), ("LABELS", REAL_LABELS), ("TAXONOMY", REAL_TAXONOMY),
             ("COMMON_NAMES", REAL_COMMON_NAMES))]
    proc = subprocess.run(
        ["make", "bento", "DEV=1", f"BUILD_ID={build_id}", f"PY={sys.executable}",
         f"VENV={Path(sys.executable).parent.parent}", *data],
        cwd=ROOT, capture_output=True, text=True, timeout=600,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    assert f"Built vision-serve:{VERSION}-{build_id}" in proc.stdout
    return bentoml.get(f"vision-serve:{VERSION}-{build_id}")


def test_tag_carries_the_project_version_and_a_build_id(bento) -> None:
    assert bento.tag.name == "vision-serve"
    assert re.fullmatch(rf"{re.escape(VERSION)}-t[0-9a-f]{{8}}", bento.tag.version)


def served_modules() -> set[str]:
    """The project's own files a server process imports: service.py, everything it pulls in, and the engines
    its runners load on demand."""
    code = """
import importlib, pathlib, sys
import engines, service
for loader in engines._LOADERS.values():
    importlib.import_module(loader.partition(":")[0])
root = pathlib.Path.cwd().resolve()
files = {pathlib.Path(m.__file__).resolve() for m in list(sys.modules.values()) if getattr(m, "__file__", None)}
print("\\n".join(sorted(str(f.relative_to(root)) for f in files if f.is_relative_to(root) and f.is_file() and ".venv" not in f.parts)))
"""
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return set(proc.stdout.split())


def test_bento_holds_the_code_and_references_every_model(bento) -> None:
    src = Path(bento.path) / "src"
    modules = served_modules()
    assert {"service.py", "catalog.py", "runners/factory.py", "engines/torch/clip.py", "model_store/entry.py",
            "jobs/worker.py"} <= modules
    missing = sorted(name for name in modules | {"README.md"} if not (src / name).is_file())
    assert not missing, f"bentofile.yaml's include leaves out {missing}"
    assert not (src / "tests").exists() and not (src / ".venv").exists()
    manifest = yaml.safe_load((Path(bento.path) / "bento.yaml").read_text())
    services = {s["name"]: s for s in manifest["services"]}
    assert set(services) == RUNNERS | {"VisionGateway"}
    assert {m["tag"] for s in manifest["services"] for m in s["models"]} == MODELS
    for runner in RUNNERS:  # built on a CPU machine, still declaring its share of one GPU
        assert services[runner]["config"]["resources"] == {"gpu": 0.2}


def test_openapi_spec_lists_the_public_apis(bento) -> None:
    spec = yaml.safe_load((Path(bento.path) / "apis" / "openapi.yaml").read_text())
    paths = set(spec["paths"])
    assert {"/classify", "/score", "/zero_shot", "/submit_zero_shot", "/submit_zero_shot_batch", "/zero_shot_job",
            "/zero_shot_models", "/cancel_zero_shot_job", "/scores", "/readyz", "/livez"} <= paths


def test_container_file_installs_cuda_torch_and_serves_on_3000(bento, tmp_path: Path) -> None:
    dockerfile = tmp_path / "Dockerfile"
    bentoml.container.get_containerfile(bento.tag, output_path=str(dockerfile))
    text = dockerfile.read_text()
    assert "EXPOSE 3000" in text and "entrypoint.sh" in text
    assert "requirements.txt" in text and "NVIDIA_DRIVER_CAPABILITIES" in text
    requirements = (Path(bento.path) / "env" / "python" / "requirements.txt").read_text()
    assert re.search(r"^torch==2\.14\.", requirements, re.M)
    assert re.search(r"^(nvidia-cuda-runtime|cuda-bindings|nvidia-cublas)", requirements, re.M), "no CUDA runtime"
    entrypoint = (Path(bento.path) / "env" / "docker" / "entrypoint.sh").read_text()
    assert 'exec bentoml "$@" "$BENTO_PATH"' in entrypoint


def test_exported_bento_imports_and_serves_in_another_home(bento, tmp_path: Path) -> None:
    archive = tmp_path / "vision-serve.tar"
    subprocess.run([BENTOML, "export", str(bento.tag), str(archive)], check=True, capture_output=True, timeout=300)
    home = tmp_path / "elsewhere"
    env = {**os.environ, "BENTOML_HOME": str(home)}
    subprocess.run([BENTOML, "import", str(archive)], check=True, capture_output=True, timeout=300, env=env)
    assert {p.name for p in (home / "models").iterdir()} == {t.split(":")[0] for t in MODELS}

    server_env = {"BENTOML_HOME": str(home), "JOB_STORE_PATH": str(tmp_path / "jobs.sqlite")}
    for key in ("SPECIES_MODEL", "AESTHETIC_CLIP_MODEL", "AESTHETIC_HEAD_MODEL", "ZERO_SHOT_L14_MODEL",
                "ZERO_SHOT_B32_MODEL", "ZERO_SHOT_B32_LAION2B_MODEL"):
        server_env[key] = ""  # no pins from the test session: the Bento's own models must be found
    server = start_server(tmp_path / "serve.log", server_env, target=str(bento.tag), cwd=tmp_path)
    try:
        response = httpx.post(f"{server.url}/classify", content=encode(photo("chelsea")), timeout=60)
    finally:
        stop_server(server)
    assert response.status_code == 200, response.text
    assert response.json()["model"] == {"tag": "eva02-inat21:dev", "variant": "dev", "precision": served_precision(),
                                         "engine": served_engine()}
