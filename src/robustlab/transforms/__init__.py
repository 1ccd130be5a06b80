"""Model-free, seeded input changes with a severity: image corruptions and text typos.

Importing this package registers the transforms by name (``registry.create("gaussian_noise")``).
"""

from robustlab.transforms.image import (
    TABLES,
    Brightness,
    Contrast,
    DefocusBlur,
    GaussianBlur,
    GaussianNoise,
    ImageCorruption,
    ImpulseNoise,
    ShotNoise,
    SpeckleNoise,
)
from robustlab.transforms.simplicity import (
    RandomizeBlock,
    RandomizeComplex,
    RandomizeSimple,
    randomize_block,
    swap_block,
)
from robustlab.transforms.styles import STYLES, shift_dataset, style_images
from robustlab.transforms.text import CharTypos

__all__ = [
    "TABLES",
    "Brightness",
    "CharTypos",
    "Contrast",
    "DefocusBlur",
    "GaussianBlur",
    "GaussianNoise",
    "ImageCorruption",
    "ImpulseNoise",
    "ShotNoise",
    "SpeckleNoise",
    "RandomizeBlock",
    "RandomizeComplex",
    "RandomizeSimple",
    "randomize_block",
    "swap_block",
    "STYLES",
    "shift_dataset",
    "style_images",
]
