#!/usr/bin/env bash
# METEOR and the PTB tokenizer of pycocoevalcap run on Java. Install it where we can, else say how.
set -euo pipefail
if command -v java >/dev/null 2>&1 && java -version >/dev/null 2>&1; then
  exit 0
fi
if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
  echo "Java not found: installing default-jre-headless with apt-get (needed by METEOR)" >&2
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq default-jre-headless >/dev/null
  exit 0
fi
echo "error: Java is needed by METEOR; install a JRE (Debian/Ubuntu: sudo apt-get install default-jre-headless; macOS: brew install openjdk) and rerun" >&2
exit 1
