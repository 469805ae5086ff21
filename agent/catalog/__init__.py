"""Catalogs: what the agent knows about AI software, kept as data (TOML) apart from the engines.

One loader module per data file (runtimes, endpoints, locations, process_signals, training),
the command-line parser the runtime and training catalogs read argv with (cmdline), and the
checks every catalog shares (source). The runtime catalog, the one most callers want, and the
catalogs' error are importable from here.
"""

from agent.catalog.runtimes import RuntimeCatalog, default_runtime_catalog, load_runtime_catalog
from agent.catalog.source import CatalogError

__all__ = ["CatalogError", "RuntimeCatalog", "default_runtime_catalog", "load_runtime_catalog"]
