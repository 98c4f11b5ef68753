"""Datasets and splits: shapes, the heart file, preprocessing fitted on the training rows only.

Leakage is checked against an independent computation (the training rows' own mean and standard
deviation), not against bench's transformer, so a transformer fitted on all rows would fail here.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from bench.config import ConfigError, compose, to_container
from bench.data import RawDataset, load, split
from bench.data.split import Split


def load_option(*overrides: str) -> RawDataset:
    return load(to_container(compose(["+sweep=smoke", *overrides]).dataset))


@pytest.fixture(scope="module")
def breast_cancer() -> RawDataset:
    return load_option()


@pytest.fixture(scope="module")
def heart(heart_dir: Path) -> RawDataset:
    return load_option("dataset=heart", f"dataset.path={heart_dir}")


def one_hot_columns(X: np.ndarray) -> list[int]:
    """Columns holding only 0 and 1 after preprocessing: scaled numeric columns never do."""
    return [j for j in range(X.shape[1]) if set(np.unique(X[:, j])) <= {0.0, 1.0}]


# --- shapes ---------------------------------------------------------------------------------------


def test_breast_cancer_shape(breast_cancer: RawDataset) -> None:
    assert breast_cancer.X.shape == (569, 30)
    assert breast_cancer.y.shape == (569,)
    assert breast_cancer.n_classes == 2
    assert np.bincount(breast_cancer.y).tolist() == [212, 357]


def test_digits_shape() -> None:
    raw = load_option("dataset=digits")
    assert raw.X.shape == (1797, 64)
    assert raw.n_classes == 10
    assert set(np.unique(raw.y)) == set(range(10))


def test_synthetic_default_shape() -> None:
    raw = load_option("dataset=synthetic")
    assert raw.X.shape == (1000, 20)
    assert raw.n_classes == 2


def test_synthetic_is_configurable_and_seeded() -> None:
    """Size and features follow the config; data_seed fixes the data itself."""
    shape = ["dataset=synthetic", "dataset.n_samples=200", "dataset.n_features=6"]
    raw = load_option(*shape, "dataset.n_informative=3", "dataset.n_classes=3")
    assert raw.X.shape == (200, 6)
    assert raw.n_classes == 3
    again = load_option(*shape, "dataset.n_informative=3", "dataset.n_classes=3")
    assert np.array_equal(raw.X, again.X) and np.array_equal(raw.y, again.y)
    other = load_option(
        *shape, "dataset.n_informative=3", "dataset.n_classes=3", "dataset.data_seed=1"
    )
    assert not np.array_equal(raw.X, other.X)


def test_all_arrays_are_float64_and_int64(breast_cancer: RawDataset, heart: RawDataset) -> None:
    for raw in (breast_cancer, heart, load_option("dataset=digits")):
        assert raw.X.dtype == np.float64
        assert raw.y.dtype == np.int64


# --- heart ----------------------------------------------------------------------------------------


def test_heart_rows_and_target(heart: RawDataset) -> None:
    """303 patients, 13 features, target num > 0: 139 positives."""
    assert heart.X.shape == (303, 13)
    assert int(heart.y.sum()) == 139
    assert set(np.unique(heart.y)) == {0, 1}
    assert int(np.isnan(heart.X).sum()) == 6  # ca 4 times, thal 2 times


def test_heart_loads_from_the_file_or_its_folder(heart: RawDataset, heart_file: Path) -> None:
    from_file = load_option("dataset=heart", f"dataset.path={heart_file}")
    assert np.array_equal(from_file.X, heart.X, equal_nan=True)
    assert np.array_equal(from_file.y, heart.y)


def test_heart_split_is_imputed_scaled_and_one_hot(heart: RawDataset) -> None:
    data = split(heart, seed_split=0, test_size=0.2)
    assert len(data.y_test) == 61 and len(data.y_train) == 242
    assert not np.isnan(data.X_train).any() and not np.isnan(data.X_test).any()
    # 9 numeric columns + one-hot cp (4), restecg (3), slope (3), thal (3).
    assert data.X_train.shape[1] == data.X_test.shape[1] == 9 + 13
    onehot = one_hot_columns(data.X_train)
    assert len(onehot) == 13
    assert set(np.unique(data.X_test[:, onehot])) <= {0.0, 1.0}
    # Each of the four categorical features contributes exactly one 1 per row.
    assert np.all(data.X_train[:, onehot].sum(axis=1) == 4)
    assert np.all(data.X_test[:, onehot].sum(axis=1) == 4)


def test_heart_scaling_is_fitted_on_training_rows(heart: RawDataset) -> None:
    data = split(heart, seed_split=0, test_size=0.2)
    numeric = [j for j in range(data.X_train.shape[1]) if j not in one_hot_columns(data.X_train)]
    assert len(numeric) == 9
    train = data.X_train[:, numeric].astype(np.float64)
    test = data.X_test[:, numeric].astype(np.float64)
    np.testing.assert_allclose(train.mean(axis=0), 0.0, atol=1e-5)
    np.testing.assert_allclose(train.std(axis=0), 1.0, atol=1e-3)
    assert np.abs(test.mean(axis=0)).max() > 0.01, "test rows look standardised on their own"


def test_heart_wrong_checksum_is_refused(heart_file: Path, tmp_path: Path) -> None:
    data = bytearray(heart_file.read_bytes())
    data[100] ^= 0x01
    bad = tmp_path / "processed.cleveland.data"
    bad.write_bytes(bytes(data))
    with pytest.raises(ConfigError, match=r"^dataset\.path: sha256 mismatch"):
        load_option("dataset=heart", f"dataset.path={bad}")


def test_heart_missing_file_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"^dataset\.path: file not found"):
        load_option("dataset=heart", f"dataset.path={tmp_path / 'absent'}")


# --- split ----------------------------------------------------------------------------------------


def test_preprocessing_is_fitted_on_training_rows_only(breast_cancer: RawDataset) -> None:
    """Both parts are scaled with the training rows' mean and std, and only theirs."""
    data = split(breast_cancer, seed_split=11, test_size=0.2)
    train_idx = np.setdiff1d(np.arange(len(breast_cancer.y)), data.test_index)
    mean = breast_cancer.X[train_idx].mean(axis=0)
    std = breast_cancer.X[train_idx].std(axis=0)
    np.testing.assert_allclose(
        data.X_train, (breast_cancer.X[train_idx] - mean) / std, rtol=1e-4, atol=1e-5
    )
    np.testing.assert_allclose(
        data.X_test, (breast_cancer.X[data.test_index] - mean) / std, rtol=1e-4, atol=1e-5
    )
    np.testing.assert_allclose(data.X_train.mean(axis=0), 0.0, atol=1e-5)
    assert np.abs(data.X_test.mean(axis=0)).max() > 0.01


