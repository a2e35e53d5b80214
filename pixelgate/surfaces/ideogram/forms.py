"""The bodies of Ideogram's API as the second source document (001) defines them: one pydantic
model per endpoint, checked by the one body parser (surfaces/_body.parse), so that every rule of
the document is refused, naming the field, before anything is spent. A multipart form arrives
as text and files: a number is "3", an object a JSON string, a file an UploadFile; a JSON body
the same fields typed. Rules across fields (one of aspect_ratio and resolution; which legacy
model takes what) are model validators that name the field they blame."""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, StrictInt, StrictStr, ValidationInfo
from pydantic import WithJsonSchema, model_validator
from starlette.datastructures import UploadFile

from pixelgate.errors import InvalidRequest
from pixelgate.providers.ideogram import (LEGACY_RATIOS, LEGACY_RESOLUTIONS, MAX_SEED, STYLE_PRESETS, V3_RATIOS,
                                          V3_RESOLUTIONS, V4_RESOLUTIONS)
from pixelgate.surfaces._body import json_value
from pixelgate.surfaces._openapi import BINARY


def _digits(value: Any) -> Any:
    """A form's "3" is 3 (JSON's 3 stays 3; true is no number)."""
    if isinstance(value, str) and re.fullmatch(r"-?[0-9]+", value.strip()):
        return int(value)
    return value


def _object(value: Any, info: ValidationInfo) -> Any:
    """A form's JSON string part is the object it spells."""
    return json_value(value, info.field_name) if isinstance(value, str) else value


def _one_file(value: Any) -> Any:
    if isinstance(value, list):
        if len(value) != 1:
            raise ValueError(f"takes one file; got {len(value)}")
        return value[0]
    return value


def _resolution(value: Any) -> Any:
    """The legacy document writes resolutions "width x height" too: RESOLUTION_W_H."""
    if isinstance(value, str) and re.fullmatch(r"\d+x\d+", value):
        return "RESOLUTION_" + value.replace("x", "_")
    return value


def _int(lo: int, hi: int) -> Any:
    return Annotated[StrictInt, BeforeValidator(_digits), Field(ge=lo, le=hi)]


Seed, NumImages, Weight = _int(0, MAX_SEED), _int(1, 8), _int(1, 100)
Prompt = Annotated[StrictStr, Field(min_length=1)]
JsonObject = Annotated[dict[str, Any], BeforeValidator(_object)]
File = Annotated[UploadFile, BeforeValidator(_one_file), WithJsonSchema(BINARY)]
Files = Annotated[list[UploadFile], WithJsonSchema({"type": "array", "items": BINARY})]

Magic = Literal["AUTO", "ON", "OFF"]
Speed = Literal["TURBO", "DEFAULT", "QUALITY"]
V3Style = Literal["AUTO", "GENERAL", "REALISTIC", "DESIGN"]
LegacyStyle = Literal["AUTO", "GENERAL", "REALISTIC", "DESIGN", "RENDER_3D", "ANIME"]
LegacyModel = Literal["V_1", "V_1_TURBO", "V_2", "V_2_TURBO", "V_2A", "V_2A_TURBO"]
MagicVersion = Literal[("V_0", *(f"V_0_{i}" for i in range(1, 9)))]
RATIO_ALIASES = {"SPECT_16_10": "ASPECT_16_10"}  # the document's own spelling, kept working
LegacyRatio = Literal[LEGACY_RATIOS + tuple(RATIO_ALIASES)]
LegacyResolution = Annotated[Literal[LEGACY_RESOLUTIONS], BeforeValidator(_resolution)]
EDIT_MODELS = ("V_2", "V_2_TURBO")
LEGACY_MODEL_RULES = {
    "style_type": ("V_2", "V_2_TURBO", "V_2A", "V_2A_TURBO"),
    "negative_prompt": ("V_1", "V_1_TURBO", "V_2", "V_2_TURBO"),
    "resolution": ("V_2", "V_2_TURBO", "V_2A", "V_2A_TURBO"),
    "color_palette": ("V_2", "V_2_TURBO"),
}
"""Which legacy model may send what (document and Ideogram's reference): a field -> the models
that take it."""


class Form(BaseModel):
    model_config = ConfigDict(extra="forbid", arbitrary_types_allowed=True)
    webhook: StrictStr | None = None
    """The gateway's own field: a URL told when the request's task ends (surfaces._tasks)."""

    def given(self) -> dict[str, Any]:
        """The fields the client gave (files as UploadFiles, or lists of them)."""
        return self.model_dump(exclude_none=True)

    def _one_size(self) -> None:
        if getattr(self, "aspect_ratio", None) and getattr(self, "resolution", None):
            raise InvalidRequest("'aspect_ratio' and 'resolution' cannot be used together; give one of them.",
                                 field="resolution")


# -- Ideogram 4.0 --

