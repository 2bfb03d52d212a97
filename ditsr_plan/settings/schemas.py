"""The pydantic schemas of loss-term kinds and settings blocks: types, ranges and defaults.

Every ``key=value`` in a plan is validated against one of these models. Values arrive as text and
are converted by pydantic (``"1e-4"`` -> float, ``"true"`` -> bool); step quantities accept the
plan's step spelling (``4k``) and are marked with :class:`StepQuantity` so that ``--time-scale``
can scale them. New blocks (the runtime's ``model``, ``data``, ...) are added to :data:`BLOCKS`
without touching the grammar.
"""

import functools
from collections.abc import Callable
from typing import Annotated, Any, ClassVar, Literal, Self

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    SerializationInfo,
    SerializerFunctionWrapHandler,
    ValidationInfo,
    field_validator,
    model_serializer,
    model_validator,
)

from ditsr_plan.settings.numbers import parse_steps


class StepQuantity:
    """Marks a field as a number of training steps (scaled by ``--time-scale``)."""


class HashedWhenSet:
    """Marks a field added after plans were run: left at its default it stays out of the plan's meaning (and
    so its hash: old plans keep their hashes and old runs resume); set to another value it is hashed."""


@functools.cache
def hash_neutral(model: type[BaseModel]) -> dict[str, Any]:
    """The :class:`HashedWhenSet` fields of ``model`` and their defaults."""
    return {
        name: info.default
        for name, info in model.model_fields.items()
        if any(isinstance(m, HashedWhenSet) for m in info.metadata)
    }


def plain_values(settings: BaseModel) -> dict[str, Any]:
    """The settings as plain JSON data, without the :class:`HashedWhenSet` fields left at their default (the
    schemas' serializer leaves them out): what a plan's hash is taken of."""
    data: dict[str, Any] = settings.model_dump(mode="json")
    return data


def _steps(value: Any) -> Any:
    return parse_steps(value) if isinstance(value, str) else value


def _pair(value: Any) -> Any:
    return tuple(part.strip() for part in value.split(",")) if isinstance(value, str) else value


def _whole(value: Any) -> Any:
    """Digits as an int, for fields whose choices are numbers (``laplacian=4``) or ``auto``-or-a-number."""
    return int(value) if isinstance(value, str) and value.strip().isdigit() else value


Steps = Annotated[int, BeforeValidator(_steps), StepQuantity()]
Threads = Annotated[Literal["auto"] | Annotated[int, Field(ge=1, le=1024)], BeforeValidator(_whole)]
# an HR tile side in pixels, or auto / off
Tile = Annotated[Literal["auto", "off"] | Annotated[int, Field(ge=16, le=65536)], BeforeValidator(_whole)]
Overlap = Annotated[Literal["auto"] | Annotated[int, Field(ge=0, le=16384)], BeforeValidator(_whole)]
Neighbours = Annotated[Literal[4, 8], BeforeValidator(_whole)]
Pair = Annotated[tuple[float, float], BeforeValidator(_pair)]
Fraction = Annotated[float, Field(gt=0, le=1)]
Late = HashedWhenSet()  # the marker of a field that is hashed only when set to another value than its default


ALL_SETTINGS = {"late_defaults": True}  # model_dump(context=...): the late fields at their default too (show, diff)


def all_values(settings: BaseModel) -> dict[str, Any]:
    """Every setting as plain JSON data, the :class:`HashedWhenSet` fields at their default included: what a
    run uses (``show``, ``diff``), where :func:`plain_values` is what its hash is taken of."""
    data: dict[str, Any] = settings.model_dump(mode="json", context=ALL_SETTINGS)
    return data


def _hash_neutral_defaults(schema: BaseModel, data: dict[str, Any], info: SerializationInfo) -> dict[str, Any]:
    """``data`` without the :class:`HashedWhenSet` fields of ``schema`` left at their default (unless the dump
    asks for them: :data:`ALL_SETTINGS`)."""
    if isinstance(info.context, dict) and info.context.get("late_defaults"):
        return data
    for name, default in hash_neutral(type(schema)).items():
        if name in data and getattr(schema, name) == default:
            del data[name]
    return data


class Schema(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False, defer_build=True)

    @model_serializer(mode="wrap")
    def _dump(self, handler: SerializerFunctionWrapHandler, info: SerializationInfo) -> dict[str, Any]:
        """Every field, but a :class:`HashedWhenSet` field at its default (out of the hash and the graph JSON)."""
        data: dict[str, Any] = handler(self)
        return _hash_neutral_defaults(self, data, info)


# ---- loss-term kinds -------------------------------------------------------------------------


class TermKind(Schema):
    """A loss-term kind: its settings (the fields), and what the compiler and the runtime need to know.

    ``kind`` is its name in plans; ``implementation`` names the runtime's class (``module:Class``, imported by
    the runtime only); ``pixel``: computed on the decoded pixel patch; ``after_step``: it trains modules of its
    own after the generator's step (a discriminator), from ``warmup`` (the name of its setting) steps before
    the term is first live; ``lr_knob``: a learning rate stages may schedule, starting at its ``lr`` setting.
    """

    kind: ClassVar[str]
    implementation: ClassVar[str]
    pixel: ClassVar[bool] = False
    after_step: ClassVar[bool] = False
    warmup: ClassVar[str | None] = None
    lr_knob: ClassVar[str | None] = None


TERMS_PACKAGE = "ditsr_plan.runtime.train.terms"


