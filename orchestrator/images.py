"""Component images: PNG/JPEG bytes <-> the FP32 tensor the experts take.

Normalisation (the contract with ``orchestrator.experts_io``): CHW float32, values = pixel / 255
in [0, 1], channel order as decoded (L for 1 channel, RGB for 3, RGBA for 4). No resizing: an
image of the wrong size is an error, because silently rescaling a component crop hides a
misconfigured camera or CoE file.
"""

from __future__ import annotations

import io
import warnings

import numpy as np

from orchestrator.errors import CoserveError

_MODES = {1: "L", 3: "RGB", 4: "RGBA"}


class ImageDecodeError(CoserveError, ValueError):
    """The bytes are not a decodable image, or the image does not have the expected shape."""


def _mode_for(channels: int) -> str:
    try:
        return _MODES[channels]
    except KeyError:
        raise ImageDecodeError(f"images with {channels} channels are not supported (1, 3 or 4)") from None


def decode_image(data: bytes, expected_shape: tuple[int, int, int]) -> np.ndarray:
    """Decode PNG/JPEG ``data`` into float32 [C, H, W] in [0, 1].

    Colour images are converted to the expected channel count (e.g. grayscale -> RGB); a
    different width/height raises ``ImageDecodeError`` naming both sizes.
    """
    from PIL import Image, UnidentifiedImageError  # Pillow is only needed where images are decoded

    c, h, w = expected_shape
    mode = _mode_for(c)
    if not isinstance(data, (bytes, bytearray, memoryview)) or len(data) == 0:
        raise ImageDecodeError("image data is empty or not bytes")
    try:
        with warnings.catch_warnings():
            # Pillow warns of (and past twice its limit refuses) images that claim a huge size;
            # the size check below refuses every size but the expected one, so say that instead
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            opened = Image.open(io.BytesIO(bytes(data)))
        with opened as img:
            # the size is in the header: check it before decoding, so that a small file that
            # claims a huge image (a decompression bomb) costs nothing
            if img.size != (w, h):
                raise ImageDecodeError(f"image is {img.size[0]}x{img.size[1]} (WxH), expected {w}x{h}")
            img.load()
            arr = np.asarray(img.convert(mode), dtype=np.uint8)
    except ImageDecodeError:
        raise
    except Image.DecompressionBombError as exc:
        raise ImageDecodeError(f"image claims a size far beyond the expected {w}x{h}: {exc}") from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as exc:
        raise ImageDecodeError(f"cannot decode image ({len(data)} bytes): {exc}") from None
    return to_tensor(arr)


def to_tensor(pixels: np.ndarray) -> np.ndarray:
    """uint8 [H, W] or [H, W, C] pixels -> float32 [C, H, W] / 255."""
    arr = pixels if pixels.ndim == 3 else pixels[:, :, None]
    return np.ascontiguousarray(arr.transpose(2, 0, 1), dtype=np.float32) / np.float32(255.0)


def encode_png(pixels: np.ndarray) -> bytes:
    """uint8 [H, W, C] (C in 1, 3, 4) or [H, W] pixels -> PNG bytes (deterministic for equal input)."""
    from PIL import Image

    arr = np.asarray(pixels, dtype=np.uint8)
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[:, :, 0]
    if arr.ndim == 3:
        _mode_for(arr.shape[2])  # rejects unsupported channel counts with a clear error
    buf = io.BytesIO()
    # fromarray infers L / RGB / RGBA from the uint8 shape (its ``mode=`` argument is deprecated)
    Image.fromarray(np.ascontiguousarray(arr)).save(buf, format="PNG", compress_level=1)
    return buf.getvalue()
