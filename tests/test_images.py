"""`dataset=images`: a folder of the user's own images, one sub-folder per class (issue 17,
point 2).

The tests draw a tiny folder with Pillow, as a user's would be: PNG and JPEG files (one with an
upper-case suffix), a stray text file and a hidden folder that are not images. Each class has its
own colour, so its gray level differs too and a small CNN can tell them apart in a few epochs.
"""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from bench.config import ConfigError, compose, to_container
from bench.data import images as images_module
from bench.data import load, split
from bench.data.images import image_shape
from bench.sweep import expand
from bench.testing import TrialMetric, assert_over_seeds

CLASSES = ("apple", "leaf", "sky")  # sorted: the class order
COLOURS = {"apple": (200, 40, 40), "leaf": (40, 200, 40), "sky": (40, 40, 200)}
PER_CLASS = 12


def _draw(folder: Path, seed: int = 0) -> Path:
    """3 classes x 12 images of 20x20 pixels: the class's colour plus noise and a random square."""
    rng = np.random.default_rng(seed)
    for name in CLASSES:
        (folder / name).mkdir(parents=True)
        for i in range(PER_CLASS):
            pixels = np.array(COLOURS[name], dtype=np.float64) + rng.normal(0, 25, (20, 20, 3))
            r, c = rng.integers(0, 14, 2)
            pixels[r : r + 6, c : c + 6] += 40
            image = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8), "RGB")
            suffix = [".png", ".jpg", ".JPEG"][i % 3]
            image.save(folder / name / f"{i:02d}{suffix}", format="JPEG" if i % 3 else "PNG")
    (folder / "apple" / "notes.txt").write_text("not an image")
    (folder / ".ipynb_checkpoints").mkdir()  # hidden: not a class
    return folder


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    return _draw(tmp_path / "fruit")


@pytest.fixture
def cache(tmp_path: Path) -> Path:
    return tmp_path / "cache"


def _load(folder: Path, cache: Path, **extra):
    return load({"name": "images", "path": str(folder), "cache_dir": str(cache), "size": 8,
                 "channels": 1, "test_size": 0.2, **extra})  # fmt: skip


def _pillow(path: Path, mode: str, size: int) -> np.ndarray:
    """The reference: what a user would get from Pillow by hand, as (h, w, c) values in [0, 1]."""
    with Image.open(path) as image:
        pixels = image.convert(mode).resize((size, size), Image.Resampling.BILINEAR)
    return np.asarray(pixels, dtype=np.float64).reshape(size, size, -1) / 255.0


def test_a_folder_loads_as_rows_of_pixels(folder: Path, cache: Path) -> None:
    raw = _load(folder, cache)
    assert raw.classes == CLASSES and raw.name == "images"
    assert raw.X.shape == (3 * PER_CLASS, 8 * 8) and raw.X.dtype == np.float64
    assert raw.y.dtype == np.int64 and list(raw.y) == [0] * 12 + [1] * 12 + [2] * 12
    assert raw.X.min() >= 0.0 and raw.X.max() <= 1.0 and raw.categorical == ()
    # Rows follow the sorted files; row 13 is leaf/01.jpg, in grayscale.
    np.testing.assert_array_equal(raw.X[13], _pillow(folder / "leaf/01.jpg", "L", 8).ravel())
    rgb = _load(folder, cache, channels=3, size=5)
    assert rgb.X.shape == (36, 5 * 5 * 3)
    expected = _pillow(folder / "sky/02.JPEG", "RGB", 5)
    np.testing.assert_array_equal(rgb.X[26].reshape(5, 5, 3), expected)  # (h, w, c) order
    assert expected[..., 2].mean() > expected[..., 0].mean() + 0.3  # sky is blue: c is last
    assert image_shape({"name": "images", "size": 5, "channels": 3}) == (5, 5, 3)
    assert image_shape({"name": "digits"}) == (8, 8, 1)
    assert image_shape({"name": "breast_cancer"}) is None


