"""AI extensions of browsers (Chromium family, Firefox) and editors (VS Code family, JetBrains),
matched by id against the catalog: only catalogued extensions are read further (their manifest,
for the name, version and permissions); the rest is one directory listing."""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from typing import Any

from agent.catalog.aitools import AiToolsCatalog, ExtensionHost
from agent.observations import AiExtensionObservation
from agent.sensors.aitools.documents import Reader
from agent.sensors.aitools.places import expand, subdirs

MAX_PERMISSIONS = 64
_VSCODE_DIR = re.compile(r"^(?P<id>[a-z0-9][a-z0-9-]*\.[a-z0-9][a-z0-9-]*)-(?P<version>\d[\w.+-]*)$", re.I)
_MSG = re.compile(r"^__MSG_\w+__$")


def extensions(
    catalog: AiToolsCatalog, reader: Reader, home: str, owner: str
) -> Iterator[AiExtensionObservation]:
    """The catalogued extensions of every browser profile and editor of one home."""
    hosts = (*catalog.browsers, *catalog.editors)
    for host, root in ((h, r) for h in hosts for pattern in h.roots for r in expand(pattern, home)):
        if host.kind == "chromium":
            yield from _chromium(catalog, reader, host, root, owner)
        elif host.kind == "firefox":
            yield from _firefox(catalog, reader, host, root, owner)
        elif host.kind == "vscode":
            yield from _vscode(catalog, reader, host, root, owner)
        else:
            yield from _jetbrains(catalog, host, root, owner)


def _chromium(
    catalog: AiToolsCatalog, reader: Reader, browser: ExtensionHost, root: str, owner: str
) -> Iterator[AiExtensionObservation]:
    for profile in subdirs(root):
        extensions = os.path.join(root, profile, "Extensions")
        for ext_id in subdirs(extensions, limit=1024):
            if catalog.extension(ext_id) is None:
                continue
            versions = subdirs(os.path.join(extensions, ext_id))
            if not versions:
                continue
            version = versions[-1]
            path = os.path.join(extensions, ext_id, version)
            manifest = reader.document(os.path.join(path, "manifest.json"), "json")
            manifest = manifest if isinstance(manifest, dict) else {}
            name = manifest.get("name")
            permissions = _strings(manifest.get("permissions")) + _strings(manifest.get("host_permissions"))
            yield AiExtensionObservation(
                browser.id,
                profile,
                ext_id,
                name if isinstance(name, str) and not _MSG.match(name) else "",
                str(manifest.get("version") or version.split("_")[0])[:64],
                permissions,
                path,
                owner,
            )


def _firefox(
    catalog: AiToolsCatalog, reader: Reader, browser: ExtensionHost, root: str, owner: str
) -> Iterator[AiExtensionObservation]:
    for profile in subdirs(root):
        path = os.path.join(root, profile, "extensions.json")
        doc = reader.document(path, "json")
        addons = doc.get("addons") if isinstance(doc, dict) else None
        for addon in addons if isinstance(addons, list) else []:
            if not isinstance(addon, dict) or not isinstance(addon.get("id"), str):
                continue
            if catalog.extension(addon["id"]) is None:
                continue
            locale = _table(addon.get("defaultLocale"))
            perms = _table(addon.get("userPermissions"))
            yield AiExtensionObservation(
                browser.id,
                profile,
                addon["id"][:256],
                str(locale.get("name") or "")[:256],
                str(addon.get("version") or "")[:64],
                _strings(perms.get("permissions")) + _strings(perms.get("origins")),
                path,
                owner,
            )


def _jetbrains(
    catalog: AiToolsCatalog, editor: ExtensionHost, root: str, owner: str
) -> Iterator[AiExtensionObservation]:
    """A JetBrains IDE's plugins are folders named by the plugin: matched by that name."""
    for plugin in subdirs(root, limit=1024):
        if catalog.extension(plugin) is not None:
            path = os.path.join(root, plugin)
            yield AiExtensionObservation(
                editor.id, os.path.basename(root), plugin, "", path=path, owner=owner
            )


def _vscode(
    catalog: AiToolsCatalog, reader: Reader, editor: ExtensionHost, root: str, owner: str
) -> Iterator[AiExtensionObservation]:
    """Extension folders are named <publisher.name>-<version>; the newest of each id is reported."""
    newest: dict[str, tuple[str, str]] = {}
    for folder in subdirs(root, limit=4096):
        m = _VSCODE_DIR.match(folder)
        if m is None or catalog.extension(m["id"]) is None:
            continue
        ext_id = m["id"].lower()
        if ext_id not in newest or _version_key(m["version"]) > _version_key(newest[ext_id][1]):
            newest[ext_id] = (folder, m["version"])
    for ext_id, (folder, version) in sorted(newest.items()):
        path = os.path.join(root, folder)
        package: Any = reader.document(os.path.join(path, "package.json"), "json")
        package = package if isinstance(package, dict) else {}
        name = package.get("displayName") or package.get("name") or ""
        yield AiExtensionObservation(
            editor.id,
            root,
            ext_id,
            name[:256] if isinstance(name, str) and not name.startswith("%") else "",
            str(package.get("version") or version)[:64],
            (),
            path,
            owner,
        )


def _version_key(version: str) -> tuple[int, ...]:
    return tuple(int(p) for p in re.findall(r"\d+", version)[:4])


def _table(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _strings(value: Any) -> tuple[str, ...]:
    if not isinstance(value, list):
        return ()
    return tuple(v[:256] for v in value if isinstance(v, str))[:MAX_PERMISSIONS]
