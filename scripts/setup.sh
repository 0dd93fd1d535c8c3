#!/usr/bin/env bash
# Set up a fresh machine for carrierfeeds: system tools (gpg, OpenSSH server and client), a virtualenv
# in .venv with the pinned dependencies (requirements.lock) and the package itself (editable).
# Safe to run again: it only does what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt=()
command -v gpg >/dev/null 2>&1 || need_apt+=(gnupg)
[ -x /usr/sbin/sshd ] || need_apt+=(openssh-server)
command -v sftp >/dev/null 2>&1 || need_apt+=(openssh-client)
command -v pdftoppm >/dev/null 2>&1 || need_apt+=(poppler-utils)
# The audit report test renders the report's SVG chart with librsvg and cairo through ctypes.
ldconfig -p 2>/dev/null | grep -q 'librsvg-2\.so' || need_apt+=(librsvg2-2)
ldconfig -p 2>/dev/null | grep -q 'libcairo\.so' || need_apt+=(libcairo2)
# The console's browser test drives Debian's chromium through its chromedriver (tests/console).
command -v chromedriver >/dev/null 2>&1 || need_apt+=(chromium chromium-driver)
if [ ${#need_apt[@]} -gt 0 ]; then
  if [ "$(id -u)" -eq 0 ]; then
    echo "setup: installing ${need_apt[*]} from Debian packages"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_apt[@]}" >/dev/null
  elif command -v sudo >/dev/null 2>&1; then
    sudo apt-get update -qq
    sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_apt[@]}" >/dev/null
  else
    echo "setup: please install ${need_apt[*]} (Debian/Ubuntu: apt-get install ${need_apt[*]})" >&2
    exit 2
  fi
fi

PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
if ! .venv/bin/python -m uv --version >/dev/null 2>&1; then
  .venv/bin/python -m pip install -q --disable-pip-version-check uv
fi
# The lock pins every transitive dependency (Airflow's tree is large); sync makes .venv match it.
stamp=.venv/.requirements.sha256
want=$(sha256sum requirements.lock pyproject.toml | sha256sum | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  # Bytecode compiled once here: where PYTHONDONTWRITEBYTECODE is set (as on CI) every process would
  # otherwise compile pandas, Airflow and Great Expectations from source (6.1 s against 4.2 s for GX).
  VIRTUAL_ENV=.venv .venv/bin/python -m uv pip sync -q --compile-bytecode requirements.lock
  VIRTUAL_ENV=.venv .venv/bin/python -m uv pip install -q --no-deps -e .
  echo "$want" > "$stamp"
fi
