"""YAML presets into small config dataclasses, with `key=value` overrides from the command line.

A preset file holds the dataclass's fields and may hold a `quick:` mapping of overrides
that apply in quick mode (a slice of the data, fewer steps).
"""

from __future__ import annotations

import argparse
import dataclasses
from importlib.resources import files
from pathlib import Path
from typing import Any, TypeVar

import yaml

from edgener.runtime.errors import UserError

# The presets: configs/ in a checkout, installed as the package edgener.configs.
CONFIG_ROOT = Path(str(files("edgener.configs")))
T = TypeVar("T")


class ConfigError(UserError, ValueError):
    pass


def preset_path(stage: str, preset: str) -> Path:
    """A preset name under configs/<stage>/, or a path to a YAML file."""
    candidate = Path(preset)
    if candidate.suffix in (".yaml", ".yml"):
        if not candidate.is_file():
            raise ConfigError(f"config file {preset} does not exist")
        return candidate
    path = CONFIG_ROOT / stage / f"{preset}.yaml"
    if not path.is_file():
        known = sorted(p.stem for p in (CONFIG_ROOT / stage).glob("*.yaml"))
        raise ConfigError(f"unknown {stage} preset {preset!r}; known: {', '.join(known)}")
    return path


def stage_parser(prog: str, doc: str, stage: str, quick: str,
                 fresh: str | None = "ignore checkpoints and outputs",
                 preset: str | None = None) -> argparse.ArgumentParser:
    """A stage's command line: --preset (under configs/<stage>, or a YAML file), --quick
    (`quick` says what it cuts), --fresh (`fresh` says what it redoes; None: no such flag)
    and key=value overrides. The description is the first paragraph of `doc`."""
    parser = argparse.ArgumentParser(prog=prog, description=doc.split("\n\n")[0])
    parser.add_argument("--preset", default=preset,
                        help=f"preset under configs/{stage}, or a YAML file")
    parser.add_argument("--quick", action="store_true", help=quick)
    if fresh:
        parser.add_argument("--fresh", action="store_true", help=fresh)
    parser.add_argument("overrides", nargs="*", metavar="key=value")
    return parser


def parse_overrides(items: list[str]) -> dict[str, Any]:
    """['lr=1e-4', 'epochs=3'] -> {'lr': 0.0001, 'epochs': 3}, values read as YAML."""
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"override {item!r} is not key=value")
        out[key.strip()] = yaml.safe_load(value) if value else None
    return out


def load_config(cls: type[T], path: Path, overrides: dict[str, Any], quick: bool) -> T:
    raw = yaml.safe_load(path.read_text()) or {}
    quick_overrides = raw.pop("quick", {}) or {}
    values = {**raw, **(quick_overrides if quick else {}), **overrides}
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - set(fields))
    if unknown:
        raise ConfigError(f"unknown config key(s) {', '.join(unknown)}; "
                          f"known: {', '.join(sorted(fields))}")
    for key, value in values.items():
        values[key] = _coerce(key, value, fields[key])
    try:
        return cls(**values)
    except TypeError as error:
        raise ConfigError(f"{path}: {error}") from None


def _coerce(key: str, value: Any, field: dataclasses.Field) -> Any:
    """YAML reads 1e-4 as a string and 3 as int where float is wanted; fix the obvious cases."""
    kind = field.type if isinstance(field.type, str) else getattr(field.type, "__name__", "")
    try:
        if value is None:
            return None
        if kind.startswith("float"):
            return float(value)
        if kind.startswith("int") and not isinstance(value, bool):
            return int(value)
        if kind.startswith("bool") and not isinstance(value, bool):
            raise ValueError
    except (TypeError, ValueError):
        raise ConfigError(f"config key {key}: {value!r} is not a {kind}") from None
    return value


def check_at_least(config, minimum: float, *keys: str) -> None:
    """A ConfigError naming the first of `keys` set below `minimum` (None passes: unset)."""
    for key in keys:
        value = getattr(config, key)
        if value is not None and value < minimum:
            raise ConfigError(f"{key}={value!r} cannot run: {key} must be at least {minimum:g}")


def check_above(config, bound: float, *keys: str) -> None:
    """A ConfigError naming the first of `keys` set at or below `bound`."""
    for key in keys:
        value = getattr(config, key)
        if value is not None and value <= bound:
            raise ConfigError(f"{key}={value!r} cannot run: {key} must be above {bound:g}")


def check_fraction(config, *keys: str) -> None:
    """A ConfigError naming the first of `keys` outside [0, 1)."""
    for key in keys:
        value = getattr(config, key)
        if value is not None and not 0 <= value < 1:
            raise ConfigError(f"{key}={value!r} cannot run: {key} must be at least 0 and "
                              "below 1")


def check_choice(config, key: str, choices: tuple[str, ...]) -> None:
    value = getattr(config, key)
    if value not in choices:
        raise ConfigError(f"{key}={value!r}: choose one of {', '.join(choices)}")


def as_dict(config) -> dict[str, Any]:
    return dataclasses.asdict(config)


def run_path(runs_dir: str, run: str) -> Path:
    """runs_dir/<run>. A run is a plain name, never a path: joined with an absolute path it
    would be that path, and a stage would write into it (a dataset folder, say)."""
    if not run or run in (".", "..") or Path(run).name != run:
        raise ConfigError(f"run {run!r} is not a plain name: runs live in {runs_dir}/<run>; "
                          "for a dataset given as a path, the run is its folder name")
    return Path(runs_dir) / run


def dataset_run_name(dataset: str) -> str:
    """The run a dataset's pipeline writes by default: its name, or its folder's name."""
    return Path(dataset).resolve().name if Path(dataset).is_dir() else Path(dataset).name
