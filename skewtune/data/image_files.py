"""One image file, as ingest and `skewtune predict` both check it: the extensions read as images, and whether a
file can be used. One that cannot is a missing file (`missing_image`), a zero-size, truncated or non-image file
(`unreadable_image`), one of more pixels than data.max_image_pixels, told by its header before any pixel is decoded
(`oversized_image`: a 17 KB PNG can hold 12000 x 12000 pixels, 400 MB decoded, and every batch would decode it again),
or a pixel format without a faithful 8-bit RGB version (`unsupported_mode`: 16-bit, 32-bit integer and float images).
Every other mode (greyscale, palette, RGBA, CMYK, ...) is converted to RGB, as Hugging Face image processors do; an
alpha channel is dropped. A hash of the converted pixels (and the size) identifies the picture, whatever the file's
name or compression settings.
"""

from __future__ import annotations

import hashlib
import io
import warnings
from pathlib import Path

EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff")
MODE = "RGB"

# Modes that PIL converts to 8-bit RGB without losing the picture; others (I;16, I, F) are unsupported_mode.
CONVERTIBLE = ("1", "L", "LA", "La", "P", "PA", "RGB", "RGBA", "RGBa", "RGBX", "CMYK", "YCbCr", "LAB", "HSV")
IMAGE_PROBLEMS = ("missing_image", "unreadable_image", "oversized_image", "unsupported_mode")


def to_rgb(image):
    """`image` (PIL) as RGB; palette images with a transparent colour go through RGBA, as PIL advises."""
    if image.mode == MODE:
        return image
    if image.mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")
    return image.convert(MODE)


def inspect_image(path: Path, max_pixels: int) -> dict:
    """What ingest needs of one image file: its bytes, size, mode and content hash, or why it cannot be used
    (`problem`: one of IMAGE_PROBLEMS, with `detail`). An image of more than `max_pixels` is refused from its header."""
    from PIL import Image, UnidentifiedImageError

    if not path.is_file():
        return {"problem": "missing_image", "detail": "no such file"}
    data = path.read_bytes()
    if not data:
        return {"problem": "unreadable_image", "detail": "the file is empty (0 bytes)"}
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            image = Image.open(io.BytesIO(data))  # reads the header only
            if image.width * image.height > max_pixels:
                return {
                    "problem": "oversized_image",
                    "width": image.width,
                    "height": image.height,
                    "detail": f"{image.width}x{image.height} = {image.width * image.height:,} pixels, above the bound of {max_pixels:,}",
                }
            image.load()  # decodes every pixel: a truncated file fails here
    except Image.DecompressionBombError as exc:  # Pillow's own bound (twice its MAX_IMAGE_PIXELS), above any max_pixels
        return {"problem": "oversized_image", "detail": str(exc)[:200]}
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        return {"problem": "unreadable_image", "detail": str(exc)[:200] or type(exc).__name__}
    if image.mode not in CONVERTIBLE:
        return {
            "problem": "unsupported_mode",
            "detail": f"mode {image.mode} (e.g. 16-bit or float pixels) has no faithful 8-bit RGB version",
            "mode": image.mode,
            "width": image.width,
            "height": image.height,
        }
    rgb = to_rgb(image)
    digest = hashlib.sha256(f"{rgb.width}x{rgb.height}:".encode() + rgb.tobytes()).hexdigest()
    return {
        "problem": None,
        "bytes": data,
        "hash": digest,
        "mode": image.mode,
        "width": image.width,
        "height": image.height,
    }
