"""The synthetic board source: deterministic images and requests, controllable defect share."""

from __future__ import annotations

import subprocess
import sys
from collections import Counter
from dataclasses import replace

import numpy as np
import pytest

from exporter.generate import PRESETS, generate
from orchestrator.board_source import BoardSource
from orchestrator.coe import CoEDefinition
from orchestrator.images import decode_image


def make_coe(types: int = 4, components: int = 40, seed: int = 5) -> CoEDefinition:
    return generate(replace(PRESETS["demo"], types=types, detectors=1, components=components, seed=seed, image_size=32))


def test_same_seed_same_bytes_other_seed_differs() -> None:
    coe = make_coe()
    a, b = BoardSource(coe, seed=1), BoardSource(coe, seed=1)
    assert a.image_png("t000", 3) == b.image_png("t000", 3)
    assert np.array_equal(a.image("t001", 0), b.image("t001", 0))
    assert a.image_png("t000", 3) != BoardSource(coe, seed=2).image_png("t000", 3)
    assert a.image_png("t000", 3) != a.image_png("t000", 4)


def test_deterministic_across_processes() -> None:
    """Seeds must not come from Python's per-process salted hash()."""
    coe = make_coe()
    here = BoardSource(coe, seed=9).image_png("t002", 5)
    code = (
        "import sys, hashlib\n"
        "from dataclasses import replace\n"
        "from exporter.generate import PRESETS, generate\n"
        "from orchestrator.board_source import BoardSource\n"
        "coe = generate(replace(PRESETS['demo'], types=4, detectors=1, components=40, seed=5, image_size=32))\n"
        "print(hashlib.sha256(BoardSource(coe, seed=9).image_png('t002', 5)).hexdigest())\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={"PYTHONHASHSEED": "12345", "PATH": ""})
    import hashlib

    assert out.stdout.strip() == hashlib.sha256(here).hexdigest()


def test_png_decodes_to_the_float_array() -> None:
    coe = make_coe()
    src = BoardSource(coe, seed=0)
    arr = src.image("t003", 7)
    assert arr.dtype == np.float32 and arr.shape == (3, 32, 32)
    assert arr.min() >= 0.0 and arr.max() <= 1.0
    assert np.array_equal(decode_image(src.image_png("t003", 7), (3, 32, 32)), arr)


def test_types_look_different() -> None:
    coe = make_coe()
    src = BoardSource(coe, seed=0, defect_share=0.0)
    a = src.sample("t000", 16).mean(axis=0)
    b = src.sample("t001", 16).mean(axis=0)
    within = np.abs(src.sample("t000", 16, start=100).mean(axis=0) - a).mean()
    assert np.abs(a - b).mean() > 3 * within


@pytest.mark.parametrize("share", [0.0, 0.2, 0.5])
def test_defect_share(share: float) -> None:
    coe = make_coe()
    src = BoardSource(coe, seed=4, defect_share=share)
    n = 600
    flags = [src.is_defective(f"t00{i % 4}", i) for i in range(n)]
    assert abs(sum(flags) / n - share) < 0.06
    if share > 0:
        clean = BoardSource(coe, seed=4, defect_share=0.0)
        idx = next(i for i in range(n) if flags[i])
        t = f"t00{idx % 4}"
        # a defect changes pixels beyond the noise (same rng stream otherwise)
        assert np.abs(src.image(t, idx) - clean.image(t, idx)).max() > 0.3


def test_requests_whole_board_and_orders() -> None:
    coe = make_coe(types=5, components=60)
    src = BoardSource(coe, seed=3)
    board = list(src.requests())
    assert len(board) == coe.board.total
    assert Counter(r.component_type for r in board) == Counter(dict(coe.board.mix))
    assert [r.request_id for r in board] == list(range(len(board)))
    rid, ctype, image = board[0]  # unpacks as (request_id, component_type, image)
    assert rid == 0 and ctype == board[0].component_type and isinstance(image, np.ndarray)
    # board order keeps same-type clusters: far fewer type changes than a shuffle
    def changes(rs) -> int:  # type: ignore[no-untyped-def]
        return sum(1 for x, y in zip(rs, rs[1:], strict=False) if x.component_type != y.component_type)

    shuffled = list(src.requests(order="shuffled"))
    assert Counter(r.component_type for r in shuffled) == Counter(dict(coe.board.mix))
    assert changes(board) < changes(shuffled)
    # same seed -> same sequence; images of one type are numbered in order of appearance
    again = [(r.component_type, r.index) for r in BoardSource(coe, seed=3).requests(order="shuffled")]
    assert again == [(r.component_type, r.index) for r in shuffled]


def test_requests_n_spans_boards_and_png() -> None:
    coe = make_coe(types=3, components=20)
    src = BoardSource(coe, seed=1)
    reqs = list(src.requests(n=45, encoding="png"))
    assert len(reqs) == 45 and {r.board for r in reqs} == {0, 1, 2}
    assert isinstance(reqs[0].image, bytes) and reqs[0].image[:4] == b"\x89PNG"
    assert reqs[0].image == src.image_png(reqs[0].component_type, reqs[0].index)
    assert list(src.requests(n=0)) == []
    with pytest.raises(ValueError, match="order"):
        list(src.requests(order="random"))  # type: ignore[arg-type]