class VPred(TermKind):
    """v-prediction MSE, Min-SNR weighted per sample."""

    kind = "vpred"
    implementation = f"{TERMS_PACKAGE}.vpred:VPred"
    min_snr: float = Field(5.0, ge=0, description="Min-SNR gamma; 0 turns the weighting off")
    formula: Literal["v", "eps"] = Field(
        "v", description="v: min(snr,g)/(snr+1), the published form for v-prediction; eps: min(snr,g)/snr, the scripts'"
    )


class LatentL1(TermKind):
    """L1 between the reconstructed and the true x0 in latent space."""

    kind = "latent_l1"
    implementation = f"{TERMS_PACKAGE}.latent_l1:LatentL1"


class Lpips(TermKind):
    """LPIPS on the decoded pixel patch."""

    kind = "lpips"
    implementation = f"{TERMS_PACKAGE}.lpips_term:Lpips"
    pixel = True
    net: Literal["vgg", "alex", "squeeze"] = Field("vgg", description="the torchvision trunk")
    backbone: Literal["pretrained", "random"] = Field(
        "pretrained", description="pretrained (torchvision's cache or download) or random (offline, tests)"
    )


class EdgeMaskSettings(TermKind):
    q: Fraction = Field(0.90, description="per-image quantile of the Sobel magnitude that maps to mask 1")
    pow: float = Field(0.5, gt=0, description="exponent applied to the clamped mask")


class Edge(EdgeMaskSettings):
    """Sobel-gradient L1 inside the soft GT edge mask."""

    kind = "edge"
    implementation = f"{TERMS_PACKAGE}.regions:Edge"
    pixel = True
    reduce: Literal["mask", "all"] = Field(
        "mask", description="mask: mean over the mask's own area, per image; all: over all pixels (the scripts')"
    )


class Flat(EdgeMaskSettings):
    """|Laplacian(pred)| inside the GT flat mask (1 - edge mask)."""

    kind = "flat"
    implementation = f"{TERMS_PACKAGE}.regions:Flat"
    pixel = True
    reduce: Literal["mask", "all"] = Field(
        "mask", description="mask: mean over the flat mask's own area, per image; all: over all pixels"
    )
    laplacian: Neighbours = Field(
        4,
        description="4: the 4-neighbour kernel [[0,1,0],[1,-4,1],[0,1,0]] (the reference scripts'); "
        "8: kornia's 8-neighbour kernel (about 1.8x larger raw values)",
    )


class Ffl(EdgeMaskSettings):
    """Focal Frequency Loss (the focal-frequency-loss package) on the pixel patch."""

    kind = "ffl"
    implementation = f"{TERMS_PACKAGE}.ffl:Ffl"
    pixel = True
    alpha: float = Field(1.0, ge=0, description="the focal exponent")
    mask: Literal["none", "edge"] = Field("none", description="edge: both images multiplied by the GT edge mask first")


class PatchGan(TermKind):
    """PatchGAN (pix2pix NLayer) adversarial loss, its discriminator trained with R1 and its own optimiser."""

    kind = "patchgan"
    implementation = f"{TERMS_PACKAGE}.patchgan:PatchGan"
    pixel = True
    after_step = True
    warmup = "d_warmup"
    lr_knob = "lr_d"
    layers: int = Field(3, ge=1, le=6, description="stride-2 convolution blocks")
    ndf: int = Field(64, ge=1, le=1024, description="filters of the first convolution")
    norm: Literal["instance", "batch", "none"] = Field("instance", description="normalisation after each block")
    norm_affine: Annotated[bool, Late] = Field(
        False, description="a learned scale and shift in each InstanceNorm (the reference scripts: true)"
    )
    loss: Literal["hinge", "nonsat"] = Field("hinge", description="hinge: -mean D(fake); nonsat: softplus")
    r1: float = Field(10.0, ge=0, description="R1 gamma; 0 turns R1 off")
    r1_every: Steps = Field(16, ge=1, description="steps between R1 penalties")
    r1_lazy: Literal["scaled", "unscaled"] = Field(
        "scaled",
        description="scaled: (r1/2) E|grad|^2 x r1_every added to the D loss (StyleGAN2, BasicSR); unscaled: "
        "r1 E|grad|^2 with the D loss and penalty halved together (the reference scripts; r1_every/2 x weaker)",
    )
    lr: float = Field(1e-4, gt=0, description="D's AdamW learning rate (stages may schedule it as lr_d)")
    betas: Pair = Field((0.5, 0.999), description="D's AdamW betas")
    wd: float = Field(1e-4, ge=0, description="D's AdamW weight decay")
    d_warmup: Steps = Field(0, ge=0, description="steps D trains alone before the GAN weight is > 0")
    d_collapse: float = Field(0.05, ge=0, description="D loss below this for d_patience D steps: flagged collapsed")
    d_explode: float = Field(10.0, gt=0, description="D loss above this (or not finite) for d_patience: flagged")
    d_patience: int = Field(100, ge=1, le=10_000_000, description="consecutive D steps before a D flag")


# The registry of loss-term kinds: adding a kind is its class above, its runtime module, and one line here.
TERM_KINDS: dict[str, type[TermKind]] = {k.kind: k for k in (VPred, LatentL1, Lpips, Edge, Flat, Ffl, PatchGan)}


# ---- settings blocks -------------------------------------------------------------------------


