"""CLIP models (open_clip) into the BentoML store: hub download, offline import, or tiny dev models.

Every source becomes an open_clip ``local-dir`` folder (open_clip_config.json + weights), is loaded strictly
with ``open_clip.create_model("local-dir:...")`` and stored with the towers the service needs. A model with a
Hugging Face text tower (the multilingual XLM-R ViT-B/32) also gets that transformer's config and tokenizer files
in its folder: from the hub at save time, or, for the dev model, a tiny XLM-R and a SentencePiece tokenizer made
locally from a bundled word list.
"""

from __future__ import annotations

import copy
import json
import logging
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import bentoml

import catalog
from engines.torch.clip import (CONFIG_FILE, HF_TEXT_FILES, VOCAB_FILE, WEIGHTS_FILE, create_open_clip,
                                preprocess_config, tower_state)
from model_store import hub, store
from model_store.entry import EntryMetadata
from model_store.store import DEV, RELEASE, SaveError

logger = logging.getLogger(__name__)

WEIGHT_FILES = ("open_clip_model.safetensors", "open_clip_pytorch_model.bin", "model.safetensors", "pytorch_model.bin")
DEV_WORDS = Path(__file__).resolve().parent / "data" / "dev_tokenizer_words.txt"
DEV_CONTEXT_LENGTH = 77  # open_clip's HFTokenizer default, as for the real XLM-R model


@dataclass(frozen=True)
class ClipSpec:
    """One CLIP model the service uses: store name, open_clip architecture and pretrained tag."""

    name: str
    arch: str
    tag: str
    licence: str
    towers: tuple[str, ...]
    hf_text: str | None = None  # hub repo of a Hugging Face text tower: its config and tokenizer are stored too

    @property
    def repo(self) -> str:
        import open_clip

        return open_clip.get_pretrained_cfg(self.arch, self.tag)["hf_hub"].rstrip("/")


    @classmethod
    def of(cls, entry: catalog.ModelEntry) -> "ClipSpec":
        """The save spec of a catalog CLIP entry."""
        if entry.kind != "clip" or entry.save.pretrained is None:
            raise ValueError(f"{entry.name} is not an open_clip model")
        return cls(entry.name, entry.save.arch, entry.save.pretrained, entry.save.licence, entry.towers,
                   entry.save.hf_text)


AESTHETIC_CLIP = ClipSpec.of(catalog.aesthetic_tower())
ZERO_SHOT_CLIPS = {m.name: ClipSpec.of(m) for m in catalog.zero_shot_models()}


def registry_config(spec: ClipSpec, dev: bool = False) -> dict:
    """open_clip_config.json for ``spec`` from open_clip's registry; ``dev`` shrinks it to 2 thin layers per tower."""
    import open_clip

    model_cfg = copy.deepcopy(open_clip.get_model_config(spec.arch))
    pretrained = open_clip.get_pretrained_cfg(spec.arch, spec.tag)
    if pretrained.get("quick_gelu"):
        model_cfg["quick_gelu"] = True
    if dev:  # same family, patch size, input size and embedding width; tiny depth and width
        model_cfg["vision_cfg"].update(layers=2, width=64, head_width=32)
        if not spec.hf_text:  # a Hugging Face text tower's size is in its own config.json (write_dev_text_tower)
            model_cfg["text_cfg"].update(layers=2, width=64, heads=2)
    preprocess = {k: pretrained[k] for k in ("mean", "std", "interpolation", "resize_mode") if k in pretrained}
    return {"model_cfg": model_cfg, "preprocess_cfg": preprocess}


def as_open_clip_folder(src: Path, spec: ClipSpec, workdir: Path, text_dir: Path | None = None) -> Path:
    """``src`` if it is a complete open_clip folder, else ``workdir`` linking its weights (and ``text_dir``'s
    Hugging Face text files) beside its config or the registry's."""
    if not src.is_dir():
        raise SaveError(f"--from-dir {src} is not a folder; point it at a folder holding {WEIGHT_FILES[0]}.")
    weights = next((src / f for f in WEIGHT_FILES if (src / f).is_file()), None)
    if weights is None:
        raise SaveError(f"{src} holds none of {', '.join(WEIGHT_FILES)}; nothing to import.")
    text_dir = text_dir or src
    if spec.hf_text and not all((text_dir / f).is_file() for f in HF_TEXT_FILES[:2]):
        raise SaveError(f"{spec.arch} has a Hugging Face text tower: {text_dir} needs its {' and '.join(HF_TEXT_FILES[:2])}"
                        f" (from {spec.hf_text}) beside the weights.")
    if (src / CONFIG_FILE).is_file() and text_dir == src:
        return src
    if (src / CONFIG_FILE).is_file():
        (workdir / CONFIG_FILE).symlink_to((src / CONFIG_FILE).resolve())
    else:
        logger.info("%s has no %s; using open_clip's config for %s/%s", src, CONFIG_FILE, spec.arch, spec.tag)
        (workdir / CONFIG_FILE).write_text(json.dumps(registry_config(spec)))
    (workdir / weights.name).symlink_to(weights.resolve())
    for name in HF_TEXT_FILES if spec.hf_text else ():
        if (text_dir / name).is_file():
            (workdir / name).symlink_to((text_dir / name).resolve())
    return workdir


