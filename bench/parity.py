"""Parity of each engine and precision with torch fp32 on given store entries (``benchmark.py --parity-only``).

The same real photos (scikit-image, JPEG, decoded and preprocessed as the service does) through torch fp32 and
through each other system, on store entries such as the ``--dev --full-size`` towers: image and text embedding
cosine, zero-shot probabilities (at the entry's logit scale and at 100, a trained CLIP's) and best class, the
aesthetic score (on the ViT-B/16 entry, through the stored head) and the species probabilities and top-5 set.
The unit tests (tests/unit/test_precision.py) hold the dev models to the issue's bounds; this measures the same on
towers too large for a test.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

logger = logging.getLogger(__name__)
BOUNDS = "embedding cosine >= 0.9999, zero-shot and species probabilities within 1e-3, aesthetic within 0.05"
REAL_SCALE = 100.0  # trained CLIPs' logit scale; a random-weight tower has its initial 14.3, which hides drift
TEXTS = ("a photo of a cat.", "a photo of coffee.", "ein Foto von einer Rakete.", "宇航员的照片。", "")


def same_up_to_near_ties(q32: np.ndarray, q: np.ndarray, tie: float = 0.05) -> bool:
    """The same top-5 set, where a class within ``tie`` of the photo's spread (best minus median fp32
    probability) of the 5th may trade places with it: on a nearly flat softmax (a random-weight model's) the 5th
    and 6th classes can lie 1e-10 apart."""
    fifth, margin = float(np.sort(q32)[-5]), tie * float(q32.max() - np.median(q32))
    extra = set(np.argsort(-q)[:5].tolist()) - set(np.argsort(-q32)[:5].tolist())
    return all(q32[c] >= fifth - margin for c in extra)


def compare(reference: Any, tested: Any, images: np.ndarray, kind: str, logit_scale: float | None,
            head: Any = None) -> dict[str, Any]:
    """How far ``tested`` is from ``reference`` (two loaded engines of one entry) on preprocessed ``images``;
    ``logit_scale``: the entry's, where it has a text tower."""
    if kind == "timm-classifier":
        p32, p = reference.probabilities(images), tested.probabilities(images)
        same = [set(np.argsort(-a)[:5].tolist()) == set(np.argsort(-b)[:5].tolist()) for a, b in zip(p32, p)]
        return {"probability_max_diff": float(np.abs(p - p32).max()), "top5_same_set": f"{sum(same)}/{len(same)}",
                "top5_same_up_to_near_ties": f"{sum(map(same_up_to_near_ties, p32, p))}/{len(same)}",
                "top1_probability": float(p32.max())}
    from capabilities.zero_shot.requests import probabilities

    i32, i = reference.embed_images(images), tested.embed_images(images)
    out: dict[str, Any] = {"image_cosine_min": float((i32 * i).sum(-1).min())}
    if head is not None:
        out["aesthetic_max_diff"] = float(np.abs(head.apply(i) - head.apply(i32)).max())
    if logit_scale is not None:  # a text tower too
        t32, t = reference.embed_texts(list(TEXTS)), tested.embed_texts(list(TEXTS))
        out["text_cosine_min"] = float((t32 * t).sum(-1).min())
        for name, scale in (("zero_shot_max_diff", logit_scale), ("zero_shot_max_diff_scale_100", REAL_SCALE)):
            out[name] = float(np.abs(probabilities(i, t, scale) - probabilities(i32, t32, scale)).max())
        same = (i @ t.T).argmax(-1) == (i32 @ t32.T).argmax(-1)  # the best class, at any logit scale
        out["zero_shot_top1_same"] = f"{int(same.sum())}/{len(same)}"
    return out


def run(tags: list[str], images: list[bytes], systems: dict[str, dict[str, str]], baseline: str) -> list[dict]:
    """Each entry in ``tags`` on each system of ``systems`` against ``baseline``, one row per entry and system."""
    import catalog
    import engines
    from model_store import open_entry
    from serving.imaging import decode_image, preprocess

    rows = []
    for tag in tags:
        stored = open_entry(catalog.entry(tag.split(":")[0]).name, tag)
        cfg = stored.meta.require_preprocess()
        pixels = np.stack([preprocess(decode_image(jpeg, 10**8), cfg) for jpeg in images])
        scale = stored.meta.logit_scale  # None: no text tower
        head = engines.load(open_entry(stored.entry.head), engines.EngineOptions()) if stored.entry.head else None

        def load(env: dict[str, str], stored=stored) -> Any:
            return engines.load(stored, engines.EngineOptions(engine=env["ENGINE"], precision=env["PRECISION"]))

        reference = load(systems[baseline])
        for name, env in systems.items():
            if name == baseline:
                continue
            tested = load(env)
            row = {"tag": tag, "system": name, "photos": len(images),
                   **compare(reference, tested, pixels, stored.entry.kind, scale, head)}
            logger.info("parity %s", row)
            rows.append(row)
            del tested
    return rows


def markdown(report: dict[str, Any]) -> list[str]:
    fields = ("image_cosine_min", "text_cosine_min", "zero_shot_max_diff", "zero_shot_max_diff_scale_100",
              "zero_shot_top1_same", "aesthetic_max_diff", "probability_max_diff", "top5_same_set",
              "top5_same_up_to_near_ties", "top1_probability")
    lines = [f"Against `{report['baseline']}` on the same photos ({report['images']}). The issue's bounds: {BOUNDS}.",
             "", "| store entry | system | " + " | ".join(fields) + " |", "|---|---|" + "---|" * len(fields)]
    for r in report["parity"]:
        cells = [(f"{r[f]:.6g}" if isinstance(r[f], float) else str(r[f])) if f in r else "" for f in fields]
        lines.append(f"| {r['tag']} | {r['system']} | " + " | ".join(cells) + " |")
    return lines