class Ema(Schema):
    """EMA of the generator: ``ema = d * ema + (1 - d) * weights`` every ``every`` steps; with ``warmup=on``
    ``d = min(decay, (1 + s) / (10 + s))`` for the s-th update (diffusers' EMAModel: the first copies)."""

    decay: float = Field(0.999, ge=0, lt=1, description="the EMA's decay (its largest, with warmup)")
    start: Steps = Field(0, ge=0, description="steps before the first update (the EMA copies the weights until then)")
    every: Steps = Field(1, ge=1, description="steps between updates")
    warmup: bool = Field(True, description="on: diffusers' EMAModel warm-up (1 + s) / (10 + s); off: decay from s = 0")


class Pixel(Schema):
    """The pixel patch that pixel-space terms see."""

    patch: int = Field(256, ge=8, le=4096, description="side of the compared patch, in pixels")
    margin: int = Field(32, ge=0, le=1024, description="pixels decoded around the patch and then cut away")
    clamp: Annotated[bool, Late] = Field(
        False,
        description="clamp the decoded patch to [-1, 1] before the pixel terms (the reference scripts: true; its "
        "gradient is then 0 where the decoder overshoots)",
    )


class Optim(Schema):
    """The generator's AdamW. ``lr`` is the default of the schedulable ``lr`` knob."""

    lr: float = Field(1e-4, gt=0, description="learning rate (stages may schedule it as lr)")
    betas: Pair = Field((0.9, 0.999), description="AdamW betas")
    weight_decay: float = Field(0.0, ge=0, description="AdamW weight decay")
    grad_clip: float = Field(1.0, ge=0, description="max gradient norm; 0 turns clipping off")
    accum: int = Field(1, ge=1, le=4096, description="gradient-accumulation steps per optimiser step")


class PretrainedSettings(Schema):
    """What a generator loaded from a diffusers folder shares: its source, LR conditioning, LoRA, training."""

    subfolder: str | None = Field(None, description="the transformer's subfolder in a whole pipeline's folder")
    cond: Literal["concat", "adapter", "concat+adapter"] = Field(
        "concat",
        description="LR conditioning: concat (the LR latent as extra input channels, new weights at 0), adapter "
        "(an LR encoder's features added to every block through zero-initialised projections), or both",
    )
    adapter_width: int = Field(256, ge=8, le=4096, description="channels of the LR adapter's encoder")
    lora: int = Field(0, ge=0, le=1024, description="LoRA rank (peft); 0: no LoRA")
    lora_alpha: float | None = Field(None, gt=0, description="LoRA alpha (default: the rank)")
    lora_dropout: float = Field(0.0, ge=0, lt=1, description="dropout on the LoRA path")
    lora_targets: str = Field(
        "to_q,to_k,to_v,to_out.0",
        description="linear layers that get LoRA, comma-separated (matched as a suffix of their names)",
    )
    train: Literal["auto", "lora", "lora+cond", "lora+rest", "full"] = Field(
        "auto",
        description="what trains: lora (the adapters), lora+cond (and the conditioning), lora+rest (the adapters "
        "and every parameter but the LoRA-wrapped base weights: the reference scripts' set), full (everything); "
        "auto: lora+cond with LoRA, else full",
    )
    train_add: Annotated[str, Late] = Field(
        "",
        description="glob patterns over parameter names, comma-separated, that train besides (diffusers' names, "
        "e.g. transformer_blocks.*.ff.*; the SR parts: adapter.*, aug_level.*); each must match a parameter",
    )
    train_remove: Annotated[str, Late] = Field(
        "",
        description="glob patterns over parameter names, comma-separated, that stay frozen (applied after "
        "train and train_add); each must match a parameter",
    )
    cond_lr: float = Field(
        1.0,
        gt=0,
        le=1000,
        description="learning-rate multiplier of the parameters of cond_lr_on over the optimiser's lr, e.g. the "
        "reference's 1e-5 base / 1e-4 adapter: lr=1e-5 cond_lr=10",
    )
    cond_lr_on: Annotated[str, Late] = Field(
        "auto",
        description="the parameters trained at cond_lr x lr: auto (the conditioning: the LR input layer, the "
        "adapter, the augmentation embedding), or glob patterns over parameter names, comma-separated (the "
        "reference scripts: adapter.*,pos_embed.proj.*)",
    )
    checkpointing: bool = Field(False, description="activation checkpointing in the transformer blocks")

    @model_validator(mode="after")
    def _lora_needs_a_rank(self) -> Self:
        if self.train in ("lora", "lora+cond", "lora+rest") and not self.lora:
            raise ValueError(f"train={self.train} needs lora=RANK (the LoRA rank, e.g. 16)")
        if self.train == "lora" and "concat" in self.cond:
            raise ValueError(
                "train=lora with cond=concat keeps the LR input weights at 0, so the model never sees the LR: "
                "use train=lora+cond"
            )
        return self


FROM_SCRATCH = ("preset", "depth", "heads", "head_dim", "patch", "init", "lr_context")


