"""Small helpers that read a parsed TOML table strictly, so that every error names ``file: [table].key``."""

from __future__ import annotations

import sys
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, TypeVar, cast

from .errors import ConfigError, did_you_mean

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib  # type: ignore[import-not-found,unused-ignore]

T = TypeVar("T")


def read_toml(path: Path, what: str) -> dict[str, Any]:
    """Parse a TOML file; a missing or malformed file is a one-line ConfigError."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: {what} file not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read {what} file: {exc}") from None
    try:
        data: dict[str, Any] = tomllib.loads(text)
        return data
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None


class Table:
    """A view on one TOML table that remembers where it came from, for error messages."""

    def __init__(self, path: Path, name: str, data: Mapping[str, Any]) -> None:
        self.path = path
        self.name = name
        self.data = data

    def where(self, key: str) -> str:
        return f"{self.path}: [{self.name}].{key}" if self.name else f"{self.path}: {key}"

    def error(self, key: str, message: str) -> ConfigError:
        return ConfigError(f"{self.where(key)}: {message}")

    def check_keys(self, allowed: Iterable[str]) -> None:
        allowed = list(allowed)
        for key in self.data:
            if key not in allowed:
                raise self.error(key, f"unknown key{did_you_mean(key, allowed)}")

    def sub(self, key: str, *, required: bool = False) -> Table:
        value = self.data.get(key)
        if value is None:
            if required:
                raise self.error(key, "missing table")
            value = {}
        if not isinstance(value, dict):
            raise self.error(key, f"expected a table, got {type(value).__name__}")
        return Table(self.path, f"{self.name}.{key}" if self.name else key, value)

    def get(self, key: str, kind: type[T], default: T) -> T:
        value = self.data.get(key, default)
        return self._typed(key, value, kind)

    def require(self, key: str, kind: type[T]) -> T:
        if key not in self.data:
            raise self.error(key, "missing")
        return self._typed(key, self.data[key], kind)

    def optional(self, key: str, kind: type[T]) -> T | None:
        if key not in self.data:
            return None
        return self._typed(key, self.data[key], kind)

    def choice(self, key: str, choices: Iterable[str], default: str | None) -> str | None:
        choices = list(choices)
        value = self.data.get(key, default)
        if value is None:
            return None
        if not isinstance(value, str):
            raise self.error(key, f"expected one of {', '.join(choices)}, got {value!r}")
        if value not in choices:
            hint = did_you_mean(value, choices)
            raise self.error(key, f"expected one of {', '.join(choices)}, got {value!r}{hint}")
        return value

    def numbers(self, key: str, default: tuple[float, ...]) -> tuple[float, ...]:
        """A number or a list of numbers."""
        value = self.data.get(key, list(default))
        items = value if isinstance(value, list) else [value]
        out = []
        for item in items:
            if isinstance(item, bool) or not isinstance(item, int | float):
                raise self.error(key, f"expected a number or a list of numbers, got {value!r}")
            out.append(float(item))
        if not out:
            raise self.error(key, "expected at least one number")
        return tuple(out)

    def _typed(self, key: str, value: Any, kind: type[T]) -> T:
        ok = isinstance(value, kind) and not (kind is int and isinstance(value, bool))
        if kind is float and isinstance(value, int) and not isinstance(value, bool):
            return cast(T, float(value))  # an integer where a float is asked: TOML's 1 for 1.0
        if not ok:
            names = {str: "a string", int: "an integer", float: "a number", bool: "true or false"}
            expected = names.get(kind, kind.__name__)
            raise self.error(key, f"expected {expected}, got {value!r}")
        return cast(T, value)  # checked by isinstance above
