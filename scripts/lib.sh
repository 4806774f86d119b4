# Shared by scripts/run and scripts/test.

# Debian's python3 needs python3-venv for `python3 -m venv`; install it when we can.
ensure_python() {
  if ! python3 -c 'import sys; assert sys.version_info >= (3, 11)' 2>/dev/null; then
    echo "vlm-monitor needs Python 3.11 or newer as python3" >&2
    exit 2
  fi
  if ! python3 -c 'import ensurepip, venv' 2>/dev/null && [ "$(id -u)" = 0 ] \
      && command -v apt-get >/dev/null; then
    apt-get update -qq && apt-get install -y -qq python3-venv >/dev/null
  fi
}

# .venv with vlm-monitor installed (editable); "dev" adds the test tools.
ensure_venv() {
  local extra="${1:-}"
  ensure_python
  [ -x .venv/bin/python ] || python3 -m venv .venv
  local spec="."
  [ -n "$extra" ] && spec=".[$extra]"
  .venv/bin/python -m pip install --quiet --disable-pip-version-check -e "$spec"
}

# The tests use real parts from Debian's packages, installed when missing:
# GStreamer's RTSP server (run by the system Python), Prometheus and promtool,
# systemd-analyze for the unit file, mosquitto, an MQTT broker, chromium for the console's
# browser tests (driven by Playwright, which downloads no browser of its own), and ffprobe, which
# says what an evidence clip holds.
ensure_test_system_packages() {
  local check='import gi; gi.require_version("GstRtspServer", "1.0"); from gi.repository import GstRtspServer'
  if /usr/bin/python3 -c "$check" 2>/dev/null && command -v gst-inspect-1.0 >/dev/null \
      && gst-inspect-1.0 x264enc >/dev/null 2>&1 && command -v promtool >/dev/null \
      && command -v prometheus >/dev/null && command -v systemd-analyze >/dev/null \
      && command -v mosquitto >/dev/null && command -v chromium >/dev/null \
      && command -v ffprobe >/dev/null; then
    return
  fi
  if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null; then
    echo "the tests need Debian packages: run as root, or install: $TEST_DEBS" >&2
    exit 2
  fi
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $TEST_DEBS >/dev/null
}

TEST_DEBS="python3-gi gir1.2-gst-rtsp-server-1.0 gstreamer1.0-tools gstreamer1.0-plugins-base
  gstreamer1.0-plugins-good gstreamer1.0-plugins-bad gstreamer1.0-plugins-ugly gstreamer1.0-libav
  prometheus systemd mosquitto chromium ffmpeg"
