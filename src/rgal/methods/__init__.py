"""Data-free distillation methods: one file each, registered by name.

`register_method("name")` adds a method; `get_method`, `list_methods` and `distill_config`
read the registry. Built-in methods: RGAL and its combinations with CMI and Fast-Datafree,
DeepInversion, CMI, Fast-Datafree, DAFL, ZSKT, DFAD, DFQ, and the real-data references.
"""

import importlib

from .base import InversionMethod, Method, MethodContext, OnlineMethod, RealDataMethod
from .build import create_method, method_context
from .registry import (
    distill_config,
    get_method,
    list_ablations,
    list_methods,
    list_sections,
    method_defaults,
    method_table,
    register_method,
)
from .rgal import RelationTerms

# registration order is the order of the README table and of `rgal bench`
BUILTIN = ("rgal", "deepinv", "cmi", "fast", "nayer", "cmi_rgal", "fast_rgal", "nayer_rgal",
           "dafl", "zskt", "dfad", "dfq", "kd_real", "scratch")
for _module in BUILTIN:
    importlib.import_module(f".{_module}", __name__)

__all__ = ["InversionMethod", "Method", "MethodContext", "OnlineMethod", "RealDataMethod",
           "RelationTerms", "create_method", "distill_config", "get_method", "list_ablations",
           "list_methods", "list_sections", "method_context", "method_defaults", "method_table",
           "register_method"]
