"""BlackForestLabs: placeholder, being written (see ../shared/upstreams/)."""

from __future__ import annotations

from pixelgate.providers.base import Provider


class BlackForestLabs(Provider):
    name = "bfl"
    models = {}
