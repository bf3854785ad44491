#!/usr/bin/env bash
# Installs Debian's headless-capable Chromium (for the browser tests) if it is missing; safe to rerun.
#
#   bash scripts/chromium.sh          installs /usr/bin/chromium with apt-get when absent, prints its path
#
# Playwright drives this browser through `executable_path`; never run `playwright install` (it downloads
# a browser build, which this project's machines cannot fetch).
set -euo pipefail

BROWSER=/usr/bin/chromium

log() { echo "chromium.sh: $*" >&2; }

if [[ -x $BROWSER ]]; then
    echo "$BROWSER"
    exit 0
fi

if [[ $(id -u) -eq 0 ]]; then
    SUDO=()
elif command -v sudo >/dev/null 2>&1; then
    SUDO=(sudo)
else
    log "$BROWSER is missing and installing it needs root (apt-get install -y chromium)"
    exit 1
fi

log "installing chromium with apt-get (once)"
export DEBIAN_FRONTEND=noninteractive
"${SUDO[@]}" apt-get update -qq
"${SUDO[@]}" apt-get install -y -qq --no-install-recommends chromium fonts-dejavu-core >/dev/null
[[ -x $BROWSER ]] || { log "apt-get finished but $BROWSER is still missing"; exit 1; }
echo "$BROWSER"
