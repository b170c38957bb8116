"""A deterministic synthetic board source: component images and the requests they make.

What the demo, the benchmarks and the exporter's bias calibration send. numpy (+ Pillow for PNG)
only, no torch.

Images. Every component type has a *style* fixed by the CoE seed and the type name (background,
body colour and size, pins along two sides, a marking stripe pattern); every image of the type
is that style with per-image jitter (offset of up to 4% of the size in whole pixels, brightness,
sensor noise). With probability
``defect_share`` an image gets an injected defect: a bright *scratch* across the body or a dark
*blob* (solder splash / burn). Images are generated as uint8 pixels, so the float32 array (pixel /
255, CHW) equals ``orchestrator.images.decode_image`` of the PNG bytes exactly.

Determinism. An image is a pure function of (CoE seed, source seed, component type, index, shape):
the same arguments give the same pixels and the same PNG bytes in every process (seeds come from
BLAKE2, not Python's salted ``hash``). ``index`` is the occurrence number of that type in the
source's stream; disjoint index ranges (or another source seed) give fresh, independent samples.

Requests. ``requests(n, order)`` walks boards: ``order="board"`` is the scan order of the board
layout -- components of one type sit in small clusters (runs of up to ``cluster`` parts, like
resistor arrays), the clusters placed in a seeded order that is the same for every board of the
design; ``order="shuffled"`` is a fresh seeded permutation of each board's components (no
locality). ``n=None`` is exactly one board; larger ``n`` continues with further boards.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from orchestrator.coe import CoEDefinition
from orchestrator.images import encode_png, to_tensor

Order = Literal["board", "shuffled"]
Encoding = Literal["array", "png"]


def stable_int(*parts: object) -> int:
    """A 64-bit integer from the parts' text (identical in every process)."""
    text = "\x1f".join(str(p) for p in parts)
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "little")


@dataclass(frozen=True)
class BoardRequest:
    """One component image to inspect. Unpacks as ``(request_id, component_type, image)``.

    ``image`` is float32 [C, H, W] (``encoding="array"``) or PNG bytes (``encoding="png"``);
    ``index`` is the image's occurrence number in the source, ``defective`` the ground truth
    (a defect was injected), ``board`` the board number and ``position`` the slot on it.
    """

    request_id: int
    component_type: str
    image: np.ndarray | bytes = field(repr=False)
    index: int = 0
    defective: bool = False
    board: int = 0
    position: int = 0

    def __iter__(self) -> Iterator[object]:
        return iter((self.request_id, self.component_type, self.image))


@dataclass(frozen=True)
class _Style:
    bg: np.ndarray  # [C] background level 0..255
    body: np.ndarray  # [C]
    pin: np.ndarray  # [C]
    body_w: float  # fraction of the width
    body_h: float
    pins: int  # per side
    pins_vertical: bool  # pins on top/bottom instead of left/right
    stripe_period: int  # pixels; marking stripes on the body
    stripe_angle: int  # 0 horizontal, 1 vertical, 2 diagonal


