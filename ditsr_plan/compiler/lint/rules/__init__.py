"""Every lint rule, one module each, in the order ``ditsr-plan rules`` lists them."""

from .a001_adapter_cannot_learn import AdapterCannotLearn
from .d001_untrained_timesteps import UntrainedTimesteps
from .f001_ffl_too_strong import FflTooStrong
from .f002_ffl_too_early import FflTooEarly
from .g001_gan_too_strong import GanTooStrong
from .g002_gan_ramp_too_short import GanRampTooShort
from .g003_gan_before_perceptual import GanBeforePerceptual
from .g004_gan_without_r1 import GanWithoutR1
from .g005_gan_without_ema import GanWithoutEma
from .m001_patch_too_small import PatchTooSmall
from .n001_unused_noqa import UnusedNoqa
from .r001_unconstrained_perceptual import UnconstrainedPerceptual
from .r002_flat_below_edge import FlatBelowEdge
from .t001_never_trained import NeverTrained
from .v001_watch_never_fires import WatchNeverFires
from .w001_jump_without_ramp import JumpWithoutRamp
from .w002_pixel_in_reconstruction import PixelInReconstruction
from .x001_runs_code import RunsCode

RULES = (
    NeverTrained,
    JumpWithoutRamp,
    PixelInReconstruction,
    GanTooStrong,
    GanRampTooShort,
    GanBeforePerceptual,
    GanWithoutR1,
    GanWithoutEma,
    FflTooStrong,
    FflTooEarly,
    UnconstrainedPerceptual,
    FlatBelowEdge,
    PatchTooSmall,
    RunsCode,
    AdapterCannotLearn,
    UntrainedTimesteps,
    WatchNeverFires,
    UnusedNoqa,
)

BY_CODE = {rule.code: rule for rule in RULES}
