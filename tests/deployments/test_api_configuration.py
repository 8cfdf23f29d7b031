"""Configuration deployments: created by deviceconfig, served as a signed, generated artifact."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

from services.deployments.artifact import ArtifactParser
from services.deployments.storage.signing import URLSigner
from tests.deployments.conftest import TEST_SECRET, Service
from tests.deployments.flows import DEPLOYMENTS, poll, report, stats_of
from tests.deployments.helpers import run_mender_artifact, user_headers

INTERNAL = "/api/internal/v1/deployments"
CONFIG_PATH = "/api/devices/v1/deployments/download/configuration"


def _url(tenant: str, deployment_id: str, device_id: str) -> str:
    return (
        f"{INTERNAL}/tenants/{tenant}/configuration/deployments/{deployment_id}/devices/{device_id}"
    )


class TestCreateConfigurationDeployment:
    async def test_created(self, service: Service) -> None:
        deployment_id = str(uuid.uuid4())
        response = await service.client.post(
            _url("", deployment_id, "dev-1"),
            json={"name": "config-1", "configuration": {"timezone": "UTC"}},
        )
        assert response.status_code == 201
        assert response.headers["Location"].endswith(f"/deployments/{deployment_id}")
        shown = await service.client.get(f"{DEPLOYMENTS}/{deployment_id}", headers=user_headers())
        body = shown.json()
        assert body["type"] == "configuration"
        assert body["configuration"] == '{"timezone":"UTC"}'
        assert body["artifact_name"] == "config-1"
        assert body["max_devices"] == 1
        again = await service.client.post(
            _url("", deployment_id, "dev-1"), json={"name": "config-1", "configuration": {}}
        )
        assert again.status_code == 409
        configuration = await service.client.get(
            f"{DEPLOYMENTS}?type=configuration", headers=user_headers()
        )
        assert [d["id"] for d in configuration.json()] == [deployment_id]
        software = await service.client.get(f"{DEPLOYMENTS}?type=software", headers=user_headers())
        assert software.json() == []

    async def test_bad_requests(self, service: Service) -> None:
        bad_id = await service.client.post(
            _url("", "not-a-uuid", "dev"), json={"name": "c", "configuration": {}}
        )
        assert bad_id.status_code == 400
        assert bad_id.json()["error"] == "Deployment ID must be a valid UUID"
        for body in ({}, {"name": "c"}, {"name": 1, "configuration": {}}):
            response = await service.client.post(_url("", str(uuid.uuid4()), "dev"), json=body)
            assert response.status_code == 400, body


class TestConfigurationDownload:
    async def test_device_gets_generated_artifact(self, service: Service, tmp_path: Path) -> None:
        deployment_id = str(uuid.uuid4())
        await service.client.post(
            _url("tenant-7", deployment_id, "dev-1"),
            json={"name": "config-7", "configuration": {"ntp": "pool.example.org", "level": "2"}},
        )
        response = await poll(service.client, "dev-1", tenant="tenant-7", device_type="rpi4")
        assert response.status_code == 200
        body = response.json()
        assert body["id"] == deployment_id
        assert body["artifact"]["artifact_name"] == "config-7"
        assert body["artifact"]["device_types_compatible"] == ["rpi4"]
        uri = body["artifact"]["source"]["uri"]
        split = urlsplit(uri)
        assert split.path == f"{CONFIG_PATH}/{deployment_id}/rpi4/dev-1"
        assert parse_qs(split.query)["tenant_id"] == ["tenant-7"]

        download = await service.client.get(uri)
        assert download.status_code == 200
        assert download.headers["Content-Type"] == "application/vnd.mender-artifact"
        assert download.headers["Content-Disposition"] == 'attachment; filename="artifact.mender"'
        parser = ArtifactParser()
        parser.feed(download.content)
        meta = parser.finish()
        assert meta.name == "config-7"
        assert meta.device_types_compatible == ["rpi4"]
        assert meta.updates[0].type == "mender-configure"
        assert meta.updates[0].meta_data == [{"ntp": "pool.example.org", "level": "2"}]
        assert meta.provides["data-partition.mender-configure.version"] == "config-7"
        assert meta.clears_provides == ["data-partition.mender-configure.*"]
        path = tmp_path / "config.mender"
        path.write_bytes(download.content)
        code, output = await run_mender_artifact("read", str(path))
        assert code == 0, output
        assert "mender-configure" in output

        report_response = await report(
            service.client, "dev-1", deployment_id, "success", tenant="tenant-7"
        )
        assert report_response.status_code == 204
        assert (await stats_of(service.client, deployment_id, "tenant-7"))["success"] == 1

    async def test_signature_checks(self, service: Service) -> None:
        deployment_id = str(uuid.uuid4())
        await service.client.post(
            _url("", deployment_id, "dev-1"), json={"name": "c", "configuration": {"a": "b"}}
        )
        uri = (await poll(service.client, "dev-1")).json()["artifact"]["source"]["uri"]
        assert "tenant_id" not in uri
        other_type = uri.replace(f"/{deployment_id}/test-device/", f"/{deployment_id}/other/")
        assert (await service.client.get(other_type)).status_code == 403
        forged = uri.replace("x-men-signature=", "x-men-signature=x")
        assert (await service.client.get(forged)).status_code == 403
        bare = urlsplit(uri).path
        assert (await service.client.get(bare)).status_code == 400
        signer = URLSigner(TEST_SECRET)
        expired = signer.sign(
            base_url="http://testserver",
            method="GET",
            path=f"{CONFIG_PATH}/{deployment_id}/test-device/dev-1",
            expire=datetime.now(UTC) - timedelta(minutes=1),
        )
        response = await service.client.get(expired)
        assert response.status_code == 403
        assert response.json()["error"] == "URL expired"
        wrong_device = signer.sign(
            base_url="http://testserver",
            method="GET",
            path=f"{CONFIG_PATH}/{deployment_id}/test-device/intruder",
            expire=datetime.now(UTC) + timedelta(minutes=1),
        )
        assert (await service.client.get(wrong_device)).status_code == 404


async def _configuration_deployment(service: Service, *, retries: int) -> str:
    deployment_id = str(uuid.uuid4())
    response = await service.client.post(
        _url("", deployment_id, "dev-1"),
        json={"name": "retried", "configuration": {"a": "b"}, "retries": retries},
    )
    assert response.status_code == 201, response.text
    return deployment_id


async def _attempt(service: Service, deployment_id: str, outcome: str) -> None:
    """One attempt of the device: it asks, downloads, installs and reports `outcome`."""
    response = await poll(service.client, "dev-1", artifact_name="initial")
    assert response.status_code == 200, response.text
    assert response.json()["id"] == deployment_id
    for status in ("downloading", "installing", outcome):
        assert (await report(service.client, "dev-1", deployment_id, status)).status_code == 204


async def _device_status(service: Service, deployment_id: str) -> str:
    response = await service.client.get(
        f"{DEPLOYMENTS}/{deployment_id}/devices", headers=user_headers()
    )
    [device] = response.json()
    status: str = device["status"]
    return status


class TestConfigurationRetries:
    async def test_retries_shown_and_validated(self, service: Service) -> None:
        deployment_id = await _configuration_deployment(service, retries=2)
        shown = await service.client.get(f"{DEPLOYMENTS}/{deployment_id}", headers=user_headers())
        assert shown.json()["retries"] == 2
        for retries in (-1, "1", 1.5):
            response = await service.client.post(
                _url("", str(uuid.uuid4()), "dev-1"),
                json={"name": "c", "configuration": {}, "retries": retries},
            )
            assert response.status_code == 400, retries
            assert "retries" in response.json()["error"]
        listed = await service.client.get(
            f"{DEPLOYMENTS}?type=configuration", headers=user_headers()
        )
        assert [d["id"] for d in listed.json()] == [deployment_id]

    async def test_failure_with_a_retry_left_starts_again(self, service: Service) -> None:
        deployment_id = await _configuration_deployment(service, retries=1)
        await _attempt(service, deployment_id, "failure")
        stats = await stats_of(service.client, deployment_id)
        assert (stats["pending"], stats["failure"], stats["installing"]) == (1, 0, 0)
        assert await _device_status(service, deployment_id) == "pending"
        shown = await service.client.get(f"{DEPLOYMENTS}/{deployment_id}", headers=user_headers())
        assert shown.json()["status"] == "inprogress"

        await _attempt(service, deployment_id, "failure")
        stats = await stats_of(service.client, deployment_id)
        assert (stats["pending"], stats["failure"]) == (0, 1)
        assert await _device_status(service, deployment_id) == "failure"
        shown = await service.client.get(f"{DEPLOYMENTS}/{deployment_id}", headers=user_headers())
        assert shown.json()["status"] == "finished"
        assert (await poll(service.client, "dev-1", artifact_name="initial")).status_code == 204

    async def test_success_on_a_later_attempt(self, service: Service) -> None:
        deployment_id = await _configuration_deployment(service, retries=3)
        await _attempt(service, deployment_id, "failure")
        await _attempt(service, deployment_id, "success")
        stats = await stats_of(service.client, deployment_id)
        assert (stats["success"], stats["failure"], stats["pending"]) == (1, 0, 0)
        assert await _device_status(service, deployment_id) == "success"
        shown = await service.client.get(f"{DEPLOYMENTS}/{deployment_id}", headers=user_headers())
        assert shown.json()["status"] == "finished"

    async def test_repeated_failure_report_is_not_another_attempt(self, service: Service) -> None:
        deployment_id = await _configuration_deployment(service, retries=1)
        await _attempt(service, deployment_id, "failure")
        again = await report(service.client, "dev-1", deployment_id, "failure")
        assert again.status_code == 204
        stats = await stats_of(service.client, deployment_id)
        assert (stats["pending"], stats["failure"]) == (1, 0)
        # The one retry is still there.
        await _attempt(service, deployment_id, "success")
        stats = await stats_of(service.client, deployment_id)
        assert (stats["success"], stats["failure"], stats["pending"]) == (1, 0, 0)

    async def test_no_retries_fails_at_once(self, service: Service) -> None:
        deployment_id = await _configuration_deployment(service, retries=0)
        await _attempt(service, deployment_id, "failure")
        stats = await stats_of(service.client, deployment_id)
        assert (stats["pending"], stats["failure"]) == (0, 1)
        assert await _device_status(service, deployment_id) == "failure"
