"""A compose installation's secrets: generated once, each consumer's in its own directory,
kept on every later start."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

import pytest
from cryptography import x509

from common.core.tokens import generate_key_file
from common.localstack.provision import Layout, main, provision
from common.localstack.registry import discover

SERVICES = discover()
LAYOUT = Layout(clients=(("create-admin", "useradm"),), tls_names=("fleetport.example.com",))


def _snapshot(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file() or p.is_symlink()
    }


class TestProvision:
    def test_a_database_user_per_service_and_client(self, tmp_path: Path) -> None:
        provision(tmp_path, SERVICES, LAYOUT)
        users = json.loads((tmp_path / "mongo" / "users.json").read_text())
        expected = {s.name.replace("_", "-"): s.database for s in SERVICES}
        expected["create-admin"] = "useradm"
        assert {u["user"]: u["db"] for u in users} == expected
        assert len({u["pwd"] for u in users}) == len(users)
        for user in users:
            url = urlsplit((tmp_path / user["user"] / "mongo-url").read_text())
            assert (unquote(url.username or ""), unquote(url.password or "")) == (
                user["user"],
                user["pwd"],
            )
            assert url.hostname == "mongo"
            assert url.port == 27017
            assert parse_qs(url.query) == {"replicaSet": ["rs0"], "authSource": ["admin"]}

    def test_keys_only_where_they_are_used(self, tmp_path: Path) -> None:
        provision(tmp_path, SERVICES, LAYOUT)
        assert sorted(p.name for p in (tmp_path / "useradm").iterdir()) == [
            "mongo-url",
            "private.id.1.pem",
        ]
        assert sorted(p.name for p in (tmp_path / "deviceauth").iterdir()) == [
            "mongo-url",
            "private.pem",
        ]
        assert sorted(p.name for p in (tmp_path / "create-admin").iterdir()) == ["mongo-url"]
        assert not (tmp_path / "gateway").exists()
        aes = (tmp_path / "iot-manager" / "aes-key").read_text()
        assert len(base64.b64decode(aes, validate=True)) == 32
        keyfile = (tmp_path / "mongo" / "keyfile").read_text()
        assert len(keyfile) == 756
        for path in tmp_path.rglob("*"):
            assert path.stat().st_mode & 0o077 == 0, path

    def test_s3_identity_matches_the_artifact_keepers_keys(self, tmp_path: Path) -> None:
        provision(tmp_path, SERVICES, LAYOUT)
        config = json.loads((tmp_path / "s3" / "config.json").read_text())
        [identity] = config["identities"]
        [credentials] = identity["credentials"]
        keeper = tmp_path / "deployments"
        assert credentials["accessKey"] == (keeper / "s3-access-key").read_text()
        assert credentials["secretKey"] == (keeper / "s3-secret-key").read_text()
        assert "Write:fleetport" in identity["actions"]

    def test_a_self_signed_certificate_for_the_names(self, tmp_path: Path) -> None:
        provision(tmp_path, SERVICES, LAYOUT)
        cert = x509.load_pem_x509_certificate((tmp_path / "tls" / "cert.pem").read_bytes())
        names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        assert names.get_values_for_type(x509.DNSName) == ["fleetport.example.com"]

    def test_a_mounted_certificate_is_left_alone(self, tmp_path: Path) -> None:
        (tmp_path / "tls").mkdir()
        (tmp_path / "tls" / "cert.pem").write_text("the operator's certificate")
        generate_key_file(tmp_path / "tls" / "key.pem")
        key = (tmp_path / "tls" / "key.pem").read_bytes()
        os.chmod(tmp_path / "tls", 0o755)
        provision(tmp_path, SERVICES, LAYOUT)
        assert (tmp_path / "tls" / "cert.pem").read_text() == "the operator's certificate"
        assert (tmp_path / "tls" / "key.pem").read_bytes() == key
        assert (tmp_path / "tls").stat().st_mode & 0o777 == 0o755

    def test_a_second_start_changes_nothing(self, tmp_path: Path) -> None:
        provision(tmp_path, SERVICES, LAYOUT)
        before = _snapshot(tmp_path)
        provision(tmp_path, SERVICES, LAYOUT)
        assert _snapshot(tmp_path) == before

    def test_what_is_missing_is_made_and_the_rest_kept(self, tmp_path: Path) -> None:
        provision(tmp_path, SERVICES, Layout())
        users = (tmp_path / "mongo" / "users.json").read_text()
        (tmp_path / "deviceauth" / "private.pem").unlink()
        provision(tmp_path, SERVICES, LAYOUT)
        assert (tmp_path / "deviceauth" / "private.pem").is_file()
        kept = {u["user"]: u["pwd"] for u in json.loads(users)}
        now = {
            u["user"]: u["pwd"] for u in json.loads((tmp_path / "mongo" / "users.json").read_text())
        }
        assert {user: now[user] for user in kept} == kept
        assert set(now) - set(kept) == {"create-admin"}

    def test_a_moved_database_gets_new_urls_with_the_same_passwords(self, tmp_path: Path) -> None:
        provision(tmp_path, SERVICES, Layout())
        before = urlsplit((tmp_path / "inventory" / "mongo-url").read_text())
        provision(tmp_path, SERVICES, Layout(mongo_host="db.internal:27018", replica_set="main"))
        after = urlsplit((tmp_path / "inventory" / "mongo-url").read_text())
        assert after.password == before.password
        assert (after.hostname, after.port) == ("db.internal", 27018)
        assert parse_qs(after.query)["replicaSet"] == ["main"]

    def test_files_go_to_their_readers(self, tmp_path: Path) -> None:
        provision(tmp_path, SERVICES, Layout(owner=10001, mongo_owner=999))
        assert (tmp_path / "useradm" / "private.id.1.pem").stat().st_uid == 10001
        assert (tmp_path / "mongo" / "root-password").stat().st_uid == 999
        assert (tmp_path / "mongo").stat().st_uid == 999


class TestCommandLine:
    def test_runs_as_compose_runs_it(self, tmp_path: Path) -> None:
        done = subprocess.run(
            [
                sys.executable,
                "-m",
                "common.localstack.provision",
                str(tmp_path),
                "--client=create-admin=useradm",
                "--tls-name=localhost",
            ],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert done.returncode == 0, done.stderr
        assert (tmp_path / "create-admin" / "mongo-url").is_file()
        assert (tmp_path / "tls" / "key.pem").is_file()

    def test_an_unknown_service_is_refused(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        assert main([str(tmp_path), "--client=job=nosuch"]) == 1
        assert capsys.readouterr().err == "provision: --client job=nosuch: no such service\n"
        assert not (tmp_path / "job").exists()
