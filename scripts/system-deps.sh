#!/usr/bin/env bash
# System packages the test suite needs, from Debian's archive:
#   postgresql          the PostgreSQL experience-store tests start a real server (initdb, pg_ctl)
#   chromium            the demo's browser test opens the MLflow UI and the report headless
# Installed only when missing, and only where apt-get can run as root; otherwise say what to install.
set -euo pipefail
missing=()
if ! command -v initdb >/dev/null 2>&1 && ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
  missing+=(postgresql)
fi
if ! command -v chromium >/dev/null 2>&1; then
  missing+=(chromium)
fi
[ ${#missing[@]} -eq 0 ] && exit 0
if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
  echo "installing ${missing[*]} (apt-get)"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
else
  echo "the tests need these Debian packages: ${missing[*]} (sudo apt-get install ${missing[*]})" >&2
fi
