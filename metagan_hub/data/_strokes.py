# Copyright 2026 The metagan_hub developers. Licensed under the Apache License, Version 2.0.
"""Stroke geometry and rasterization for SVG stroke drawings (numpy + Pillow only, no torch).

An SVG path `d` string is parsed into cubic Bézier control points; a glyph is a list of such strokes. Rendering a
"hand" jitters the control points of every stroke, flattens the curves to polylines, applies a global affine map
and an optional smooth (elastic) displacement to the polyline points, and draws the strokes with round caps and
joins on a supersampled canvas that is then box-filtered down to the output resolution.

This module must stay free of torch imports: it runs in forked worker processes.
"""

from __future__ import annotations

import math
import re
from dataclasses import asdict, dataclass

import numpy as np
from PIL import Image, ImageDraw

_PATH_TOKEN = re.compile(r"[A-Za-z]|[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?")
_PATH_ELEMENT = re.compile(r"<path\b[^>]*?\sd\s*=\s*\"([^\"]*)\"", re.DOTALL)
_ARGS_PER_COMMAND = {"M": 2, "L": 2, "H": 1, "V": 1, "C": 6, "S": 4, "Q": 4, "T": 2, "Z": 0}

# Samples per cubic segment when flattening curves (the segments of stroke drawings are short).
_POINTS_PER_SEGMENT = 8


def _bernstein(n: int) -> np.ndarray:
    t = np.linspace(0.0, 1.0, n)
    return np.stack([(1 - t) ** 3, 3 * (1 - t) ** 2 * t, 3 * (1 - t) * t**2, t**3], axis=1)  # [n, 4]


_BERNSTEIN = _bernstein(_POINTS_PER_SEGMENT)


