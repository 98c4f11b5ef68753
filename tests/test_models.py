"""Model specs, the mode/models/modes config keys, the libraries sweep and the defaults table.

Why: every equivalence claim rests on one canonical layout (NetSpec) and on the sweep running
exactly the model x mode x library combinations the config names, refusing the impossible ones
with a message that names the key.
"""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.neural_network import MLPClassifier

from bench.config import ConfigError, compose
from bench.models import NetSpec, shared_init
from bench.sweep import expand

pytestmark = pytest.mark.usefixtures("single_threaded")  # TensorFlow's first contact: one thread


def test_netspec_shapes_and_flatten_order() -> None:
    net = NetSpec(64, (32,), 10, conv_channels=(4, 8), kernel_size=3, image_shape=(8, 8))
    assert net.shapes() == [
        (3, 3, 1, 4), (4,), (3, 3, 4, 8), (8,), (128, 32), (32,), (32, 10), (10,),
    ]  # fmt: skip
    assert net.n_params() == 36 + 4 + 288 + 8 + 4096 + 32 + 320 + 10
    perm = net.flatten_permutation()
    # PyTorch's flat position of (c=1, h=0, w=0) is 16 (c * 4 * 4); Keras's is 1 ((h*4 + w)*8 + c).
    assert perm[16] == 1 and sorted(perm) == list(range(128))


def test_shared_init_is_sklearns_own_draw() -> None:
    """Shared init draws exactly what scikit-learn's MLP draws for the same seed (dense nets)."""
    mlp = MLPClassifier(hidden_layer_sizes=(7,), random_state=11)
    mlp._random_state = np.random.RandomState(11)  # what _initialize draws from, layer by layer
    theirs = [w for fans in ((5, 7), (7, 3)) for w in mlp._init_coef(*fans, np.float32)]
    ours = shared_init(NetSpec(5, (7,), 3), 11)
    for a, b in zip(ours, theirs, strict=True):
        np.testing.assert_array_equal(a, b)


def test_mode_column_and_seed_modes_follow_mode() -> None:
    shared = expand(compose(["+sweep=smoke", "mode=shared"]))
    assert {(s.mode, s.init_mode, s.order_mode) for s in shared} == {("shared", "shared", "shared")}
    aligned = expand(compose(["+sweep=smoke", "init_mode=shared"]))
    assert {(s.mode, s.init_mode, s.order_mode) for s in aligned} == {
        ("aligned", "shared", "library")
    }


def test_single_model_sweeps_unchanged() -> None:
    """+sweep=seeds / smoke: one model, one mode, the same trials in the same order as before."""
    specs = expand(compose(["+sweep=seeds"]))
    assert len(specs) == 150 and {s.mode for s in specs} == {"aligned"}
    assert [s.library for s in specs[::50]] == ["sklearn", "torch", "tensorflow"]


def test_libraries_sweep_expands_models_modes_libraries() -> None:
    specs = expand(compose(["+sweep=libraries", "seeds.n=2"]))
    combos = {(s.model, s.mode, s.library) for s in specs}
    assert len(combos) == 3 * 3 * 3 and len(specs) == 27 * 2
    assert {s.model for s in specs} == {"logreg", "mlp", "linear_svm"}
    mlp = next(s for s in specs if s.model == "mlp")
    assert mlp.hparams_dict()["hidden_sizes"] == [64]  # from model_zoo.mlp, not `model`


@pytest.mark.parametrize(
    ("overrides", "key"),
    [
        (["model=cnn"], "model.name: cnn needs an image dataset"),
        (["model=cnn", "dataset=digits"], "libraries: scikit-learn has no cnn"),
        (["+sweep=libraries", "dataset=digits", "models=[cnn]"], "libraries:"),
        (["models=[mlp]"], "models: no settings for 'mlp'"),
        (["mode=defaults", "order_mode=shared"], "mode: defaults"),
        (["model=linear_svm", "model.hidden_sizes=[4]"], "model.hidden_sizes:"),
        (["model=cnn", "dataset=digits", "libraries=[torch]", "model.kernel_size=5"],
         "model.kernel_size:"),
        (["+sweep=libraries", "model_zoo.cnn.conv_channels=[]", "dataset=digits",
          "libraries=[torch]", "models=[cnn]"], "model_zoo.cnn.conv_channels:"),
    ],
)  # fmt: skip
def test_unsupported_combinations_refused(overrides: list[str], key: str) -> None:
    sweep = [] if any(o.startswith("+sweep") for o in overrides) else ["+sweep=smoke"]
    args = [*sweep, *overrides]
    with pytest.raises(ConfigError, match="^" + key.replace("(", r"\(")) as info:
        compose(args)
    assert "\n" not in str(info.value)


def test_cnn_sweep_on_digits_accepted() -> None:
    cfg = compose(
        ["+sweep=libraries", "dataset=digits", "models=[mlp,cnn]", "libraries=[torch,tensorflow]"]
    )
    specs = expand(cfg)
    assert {s.model for s in specs} == {"mlp", "cnn"} and {s.mode for s in specs} == {
        "defaults",
        "aligned",
        "shared",
    }


def test_estimator_refuses_cnn_in_sklearn() -> None:
    from bench.backends import estimator_class

    X = np.zeros((10, 64), np.float32)
    with pytest.raises(ValueError, match="^model: sklearn has no cnn"):
        estimator_class("sklearn")(model="cnn").fit(X, np.arange(10) % 2)


def test_trial_rows_carry_mode_and_svm_scores() -> None:
    """A linear-SVM trial lands as an ok row: mode column, squashed margins, log_loss NaN."""
    from bench import store
    from bench.spec import TrialSpec
    from bench.testing import TrialMetric, assert_over_seeds

    spec = expand(compose(["+sweep=smoke", "model=linear_svm", "libraries=[sklearn]"]))[0]
    accuracy = TrialMetric(TrialSpec.from_dict({**spec.__dict__, "mode": "defaults"}))
    assert_over_seeds(accuracy, at_least=0.9, seeds=range(6), looks=(3, 6))
    row = accuracy.rows[0]
    assert row["mode"] == "defaults" and np.isnan(row["log_loss"])
    store.to_table([row])  # the mode column is in the schema


def test_defaults_table_is_generated() -> None:
    from bench.backends.defaults import table

    text = table()
    assert "| Adam epsilon | 1e-08 | 1e-08 | 1e-07 |" in text
    assert "fit(batch_size=None) = 32 (measured)" in text