class DitModel(PretrainedSettings):
    """diffusers' DiTTransformer2DModel: trained from scratch (a preset sets depth, heads and width; keys given
    override it), or pretrained from a diffusers folder with ``path=``."""

    path: str | None = Field(
        None,
        description="a local DiTTransformer2DModel folder to fine-tune; none: trained from scratch",
        json_schema_extra={"metavar": "DIR", "path": True},
    )
    preset: Literal["tiny", "s", "b", "xl"] = Field(
        "tiny", description="tiny 2 x 2 heads x 32; s 12 x 6 x 64; b 12 x 12 x 64 (DiT-B); xl 28 x 16 x 72 (DiT-XL)"
    )
    depth: int | None = Field(None, ge=1, le=64, description="transformer blocks (default: the preset's)")
    heads: int | None = Field(None, ge=1, le=64, description="attention heads (default: the preset's)")
    head_dim: int | None = Field(None, ge=8, le=256, description="width of a head (default: the preset's)")
    patch: int = Field(2, ge=1, le=8, description="transformer patch size, in latent pixels")
    init: Annotated[Literal["default", "zero"], Late] = Field(
        "default",
        description="default: diffusers' initialisation; zero: the DiT paper's adaLN-Zero (every block's "
        "modulation and the output layer start at 0: the blocks start as identities and the first prediction "
        "is 0, i.e. no residual over the LR with diffusion target=residual)",
    )
    lr_context: Annotated[int, Late] = Field(
        0,
        ge=0,
        le=1024,
        description="channels of a 3x3 convolution over the LR latent added to the DiT's input (a token then sees "
        "its neighbours' LR pixels, not only its own patch; the demo's residual needs them); 0: none",
    )

    @model_serializer(mode="wrap")
    def _dump(self, handler: SerializerFunctionWrapHandler, info: SerializationInfo) -> dict[str, Any]:
        """Only the keys of the DiT that runs: a DiT from scratch has no pretrained settings (but
        ``checkpointing``), a pretrained one's folder decides the keys that describe one from scratch."""
        data: dict[str, Any] = _hash_neutral_defaults(self, handler(self), info)
        if self.path is None:
            return {k: v for k, v in data.items() if k in FROM_SCRATCH or k == "checkpointing"}
        return {k: v for k, v in data.items() if k not in FROM_SCRATCH}

    @model_validator(mode="after")
    def _scratch_or_pretrained(self) -> Self:
        given = [k for k in FROM_SCRATCH if k in self.model_fields_set]
        if self.path is not None and given:
            verb = "describes" if len(given) == 1 else "describe"
            raise ValueError(
                f"{', '.join(given)} {verb} a DiT trained from scratch; with path= the folder's config decides"
            )
        pretrained = [k for k in PretrainedSettings.model_fields if k != "checkpointing" and k in self.model_fields_set]
        if self.path is None and pretrained:
            raise ValueError(f"{', '.join(pretrained)} need a pretrained model: give path=DIR")
        return self


class PixartModel(PretrainedSettings):
    """diffusers' PixArtTransformer2DModel from a local folder (e.g. PixArt-XL-2-512x512 with
    subfolder=transformer), fine-tuned for SR: LR conditioning, a fixed caption, LoRA."""

    path: str = Field(
        description="a local PixArtTransformer2DModel folder (or a whole pipeline's, with subfolder=transformer), "
        "or the original PixArt-alpha checkpoint (FILE.pth, read with weights_only=True)",
        json_schema_extra={"metavar": "DIR", "path": True},
    )
    caption: str = Field(
        "null",
        description="null: the original checkpoint's learned null caption (y_embedding) with path=FILE.pth, one "
        "token of zeros (fixed) with a diffusers folder; or a file: a .safetensors holding one caption embedding "
        "(L x C), or an original PixArt .pth checkpoint whose y_embedding is taken",
        json_schema_extra={"path": True},
    )
    adapter: Annotated[Literal["small", "pyramid"], Late] = Field(
        "small",
        description="the LR adapter of cond=adapter: small (three convs, one zero-init linear per block added to "
        "its input) or pyramid (the reference scripts': a feature pyramid with per-layer heads, hybrid adaLN "
        "injection gated by s_layer*tanh(MLP(t)), a style vector added to t)",
    )
    adapter_layers: Annotated[str, Late] = Field(
        "front_dense",
        pattern=r"^(front_dense|all|\d{1,3}(,\d{1,3})*)$",
        description="blocks the pyramid adapter injects into: front_dense (0-14, 15, 17, 19, 21, 23: the scripts'; "
        "those that exist), all, or block indices I,J,...",
    )
    pyramid_width: Annotated[int, Late] = Field(
        128,
        ge=32,
        le=1024,
        multiple_of=32,
        description="base width of the pyramid adapter (x2, x4, x8 over its stages; GroupNorm of 32 groups)",
    )
    pyramid_heads: Annotated[Literal["zero", "default"], Late] = Field(
        "zero",
        description="init of each pyramid head's last conv: zero (the scripts'; with the zero-init injection "
        "the spatial path then never gets a gradient, lint A001) or default (PyTorch's: it learns, and step 0 "
        "still equals the base model)",
    )

    @model_validator(mode="after")
    def _pyramid_needs_the_adapter(self) -> Self:
        pyramid = [
            k for k in ("adapter", "adapter_layers", "pyramid_width", "pyramid_heads") if k in self.model_fields_set
        ]
        if pyramid and "adapter" not in self.cond:
            raise ValueError(f"{', '.join(pyramid)} set the LR adapter: give cond=adapter or cond=concat+adapter")
        return self


class CustomModel(Schema):
    """Your own generator: a factory function returning an nn.Module (see docs/runtime.md); every other key
    is passed to it (numbers and true/false converted)."""

    model_config = ConfigDict(extra="allow", frozen=True, allow_inf_nan=False, defer_build=True)

    factory: str = Field(description="package.module:function", json_schema_extra={"metavar": "MODULE:FUNCTION"})
    file: str | None = Field(
        None,
        description="a Python file that defines the factory's module (else imported)",
        json_schema_extra={"path": True},
    )


