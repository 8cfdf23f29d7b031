"""Unit tests of small pure pieces: ranges, tokens, depends, tags, statuses, settings."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from common.core.errors import BadRequest
from services.deployments.app.deployments import status_filter
from services.deployments.app.device import REPORTABLE_STATUSES
from services.deployments.app.downloads import RangeNotSatisfiable, byte_range
from services.deployments.app.releases import normalize_tags
from services.deployments.config import Settings
from services.deployments.models import ACTIVE_STATUSES, STAT_NAMES, DeviceDeploymentStatus
from services.deployments.store.artifacts import depends_combinations
from services.deployments.store.deployments import search_tokens


class TestByteRange:
    @pytest.mark.parametrize(
        ("header", "expected"),
        [
            (None, None),
            ("", None),
            ("bytes=0-9", (0, 9)),
            ("bytes=10-", (10, 99)),
            ("bytes=-5", (95, 99)),
            ("bytes=-500", (0, 99)),
            ("bytes=90-500", (90, 99)),
            ("bytes=0-1,4-5", None),
            ("items=0-1", None),
            ("bytes=-", None),
        ],
    )
    def test_ranges(self, header: str | None, expected: tuple[int, int] | None) -> None:
        assert byte_range(header, 100) == expected

    @pytest.mark.parametrize("header", ["bytes=100-", "bytes=5-2", "bytes=-0"])
    def test_unsatisfiable(self, header: str) -> None:
        with pytest.raises(RangeNotSatisfiable) as caught:
            byte_range(header, 100)
        assert caught.value.headers == {"Content-Range": "bytes */100"}


class TestSearchTokens:
    def test_tokens(self) -> None:
        assert search_tokens("Spring Rollout", "app-1.0") == ["spring", "rollout", "app", "1", "0"]
        assert search_tokens("") == []
        assert search_tokens("a  a--b") == ["a", "b"]


class TestDependsCombinations:
    def test_unwinds_lists(self) -> None:
        combos = depends_combinations({"device_type": ["b", "a"], "checksum": "2"})
        assert combos == [
            '{"checksum":"2","device_type":"a"}',
            '{"checksum":"2","device_type":"b"}',
        ]

    def test_order_independent(self) -> None:
        assert depends_combinations({"x": ["1"], "device_type": ["a"]}) == depends_combinations(
            {"device_type": ["a"], "x": "1"}
        )


class TestTags:
    def test_normalized(self) -> None:
        assert normalize_tags(["A", "a", "b.c-d_e"]) == ["a", "b.c-d_e"]

    @pytest.mark.parametrize(
        "tags", [["with space"], [""], [5], [f"t{i}" for i in range(21)], ["x" * 1025]]
    )
    def test_refused(self, tags: list[object]) -> None:
        with pytest.raises(BadRequest):
            normalize_tags(tags)


class TestStatuses:
    def test_menders_integers(self) -> None:
        assert DeviceDeploymentStatus.FAILURE.value == 256
        assert DeviceDeploymentStatus.PENDING.value == 2304
        assert DeviceDeploymentStatus.DECOMMISSIONED.value == 3328
        assert DeviceDeploymentStatus.from_label("already-installed") == 3072
        assert {s.label for s in ACTIVE_STATUSES} == {
            "pause_before_installing",
            "pause_before_committing",
            "pause_before_rebooting",
            "downloading",
            "installing",
            "rebooting",
            "pending",
        }
        assert len(STAT_NAMES) == 13
        assert DeviceDeploymentStatus.PENDING not in REPORTABLE_STATUSES

    def test_filters(self) -> None:
        assert status_filter(None) is None
        assert status_filter("pause") == sorted(
            s for s in DeviceDeploymentStatus if s.label.startswith("pause")
        )
        assert status_filter("success") == [DeviceDeploymentStatus.SUCCESS]
        with pytest.raises(BadRequest):
            status_filter("sleeping")


class TestSettings:
    def test_placeholder_secret_only_in_development(self) -> None:
        assert Settings(dev_mode=True).presign_secret == "change-me"
        with pytest.raises(ValidationError, match="presign_secret"):
            Settings(dev_mode=False)
        assert Settings(dev_mode=False, presign_secret="s" * 32).mongo_db == "deployment_service"
