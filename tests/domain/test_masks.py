import io

from PIL import Image

from pixelgate.domain import masks
from tests.conftest import mask_png


def _pixels(data: bytes, mode: str):
    img = Image.open(io.BytesIO(data)).convert(mode)
    return img.getpixel((5, 5)), img.getpixel((60, 5))  # left half: edit; right half: keep


def test_alpha_to_black_and_white_and_back():
    source = mask_png(64, 64)  # OpenAI: left half transparent = edit
    black = masks.convert(source, "alpha", "black")
    assert _pixels(black, "L") == (0, 255)  # Ideogram: black = edit
    white = masks.convert(source, "alpha", "white")
    assert _pixels(white, "L") == (255, 0)  # BFL / iRAG: white = edit
    back = masks.convert(black, "black", "alpha")
    assert [p[3] for p in _pixels(back, "RGBA")] == [0, 255]
    assert Image.open(io.BytesIO(white)).size == (64, 64)


def test_black_and_white_rule():
    import pytest

    from pixelgate.errors import InvalidRequest
    masks.check_black_and_white(masks.convert(mask_png(), "alpha", "black"))
    grey = io.BytesIO()
    Image.new("L", (8, 8), 128).save(grey, "PNG")
    with pytest.raises(InvalidRequest):
        masks.check_black_and_white(grey.getvalue())
    white = io.BytesIO()
    Image.new("L", (8, 8), 255).save(white, "PNG")
    with pytest.raises(InvalidRequest, match="all white"):
        masks.check_black_and_white(white.getvalue())
