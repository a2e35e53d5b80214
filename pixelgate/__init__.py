"""pixelgate: one gateway in front of many image-generation models."""

__version__ = "0.1.0"
