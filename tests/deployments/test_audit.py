"""Operators' changes to artifacts, releases and deployments reach a real auditlogs service."""

from __future__ import annotations

import json

import pytest

from services.deployments.config import Settings
from services.deployments.main import create_app
from tests.auditlogs.live import live_auditlogs
from tests.conftest import ClientFactory
from tests.deployments.conftest import Service
from tests.deployments.flows import DEPLOYMENTS
from tests.deployments.helpers import ArtifactFactory, multipart_body, user_headers

ARTIFACTS = "/api/management/v1/deployments/artifacts"
RELEASES = "/api/management/v2/deployments/deployments/releases"
OPERATOR = "operator-7"


@pytest.mark.usefixtures("inventory")
class TestAuditEvents:
    async def test_each_change_by_an_operator_is_one_event(
        self,
        settings: Settings,
        asgi_client: ClientFactory,
        artifacts_factory: ArtifactFactory,
        mongo_url: str,
        db_name: str,
    ) -> None:
        headers = user_headers(user_id=OPERATOR)
        async with live_auditlogs(mongo_url, f"{db_name}_audit") as auditlogs:
            with_audit = settings.model_copy(update={"auditlogs_addr": auditlogs.url})
            app = create_app(with_audit)
            async with asgi_client(app) as client:
                service = Service(app=app, client=client, settings=with_audit)
                body, form = multipart_body(
                    [("description", "")], "artifact", artifacts_factory.make("app-1.0")
                )
                r = await client.post(ARTIFACTS, content=body, headers={**form, **headers})
                assert r.status_code == 201, r.text
                uploaded = r.headers["Location"].rsplit("/", 1)[1]

                r = await client.post(f"{ARTIFACTS}/directupload", headers=headers)
                assert r.status_code == 200, r.text
                direct, uri = r.json()["id"], r.json()["uri"]
                assert (
                    await client.put(uri, content=artifacts_factory.make("app-2.0"))
                ).status_code == 200
                r = await client.post(
                    f"{ARTIFACTS}/directupload/{direct}/complete", headers=headers
                )
                assert r.status_code == 202, r.text

                fields = [
                    ("name", "conf-1.0"),
                    ("device_types_compatible", "board"),
                    ("type", "single_file"),
                    ("args", json.dumps({"filename": "a.conf", "dest_dir": "/etc"})),
                ]
                body, form = multipart_body(fields, "file", b"key=value", filename="a.conf")
                r = await client.post(
                    f"{ARTIFACTS}/generate", content=body, headers={**form, **headers}
                )
                assert r.status_code == 201, r.text
                generated = r.headers["Location"].rsplit("/", 1)[1]
                await service.services.tasks.wait_idle()

                r = await client.patch(
                    f"{RELEASES}/app-1.0", json={"notes": "first"}, headers=headers
                )
                assert r.status_code == 204, r.text
                r = await client.put(
                    f"{RELEASES}/app-1.0/tags", json=["stable", "eu"], headers=headers
                )
                assert r.status_code == 204, r.text

                r = await client.post(
                    DEPLOYMENTS,
                    json={"name": "rollout", "artifact_name": "app-1.0", "devices": ["d1"]},
                    headers=headers,
                )
                assert r.status_code == 201, r.text
                deployment = r.headers["Location"].rsplit("/", 1)[1]
                r = await client.put(
                    f"{DEPLOYMENTS}/{deployment}/status",
                    json={"status": "aborted"},
                    headers=headers,
                )
                assert r.status_code == 204, r.text
                r = await client.delete(f"{ARTIFACTS}/{generated}", headers=headers)
                assert r.status_code == 204, r.text
                events = await auditlogs.wait_for(8)
        assert [(e["action"], e["object"]["type"], e["object"]["id"]) for e in events] == [
            ("upload", "artifact", uploaded),
            ("upload", "artifact", direct),
            ("generate", "artifact", generated),
            ("update", "release", "app-1.0"),
            ("update", "release", "app-1.0"),
            ("create", "deployment", deployment),
            ("abort", "deployment", deployment),
            ("delete", "artifact", generated),
        ]
        assert {e["actor"]["id"] for e in events} == {OPERATOR}
        assert events[0]["object"]["artifact"] == {"name": "app-1.0"}
        assert events[3]["change"] == "notes set to 'first'"
        assert events[4]["change"] == "tags set to stable, eu"
        assert events[5]["object"]["deployment"] == {"name": "rollout", "artifact_name": "app-1.0"}