def test_the_cache_is_filled_once_and_read_after(
    folder: Path, cache: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = _load(folder, cache)
    (cached,) = cache.glob("*.npz")

    def no_decoding(*args, **kwargs):
        raise AssertionError("decoded an image although the cache holds the arrays")

    monkeypatch.setattr(images_module, "_decode", no_decoding)
    second = _load(folder, cache)
    np.testing.assert_array_equal(first.X, second.X)
    np.testing.assert_array_equal(first.y, second.y)
    copy = shutil.copytree(folder, tmp_path / "copy")  # same contents elsewhere: same entry
    assert _load(copy, cache).sha256 == first.sha256
    assert list(cache.glob("*.npz")) == [cached]
    with pytest.raises(AssertionError, match="decoded"):  # other settings: another entry
        _load(folder, cache, size=9)
    monkeypatch.undo()
    Image.new("L", (20, 20), 255).save(copy / "sky" / "00.png")  # an edited image: a miss
    edited = _load(copy, cache)
    assert edited.sha256 != first.sha256 and len(list(cache.glob("*.npz"))) == 2
    assert edited.X[24].min() == 1.0 and np.array_equal(edited.X[:24], first.X[:24])


def test_a_cache_that_cannot_be_written_costs_a_warning_not_the_load(
    folder: Path, tmp_path: Path
) -> None:
    blocked = tmp_path / "a_file"
    blocked.write_text("not a folder")
    with pytest.warns(UserWarning, match="^dataset.cache_dir: cannot cache images"):
        raw = _load(folder, blocked / "cache")
    assert raw.X.shape == (36, 64)


def test_the_folder_digest_is_recorded_and_checked(folder: Path, cache: Path) -> None:
    raw = _load(folder, cache)
    digest = hashlib.sha256()
    for name in CLASSES:
        for f in sorted(p for p in (folder / name).iterdir() if p.suffix != ".txt"):
            inner = hashlib.sha256(f.read_bytes()).hexdigest()
            digest.update(f"{name}/{f.name}\0{inner}\n".encode())
    assert raw.sha256 == digest.hexdigest()
    assert _load(folder, cache, sha256=raw.sha256).sha256 == raw.sha256
    with pytest.raises(
        ConfigError, match=r"^dataset\.sha256: sha256 mismatch .* got " + raw.sha256
    ):
        _load(folder, cache, sha256="0" * 64)


@pytest.mark.parametrize(
    ("case", "key", "needle"),
    [
        ("missing", "dataset.path", "folder not found"),
        ("no_path", "dataset.path", "needs a folder"),
        ("one_class", "dataset.path", "1 class sub-folder(s)"),
        ("empty_class", "dataset.path", "leaf has no images"),
        ("corrupt", "dataset.path", "cannot read image"),
        ("size", "dataset.size", "got 0"),
        ("channels", "dataset.channels", "got 2"),
    ],
)
def test_bad_folders_are_refused_in_one_line_naming_the_key(
    folder: Path, cache: Path, case: str, key: str, needle: str
) -> None:
    extra: dict = {}
    if case == "missing":
        extra["path"] = str(folder / "nope")
    elif case == "no_path":
        extra["path"] = None
    elif case == "one_class":
        shutil.rmtree(folder / "leaf")
        shutil.rmtree(folder / "sky")
    elif case == "empty_class":
        for f in (folder / "leaf").iterdir():
            f.unlink()
    elif case == "corrupt":
        (folder / "sky" / "05.png").write_bytes(b"\x89PNG not really")
        needle = f"{needle} {folder / 'sky' / '05.png'}"
    elif case == "size":
        extra["size"] = 0
    elif case == "channels":
        extra["channels"] = 2
    with pytest.raises(ConfigError) as info:
        _load(folder, cache, **extra)
    message = str(info.value)
    assert message.startswith(key) and needle in message and "\n" not in message, message


def _compose(folder: Path, cache: Path, *extra: str):
    return compose(["+sweep=smoke", "dataset=images", f"dataset.path={folder}",
                    f"dataset.cache_dir={cache}", "dataset.size=8", "model=cnn",
                    "libraries=[torch]", "seeds.n=1", "sweep.varied=[split]",
                    "model.conv_channels=[4,8]", "model.hidden_sizes=[16]", "model.epochs=15",
                    "model.batch_size=8", "model.lr=0.01", *extra])  # fmt: skip


@pytest.mark.parametrize(
    ("extra", "key"),
    [
        (["dataset.channels=2"], "dataset.channels:"),
        (["dataset.size=0"], "dataset.size:"),
        (["dataset.size=4"], "model.kernel_size:"),  # two 3x3 convolutions leave 0x0 of 4x4
    ],
)
def test_bad_settings_are_refused_at_compose_time(
    folder: Path, cache: Path, extra: list[str], key: str
) -> None:
    with pytest.raises(ConfigError, match="^" + key) as info:
        _compose(folder, cache, *extra)
    assert "\n" not in str(info.value)
    with pytest.raises(ConfigError, match="cnn needs an image dataset .*images"):
        compose(["+sweep=smoke", "model=cnn", "libraries=[torch]"])


@pytest.mark.usefixtures("single_threaded")
@pytest.mark.parametrize(("library", "channels"), [("torch", 1), ("torch", 3), ("tensorflow", 3)])
def test_a_cnn_learns_the_classes(folder: Path, cache: Path, library: str, channels: int) -> None:
    """As `python -m bench dataset=images dataset.path=DIR model=cnn` runs each trial."""
    cfg = _compose(folder, cache, f"dataset.channels={channels}", f"libraries=[{library}]")
    (spec,) = expand(cfg)
    assert spec.dataset_dict() == {"test_size": 0.2, "sha256": None, "size": 8,
                                   "channels": channels}  # fmt: skip
    accuracy = TrialMetric(spec, dataset_cfg=to_container(cfg.dataset))
    # 7 or 8 test images: one seed's accuracy moves in steps of 1/8; chance is 1/3. Usually
    # 1.0 at every seed: a first look at 2 seeds decides
    assert_over_seeds(accuracy, at_least=0.6, seeds=range(6), looks=(2, 4, 6))
    row = accuracy.rows[0]  # the trial a one-seed run trains
    assert row["n_train"] + row["n_test"] == 36
    assert row["dataset_sha256"] == _load(folder, cache).sha256


@pytest.mark.usefixtures("single_threaded")
def test_rgb_weights_mean_the_same_in_torch_and_keras(folder: Path, cache: Path) -> None:
    """The channel layout is the same in both libraries: the same canonical weights give the same
    outputs on the same (h, w, c) rows, and the kernels are (k, k, 3, out)."""
    from bench.backends import estimator_class

    data = split(_load(folder, cache, channels=3, size=6), 0, 0.2)
    outputs = {}
    for library in ("torch", "tensorflow"):
        est = estimator_class(library)(
            model="cnn", conv_channels=(4,), hidden_sizes=(8,), mode="shared", epochs=1,
            image_shape=(6, 6, 3), seed_init=3,
        )  # fmt: skip
        est.fit(data.X_train, data.y_train)
        rng = np.random.default_rng(7)
        weights = [w + rng.normal(0, 0.2, w.shape).astype(np.float32) for w in est.get_weights()]
        assert weights[0].shape == (3, 3, 3, 4)
        est.set_weights(weights)
        outputs[library] = est.predict_proba(np.clip(data.X_test, -4, 4))
    assert np.ptp(outputs["torch"]) > 0.1
    np.testing.assert_allclose(outputs["tensorflow"], outputs["torch"], rtol=0, atol=1e-5)
