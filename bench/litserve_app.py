"""A LitServe peer of the service, for side-by-side benchmarks (bench/run.py starts it).

Written as LitServe's documentation suggests (https://lightning.ai/docs/litserve): one ``LitAPI`` per model
(``api_path`` /classify, /score, /zero_shot/<model>), requests as JSON with a base64 image, PIL decoding and the
stock timm / open_clip eval transforms in ``decode_request`` (its ``request`` is left unannotated: LitServe
takes the annotation as the FastAPI request type, and no annotation means a JSON body), LitServe's batching (``max_batch_size``,
``batch_timeout``) with the default ``batch`` (a stacked tensor), one worker per device. It loads the same store
entries as the service (SPECIES_MODEL, AESTHETIC_*, ZERO_SHOT_*) through the same load functions, so all
systems run the same weights.

    python bench/litserve_app.py --port 3200                  # all four APIs in one server
    python bench/litserve_app.py --port 3201 --api /score     # one model per server, as the benchmark runs it
"""

from __future__ import annotations

import argparse
import base64
import io
import logging
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import litserve as ls  # noqa: E402

import catalog  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402

logger = logging.getLogger(__name__)
BATCH = {"max_batch_size": 64, "batch_timeout": 0.01}


def _image(request: dict[str, Any]) -> Image.Image:
    data = request["image"]
    return Image.open(io.BytesIO(base64.b64decode(data.split(",", 1)[-1]))).convert("RGB")


def _store_path(tag: str) -> Path:
    import bentoml

    return Path(bentoml.models.get(tag).path)


def _open_clip_transform(model: Any) -> Any:
    import open_clip

    cfg = open_clip.transform.PreprocessCfg(**open_clip.get_model_preprocess_cfg(model))
    return open_clip.transform.image_transform_v2(cfg, is_train=False)


class SpeciesAPI(ls.LitAPI):
    def setup(self, device: str) -> None:
        import timm

        from engines.torch.classifier import load_species
        from serving.settings import settings

        self.device = torch.device(device)
        self.model, self.labels, _ = load_species(_store_path(settings.tag(catalog.species_model().name)), self.device)
        self.transform = timm.data.create_transform(**timm.data.resolve_model_data_config(self.model))

    def decode_request(self, request) -> torch.Tensor:
        return self.transform(_image(request))

    def predict(self, x: torch.Tensor) -> list[list[tuple[int, float]]]:
        with torch.inference_mode():
            scores, idx = self.model(x.to(self.device)).softmax(-1).topk(3)
        return [list(zip(i.tolist(), s.tolist())) for i, s in zip(idx, scores)]

    def encode_response(self, output: list[tuple[int, float]]) -> dict[str, Any]:
        return {"predictions": [{"species": self.labels[i], "score": s} for i, s in output]}


class AestheticAPI(ls.LitAPI):
    def setup(self, device: str) -> None:
        from engines.torch.head import load_aesthetic
        from serving.settings import settings

        self.device = torch.device(device)
        self.clip, self.head, _ = load_aesthetic(_store_path(settings.tag(catalog.aesthetic_tower().name)),
                                                 _store_path(settings.tag(catalog.aesthetic_tower().head)), self.device)
        self.transform = _open_clip_transform(self.clip)

    def decode_request(self, request) -> torch.Tensor:
        return self.transform(_image(request))

    def predict(self, x: torch.Tensor) -> list[float]:
        with torch.inference_mode():
            emb = self.clip.encode_image(x.to(self.device))
            return self.head(emb / emb.norm(dim=-1, keepdim=True))[:, 0].tolist()

    def encode_response(self, output: float) -> dict[str, Any]:
        return {"score": min(10.0, max(0.0, output)), "raw": output}


class ZeroShotAPI(ls.LitAPI):
    """Class names per request, so no stacking: ``batch`` keeps the requests as a list."""

    def __init__(self, name: str, **kwargs: Any) -> None:
        super().__init__(api_path=f"/zero_shot/{name}", **kwargs)
        self.name = name

    def setup(self, device: str) -> None:
        from engines.torch.clip import load_zero_shot
        from serving.settings import settings

        self.device = torch.device(device)
        self.model, self.tokenizer, _, self.scale = load_zero_shot(
            _store_path(settings.tag(self.name)), self.device)
        self.transform = _open_clip_transform(self.model)

    def decode_request(self, request) -> tuple[torch.Tensor, list[str]]:
        return self.transform(_image(request)), list(request["classes"])

    def batch(self, inputs: list[tuple[torch.Tensor, list[str]]]) -> list[tuple[torch.Tensor, list[str]]]:
        return inputs

    def predict(self, inputs: list[tuple[torch.Tensor, list[str]]]) -> list[list[float]]:
        with torch.inference_mode():
            images = self.model.encode_image(torch.stack([x for x, _ in inputs]).to(self.device))
            images = images / images.norm(dim=-1, keepdim=True)
            out = []
            for image, (_, classes) in zip(images, inputs):
                text = self.model.encode_text(self.tokenizer([f"a photo of a {c}." for c in classes]).to(self.device))
                text = text / text.norm(dim=-1, keepdim=True)
                out.append((self.scale * image @ text.T).softmax(-1).tolist())
            return out

    def unbatch(self, output: list[list[float]]) -> list[list[float]]:
        return output

    def encode_response(self, output: list[float]) -> dict[str, Any]:
        return {"probabilities": output}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--port", type=int, default=3200)
    parser.add_argument("--api", action="append", dest="paths", metavar="PATH",
                        help="serve only this API path (repeatable), e.g. /score; default: all four")
    args = parser.parse_args()
    zero_shot = ("clip-vit-large-patch14", "open-clip-vit-b32")
    apis = {"/classify": lambda: SpeciesAPI(api_path="/classify", **BATCH),
            "/score": lambda: AestheticAPI(api_path="/score", **BATCH),
            **{f"/zero_shot/{name}": (lambda name=name: ZeroShotAPI(name, **BATCH)) for name in zero_shot}}
    unknown = sorted(set(args.paths or ()) - set(apis))
    if unknown:
        parser.error(f"unknown --api {', '.join(unknown)}; choose from {', '.join(apis)}")
    server = ls.LitServer([make() for path, make in apis.items() if path in (args.paths or apis)],
                          accelerator="auto", workers_per_device=1, timeout=300)
    server.run(host="127.0.0.1", port=args.port, generate_client_file=False)


if __name__ == "__main__":
    main()
