"""The models a run trains, and the checks that every model x mode x library x dataset it
would train exists (refused by name, never dropped from the sweep)."""

from __future__ import annotations

from typing import Any

from bench.config.schema import (
    NEURAL_SEARCHABLE,
    SKLEARN_ONLY_PARAMS,
    UINT32_MAX,
    USER_NETWORKS,
    USER_TRAINING,
    ConfigError,
    Library,
    ModelName,
    Varied,
    sklearn_params,
)


def selected_models(plain: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """(config key, model settings) of every model a run trains: `model`, or each of `models`."""
    if not plain.get("models"):
        return [("model", plain["model"])]
    zoo = plain.get("model_zoo") or {}
    out = []
    for name in plain["models"]:
        if name in zoo:
            out.append((f"model_zoo.{name}", zoo[name]))
        elif plain["model"]["name"] == name:
            out.append(("model", plain["model"]))
        else:
            raise ConfigError(
                f"models: no settings for {name!r}; use +sweep=libraries (loads every model) "
                f"or add +model@model_zoo.{name}={name}"
            )
    return out


def selected_modes(plain: dict[str, Any]) -> list[str]:
    return list(plain.get("modes") or [plain.get("mode", "aligned")])


def seed_modes(mode: str, init_mode: str, order_mode: str) -> tuple[str, str]:
    """(init_mode, order_mode) that a trial of `mode` actually runs with."""
    if mode == "shared":
        return "shared", "shared"
    return init_mode, order_mode


def model_libraries(plain: dict[str, Any], model: dict[str, Any]) -> list[str]:
    """The libraries a model runs in: its own `libraries`, else the run's."""
    return list(model.get("libraries") or plain["libraries"])


def _validate_sklearn_only(plain: dict[str, Any], key: str, m: dict[str, Any]) -> None:
    """svm_rbf and decision_tree exist in scikit-learn only; their params must be theirs."""
    name = m["name"]
    own = m.get("libraries")
    if own is not None and (not own or len(set(own)) != len(own)):
        raise ConfigError(f"{key}.libraries: must name each library once, got {own}")
    if name in USER_NETWORKS:
        return _validate_user_network(plain, key, m)
    if name not in SKLEARN_ONLY_PARAMS:
        if m.get("params"):
            raise ConfigError(
                f"{key}.params: only {' and '.join(SKLEARN_ONLY_PARAMS)} take params; "
                f"set {name}'s hyperparameters as {key}.<field>"
            )
        return
    others = [lib for lib in model_libraries(plain, m) if lib != "sklearn"]
    if others:
        where = f"{key}.libraries" if own else "libraries"
        raise ConfigError(
            f"{where}: {name} exists in scikit-learn only, got {others}; use {where}=[sklearn]"
        )
    if name == "sklearn_estimator" and not m.get("_target_"):
        raise ConfigError(
            f"{key}._target_: sklearn_estimator needs the classifier's import path, e.g. "
            f"{key}._target_=sklearn.ensemble.RandomForestClassifier"
        )
    try:
        allowed = sklearn_params(name, m)
    except ValueError as exc:
        raise ConfigError(f"{key}._target_: {exc}") from None
    unknown = sorted(set(m.get("params") or {}) - set(allowed))
    if unknown:
        raise ConfigError(f"{key}.params: {name} takes {', '.join(allowed)}; got {unknown}")


def _validate_user_network(plain: dict[str, Any], key: str, m: dict[str, Any]) -> None:
    """torch_module / keras_model: an import path that imports, params its callable takes, and
    the one library and mode it can run in. Importing the user's module here (and torch or Keras
    with it) is the price of refusing a typo before any work."""
    name, library = m["name"], USER_NETWORKS[m["name"]]
    libraries = model_libraries(plain, m)
    if libraries != [library]:
        where = f"{key}.libraries" if m.get("libraries") else "libraries"
        raise ConfigError(f"{where}: {name} runs in {library} only, got {libraries}")
    if not m.get("_target_"):
        raise ConfigError(
            f"{key}._target_: {name} needs the import path of your "
            f"{'module class' if library == 'torch' else 'model-building function'}, e.g. "
            f"{key}._target_=mypkg.nets.Net"
        )
    unused = {"hidden_sizes": [], "conv_channels": [], "activation": "relu", "kernel_size": 3}
    for sub, default in unused.items():  # bench's own networks' fields: not read for yours
        if m[sub] != default:
            raise ConfigError(
                f"{key}.{sub}: {name} is your own network; give it its arguments as "
                f"+model.params.<arg>=..."
            )
    from bench.backends.user_code import check_params
    from bench.data.images import image_shape

    try:
        image = image_shape(plain["dataset"]) is not None
        check_params(m["_target_"], m.get("params") or {}, image=image)
    except ValueError as exc:
        raise ConfigError(f"{key}._target_: {exc}") from None
    if set(selected_modes(plain)) != {"aligned"} or plain["init_mode"] != "library":
        raise ConfigError(
            f"mode: {name} has no defaults/shared variants (bench cannot share your network's "
            "initial weights); run it with mode=aligned and init_mode=library, the defaults"
        )
    batching = plain.get("batching") or {}
    if name == "torch_module" and batching.get("enabled") and batching.get("compile"):
        raise ConfigError(
            f"batching.compile: {name} is stacked with torch.func, not compiled; "
            "set batching.compile=false"
        )


def validate_search(plain: dict[str, Any]) -> None:
    """search.* and the per-source / per-library seed counts, naming the key."""
    search, seeds_cfg = plain["search"], plain["seeds"]
    for key, table, allowed in (
        ("seeds.n_by_source", seeds_cfg["n_by_source"], [v.value for v in Varied]),
        ("seeds.n_by_library", seeds_cfg["n_by_library"], [lib.value for lib in Library]),
    ):
        for name, n in table.items():
            if name not in allowed:
                raise ConfigError(f"{key}: unknown key {name!r}; expected one of {allowed}")
            if n < 1 or seeds_cfg["base"] + n - 1 > UINT32_MAX:
                raise ConfigError(f"{key}.{name}: must be >= 1 and fit the uint32 range, got {n}")
    # The grid is checked even while search is off: a typo in it must not wait for the day it is on.
    for model, grid in search["grid"].items():
        if model not in [n.value for n in ModelName]:
            raise ConfigError(f"search.grid: unknown model {model!r}")
        if model in USER_NETWORKS:
            allowed = USER_TRAINING
        elif model in SKLEARN_ONLY_PARAMS:
            settings = [m for _, m in selected_models(plain) if m["name"] == model]
            try:
                allowed = sklearn_params(model, settings[0] if settings else None)
            except ValueError:  # no estimator of that name in this run: nothing to check against
                allowed = tuple(grid)
        else:
            allowed = NEURAL_SEARCHABLE
        for param, values in grid.items():
            if param not in allowed:
                raise ConfigError(
                    f"search.grid.{model}.{param}: not a parameter of {model}; "
                    f"searchable: {', '.join(allowed)}"
                )
            if not values:
                raise ConfigError(f"search.grid.{model}.{param}: needs at least one value")
    if "cv" in plain["sweep"]["varied"] and not search["enabled"]:
        raise ConfigError(
            "sweep.varied: cv varies the cross-validation folds, which only a grid search has; "
            "set search.enabled=true or drop cv"
        )
    if not search["enabled"]:
        return
    if (plain.get("batching") or {}).get("enabled"):
        raise ConfigError(
            "batching.enabled: stacked training fits each model once, without the grid search "
            "that search.enabled asks for; set batching.enabled=false or search.enabled=false"
        )
    if search["folds"] < 2:
        raise ConfigError(f"search.folds: must be >= 2, got {search['folds']}")
    from sklearn.metrics import get_scorer_names

    if search["scoring"] not in get_scorer_names():
        raise ConfigError(
            f"search.scoring: not a scikit-learn scorer: {search['scoring']!r} (e.g. accuracy, roc_auc)"
        )


def validate_models(plain: dict[str, Any]) -> None:
    """Every model x mode x library x dataset combination a run would train must exist: an
    unsupported one is refused here, naming the key, never dropped from the sweep."""
    from bench.data.images import image_shape
    from bench.models import IMAGE_SHAPES, NetSpec

    for mode in selected_modes(plain):
        if mode == "defaults" and "shared" in (plain["init_mode"], plain["order_mode"]):
            raise ConfigError(
                "mode: defaults uses each library's own initialiser and shuffling; set "
                "init_mode=library order_mode=library, or use mode=aligned / mode=shared"
            )
    names = [m["name"] for _, m in selected_models(plain)]
    if len(set(names)) != len(names):
        raise ConfigError(f"models: names a model twice: {names}")
    if len(set(selected_modes(plain))) != len(selected_modes(plain)):
        raise ConfigError(f"modes: names a mode twice: {selected_modes(plain)}")
    dataset = plain["dataset"]["name"]
    for key, m in selected_models(plain):
        name = m["name"]
        for sub, ok, why in (
            ("epochs", m["epochs"] >= 1, "must be >= 1"),
            ("batch_size", m["batch_size"] >= 1, "must be >= 1"),
            ("lr", m["lr"] > 0, "must be > 0"),
            ("alpha", m["alpha"] >= 0, "must be >= 0"),
            ("eps", m["eps"] > 0, "must be > 0"),
            ("beta1", 0 <= m["beta1"] < 1, "must be in [0, 1)"),
            ("beta2", 0 <= m["beta2"] < 1, "must be in [0, 1)"),
            ("hidden_sizes", all(h >= 1 for h in m["hidden_sizes"]), "sizes must be >= 1"),
            ("conv_channels", all(c >= 1 for c in m["conv_channels"]), "sizes must be >= 1"),
            ("kernel_size", m["kernel_size"] >= 1, "must be >= 1"),
        ):
            if not ok:
                raise ConfigError(f"{key}.{sub}: {why}, got {m[sub]}")
        _validate_sklearn_only(plain, key, m)
        devices = plain["sweep"].get("devices") or [plain["device"]]
        not_torch = [lib for lib in model_libraries(plain, m) if lib != "torch"]
        if "cuda" in devices and not_torch:
            raise ConfigError(
                f"device: cuda runs torch only; {key} ({name}) would run in {not_torch} on the CPU"
            )
        if name in SKLEARN_ONLY_PARAMS and set(selected_modes(plain)) != {"aligned"}:
            raise ConfigError(
                f"modes: {name} has no defaults/aligned/shared variants (no Adam, no shared init or "
                f"order); run it with mode=aligned, the default"
            )
        if name == "mlp" and not m["hidden_sizes"]:
            raise ConfigError(f"{key}.hidden_sizes: an mlp needs at least one hidden layer")
        if name in ("logreg", "linear_svm") and m["hidden_sizes"]:
            raise ConfigError(f"{key}.hidden_sizes: {name} has no hidden layers; use model=mlp")
        if name != "cnn" and m["conv_channels"]:
            raise ConfigError(f"{key}.conv_channels: only a cnn has convolutions; use model=cnn")
        if name != "cnn":
            continue
        if not m["conv_channels"]:
            raise ConfigError(f"{key}.conv_channels: a cnn needs at least one convolution")
        where = "model.name" if key == "model" else "models"
        shape = image_shape(plain["dataset"])
        if shape is None:
            raise ConfigError(
                f"{where}: cnn needs an image dataset ({', '.join([*IMAGE_SHAPES, 'images'])}), "
                f"got dataset={dataset}"
            )
        if "sklearn" in model_libraries(plain, m):
            raise ConfigError(
                f"libraries: scikit-learn has no cnn; drop sklearn from libraries or cnn from {where}"
            )
        h, w, c = shape
        try:
            NetSpec(h * w * c, (), 2, conv_channels=tuple(m["conv_channels"]),
                    kernel_size=m["kernel_size"], image_shape=shape)  # fmt: skip
        except ValueError as exc:
            raise ConfigError(f"{key}.{exc}") from None
