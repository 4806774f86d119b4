"""Reading a config file: bounded YAML, ${VAR} expansion, errors that name the key path and line.

Env vars are expanded in parsed string values, never in the raw text, so a
password containing ``: `` or ``#`` cannot change the document's structure.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

import yaml
from pydantic import BaseModel, SecretStr, ValidationError

from monitor.config.base import ConfigError
from monitor.config.schema import Config

M = TypeVar("M", bound=BaseModel)

_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")

Path_ = tuple[str | int, ...]


def _format_path(path: Path_) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else part)
    return out or "(top level)"


# Bounds on what a config document may be: aliases let a 1 KB file expand to
# gigabytes ("billion laughs") or refer to themselves, and deep nesting runs the
# parser out of stack. A real config is a few KB, a few hundred values, 8 deep.
MAX_CONFIG_BYTES = 1_000_000
MAX_CONFIG_VALUES = 100_000
MAX_CONFIG_DEPTH = 32


class _Located:
    """Values built from a YAML node tree, with the line of every key path."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.lines: dict[Path_, int] = {}
        self.values = 0

    def build(self, node: yaml.Node, path: Path_, loader: yaml.SafeLoader) -> Any:
        self.lines.setdefault(path, node.start_mark.line + 1)
        self.values += 1
        if self.values > MAX_CONFIG_VALUES:
            raise self.error(path, f"the document expands to more than {MAX_CONFIG_VALUES:,} "
                             "values (YAML aliases?)", node)
        if len(path) > MAX_CONFIG_DEPTH:
            raise self.error(path[:4], f"nested deeper than {MAX_CONFIG_DEPTH} levels "
                             "(a recursive YAML alias?)", node)
        if isinstance(node, yaml.MappingNode):
            out: dict[Any, Any] = {}
            for key_node, value_node in node.value:
                if not isinstance(key_node, yaml.ScalarNode):
                    raise self.error(path, "mapping keys must be plain values", key_node)
                key = loader.construct_object(key_node, deep=True)
                if not isinstance(key, str | int | float | bool):
                    raise self.error(path, "mapping keys must be plain values", key_node)
                child = (*path, str(key))
                if str(key) in out:
                    raise self.error(child, "duplicate key", key_node)
                self.lines[child] = key_node.start_mark.line + 1
                out[str(key)] = self.build(value_node, child, loader)
            return out
        if isinstance(node, yaml.SequenceNode):
            return [self.build(item, (*path, i), loader) for i, item in enumerate(node.value)]
        return loader.construct_object(node, deep=True)

    def line_of(self, path: Path_) -> int | None:
        while path:
            if path in self.lines:
                return self.lines[path]
            path = path[:-1]
        return self.lines.get(())

    def error(self, path: Path_, message: str, node: yaml.Node | None = None) -> ConfigError:
        line = node.start_mark.line + 1 if node is not None else self.line_of(path)
        where = f"{self.source}:{line}" if line else self.source
        return ConfigError(f"{where}: {_format_path(path)}: {message}")


def _credential(name: str, env: Mapping[str, str]) -> str | None:
    """A systemd credential (LoadCredential=NAME:…) of that name, if there is one."""
    directory = env.get("CREDENTIALS_DIRECTORY")
    if not directory:
        return None
    try:
        return (Path(directory) / name).read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError):
        return None


def _expand(value: Any, path: Path_, env: Mapping[str, str], loc: _Located) -> Any:
    if isinstance(value, dict):
        return {k: _expand(v, (*path, k), env, loc) for k, v in value.items()}
    if isinstance(value, list):
        return [_expand(v, (*path, i), env, loc) for i, v in enumerate(value)]
    if not isinstance(value, str):
        return value

    def sub(m: re.Match[str]) -> str:
        name, default = m.group(1), m.group(2)
        if env.get(name):
            return env[name]
        credential = _credential(name, env)
        if credential is not None:
            return credential
        if default is not None:
            return default
        raise loc.error(path, f"environment variable {name} is not set (use ${{{name}:-default}})")

    return _VAR.sub(sub, value)


def _data_path(data: Any, loc: tuple[int | str, ...]) -> Path_:
    """Pydantic's error location without the union tags it adds, so that it matches the YAML."""
    out: list[str | int] = []
    for i, part in enumerate(loc):
        in_dict = isinstance(data, dict) and part in data
        in_list = isinstance(data, list) and isinstance(part, int) and 0 <= part < len(data)
        if in_dict or in_list:
            data = data[part]
            out.append(part)
        elif i == len(loc) - 1 and isinstance(part, str):
            out.append(part)  # a required key that is missing
        # anything else is a union tag ('webhook', 'function-after[...]'): not in the file
    return tuple(out)


def parse_config(text: str, source: str = "<config>", env: Mapping[str, str] | None = None) -> Config:
    config, loc = parse_document(text, Config, source, env)
    seen: dict[str, int] = {}
    for i, stream in enumerate(config.streams):
        if stream.name in seen:
            raise loc.error(("streams", i, "name"), f"duplicate stream name {stream.name!r}")
        seen[stream.name] = i
    return config


def parse_document(text: str, model: type[M], source: str = "<config>",
                   env: Mapping[str, str] | None = None) -> tuple[M, _Located]:
    """Bounded YAML, ${VAR} expansion, then the model; errors name the key path and line."""
    env = os.environ if env is None else env
    if len(text) > MAX_CONFIG_BYTES:
        raise ConfigError(f"{source}: the file is larger than {MAX_CONFIG_BYTES:,} bytes")
    loc = _Located(source)
    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            raise ConfigError(f"{source}: the file is empty")
        data = loc.build(node, (), loader)
    except RecursionError:  # PyYAML composes nested collections recursively
        raise ConfigError(f"{source}: invalid YAML: nested too deeply") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        where = f"{source}:{mark.line + 1}" if mark is not None else source
        raise ConfigError(f"{where}: invalid YAML: {problem}") from None
    finally:
        loader.dispose()
    if not isinstance(data, dict):
        raise ConfigError(f"{source}:1: the top level must be a mapping of keys")
    data = _expand(data, (), env, loc)
    try:
        doc = model.model_validate(data)
    except ValidationError as e:
        errors = e.errors(include_input=False, include_url=False)
        first = errors[0]
        path = _data_path(data, first["loc"])
        message = first["msg"]
        if first["type"] == "extra_forbidden":
            message = "unknown key"
        more = f" (and {len(errors) - 1} more problem{'s' if len(errors) > 2 else ''})"
        raise loc.error(path, message + (more if len(errors) > 1 else "")) from None
    return doc, loc


def load_config(path: str | Path, env: Mapping[str, str] | None = None) -> Config:
    p = Path(path)
    try:
        with p.open("rb") as f:
            raw = f.read(MAX_CONFIG_BYTES + 1)  # a huge file is refused without reading it all
        text = raw.decode("utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{p}: no such file") from None
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"{p}: cannot read: {e.__class__.__name__}") from None
    config = parse_config(text, str(p), env)
    return _relative_to(config, p.parent)


def _relative_to(config: Config, base: Path) -> Config:
    """Relative file paths in stream URLs are taken from the config file's folder."""
    streams = []
    for s in config.streams:
        url = s.url.get_secret_value()
        if not urlsplit(url).scheme or len(urlsplit(url).scheme) == 1:
            path = Path(url).expanduser()
            if not path.is_absolute():
                s = s.model_copy(update={"url": SecretStr(str(base / path))})
        streams.append(s)
    return config.model_copy(update={"streams": streams})
