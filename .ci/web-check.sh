#!/usr/bin/env bash
# CI: the committed web bundle (src/onward/web/) must be exactly what the source in frontend/ builds.
# Rebuilds with `make web` (npm ci, vue-tsc, vite, vitest) and fails if anything under
# src/onward/web/ changed, appeared or disappeared.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v npm >/dev/null 2>&1; then
  echo "web-check: npm is not installed (Node >= 20.19 is needed to build the web UI)" >&2
  exit 1
fi

make web

changes=$(git status --porcelain --untracked-files=all -- src/onward/web)
if [ -n "$changes" ]; then
  echo "web-check: FAILED — the committed web bundle differs from what frontend/ builds:" >&2
  echo "$changes" >&2
  git --no-pager diff --stat -- src/onward/web >&2 || true
  echo "Run 'make web' and commit src/onward/web/ together with the frontend/ change." >&2
  exit 1
fi
echo "web-check: the committed bundle in src/onward/web/ matches the source"
