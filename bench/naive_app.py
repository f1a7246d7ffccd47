"""The naive design the service replaces, for side-by-side benchmarks (bench/run.py starts it).

One FastAPI/uvicorn process: decode with PIL, the stock timm / open_clip eval transforms, one unbatched fp32
forward per request. It loads the same store entries as the service (SPECIES_MODEL, AESTHETIC_*, ZERO_SHOT_*),
so both sides run the same weights.

    python bench/naive_app.py --port 3100
"""

from __future__ import annotations

import argparse
import base64
import io
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import bentoml  # noqa: E402
import open_clip  # noqa: E402
import timm  # noqa: E402
import torch  # noqa: E402
import uvicorn  # noqa: E402
from fastapi import FastAPI, Request  # noqa: E402
from fastapi.concurrency import run_in_threadpool  # noqa: E402
from PIL import Image  # noqa: E402

from engines.torch.head import load_aesthetic  # noqa: E402
from engines.torch.classifier import load_species  # noqa: E402
from engines.torch.clip import load_zero_shot  # noqa: E402
import catalog  # noqa: E402
from serving.settings import settings  # noqa: E402

app = FastAPI()
MODELS: dict = {}


def load(device: torch.device) -> None:
    store = lambda name: Path(bentoml.models.get(settings.tag(name)).path)  # noqa: E731
    species, labels, _ = load_species(store(catalog.species_model().name), device)
    MODELS["species"] = (species, labels, timm.data.create_transform(**timm.data.resolve_model_data_config(species)))
    clip, head, _ = load_aesthetic(store(catalog.aesthetic_tower().name), store(catalog.aesthetic_tower().head), device)
    MODELS["aesthetic"] = (clip, head, _open_clip_transform(clip))
    for name in ("clip-vit-large-patch14", "open-clip-vit-b32"):
        model, tokenizer, _, scale = load_zero_shot(store(name), device)
        MODELS[name] = (model, tokenizer, _open_clip_transform(model), scale)
    MODELS["device"] = device


def _open_clip_transform(model):
    cfg = open_clip.transform.PreprocessCfg(**open_clip.get_model_preprocess_cfg(model))
    return open_clip.transform.image_transform_v2(cfg, is_train=False)


def _image(data: bytes) -> Image.Image:
    return Image.open(io.BytesIO(data)).convert("RGB")


@app.get("/readyz")
def readyz() -> dict:
    return {"ready": bool(MODELS)}


@app.post("/classify")
async def classify(request: Request) -> dict:
    return await run_in_threadpool(_classify, await request.body())


def _classify(data: bytes) -> dict:
    model, labels, transform = MODELS["species"]
    with torch.no_grad():
        probs = model(transform(_image(data))[None].to(MODELS["device"])).softmax(-1)[0]
    scores, idx = probs.topk(3)
    return {"predictions": [{"species": labels[i], "score": float(s)} for s, i in zip(scores, idx)]}


@app.post("/score")
async def score(request: Request) -> dict:
    return await run_in_threadpool(_score, await request.body())


def _score(data: bytes) -> dict:
    clip, head, transform = MODELS["aesthetic"]
    with torch.no_grad():
        emb = clip.encode_image(transform(_image(data))[None].to(MODELS["device"]))
        return {"score": float(head(emb / emb.norm(dim=-1, keepdim=True))[0, 0])}


@app.post("/zero_shot/{model_name}")
async def zero_shot(model_name: str, request: Request) -> dict:
    return await run_in_threadpool(_zero_shot, model_name, await request.json())


def _zero_shot(model_name: str, body: dict) -> dict:
    model, tokenizer, transform, scale = MODELS[model_name]
    data = base64.b64decode(body["image"].split(",", 1)[1])
    with torch.no_grad():
        image = model.encode_image(transform(_image(data))[None].to(MODELS["device"]))
        text = model.encode_text(tokenizer([f"a photo of a {c}." for c in body["classes"]]).to(MODELS["device"]))
        image, text = image / image.norm(dim=-1, keepdim=True), text / text.norm(dim=-1, keepdim=True)
        return {"probabilities": (scale * image @ text.T).softmax(-1)[0].tolist()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--port", type=int, default=3100)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    load(torch.device(args.device))
    uvicorn.run(app, host="127.0.0.1", port=args.port, log_level="warning")


if __name__ == "__main__":
    main()
