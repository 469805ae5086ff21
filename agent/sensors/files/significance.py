"""Does a model file found on disk matter? The rule that keeps data and package test fixtures
out of an analyst's queue while every real model still counts.

Identification (agent/modelfiles) answers "are these bytes weights of a model format?"; a 4 kB ONNX
graph from onnx's own test suite and a NumPy archive of scipy's test tables both are. This
module answers "is it a model someone has, worth a finding above info?", from the facts the
header gave and where the file lies. A file that does not count is still reported, at info,
with the reasons, so nothing disappears silently (unless `report_demoted` is off).

The rule, in order (each step a reason in the evidence):

1. Size floor: below `min_bytes` (1 MB) a file is a fixture or a toy, not weights that matter.
2. Parameter floor: when the header counts parameters, below `min_parameters` (1M) it does not
   count (the smallest models people deploy, a MobileNet or a tiny BERT, have several million).
3. Package trees: under a directory a package manager fills (pip's site-packages, Debian's
   dist-packages, npm's node_modules, conda's pkgs cache), files are what a package ships: they
   count only from `package_min_bytes` (100 MB) up, so weights hidden there are still found.
4. NumPy arrays (.npy, .npz) are the universal data format: they count only with model context,
   in a model location (a hub cache, a runtime's store) or with arrays named like weights.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import Final

from umbra.codec import human_size

from agent.modelfiles.model import human_count

__all__ = ["MODEL_LOCATION_KINDS", "NUMPY_FORMATS", "Judgement", "ModelRule", "judge", "package_tree"]

#: Formats that are plain arrays: model weights only with context.
NUMPY_FORMATS: Final = frozenset({"numpy", "numpy-npz"})
#: Root kinds (agent/catalog/model_locations.toml) that are context enough for arrays.
MODEL_LOCATION_KINDS: Final = frozenset({"hub_cache", "model_dir"})


@dataclass(frozen=True)
class ModelRule:
    """[sensors.files.models] in the agent config: when a model file counts (see the module)."""

    min_bytes: int = 1_000_000
    min_parameters: int = 1_000_000
    # Directory names a package manager fills; "pkgs" only beside conda-meta (a conda install).
    package_dirs: tuple[str, ...] = ("site-packages", "dist-packages", "node_modules", "pkgs")
    package_min_bytes: int = 100_000_000
    numpy_needs_context: bool = True
    report_demoted: bool = True  # false: files that do not count are not reported at all


@dataclass(frozen=True)
class Judgement:
    counts: bool
    reasons: tuple[str, ...]


def judge(
    rule: ModelRule,
    path: str,
    fmt: str,
    size: int,
    parameter_count: int = 0,
    *,
    weight_names: int = 0,
    arrays: int = 0,
    location_kind: str = "",
) -> Judgement:
    """Whether the model file at `path` counts, with the reasons either way (for the evidence).
    `weight_names` of `arrays` are the arrays named like weights (NumPy archives)."""
    demoted: list[str] = []
    if size < rule.min_bytes:
        demoted.append(f"{human_size(size)} is below the {human_size(rule.min_bytes)} size floor")
    if 0 < parameter_count < rule.min_parameters:
        demoted.append(
            f"{human_count(parameter_count)} parameters, below the "
            f"{human_count(rule.min_parameters)}-parameter floor"
        )
    package = package_tree(path, rule.package_dirs)
    if package and size < rule.package_min_bytes:
        demoted.append(
            f"shipped by a package ({package}), below the {human_size(rule.package_min_bytes)} "
            "floor for files a package manager installed"
        )
    if fmt in NUMPY_FORMATS and rule.numpy_needs_context:
        named = arrays > 0 and weight_names * 2 >= arrays
        if location_kind not in MODEL_LOCATION_KINDS and not named:
            demoted.append(
                "NumPy arrays without model context (not in a model location, arrays not named like weights)"
            )
    if demoted:
        return Judgement(False, tuple(demoted))
    why = [f"{human_size(size)}, at or above the {human_size(rule.min_bytes)} size floor"]
    if parameter_count:
        why.append(f"{human_count(parameter_count)} parameters, at or above the parameter floor")
    if package:
        why.append(f"inside a package tree ({package}) but as large as real weights")
    if fmt in NUMPY_FORMATS:
        why.append(
            "arrays in a model location"
            if location_kind in MODEL_LOCATION_KINDS
            else "arrays named like weights"
        )
    return Judgement(True, tuple(why))


def array_counts(extra: Mapping[str, str]) -> tuple[int, int]:
    """(arrays named like weights, arrays) from a NumPy archive's parsed header extras, for `judge`."""
    names, arrays = extra.get("weight_names"), extra.get("arrays")
    return (
        int(names) if names and names.isdigit() else 0,
        int(arrays) if arrays and arrays.isdigit() else 0,
    )


def package_tree(path: str, names: tuple[str, ...]) -> str:
    """The tree and the package's top folder ("site-packages/onnx") when `path` lies in a package manager's
    tree, "" otherwise. A "pkgs" folder counts only in a conda install."""
    parts = path.split("/")
    for i in range(len(parts) - 2, -1, -1):
        part = parts[i]
        if part not in names:
            continue
        if part == "pkgs" and not _is_conda("/".join(parts[:i]) or "/"):
            continue
        return f"{part}/{parts[i + 1]}" if i + 1 < len(parts) - 1 else part
    return ""


@lru_cache(maxsize=256)
def _is_conda(prefix: str) -> bool:
    return any(os.path.isdir(os.path.join(prefix, marker)) for marker in ("conda-meta", "condabin"))