def test_split_arrays_are_float32_and_rows_line_up(breast_cancer: RawDataset) -> None:
    data = split(breast_cancer, seed_split=3, test_size=0.2)
    assert data.X_train.dtype == data.X_test.dtype == np.float32
    assert data.X_train.flags.c_contiguous and data.X_test.flags.c_contiguous
    assert (len(data.y_train), len(data.y_test)) == (455, 114)
    assert np.all(np.diff(data.test_index) > 0), "test rows must be in ascending order"
    assert np.array_equal(data.y_test, breast_cancer.y[data.test_index])
    assert data.n_classes == 2


def _arrays(data: Split) -> list[np.ndarray]:
    return [data.X_train, data.y_train, data.X_test, data.y_test, data.test_index]


def test_same_seed_gives_identical_arrays(breast_cancer: RawDataset) -> None:
    a, b = split(breast_cancer, 5, 0.2), split(breast_cancer, 5, 0.2)
    for x, y in zip(_arrays(a), _arrays(b), strict=True):
        assert x.dtype == y.dtype and np.array_equal(x, y)
        assert x.tobytes() == y.tobytes()


def test_different_seed_gives_a_different_split(breast_cancer: RawDataset) -> None:
    a, b = split(breast_cancer, 5, 0.2), split(breast_cancer, 6, 0.2)
    assert not np.array_equal(a.test_index, b.test_index)
    assert len(a.test_index) == len(b.test_index)


@pytest.mark.parametrize("seed", [0, 1, 2, 12345])
def test_split_is_stratified(breast_cancer: RawDataset, heart: RawDataset, seed: int) -> None:
    for raw in (breast_cancer, heart):
        data = split(raw, seed, 0.2)
        total = np.bincount(raw.y)
        expected = total * len(data.y_test) / len(raw.y)
        assert np.all(np.abs(np.bincount(data.y_test, minlength=len(total)) - expected) <= 1)
        train_share = np.bincount(data.y_train) / len(data.y_train)
        np.testing.assert_allclose(train_share, total / total.sum(), atol=0.01)


def test_test_size_is_honoured(breast_cancer: RawDataset) -> None:
    data = split(breast_cancer, 0, 0.5)
    assert abs(len(data.y_test) - 569 / 2) <= 1