def parse_svg_path(d: str) -> list[np.ndarray]:
    """
    Parse an SVG path `d` attribute into subpaths of cubic Bézier control points.

    Supports the commands `M L H V C S Q T Z` in absolute and relative form (no arcs). Lines and quadratic curves are
    converted to exact cubic equivalents.

    Args:
        d (`str`): the path data, e.g. `"M11,54.25c3.19,0.62,6.25,0.75,9.73,0.5"`.

    Returns:
        `list[np.ndarray]`: one float64 array `[3 * S + 1, 2]` per subpath with `S >= 1` cubic segments; segment `j`
        uses rows `3j .. 3j + 3`. Subpaths that are a single point are dropped.

    Example:

    ```py
    >>> from metagan_hub.data._strokes import parse_svg_path
    >>> [p.shape for p in parse_svg_path("M0,0 L10,0 c0,5 5,5 5,0")]
    [(7, 2)]
    ```
    """
    tokens = _PATH_TOKEN.findall(d)
    subpaths: list[np.ndarray] = []
    points: list[tuple[float, float]] = []
    cur = (0.0, 0.0)
    start = (0.0, 0.0)
    last_cubic_ctrl: tuple[float, float] | None = None
    last_quad_ctrl: tuple[float, float] | None = None
    command = ""
    i = 0

    def close_subpath() -> None:
        if len(points) >= 4:
            subpaths.append(np.asarray(points, dtype=np.float64))
        points.clear()

    def add_cubic(c1, c2, p) -> None:
        if not points:
            points.append(cur)
        points.extend((c1, c2, p))

    def add_line(p) -> None:
        add_cubic(
            (cur[0] + (p[0] - cur[0]) / 3, cur[1] + (p[1] - cur[1]) / 3),
            (cur[0] + 2 * (p[0] - cur[0]) / 3, cur[1] + 2 * (p[1] - cur[1]) / 3),
            p,
        )

    while i < len(tokens):
        tok = tokens[i]
        if tok.isalpha():
            command = tok
            i += 1
            if command.upper() not in _ARGS_PER_COMMAND:
                raise ValueError(f"unsupported SVG path command {command!r} in path {d[:60]!r}")
            if command.upper() != "Z":
                continue
        elif not command:
            raise ValueError(f"SVG path data must start with a command, got {d[:60]!r}")
        upper = command.upper()
        relative = command.islower()
        n = _ARGS_PER_COMMAND[upper]
        args = [float(t) for t in tokens[i : i + n]]
        if len(args) < n or any(isinstance(t, str) and t.isalpha() for t in tokens[i : i + n]):
            raise ValueError(f"SVG path command {command!r} is missing arguments in path {d[:60]!r}")
        i += n
        ox, oy = cur if relative else (0.0, 0.0)
        if upper == "M":
            close_subpath()
            cur = (args[0] + ox, args[1] + oy)
            start = cur
            command = "l" if relative else "L"  # further coordinate pairs are implicit line-tos
            last_cubic_ctrl = last_quad_ctrl = None
            continue
        if upper == "Z":
            if cur != start:
                add_line(start)
            close_subpath()
            cur = start
            last_cubic_ctrl = last_quad_ctrl = None
            command = ""
            continue
        if upper == "L":
            p = (args[0] + ox, args[1] + oy)
            add_line(p)
            cur, last_cubic_ctrl, last_quad_ctrl = p, None, None
        elif upper == "H":
            p = (args[0] + ox, cur[1])
            add_line(p)
            cur, last_cubic_ctrl, last_quad_ctrl = p, None, None
        elif upper == "V":
            p = (cur[0], args[0] + (oy if relative else 0.0))
            add_line(p)
            cur, last_cubic_ctrl, last_quad_ctrl = p, None, None
        elif upper in ("C", "S"):
            if upper == "C":
                c1 = (args[0] + ox, args[1] + oy)
                c2, p = (args[2] + ox, args[3] + oy), (args[4] + ox, args[5] + oy)
            else:
                c1 = (
                    cur
                    if last_cubic_ctrl is None
                    else (2 * cur[0] - last_cubic_ctrl[0], 2 * cur[1] - last_cubic_ctrl[1])
                )
                c2, p = (args[0] + ox, args[1] + oy), (args[2] + ox, args[3] + oy)
            add_cubic(c1, c2, p)
            cur, last_cubic_ctrl, last_quad_ctrl = p, c2, None
        else:  # Q, T
            if upper == "Q":
                q, p = (args[0] + ox, args[1] + oy), (args[2] + ox, args[3] + oy)
            else:
                q = cur if last_quad_ctrl is None else (2 * cur[0] - last_quad_ctrl[0], 2 * cur[1] - last_quad_ctrl[1])
                p = (args[0] + ox, args[1] + oy)
            c1 = (cur[0] + 2 * (q[0] - cur[0]) / 3, cur[1] + 2 * (q[1] - cur[1]) / 3)
            c2 = (p[0] + 2 * (q[0] - p[0]) / 3, p[1] + 2 * (q[1] - p[1]) / 3)
            add_cubic(c1, c2, p)
            cur, last_cubic_ctrl, last_quad_ctrl = p, None, q
    close_subpath()
    return subpaths


def read_svg_strokes(path: str) -> list[np.ndarray]:
    """Read the stroke paths of a stroke-order SVG file (every `<path d=...>` in document order)."""
    with open(path, encoding="utf-8") as f:
        text = f.read()
    strokes: list[np.ndarray] = []
    for d in _PATH_ELEMENT.findall(text):
        strokes.extend(parse_svg_path(d))
    return strokes


