"""bench/RESULTS.md: each benchmark script owns one `## ` section and replaces only that."""

from __future__ import annotations

import re
from pathlib import Path

RESULTS = Path(__file__).with_name("RESULTS.md")
HEADER = "# Benchmark results\n\nEach section is one run of `make bench` on the machine it names.\n"


def write_section(heading: str, text: str) -> None:
    """Put `text` in place of the section starting with `heading` (up to the next `## `),
    keeping every other section; a section not there yet is added at the end."""
    old = RESULTS.read_text() if RESULTS.exists() else HEADER
    sections = re.split(r"(?m)^(?=## )", old)
    body = text.rstrip() + "\n\n"
    for i, section in enumerate(sections):
        if section.startswith(heading):
            sections[i] = body
            break
    else:
        sections[-1] = sections[-1].rstrip() + "\n\n"
        sections.append(body)
    RESULTS.write_text("".join(sections).rstrip() + "\n")
