"""Draw the two Teams app icons with the standard library only (zlib + struct).

color.png: 192x192, a check mark on approvalbot blue. outline.png: 32x32, the same
mark in white on a transparent background, as Teams requires. Run from anywhere:
`python manifests/teams/make_icons.py`; it rewrites both files next to itself.
"""

from __future__ import annotations

import math
import struct
import zlib
from pathlib import Path

BLUE = (59, 91, 219)
WHITE = (255, 255, 255)


def png(width: int, height: int, rows: list[list[tuple[int, int, int, int]]]) -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    raw = b"".join(b"\x00" + bytes(c for px in row for c in px) for row in rows)
    header = struct.pack(">IIBBBBB", width, height, 8, 6, 0, 0, 0)  # 8-bit RGBA
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw, 9)) + chunk(b"IEND", b"")


def distance_to_segment(px: float, py: float, a: tuple[float, float], b: tuple[float, float]) -> float:
    ax, ay = a
    bx, by = b
    dx, dy = bx - ax, by - ay
    t = max(0.0, min(1.0, ((px - ax) * dx + (py - ay) * dy) / (dx * dx + dy * dy)))
    return math.hypot(px - (ax + t * dx), py - (ay + t * dy))


def coverage(size: int, x: int, y: int, width: float, shapes) -> float:
    """Anti-aliased coverage of pixel (x, y) by strokes given in unit coordinates."""
    cx, cy = (x + 0.5) / size, (y + 0.5) / size
    best = min(shape(cx, cy) for shape in shapes)
    edge = 0.5 / size
    return max(0.0, min(1.0, (width / 2 - best) / (2 * edge) + 0.5))


def check_mark():
    return [
        lambda x, y: distance_to_segment(x, y, (0.27, 0.52), (0.43, 0.68)),
        lambda x, y: distance_to_segment(x, y, (0.43, 0.68), (0.74, 0.34)),
    ]


def rounded_square(inset: float, radius: float):
    """The outline of a rounded square, as a distance function."""
    lo, hi = inset, 1 - inset

    def dist(x: float, y: float) -> float:
        qx = max(lo + radius - x, 0, x - (hi - radius))
        qy = max(lo + radius - y, 0, y - (hi - radius))
        outside = math.hypot(qx, qy) - radius
        if qx == 0 and qy == 0:
            outside = -min(x - lo, hi - x, y - lo, hi - y)
        return abs(outside)

    return dist


def color_icon(size: int = 192) -> bytes:
    rows = []
    for y in range(size):
        row = []
        for x in range(size):
            a = coverage(size, x, y, 0.11, check_mark())
            row.append((*(round(BLUE[i] * (1 - a) + WHITE[i] * a) for i in range(3)), 255))
        rows.append(row)
    return png(size, size, rows)


def outline_icon(size: int = 32) -> bytes:
    shapes = [*check_mark(), rounded_square(0.06, 0.18)]
    rows = []
    for y in range(size):
        rows.append([(*WHITE, round(255 * coverage(size, x, y, 0.09, shapes))) for x in range(size)])
    return png(size, size, rows)


if __name__ == "__main__":
    here = Path(__file__).resolve().parent
    (here / "color.png").write_bytes(color_icon())
    (here / "outline.png").write_bytes(outline_icon())
    print("wrote", here / "color.png", "and", here / "outline.png")
