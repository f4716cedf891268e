#!/usr/bin/env bash
# Installs the system packages the tests need when they are missing: bubblewrap (the command
# sandbox) and Debian's Chromium (the e2e tests never download a browser of their own).
# With arguments, only those packages: `system-deps.sh bubblewrap` (what `make serve` wants).
set -euo pipefail
want=("${@:-bubblewrap chromium}")
want=(${want[*]})
need=()
for pkg in "${want[@]}"; do
  case "$pkg" in
    bubblewrap) command -v bwrap >/dev/null 2>&1 || need+=(bubblewrap) ;;
    chromium) [ -x /usr/bin/chromium ] || need+=(chromium) ;;
    *) echo "error: unknown package $pkg" >&2; exit 2 ;;
  esac
done
[ ${#need[@]} -eq 0 ] && exit 0
echo "installing system packages: ${need[*]}"
if [ "$(id -u)" -eq 0 ]; then SUDO=""; elif command -v sudo >/dev/null 2>&1; then SUDO="sudo"; else
  echo "error: need root (or sudo) to install: ${need[*]} — install them with your package manager" >&2
  exit 1
fi
if ! command -v apt-get >/dev/null 2>&1; then
  echo "error: no apt-get; install ${need[*]} with your package manager" >&2
  exit 1
fi
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need[@]}" >/dev/null