@dataclass(frozen=True)
class StrokeJitter:
    """
    Random variation of a rendered stroke drawing, imitating different hands. Lengths are in units of the drawing's
    view box (109 for kanjivg), angles in degrees.

    Args:
        stroke_width (`tuple[float, float]`): range of the per-sample stroke width (kanjivg draws width 3).
        stroke_width_jitter (`float`): relative per-stroke width variation around the sample's width.
        rotation (`float`): maximum absolute rotation of the whole glyph.
        scale (`tuple[float, float]`): range of the global scale factor.
        aspect (`float`): maximum relative difference between horizontal and vertical scale.
        shear (`float`): maximum absolute horizontal shear factor.
        translate (`float`): maximum absolute translation as a fraction of the view box.
        stroke_shift (`float`): standard deviation of a per-stroke translation.
        endpoint_jitter (`float`): standard deviation of the jitter of stroke start, end and joint points.
        control_jitter (`float`): standard deviation of the jitter of Bézier control points.
        elastic (`float`): amplitude of a smooth random displacement field (0 disables it).
        margin (`float`): fraction of the view box cropped away on each side before fitting it to the image.
        width_contrast (`float`): upper end of a per-sample contrast `c ~ U(0, width_contrast)` between vertical and
            horizontal stroke parts, as in Mincho-style type: a part running at angle `a` to the horizontal is drawn
            `1 + c * (|sin a| - |cos a|)` times the stroke's width (vertical `1 + c`, horizontal `1 - c`). In
            `[0, 1)`; 0 (default) draws every stroke at one width.
        taper (`float`): upper end of a per-sample taper `t ~ U(0, taper)`, as in brush strokes: the width runs from
            `1 + t / 2` times the stroke's width at its start to `1 - t / 2` at its end. In `[0, 2)`; 0 (default):
            no taper.
        pixelate (`float`): probability in `[0, 1]` that a sample is drawn as a bitmap glyph: its coverage is
            averaged onto a coarse grid of `pixel_grid` cells per side, inked where a cell is at least 3/8 covered
            (so that thin strokes survive), and scaled back up with nearest-neighbour sampling. 0 (default): never.
        pixel_grid (`tuple[int, int]`): range (inclusive) of the coarse grid's side length for `pixelate`.

    The last four (the stroke styles) are off by default; while they are off, renders and cache keys are the same as
    without them.

    Example:

    ```py
    >>> import numpy as np
    >>> from metagan_hub.data._strokes import StrokeJitter, parse_svg_path, render_strokes

    >>> strokes = parse_svg_path("M20,50 L90,50") + parse_svg_path("M55,15 L55,95")  # a cross
    >>> styled = StrokeJitter(width_contrast=0.6, taper=0.8, pixelate=0.5)
    >>> render_strokes(strokes, 4, 32, np.random.default_rng(0), styled).shape
    (4, 32, 32)
    ```
    """

    stroke_width: tuple[float, float] = (3.5, 7.0)
    stroke_width_jitter: float = 0.1
    rotation: float = 8.0
    scale: tuple[float, float] = (0.85, 1.0)
    aspect: float = 0.08
    shear: float = 0.12
    translate: float = 0.04
    stroke_shift: float = 1.2
    endpoint_jitter: float = 1.2
    control_jitter: float = 2.0
    elastic: float = 0.0
    margin: float = 0.0
    width_contrast: float = 0.0
    taper: float = 0.0
    pixelate: float = 0.0
    pixel_grid: tuple[int, int] = (10, 16)

    def __post_init__(self):
        for name, upper, closed in (("width_contrast", 1.0, False), ("taper", 2.0, False), ("pixelate", 1.0, True)):
            value = getattr(self, name)
            ok = isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
            if not ok or value < 0 or value > upper or (value == upper and not closed):
                allowed = f"[0, {upper:g}]" if closed else f"[0, {upper:g})"
                raise ValueError(f"`{name}` must be a number in {allowed}, got {value!r}.")
        grid = self.pixel_grid
        if (
            not isinstance(grid, tuple)
            or len(grid) != 2
            or any(isinstance(g, bool) or not isinstance(g, int) or g < 2 for g in grid)
            or grid[0] > grid[1]
        ):
            raise ValueError(
                f"`pixel_grid` must be a tuple (low, high) of integers with 2 <= low <= high (cells per side), "
                f"got {grid!r}."
            )

    @property
    def styled(self) -> bool:
        """Whether any stroke style (width contrast, taper, pixelation) is on."""
        return bool(self.width_contrast or self.taper or self.pixelate)

    def to_dict(self) -> dict:
        out = {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}
        if not self.styled:  # the stroke styles off: the keys of renders made before they existed
            for key in ("width_contrast", "taper", "pixelate", "pixel_grid"):
                out.pop(key)
        return out

    @classmethod
    def none(cls) -> StrokeJitter:
        """No variation at all: the clean drawing at its reference stroke width."""
        return cls(
            stroke_width=(4.5, 4.5),
            stroke_width_jitter=0.0,
            rotation=0.0,
            scale=(1.0, 1.0),
            aspect=0.0,
            shear=0.0,
            translate=0.0,
            stroke_shift=0.0,
            endpoint_jitter=0.0,
            control_jitter=0.0,
            elastic=0.0,
        )


