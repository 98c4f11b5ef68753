"""The user's own code, named by import path: `model._target_=mypkg.nets.Net +model.width=64`.

Importing it runs it, which is what the user asked for; so a path is taken only from the command
line and from config files (conf/ or the user's own), never from a results folder being read,
analysed or reported. Rows do record the path (in `hparams`, as part of what the trial trained)
and a digest of the code (`code_sha256`); `python -m bench replay` imports the paths its rows
name only when the run's saved config names the same ones, and says so before it does. The module must be importable wherever trials run: on the driver's machine for
the checks made before the run, and on every Ray worker (a package installed on the workers, a
shared folder on `PYTHONPATH`, or Ray's `runtime_env` with `working_dir`/`py_modules`; see the
docs/your-model.md).

The callable (a class or a function) receives its arguments from `model.params`, plus the shapes
bench knows only after loading the data, for whichever of these names its signature has:
`n_features`, `n_classes` and `image_shape` (height, width, channels, or None for a table).
"""

from __future__ import annotations

import functools
import hashlib
import importlib
import inspect
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

SHAPE_ARGUMENTS = ("n_features", "n_classes", "image_shape")


@functools.cache
def import_object(target: str) -> Any:
    """The object at `target` ('package.module.Name'); ValueError naming what is missing."""
    module, _, name = (target or "").rpartition(".")
    if not module:
        raise ValueError(f"{target!r} is not a dotted import path such as mypkg.nets.Net")
    try:
        imported = importlib.import_module(module)
    except ModuleNotFoundError as exc:
        ours = exc.name is not None and module.startswith(exc.name)
        hint = " (is its folder the working directory or on PYTHONPATH?)" if ours else ""
        raise ValueError(f"cannot import {module!r} for {target!r}: {exc}{hint}") from None
    except Exception as exc:  # noqa: BLE001 - the user's module failed while importing
        first = (str(exc).strip().splitlines() or [""])[0]
        raise ValueError(
            f"importing {module!r} for {target!r} failed: {type(exc).__name__}: {first}"
        ) from None
    if not hasattr(imported, name):
        raise ValueError(f"module {module!r} has no {name!r}")
    return getattr(imported, name)


@functools.cache
def _signature(target: str) -> tuple[tuple[str, ...], tuple[str, ...], bool]:
    """The named arguments the callable at `target` takes, those without a default, and whether
    it takes **kwargs too."""
    found = import_object(target)
    if not callable(found):
        raise ValueError(f"{target} is not a class or function")
    try:
        signature = inspect.signature(found)
    except (TypeError, ValueError):  # a builtin without a signature: take anything
        return (), (), True
    names, required, var_kw = [], [], False
    for p in signature.parameters.values():
        if p.kind is p.VAR_KEYWORD:
            var_kw = True
        elif p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY) and p.name != "self":
            names.append(p.name)
            if p.default is p.empty:
                required.append(p.name)
    return tuple(names), tuple(required), var_kw


def arguments(target: str) -> tuple[tuple[str, ...], bool]:
    """The named arguments the callable at `target` takes, and whether it takes **kwargs too."""
    names, _, var_kw = _signature(target)
    return names, var_kw


def forget() -> None:
    """Drop what this process has learnt about the user's code (tests that write modules)."""
    import_object.cache_clear()
    _signature.cache_clear()
    code_sha256.cache_clear()


def check_params(target: str, params: dict[str, Any], image: bool = True) -> None:
    """ValueError naming the first argument of `params` the callable does not take, a shape
    argument that bench sets itself, or an argument without a default that nothing gives it
    (`image`: whether the dataset has an image shape to give)."""
    names, required, var_kw = _signature(target)
    for key in params:
        if key in SHAPE_ARGUMENTS:
            raise ValueError(f"{key} is set by bench from the data; leave it out of the params")
        if key not in names and not var_kw:
            takes = ", ".join(n for n in names if n not in SHAPE_ARGUMENTS) or "no arguments"
            raise ValueError(f"{target} takes {takes}; got {key!r}")
    given = {*params, "n_features", "n_classes", *(("image_shape",) if image else ())}
    missing = [n for n in required if n not in given]
    if missing:
        what = (
            "image_shape, which only an image dataset has (dataset=images, digits)"
            if missing[0] == "image_shape"
            else f"{missing[0]}, which has no default: add +model.{missing[0]}=..."
        )
        raise ValueError(f"{target} needs {what}")


def call(target: str, params: dict[str, Any], shapes: dict[str, Any]) -> Any:
    """`target(**params, **the shapes its signature names)`."""
    names, _ = arguments(target)
    found: Callable[..., Any] = import_object(target)
    return found(**params, **{k: v for k, v in shapes.items() if k in names})


def locations(targets: list[str]) -> tuple[list[str], list[str], list[str]]:
    """Where the user's code for `targets` lives, as imported here: the folders to put on a
    worker's PYTHONPATH (an embedded Ray's workers inherit this process's environment), the
    package folders Ray can ship to a joined cluster (`runtime_env` `py_modules`), and the
    single-file modules it cannot ship (their folder may hold anything). Code that an installed
    distribution provides (site-packages) needs none of them."""
    folders: list[str] = []
    packages: list[str] = []
    loose: list[str] = []
    for target in targets:
        path, is_package = _top_level(target)
        if path is None or {"site-packages", "dist-packages"} & set(path.parts):
            continue  # installed: every worker that has bench's environment has it
        root = str(path.parent)
        if root not in folders:
            folders.append(root)
        kind = packages if is_package else loose
        if str(path) not in kind:
            kind.append(str(path))
    return folders, packages, loose


def _top_level(target: str):
    """The top-level package's folder (regular or namespace package) or the single module file
    that `target` lives in, and whether it is a package; (None, False) for a built-in module."""
    import_object(target)
    top = sys.modules[target.split(".", 1)[0]]
    search = getattr(top, "__path__", None)  # packages, namespace packages included
    if search:
        return Path(next(iter(search))).resolve(), True
    file = getattr(top, "__file__", None)
    return (Path(file).resolve(), False) if file else (None, False)


@functools.cache
def code_sha256(target: str) -> str | None:
    """sha256 of the user's code for `target`: every .py file of its top-level package (relative
    paths and bytes, in path order) or its single module file; None for installed code, whose
    version its distribution names. Recorded in every row, so that an edit to the code between
    two runs shows in their rows as a change of `dataset_sha256` shows another data file."""
    path, is_package = _top_level(target)
    if path is None or {"site-packages", "dist-packages"} & set(path.parts):
        return None
    files = sorted(path.rglob("*.py")) if is_package else [path]
    digest = hashlib.sha256()
    for file in files:
        digest.update(str(file.relative_to(path.parent)).encode() + b"\0" + file.read_bytes())
    return digest.hexdigest()