# (depth, heads, head_dim) of each preset; DiT-S/B/XL as in the DiT paper
DIT_PRESETS = {"tiny": (2, 2, 32), "s": (12, 6, 64), "b": (12, 12, 64), "xl": (28, 16, 72)}


class PixelUnshuffleLatent(Schema):
    """Exact, invertible space-to-depth: 3 x H x W pixels -> 3 f^2 x H/f x W/f (the CPU demo's latent)."""

    factor: int = Field(4, ge=1, le=16, description="pixels per latent pixel along each side")


class VaeLatent(Schema):
    """A frozen diffusers AutoencoderKL: latents = posterior mean x scaling factor."""

    path: str = Field(
        description="a local AutoencoderKL folder; nothing is downloaded",
        json_schema_extra={"metavar": "DIR", "path": True},
    )
    subfolder: str | None = Field(None, description="the VAE's subfolder in a whole pipeline's folder (vae)")
    scaling: float | None = Field(None, gt=0, description="latent scaling; default: the VAE config's scaling_factor")


class Diffusion(Schema):
    """diffusers' DDPMScheduler with v-prediction, and the SR conditioning of the LR latent. The default
    schedule is PixArt's and DiT's (IDDPM ``linear`` 1e-4..0.02), which SD-VAE-latent PixArt/DiT checkpoints
    were trained with; Stable Diffusion's is ``scaled_linear`` 0.00085..0.012."""

    train_steps: int = Field(1000, ge=2, le=100_000, description="diffusion timesteps")
    beta_schedule: Literal["linear", "scaled_linear", "squaredcos_cap_v2"] = Field(
        "linear", description="diffusers' beta schedule (the same for training and validation)"
    )
    beta_start: float = Field(1e-4, gt=0, lt=1, description="first beta (linear and scaled_linear)")
    beta_end: float = Field(0.02, gt=0, lt=1, description="last beta (linear and scaled_linear)")
    target: Literal["x0", "residual"] = Field(
        "x0",
        description="what the diffusion generates: x0, the HR latent (the reference); residual, the HR latent minus "
        "the LR latent (added back after sampling: SR diffusion on the detail only, learnt far faster from scratch)",
    )
    lr_noise: float = Field(0.15, ge=0, le=1, description="max std of the noise added to the LR latent")
    cond_dropout: float = Field(
        0.1, ge=0, le=1, description="probability of dropping a training sample's conditioning (dropout_drops)"
    )
    dropout_drops: Annotated[Literal["lr", "style"], Late] = Field(
        "lr",
        description="what a dropped sample loses: lr (the whole LR latent is zeroed, and its augmentation level) "
        "or style (only the pyramid adapter's style vector, as the reference scripts did)",
    )
    set_alpha_to_one: Annotated[bool, Late] = Field(
        True,
        description="DDIM's last step goes to alpha = 1 (diffusers' default); false: to the first timestep's "
        "alpha (the reference scripts)",
    )
    t_min: Annotated[int, Late] = Field(
        0,
        ge=0,
        le=99_999,
        description="training timesteps are drawn uniformly from t_min to train_steps - 1; 0: all of them (the "
        "reference). A model sampled in one step from the last timestep (the demo: eval steps=1 spacing=trailing) "
        "uses only its high-t prediction, which uniform timesteps train a tenth of the time, and with the "
        "smallest loss; lint D001 flags an eval that samples below t_min",
    )

    @field_validator("t_min")
    @classmethod
    def _t_min_below_steps(cls, value: int, info: ValidationInfo) -> int:
        steps = info.data.get("train_steps")  # validated before t_min (declared first); absent when invalid
        if steps is not None and value >= steps:
            raise ValueError(f"it leaves no timestep to train: give a t_min below train_steps={steps}")
        return value


Degrade = Literal["bicubic", "highorder", "realesrgan"]
DEGRADE_HELP = "how the LR is made: bicubic, highorder (the reference's) or realesrgan; a degrade block sets its ranges"


def _ordered(value: tuple[float, float]) -> tuple[float, float]:
    if value[0] > value[1]:
        raise ValueError("the low end is above the high end (write LOW,HIGH)")
    return value


def _within(lo: float, hi: float) -> Callable[[tuple[float, float]], tuple[float, float]]:
    def check(value: tuple[float, float]) -> tuple[float, float]:
        if not lo <= value[0] <= value[1] <= hi:
            raise ValueError(f"both ends must lie in [{lo:g}, {hi:g}]")
        return value

    return check


def _probabilities(value: tuple[float, ...]) -> tuple[float, ...]:
    if min(value) < 0 or abs(sum(value) - 1) > 1e-6:
        raise ValueError(f"probabilities >= 0 that sum to 1 (these sum to {sum(value):g})")
    return value


def _range(lo: float, hi: float) -> tuple[BeforeValidator, AfterValidator, AfterValidator]:
    """The validators of LOW,HIGH with lo <= LOW <= HIGH <= hi."""
    return BeforeValidator(_pair), AfterValidator(_ordered), AfterValidator(_within(lo, hi))


