"""A folder of images of the user's own: `dataset=images dataset.path=DIR`.

DIR holds one sub-folder per class; the sorted folder names are the class order (class 0 first),
and each folder's `*.png`, `*.jpg`, `*.jpeg` files (any case, not in sub-folders) are its examples.
Hidden entries (`.name`) and other files are ignored. Every image is decoded with Pillow, turned
grayscale (`dataset.channels=1`) or RGB (`channels=3`), resized to `size` x `size` (bilinear) and
flattened in (h, w, c) order, the layout of bench's canonical CNN weights (Keras's), so that the
built-in CNN and a user's network see the same pixels in every library. Rows follow the sorted
relative paths, so two loads give the same arrays in the same order.

Decoding is the slow part, so the pixels are cached once as `.npz` under `dataset.cache_dir`
(default `$BENCH_CACHE/images`, `~/.cache/bench/images`), keyed by the folder's content digest,
`size`, `channels` and Pillow's version (a resize may round differently in another Pillow). The
digest covers every image's relative path and bytes, not its mtime, so a copied folder hits the
cache and an edited image misses it. It is also the dataset's `sha256`, recorded in every row
(`dataset_sha256`), and `dataset.sha256`, when given, must match it before anything is decoded.

Pixels are kept as the uint8 values Pillow produces (lossless in the cache) and handed on as
values in [0, 1], float64 like every RawDataset, which the split then standardises.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import tempfile
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from bench.config import ConfigError
from bench.data.datasets import RawDataset

SUFFIXES = (".png", ".jpg", ".jpeg")
CHANNELS = {1: "L", 3: "RGB"}  # dataset.channels -> Pillow mode
CACHE_FORMAT = 2  # bump when the cached arrays' meaning changes (2: EXIF orientation applied)


def image_shape(dataset: Mapping[str, Any]) -> tuple[int, int, int] | None:
    """(height, width, channels) of a dataset's rows, or None for a table.

    Takes a dataset config or a trial's dataset params with its name (`{"name": spec.dataset,
    **spec.dataset_dict()}`): the shape follows from `size` and `channels` alone, so a network can
    be built without loading the images."""
    from bench.models import IMAGE_SHAPES

    name = dataset.get("name")
    if name == "images":
        size, channels = int(dataset.get("size", 16)), int(dataset.get("channels", 1))
        return (size, size, channels)
    if name in IMAGE_SHAPES:
        return (*IMAGE_SHAPES[name], 1)
    return None


def check_settings(cfg: Mapping[str, Any]) -> None:
    """`size` and `channels`, refused in one line naming the key."""
    size, channels = cfg.get("size", 16), cfg.get("channels", 1)
    if not isinstance(size, int) or size < 1:
        raise ConfigError(f"dataset.size: must be an integer >= 1, got {size}")
    if channels not in CHANNELS:
        raise ConfigError(f"dataset.channels: must be 1 (grayscale) or 3 (RGB), got {channels}")


def _folder(cfg: Mapping[str, Any]) -> Path:
    if not cfg.get("path"):
        raise ConfigError(
            "dataset.path: dataset=images needs a folder with one sub-folder per class"
        )
    path = Path(cfg["path"]).expanduser()
    if not path.is_dir():
        raise ConfigError(f"dataset.path: folder not found: {path}")
    return path


def image_files(root: Path) -> dict[str, list[Path]]:
    """Class name -> its image files, both in sorted order; refused if a class has none or there
    are fewer than two classes."""
    classes: dict[str, list[Path]] = {}
    for folder in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        files = sorted(
            f for f in folder.iterdir()
            if f.is_file() and not f.name.startswith(".") and f.suffix.lower() in SUFFIXES
        )  # fmt: skip
        if not files:
            raise ConfigError(
                f"dataset.path: class folder {folder} has no images ({', '.join(SUFFIXES)})"
            )
        classes[folder.name] = files
    if len(classes) < 2:
        raise ConfigError(
            f"dataset.path: {root} has {len(classes)} class sub-folder(s) with images; a "
            "classifier needs at least 2 (one sub-folder per class)"
        )
    return classes


def folder_digest(root: Path, classes: Mapping[str, list[Path]]) -> str:
    """sha256 over every image's relative path and the sha256 of its bytes, in sorted order."""
    outer = hashlib.sha256()
    for files in classes.values():
        for f in files:
            try:
                inner = hashlib.sha256(f.read_bytes()).hexdigest()
            except OSError as exc:
                raise ConfigError(f"dataset.path: cannot read image {f}: {exc.strerror}") from None
            outer.update(f"{f.relative_to(root).as_posix()}\0{inner}\n".encode())
    return outer.hexdigest()


def _cache_dir(cfg: Mapping[str, Any]) -> Path:
    if cfg.get("cache_dir"):
        return Path(cfg["cache_dir"]).expanduser()
    return Path(os.environ.get("BENCH_CACHE", Path.home() / ".cache" / "bench")) / "images"


def _cache_key(digest: str, size: int, channels: int) -> str:
    import PIL

    key = {"format": CACHE_FORMAT, "folder": digest, "size": size, "channels": channels,
           "pillow": PIL.__version__}  # fmt: skip
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()


def _decode(path: Path, size: int, channels: int) -> np.ndarray:
    """One image as (size * size * channels,) uint8, flattened in (h, w, c) order."""
    from PIL import Image, ImageOps

    try:
        with Image.open(io.BytesIO(path.read_bytes())) as image:
            image.load()
            upright = ImageOps.exif_transpose(image)  # a phone photo as it is shown, not stored
            pixels = upright.convert(CHANNELS[channels]).resize(
                (size, size), Image.Resampling.BILINEAR
            )
    except (OSError, ValueError, Image.DecompressionBombError) as exc:
        raise ConfigError(
            f"dataset.path: cannot read image {path}: {' '.join(str(exc).split())}"
        ) from None
    return np.asarray(pixels, dtype=np.uint8).reshape(-1)


def _read_cache(path: Path, shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray] | None:
    """The cached (pixels, y) if the file is whole and holds `shape` pixels; else None, and the
    entry is rebuilt rather than trusted."""
    if not path.is_file():
        return None
    try:
        with np.load(path) as cached:
            pixels, y = cached["pixels"], cached["y"]
    except (OSError, ValueError, KeyError):
        return None
    return (pixels, y) if pixels.shape == shape and y.shape == shape[:1] else None


def _write_cache(path: Path, pixels: np.ndarray, y: np.ndarray) -> None:
    """Written to a temporary name and renamed: a reader never sees half a file, and two
    workers filling the same cache at once both leave a whole one. A cache that cannot be
    written (a read-only home on a cluster node) costs a warning, not the run."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path.parent, suffix=".tmp", delete=False) as tmp:
            np.savez(tmp, pixels=pixels, y=y)
        os.replace(tmp.name, path)
    except OSError as exc:
        warnings.warn(
            f"dataset.cache_dir: cannot cache images in {path.parent}: {exc}", stacklevel=2
        )


def load_images(cfg: Mapping[str, Any]) -> RawDataset:
    """The folder's images as a RawDataset: X (n, size * size * channels) in [0, 1]."""
    check_settings(cfg)
    size, channels = int(cfg.get("size", 16)), int(cfg.get("channels", 1))
    root = _folder(cfg)
    classes = image_files(root)
    digest = folder_digest(root, classes)
    if cfg.get("sha256") and cfg["sha256"] != digest:
        raise ConfigError(
            f"dataset.sha256: sha256 mismatch for {root}: expected {cfg['sha256']}, got {digest}"
        )
    cache = _cache_dir(cfg) / f"{_cache_key(digest, size, channels)}.npz"
    files = [f for fs in classes.values() for f in fs]
    found = _read_cache(cache, (len(files), size * size * channels))
    if found is None:
        pixels = np.stack([_decode(f, size, channels) for f in files])
        y = np.repeat(np.arange(len(classes), dtype=np.int64), [len(fs) for fs in classes.values()])
        _write_cache(cache, pixels, y)
    else:
        pixels, y = found
    names = tuple(
        f"h{r}_w{c}_c{k}"
        for r in range(size) for c in range(size) for k in range(channels)
    )  # fmt: skip
    return RawDataset(
        "images", pixels.astype(np.float64) / 255.0, y.astype(np.int64), names,
        sha256=digest, classes=tuple(classes),
    )  # fmt: skip
