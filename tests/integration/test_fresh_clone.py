"""A newcomer's clone: no ``../shared`` beside it and no network, yet ``save_models.py all --dev`` and a real
``bentoml serve`` answer every endpoint.

The whole flow runs in a network namespace of its own that has only a loopback interface (``unshare -n`` as
root, ``unshare -rn`` otherwise), so no hub, GitHub or package index can be reached.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tests.conftest import ROOT

pytestmark = pytest.mark.integration

# Run inside the namespace: register dev models, serve, call each endpoint, print what came back as JSON.
DRIVER = textwrap.dedent('''
    import base64, io, json, os, subprocess, sys
    from pathlib import Path
    import httpx
    from PIL import Image
    import skimage.data
    from tests.support.local_server import start_server, stop_server

    subprocess.run(["ip", "link", "set", "lo", "up"], check=False)
    save = subprocess.run([sys.executable, "scripts/save_models.py", "all", "--dev"], capture_output=True, text=True)
    if save.returncode:
        sys.exit("save_models failed:\\n" + save.stderr[-3000:])
    settings = dict(line.split("=", 1) for line in save.stdout.splitlines())
    out = {"save_log": save.stderr, "settings": settings}
    server = start_server(Path(os.environ["SERVE_LOG"]), settings, timeout=300)
    try:
        buf = io.BytesIO()
        Image.fromarray(skimage.data.chelsea()).save(buf, format="JPEG")
        jpeg = buf.getvalue()
        for route in ("classify", "score"):
            r = httpx.post(f"{server.url}/{route}", content=jpeg, timeout=60)
            out[route] = [r.status_code, r.json()]
        image = "data:image/jpeg;base64," + base64.b64encode(jpeg).decode()
        task = server.url + "/api/tasks/zero-shot-image-classification"
        sub = httpx.post(task + "/open-clip-vit-b32/jobs", json={"image": image, "classes": ["cat", "dog", "car"]},
                         timeout=60)
        out["submit"] = [sub.status_code, sub.json()]
        job = httpx.get(task + "/jobs/" + sub.json()["id"], params={"wait": 30}, timeout=60)
        out["job"] = [job.status_code, job.json()]
    finally:
        stop_server(server)
    print(json.dumps(out))
''')

UNSET = ("SPECIES_MODEL", "AESTHETIC_CLIP_MODEL", "AESTHETIC_HEAD_MODEL", "ZERO_SHOT_L14_MODEL", "ZERO_SHOT_B32_MODEL",
         "ZERO_SHOT_B32_LAION2B_MODEL", "AESTHETIC_HEAD_URL", "SHARED_DATA_DIR")


def isolated_network() -> list[str] | None:
    """A command prefix that runs a program with no network but loopback, or None where this system has none."""
    unshare = shutil.which("unshare")
    if unshare is None or shutil.which("ip") is None:
        return None
    for prefix in ([unshare, "-n"], [unshare, "-rn"]):
        if subprocess.run([*prefix, "true"], capture_output=True).returncode == 0:
            return prefix
    return None


def copy_clone(dest: Path) -> None:
    """The files a clone of this checkout has (tracked, and new files git does not ignore)."""
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=ROOT, check=True,
                           capture_output=True).stdout.decode().split("\0")
    for name in filter(None, files):
        if (ROOT / name).is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, dest / name)


def test_a_bare_offline_clone_serves_every_endpoint_on_dev_models(tmp_path: Path) -> None:
    prefix = isolated_network()
    if prefix is None:
        pytest.skip("no network namespace can be made here (needs unshare and ip from util-linux/iproute2)")
    clone = tmp_path / "vision-serve"  # tmp_path holds nothing else: no ../shared
    copy_clone(clone)
    (clone / "driver.py").write_text(DRIVER)
    env = {k: v for k, v in os.environ.items() if k not in UNSET}
    env.update(BENTOML_HOME=str(tmp_path / "home"), JOB_STORE_PATH=str(tmp_path / "jobs.sqlite"),
               SERVE_LOG=str(tmp_path / "serve.log"), GATEWAY_WORKERS="1")
    proc = subprocess.run([*prefix, sys.executable, "driver.py"], cwd=clone, env=env, capture_output=True, text=True,
                          timeout=900)
    log = (tmp_path / "serve.log").read_text(errors="replace")[-3000:] if (tmp_path / "serve.log").exists() else ""
    assert proc.returncode == 0, proc.stderr[-3000:] + log
    out = json.loads(proc.stdout.splitlines()[-1])

    assert out["settings"]["AESTHETIC_HEAD_MODEL"] == "laion-aesthetic-vit-b16:dev"
    assert "DEV head" in out["save_log"]
    status, classify = out["classify"]
    assert status == 200 and classify["model"]["variant"] == "dev"
    assert all(p["species"].startswith("dev class ") for p in classify["predictions"])
    status, score = out["score"]
    assert status == 200 and 0 <= score["score"] <= 10
    assert score["model"]["variant"] == score["model"]["head_variant"] == "dev"
    assert out["submit"][0] == 200
    status, job = out["job"]
    assert status == 200 and job["status"] == "complete"
    assert len(job["result"]["probabilities"]) == 3 and abs(sum(job["result"]["probabilities"]) - 1) < 1e-5