class _PreparedGlyph:
    """Concatenated control points of all strokes with the index arrays needed to jitter and flatten them at once."""

    def __init__(self, strokes: list[np.ndarray]):
        self.num_strokes = len(strokes)
        self.points = np.concatenate(strokes) if strokes else np.zeros((0, 2))  # [P, 2]
        stroke_id, is_ctrl, seg_index, seg_stroke = [], [], [], []
        offset = 0
        for s, pts in enumerate(strokes):
            n = len(pts)
            stroke_id.append(np.full(n, s))
            ctrl = np.ones(n, dtype=bool)
            ctrl[::3] = False
            is_ctrl.append(ctrl)
            num_segments = (n - 1) // 3
            seg_index.append(offset + 3 * np.arange(num_segments)[:, None] + np.arange(4)[None, :])
            seg_stroke.append(np.full(num_segments, s))
            offset += n
        empty = np.zeros(0, dtype=np.int64)
        self.stroke_id = np.concatenate(stroke_id) if strokes else empty
        self.is_ctrl = np.concatenate(is_ctrl) if strokes else empty.astype(bool)
        self.seg_index = np.concatenate(seg_index) if strokes else np.zeros((0, 4), dtype=np.int64)  # [G, 4]
        self.seg_stroke = np.concatenate(seg_stroke) if strokes else empty  # [G]
        # each stroke's flattened points are contiguous: [bounds[s], bounds[s + 1]); round dots are drawn at the
        # joints between cubic segments (where stroke drawings have their corners) and at both ends
        counts = np.bincount(self.seg_stroke, minlength=self.num_strokes) * _POINTS_PER_SEGMENT
        self.bounds = np.concatenate([[0], np.cumsum(counts)]).tolist()
        self.dots = [
            list(range(self.bounds[s], self.bounds[s + 1], _POINTS_PER_SEGMENT)) + [self.bounds[s + 1] - 1]
            for s in range(self.num_strokes)
        ]


