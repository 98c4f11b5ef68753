"""The real conf/ composes through `bench.config.compose` (what the CLI calls) with the right values.

Values are compared as plain containers (enums as strings) because that is what the sweep, the
rows and the run's saved `config.yaml` see.
"""

from __future__ import annotations

from typing import Any

import pytest

from bench.config import ConfigError, compose, to_container


def plain(overrides: list[str]) -> dict[str, Any]:
    return to_container(compose(overrides))


def test_seeds_sweep_composes_with_defaults() -> None:
    cfg = plain(["+sweep=seeds"])
    assert cfg["sweep"]["name"] == "seeds"
    assert cfg["sweep"]["varied"] == ["split", "order", "init", "all", "none"]
    # No extra axes: one device, one determinism setting, one thread count.
    assert all(cfg["sweep"][axis] is None for axis in ("devices", "deterministic", "threads"))
    until = {"ci_width": None, "compare": None, "margin": 0.01, "metric": "accuracy", "wave": 10,
             "max": 200, "confidence": 0.95}  # fmt: skip  # seeds.until: off
    assert cfg["seeds"] == {
        "base": 0, "n": 10, "n_by_source": {}, "n_by_library": {}, "until": until
    }  # fmt: skip
    assert cfg["libraries"] == ["sklearn", "torch", "tensorflow"]
    assert cfg["dataset"]["name"] == "breast_cancer"
    assert cfg["dataset"]["test_size"] == 0.2
    assert cfg["model"]["name"] == "logreg"
    assert cfg["model"]["hidden_sizes"] == []
    assert cfg["model"]["epochs"] == 30
    assert cfg["device"] == "cpu"
    assert cfg["threads"] == 1
    assert cfg["deterministic"] is False
    assert cfg["init_mode"] == "library" and cfg["order_mode"] == "library"
    assert cfg["cluster"]["name"] == "local" and cfg["cluster"]["address"] is None


def test_smoke_sweep_is_short() -> None:
    """smoke overrides seeds and epochs so that an install check stays under a minute."""
    cfg = plain(["+sweep=smoke"])
    assert cfg["sweep"]["name"] == "smoke"
    assert cfg["sweep"]["varied"] == ["split", "none"]
    assert cfg["seeds"]["n"] == 2
    assert cfg["model"]["epochs"] == 5
    assert cfg["libraries"] == ["sklearn", "torch", "tensorflow"]


@pytest.mark.parametrize(
    ("option", "expected"),
    [
        ("digits", {"name": "digits", "test_size": 0.2}),
        (
            "synthetic",
            {
                "name": "synthetic",
                "n_samples": 1000,
                "n_features": 20,
                "n_informative": 10,
                "n_classes": 2,
                "data_seed": 0,
            },
        ),
        (
            "heart",
            {
                "name": "heart",
                "path": None,
                "sha256": "a74b7efa387bc9d108d7d0115d831fe9b414b29ae7124f331b622b4efa0427c8",
            },
        ),
        ("breast_cancer", {"name": "breast_cancer", "test_size": 0.2}),
    ],
)
def test_dataset_options_compose(option: str, expected: dict[str, Any]) -> None:
    dataset = plain(["+sweep=seeds", f"dataset={option}"])["dataset"]
    assert {k: dataset[k] for k in expected} == expected


def test_heart_path_override_reaches_the_config(heart_dir) -> None:
    dataset = plain(["+sweep=smoke", "dataset=heart", f"dataset.path={heart_dir}"])["dataset"]
    assert dataset["path"] == str(heart_dir)


def test_mlp_model_composes() -> None:
    model = plain(["+sweep=seeds", "model=mlp"])["model"]
    assert model["name"] == "mlp"
    assert model["hidden_sizes"] == [64]
    assert model["activation"] == "relu"
    assert model["lr"] == 0.001
    assert model["eps"] == 1e-8


def test_smoke_epochs_override_mlp_too() -> None:
    """The sweep is composed after the model group, so its epochs win whatever the model."""
    assert plain(["+sweep=smoke", "model=mlp"])["model"]["epochs"] == 5


def test_readme_example_composes() -> None:
    cfg = plain(
        [
            "+sweep=seeds",
            "dataset=digits",
            "model=mlp",
            "libraries=[torch,tensorflow]",
            "seeds.n=20",
        ]
    )
    assert cfg["dataset"]["name"] == "digits"
    assert cfg["model"]["name"] == "mlp"
    assert cfg["libraries"] == ["torch", "tensorflow"]
    assert cfg["seeds"]["n"] == 20


def test_typed_values_are_converted() -> None:
    """Command-line strings become the schema's types, not strings that compare unequal later."""
    cfg = plain(["+sweep=smoke", "seeds.n=3", "model.lr=0.5", "deterministic=true", "threads=2"])
    assert cfg["seeds"]["n"] == 3 and isinstance(cfg["seeds"]["n"], int)
    assert cfg["model"]["lr"] == 0.5 and isinstance(cfg["model"]["lr"], float)
    assert cfg["deterministic"] is True
    assert cfg["threads"] == 2


