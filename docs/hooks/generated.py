"""MkDocs hook: pages whose content comes from the code and the data, never copied by hand.

* ``<!-- cli-reference -->``: every ``napari-unet`` command's ``--help``, from argparse.
* ``<!-- include: PATH -->``: a file of the repository (the CHANGELOG).
* ``<!-- results: PATH -->``: a benchmark's JSON lines as a table, with its path.
"""

from __future__ import annotations

import json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _cli_reference() -> str:
    from napari_unet.cli import build_parser

    parser = build_parser()
    parts = ["```text", parser.format_help().rstrip(), "```"]
    for action in parser._subparsers._group_actions:  # argparse keeps subcommands here
        for name, sub in action.choices.items():
            parts += [
                f"## napari-unet {name}",
                "",
                "```text",
                sub.format_help().rstrip(),
                "```",
                "",
            ]
    return "\n".join(parts)


def _results_table(path: str) -> str:
    rows = [json.loads(line) for line in (ROOT / path).read_text().splitlines() if line.strip()]
    runs = [r for r in rows if "ap50" in r]
    machine = next((r["cpu"] for r in rows if "cpu" in r), "not recorded")
    keys = [
        k
        for k in (
            "shift",
            "model",
            "images",
            "minutes",
            "scored_on",
            "steps",
            "ap50",
            "ap70",
            "seg",
            "objects_per_image",
        )
        if any(k in r for r in runs)
    ]
    lines = ["| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
    lines += ["| " + " | ".join(str(r.get(k, "")) for k in keys) + " |" for r in runs]
    return "\n".join(lines) + f"\n\n(`{path}`; CPU: {machine})\n"


def on_page_markdown(markdown: str, page, config, files) -> str:
    """Replace the markers of a page with what they stand for."""
    if "<!-- cli-reference -->" in markdown:
        markdown = markdown.replace("<!-- cli-reference -->", _cli_reference())
    out = []
    for line in markdown.splitlines():
        stripped = line.strip()
        if stripped.startswith("<!-- include: ") and stripped.endswith(" -->"):
            text = (ROOT / stripped[len("<!-- include: ") : -4]).read_text()
            out.append(text.replace("](docs/", "]("))  # its links, as seen from docs/
        elif stripped.startswith("<!-- results: ") and stripped.endswith(" -->"):
            out.append(_results_table(stripped[len("<!-- results: ") : -4]))
        else:
            out.append(line)
    return "\n".join(out)
