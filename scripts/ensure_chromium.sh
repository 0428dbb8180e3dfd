#!/usr/bin/env bash
# The HTML viewer's tests open its page in a real headless Chromium (driven by Playwright for Python).
# Install Debian's chromium where we can (root with apt-get), else say how.
set -euo pipefail
if [ -n "${ETSPIPE_CHROMIUM:-}" ] && [ -x "${ETSPIPE_CHROMIUM}" ]; then
  exit 0
fi
for name in chromium chromium-browser google-chrome google-chrome-stable; do
  if command -v "$name" >/dev/null 2>&1; then
    exit 0
  fi
done
debian=no
if [ -r /etc/os-release ] && grep -qE '^(ID|ID_LIKE)=.*debian' /etc/os-release && ! grep -q '^ID=ubuntu' /etc/os-release; then
  debian=yes  # Debian's chromium is a real package (Ubuntu's is a snap stub, which containers cannot run)
fi
if [ "$debian" = "yes" ] && [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
  echo "Chromium not found: installing Debian's chromium with apt-get (needed by the viewer's browser tests)" >&2
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
  exit 0
fi
echo "error: the viewer's browser tests need Chromium; install it (Debian: sudo apt-get install chromium;" \
     "Ubuntu: a chromium or google-chrome package; macOS: brew install --cask chromium) or set" \
     "ETSPIPE_CHROMIUM=/path/to/chrome, and rerun. Without it those tests are skipped (and fail when CI=true)." >&2
exit 1
