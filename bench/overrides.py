"""Command-line overrides read with Hydra's own grammar, and the Hydra habits bench answers.

bench composes with Hydra's compose API, not `@hydra.main` (bench.cli says why), so the habits of
a Hydra user meet bench here: a comma list (`model=logreg,mlp`), `range(...)`, `choice(...)` and
`glob(...)` are sweeps, which run with `-m` only (bench.multirun), and a `hydra.*` override is
either one bench honours (a Hydra launcher with `-m`) or refused in one line that says what bench
uses instead. Nothing is silently ignored. docs/hydra.md tells the user's side of it.
"""

from __future__ import annotations

import shlex
import types
import typing
from dataclasses import dataclass, is_dataclass
from typing import Any

from bench.config import BenchConfig, ConfigError

# Sweeps of these keys are one bench run already: the rows of every value side by side, in one
# run folder, where the analysis pairs and compares them. A multirun over them is refused with
# the one-run equivalent. seeds.n is special: seeds.n=1,2 would train the first seed twice.
AXES = {
    "libraries": "libraries",
    "mode": "modes",
    "threads": "sweep.threads",
    "deterministic": "sweep.deterministic",
    "device": "sweep.devices",
    "cpu_isa": "sweep.cpu_isa",
    "seeds.n": "seeds.n",
    **{key: key for key in ("models", "modes", "sweep.varied")},
    **{key: key for key in ("sweep.threads", "sweep.deterministic", "sweep.devices")},
    "sweep.cpu_isa": "sweep.cpu_isa",
}
# The hydra.* overrides a multirun with a Hydra launcher takes (bench.multirun); all others are
# refused, each with what bench uses instead.
LAUNCHER_KEYS = ("hydra/launcher", "hydra.launcher", "hydra.sweep.dir", "hydra.sweep.subdir")
HYDRA_DOC = "docs/hydra.md"


@dataclass
class Override:
    line: str  # as typed
    key: str  # the key or group, without +, ++, ~ and @package
    values: list[str] | None  # a sweep's values, each as a whole override; None: not a sweep
    raw: list[Any] | None = None  # a sweep's values as Python values (lists, ints, strings)
    ident: str = ""  # the key with its @package: what a later override of the same thing replaces

    @property
    def hydra(self) -> bool:
        return self.key == "hydra" or self.key.startswith(("hydra.", "hydra/"))

    @property
    def launcher(self) -> bool:
        return any(self.key == k or self.key.startswith(f"{k}.") for k in LAUNCHER_KEYS)

    @property
    def value_text(self) -> str:
        return self.line.partition("=")[2]


def parse(overrides: list[str], config_loader: Any = None) -> list[Override]:
    """Each override through Hydra's own parser; one that the grammar refuses is one line naming
    it. `config_loader` lets `glob(...)` list a group's options; without one a glob is kept
    whole (only bench.multirun expands it)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException

    parser = OverridesParser.create(config_loader=config_loader)
    out = []
    for line in overrides:
        try:
            parsed = parser.parse_override(line)
        except HydraException as exc:
            why = " ".join(str(exc).split("See https://")[0].split()).rstrip(".")
            raise ConfigError(
                f"{line}: not an override ({why}); overrides are key=value, e.g. seeds.n=5 "
                f"(python -m bench --help)"
            ) from None
        parsed.config_loader = config_loader  # as parse_overrides sets it: glob() needs it
        values = raw = None
        if parsed.is_sweep_override():
            if not parsed.is_discrete_sweep():
                raise ConfigError(
                    f"{parsed.key_or_group}: {line.partition('=')[2]} samples values, which needs "
                    "a sampling sweeper (Optuna, Nevergrad); bench's -m runs every combination "
                    "of lists, range() and choice()"
                )
            if config_loader is not None or "glob(" not in line:
                key = parsed.get_key_element()
                values = [f"{key}={v}" for v in parsed.sweep_string_iterator()]
                raw = list(parsed.sweep_iterator())
            else:
                values = [line]
        ident = parsed.get_key_element().lstrip("+~")
        out.append(Override(line, parsed.key_or_group, values, raw, ident))
    return out


def command(flags: list[str], overrides: list[str]) -> str:
    return shlex.join(["python", "-m", "bench", *flags, *overrides])


def _takes_list(key: str) -> bool:
    """Whether the schema types `key` as a list (so that `key=a,b` meant `key=[a,b]`)."""
    cls: Any = BenchConfig
    parts = key.split(".")
    for i, part in enumerate(parts):
        if not is_dataclass(cls):
            return False
        hint = typing.get_type_hints(cls).get(part)
        if hint is None:
            return False
        if typing.get_origin(hint) in (typing.Union, types.UnionType):
            hint = next(a for a in typing.get_args(hint) if a is not type(None))
        if i == len(parts) - 1:
            return typing.get_origin(hint) is list
        cls = hint
    return False


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    return str(value)


def axis_equivalent(o: Override) -> str | None:
    """The one override that makes `o`'s sweep one bench run, or None when `o` is no axis."""
    if o.values is None or o.key not in AXES or o.raw is None:
        return None
    if o.key == "seeds.n":
        if not all(isinstance(v, int) for v in o.raw):
            return None
        return f"seeds.n={max(o.raw)}"
    items: list[str] = []
    for value in o.raw:
        for item in value if isinstance(value, list) else [value]:
            if _text(item) not in items:
                items.append(_text(item))
    return f"{AXES[o.key]}=[{','.join(items)}]"


