"""Renewing a lease while work runs: renewed in time, given up when lost, kept through errors."""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime, timedelta

import pytest

from common.core.leases import LeaseTerms, renewing
from tests.toolkit import eventually

TERMS = LeaseTerms(duration=timedelta(seconds=0.3))


class TestRenewing:
    async def test_renewed_every_third_of_the_lease_while_the_work_runs(self) -> None:
        renewals: list[datetime] = []

        async def renew(until: datetime) -> bool:
            renewals.append(until)
            return True

        async with renewing(renew, TERMS, what="job 1"):
            assert await eventually(lambda: len(renewals) >= 3, what="three renewals")
        assert all(until > datetime.now(UTC) - TERMS.duration for until in renewals)
        # Once the work is over, nothing renews it any more.
        assert [t for t in asyncio.all_tasks() if t.get_name() == "lease-job 1"] == []

    async def test_a_lost_lease_is_logged_and_no_longer_renewed(
        self, caplog: pytest.LogCaptureFixture
    ) -> None:
        calls = 0

        async def renew(until: datetime) -> bool:
            nonlocal calls
            calls += 1
            return False

        with caplog.at_level(logging.WARNING, logger="common.core.leases"):
            async with renewing(renew, TERMS, what="job 2"):
                assert await eventually(
                    lambda: "lost the lease on job 2 to another process" in caplog.text,
                    what="the loss logged",
                )
        assert calls == 1

    async def test_a_failed_renewal_is_tried_again(self, caplog: pytest.LogCaptureFixture) -> None:
        calls = 0

        async def renew(until: datetime) -> bool:
            nonlocal calls
            calls += 1
            if calls == 1:
                raise RuntimeError("database unreachable")
            return True

        with caplog.at_level(logging.ERROR, logger="common.core.leases"):
            async with renewing(renew, TERMS, what="job 3"):
                assert await eventually(lambda: calls >= 2, what="a second try")
        assert "could not renew the lease on job 3" in caplog.text

    def test_each_process_is_its_own_holder(self) -> None:
        assert LeaseTerms().owner != LeaseTerms().owner
        assert LeaseTerms().duration == timedelta(seconds=30)
