"""Scenes of the synthetic world: what objects exist, and how one is drawn.

A scene is one to nine coloured shapes on a black background, each in its own cell of a
3 x 3 grid, so objects never overlap and every object has a position a caption can name.
The attribute vocabularies below are the whole world: every caption, every image and the
oracle that reads images back are built from them.

Geometry, in units of the cell side ``s = image_size / 3``:

- an object's half-extent is ``SIZE_FRACTIONS[size] * s`` (2.9 px small, 4.05 px large at 32 px);
- its centre is the cell centre plus a jitter, drawn only when ``render`` gets an ``rng``, of
  at most ``JITTER_FRACTION * s`` (1 px at ``image_size=32``) on each axis, and never more than
  keeps the object's antialiased edge inside its cell (large objects: 0.78 px at 32 px).
  A pixel belongs to the cell its centre lies in, so every lit pixel belongs to its object's
  cell and objects never touch.

Used by lesson 02 (caption words attend to image patches), lesson 03 (train an attention
layer to find the patches a word names) and the miniature DALL-E.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass

import numpy as np

SHAPES: tuple[str, ...] = ("circle", "square", "triangle")
"""Shape names, in the fixed order used by the vocabulary and the oracle."""

COLOURS: dict[str, tuple[float, float, float]] = {
    "red": (1.0, 0.0, 0.0),
    "green": (0.0, 1.0, 0.0),
    "blue": (0.0, 0.0, 1.0),
    "yellow": (1.0, 1.0, 0.0),
    "magenta": (1.0, 0.0, 1.0),
    "cyan": (0.0, 1.0, 1.0),
}
"""Colour name -> RGB in [0, 1]: the six saturated corners of the RGB cube. Any two differ by
at least 1 in some channel and their directions differ by at least 45 degrees, so blur
(which scales a colour towards black but keeps its direction) never confuses them."""

SIZES: tuple[str, ...] = ("small", "large")
"""Size names."""

SIZE_FRACTIONS: dict[str, float] = {"small": 0.27, "large": 0.38}
"""Half-extent of an object (circle radius, half the square's side, half the triangle's
base and height) as a fraction of the cell side: 2.9 px and 4.05 px at ``image_size=32``.
As large as the cell allows: bigger shapes keep their corners readable under blur."""

JITTER_FRACTION: float = 3 / 32
"""Largest shift of an object's centre on each axis, as a fraction of the cell side
(exactly 1 px at ``image_size=32``)."""

GRID_SIZE: int = 3
"""The image is a ``GRID_SIZE x GRID_SIZE`` grid of cells; each object owns one cell."""

POSITIONS: dict[tuple[int, int], str] = {
    (0, 0): "top left",
    (0, 1): "top",
    (0, 2): "top right",
    (1, 0): "left",
    (1, 1): "middle",
    (1, 2): "right",
    (2, 0): "bottom left",
    (2, 1): "bottom",
    (2, 2): "bottom right",
}
"""Grid cell ``(row, col)`` -> its name; row 0 is the top, col 0 the left."""

MIN_IMAGE_SIZE: int = 12
"""Smallest image side ``render`` accepts (a cell of 4 px); the oracle is validated at 24-64 px."""


def _known(name: str, value: object, known: Collection[object]) -> None:
    if value not in known:
        raise ValueError(f"unknown {name} {value!r}: expected one of {list(known)}")


@dataclass(frozen=True)
class SceneObject:
    """One object: a shape of one colour and size in grid cell ``(row, col)``.

    ``row`` and ``col`` are in ``0..2``; ``POSITIONS[(row, col)]`` names the cell.
    Unknown attribute values raise ``ValueError`` listing the known ones.
    """

    shape: str  # one of SHAPES
    colour: str  # a key of COLOURS
    size: str  # one of SIZES
    row: int  # 0 = top row of the grid
    col: int  # 0 = left column of the grid

    def __post_init__(self) -> None:
        _known("shape", self.shape, SHAPES)
        _known("colour", self.colour, COLOURS)
        _known("size", self.size, SIZES)
        for axis in ("row", "col"):
            value = getattr(self, axis)
            if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
                raise ValueError(f"{axis} must be an int in 0..{GRID_SIZE - 1}, got {value!r}")
            if not 0 <= value < GRID_SIZE:
                raise ValueError(f"{axis} must be in 0..{GRID_SIZE - 1}, got {value}")
            object.__setattr__(self, axis, int(value))

    @property
    def cell(self) -> tuple[int, int]:
        """The grid cell ``(row, col)``."""
        return (self.row, self.col)


@dataclass(frozen=True)
class Scene:
    """A scene: objects in distinct grid cells.

    The order of ``objects`` is the order a caption mentions them; two scenes with the same
    objects in another order draw the same image (``scene_accuracy`` compares by cell).
    """

    objects: tuple[SceneObject, ...]

    def __post_init__(self) -> None:
        objects = tuple(self.objects)
        for obj in objects:
            if not isinstance(obj, SceneObject):
                raise ValueError(f"Scene.objects must hold SceneObject, got {type(obj).__name__}")
        cells = [obj.cell for obj in objects]
        if len(set(cells)) != len(cells):
            raise ValueError(f"objects must be in distinct grid cells, got cells {cells}")
        object.__setattr__(self, "objects", objects)


def _allowed_pairs(exclude: Collection[tuple[str, str]] | None) -> list[tuple[str, str]]:
    """Every (colour, shape) pair not in ``exclude``, in a fixed order."""
    excluded = set()
    for pair in exclude or ():
        if not (isinstance(pair, tuple) and len(pair) == 2):
            raise ValueError(f"exclude must hold (colour, shape) pairs, got {pair!r}")
        colour, shape = pair
        _known("colour in exclude", colour, COLOURS)
        _known("shape in exclude", shape, SHAPES)
        excluded.add(pair)
    allowed = [(c, s) for c in COLOURS for s in SHAPES if (c, s) not in excluded]
    if not allowed:
        raise ValueError("exclude removes every (colour, shape) pair; nothing is left to draw")
    return allowed


def sample_scenes(
    rng: np.random.Generator,
    n: int,
    num_objects: int = 1,
    exclude: Collection[tuple[str, str]] | None = None,
) -> list[Scene]:
    """Draw ``n`` random scenes at once (vectorized ``random_scene``).

    Cells are drawn without replacement; each object's (colour, shape) pair uniformly from the
    pairs not in ``exclude``; its size uniformly from ``SIZES``.
    """
    if not 1 <= num_objects <= GRID_SIZE * GRID_SIZE:
        raise ValueError(f"num_objects must be in 1..{GRID_SIZE * GRID_SIZE}, got {num_objects}")
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    allowed = _allowed_pairs(exclude)
    cells = np.argsort(rng.random((n, GRID_SIZE * GRID_SIZE)), axis=1)[:, :num_objects]  # (n, k)
    pairs = rng.integers(len(allowed), size=(n, num_objects))  # (n, k)
    sizes = rng.integers(len(SIZES), size=(n, num_objects))  # (n, k)
    scenes = []
    for i in range(n):
        objects = []
        for j in range(num_objects):
            colour, shape = allowed[pairs[i, j]]
            row, col = divmod(int(cells[i, j]), GRID_SIZE)
            objects.append(SceneObject(shape, colour, SIZES[sizes[i, j]], row, col))
        scenes.append(Scene(tuple(objects)))
    return scenes


def random_scene(
    rng: np.random.Generator,
    num_objects: int = 1,
    exclude: Collection[tuple[str, str]] | None = None,
) -> Scene:
    """A random scene of ``num_objects`` objects in distinct grid cells.

    ``exclude`` is a collection of ``(colour, shape)`` pairs, e.g. ``{("red", "circle")}``,
    that are never generated: hold them out of training to test composition later.
    """
    return sample_scenes(rng, 1, num_objects, exclude)[0]


def _check_image_size(image_size: int) -> None:
    if isinstance(image_size, bool) or not isinstance(image_size, (int, np.integer)):
        raise ValueError(f"image_size must be an int, got {image_size!r}")
    if image_size < MIN_IMAGE_SIZE:
        raise ValueError(f"image_size must be >= {MIN_IMAGE_SIZE}, got {image_size}")


def shape_alpha(
    shape_ids: np.ndarray,
    half_extents: np.ndarray,
    centres: np.ndarray,
    window: int,
    origins: np.ndarray | None = None,
) -> np.ndarray:
    """Antialiased coverage of ``M`` shapes, each on its own ``window x window`` pixel crop.

    .. math:: \\alpha(p) = \\operatorname{clip}\\left(\\tfrac12 - d(p),\\, 0,\\, 1\\right)

    where ``d(p)`` is the signed distance in pixels from pixel centre ``p`` to the shape's
    outline (negative inside): a one-pixel linear ramp across the edge.

    Shapes in:  ``shape_ids (M,)`` indices into ``SHAPES``; ``half_extents (M,)`` in px;
    ``centres (M, 2)`` as (y, x) in image px, where pixel ``(i, j)`` has centre
    ``(i + 0.5, j + 0.5)``; ``origins (M, 2)`` the image pixel (y, x) of each crop's top-left
    corner (default ``(0, 0)``: the crop is the top-left of the image).
    Shape out: ``(M, window, window)`` float32 in [0, 1].
    """
    m = len(shape_ids)
    if origins is None:
        origins = np.zeros((m, 2), dtype=np.int64)
    local = centres - origins  # (M, 2) centres in crop coordinates
    coords = np.arange(window, dtype=np.float32) + 0.5
    dy = coords[None, :, None] - local[:, 0, None, None].astype(np.float32)  # (M, window, 1)
    dx = coords[None, None, :] - local[:, 1, None, None].astype(np.float32)  # (M, 1, window)
    h = np.asarray(half_extents, dtype=np.float32)[:, None, None]  # (M, 1, 1)
    sdf = np.empty((m, window, window), dtype=np.float32)
    for k, name in enumerate(SHAPES):
        sel = np.flatnonzero(shape_ids == k)
        if sel.size == 0:
            continue
        y, x, r = dy[sel], dx[sel], h[sel]
        if name == "circle":
            sdf[sel] = np.sqrt(y * y + x * x) - r
        elif name == "square":
            qy, qx = np.abs(y) - r, np.abs(x) - r  # (m, window, 1), (m, 1, window)
            outside = np.sqrt(np.maximum(qy, 0) ** 2 + np.maximum(qx, 0) ** 2)
            sdf[sel] = outside + np.minimum(np.maximum(qy, qx), 0)
        elif name == "triangle":
            # Pointing up: apex (-r, 0), base from (r, -r) to (r, r). The max of the three edge
            # half-plane distances is exact inside; the bounding box term keeps the ramp past
            # the sharp base corners from reaching further out than a square's would.
            base = y - r
            left = (-(y - r) - 2 * (x + r)) / np.sqrt(5.0)
            right = (-(y - r) + 2 * (x - r)) / np.sqrt(5.0)
            box = np.maximum(np.abs(x) - r, -r - y)
            sdf[sel] = np.maximum(np.maximum(np.maximum(base, left), right), box)
    return np.clip(0.5 - sdf, 0.0, 1.0)


def cell_window(image_size: int) -> tuple[int, np.ndarray]:
    """Side of a square crop that holds any cell with a pixel to spare, and each grid row's
    (equally, column's) crop start: ``(window, starts (GRID_SIZE,))`` in pixels."""
    cell = image_size / GRID_SIZE
    window = int(np.ceil(cell)) + 2
    starts = np.clip(np.floor(np.arange(GRID_SIZE) * cell).astype(np.int64) - 1, 0, image_size - window)
    return window, starts


def _object_arrays(
    objects: list[SceneObject], image_size: int, jitter: np.ndarray | None
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Shape ids (M,), half-extents (M,), centres (M, 2) and colours (M, 3) of ``objects``."""
    cell = image_size / GRID_SIZE
    shape_ids = np.array([SHAPES.index(o.shape) for o in objects], dtype=np.int64)
    half = np.array([SIZE_FRACTIONS[o.size] * cell for o in objects], dtype=np.float64)
    centres = (np.array([[o.row, o.col] for o in objects], dtype=np.float64) + 0.5) * cell
    centres = centres.reshape(len(objects), 2)  # (M, 2), also when M == 0
    if jitter is not None:
        # The antialiasing ramp reaches half a pixel beyond the outline; stop it at the cell edge.
        room = np.clip(cell / 2 - half - 0.5, 0.0, JITTER_FRACTION * cell)  # (M,) px
        centres = centres + jitter * room[:, None]
    colours = np.array([COLOURS[o.colour] for o in objects], dtype=np.float32).reshape(-1, 3)
    return shape_ids, half, centres, colours


def render_batch(
    scenes: list[Scene], image_size: int = 32, rng: np.random.Generator | None = None
) -> np.ndarray:
    """Draw many scenes at once: ``(B, image_size, image_size, 3)`` float32 in [0, 1].

    Each image is black plus, for every object, its coverage times its colour:
    :math:`I(p) = \\sum_o \\alpha_o(p)\\, c_o` (objects never overlap, so the sum never
    exceeds 1). With ``rng``, every object's centre moves by up to ``JITTER_FRACTION`` of a cell
    (1 px at 32 px; less for large objects, which must stay inside their cell) on each axis,
    uniformly; without, objects sit at their cell centres.
    """
    _check_image_size(image_size)
    images = np.zeros((len(scenes), image_size, image_size, 3), dtype=np.float32)
    objects = [obj for scene in scenes for obj in scene.objects]
    owner = np.array([i for i, scene in enumerate(scenes) for _ in scene.objects], dtype=np.int64)
    slot = np.array([j for scene in scenes for j in range(len(scene.objects))], dtype=np.int64)
    jitter = None if rng is None else rng.uniform(-1.0, 1.0, size=(len(objects), 2))
    shape_ids, half, centres, colours = _object_arrays(objects, image_size, jitter)
    flat = images.reshape(-1, 3)  # (B * H * W, 3), a view
    window, starts = cell_window(image_size)
    cells = np.array([[o.row, o.col] for o in objects], dtype=np.int64).reshape(-1, 2)
    origins = starts[cells]  # (M, 2) top-left pixel of each object's crop
    offsets = np.arange(window)
    chunk = 8192  # bounds the (chunk, window, window, 3) temporaries to a few tens of MB
    for start in range(0, len(objects), chunk):
        part = slice(start, start + chunk)
        alpha = shape_alpha(shape_ids[part], half[part], centres[part], window, origins[part])
        paint = alpha[..., None] * colours[part, None, None, :]  # (m, window, window, 3)
        rows = origins[part, 0, None, None] + offsets[None, :, None]  # (m, window, 1)
        cols = origins[part, 1, None, None] + offsets[None, None, :]  # (m, 1, window)
        pixel = (owner[part, None, None] * image_size + rows) * image_size + cols  # (m, window, window)
        # Within one slot (the j-th object of its scene) the crops belong to distinct images,
        # so the indices of one += never repeat.
        for j in np.unique(slot[part]):
            sel = np.flatnonzero(slot[part] == j)
            flat[pixel[sel].reshape(-1)] += paint[sel].reshape(-1, 3)  # (m_j * window**2, 3)
    return np.clip(images, 0.0, 1.0, out=images)


def render(scene: Scene, image_size: int = 32, rng: np.random.Generator | None = None) -> np.ndarray:
    """Draw one scene: ``(image_size, image_size, 3)`` float32 in [0, 1], black background.

    Antialiased: each pixel is covered by :math:`\\alpha = \\operatorname{clip}(\\tfrac12 - d, 0, 1)`
    of its object, ``d`` the signed distance (px) from the pixel centre to the outline.
    With ``rng``, objects are jittered by up to 1 px (at 32 px) so images of one scene vary;
    every object stays inside its own grid cell.
    """
    if not isinstance(scene, Scene):
        raise ValueError(f"render expects a Scene, got {type(scene).__name__}")
    return render_batch([scene], image_size, rng)[0]