Probs3 = Annotated[tuple[float, float, float], BeforeValidator(_pair), AfterValidator(_probabilities)]
Probs6 = Annotated[
    tuple[float, float, float, float, float, float], BeforeValidator(_pair), AfterValidator(_probabilities)
]
Kernel = Annotated[tuple[float, float], *_range(1, 63)]
Sigma = Annotated[tuple[float, float], *_range(0.01, 50)]
Resize = Annotated[tuple[float, float], *_range(0.05, 8)]
Noise = Annotated[tuple[float, float], *_range(0, 255)]
Quality = Annotated[tuple[float, float], *_range(1, 100)]
Shape = Annotated[tuple[float, float], *_range(0.05, 20)]


class DegradeCommon(Schema):
    on: Literal["auto", "cpu", "device"] = Field(
        "auto",
        description="where LR images are made: cpu (in the data workers; JPEG by libjpeg), device (batched on the "
        "run's device; JPEG by kornia); auto: device on CUDA, else cpu",
    )


class BicubicDegrade(DegradeCommon):
    """Antialiased bicubic down to 1/scale (the classic SR benchmark's LR)."""


class HighorderDegrade(DegradeCommon):
    """The reference setup's: blur, resize, noise and JPEG in shuffled order, a second such stage with
    probability ``second``, then ``final`` down to 1/scale."""

    blur_prob: float = Field(1.0, ge=0, le=1, description="probability of the blur in a stage")
    kernel: Kernel = Field((7, 21), description="blur kernel sizes (odd sizes in the range)")
    iso_prob: float = Field(
        0.5, ge=0, le=1, description="probability of an isotropic kernel (else anisotropic, rotated)"
    )
    sigma: Sigma = Field((0.2, 3.0), description="blur sigma range, per axis")
    resize: Resize = Field((0.3, 1.8), description="resize factor range")
    resize_modes: str = Field(
        "nearest,bilinear,bicubic",
        pattern=r"^(nearest|bilinear|bicubic|area)(,(nearest|bilinear|bicubic|area))*$",
        description="resize modes drawn from",
        json_schema_extra={"allowed": "a comma list of nearest, bilinear, bicubic, area"},
    )
    noise: Noise = Field((0.0, 0.05), description="Gaussian noise std range (of the [0, 1] range)")
    jpeg: Quality = Field((30, 95), description="JPEG quality range")
    second: float = Field(0.35, ge=0, le=1, description="probability of a second stage")
    final: Literal["bicubic", "bilinear", "area"] = Field("bicubic", description="the final resize to 1/scale")


class RealesrganDegrade(DegradeCommon):
    """Real-ESRGAN's second-order pipeline (Wang et al. 2021; RealESRGAN_x4plus's settings as defaults):
    generalized-Gaussian and plateau kernels, sinc filters, Gaussian and Poisson noise (grey or colour),
    JPEG, and a final sinc + resize + JPEG in random order."""

    kernel: Kernel = Field((7, 21), description="blur kernel sizes (odd sizes in the range)")
    kernel_probs: Probs6 = Field(
        (0.45, 0.25, 0.12, 0.03, 0.12, 0.03),
        description="probabilities of iso, aniso, generalized iso/aniso, plateau iso/aniso kernels",
    )
    sinc_prob: float = Field(0.1, ge=0, le=1, description="probability of a sinc kernel instead")
    sigma: Sigma = Field((0.2, 3.0), description="first-stage blur sigma range")
    sigma2: Sigma = Field((0.2, 1.5), description="second-stage blur sigma range")
    betag: Shape = Field((0.5, 4.0), description="generalized-Gaussian shape range")
    betap: Shape = Field((1.0, 2.0), description="plateau shape range")
    resize_probs: Probs3 = Field((0.2, 0.7, 0.1), description="first resize: up, down, keep")
    resize: Resize = Field((0.15, 1.5), description="first resize factor range")
    resize_probs2: Probs3 = Field((0.3, 0.4, 0.3), description="second resize: up, down, keep")
    resize2: Resize = Field((0.3, 1.2), description="second resize factor range (of the LR size)")
    noise_prob: float = Field(0.5, ge=0, le=1, description="first stage: Gaussian noise (else Poisson)")
    noise_prob2: float = Field(0.5, ge=0, le=1, description="second stage: Gaussian noise (else Poisson)")
    noise: Noise = Field((1.0, 30.0), description="first Gaussian noise std range, in 8-bit levels")
    noise2: Noise = Field((1.0, 25.0), description="second Gaussian noise std range, in 8-bit levels")
    poisson: Shape = Field((0.05, 3.0), description="first Poisson noise scale range")
    poisson2: Shape = Field((0.05, 2.5), description="second Poisson noise scale range")
    gray_prob: float = Field(0.4, ge=0, le=1, description="probability of grey (not colour) noise")
    jpeg: Quality = Field((30, 95), description="first JPEG quality range")
    jpeg2: Quality = Field((30, 95), description="final JPEG quality range")
    second: float = Field(1.0, ge=0, le=1, description="probability of the second stage (always, in the paper)")
    second_blur_prob: float = Field(0.8, ge=0, le=1, description="probability of the second blur")
    final_sinc_prob: float = Field(0.8, ge=0, le=1, description="probability of the final sinc filter")


class BuiltinData(Schema):
    """scikit-image's photographs plus procedural defocus scenes; nothing to download."""

    crop: int = Field(64, ge=16, le=2048, description="HR crop side in pixels")
    scale: int = Field(4, ge=1, le=8, description="super-resolution factor")
    batch: int = Field(2, ge=1, le=1024, description="samples per micro-batch (per process under torchrun)")
    degrade: Degrade = Field("bicubic", description=DEGRADE_HELP)
    scenes: int = Field(8, ge=0, le=1000, description="procedural defocus scenes added to the photos")
    workers: int = Field(0, ge=0, le=64, description="DataLoader worker processes (0: in the training process)")


