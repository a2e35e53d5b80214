"""Google: placeholder, being written (see ../shared/upstreams/)."""

from __future__ import annotations

from pixelgate.providers.base import Provider


class Google(Provider):
    name = "google"
    models = {}
