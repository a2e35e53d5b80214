import pytest

from pixelgate.domain import sizes
from pixelgate.domain.sizes import Size
from pixelgate.errors import InvalidRequest


@pytest.mark.parametrize("text,expected", [
    ("1024x1024", Size(1024, 1024)), ("1024*768", Size(1024, 768)), ("1280×720", Size(1280, 720)),
    ("16:9", Size(ratio=(16, 9))), ("16x9", Size(ratio=(16, 9))), ("ASPECT_3_2", Size(ratio=(3, 2))),
    ("--ar 21:9", Size(ratio=(21, 9))), ("2K", Size(tier="2K")), ("4k", Size(tier="4K")), ("auto", Size()),
    ("RESOLUTION_1280_720", Size(1280, 720)), ("16:9@2K", Size(ratio=(16, 9), tier="2K")),
    ("3:4 @ 1k", Size(ratio=(3, 4), tier="1K")),
])
def test_every_vocabulary_parses(text, expected):
    assert sizes.parse(text) == expected


@pytest.mark.parametrize("text", ["big", "0x100", "1024x", "16:0", "x", "16:9@8K", "0:9@2K", "@2K"])
def test_garbage_names_the_field(text):
    with pytest.raises(InvalidRequest) as info:
        sizes.parse(text, field="aspect_ratio")
    assert info.value.field == "aspect_ratio"


def test_nearest_prefers_ratio_then_area():
    options = [Size(1024, 1024), Size(1792, 1024), Size(1024, 1792)]
    assert sizes.nearest(Size(ratio=(16, 9)), options) == Size(1792, 1024)
    assert sizes.nearest(Size(ratio=(3, 4)), options) == Size(1024, 1792)
    squares = [Size(256, 256), Size(512, 512), Size(1024, 1024)]
    assert sizes.nearest(Size(600, 600), squares) == Size(512, 512)
    assert sizes.nearest(Size(tier="1K"), squares) == Size(1024, 1024)


def test_nothing_near_is_a_400_listing_the_options():
    with pytest.raises(InvalidRequest) as info:
        sizes.nearest(Size(ratio=(4, 1)), [Size(1024, 1024)])
    assert info.value.field == "size" and "1024x1024" in info.value.message


def test_pixels_for_ratio_and_tier():
    w, h = sizes.pixels_for(Size(ratio=(16, 9)), 1024 * 1024)
    assert w % 16 == 0 and h % 16 == 0 and abs(w / h - 16 / 9) < 0.05
    assert sizes.pixels_for(Size(tier="2K"), 1024 * 1024) == (2048, 2048)