class V4Generate(Form):
    text_prompt: StrictStr | None = None
    json_prompt: JsonObject | None = None
    prompt: StrictStr | None = None
    """4.0's legacy name of text_prompt."""
    resolution: Literal[V4_RESOLUTIONS] | None = None
    rendering_speed: Literal["TURBO", "DEFAULT", "QUALITY", "FLASH"] | None = None
    seed: Seed | None = None

    @model_validator(mode="after")
    def _rules(self) -> V4Generate:
        given = [name for name in ("text_prompt", "json_prompt", "prompt") if getattr(self, name) not in (None, "")]
        if len(given) != 1:
            raise InvalidRequest("Give exactly one of 'text_prompt' and 'json_prompt' (or the legacy 'prompt'); got "
                                 f"{' and '.join(repr(g) for g in given) or 'none'}.",
                                 field=given[-1] if given else "text_prompt",
                                 code=None if given else "missing_required_parameter")
        if self.rendering_speed == "FLASH":  # in Ideogram's enum, refused by Ideogram for 4.0
            raise InvalidRequest("rendering_speed FLASH is not yet available for Ideogram 4.0; use TURBO, DEFAULT or "
                                 "QUALITY.", field="rendering_speed")
        return self


# -- Ideogram 3.0 (edit's aspect_ratio and negative_prompt and replace-background's style_type are in
# the document but not in Ideogram's endpoints: accepted, checked, not sent) --

class V3Form(Form):
    rendering_speed: Speed | None = None
    num_images: NumImages | None = None
    seed: Seed | None = None
    style_reference_images: Files | None = None
    style_preset: Literal[STYLE_PRESETS] | None = None
    color_palette: JsonObject | None = None


class V3Generate(V3Form):
    prompt: Prompt
    aspect_ratio: Literal[V3_RATIOS] | None = None
    resolution: Literal[V3_RESOLUTIONS] | None = None
    magic_prompt: Magic | None = None
    style_type: V3Style | None = None
    negative_prompt: StrictStr | None = None

    @model_validator(mode="after")
    def _rules(self) -> V3Generate:
        self._one_size()
        return self


class V3Remix(V3Generate):
    image: File
    image_weight: Weight | None = None


class V3Edit(V3Form):
    prompt: Prompt
    image: File
    mask: File
    aspect_ratio: Literal[V3_RATIOS] | None = None
    magic_prompt: Magic | None = None
    style_type: V3Style | None = None
    negative_prompt: StrictStr | None = None


class V3Reframe(V3Form):
    image: File
    resolution: Literal[V3_RESOLUTIONS]


class V3ReplaceBackground(V3Form):
    prompt: Prompt
    image: File
    magic_prompt: Magic | None = None
    style_type: V3Style | None = None


# -- legacy: generate, remix and upscale take their text fields inside `image_request` (a JSON
# object, or in a form a JSON string part); edit and describe take plain parts --

class Envelope(Form):
    image_request: JsonObject


class LegacyForm(Form):
    def _model_rules(self, model: str) -> None:
        for name, models in LEGACY_MODEL_RULES.items():
            if getattr(self, name, None) is not None and model not in models:
                raise InvalidRequest(f"'{name}' is not supported by model {model}; only by {', '.join(models)}.",
                                     field=name, code="unsupported_parameter")


class LegacyGenerate(LegacyForm):
    prompt: Prompt
    aspect_ratio: LegacyRatio | None = None
    model: LegacyModel | None = None
    magic_prompt_option: Magic | None = None
    magic_prompt_version: MagicVersion | None = None
    seed: Seed | None = None
    style_type: LegacyStyle | None = None
    negative_prompt: StrictStr | None = None
    num_images: NumImages | None = None
    resolution: LegacyResolution | None = None
    color_palette: JsonObject | None = None

    @model_validator(mode="after")
    def _rules(self) -> LegacyGenerate:
        self._one_size()
        self._model_rules(self.model or "V_2")
        return self


class LegacyRemix(LegacyGenerate):
    image_weight: Weight | None = None
    image_file: File


class LegacyEdit(LegacyForm):
    prompt: Prompt
    model: LegacyModel
    magic_prompt_option: Magic | None = None
    num_images: NumImages | None = None
    seed: Seed | None = None
    style_type: LegacyStyle | None = None
    image_file: File
    mask: File

    @model_validator(mode="after")
    def _rules(self) -> LegacyEdit:
        if self.model not in EDIT_MODELS:
            raise InvalidRequest(f"Invalid value for 'model': '{self.model}'. /edit supports only V_2 and V_2_TURBO.",
                                 field="model", code="unsupported_model")
        self._model_rules(self.model)
        return self


class LegacyUpscale(LegacyForm):
    prompt: StrictStr | None = None
    resemblance: Weight | None = None
    detail: Weight | None = None
    magic_prompt_option: Magic | None = None
    magic_prompt_version: MagicVersion | None = None
    num_images: NumImages | None = None
    seed: Seed | None = None
    image_file: File


class LegacyDescribe(LegacyForm):
    describe_model_version: Literal["V_2", "V_3"] | None = None
    image_file: File
