"""What the two drills' reports share: a JSON document and a self-contained HTML page, side by side."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def write_pair(directory: Path, stem: str, doc: dict[str, Any], page: str) -> tuple[Path, Path]:
    """A run's two reports: STEM.json (the document) and STEM.html (the page)."""
    directory.mkdir(parents=True, exist_ok=True)
    json_path, html_path = directory / f"{stem}.json", directory / f"{stem}.html"
    json_path.write_text(json.dumps(doc, indent=1))
    html_path.write_text(page)
    return json_path, html_path
