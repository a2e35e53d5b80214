"""Ideogram: placeholder, being written (see ../shared/upstreams/)."""

from __future__ import annotations

from pixelgate.providers.base import Provider


class Ideogram(Provider):
    name = "ideogram"
    models = {}
