"""Response shapes of the public API, shared by the gateway and the Python client."""

from __future__ import annotations

from pydantic import BaseModel, Field

MAX_WAIT_S = 30.0  # longest a job status read may be held open for the job to finish (``?wait=``)


class Prediction(BaseModel):
    species: str = Field(description="Scientific name, e.g. 'Cardinalis cardinalis'")
    label: str = Field(description="The same name as species (compatibility: danactive/history reads label)")
    score: float = Field(ge=0, le=1, description="Softmax probability")
    common_name: str | None = Field(None, description="An English name where the stored names have one, else null")
    lineage: list[str] | None = Field(None, description="kingdom, phylum, class, order, family, genus, species; "
                                                         "null when the model was stored without a taxonomy")
    rank: str = Field("species", description="The rank of the prediction: always species")


class Rollup(BaseModel):
    """The deepest rank whose best group's summed probability reaches SPECIES_ROLLUP_MIN."""

    rank: str = Field(description="species, genus, family, order, class, phylum or kingdom")
    name: str = Field(description="The taxon at that rank, e.g. the genus 'Cardinalis'")
    score: float = Field(ge=0, le=1, description="Its probability: the softmax summed over all its species")
    lineage: list[str] = Field(description="From the kingdom down to this taxon")


class RankBest(BaseModel):
    """The taxon of one rank holding the most probability, summed over all its species (of all classes)."""

    rank: str
    name: str
    score: float = Field(ge=0, le=1)


class Gate(BaseModel):
    """The organism gate: zero-shot prompts on the aesthetic CLIP tower."""

    organism: float = Field(ge=0, le=1, description="Probability of the organism prompts (animal, plant, ...)")
    not_organism: float = Field(ge=0, le=1, description="Probability of the others (person, building, vehicle, ...)")


class ModelInfo(BaseModel):
    tag: str = Field(description="BentoML model store tag that produced the answer")
    variant: str = Field(description="'release' for real weights, 'dev' for tiny random test models")
    precision: str | None = Field(None, description="'fp32' or 'bf16': the precision the model ran in (PRECISION); "
                                                    "null until its runner has said")
    engine: str | None = Field(None, description="'torch' or 'openvino': the inference engine that ran it (ENGINE); "
                                                 "null until its runner has said")


class ClassifyResponse(BaseModel):
    predictions: list[Prediction]
    model: ModelInfo
    status: str = Field("uncertain", description="identified (top species sure and clear of the second), uncertain, "
                                                 "or not_organism (the organism gate says so)")
    rollup: Rollup | None = Field(None, description="The deepest rank sure enough, over all classes whatever top_k; "
                                                    "null without a taxonomy or when no rank reaches the threshold")
    gate: Gate | None = Field(None, description="The organism gate's answer; null when SPECIES_GATE=off or its "
                                                "tower has no text tower")
    ranks: list[RankBest] | None = Field(None, description="The best taxon of each rank above the species, genus "
                                                           "first, with its summed probability (what the roll-up "
                                                           "reads); null without a taxonomy")


class OrganismPrediction(BaseModel):
    """One candidate in danactive/history's organism shape."""

    taxonId: str = Field(description="inat21-<class index>")
    scientificName: str
    commonName: str | None
    kingdom: str | None
    family: str | None
    genus: str | None
    lineage: list[str] = Field(description="kingdom ... genus, scientific name")
    score: float = Field(ge=0, le=1, description="Softmax probability")
    matchStrength: str = Field(description="strong (the first, when identified), possible (score >= "
                                           "SPECIES_POSSIBLE_MIN) or weak")


class OrganismResponse(BaseModel):
    """``POST /classify/organism``: danactive/history's organism classifier answer."""

    status: str = Field(description="identified, uncertain or not_organism")
    model: dict[str, str | None] = Field(description="id (store tag), revision, taxonomy (its source)")
    predictions: list[OrganismPrediction]
    diagnostics: dict[str, float | int | bool | str | None]


class ScoreModelInfo(ModelInfo):
    variant: str = Field(description="'dev' when the image tower or the head is a dev model, else 'release'")
    head: str = Field(description="Store tag of the LAION aesthetic head")
    head_variant: str = Field(description="'release' for the LAION head, 'dev' for the seeded random dev head")


class ScoreResponse(BaseModel):
    score: float = Field(ge=0, le=10, description="LAION aesthetic rating, clamped to 0-10")
    raw: float = Field(description="The head's unclamped regression output")
    model: ScoreModelInfo


