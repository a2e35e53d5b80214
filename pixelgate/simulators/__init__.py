"""Simulated vendors: strict emulators of each vendor's HTTP API (OpenAI, BFL, Ideogram, Ark,
DashScope, Qianfan, Google, Midjourney, ComfyUI, AUTOMATIC1111), the same ones the test suite
checks the providers against, built from ../shared/upstreams/ (the self-hosted servers from their
own source). They answer exactly what the real API answers, errors and asynchronous flows
included, with images drawn locally.

With `simulate_vendors = true` the gateway adds one channel per vendor whose base URL names a
`*.simulated` host; the HTTP transport hands calls to those hosts to the emulator in this process
instead of the network. Every provider module then runs its real code, offline: the first hour
of a new install, a demo, a CI job. Emulator state (an asynchronous job, say) lives in the
process that made it, so use one worker with them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any, Callable
from urllib.parse import urlsplit

SUFFIX = ".simulated"


@dataclass(frozen=True)
class Vendor:
    provider: str
    module: str
    state: str
    path: str
    """Where the vendor's API lives under its host (the channel's base URL path)."""
    api_key: str | None
    models: tuple[str, ...] = ()
    """The channel's models where the provider declares none (self-hosted: the operator names them)."""
    options: dict[str, Any] = field(default_factory=dict)
    """The channel's options (Provider.channel_options)."""


COMFYUI_WORKFLOW = str(Path(__file__).with_name("comfyui_sdxl_txt2img_api.json"))
"""examples/comfyui/sdxl_txt2img_api.json, shipped in the package for the simulated channel."""

VENDORS = (
    Vendor("openai", "openai_images", "OpenAIEmulatorState", "/v1", "sk-emulator-key"),
    Vendor("bfl", "bfl", "BFLEmulatorState", "/v1", "bfl-emulator-key"),
    Vendor("ideogram", "ideogram", "IdeogramEmulatorState", "", "ideogram-emulator-key"),
    Vendor("ark", "ark", "ArkEmulatorState", "/api/v3", "ark-emulator-key"),
    Vendor("dashscope", "dashscope", "DashScopeEmulatorState", "/api/v1", "sk-dashscope-emulator"),
    Vendor("qianfan", "qianfan", "QianfanEmulatorState", "/v2", "bce-v3/ALTAK-emulator/0123456789abcdef"),
    Vendor("google", "google", "GoogleEmulatorState", "/v1beta", "AIza-emulator-key"),
    Vendor("midjourney", "midjourney", "MidjourneyEmulatorState", "", "mj-emulator-secret"),
    Vendor("comfyui", "comfyui", "ComfyUIEmulatorState", "", None, ("comfyui-sdxl",),
           {"workflows": {"comfyui-sdxl": COMFYUI_WORKFLOW}}),
    Vendor("automatic1111", "automatic1111", "A1111EmulatorState", "", None, ("a1111-sdxl",),
           {"checkpoints": {"a1111-sdxl": "sd_xl_base_1.0.safetensors [31e35c80fc]"}}),
    Vendor("azure-openai", "azure_openai", "AzureEmulatorState", "", "azure-emulator-key"),
    Vendor("vertex", "vertex", "VertexEmulatorState", "", "", options={"project": "emulator-project"}),
    Vendor("bedrock", "bedrock", "BedrockEmulatorState", "",
           "AKIAEMULATOR00000000:emulator-secret-access-key", options={"region": "us-east-1"}),
    Vendor("stability", "stability", "StabilityEmulatorState", "", "sk-stability-emulator"),
)


# Emulator settings for the offline gateway, where the tests' defaults would hide what a new user
# should see: a Midjourney job over 0.3 s finishes between two polls (poll_interval_seconds), so
# its progress (10 %, 45 %, 80 % with a preview) would never show; 6 s shows each step.
LIVE = {"midjourney": {"duration": 6.0}, "comfyui": {"step_seconds": 0.15}}


def host(vendor: Vendor) -> str:
    return vendor.provider + SUFFIX


def channels() -> list[dict[str, Any]]:
    """One channel per simulated vendor, serving every model its provider declares."""
    from pixelgate.providers import REGISTRY

    return [{"name": f"simulated-{v.provider}", "provider": v.provider, "base_url": f"http://{host(v)}{v.path}",
             "api_key": _key(v), "models": list(v.models) or sorted(REGISTRY[v.provider].models), "priority": -50,
             **({"options": dict(v.options)} if v.options else {})}
            for v in VENDORS]


def _key(vendor: Vendor) -> str:
    if vendor.provider == "vertex":  # a service account whose tokens the simulator itself issues
        import json

        from pixelgate.simulators.vertex import service_account

        return json.dumps(service_account(f"http://{host(vendor)}/token"))
    return vendor.api_key


def free_prices(currency: str) -> list:
    """Price 0 for what the simulated models do that the built-in table does not price (whole
    models, and operations such as Ideogram's describe): nothing is paid to a simulator, and the
    first hour should not stop at "unpriced"."""
    from pixelgate.domain.prices import DEFAULT_PRICES, Price
    from pixelgate.providers import REGISTRY

    priced = {(p.model, p.operation) for p in DEFAULT_PRICES}
    free = []
    for channel in channels():
        provider = REGISTRY[channel["provider"]]
        for model in channel["models"]:
            if (model, "*") in priced:
                continue
            operations = sorted(op.value for op in (provider.models.get(model) or provider.generic).operations)
            if not any((model, op) in priced for op in operations):
                free.append(Price(model, Decimal(0), currency, source="simulated vendor (free)"))
                continue
            free += [Price(model, Decimal(0), currency, op, source="simulated vendor (free)")
                     for op in operations if (model, op) not in priced]
    return free


class Simulators:
    """The emulators of this process, by host, created on first use."""

    def __init__(self) -> None:
        self._apps: dict[str, Any] = {}

    def app_for(self, url: str) -> Any | None:
        name = urlsplit(url).hostname or ""
        if not name.endswith(SUFFIX):
            return None
        if name not in self._apps:
            vendor = next((v for v in VENDORS if host(v) == name), None)
            if vendor is None:
                return None
            import importlib

            module = importlib.import_module(f"pixelgate.simulators.{vendor.module}")
            make: Callable[[Any], Any] = module.create_app
            self._apps[name] = make(getattr(module, vendor.state)(**LIVE.get(vendor.provider, {})))
        return self._apps[name]
