"""Catalogs: what the agent knows about AI software, kept as data (TOML) apart from the engines."""

from agent.catalog.runtimes import (
    RuntimeCatalog,
    RuntimeEntry,
    RuntimeMatch,
    default_runtime_catalog,
    load_runtime_catalog,
)
from agent.catalog.source import CatalogError

__all__ = [
    "CatalogError",
    "RuntimeCatalog",
    "RuntimeEntry",
    "RuntimeMatch",
    "default_runtime_catalog",
    "load_runtime_catalog",
]
