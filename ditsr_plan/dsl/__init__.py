"""Plan text -> validated spec: ``parser`` (lark parse tree -> syntax nodes), ``loader`` (extends,
pydantic validation -> :class:`~ditsr_plan.dsl.spec.PlanSpec`), ``formatter`` (``fmt``).

Nothing is imported here, so that light modules (``numbers``) do not pull in lark and pydantic.
"""