def axis_refusal(o: Override, flags: list[str], overrides: list[Override]) -> ConfigError:
    """`seeds.n=1,2`, `libraries=sklearn,torch`, `mode=aligned,shared`, ...: bench's own axis,
    one run; the message gives that run's whole command."""
    equivalent = axis_equivalent(o)
    assert equivalent is not None
    args = []
    for other in overrides:
        replacement = axis_equivalent(other)
        args.append(replacement if replacement is not None else other.line)
    still_sweeps = any(x.values is not None and axis_equivalent(x) is None for x in overrides)
    flags = [f for f in flags if f not in ("-m", "--multirun")]
    if still_sweeps:
        flags = ["-m", *flags]
    if o.key == "seeds.n":
        why = f"would train the first seeds again in each run; one run with {equivalent} holds them all"
    else:
        why = f"sweeps one of bench's own axes; one run with {equivalent} holds every value side by side"
    return ConfigError(f"{o.key}: {o.line} {why}; run: {command(flags, args)}")


def sweep_refusal(o: Override, flags: list[str], overrides: list[Override]) -> ConfigError:
    """A sweep without -m, as bench's one line naming the key (never Hydra's 'add --multirun')."""
    if axis_equivalent(o) is not None:
        return axis_refusal(o, flags, overrides)
    if _takes_list(o.key) and "," in o.value_text and "(" not in o.value_text:
        return ConfigError(
            f"{o.key}: {o.value_text} is several values; a list goes in brackets: "
            f"{o.line.partition('=')[0]}=[{o.value_text}] (or add -m for one run per value)"
        )
    args = [x.line for x in overrides]
    return ConfigError(
        f"{o.key}: {o.value_text} is several values; to run one sweep per value add -m: "
        f"{command(['-m', *flags], args)}"
    )


def hydra_refusal(o: Override, multirun: bool = False) -> ConfigError:
    """A `hydra.*` override bench does not honour here, and what it uses instead."""
    key = o.key
    if key.startswith(("hydra/launcher", "hydra.launcher")):
        why = (
            "a Hydra launcher runs the jobs of a multirun; add -m (python -m bench -m "
            "hydra/launcher=submitit_slurm ...), or submit this run as one SLURM job with "
            "cluster=slurm"
        )
    elif key.startswith("hydra.sweep"):
        why = (
            "bench writes each run to results_dir/<sweep>/<run_id>; Hydra's sweep dir holds only "
            "a Hydra launcher's logs, with -m hydra/launcher=NAME; use results_dir=DIR"
        )
    elif key.startswith("hydra.run"):
        why = (
            "bench writes each run to results_dir/<sweep>/<run_id>, not to Hydra's run dir; "
            "use results_dir=DIR (and run_id=NAME)"
        )
    elif key.startswith("hydra/sweeper") or key.startswith("hydra.sweeper"):
        why = (
            "bench expands -m sweeps itself (comma lists, range(), choice(), glob()) with "
            "Hydra's basic grammar; other sweepers are not supported"
        )
    elif key.startswith(("hydra.job.chdir", "hydra.output_subdir")):
        why = "bench never changes the working directory; relative paths are read from where you run it"
    elif key.startswith(
        ("hydra/job_logging", "hydra/hydra_logging", "hydra.verbose", "hydra.job_logging")
    ):
        why = "bench does not log through Hydra; it prints progress and a summary, and writes rows"
    elif key.startswith("hydra.searchpath"):
        why = "bench reads its configs from its conf/ folder (BENCH_CONF_DIR points to another)"
    else:
        why = "bench does not use this Hydra setting"
    if multirun and not o.launcher:
        why += "; with -m it takes hydra/launcher, hydra.launcher.* and hydra.sweep.dir"
    return ConfigError(f"{key}: {why} ({HYDRA_DOC})")


def check(overrides: list[str], flags: list[str] | None = None) -> list[Override]:
    """Refuse, before composing, a sweep (that needs -m) and any hydra.* override: compose() runs
    one bench run and uses no Hydra run, output or launcher setting."""
    parsed = parse(overrides)
    for o in parsed:
        if o.hydra:
            raise hydra_refusal(o)
    for o in parsed:
        if o.values is not None:
            raise sweep_refusal(o, flags or [], parsed)
    return parsed
