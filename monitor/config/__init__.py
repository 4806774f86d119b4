"""The YAML config: its schema (``schema``) and how a file becomes one (``loading``)."""

from monitor.config.loading import load_config, parse_config, parse_document
from monitor.config.schema import (
    AUTO_MAX_CONCURRENCY,
    AUTO_START_CONCURRENCY,
    DEFAULT_BASE_URL,
    DEFAULT_MAX_PIXELS,
    DEFAULT_MODEL,
    ClipsConfig,
    Config,
    ConfigError,
    ConsoleConfig,
    DetectionConfig,
    EndpointConfig,
    EventName,
    LoggingConfig,
    LogSinkConfig,
    MqttSinkConfig,
    PreprocessConfig,
    SceneChangeConfig,
    ServerConfig,
    SinkBase,
    SinkConfig,
    SnapshotsConfig,
    StreamConfig,
    StreamSettings,
    Target,
    UserConfig,
    VlmConfig,
    WebhookSinkConfig,
    ZoneConfig,
)

__all__ = [
    "AUTO_MAX_CONCURRENCY", "AUTO_START_CONCURRENCY",
    "DEFAULT_BASE_URL", "DEFAULT_MAX_PIXELS", "DEFAULT_MODEL",
    "ClipsConfig", "Config", "ConfigError", "ConsoleConfig",
    "DetectionConfig", "EndpointConfig", "EventName", "LogSinkConfig", "LoggingConfig", "MqttSinkConfig",
    "PreprocessConfig", "SceneChangeConfig", "ServerConfig", "SinkBase", "SinkConfig",
    "SnapshotsConfig", "StreamConfig", "StreamSettings", "Target", "UserConfig", "VlmConfig",
    "WebhookSinkConfig", "ZoneConfig", "load_config", "parse_config", "parse_document",
]
