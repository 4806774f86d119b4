"""The model servers (``vlm``) and what is sent to them (``preprocess``)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, SecretStr, field_validator, model_validator

from monitor import limits
from monitor.config.base import BaseUrl, Model, Name

DEFAULT_MODEL = "Qwen/Qwen2.5-VL-7B-Instruct"
DEFAULT_BASE_URL = "http://127.0.0.1:8000/v1"

# 644x364 (a 16:9 frame) = 299 image tokens for Qwen2.5-VL, against 2,691 for 1080p.
# Far or small targets may need more: 896x504 = 576 tokens.
DEFAULT_MAX_PIXELS = 644 * 364


class EndpointConfig(Model):
    """One model server. Unset model and api_key come from the vlm section."""

    name: Name  # its metric label (``endpoint``); never the URL
    base_url: BaseUrl
    model: str | None = Field(None, min_length=1)
    api_key: SecretStr | None = None
    # Requests in flight at most; "auto" finds what the server sustains (AIMD on latency).
    max_concurrency: int | Literal["auto"] = 8
    fallback: bool = False  # used only while every primary endpoint is down

    @field_validator("max_concurrency")
    @classmethod
    def _limit(cls, v: int | str) -> int | str:
        if isinstance(v, int) and not 1 <= v <= 256:
            raise ValueError("must be from 1 to 256, or auto")
        return v


class VlmConfig(Model):
    base_url: BaseUrl = DEFAULT_BASE_URL
    model: str = Field(DEFAULT_MODEL, min_length=1)
    api_key: SecretStr = SecretStr("EMPTY")
    max_concurrency: int = Field(8, ge=1, le=256)
    timeout_seconds: float = Field(30.0, gt=0, le=600)
    # A retried frame is a stale frame: keep the budget small.
    max_retries: int = Field(1, ge=0, le=5)
    max_tokens: int = Field(256, ge=16, le=4096)
    # Several model servers instead of base_url: each request goes to the one with the most
    # free capacity; fallbacks only while every primary is down.
    endpoints: list[EndpointConfig] | None = Field(None, min_length=1, max_length=64)

    @model_validator(mode="after")
    def _one_way(self) -> VlmConfig:
        if self.endpoints is None:
            return self
        if "base_url" in self.model_fields_set:
            raise ValueError("give either base_url or endpoints, not both")
        names = [e.name for e in self.endpoints]
        if len(set(names)) != len(names):
            raise ValueError("endpoint names must be unique")
        if all(e.fallback for e in self.endpoints):
            raise ValueError("at least one endpoint must not be a fallback")
        return self

    def resolved_endpoints(self) -> list[EndpointConfig]:
        """The endpoints with model and key filled in; a lone base_url is one named "default"."""
        if self.endpoints is None:
            return [EndpointConfig(name="default", base_url=self.base_url, model=self.model,
                                   api_key=self.api_key, max_concurrency=self.max_concurrency)]
        return [e.model_copy(update={"model": e.model or self.model,
                                     "api_key": e.api_key or self.api_key})
                for e in self.endpoints]

    @property
    def total_concurrency(self) -> int:
        """Requests in flight at most, all endpoints together ("auto" counted at its ceiling)."""
        return sum(e.max_concurrency if isinstance(e.max_concurrency, int) else limits.HIGHEST
                   for e in self.resolved_endpoints() if not e.fallback)


class PreprocessConfig(Model):
    clahe: bool = True
    clahe_clip_limit: float = Field(2.0, gt=0, le=40)
    clahe_tile_grid: int = Field(8, ge=1, le=64)
    max_pixels: int = Field(DEFAULT_MAX_PIXELS, ge=28 * 28 * 4, le=12_845_056)
    jpeg_quality: int = Field(85, ge=10, le=100)