def render_strokes(
    strokes: list[np.ndarray],
    num_samples: int,
    resolution: int,
    rng: np.random.Generator,
    jitter: StrokeJitter,
    view_box: float = 109.0,
    supersample: int = 4,
) -> np.ndarray:
    """
    Render `num_samples` randomly varied hands of one stroke drawing.

    Args:
        strokes (`list[np.ndarray]`): cubic control points per stroke, as returned by [`parse_svg_path`].
        num_samples (`int`): number of images.
        resolution (`int`): output side length in pixels.
        rng (`np.random.Generator`): source of all randomness.
        jitter (`StrokeJitter`): amount of variation; `StrokeJitter.none()` renders the clean drawing.
        view_box (`float`): side length of the square coordinate system of the drawing.
        supersample (`int`): the canvas is drawn at `resolution * supersample` and box-filtered down.

    Returns:
        `np.ndarray`: uint8 `[num_samples, resolution, resolution]` ink coverage (0 = paper, 255 = full ink).
    """
    glyph = _PreparedGlyph(strokes)
    canvas = resolution * supersample
    out = np.zeros((num_samples, resolution, resolution), dtype=np.uint8)
    if glyph.num_strokes == 0:
        return out
    center = view_box / 2
    visible = view_box * (1 - 2 * jitter.margin)
    px_per_unit = canvas / visible
    for k in range(num_samples):
        # 1. per-stroke jitter of endpoints / control points and a per-stroke shift
        sigma = np.where(glyph.is_ctrl, jitter.control_jitter, jitter.endpoint_jitter)[:, None]
        shift = rng.normal(0.0, 1.0, (glyph.num_strokes, 2)) * jitter.stroke_shift
        pts = glyph.points + rng.normal(0.0, 1.0, glyph.points.shape) * sigma + shift[glyph.stroke_id]
        # 2. flatten the cubic segments to polylines
        poly = np.einsum("nk,gkd->gnd", _BERNSTEIN, pts[glyph.seg_index]).reshape(-1, 2)  # [G * n, 2]
        # 3. global affine around the center of the view box, then optional elastic displacement
        angle = math.radians(rng.uniform(-jitter.rotation, jitter.rotation))
        scale = rng.uniform(*jitter.scale)
        aspect = 1.0 + rng.uniform(-jitter.aspect, jitter.aspect)
        shear = rng.uniform(-jitter.shear, jitter.shear)
        tx, ty = rng.uniform(-jitter.translate, jitter.translate, 2) * view_box
        cos, sin = math.cos(angle), math.sin(angle)
        sx, sy = scale * aspect, scale / aspect
        # M = R @ Shear @ S
        m = np.array([[cos, -sin], [sin, cos]]) @ np.array([[1.0, shear], [0.0, 1.0]]) @ np.diag([sx, sy])
        xy = (poly - center) @ m.T + (center + tx, center + ty)
        if jitter.elastic > 0:
            freq = rng.uniform(0.5, 2.0, (3, 2)) * rng.choice([-1.0, 1.0], (3, 2)) * (2 * math.pi / view_box)
            phase = rng.uniform(0, 2 * math.pi, (2, 3))
            amp = rng.normal(0.0, jitter.elastic / math.sqrt(3), (2, 3))
            waves = xy @ freq.T  # [N, 3]
            xy = xy + np.stack(
                [(np.sin(waves + phase[0]) * amp[0]).sum(1), (np.sin(waves + phase[1]) * amp[1]).sum(1)], axis=1
            )
        xy = (xy - center) * px_per_unit + canvas / 2
        # 4. draw with round caps and joins
        width = rng.uniform(*jitter.stroke_width)
        widths = width * (
            1.0 + rng.uniform(-jitter.stroke_width_jitter, jitter.stroke_width_jitter, glyph.num_strokes)
        )
        widths = np.maximum(widths * px_per_unit, 1.0)
        # 5. stroke styles, when on: drawn per sample, after everything above (so that without them the random
        # stream and the renders are those of the plain drawing)
        contrast = rng.uniform(0.0, jitter.width_contrast) if jitter.width_contrast else 0.0
        taper = rng.uniform(0.0, jitter.taper) if jitter.taper else 0.0
        grid = int(rng.integers(jitter.pixel_grid[0], jitter.pixel_grid[1] + 1)) if jitter.pixelate else 0
        blocky = bool(jitter.pixelate) and rng.uniform() < jitter.pixelate
        image = Image.new("L", (canvas, canvas), 0)
        draw = ImageDraw.Draw(image)
        for s in range(glyph.num_strokes):
            w = float(widths[s])
            line = xy[glyph.bounds[s] : glyph.bounds[s + 1]]
            if jitter.styled:  # every polyline piece at its own width, round dots at every point for smooth joins
                _draw_styled_stroke(draw, line, w, contrast, taper)
                continue
            r = w / 2
            draw.line(line.ravel().tolist(), fill=255, width=max(1, round(w)))
            for x, y in xy[glyph.dots[s]].tolist():
                draw.ellipse((x - r, y - r, x + r, y + r), fill=255)
        coverage = image.reduce(supersample) if supersample > 1 else image
        if blocky:
            coverage = coverage.resize((grid, grid), Image.Resampling.BOX).point(lambda v: 255 if v >= 96 else 0)
            coverage = coverage.resize((resolution, resolution), Image.Resampling.NEAREST)
        out[k] = np.asarray(coverage)
    return out


def _draw_styled_stroke(draw: ImageDraw.ImageDraw, line: np.ndarray, width: float, contrast: float, taper: float):
    """Draw one flattened stroke `[N, 2]` with a width that follows its direction (`contrast`) and length (`taper`)."""
    pieces = np.diff(line, axis=0)  # [N - 1, 2]
    lengths = np.hypot(pieces[:, 0], pieces[:, 1])
    position = np.concatenate([[0.0], np.cumsum(lengths)])
    position = position / position[-1] if position[-1] > 0 else np.zeros_like(position)
    along = 1.0 + taper * (0.5 - position)  # [N]
    safe = np.maximum(lengths, 1e-9)
    across = 1.0 + contrast * (np.abs(pieces[:, 1]) - np.abs(pieces[:, 0])) / safe  # [N - 1]
    # a point's direction factor: the mean of the pieces it joins (the ends take their one piece's)
    at_points = np.concatenate([across[:1], (across[:-1] + across[1:]) / 2, across[-1:]]) if len(across) else [1.0]
    point_widths = np.maximum(width * along * np.asarray(at_points), 1.0)
    for i in range(len(pieces)):
        w = float(point_widths[i] + point_widths[i + 1]) / 2
        draw.line(line[i : i + 2].ravel().tolist(), fill=255, width=max(1, round(w)))
    for (x, y), w in zip(line.tolist(), point_widths.tolist()):
        r = w / 2
        draw.ellipse((x - r, y - r, x + r, y + r), fill=255)
