"""Every secret of a docker compose installation, generated on its first start.

`python -m common.localstack.provision ROOT` writes, under ROOT, one directory per consumer
(each a volume of its own in docker-compose.yml, so that a container mounts only its own):

- `mongo/`: `root-password`, `keyfile` (replica set members' shared key) and `users.json`,
  one database user per service (and per `--client`) with its password and database;
- `<service>/` (the service's name with `-` for `_`): `mongo-url`, its user's connection
  string, and what its declaration's `local_env` asks for: `private.id.1.pem` (user tokens),
  `private.pem` (device tokens), `presign-secret` (download links), `aes-key` (credentials
  at rest);
- `<client>/mongo-url` for each `--client NAME=SERVICE`: a one-shot job acting on that
  service's database (creating the first user) with a user of its own and no keys;
- `s3/config.json`: the bundled S3 server's one identity, allowed the artifacts bucket
  (`--s3-bucket`), whose keys the service keeping artifacts finds in its own directory as
  `s3-access-key` and `s3-secret-key`;
- `tls/cert.pem`, `tls/key.pem` with `--tls-name`: a self-signed certificate for those
  names, unless a certificate is there already (one mounted there is left untouched).

What exists is kept (keys, passwords, a mounted certificate): running it again changes
nothing but what was missing. With `--owner`, files are given to that user id (the image's
user), and `mongo/` to `--mongo-owner` (the MongoDB image's).
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import secrets
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final
from urllib.parse import quote

from common.core.certificates import ensure_self_signed
from common.core.servicespec import LocalResource, ServiceSpec
from common.core.tokens import generate_key_file, write_secret_file
from common.localstack.registry import discover

__all__ = ["KEY_FILES", "Layout", "main", "provision"]

MONGO: Final = "mongo"
S3: Final = "s3"
TLS: Final = "tls"
_S3_USER: Final = "fleetport"
_S3_ACTIONS: Final = ("Admin", "Read", "Write", "List", "Tagging")
MONGO_URL: Final = "mongo-url"
# The file a `local_env` resource becomes, in its service's directory.
KEY_FILES: Final = {
    LocalResource.USER_TOKEN_KEY: "private.id.1.pem",
    LocalResource.DEVICE_TOKEN_KEY: "private.pem",
    LocalResource.DOWNLOAD_LINK_SECRET: "presign-secret",
    LocalResource.CREDENTIALS_KEY: "aes-key",
}


@dataclass(frozen=True, slots=True)
class Layout:
    """What to provision: where MongoDB is, who uses which database, the TLS names."""

    mongo_host: str = "mongo:27017"
    replica_set: str = "rs0"
    # Extra database users: consumer name → the service whose database it works on.
    clients: tuple[tuple[str, str], ...] = ()
    tls_names: tuple[str, ...] = ()
    s3_bucket: str = "fleetport"
    owner: int | None = None
    mongo_owner: int | None = None


def _users(path: Path, wanted: dict[str, str]) -> list[dict[str, str]]:
    """users.json with a user for each name → database; existing passwords are kept."""
    known: dict[str, dict[str, str]] = {}
    if path.exists():
        known = {u["user"]: u for u in json.loads(path.read_text())}
    users = [
        {"user": name, "db": db, "pwd": known.get(name, {}).get("pwd") or secrets.token_urlsafe(24)}
        for name, db in sorted(wanted.items())
    ]
    users += [u for name, u in sorted(known.items()) if name not in wanted]
    if [known.get(u["user"]) for u in users] != users:
        write_secret_file(path, json.dumps(users, indent=2).encode(), replace=True)
    return users


def _generate(path: Path, resource: LocalResource) -> None:
    if resource is LocalResource.USER_TOKEN_KEY or resource is LocalResource.DEVICE_TOKEN_KEY:
        generate_key_file(path)
    elif resource is LocalResource.DOWNLOAD_LINK_SECRET:
        write_secret_file(path, secrets.token_urlsafe(32).encode())
    elif resource is LocalResource.CREDENTIALS_KEY:
        write_secret_file(path, base64.b64encode(secrets.token_bytes(32)))


def _s3(root: Path, keeper: Path, bucket: str) -> None:
    """The S3 server's identity and the same keys for the service that keeps artifacts."""
    write_secret_file(keeper / "s3-access-key", _S3_USER.encode())
    write_secret_file(keeper / "s3-secret-key", secrets.token_urlsafe(30).encode())
    identity = {
        "name": _S3_USER,
        "credentials": [
            {
                "accessKey": (keeper / "s3-access-key").read_text(),
                "secretKey": (keeper / "s3-secret-key").read_text(),
            }
        ],
        "actions": [f"{action}:{bucket}" for action in _S3_ACTIONS],
    }
    config = json.dumps({"identities": [identity]}).encode()
    write_secret_file(root / S3 / "config.json", config, replace=True)


