"""Write the HTTP API's OpenAPI schema to docs/openapi.json (a test keeps it current)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from onward.app import create_app
from onward.config import Settings

ROOT = Path(__file__).resolve().parents[1]


def schema() -> str:
    app = create_app(Settings(home=ROOT / ".unused-home"))
    return json.dumps(app.openapi(), indent=2, sort_keys=True) + "\n"


if __name__ == "__main__":
    target = ROOT / "docs" / "openapi.json"
    target.write_text(schema())
    print(f"wrote {target}", file=sys.stderr)
