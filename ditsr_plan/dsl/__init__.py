"""Plan text -> validated spec (lark parse tree -> syntax nodes -> pydantic-validated spec)."""

from ditsr_plan.dsl.loader import load_plan
from ditsr_plan.dsl.parser import parse_plan

__all__ = ["load_plan", "parse_plan"]