class FolderData(Schema):
    """HR images in a folder (searched recursively); LR made on the fly."""

    root: str = Field(description="a folder of HR images", json_schema_extra={"metavar": "PATH", "path": True})
    crop: int = Field(512, ge=16, le=8192, description="HR crop side in pixels")
    scale: int = Field(4, ge=1, le=8, description="super-resolution factor")
    batch: int = Field(1, ge=1, le=1024, description="samples per micro-batch (per process under torchrun)")
    degrade: Degrade = Field("highorder", description=DEGRADE_HELP)
    workers: int = Field(0, ge=0, le=64, description="DataLoader worker processes (0: in the training process)")
    strict: bool = Field(False, description="a corrupt image is an error instead of skipped and counted")
    max_pixels: int = Field(
        100_000_000, ge=1, description="images with more pixels are skipped (strict: an error) before decoding"
    )


class PairedData(Schema):
    """HR and LR images with the same file names in two folders."""

    hr: str = Field(description="a folder of HR images", json_schema_extra={"metavar": "PATH", "path": True})
    lr: str = Field(
        description="a folder of LR images with the HR images' file names",
        json_schema_extra={"metavar": "PATH", "path": True},
    )
    crop: int = Field(512, ge=16, le=8192, description="HR crop side in pixels")
    scale: int = Field(4, ge=1, le=8, description="super-resolution factor: HR = scale x LR")
    batch: int = Field(1, ge=1, le=1024, description="samples per micro-batch (per process under torchrun)")
    workers: int = Field(0, ge=0, le=64, description="DataLoader worker processes (0: in the training process)")
    strict: bool = Field(False, description="a corrupt image is an error instead of skipped and counted")
    max_pixels: int = Field(
        100_000_000, ge=1, description="images with more pixels are skipped (strict: an error) before decoding"
    )


class Run(Schema):
    """Where and how a run executes."""

    seed: int = Field(0, ge=0, le=2**63 - 1, description="every random draw of the run derives from it")
    device: str = Field(
        "auto",
        pattern=r"^(auto|cpu|cuda(:\d+)?)$",
        description="auto: CUDA when present, else the CPU",
        json_schema_extra={"allowed": "auto, cpu, cuda, cuda:N"},
    )
    precision: Literal["auto", "bf16", "fp32"] = Field(
        "auto", description="auto: bf16 autocast on CUDA, fp32 on the CPU"
    )
    checkpoint_every: Steps = Field(1000, ge=1, description="steps between checkpoints")
    keep: int = Field(3, ge=1, le=1000, description="checkpoints kept (the newest)")
    out: str | None = Field(None, description="run folder; default runs/<plan>-<time>")
    nan_steps: int = Field(
        5, ge=1, le=1_000_000, description="consecutive steps with a non-finite loss or gradient before the run stops"
    )
    compile: bool = Field(False, description="torch.compile the generator (graphs compiled are counted and reported)")
    compile_backend: Literal["inductor", "aot_eager", "eager"] = Field(
        "inductor", description="torch.compile backend; aot_eager/eager compile fast but do not speed up (for checks)"
    )
    threads: Threads = Field(
        "auto",
        description="CPU threads of torch: auto (OMP_NUM_THREADS when set, else the cores this process may use, "
        "divided among the processes of a torchrun) or a number",
    )


class Log(Schema):
    """What is logged, and how often."""

    every: Steps = Field(10, ge=1, description="steps between metrics lines")
    shadow: bool = Field(False, description="also compute non-live terms' raw values at log steps, without gradient")
    grads: Literal["auto", "on", "off"] = Field(
        "auto", description="gradient diagnostics at log steps; auto: on for CPU runs, off on GPU runs"
    )
    tensorboard: Literal["auto", "on", "off"] = Field(
        "auto", description="TensorBoard events beside metrics.jsonl; auto: when tensorboard is installed"
    )


# The validation images of eval images=builtin, by role, and the metrics every eval reports.
BUILTIN_EVAL_ROLES = ("high_texture", "low_texture", "defocus")
EVAL_METRICS = ("psnr", "ssim", "psnr_rgb", "ssim_rgb", "lpips", "esr", "fhr")


PACK_ROLE = "pack"  # the metric image of an eval pack's mean: pack.psnr


def eval_roles(images: str, pack: str | None = None) -> tuple[str, ...]:
    """The metric images of an eval: the roles of ``images=`` (the builtin three, or the ROLE of each
    ROLE=PATH), and ``pack`` when the eval has a pack."""
    roles = BUILTIN_EVAL_ROLES if images == "builtin" else tuple(i.partition("=")[0].strip() for i in images.split(","))
    return roles + ((PACK_ROLE,) if pack else ())


