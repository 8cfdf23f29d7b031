"""Entity tags of `next` answers: a device that sends its tag back is spared a new link.

A `next` answer with instructions (200) carries `ETag: "<expire>.<mac>"`: `expire` is when
the download link of that answer expires (seconds since the epoch) and `mac` an HMAC-SHA256,
keyed with the download-link secret, of that expiry and of everything the answer says
besides the link: the tenant, the device, the deployment, the artifact's id and name, the
compatible device types and the address the link points at. Only tags this server made can
match, and every replica (they share the secret) recognises another's.

A poll whose `If-None-Match` holds such a tag is answered 304 with that tag, without
signing a link or rendering a body, when the answer would say the same thing and the link
the device holds stays valid for at least `fresh_for` more (half a link's lifetime): a
deployment aborted, finished or replaced, another artifact, another address or a link
nearing its expiry all make the tag stale, and the poll gets the full answer with a new
tag. The state is read exactly as for any poll (the conflict of a device whose provides
changed mid-update included), so a 304 never hides a change. `*` and tags of another form
never match. A poll without `If-None-Match`, as the Mender client sends it, gets the same
status and body as without this extension; the `ETag` header is the only addition.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Final

__all__ = ["PollTags", "TaggedContent"]

# At most this many tags of one `If-None-Match` are checked (each costs an HMAC).
_MAX_CANDIDATES: Final = 8

# What an answer says besides its link: tenant, device, deployment, artifact id and name,
# compatible device types, the address the link points at.
TaggedContent = tuple[str, str, str, str | None, str, Sequence[str], str]


class PollTags:
    """Makes and checks the tags of `next` answers with one secret."""

    def __init__(self, secret: str, *, fresh_for: timedelta) -> None:
        self._secret = secret.encode()
        self._fresh_for = fresh_for.total_seconds()

    def _mac(self, content: TaggedContent, expire: int) -> str:
        tenant, device, deployment, artifact_id, name, device_types, url = content
        canonical = json.dumps(
            [expire, tenant, device, deployment, artifact_id, name, list(device_types), url]
        )
        digest = hmac.new(self._secret, canonical.encode(), hashlib.sha256).digest()
        return base64.urlsafe_b64encode(digest[:18]).decode()

    def tag(self, content: TaggedContent, expire: datetime) -> str:
        """The tag of an answer whose link expires at `expire`, quoted as `ETag` has it."""
        seconds = int(expire.timestamp())
        return f'"{seconds}.{self._mac(content, seconds)}"'

    def unchanged(self, content: TaggedContent, if_none_match: str, now: datetime) -> str | None:
        """The tag of `if_none_match` that still stands for this answer, if one does."""
        horizon = now.astimezone(UTC).timestamp() + self._fresh_for
        for raw in if_none_match.split(",")[:_MAX_CANDIDATES]:
            candidate = raw.strip().removeprefix("W/")
            if len(candidate) < 2 or candidate[0] != '"' or candidate[-1] != '"':
                continue
            expire_text, _, mac = candidate[1:-1].partition(".")
            if not (expire_text.isascii() and expire_text.isdigit() and len(expire_text) <= 12):
                continue
            if not mac.isascii():
                continue
            expire = int(expire_text)
            if expire < horizon:
                continue
            if hmac.compare_digest(mac, self._mac(content, expire)):
                return candidate
        return None
