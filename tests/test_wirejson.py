"""Base64 images pass through the gateway's JSON uncopied, and come out byte for byte."""

import base64
import os

import orjson
import pytest

from pixelgate import wirejson

LONG = base64.b64encode(os.urandom(60_000)).decode()  # 80 KB of base64: above LIFT_MIN_BYTES


def test_long_values_of_named_keys_are_lifted_as_views_of_the_body():
    body = orjson.dumps({"created": 1, "data": [{"b64_json": LONG, "revised_prompt": "a fox"}]})
    parsed = wirejson.loads(body, lift=("b64_json",))
    value = parsed["data"][0]["b64_json"]
    assert isinstance(value, memoryview) and value.obj is body  # not a copy
    assert bytes(value) == LONG.encode()
    assert parsed["data"][0]["revised_prompt"] == "a fox" and parsed["created"] == 1


def test_without_lift_or_for_short_values_it_is_plain_orjson():
    body = orjson.dumps({"data": [{"b64_json": LONG}, {"b64_json": "c2hvcnQ="}]})
    assert wirejson.loads(body) == orjson.loads(body)
    parsed = wirejson.loads(body, lift=("b64_json",))
    assert isinstance(parsed["data"][0]["b64_json"], memoryview)
    assert parsed["data"][1]["b64_json"] == "c2hvcnQ="


@pytest.mark.parametrize("body", [
    # whitespace around the colon, as pretty-printing vendors send it
    ('{\n  "data": [\n    {\n      "b64_json" :\t"' + LONG + '"\n    }\n  ]\n}').encode(),
    # the key's text inside another string is not a key; an escaped value is left to orjson
    orjson.dumps({"note": '"b64_json": "x', "data": [{"b64_json": LONG[:20000] + "\\/" + LONG}]}),
    # a value that is not a string
    orjson.dumps({"b64_json": [1, 2], "data": [{"b64_json": LONG}]}),
])
def test_the_result_equals_what_orjson_parses(body):
    parsed = wirejson.loads(body, lift=("b64_json",))
    assert orjson.loads(wirejson.dumps(parsed)) == orjson.loads(body)


def test_invalid_json_is_still_refused():
    body = b'{"data": [{"b64_json": "' + LONG.encode() + b'"}'  # cut short
    with pytest.raises(orjson.JSONDecodeError):
        wirejson.loads(body, lift=("b64_json",))


def test_views_are_spliced_into_the_rendered_parts_uncopied():
    body = orjson.dumps({"data": [{"b64_json": LONG}, {"b64_json": LONG[::-1]}]})
    parsed = wirejson.loads(body, lift=("b64_json",))
    answer = {"created": 2, "data": parsed["data"], "note": "ok"}
    parts = wirejson.dumps_parts(answer)
    views = [p for p in parts if isinstance(p, memoryview)]
    assert len(views) == 2 and all(v.obj is body for v in views)
    assert orjson.loads(b"".join(parts)) == {"created": 2, "data": [{"b64_json": LONG}, {"b64_json": LONG[::-1]}],
                                              "note": "ok"}


def test_many_views_keep_their_order():
    views = [memoryview(f"{i:05d}".encode() * 4000) for i in range(12)]  # mark 1 vs mark 10, 11
    rendered = orjson.loads(wirejson.dumps({"data": views}))
    assert rendered["data"] == [bytes(v).decode() for v in views]


def test_dumps_falls_back_to_the_given_default_and_refuses_the_unknown():
    assert wirejson.dumps({"x": {1, 2}}, default=sorted) == b'{"x":[1,2]}'
    with pytest.raises(TypeError):
        wirejson.dumps({"x": object()})
