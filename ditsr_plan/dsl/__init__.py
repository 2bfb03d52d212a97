"""Plan text -> validated spec: ``parser`` (lark parse tree -> syntax nodes), ``loader`` (extends,
pydantic validation -> :class:`~ditsr_plan.dsl.spec.PlanSpec`), ``formatter`` (``fmt``).

Nothing is imported here, so that importing one module does not pull in lark and pydantic. The
schemas and numbers a plan is validated against live in :mod:`ditsr_plan.settings`.
"""
