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
