"""The arguments every config-driven sub-command shares, and the config layers they give.

A sub-command built on a config dataclass gets `--config FILE`, repeatable `--set KEY=VALUE`,
`--overwrite`, `--no-progress` and one `--key VALUE` flag per field (typed and range-checked
later, by the config's own validation). Old names of renamed keys are accepted as flags too; a
true/false field's flag alone means true (`--tensorboard` is `--tensorboard true`).
"""

from __future__ import annotations

import argparse
import dataclasses
from collections.abc import Iterable
from typing import Any

from .config import config_fields, load_yaml, parse_set


def flag(name: str) -> str:
    """`--snake-case` for a field name."""
    return "--" + name.replace("_", "-")


def add_config_arguments(p: argparse.ArgumentParser, cls: type | Iterable[dataclasses.Field],
                         metavars: dict[str, str] | None = None,
                         skip: tuple[str, ...] = ("progress",)) -> None:
    """Add the shared arguments and one flag per field of the dataclass `cls` (or of the given
    fields)."""
    p.add_argument("--config", help="YAML file of config keys (command-line flags win)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override any config key; repeatable")
    p.add_argument("--overwrite", action="store_true", help="replace a run already in --out")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    items = config_fields(cls) if isinstance(cls, type) else list(cls)
    for f in items:
        if f.name in skip:
            continue
        choices = f.metadata.get("choices")
        extra = f"; one of {', '.join(map(str, choices))}" if choices else ""
        names = [flag(f.name)] + [flag(a) for a in f.metadata.get("aliases", ())]
        switch = {"nargs": "?", "const": "true"} if "bool" in str(f.type) else {}
        p.add_argument(*names, dest=f.name, default=None,
                       metavar=(metavars or {}).get(f.name, "V"), **switch,
                       help=f"{f.metadata.get('help', '')} (default: {f.default}{extra})")
    p.set_defaults(_config_keys=[f.name for f in items])


def config_layers(args: argparse.Namespace, cls: type | None = None) -> list[dict[str, Any]]:
    """--config YAML, then explicit flags, then --set overrides (and --no-progress)."""
    file_layer = load_yaml(args.config) if args.config else {}
    keys = (args._config_keys if cls is None or not isinstance(cls, type)
            else [f.name for f in config_fields(cls)])
    flag_layer = {k: getattr(args, k) for k in keys if getattr(args, k, None) is not None}
    flag_layer = {k: parse_set([f"{k}={v}"])[k] for k, v in flag_layer.items()}
    set_layer = parse_set(args.set)
    if args.no_progress:
        set_layer["progress"] = False
    return [file_layer, flag_layer, set_layer]


def print_table(rows: list[tuple[str, str]]) -> None:
    """Two aligned columns on stdout."""
    width = max(len(k) for k, _ in rows)
    for k, v in rows:
        print(f"{k.ljust(width)}  {v}")
