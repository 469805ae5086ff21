"""Where the file sensor looks: the roots (the catalog's model locations and sync folders,
configured and policy paths, homes, removable media) and which root a path lies under."""

from __future__ import annotations

import contextlib
import os
import pwd
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from agent.catalog.locations import LocationCatalog, expand_location
from agent.system.mounts import PSEUDO_FS, Mount, removable_device

DOWNLOAD_KINDS: Final = frozenset({"hub_cache", "model_dir", "downloads"})
DESTINATION_KINDS: Final = frozenset({"removable_media", "sync_folder"})
# Model locations first (small, and where models are), then the rest, homes last.
_SCAN_ORDER: Final = {
    "model_dir": 0,
    "hub_cache": 0,
    "downloads": 1,
    "configured": 2,
    "sync_folder": 3,
    "home": 4,
}


@dataclass(frozen=True)
class Root:
    """A place the sensor knows: what kind it is, whether it scans and watches it."""

    path: str
    kind: str  # hub_cache, model_dir, downloads, sync_folder, removable_media, home, configured, model_folder
    name: str
    layout: str = ""
    hub: str = ""
    scan: bool = True
    watch: bool = True
    recursive: bool = True


def norm(path: str) -> str:
    return os.path.normpath(os.path.abspath(os.path.expanduser(path)))


def find_homes(given: Sequence[str] | None) -> list[Path]:
    """The configured homes, or every user's (uid 1000 up) and the agent's own."""
    if given is not None:
        return [Path(h) for h in given]
    homes: list[Path] = []
    with contextlib.suppress(Exception):
        for entry in pwd.getpwall():
            if 1000 <= entry.pw_uid < 65534 and entry.pw_dir not in ("", "/"):
                homes.append(Path(entry.pw_dir))
    with contextlib.suppress(RuntimeError, KeyError):
        homes.append(Path.home())
    return list(dict.fromkeys(homes))


def resolve_roots(
    catalog: LocationCatalog,
    homes: Sequence[Path],
    *,
    default_roots: bool,
    sync_folders: Sequence[str],
    paths: Sequence[str],
    policy_paths: Sequence[str],
    scan_homes: bool,
) -> list[Root]:
    """The existing roots, longest path first (so the first that holds a path is its nearest)."""
    roots: dict[str, Root] = {}

    def add(root: Root) -> None:
        if root.path not in roots and os.path.isdir(root.path):
            roots[root.path] = root

    if default_roots:
        for loc in catalog.locations:
            for pattern in loc.paths:
                targets = (
                    [expand_location(pattern, h) for h in homes]
                    if pattern.startswith("~/")
                    else [expand_location(pattern, None)]
                )
                for target in targets:
                    if target is not None:
                        add(Root(norm(str(target)), loc.kind, loc.name, loc.layout, loc.hub))
    for sync in catalog.sync_folders:
        for home in homes:
            for pattern in sync.paths:
                with contextlib.suppress(OSError, ValueError):
                    for match in sorted(home.glob(pattern))[:8]:
                        add(Root(norm(str(match)), "sync_folder", sync.name))
    for extra in sync_folders:
        add(Root(norm(extra), "sync_folder", os.path.basename(extra.rstrip("/")) or extra))
    for extra in paths:
        add(Root(norm(extra), "configured", extra))
    for extra in policy_paths:
        add(Root(norm(extra), "configured", f"policy: {extra}"))
    if scan_homes:
        for home in homes:
            add(Root(norm(str(home)), "home", str(home), watch=False))
    return sorted(roots.values(), key=lambda r: len(r.path), reverse=True)


def scan_plan(roots: Iterable[Root]) -> list[Root]:
    """The roots to scan, in the order to scan them."""
    return sorted((r for r in roots if r.scan), key=lambda r: (_SCAN_ORDER.get(r.kind, 5), r.path))


def removable_roots(mounts: Iterable[Mount], media_prefixes: Sequence[str]) -> dict[str, Root]:
    """Mounts below a media prefix (/media/USER/STICK) or on a removable block device, as roots."""
    found: dict[str, Root] = {}
    for mount in mounts:
        if mount.fstype in PSEUDO_FS:
            continue
        under_prefix = any(
            mount.mount_point != p and mount.mount_point.startswith(p + "/") for p in media_prefixes
        )
        if under_prefix or (mount.mount_point != "/" and removable_device(mount.major, mount.minor)):
            found[mount.mount_point] = Root(
                mount.mount_point, "removable_media", mount.source or mount.fstype, scan=False
            )
    return found


def place(path: str, roots: Iterable[Root]) -> Root | None:
    """The nearest root that holds `path`."""
    best: Root | None = None
    for root in roots:
        if (path == root.path or path.startswith(root.path + "/")) and (
            best is None or len(root.path) > len(best.path)
        ):
            best = root
    return best
