"""vlm-monitor: watch cameras and recordings with a vision-language model."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("vlm-monitor")
except PackageNotFoundError:  # running from a source tree that was not installed
    __version__ = "0.0.0+unknown"
