"""Operators' changes to users and personal access tokens reach a real auditlogs service."""

from __future__ import annotations

from pathlib import Path

from services.useradm.main import create_app
from tests.auditlogs.live import live_auditlogs
from tests.conftest import ClientFactory
from tests.useradm.conftest import (
    EMAIL,
    MGMT_V1,
    PASSWORD,
    USERS,
    bearer,
    claims_of,
    create_user,
    login,
    make_settings,
)

TOKENS = f"{MGMT_V1}/settings/tokens"
MGMT_V2_ME = "/api/management/v2/useradm/users/me"


class TestAuditEvents:
    async def test_each_change_to_users_and_tokens_is_one_event(
        self, mongo_url: str, db_name: str, key_path: Path, asgi_client: ClientFactory
    ) -> None:
        async with live_auditlogs(mongo_url, f"{db_name}_audit") as auditlogs:
            settings = make_settings(mongo_url, db_name, key_path, auditlogs_addr=auditlogs.url)
            async with asgi_client(create_app(settings)) as client:
                admin_id = await create_user(client)  # the internal API: no operator, no event
                auth = bearer(await login(client))
                r = await client.post(
                    USERS,
                    json={"email": "new@example.com", "password": "another-pass-1"},
                    headers=auth,
                )
                assert r.status_code == 201, r.text
                new_id = r.headers["Location"].rsplit("/", 1)[1]
                r = await client.put(
                    f"{USERS}/{new_id}", json={"email": "renamed@example.com"}, headers=auth
                )
                assert r.status_code == 204, r.text
                r = await client.put(
                    MGMT_V2_ME,
                    json={"password": "brand-new-pass-9", "current_password": PASSWORD},
                    headers=auth,
                )
                assert r.status_code == 204, r.text
                r = await client.post(TOKENS, json={"name": "ci", "expires_in": 0}, headers=auth)
                assert r.status_code == 200, r.text
                token_id = claims_of(r.text)["jti"]
                r = await client.delete(f"{TOKENS}/{token_id}", headers=auth)
                assert r.status_code == 204, r.text
                r = await client.delete(f"{USERS}/{new_id}", headers=auth)
                assert r.status_code == 204, r.text
                # Deleting what is not there changes nothing and records nothing.
                r = await client.delete(f"{USERS}/{new_id}", headers=auth)
                assert r.status_code == 204, r.text
                events = await auditlogs.wait_for(6)
        assert [(e["action"], e["object"]["type"], e["object"]["id"]) for e in events] == [
            ("create", "user", new_id),
            ("update", "user", new_id),
            ("update", "user", admin_id),
            ("create", "user_access_token", token_id),
            ("delete", "user_access_token", token_id),
            ("delete", "user", new_id),
        ]
        assert {e["actor"]["id"] for e in events} == {admin_id}
        assert events[0]["object"]["user"] == {"email": "new@example.com"}
        assert events[1]["change"] == "email changed from new@example.com to renamed@example.com"
        assert events[2]["change"] == "password changed"
        assert events[2]["object"]["user"] == {"email": EMAIL}
        assert events[3]["object"]["user_access_token"] == {"name": "ci"}
        assert events[5]["object"]["user"] == {"email": "renamed@example.com"}
        assert "brand-new-pass-9" not in str(events)
