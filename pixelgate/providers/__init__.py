"""REGISTRY: the one place a vendor is named outside its own module."""

from __future__ import annotations

from pixelgate.providers.base import Provider
from pixelgate.providers.openai import OpenAI, OpenAICompatible
from pixelgate.providers.sandbox import Sandbox

REGISTRY: dict[str, Provider] = {p.name: p for p in (Sandbox(), OpenAI(), OpenAICompatible())}
