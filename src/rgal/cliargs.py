"""The arguments every config-driven sub-command shares, and the config layers they give.

A sub-command built on a config dataclass gets `--config FILE`, repeatable `--set KEY=VALUE`,
`--overwrite`, `--no-progress` and one `--key VALUE` flag per field (typed and range-checked
later, by the config's own validation). A true/false field's flag alone means true
(`--tensorboard` is `--tensorboard true`).
"""

from __future__ import annotations

import argparse
from dataclasses import fields
from typing import Any

from .config import load_yaml, parse_set


def flag(name: str) -> str:
    """`--snake-case` for a field name."""
    return "--" + name.replace("_", "-")


def add_config_arguments(p: argparse.ArgumentParser, cls: type,
                         metavars: dict[str, str] | None = None,
                         skip: tuple[str, ...] = ("progress",)) -> None:
    """Add the shared arguments and one flag per field of the dataclass `cls`."""
    p.add_argument("--config", help="YAML file of config keys (command-line flags win)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override any config key; repeatable")
    p.add_argument("--overwrite", action="store_true", help="replace a run already in --out")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    for f in fields(cls):
        if f.name in skip:
            continue
        choices = f.metadata.get("choices")
        extra = f"; one of {', '.join(map(str, choices))}" if choices else ""
        switch = {"nargs": "?", "const": "true"} if "bool" in str(f.type) else {}  # `--flag`
        p.add_argument(flag(f.name), dest=f.name, default=None,
                       metavar=(metavars or {}).get(f.name, "V"), **switch,
                       help=f"{f.metadata.get('help', '')} (default: {f.default}{extra})")


def config_layers(args: argparse.Namespace, cls: type) -> list[dict[str, Any]]:
    """--config YAML, then explicit flags, then --set overrides (and --no-progress)."""
    file_layer = load_yaml(args.config) if args.config else {}
    flag_layer = {f.name: getattr(args, f.name) for f in fields(cls)
                  if getattr(args, f.name, None) is not None}
    flag_layer = {k: parse_set([f"{k}={v}"])[k] for k, v in flag_layer.items()}
    set_layer = parse_set(args.set)
    if args.no_progress:
        set_layer["progress"] = False
    return [file_layer, flag_layer, set_layer]
