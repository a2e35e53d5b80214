"""Contract over every registered provider: one module, one emulator (a simulated vendor), one
test file, models declared as data, a docstring that shows the upstream wire format."""

from __future__ import annotations

import inspect
from pathlib import Path

import pytest

from pixelgate import simulators
from pixelgate.providers import REGISTRY
from pixelgate.providers.base import Capabilities, Provider

TESTS = Path(__file__).parent
SIMULATORS = Path(simulators.__file__).parent
EMULATOR = {"openai": "openai_images", "openai-compatible": "openai_images", "sandbox": None,
            "azure-openai": "azure_openai"}
TEST_FILE = {"openai": "surfaces/test_openai_sdk.py", "openai-compatible": "surfaces/test_openai_sdk.py",
             "azure-openai": "providers/test_azure_openai.py"}


@pytest.mark.parametrize("name", sorted(REGISTRY))
def test_provider_contract(name):
    provider = REGISTRY[name]
    assert isinstance(provider, Provider) and provider.name == name
    module = inspect.getmodule(type(provider))
    assert module.__doc__ and len(module.__doc__) > 200, "the module docstring shows the upstream wire format"
    assert provider.models or provider.generic, "declares its models (or takes any name)"
    for model, caps in provider.models.items():
        assert isinstance(caps, Capabilities) and caps.operations, model
    emulator = EMULATOR.get(name, name)
    if emulator is not None:
        assert (SIMULATORS / f"{emulator}.py").is_file()
        if name != "openai-compatible":  # it rides on the OpenAI simulator
            assert name in {v.provider for v in simulators.VENDORS}, "simulate_vendors covers it"
    assert (TESTS / TEST_FILE.get(name, f"providers/test_{name}.py")).is_file()


def test_every_vendor_of_the_first_source_document_is_registered():
    assert {"openai", "bfl", "ideogram", "ark", "dashscope", "qianfan", "google", "midjourney"} <= set(REGISTRY)
