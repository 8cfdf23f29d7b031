"""Subscription plans: open-source installations have none."""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

from services.useradm.models import Plan, PlanBinding

if TYPE_CHECKING:
    from common.core.pages import Page

__all__ = ["PLANS", "PlansApp"]

PLANS: Final[tuple[Plan, ...]] = ()


class PlansApp:
    """Answers the plan questions of the web UI from a fixed list."""

    def __init__(self, plans: tuple[Plan, ...] = PLANS) -> None:
        self._plans = plans

    def list_plans(self, page: Page) -> list[Plan]:
        """One page of the available plans."""
        return list(self._plans[page.skip : page.skip + page.per_page])

    def plan_binding(self) -> PlanBinding:
        """The plan of the caller's tenant."""
        if len(self._plans) == 1:
            return PlanBinding(plan=self._plans[0])
        # NOTE: without exactly one plan, Mender answers with an empty plan.
        return PlanBinding(plan=Plan(name="", display_name=""))
