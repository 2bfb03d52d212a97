"""A loss-term kind written the way a new kind is added: its settings schema and its runtime module. Here
both sit in one test module; ``test_term_registry.py`` registers it with one line."""

from __future__ import annotations

from typing import ClassVar

from pydantic import Field

from ditsr_plan.runtime.train.terms.base import LossTerm, StepTensors
from ditsr_plan.settings.schemas import TermKind


class ToySettings(TermKind):
    """Mean absolute velocity error, times a scale."""

    kind: ClassVar[str] = "toy"
    implementation: ClassVar[str] = "tests.runtime.train.toy_kind:Toy"
    scale: float = Field(1.0, gt=0, description="what the raw value is multiplied by")


class Toy(LossTerm):
    def forward(self, s: StepTensors):
        return self.settings.scale * (s.v_hat.float() - s.v.float()).abs().mean()
