"""vlm-monitor: watch cameras and recordings with a vision-language model."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("vlm-monitor")
except PackageNotFoundError:  # running from a source tree that was not installed
    __version__ = "0.0.0+unknown"

import os as _os

# OpenCV and its FFmpeg print their own warnings straight to stderr ("moov atom
# not found"); we report such failures ourselves, in one line. Must precede
# the first import of cv2.
_os.environ.setdefault("OPENCV_LOG_LEVEL", "ERROR")
_os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")
