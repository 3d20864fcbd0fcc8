"""The method registry: every method registers itself by name; configs, the CLI, `rgal bench`
and the README's method table are built from it."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

from ..config import (
    ConfigError,
    DistillConfig,
    canonical_key,
    key_names,
    validate,
)

_METHODS: dict[str, type] = {}
_SECTIONS: dict[str, type] = {}


def register_method(name: str) -> Callable[[type], type]:
    """Class decorator: register a `Method` subclass under `name` (`@register_method("cmi")`)."""

    def deco(cls: type) -> type:
        if name in _METHODS:
            raise ValueError(f"method {name!r} registered twice")
        cls.name = name
        for section in cls.sections:
            register_section(section)
        _METHODS[name] = cls
        return cls

    return deco


def register_section(cls: type) -> type:
    """Make a settings dataclass known by its `section` name (done by `register_method`)."""
    name = cls.section
    if _SECTIONS.get(name, cls) is not cls:
        raise ValueError(f"settings section {name!r} registered twice")
    known = {k for other in _SECTIONS.values() if other is not cls for k in key_names(other)}
    clash = (set(key_names(cls)) & known) | (set(key_names(cls)) & set(key_names(DistillConfig)))
    if clash:
        raise ValueError(f"section {name!r} reuses key(s) {sorted(clash)} of another section")
    _SECTIONS[name] = cls
    return cls


def get_method(name: str) -> type:
    """The method class registered as `name` (ConfigError listing the known ones otherwise)."""
    if name not in _METHODS:
        raise ConfigError(f"unknown method {name!r}; known: {', '.join(list_methods())}")
    return _METHODS[name]


def list_methods() -> list[str]:
    """Every registered method name, in registration order."""
    return list(_METHODS)


def list_sections() -> dict[str, type]:
    """Every registered settings section by name."""
    return dict(_SECTIONS)


def method_defaults() -> dict[str, dict[str, Any]]:
    """Each method's own defaults (its paper's values), applied under the user's settings."""
    return {name: dict(cls.defaults) for name, cls in _METHODS.items()}


def method_of(layers: list[dict[str, Any]]) -> str:
    """The `method` the layers select (the last one that sets it), else the default."""
    method = DistillConfig.__dataclass_fields__["method"].default
    for layer in layers:
        for k, v in layer.items():
            if canonical_key(k) == "method":
                method = v
    return method


def _section_owner(key: str) -> list[str]:
    return [name for name, cls in _SECTIONS.items() if key in key_names(cls)]


def distill_config(*layers: dict[str, Any], lenient: bool = False,
                   under: dict[str, Any] | None = None) -> DistillConfig:
    """A DistillConfig from defaults <- `under` <- the method's own defaults <- each layer.

    `under` replaces some defaults below the method's own (a bench's fixed setting: a method
    that has its own value of a key keeps it; a section key applies only to the methods that
    have that section, whatever `lenient`).

    Keys are shared keys or keys of the method's sections (flat, `w_cr: 0.5`, or nested,
    `cmi: {w_cr: 0.5}`). A key of another method's section is refused, naming its methods;
    with `lenient` it is skipped (a bench's shared settings apply where they mean something).
    """
    method = method_of(list(layers))
    if not isinstance(method, str):
        raise ConfigError(f"config key 'method' must be a string, got {method!r}")
    cls = get_method(method)
    shared = key_names(DistillConfig)
    own = {sec.section: (sec, key_names(sec)) for sec in cls.sections}
    shared_values: dict[str, Any] = {}
    section_values: dict[str, dict[str, Any]] = {name: {} for name in own}

    def put(key: str, value: Any, lenient: bool = lenient) -> None:
        key = canonical_key(key)
        if key == "sections":
            raise ConfigError("unknown config key 'sections'")
        if key in shared:
            shared_values[shared[key]] = value
            return
        if key in own and isinstance(value, dict):
            for k, v in value.items():
                k = canonical_key(k)
                if k not in own[key][1]:
                    raise ConfigError(f"unknown key {k!r} in section {key!r}")
                section_values[key][own[key][1][k]] = v
            return
        for name, (_, names) in own.items():
            if key in names:
                section_values[name][names[key]] = value
                return
        owners = _section_owner(key) or ([key] if key in _SECTIONS else [])
        if owners:
            if lenient:
                return
            users = [m for m, c in _METHODS.items() if any(s.section in owners for s in c.sections)]
            raise ConfigError(f"config key {key!r} belongs to method(s) {', '.join(users)}, "
                              f"not to {method!r}")
        raise ConfigError(f"unknown config key {key!r}")

    for k, v in (under or {}).items():
        put(k, v, lenient=True)
    for layer in (cls.defaults, *layers):
        for k, v in layer.items():
            put(k, v)
    sections = {name: sec(**section_values[name]) for name, (sec, _) in own.items()}
    return validate(DistillConfig(**shared_values, sections=sections))


def all_keys() -> dict[str, dataclasses.Field]:
    """Every key a distill command line may set: shared keys and every section's keys."""
    from ..config import config_fields

    out = {f.name: f for f in config_fields(DistillConfig)}
    for cls in _SECTIONS.values():
        out.update({f.name: f for f in config_fields(cls)})
    return out


def method_table() -> str:
    """The README's markdown table of the registered methods."""
    lines = ["| `--method` | paper | images come from | generator objective | student objective |",
             "|---|---|---|---|---|"]
    for name, cls in _METHODS.items():
        lines.append(f"| `{name}` | {cls.summary} | {cls.images} | {cls.generator_doc} "
                     f"| {cls.student_doc} |")
    return "\n".join(lines) + "\n"


def list_ablations() -> dict[str, dict[str, Any]]:
    """Named ablations the methods declare (bench entries such as `rgal-code`)."""
    out: dict[str, dict[str, Any]] = {}
    for cls in _METHODS.values():
        out.update(cls.__dict__.get("ablations", {}))
    return out