@pytest.mark.parametrize(
    ("overrides", "key"),
    [
        (["libraries=[jax]"], "libraries"),
        (["seeds.n=0"], "seeds.n"),
        (["seeds.n=abc"], "seeds.n"),
        (["seeds.base=-1"], "seeds.base"),
        (["seeds.base=4294967296"], "seeds.base"),
        (["modle.epochs=3"], "modle"),
        (["model.epochs=0"], "model.epochs"),
        (["model.beta1=1.0"], "model.beta1"),
        (["model.beta2=-0.1"], "model.beta2"),
        (["model.lr=0"], "model.lr"),
        (["dataset.nope=1"], "dataset.nope"),
        (["dataset=nope"], "dataset"),
        (["model=cnn"], "model"),
        (["threads=0"], "threads"),
        (["libraries=[]"], "libraries"),
        (["libraries=[torch,torch]"], "libraries"),
        (["model.hidden_sizes=[8]"], "model.hidden_sizes"),
        (["model=mlp", "model.hidden_sizes=[]"], "model.hidden_sizes"),
        (["dataset.test_size=1.0"], "dataset.test_size"),
        (["device=cuda"], "device"),
        (["run_id=a/b"], "run_id"),
        (["batching.fused=true"], "batching.fused"),  # without batching.enabled: nothing to fuse
        (["batching.compile=true"], "batching.compile"),
        (["batching.enabled=true", "batching.stacks_per_task=0"], "batching.stacks_per_task"),
        (["batching.stacks_per_task=2"], "batching.stacks_per_task"),
    ],
)
def test_bad_values_fail_at_compose_naming_the_key(overrides: list[str], key: str) -> None:
    with pytest.raises(ConfigError) as info:
        compose(["+sweep=smoke", *overrides])
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(key), message


@pytest.mark.parametrize(
    ("overrides", "path", "value"),
    [
        (["model=mlp", "search.enabled=true", "search.grid.mlp.alpha=[1e-4,1e-2]"],
         "search.grid.mlp.alpha", [1e-4, 1e-2]),
        (["seeds.n_by_source.split=3"], "seeds.n_by_source.split", 3),
        (["seeds.n_by_library.tensorflow=3"], "seeds.n_by_library.tensorflow", 3),
        (["seeds.n_by_source={init:4}"], "seeds.n_by_source", {"init": 4}),
        (["model=svm_rbf", "libraries=[sklearn]", "model.params.tol=0.01"], "model.params.tol", 0.01),
    ],
)  # fmt: skip
def test_keys_of_free_form_dicts_are_added_without_plus_plus(
    overrides: list[str], path: str, value: Any
) -> None:
    """README's examples name a model, source, library or parameter that the dict does not hold
    yet; Hydra's struct mode alone would refuse them."""
    from omegaconf import OmegaConf

    cfg = compose(["+sweep=seeds", *overrides])
    assert OmegaConf.select(cfg, path) == value


@pytest.mark.parametrize(
    ("override", "key"),
    [
        ("search.grid.mlpp.alpha=[1]", "search.grid"),
        ("seeds.n_by_library.jax=3", "seeds.n_by_library"),
        ("seeds.n_by_source.bogus=3", "seeds.n_by_source"),
    ],
)
@pytest.mark.parametrize("search", ["true", "false"])  # a grid typo is caught while search is off
def test_what_free_form_dicts_receive_is_still_validated(
    override: str, key: str, search: str
) -> None:
    with pytest.raises(ConfigError, match=rf"^{key}: "):
        compose(["+sweep=seeds", "model=mlp", f"search.enabled={search}", override])


@pytest.mark.parametrize(
    ("override", "key"),
    [("search.grid.mlp.alpha=0.1", "search.grid.mlp.alpha"),
     ("seeds.n_by_library.torch=abc", "seeds.n_by_library.torch")],
)  # fmt: skip
def test_a_bad_value_in_a_free_form_dict_is_named_by_its_whole_key(override: str, key: str) -> None:
    with pytest.raises(ConfigError) as info:
        compose(["+sweep=seeds", override])
    assert str(info.value).startswith(f"{key}: ") and "\n" not in str(info.value)


def test_compile_without_a_cxx_compiler_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    import shutil

    overrides = ["+sweep=smoke", "batching.enabled=true", "batching.compile=true"]
    if shutil.which("g++"):
        compose(overrides)
    monkeypatch.setenv("CXX", "/nonexistent/c++")
    with pytest.raises(ConfigError, match=r"^batching\.compile: .*C\+\+ compiler") as info:
        compose(overrides)
    assert "\n" not in str(info.value)


def test_no_sweep_chosen_is_refused() -> None:
    with pytest.raises(ConfigError, match=r"^sweep: .*\+sweep=seeds"):
        compose([])


def test_appended_typo_key_is_refused() -> None:
    """`+seeds.nn=5` (a typo with Hydra's append prefix) must not slip past the schema unused."""
    with pytest.raises(ConfigError, match=r"seeds\.nn"):
        compose(["+sweep=smoke", "+seeds.nn=5"])
