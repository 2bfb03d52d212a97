"""The pydantic schemas of loss-term kinds and settings blocks: types, ranges and defaults.

Every ``key=value`` in a plan is validated against one of these models. Values arrive as text and
are converted by pydantic (``"1e-4"`` -> float, ``"true"`` -> bool); step quantities accept the
plan's step spelling (``4k``) and are marked with :class:`StepQuantity` so that ``--time-scale``
can scale them. New blocks (the runtime's ``model``, ``data``, ...) are added to :data:`BLOCKS`
without touching the grammar.
"""

from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field

from ditsr_plan.dsl.numbers import parse_steps


class StepQuantity:
    """Marks a field as a number of training steps (scaled by ``--time-scale``)."""


def _steps(value: Any) -> Any:
    return parse_steps(value) if isinstance(value, str) else value


def _pair(value: Any) -> Any:
    return tuple(part.strip() for part in value.split(",")) if isinstance(value, str) else value


Steps = Annotated[int, BeforeValidator(_steps), StepQuantity()]
Pair = Annotated[tuple[float, float], BeforeValidator(_pair)]
Fraction = Annotated[float, Field(gt=0, le=1)]


class Schema(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False, defer_build=True)


# ---- loss-term kinds -------------------------------------------------------------------------


class VPred(Schema):
    """v-prediction MSE, Min-SNR weighted (``formula=v``: min(snr,g)/(snr+1); ``eps``: min(snr,g)/snr)."""

    min_snr: float = Field(5.0, ge=0, description="Min-SNR gamma; 0 turns the weighting off")
    formula: Literal["v", "eps"] = "v"


class LatentL1(Schema):
    """L1 between the reconstructed and the true x0 in latent space."""


class Lpips(Schema):
    """LPIPS on the decoded pixel patch."""

    net: Literal["vgg", "alex", "squeeze"] = "vgg"
    backbone: Literal["pretrained", "random"] = "pretrained"


class EdgeMaskSettings(Schema):
    q: Fraction = Field(0.90, description="per-image quantile of the Sobel magnitude that maps to mask 1")
    pow: float = Field(0.5, gt=0, description="exponent applied to the clamped mask")


class Edge(EdgeMaskSettings):
    """Sobel-gradient L1 inside the soft GT edge mask."""

    reduce: Literal["mask", "all"] = "mask"


class Flat(EdgeMaskSettings):
    """|Laplacian(pred)| inside the GT flat mask (1 - edge mask)."""

    reduce: Literal["mask", "all"] = "mask"


class Ffl(EdgeMaskSettings):
    """Focal Frequency Loss; ``mask=edge`` restricts it to the GT edge mask."""

    alpha: float = Field(1.0, ge=0)
    mask: Literal["none", "edge"] = "none"


class PatchGan(Schema):
    """PatchGAN (pix2pix NLayer) adversarial loss with lazy R1 and its own optimiser."""

    layers: int = Field(3, ge=1, le=6)
    ndf: int = Field(64, ge=1, le=1024)
    norm: Literal["instance", "batch", "none"] = "instance"
    loss: Literal["hinge", "nonsat"] = "hinge"
    r1: float = Field(10.0, ge=0, description="R1 gamma; 0 turns R1 off")
    r1_every: Steps = Field(16, ge=1)
    lr: float = Field(1e-4, gt=0)
    betas: Pair = (0.5, 0.999)
    wd: float = Field(1e-4, ge=0)
    d_warmup: Steps = Field(0, ge=0, description="steps D trains alone before the GAN weight is > 0")


TERM_KINDS: dict[str, type[Schema]] = {
    "vpred": VPred,
    "latent_l1": LatentL1,
    "lpips": Lpips,
    "edge": Edge,
    "flat": Flat,
    "ffl": Ffl,
    "patchgan": PatchGan,
}

# Kinds computed on the decoded pixel patch (they make a step decode it).
PIXEL_KINDS = frozenset({"lpips", "edge", "flat", "ffl", "patchgan"})


# ---- settings blocks -------------------------------------------------------------------------


class Ema(Schema):
    """EMA of the generator: ``ema = decay * ema + (1 - decay) * weights`` every ``every`` steps."""

    decay: float = Field(0.999, ge=0, lt=1)
    start: Steps = Field(0, ge=0)
    every: Steps = Field(1, ge=1)


class Pixel(Schema):
    """The pixel patch that pixel-space terms see."""

    patch: int = Field(256, ge=8, le=4096, description="side of the compared patch, in pixels")
    margin: int = Field(32, ge=0, le=1024, description="pixels decoded around the patch and then cut away")


class Optim(Schema):
    """The generator's AdamW. ``lr`` is the default of the schedulable ``lr`` knob."""

    lr: float = Field(1e-4, gt=0)
    betas: Pair = (0.9, 0.999)
    weight_decay: float = Field(0.0, ge=0)
    grad_clip: float = Field(1.0, ge=0, description="max gradient norm; 0 turns clipping off")
    accum: int = Field(1, ge=1, le=4096, description="gradient-accumulation steps per optimiser step")


# A block maps a kind to its schema; a block that takes no kind has the single kind None.
BLOCKS: dict[str, dict[str | None, type[Schema]]] = {
    "ema": {None: Ema},
    "pixel": {None: Pixel},
    "optim": {None: Optim},
}


# Blocks that always apply: a plan that does not write one gets its defaults. Other blocks
# (``ema``) are off unless written.
DEFAULT_BLOCKS = ("pixel", "optim")


def step_fields(model: type[BaseModel]) -> list[str]:
    """Names of the fields of ``model`` that count training steps."""
    return [
        name for name, info in model.model_fields.items() if any(isinstance(m, StepQuantity) for m in info.metadata)
    ]
