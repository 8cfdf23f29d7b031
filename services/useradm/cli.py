"""useradm's command line: serve, or create a user in the configured database."""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:
    from services.useradm.config import DatabaseSettings, Settings

__all__ = ["EXIT_CONFLICT", "EXIT_FAILURE", "EXIT_INVALID", "main"]

EXIT_FAILURE: Final = 1
EXIT_INVALID: Final = 2
EXIT_CONFLICT: Final = 3


def _fail(message: str) -> None:
    sys.stderr.write(message + "\n")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m services.useradm",
        description="Fleetport useradm: users, login and user tokens.",
    )
    commands = parser.add_subparsers(dest="command")
    commands.add_parser("serve", help="serve the HTTP APIs (the default)")
    create = commands.add_parser("create-user", help="create a user; prints only the new user's id")
    create.add_argument("--username", required=True, help="the user's email address")
    create.add_argument("--password", required=True, help="at least 8 characters")
    create.add_argument("--user-id", help="the id to give the user (default: a new UUID)")
    return parser


async def _create_user(
    settings: DatabaseSettings, email: str, password: str, user_id: str | None
) -> str:
    # Imported here: a command line that only parses its arguments should start quickly.
    from common.core.mongo import create_client, ensure_indexes
    from common.core.outbox import Outbox
    from services.useradm.app.passwords import PasswordHasher
    from services.useradm.app.users import UsersApp
    from services.useradm.config import SERVICE_NAME
    from services.useradm.store.indexes import INDEXES
    from services.useradm.store.mongo import MongoStore

    client = create_client(settings.mongo_url)
    try:
        db = client[settings.mongo_db or SERVICE_NAME]
        await ensure_indexes(db, INDEXES)
        # The command line acts as no operator: it records no audit event.
        store = MongoStore(client, db, outbox=Outbox(db, ()))
        users = UsersApp(store, PasswordHasher(cost=settings.bcrypt_cost))
        user = await users.create_user("", email=email, password=password, user_id=user_id)
        return user.id
    finally:
        await client.close()


def _serve(settings: Settings) -> None:
    from common.web.app import serve
    from services.useradm.main import create_app

    serve(create_app, settings)


def main(argv: Sequence[str] | None = None) -> int:
    """Run a command; return the process exit status."""
    args = _parser().parse_args(argv)
    from pydantic import ValidationError

    from common.core.errors import BadRequest
    from services.useradm.app.errors import DuplicateEmail, DuplicateUserId
    from services.useradm.config import DatabaseSettings, Settings

    try:
        # Creating a user needs the database only, not the key that signs tokens.
        settings = Settings() if args.command in (None, "serve") else DatabaseSettings()
    except ValidationError as exc:
        _fail(f"useradm: invalid configuration: {exc}")
        return EXIT_INVALID
    if isinstance(settings, Settings):
        _serve(settings)
        return 0
    try:
        user_id = asyncio.run(_create_user(settings, args.username, args.password, args.user_id))
    except BadRequest as exc:
        _fail(f"useradm: {exc.message}")
        return EXIT_INVALID
    except (DuplicateEmail, DuplicateUserId) as exc:
        _fail(f"useradm: {exc.message}")
        return EXIT_CONFLICT
    except Exception as exc:  # the database is unreachable, or worse: say so and fail
        _fail(f"useradm: could not create the user: {exc}")
        return EXIT_FAILURE
    sys.stdout.write(f"{user_id}\n")
    return 0
