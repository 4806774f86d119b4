"""What every section of the config is built on: strict models, names, URLs, the one error."""

from __future__ import annotations

from typing import Annotated
from urllib.parse import urlsplit

from pydantic import AfterValidator, BaseModel, ConfigDict, Field


class ConfigError(Exception):
    """A config problem, already phrased as one line for the user."""


class Model(BaseModel):
    """A config section: unknown keys are errors, and it does not change once loaded."""

    model_config = ConfigDict(extra="forbid", frozen=True)


# Stream and sink names become metric labels and log fields: keep them plain.
Name = Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")]


def http_url(url: str) -> None:
    """Refuses anything but an http:// or https:// URL with a host."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError("must be an http:// or https:// URL")


def _base_url(url: str) -> str:
    http_url(url)
    return url.rstrip("/")


# An http(s) URL, without its trailing slash.
BaseUrl = Annotated[str, AfterValidator(_base_url)]