class BoardSource:
    """Deterministic component images and requests for one CoE's board.

    ``defect_share`` in [0, 1] is the probability that an image has an injected defect.
    ``image_shape`` defaults to the CoE's ``image`` (C, H, W); ``image()`` takes a per-call shape.
    """

    def __init__(
        self,
        coe: CoEDefinition,
        seed: int = 0,
        defect_share: float = 0.05,
        image_shape: tuple[int, int, int] | None = None,
        cluster: int = 8,
    ) -> None:
        if not 0.0 <= defect_share <= 1.0:
            raise ValueError(f"defect_share must be in [0, 1], got {defect_share}")
        if cluster < 1:
            raise ValueError(f"cluster must be >= 1, got {cluster}")
        self.coe = coe
        self.seed = int(seed)
        self.defect_share = float(defect_share)
        self.image_shape = tuple(image_shape or coe.image.shape)
        self.cluster = cluster
        self._styles: dict[tuple[str, int], _Style] = {}
        self._templates: dict[tuple[str, int, int, int], tuple[np.ndarray, int, _Style]] = {}
        self._layout: list[str] | None = None

    # -- images ------------------------------------------------------------------------------
    def _style(self, component_type: str, channels: int) -> _Style:
        key = (component_type, channels)
        style = self._styles.get(key)
        if style is None:
            # the style depends on the CoE seed and the type only: every source seed (the demo's,
            # the calibration's, a test's fresh sample) sees the same kind of component
            rng = np.random.default_rng(stable_int("style", self.coe.seed, component_type))
            style = _Style(
                bg=rng.uniform(20, 90, channels),
                body=rng.uniform(60, 200, channels),
                pin=rng.uniform(170, 235, channels),
                body_w=float(rng.uniform(0.35, 0.7)),
                body_h=float(rng.uniform(0.3, 0.65)),
                pins=int(rng.integers(1, 6)),
                pins_vertical=bool(rng.random() < 0.5),
                stripe_period=int(rng.integers(3, 12)),
                stripe_angle=int(rng.integers(0, 3)),
            )
            self._styles[key] = style
        return style

    def _rng(self, component_type: str, index: int) -> np.random.Generator:
        return np.random.default_rng(stable_int("image", self.coe.seed, self.seed, component_type, index))

    def is_defective(self, component_type: str, index: int) -> bool:
        """Whether image ``index`` of the type has an injected defect (ground truth)."""
        return self._rng(component_type, index).random() < self.defect_share

    def _template(self, component_type: str, shape: tuple[int, int, int]) -> tuple[np.ndarray, int, _Style]:
        """The type's clean, centred component on a canvas padded by the jitter range J on each
        side: [H + 2J, W + 2J, C] float32 (gain 1, no noise), cached per type and shape.

        Per-image jitter is then an integer-pixel window into it -- ~5x cheaper than drawing
        every image from scratch, which matters because calibration renders ~500 per expert.
        """
        key = (component_type, *shape)
        hit = self._templates.get(key)
        if hit is not None:
            return hit
        c, h, w = shape
        st = self._style(component_type, c)
        j = max(1, round(0.04 * min(h, w)))
        hh, ww = h + 2 * j, w + 2 * j
        yy, xx = np.mgrid[0:hh, 0:ww].astype(np.float32)
        cx, cy = ww / 2, hh / 2
        img = np.empty((hh, ww, c), dtype=np.float32)
        img[:] = st.bg
        bw, bh = st.body_w * w / 2, st.body_h * h / 2
        body = (np.abs(xx - cx) <= bw) & (np.abs(yy - cy) <= bh)
        coord = (yy, xx, xx + yy)[st.stripe_angle]
        img[body] = st.body
        img[body & ((coord // st.stripe_period) % 2 == 0)] = st.body * 0.8
        # pins: small pads along two opposite sides of the body
        along, across = (xx, yy) if st.pins_vertical else (yy, xx)
        c_along, c_across = (cx, cy) if st.pins_vertical else (cy, cx)
        half_along, half_across = (bw, bh) if st.pins_vertical else (bh, bw)
        pad = max(1.0, 0.06 * min(h, w))
        for k in range(st.pins):
            pos = c_along - half_along + (k + 0.5) * 2 * half_along / st.pins
            near = np.abs(along - pos) <= pad
            for side in (-1, 1):
                edge = c_across + side * (half_across + pad)
                img[near & (np.abs(across - edge) <= pad)] = st.pin
        entry = (img, j, st)
        self._templates[key] = entry
        return entry

    def pixels(self, component_type: str, index: int, shape: tuple[int, int, int] | None = None) -> np.ndarray:
        """uint8 [H, W, C] pixels of image ``index`` of ``component_type``."""
        c, h, w = shape or self.image_shape
        template, j, st = self._template(component_type, (c, h, w))
        rng = self._rng(component_type, index)
        defective = rng.random() < self.defect_share  # first draw: same as is_defective()
        dx, dy = (int(v) for v in rng.integers(-j, j + 1, size=2))
        gain = np.float32(rng.uniform(0.9, 1.1))
        # the window [j - dy, j - dy + h) moves the component by (dx, dy) pixels
        img = template[j - dy : j - dy + h, j - dx : j - dx + w] * gain
        if defective:
            yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
            cx, cy = w / 2 + dx, h / 2 + dy
            bw, bh = st.body_w * w / 2, st.body_h * h / 2
            if rng.random() < 0.5:  # scratch: a bright line across the body
                body = (np.abs(xx - cx) <= bw) & (np.abs(yy - cy) <= bh)
                angle = rng.uniform(0, np.pi)
                px, py = cx + rng.uniform(-bw, bw) / 2, cy + rng.uniform(-bh, bh) / 2
                dist = np.abs((xx - px) * np.sin(angle) - (yy - py) * np.cos(angle))
                img[(dist <= max(0.6, 0.015 * w)) & body] = 250.0
            else:  # blob: a dark disc
                r = rng.uniform(0.06, 0.14) * min(h, w)
                px, py = cx + rng.uniform(-bw, bw) * 0.7, cy + rng.uniform(-bh, bh) * 0.7
                img[(xx - px) ** 2 + (yy - py) ** 2 <= r * r] = 10.0
        img += rng.standard_normal(size=img.shape, dtype=np.float32) * np.float32(5.0)
        return np.clip(np.rint(img), 0, 255).astype(np.uint8)

    def image(self, component_type: str, index: int, shape: tuple[int, int, int] | None = None) -> np.ndarray:
        """float32 [C, H, W] in [0, 1]: equals ``decode_image(image_png(...))``."""
        return to_tensor(self.pixels(component_type, index, shape))

    def image_png(self, component_type: str, index: int, shape: tuple[int, int, int] | None = None) -> bytes:
        """The same image as PNG bytes (same arguments -> same bytes)."""
        return encode_png(self.pixels(component_type, index, shape))

    def sample(
        self,
        component_types: str | Sequence[str],
        n: int,
        start: int = 0,
        shape: tuple[int, int, int] | None = None,
    ) -> np.ndarray:
        """float32 [n, C, H, W]: images ``start .. start+n-1``, cycling over the given types."""
        types = [component_types] if isinstance(component_types, str) else list(component_types)
        if not types:
            raise ValueError("sample needs at least one component type")
        c, h, w = shape or self.image_shape
        out = np.empty((n, c, h, w), dtype=np.float32)
        for i in range(n):
            t = types[i % len(types)]
            out[i] = self.image(t, start + i // len(types), (c, h, w))
        return out

    # -- requests ----------------------------------------------------------------------------
    def layout(self) -> list[str]:
        """Component type of every slot of one board, in scan order (clusters of one type)."""
        if self._layout is None:
            clusters: list[list[str]] = []
            for t, count in self.coe.board.mix.items():
                for start in range(0, count, self.cluster):
                    clusters.append([t] * min(self.cluster, count - start))
            rng = np.random.default_rng(stable_int("layout", self.coe.seed, self.coe.board.name))
            order = rng.permutation(len(clusters))
            self._layout = [t for i in order for t in clusters[i]]
        return list(self._layout)

    def requests(
        self,
        n: int | None = None,
        order: Order = "board",
        encoding: Encoding = "array",
        start_id: int = 0,
    ) -> Iterator[BoardRequest]:
        """Yield ``n`` requests (``None``: one whole board) in board or shuffled order."""
        if order not in ("board", "shuffled"):
            raise ValueError(f"order must be 'board' or 'shuffled', got {order!r}")
        if encoding not in ("array", "png"):
            raise ValueError(f"encoding must be 'array' or 'png', got {encoding!r}")
        layout = self.layout()
        total = len(layout) if n is None else int(n)
        if total < 0:
            raise ValueError(f"n must be >= 0, got {n}")
        counters: dict[str, int] = {}
        emitted = 0
        board = 0
        while emitted < total:
            if order == "board":
                slots = list(range(len(layout)))
            else:
                slots = list(np.random.default_rng(stable_int("shuffle", self.seed, board)).permutation(len(layout)))
            for pos in slots:
                if emitted >= total:
                    break
                t = layout[pos]
                idx = counters.get(t, 0)
                counters[t] = idx + 1
                img: np.ndarray | bytes = self.image(t, idx) if encoding == "array" else self.image_png(t, idx)
                yield BoardRequest(start_id + emitted, t, img, idx, self.is_defective(t, idx), board, int(pos))
                emitted += 1
            board += 1