class EmbedResponse(BaseModel):
    embedding: list[float] = Field(description="L2-normalised CLIP image embedding")
    dim: int = Field(description="Its length: 512 for ViT-B/16 and ViT-B/32, 768 for ViT-L/14 (full-size models)")
    model: ModelInfo


class ErrorBody(BaseModel):
    error: str = Field(description="Machine-readable code, e.g. unsupported_media_type")
    detail: str = Field(description="What was wrong and how to fix it")


class ClassifyBatchResponse(BaseModel):
    results: list[ClassifyResponse | ErrorBody] = Field(description="One per image, in the order sent")


class Measures(BaseModel):
    """What the pixels say, each 0-10 (higher is better), with the original's size and the figures behind them."""

    sharpness_score: float = Field(ge=0, le=10, description="Detail: variance of the Laplacian, log-scaled")
    exposure_score: float = Field(ge=0, le=10, description="Clipped shadows and highlights, and mean brightness")
    resolution_score: float = Field(ge=0, le=10, description="Short side in pixels, log-scaled from 64 to 2048")
    rule_of_thirds_score: float = Field(ge=0, le=10, description="Edge energy on the thirds lines vs elsewhere")
    visual_interest_score: float = Field(ge=0, le=10, description="Edge density and tonal variety")
    image_width: int = Field(description="Width of the original, EXIF orientation applied")
    image_height: int = Field(description="Height of the original, EXIF orientation applied")
    clipped_shadows: float = Field(ge=0, le=1, description="Share of pixels at grey 0-5")
    clipped_highlights: float = Field(ge=0, le=1, description="Share of pixels at grey 250-255")
    brightness: float = Field(ge=0, le=1, description="Mean grey level, 0 (black) to 1 (white)")


class PhotoReport(Measures):
    """The measures with the combined scores and plain notes."""

    technical_score: float = Field(ge=0, le=10, description="0.4 sharpness + 0.4 exposure + 0.2 resolution")
    composition_score: float = Field(ge=0, le=10, description="The mean of rule of thirds and visual interest")
    aesthetic_score: float = Field(ge=0, le=10, description="The LAION aesthetic score (the same as score)")
    overall_score: float = Field(ge=0, le=100, description="10 x (0.4 aesthetic + 0.45 technical + "
                                                           "0.15 composition)")
    notes: list[str] = Field(description="A few plain sentences naming what limits the photo")


class ScoresResponse(ScoreResponse, PhotoReport):
    """``POST /scores`` (and ``/score?report=1``): the ``/score`` answer plus the photo report
    (:mod:`capabilities.report`); ``aesthetic_score`` is the same as ``score`` (danactive/history reads it)."""


class ScoreBatchResponse(BaseModel):
    results: list[ScoresResponse | ScoreResponse | ErrorBody] = Field(
        description="One per image, in the order sent (with the photo report when asked for: report=1)")


class JobAccepted(BaseModel):
    id: str = Field(description="Job id to poll")
    status: str = Field(description="'starting' when accepted")


class ZeroShotResult(BaseModel):
    probabilities: list[float] | list[list[float]] = Field(
        description="One probability per class in the given order (a list per image for batched jobs)")


class EmbeddingResult(BaseModel):
    """An image-embedding or text-embedding job's result (FES's ``{"embedding": [...]}``)."""

    embedding: list[float] | list[list[float]] = Field(
        description="L2-normalised embedding (a list per input for batched jobs on the plain status route)")
    truncated: bool | list[bool] | None = Field(
        default=None, description="Text only, and only when a text was longer than the model's context: it was "
                                  "embedded cut to the context (per text for batched jobs)")


class TextEmbedResponse(BaseModel):
    """``POST /embed/text``: one L2-normalised embedding per text, comparable with ``/embed``'s by dot product."""

    embeddings: list[list[float]] = Field(description="One per text, in the order sent")
    dim: int = Field(description="Their length (512 for ViT-B/16 and ViT-B/32, 768 for ViT-L/14, full-size)")
    truncated: list[bool] = Field(description="Per text: longer than the model's context, so embedded cut to it")
    context_length: int = Field(description="The model's text context, in tokens")
    model: ModelInfo


class JobStatus(BaseModel):
    id: str
    model: str
    status: str = Field(description="starting | running | complete | failed | cancelled")
    created_at: str
    result: ZeroShotResult | EmbeddingResult | list[ZeroShotResult] | list[EmbeddingResult] | None = Field(
        default=None, description="Only when complete; on the batched status route a list, one item per input")
    error: str | None = Field(default=None, description="Only when failed")
    expires_at: str | None = Field(default=None, description="When a finished job stops being readable")
