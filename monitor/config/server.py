"""The daemon's HTTP side (``server``: listen address, users, proxies), the console and logging."""

from __future__ import annotations

from ipaddress import ip_network
from typing import Literal
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, field_validator

from monitor.config.base import Model, Name
from monitor.passwords import parse_hash


class UserConfig(Model):
    name: Name
    password_hash: SecretStr  # from `vlm-monitor hash-password`

    @field_validator("password_hash")
    @classmethod
    def _ours(cls, v: SecretStr) -> SecretStr:
        parse_hash(v.get_secret_value())
        return v


class ServerConfig(Model):
    listen: str = "127.0.0.1:9108"
    # Where people reach the console (behind a TLS proxy: https://...). With https, its
    # session cookie is sent only over TLS.
    public_url: str | None = None
    # Reverse proxies (addresses or networks) whose X-Forwarded-For names the client: the
    # login throttle then counts each client, not the proxy that all of them share.
    trusted_proxies: list[str] = Field(default_factory=list, max_length=64)

    @field_validator("trusted_proxies")
    @classmethod
    def _networks(cls, v: list[str]) -> list[str]:
        for text in v:
            try:
                ip_network(text, strict=False)
            except ValueError:
                raise ValueError(f"{text!r} is not an IP address or network, e.g. 10.0.0.0/8") from None
        return v
    # Who may use the console and its API. Required when `listen` is not a loopback address.
    users: list[UserConfig] = Field(default_factory=list)

    @field_validator("users")
    @classmethod
    def _unique_users(cls, v: list[UserConfig]) -> list[UserConfig]:
        names = [u.name for u in v]
        if len(set(names)) != len(names):
            raise ValueError("user names must be unique")
        return v

    @field_validator("public_url")
    @classmethod
    def _public_url(cls, v: str | None) -> str | None:
        if v is None:
            return v
        parts = urlsplit(v)
        if parts.scheme not in ("http", "https") or not parts.hostname or parts.query or parts.fragment:
            raise ValueError("must be an http(s) URL with a host and no query, e.g. https://cameras.example.org")
        if parts.username or parts.password:
            raise ValueError("must not hold credentials")
        return v.rstrip("/")

    @field_validator("listen")
    @classmethod
    def _host_port(cls, v: str) -> str:
        host, sep, port = v.rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
            raise ValueError("must be HOST:PORT, e.g. 127.0.0.1:9108")
        return v

    @property
    def host(self) -> str:
        return self.listen.rpartition(":")[0].strip("[]")

    @property
    def port(self) -> int:
        return int(self.listen.rpartition(":")[2])


class ConsoleConfig(Model):
    """The web console (served on server.listen) and its scans of uploaded recordings."""

    enabled: bool = True
    recent_samples: int = Field(300, ge=10, le=5000)  # per camera, in memory, for "why no alert?"
    upload_max_mb: float = Field(2048.0, gt=0)
    # An upload's frames may be at most this big (a small file can hold huge frames that take
    # gigabytes to decode); refused with 400 before any frame is decoded.
    max_upload_pixels: int = Field(4096 * 2160, ge=64 * 64, le=7680 * 4320)
    scans_keep: int = Field(20, ge=1, le=1000)  # finished scans kept in the state directory
    scans_max_total_mb: float = Field(1024.0, gt=0)  # their results' thumbnails, all together
    # Model slots a scan may hold at once; it takes them only when no camera is waiting.
    scan_concurrency: int = Field(2, ge=1, le=64)


class LoggingConfig(Model):
    level: Literal["debug", "info", "warning", "error"] = "info"
    format: Literal["auto", "json", "console"] = "auto"
