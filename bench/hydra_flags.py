"""Hydra's command-line flags on `python -m bench`: -m/--multirun, --cfg job|hydra|all, --resolve,
-p/--package, --info, --version, as a Hydra app takes them; any other flag is one line.

`--cfg` and `--info` compose and validate first (a bad override is bench's one line, exit 2), then
print what Hydra would: `--cfg job` the job config, `--cfg hydra` the `hydra` node (headed by a
comment on which of its keys bench uses), `--cfg all` both, `--info` Hydra's own report (config
search path, defaults tree and list, the composed config, plugins).
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field

from omegaconf import DictConfig, OmegaConf

from bench.config import CONF_DIR, ConfigError, compose, estimator_arguments, free_form

CFG_CHOICES = ("job", "hydra", "all")
INFO_CHOICES = ("all", "config", "defaults", "defaults-tree", "plugins", "searchpath")
OPTIONS = "-m/--multirun, --cfg job|hydra|all, --resolve, -p/--package, --info, --version, --help"
REFUSED = {
    ("--config-name", "-cn"): "bench has one root config; choose a sweep with +sweep=NAME or an "
    "experiment with +experiment=NAME",
    (
        "--config-path",
        "-cp",
        "--config-dir",
        "-cd",
    ): "bench reads its configs from its conf/ folder "
    "(set BENCH_CONF_DIR to read another copy of it)",
    ("--shell-completion", "-sc"): "shell completion is not set up for python -m bench",
    ("--experimental-rerun",): "re-run a stored run's trials with python -m bench replay RUN_DIR",
    ("--hydra-help",): "python -m bench --help lists bench's options; docs/hydra.md the Hydra ones",
}
HYDRA_NODE_NOTE = (
    "# bench does not use Hydra's run/output settings (hydra.run, hydra.job.chdir, logging): each "
    "run is written to results_dir/<sweep>/<run_id>.\n"
    "# Of this node it uses hydra.launcher and hydra.sweep.dir (the launcher's logs) only with "
    "-m hydra/launcher=NAME (docs/hydra.md).\n"
)


@dataclass
class Flags:
    overrides: list[str] = field(default_factory=list)
    multirun: bool = False
    cfg: str | None = None
    resolve: bool = False
    package: str | None = None
    info: str | None = None
    version: bool = False
    typed: list[str] = field(default_factory=list)  # the flags as typed, for suggested commands


def _value(args: list[str], i: int, flag: str, choices: tuple[str, ...] | None) -> str | None:
    """The value after a flag at args[i], or None when the next word is not one."""
    if i + 1 < len(args) and (choices is None or args[i + 1] in choices):
        return args[i + 1]
    return None


def _choice(
    args: list[str], i: int, name: str, inline: str, eq: str, choices: tuple[str, ...], bare: str
) -> tuple[str, int]:
    """A flag whose value is optional and one of `choices` (`--cfg job`, `--cfg=job`, bare
    `--cfg`): the value (`bare` when none is given) and how many words it took after the flag."""
    value = inline if eq else _value(args, i, name, choices)
    if value is not None and value not in choices:
        raise ConfigError(f"{name}: {value!r} is not one of {', '.join(choices)}")
    return value or bare, int(value is not None and not eq)


def parse_flags(args: list[str]) -> Flags:
    f = Flags()
    i = 0
    while i < len(args):
        a = args[i]
        name, eq, inline = a.partition("=") if a.startswith("--") else (a, "", "")
        if not a.startswith("-") or a.startswith("~"):
            f.overrides.append(a)
        elif name in ("-m", "--multirun"):
            f.multirun = True
            f.typed.append(a)
        elif name in ("-r", "--run"):
            pass  # the default
        elif name in ("--cfg", "-c"):  # bare --cfg: the job config, as bench always printed it
            f.cfg, taken = _choice(args, i, "--cfg", inline, eq, CFG_CHOICES, "job")
            i += taken
        elif name == "--resolve":
            f.resolve = True
        elif name in ("--package", "-p"):
            value = inline if eq else _value(args, i, name, None)
            if not value:
                raise ConfigError(f"{name}: needs the config package to print, e.g. -p model")
            f.package = value
            i += 0 if eq else 1
        elif name in ("--info", "-i"):
            f.info, taken = _choice(args, i, "--info", inline, eq, INFO_CHOICES, "all")
            i += taken
        elif name == "--version":
            f.version = True
        else:
            for names, why in REFUSED.items():
                if name in names:
                    raise ConfigError(f"{name}: {why}")
            raise ConfigError(f"{name}: not an option of python -m bench; options: {OPTIONS}")
        i += 1
    commands = [f.multirun, f.cfg is not None, f.info is not None]
    if sum(commands) > 1:
        raise ConfigError(
            "-m, --cfg and --info: give only one of them (as in Hydra: --multirun runs, "
            "--cfg and --info print)"
        )
    if f.resolve and f.cfg is None:
        raise ConfigError("--resolve: resolves interpolations in what --cfg prints; add --cfg job")
    if f.package is not None and f.cfg is None:
        raise ConfigError("--package: picks the part of the config --cfg prints; add --cfg job")
    return f


def _split(overrides: list[str]) -> tuple[list[str], list[str]]:
    """(hydra/launcher-type overrides a printout may show, bench's own overrides)."""
    from bench.overrides import parse

    parsed = parse(overrides)
    launcher = [o.line for o in parsed if o.hydra and o.launcher and o.values is None]
    return launcher, [o.line for o in parsed if o.line not in launcher]


def _hydra_node(launcher: list[str], job: list[str]) -> DictConfig:
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    overrides = [*launcher, *(free_form(o) for o in estimator_arguments(job))]
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3", job_name="bench"):
            cfg = hydra_compose("config", overrides=overrides, return_hydra_config=True)
    finally:
        GlobalHydra.instance().clear()
    node = OmegaConf.create({"hydra": OmegaConf.to_container(cfg.hydra, resolve=False)})
    for key in ("help", "hydra_help"):  # as Hydra's --cfg hydra leaves them out
        node.hydra.pop(key, None)
    return node


def show_cfg(f: Flags) -> int:
    launcher, job = _split(f.overrides)
    cfg = compose(job, require_installed=False)  # validated: a bad override is one line, exit 2
    parts: list[DictConfig] = []
    if f.cfg in ("hydra", "all"):
        try:
            parts.append(_hydra_node(launcher, job))
        except Exception as exc:  # e.g. hydra/launcher=nope
            from bench.config import one_line

            raise ConfigError(one_line(exc)) from None
    if f.cfg in ("job", "all"):
        parts.append(cfg)
    whole = OmegaConf.merge(*parts) if len(parts) > 1 else parts[0]
    if f.package not in (None, "_global_"):
        selected = OmegaConf.select(whole, f.package)
        if selected is None:
            raise ConfigError(f"--package: {f.package!r} is not in the {f.cfg} config")
        if not OmegaConf.is_config(selected):
            print(selected)
            return 0
        if f.resolve:
            OmegaConf.resolve(selected)
        sys.stdout.write(f"# @package {f.package}\n{OmegaConf.to_yaml(selected)}")
        return 0
    if f.resolve:
        OmegaConf.resolve(whole)
    note = HYDRA_NODE_NOTE if f.cfg in ("hydra", "all") else ""
    sys.stdout.write(note + OmegaConf.to_yaml(whole))
    return 0


def show_info(f: Flags) -> int:
    """Hydra's own --info, on bench's config and overrides."""
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    launcher, job = _split(f.overrides)
    compose(job, require_installed=False)
    overrides = [*launcher, *(free_form(o) for o in estimator_arguments(job))]
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3", job_name="bench"):
            hydra = GlobalHydra.instance().hydra
            assert hydra is not None
            assert f.info is not None
            hydra.show_info(f.info, config_name="config", overrides=overrides)
    finally:
        GlobalHydra.instance().clear()
    return 0


def show_version() -> int:
    import hydra

    from bench import __version__

    print(f"bench {__version__} (Hydra {hydra.__version__})")
    return 0