def _give(directory: Path, owner: int | None) -> None:
    directory.chmod(0o700)
    if owner is None:
        return
    for path in [directory, *directory.rglob("*")]:
        os.chown(path, owner, owner)


def provision(root: Path, services: Sequence[ServiceSpec], layout: Layout) -> None:
    """Generate whatever is missing under `root` (see the module's description)."""
    databases = {svc.name: svc.database for svc in services}
    consumers = {svc.name.replace("_", "-"): svc.database for svc in services}
    for client, service in layout.clients:
        if service not in databases:
            raise ValueError(f"--client {client}={service}: no such service")
        consumers[client] = databases[service]
    mongo = root / MONGO
    mongo.mkdir(parents=True, exist_ok=True)
    write_secret_file(mongo / "root-password", secrets.token_urlsafe(24).encode())
    write_secret_file(mongo / "keyfile", base64.b64encode(secrets.token_bytes(567)))
    for user in _users(mongo / "users.json", consumers):
        if user["user"] not in consumers:
            continue
        url = (
            f"mongodb://{quote(user['user'], safe='')}:{quote(user['pwd'], safe='')}"
            f"@{layout.mongo_host}/?replicaSet={quote(layout.replica_set)}&authSource=admin"
        )
        directory = root / user["user"]
        target = directory / MONGO_URL
        if not target.exists() or target.read_text() != url:
            write_secret_file(target, url.encode(), replace=True)
    for svc in services:
        directory = root / svc.name.replace("_", "-")
        for resource in svc.local_env.values():
            if resource in KEY_FILES:
                _generate(directory / KEY_FILES[resource], resource)
            elif resource is LocalResource.ARTIFACTS_DIR:
                _s3(root, directory, layout.s3_bucket)
    cert, key = root / TLS / "cert.pem", root / TLS / "key.pem"
    if layout.tls_names and not (cert.exists() and key.exists()):
        ensure_self_signed(cert, key, [*layout.tls_names])
        _give(root / TLS, layout.owner)
    _give(mongo, layout.mongo_owner)
    _give(root / S3, None)
    for consumer in consumers:
        _give(root / consumer, layout.owner)


def main(argv: Sequence[str] | None = None) -> int:
    """Parse the command line and provision; the exit status."""
    parser = argparse.ArgumentParser(prog="python -m common.localstack.provision")
    parser.add_argument("root", type=Path, help="where each consumer's directory is mounted")
    parser.add_argument("--mongo-host", default="mongo:27017")
    parser.add_argument("--replica-set", default="rs0")
    parser.add_argument(
        "--client",
        action="append",
        default=[],
        metavar="NAME=SERVICE",
        help="a database user of its own for a job acting on SERVICE's database",
    )
    parser.add_argument("--tls-name", action="append", default=[], help="a certificate name")
    parser.add_argument("--s3-bucket", default="fleetport", help="the artifacts bucket")
    parser.add_argument("--owner", type=int, help="user id to give the services' files")
    parser.add_argument("--mongo-owner", type=int, help="user id to give MongoDB's files")
    args = parser.parse_args(argv)
    clients = []
    for item in args.client:
        name, sep, service = item.partition("=")
        if not (sep and name and service):
            parser.error(f"--client {item!r}: expected NAME=SERVICE")
        clients.append((name, service))
    layout = Layout(
        mongo_host=args.mongo_host,
        replica_set=args.replica_set,
        clients=tuple(clients),
        tls_names=tuple(args.tls_name),
        s3_bucket=args.s3_bucket,
        owner=args.owner,
        mongo_owner=args.mongo_owner,
    )
    try:
        provision(args.root, discover(), layout)
    except (ValueError, OSError) as exc:
        sys.stderr.write(f"provision: {exc}\n")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
