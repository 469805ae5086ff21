"""MCP servers out of a client's configuration document, in one shape whatever the client.

Clients name the same things differently (`command` or `cmd`, `env`, `envs` or `environment`,
`url`, `serverUrl`, `httpUrl` or `uri`; a map of servers or a list of named ones; Zed's command
as an object, opencode's as a list). They are read into `McpServerObservation`s here, keeping of
the environment and headers their names only, and of a URL its host, with credentials in the
arguments redacted before anything leaves this module.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator, Mapping, Sequence
from typing import Any
from urllib.parse import urlsplit

from agent.catalog.aitools import McpClientEntry
from agent.observations import McpServerObservation
from agent.privacy.scrub import scrub_argv, scrub_url

MAX_SERVERS_PER_FILE = 256
MAX_ARGS = 64
MAX_STRING = 1024
_COMMAND_KEYS = ("command", "cmd")
_ARGS_KEYS = ("args", "arguments")
_ENV_KEYS = ("env", "envs", "environment")
_URL_KEYS = ("url", "serverUrl", "httpUrl", "uri", "endpoint")
_HEADER_KEYS = ("headers", "http_headers", "requestInit")
_TRANSPORTS = {
    "stdio": "stdio",
    "local": "stdio",
    "sse": "sse",
    "http": "http",
    "streamable_http": "http",
    "streamable-http": "http",
    "streamablehttp": "http",
    "remote": "http",
}


def servers_in(doc: Any, paths: Sequence[str]) -> Iterator[tuple[str, Mapping[str, Any], str]]:
    """(name, entry, where) for every server at the client's `servers` paths ("projects.*.mcpServers"):
    a map of name -> entry, or a list of entries that carry their own "name"."""
    count = 0
    for path in paths:
        for found, where in _walk(doc, path.split("."), ""):
            items: list[tuple[str, Any]]
            if isinstance(found, dict):
                items = [(str(k), v) for k, v in found.items()]
            elif isinstance(found, list):
                items = [(str(v.get("name", f"#{i}")), v) for i, v in enumerate(found) if isinstance(v, dict)]
            else:
                continue
            for name, entry in items:
                if not isinstance(entry, dict):
                    continue
                count += 1
                if count > MAX_SERVERS_PER_FILE:
                    return
                yield name[:MAX_STRING], entry, where


def _walk(node: Any, keys: list[str], where: str) -> Iterator[tuple[Any, str]]:
    if not keys:
        yield node, where
        return
    if not isinstance(node, dict):
        return
    key, rest = keys[0], keys[1:]
    if key == "*":
        for k, v in node.items():
            yield from _walk(v, rest, str(k))
    elif key in node:
        yield from _walk(node[key], rest, where)


def server_observation(
    client: McpClientEntry, name: str, entry: Mapping[str, Any], config_path: str, scope: str, owner: str
) -> McpServerObservation:
    """One configured server, normalised and redacted."""
    for nested in ("config", "transport"):  # Goose (some versions) and Continue's config.json nest it
        if isinstance(entry.get(nested), dict):
            entry = {**entry, **entry[nested]}
    command, args = _command(entry)
    env_names = _names(entry, _ENV_KEYS)
    if isinstance(entry.get("env_keys"), list):  # Goose: variables taken from its keyring
        env_names = tuple(sorted({*env_names, *(str(k) for k in entry["env_keys"] if isinstance(k, str))}))
    for key in ("bearer_token_env_var",):  # Codex CLI: the variable holding a bearer token
        if isinstance(entry.get(key), str):
            env_names = tuple(sorted({*env_names, entry[key]}))
    header_names = _names(entry, _HEADER_KEYS)
    if isinstance(entry.get("env_http_headers"), dict):  # Codex CLI: header -> variable name
        header_names = tuple(sorted({*header_names, *map(str, entry["env_http_headers"])}))
    url = next((entry[k] for k in _URL_KEYS if isinstance(entry.get(k), str)), "")
    transport = _transport(entry, url, command)
    remote_host = _host(url)
    safe_args = tuple(s[:MAX_STRING] for s in scrub_argv(args[:MAX_ARGS]))
    safe_command = scrub_argv([command])[0][:MAX_STRING] if command else ""
    disabled = entry.get("disabled") is True or entry.get("enabled") is False
    normal = {
        "client": client.id,
        "name": name,
        "transport": transport,
        "command": safe_command,
        "args": safe_args,
        "url": scrub_url(url) if url else "",
        "env": env_names,
        "headers": header_names,
        "disabled": disabled,
    }
    digest = hashlib.sha256(json.dumps(normal, sort_keys=True).encode()).hexdigest()
    return McpServerObservation(
        name=name,
        client=client.id,
        scope=scope,
        transport=transport,
        config_path=config_path,
        command=safe_command,
        args=safe_args,
        remote_host=remote_host,
        env_names=env_names,
        header_names=header_names,
        disabled=disabled,
        content_hash=digest,
        owner=owner,
    )


def _command(entry: Mapping[str, Any]) -> tuple[str, list[str]]:
    raw = next((entry[k] for k in _COMMAND_KEYS if k in entry), None)
    args: list[Any] = next((entry[k] for k in _ARGS_KEYS if isinstance(entry.get(k), list)), [])
    if isinstance(raw, dict):  # Zed's older form: {"path": ..., "args": [...], "env": {...}}
        args = raw.get("args", []) if isinstance(raw.get("args"), list) else args
        raw = raw.get("path", "")
    if isinstance(raw, list):  # opencode: the command and its arguments in one list
        words = [str(w) for w in raw if isinstance(w, str | int | float)]
        raw, args = (words[0] if words else ""), words[1:] + list(args)
    command = raw if isinstance(raw, str) else ""
    return command, [str(a) for a in args if isinstance(a, str | int | float)]


def _names(entry: Mapping[str, Any], keys: Sequence[str]) -> tuple[str, ...]:
    names: set[str] = set()
    for key in keys:
        value = entry.get(key)
        if key == "requestInit" and isinstance(value, dict):
            value = value.get("headers")
        if isinstance(value, dict):
            names |= {str(k)[:MAX_STRING] for k in value}
    command = entry.get("command")  # Zed's older form keeps the env inside the command object
    if isinstance(command, dict) and "env" in keys and isinstance(command.get("env"), dict):
        names |= {str(k)[:MAX_STRING] for k in command["env"]}
    return tuple(sorted(names))


def _transport(entry: Mapping[str, Any], url: str, command: str) -> str:
    for key in ("type", "transport"):
        value = entry.get(key)
        if isinstance(value, dict):  # Continue's config.json: {"transport": {"type": "stdio", ...}}
            value = value.get("type")
        if isinstance(value, str) and value.lower() in _TRANSPORTS:
            return _TRANSPORTS[value.lower()]
    if "httpUrl" in entry:
        return "http"
    if url:
        return "sse" if url.rstrip("/").endswith("/sse") else "http"
    return "stdio" if command else ""


def _host(url: str) -> str:
    if not url:
        return ""
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        port = parts.port
    except ValueError:
        return ""
    return f"{host}:{port}" if host and port else host
