"""A device document's next state, computed from the one read: attributes, keywords, version.

A device document holds `attributes` keyed `"<scope>-<name>"` (with `.` and `$` in names
replaced by U+FF0E and U+FF04, as Mender stores them), `revision` (the status revision from
deviceauth), `tags_etag`, `created_ts`/`updated_ts`, `version` (counts its writes) and
`text`: the lower-cased keywords of the id, the group and the string values of identity,
inventory and tags attributes (`keywords`).

A write is computed here from the document as read (`new_document` when there is none,
`update` otherwise) and applied with plain update operators only if the document's
`version` is still the one read (`versioned`): the keywords written are then always those
of the attributes stored, without the database recomputing them.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

from common.core.mongo import Document
from services.inventory.models import Attribute, DeviceChange, text_tokens

__all__ = [
    "CREATED_KEY",
    "DIGEST",
    "GROUP_KEY",
    "TEXT_SCOPES",
    "UPDATED_KEY",
    "VERSION",
    "attribute_doc",
    "attribute_key",
    "keywords",
    "new_document",
    "system",
    "update",
    "versioned",
]

GROUP_KEY: Final = "system-group"
UPDATED_KEY: Final = "system-updated_ts"
CREATED_KEY: Final = "system-created_ts"
# The digest of the device's last whole report, while its inventory scope is exactly that.
DIGEST: Final = "report_digest"
# Counts the writes to a device: a write computed from a read applies only if it is unchanged.
VERSION: Final = "version"

# The scopes whose string values are searchable keywords (besides the group).
TEXT_SCOPES: Final = ("identity", "inventory", "tags")
_KEY_ESCAPES: Final = str.maketrans({".": "\uff0e", "$": "\uff04"})


def attribute_key(scope: str, name: str) -> str:
    """The key of an attribute inside `attributes` (Mender's escaping of `.` and `$`)."""
    return f"{scope}-{name.translate(_KEY_ESCAPES)}"


def attribute_doc(attr: Attribute) -> Document:
    """An attribute as stored."""
    doc: Document = {"name": attr.name, "value": attr.value, "scope": attr.scope}
    if attr.description is not None:
        doc["description"] = attr.description
    if attr.timestamp is not None:
        doc["timestamp"] = attr.timestamp
    return doc


def system(name: str, value: Any) -> Document:
    """A `system` attribute the server keeps, as stored."""
    return {"name": name, "value": value, "scope": "system"}


def keywords(device_id: str, attributes: Mapping[str, Any]) -> list[str]:
    """The search keywords of a device (sorted): the tokens of its id, its group and the
    string values of its identity, inventory and tags attributes."""
    found = set(text_tokens(device_id))
    for key, raw in attributes.items():
        if not isinstance(raw, Mapping):
            continue
        value = raw.get("value")
        if isinstance(value, str) and (raw.get("scope") in TEXT_SCOPES or key == GROUP_KEY):
            found.update(text_tokens(value))
    return sorted(found)


def versioned(doc: Document) -> Document:
    """The filter of a write that applies only to the device document as read."""
    version = doc.get(VERSION)
    return {"_id": doc["_id"], VERSION: {"$exists": False} if version is None else version}


def _changed_attributes(
    stored: Mapping[str, Any], change: DeviceChange
) -> tuple[dict[str, Any], Document, list[str]]:
    """The attributes after the change, those it sets, and the stored keys it removes."""
    sets = {attribute_key(a.scope, a.name): attribute_doc(a) for a in change.set}
    if change.touch_updated:
        sets[UPDATED_KEY] = system("updated_ts", change.now)
    removed = {attribute_key(r.scope, r.name) for r in change.remove}
    attributes: dict[str, Any] = {}
    dropped: list[str] = []
    for key, raw in stored.items():
        scope = raw.get("scope") if isinstance(raw, Mapping) else None
        if key in sets:
            continue
        if key in removed or scope in change.replace_scopes:
            dropped.append(key)
        else:
            attributes[key] = raw
    attributes.update(sets)
    if CREATED_KEY not in attributes:
        sets[CREATED_KEY] = attributes[CREATED_KEY] = system("created_ts", change.now)
    return attributes, sets, dropped


def new_document(device_id: str, change: DeviceChange, revision: int | None = None) -> Document:
    """The document of a device the change creates."""
    attributes, _, _ = _changed_attributes({}, change)
    doc: Document = {
        "_id": device_id,
        "attributes": attributes,
        "text": keywords(device_id, attributes),
        "created_ts": change.now,
        "revision": revision or 0,
        VERSION: 1,
    }
    if change.touch_updated:
        doc["updated_ts"] = change.now
    if change.new_tags_etag is not None:
        doc["tags_etag"] = change.new_tags_etag
    if change.report_digest is not None and change.touches_inventory:
        doc[DIGEST] = change.report_digest
    return doc


def update(doc: Document, change: DeviceChange, revision: int | None = None) -> Document:
    """The update operators applying the change to the device document as read (whole)."""
    stored = doc.get("attributes")
    attributes, sets, dropped = _changed_attributes(
        stored if isinstance(stored, Mapping) else {}, change
    )
    set_: Document = {f"attributes.{key}": value for key, value in sets.items()}
    unset: Document = {f"attributes.{key}": "" for key in dropped}
    set_[VERSION] = (doc.get(VERSION) or 0) + 1
    text = keywords(doc["_id"], attributes)
    if doc.get("text") != text:
        set_["text"] = text
    if "created_ts" not in doc:
        set_["created_ts"] = change.now
    if revision is not None:
        set_["revision"] = revision
    elif "revision" not in doc:
        set_["revision"] = 0
    if change.touch_updated:
        set_["updated_ts"] = change.now
    if change.new_tags_etag is not None:
        set_["tags_etag"] = change.new_tags_etag
    if change.touches_inventory:
        if change.report_digest is not None:
            set_[DIGEST] = change.report_digest
        elif DIGEST in doc:
            unset[DIGEST] = ""
    return {"$set": set_, "$unset": unset} if unset else {"$set": set_}