class Eval(Schema):
    """Validation with the EMA weights on fixed images (no eval line, no validation)."""

    every: Steps = Field(1000, ge=1, description="steps between evals (and one at the end)")
    sampler: Literal["ddim"] = Field("ddim", description="diffusers' DDIMScheduler with v-prediction")
    steps: int = Field(50, ge=1, le=1000, description="sampler steps")
    images: str = Field(
        "builtin",
        description="builtin, or ROLE=PATH,ROLE=PATH,... (roles: any names)",
        json_schema_extra={"path": True},
    )
    size: int = Field(128, ge=16, le=4096, description="side of the builtin validation crops, in pixels")
    lq_init: float = Field(
        0.1,
        ge=0,
        le=1,
        description="fraction of the sampler's schedule skipped: start from the LR latent noised to "
        "ts[round(lq_init x (steps - 1))] (the reference's strength); 0 = from pure noise",
    )
    spacing: Annotated[Literal["leading", "trailing"], Late] = Field(
        "leading",
        description="diffusers' timestep_spacing of the sampler: leading (diffusers' default; 2 steps are t = 500, "
        "0) or trailing (the schedule's end included: 1 step is t = 999, 2 steps are 999, 499)",
    )
    start_noise: Annotated[float, Late] = Field(
        1.0,
        ge=0,
        le=1,
        description="scale of the sampler's start noise: 1 = the schedule's; 0 = none (the start is lq_init's "
        "LR latent un-noised, or zeros; with diffusion target=residual both are the LR itself): the SR is then a "
        "function of the LR alone",
    )
    cfg: float = Field(1.0, ge=1, le=20, description="classifier-free guidance scale; 1 = none")
    guidance_drops: Annotated[Literal["lr", "adapter"], Late] = Field(
        "lr",
        description="what the unconditional branch of guidance drops: lr (the LR latent is zeroed) or adapter "
        "(the adapter's features and style; the concatenated LR latent is kept, as the reference scripts did)",
    )
    seed: int = Field(0, ge=0, description="the validation LR and the sampler's start noise derive from it")
    lpips: Literal["auto", "off"] = Field("auto", description="LPIPS metric when the pretrained trunk is cached")
    pack: str | None = Field(
        None,
        description="also validate on a pack (a folder with gt*/ and lq*/ of the same file names, as 'ditsr-plan "
        "pack make' writes); its mean is the metric image 'pack' (pack.psnr, pack.lpips, ...)",
        json_schema_extra={"metavar": "DIR", "path": True},
    )
    pack_limit: int | None = Field(None, ge=1, le=100_000, description="validate on the pack's first N images only")
    pack_input: Annotated[Literal["auto", "stored", "upsample"], Late] = Field(
        "auto",
        description="what a pack's LR becomes before the model: stored (the pack's stored upsampled LR, e.g. "
        "lq512/, is the model's input and the baseline, as the reference scripts did), upsample (the tool "
        "upsamples the true LR), auto: stored when the pack holds one, else upsample",
    )
    tile: Annotated[Tile, Late] = Field(
        "auto",
        description="tiled sampling for images larger than a tile: the HR tile side in pixels (tiles overlap and "
        "are blended at every sampler step; the VAE encodes and decodes tiled too); auto: 4 x the data crop; "
        "off: whole images",
    )
    overlap: Annotated[Overlap, Late] = Field(
        "auto",
        description="overlap of neighbouring tiles in HR pixels; auto: a quarter of the tile",
    )
    color_fix: Annotated[Literal["none", "wavelet", "adain"], Late] = Field(
        "none",
        description="correct the SR's colours to the LR's: wavelet (the SR's high frequencies on the LR's low "
        "ones), adain (per-channel mean and std of the LR), none",
    )


# A block maps a kind to its schema; a block that takes no kind has the single kind None.
BLOCKS: dict[str, dict[str | None, type[Schema]]] = {
    "ema": {None: Ema},
    "pixel": {None: Pixel},
    "optim": {None: Optim},
    "model": {"dit": DitModel, "pixart": PixartModel, "custom": CustomModel},
    "latent": {"pixel_unshuffle": PixelUnshuffleLatent, "vae": VaeLatent},
    "diffusion": {None: Diffusion},
    "data": {"builtin": BuiltinData, "folder": FolderData, "paired": PairedData},
    "degrade": {"bicubic": BicubicDegrade, "highorder": HighorderDegrade, "realesrgan": RealesrganDegrade},
    "run": {None: Run},
    "log": {None: Log},
    "eval": {None: Eval},
}

# Blocks that always apply, with the kind a plan gets when it does not write the block. Other
# blocks (``ema``) are off unless written.
DEFAULT_BLOCKS: dict[str, str | None] = {
    "pixel": None,
    "optim": None,
    "model": "dit",
    "latent": "pixel_unshuffle",
    "diffusion": None,
    "data": "builtin",
    "run": None,
    "log": None,
}


def kind_of(block: str, settings: Schema) -> str | None:
    """The kind of block ``block`` whose schema ``settings`` is an instance of (``highorder``)."""
    return next(kind for kind, schema in BLOCKS[block].items() if type(settings) is schema)


def step_fields(model: type[BaseModel]) -> list[str]:
    """Names of the fields of ``model`` that count training steps."""
    return [
        name for name, info in model.model_fields.items() if any(isinstance(m, StepQuantity) for m in info.metadata)
    ]


def path_fields(model: type[BaseModel]) -> list[str]:
    """Names of the fields of ``model`` that hold file or folder paths (``json_schema_extra`` ``path``): a
    relative one is resolved against the folder of the plan file that writes it. A field's default (``null``,
    ``builtin``) is a keyword, not a path; ``images=`` holds ``ROLE=PATH`` items."""
    return [
        name
        for name, info in model.model_fields.items()
        if isinstance(info.json_schema_extra, dict) and info.json_schema_extra.get("path")
    ]
