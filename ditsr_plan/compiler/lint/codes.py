"""Every lint rule's code and name, without the rules: what ``lint`` needs to check ``--select``/``--ignore``
and to label findings read back from the compile cache, where importing the rules (and through them the
graph, the setting schemas and pydantic) would cost more than the whole cached lint.

Kept equal to ``rules.RULES``, in its order, by tests/compiler/test_lint_cache.py.
"""

from __future__ import annotations

RULE_NAMES: dict[str, str] = {
    "T001": "never-trained",
    "W001": "jump-without-ramp",
    "W002": "pixel-in-reconstruction",
    "G001": "gan-too-strong",
    "G002": "gan-ramp-too-short",
    "G003": "gan-before-perceptual",
    "G004": "gan-without-r1",
    "G005": "gan-without-ema",
    "F001": "ffl-too-strong",
    "F002": "ffl-too-early",
    "R001": "unconstrained-perceptual",
    "R002": "flat-below-edge",
    "M001": "patch-too-small",
    "X001": "runs-code",
    "A001": "adapter-cannot-learn",
    "D001": "untrained-timesteps",
    "V001": "watch-never-fires",
    "N001": "unused-noqa",
}