def write_dev_text_tower(workdir: Path, full_size: bool = False) -> None:
    """A random XLM-RoBERTa config (tiny, or ``full_size``: XLM-R base's dimensions) and a SentencePiece (unigram)
    tokenizer trained on ``DEV_WORDS``, as a Hugging Face tokenizer in XLM-R's layout (``<s> <pad> </s> <unk>``
    first, ``<mask>`` last)."""
    import sentencepiece as spm
    from transformers import XLMRobertaConfig, XLMRobertaTokenizer

    words = " ".join(line for line in DEV_WORDS.read_text(encoding="utf-8").splitlines() if not line.startswith("#"))
    with tempfile.TemporaryDirectory() as tmp:
        corpus = Path(tmp) / "corpus.txt"
        corpus.write_text("\n".join(words.split()) * 4, encoding="utf-8")
        spm.SentencePieceTrainer.train(
            input=str(corpus), model_prefix=str(Path(tmp) / "sp"), vocab_size=600, model_type="unigram",
            character_coverage=1.0, hard_vocab_limit=False, unk_id=0, bos_id=-1, eos_id=-1, pad_id=-1,
            num_threads=1, minloglevel=2)
        sp = spm.SentencePieceProcessor(model_file=str(Path(tmp) / "sp.model"))
        pieces = [(sp.id_to_piece(i), sp.get_score(i)) for i in range(1, sp.get_piece_size())]
    vocab = [("<s>", 0.0), ("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), *pieces, ("<mask>", 0.0)]
    tokenizer = XLMRobertaTokenizer(vocab=vocab, add_prefix_space=True)
    tokenizer.save_pretrained(workdir)
    size = (dict(vocab_size=250_002, hidden_size=768, num_hidden_layers=12, num_attention_heads=12,
                 intermediate_size=3072, max_position_embeddings=514) if full_size else
            dict(vocab_size=len(tokenizer), hidden_size=64, num_hidden_layers=2, num_attention_heads=2,
                 intermediate_size=128, max_position_embeddings=DEV_CONTEXT_LENGTH + 3))
    XLMRobertaConfig(**size).save_pretrained(workdir)


def make_dev_folder(spec: ClipSpec, workdir: Path, full_size: bool = False) -> Path:
    """A random-initialised CLIP of the same family as ``spec`` (tiny, or the real size), as an open_clip folder."""
    import torch
    from safetensors.torch import save_file

    (workdir / CONFIG_FILE).write_text(json.dumps(registry_config(spec, dev=not full_size)))
    if spec.hf_text:
        write_dev_text_tower(workdir, full_size)
    torch.manual_seed(0)
    model = create_open_clip(workdir, load_weights=False)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(workdir / WEIGHTS_FILE))
    return workdir


def register_clip_folder(folder: Path, spec: ClipSpec, *, version: str, variant: str, source: str,
                         revision: str, licence: str) -> bentoml.Model:
    """Load an open_clip folder strictly and store the towers ``spec`` needs."""
    import open_clip
    from safetensors.torch import save_file

    try:
        model = create_open_clip(folder)
    except (RuntimeError, ValueError, KeyError, OSError) as exc:
        raise SaveError(f"Cannot load an open_clip model from {folder}: {str(exc).splitlines()[0][:300]}") from None
    config = json.loads((folder / CONFIG_FILE).read_text())
    preprocess = preprocess_config(open_clip.get_model_preprocess_cfg(model))
    labels = {"variant": variant, "task": "clip-" + "+".join(spec.towers), "framework": "open_clip"}
    with bentoml.models.create(f"{spec.name}:{version}", labels=labels, module="open_clip") as entry:
        out = Path(entry.path)
        (out / CONFIG_FILE).write_text(json.dumps(config, indent=2))
        state = tower_state(model.state_dict(), spec.towers)
        save_file({k: v.contiguous() for k, v in state.items()}, str(out / WEIGHTS_FILE))
        text_files = [f for f in HF_TEXT_FILES if (folder / f).is_file()] if spec.hf_text else []
        for name in text_files:  # the Hugging Face tower's config and tokenizer travel with the weights
            shutil.copyfile(folder / name, out / name)
        if "text" in spec.towers and not spec.hf_text:  # so does CLIP's BPE vocabulary
            from open_clip.tokenizer import default_bpe

            shutil.copyfile(default_bpe(), out / VOCAB_FILE)
        text = "text" in spec.towers
        EntryMetadata(
            kind="clip", architecture=spec.arch, pretrained=spec.tag, towers=tuple(spec.towers),
            embed_dim=config["model_cfg"]["embed_dim"], preprocess=preprocess, source=source, revision=revision,
            licence=licence, sha256=store.sha256_file(out / WEIGHTS_FILE), weights=WEIGHTS_FILE,
            tokenizer=tokenizer_info(spec, config, text_files) if text else None,
            logit_scale=float(model.logit_scale.exp().item()) if text else None,
        ).write(entry)
    logger.info("Registered %s (%s, %s %s, towers %s)", entry.tag, variant, spec.arch, spec.tag, list(spec.towers))
    return bentoml.models.get(entry.tag)


def tokenizer_info(spec: ClipSpec, config: dict, text_files: list[str]) -> dict:
    """What the metadata says about the stored tokenizer."""
    text_cfg = config["model_cfg"]["text_cfg"]
    if spec.hf_text:
        return {"type": f"Hugging Face tokenizer of {spec.hf_text}", "files": text_files,
                "context_length": text_cfg.get("context_length", DEV_CONTEXT_LENGTH)}
    return {"type": "open_clip SimpleTokenizer (CLIP BPE)", "vocab": VOCAB_FILE,
            "context_length": text_cfg["context_length"]}


def lacks_towers(tag: str, spec: ClipSpec) -> bool:
    """A stored ``tag`` that keeps fewer towers than ``spec`` needs (saved before the catalog asked for more: the
    aesthetic ViT-B/16 once kept only its image tower); a dev model like that is saved again."""
    model = store.stored(tag)
    kept = set(model.info.metadata.get("towers") or ()) if model is not None else set(spec.towers)
    if not kept >= set(spec.towers):
        logger.info("%s keeps towers %s; %s needs %s: saving it again", tag, sorted(kept), spec.name, list(spec.towers))
        return True
    return False


@hub.keeps_on_failure
def save_clip(spec: ClipSpec, *, dev: bool = False, from_dir: Path | None = None, revision: str | None = None,
              force: bool = False, full_size: bool = False) -> bentoml.Model:
    """Register ``spec`` from the hub (default), a local folder, or as a dev model (tiny; ``full_size``: the real
    architecture with random weights, version ``bench``, for speed measurements)."""
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        if dev:
            version, variant, rev = "bench" if full_size else DEV, DEV, "none"
            licence = "dev model: random weights, no licence restrictions"
            source = f"open_clip:{spec.arch} ({'full size' if full_size else 'tiny'}, random init)"
            if (kept := hub.existing(f"{spec.name}:{version}", force or lacks_towers(f"{spec.name}:{version}", spec))) \
                    is not None:
                return kept
            folder = make_dev_folder(spec, work, full_size)
        elif from_dir is not None:
            folder = as_open_clip_folder(Path(from_dir), spec, work)
            weights = next(folder / f for f in WEIGHT_FILES if (folder / f).exists())
            rev = store.sha256_file(weights)
            version, variant, source, licence = f"local-{rev[:12]}", RELEASE, f"local-dir:{from_dir}", spec.licence
            if (kept := hub.existing(f"{spec.name}:{version}", force)) is not None:
                return kept
        else:
            if (kept := hub.reuse_release(spec.name, revision, force)) is not None:
                return kept
            rev, files = hub.resolve_revision(spec.repo, revision)
            version, variant, source, licence = f"hf-{rev[:12]}", RELEASE, f"hf-hub:{spec.repo}", spec.licence
            if (kept := hub.existing(f"{spec.name}:{version}", force)) is not None:
                return kept
            weights = next((f for f in WEIGHT_FILES[:2] if f in files), None)
            if weights is None:
                raise SaveError(f"{spec.repo}@{rev} has no open_clip weights ({' or '.join(WEIGHT_FILES[:2])}).")
            text_dir = None
            if spec.hf_text:  # the text transformer's config and tokenizer, from its own repo
                text_rev, text_files = hub.resolve_revision(spec.hf_text, None)
                text_dir = hub.download(spec.hf_text, text_rev, [f for f in HF_TEXT_FILES if f in text_files])
            folder = as_open_clip_folder(hub.download(spec.repo, rev, [weights]), spec, work, text_dir)
            if spec.hf_text:
                rev, source = f"{rev} + {spec.hf_text}@{text_rev}", f"{source} + hf-hub:{spec.hf_text}"
        return register_clip_folder(folder, spec, version=version, variant=variant, source=source,
                                    revision=rev, licence=licence)
