"""Secrets at rest: channel API keys, webhook secrets and the URL-signing secret are sealed with
AES-256-GCM before they reach the database, and opened when read.

A sealed value says which key sealed it: `enc:v1:<key id>:<base64 of nonce + ciphertext>`, the
key id being the first 8 hex digits of the key's SHA-256. So keys can be rotated: an instance
holds a primary key (seals everything new) and any previous ones (only open), and
`pixelgate secrets rotate` reseals every value under the primary. A value without the prefix is
a row from before sealing: it is read as it is, and sealed at the next start (`seal_existing`).

The key comes from `encryption_key` (base64 of 32 bytes), else `encryption_key_file`, else a
file generated on first start in the data directory. Every instance of a fleet must be given
the same key: one that meets a value sealed with a key it lacks refuses to start, naming it.

The sealing itself is the column type's (`Sealed`, in db.sealed, with the keyring); this module
loads the keys into it and reseals what the database holds.
"""

from __future__ import annotations

import base64
import binascii
import os
import secrets
import tempfile
from pathlib import Path

from sqlalchemy import Text, func, select, type_coerce, update
from sqlalchemy.ext.asyncio import async_sessionmaker

from pixelgate.db.models import ApiKey, ChannelRow, Meta
from pixelgate.db import sealed
from pixelgate.db.sealed import PREFIX, SealingError

KEY_FILE = "encryption.key"


def _decode(text: str, origin: str) -> bytes:
    try:
        return base64.b64decode(text.strip(), validate=True)
    except binascii.Error:
        raise SealingError(f"{origin} is not base64 (make one with: python -c \"import os, base64; "
                           "print(base64.b64encode(os.urandom(32)).decode())\")") from None


def configure(key: str | None, key_file: Path | None, data_dir: Path, previous: list[str] = ()) -> str:
    """Load this instance's keys into the process keyring; returns the primary key's id. With
    neither `key` nor `key_file`, the data directory's key file is used, made on first start."""
    if key:
        primary = _decode(key, "encryption_key")
    else:
        path = key_file or data_dir / KEY_FILE
        if not path.exists():
            if key_file is not None:
                raise SealingError(f"encryption_key_file {path} does not exist")
            _make_key_file(path)
        primary = _decode(path.read_text(), f"encryption key file {path}")
    for old in previous:
        sealed.KEYRING.add(_decode(old, "encryption_keys_previous"))
    return sealed.KEYRING.add(primary, primary=True)


def _make_key_file(path: Path) -> None:
    """A new key file (mode 600) at `path`, unless one appears there first. It is written whole
    under another name and then linked into place, so that of instances starting together on one
    data directory exactly one makes it and none reads it half written."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")  # mode 600
    try:
        with os.fdopen(fd, "w") as f:
            f.write(base64.b64encode(secrets.token_bytes(32)).decode() + "\n")
            f.flush()
            os.fsync(f.fileno())
        os.link(tmp, path)  # fails if the file exists: never replaces a key
    except FileExistsError:
        pass
    finally:
        os.unlink(tmp)


def _columns():
    return [(ChannelRow, ChannelRow.id, ChannelRow.api_key), (ApiKey, ApiKey.id, ApiKey.webhook_secret),
            (Meta, Meta.key, Meta.value)]


async def reseal(sessions: async_sessionmaker, everything: bool = False) -> int:
    """Seal the values still in plain text (and, with `everything`, reseal those sealed with a
    key other than the primary: a rotation). Checks on the way that every sealed value opens.
    Safe to run on several instances at once: each writes a valid sealing of the same value."""
    changed = 0
    for model, ident, column in _columns():
        raw = type_coerce(column, Text)
        async with sessions() as session:
            rows = (await session.execute(select(ident, raw).where(column.is_not(None)))).all()
        for row_id, stored in rows:
            plain = sealed.KEYRING.open(stored)  # raises SealingError for a key we lack
            current = stored.startswith(f"{PREFIX}{sealed.KEYRING.primary}:")
            if current or (stored.startswith(PREFIX) and not everything):
                continue
            async with sessions() as session, session.begin():
                await session.execute(update(model).where(ident == row_id, raw == stored).values({column.key: plain}))
            changed += 1
    return changed


async def plain_count(sessions: async_sessionmaker) -> int:
    """How many secrets are still stored in plain text."""
    count = 0
    for _, _, column in _columns():
        raw = type_coerce(column, Text)
        async with sessions() as session:
            count += (await session.execute(select(func.count()).where(
                column.is_not(None), ~raw.startswith(PREFIX)))).scalar_one()
    return count
