"""REGISTRY: the one place a vendor is named outside its own module."""

from __future__ import annotations

from pixelgate.providers.ark import Ark
from pixelgate.providers.automatic1111 import Automatic1111
from pixelgate.providers.azure_openai import AzureOpenAI
from pixelgate.providers.bedrock import Bedrock
from pixelgate.providers.base import Provider
from pixelgate.providers.bfl import BlackForestLabs
from pixelgate.providers.comfyui import ComfyUI
from pixelgate.providers.dashscope import DashScope
from pixelgate.providers.google import Google
from pixelgate.providers.ideogram import Ideogram
from pixelgate.providers.midjourney import Midjourney
from pixelgate.providers.openai import OpenAI, OpenAICompatible
from pixelgate.providers.qianfan import Qianfan
from pixelgate.providers.sandbox import Sandbox
from pixelgate.providers.stability import Stability
from pixelgate.providers.vertex import Vertex

REGISTRY: dict[str, Provider] = {p.name: p for p in (
    Sandbox(), OpenAI(), OpenAICompatible(), BlackForestLabs(), Ideogram(), Ark(), DashScope(),
    Qianfan(), Google(), Midjourney(), Stability(), ComfyUI(), Automatic1111(), AzureOpenAI(), Vertex(), Bedrock())}
