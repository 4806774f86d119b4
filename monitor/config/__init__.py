"""The YAML config: the whole file (``schema``), its sections (``model``, ``streams``, ``sinks``,
``server``), each stream's resolved settings (``settings``), and how a file becomes one
(``loading``)."""

from monitor.config.base import ConfigError
from monitor.config.loading import load_config, parse_config, parse_document
from monitor.config.model import (
    DEFAULT_BASE_URL,
    DEFAULT_MAX_PIXELS,
    DEFAULT_MODEL,
    EndpointConfig,
    PreprocessConfig,
    VlmConfig,
)
from monitor.config.schema import Config
from monitor.config.server import ConsoleConfig, LoggingConfig, ServerConfig, UserConfig
from monitor.config.settings import StreamSettings
from monitor.config.sinks import (
    EventName,
    LogSinkConfig,
    MqttSinkConfig,
    SinkBase,
    SinkConfig,
    SnapshotsConfig,
    WebhookSinkConfig,
)
from monitor.config.streams import (
    ClipsConfig,
    DetectionConfig,
    SceneChangeConfig,
    StreamConfig,
    Target,
    ZoneConfig,
)

__all__ = [

    "DEFAULT_BASE_URL", "DEFAULT_MAX_PIXELS", "DEFAULT_MODEL",
    "ClipsConfig", "Config", "ConfigError", "ConsoleConfig",
    "DetectionConfig", "EndpointConfig", "EventName", "LogSinkConfig", "LoggingConfig", "MqttSinkConfig",
    "PreprocessConfig", "SceneChangeConfig", "ServerConfig", "SinkBase", "SinkConfig",
    "SnapshotsConfig", "StreamConfig", "StreamSettings", "Target", "UserConfig", "VlmConfig",
    "WebhookSinkConfig", "ZoneConfig", "load_config", "parse_config", "parse_document",
]
