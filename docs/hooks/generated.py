"""MkDocs hook: pages whose content comes from the code and the data, never copied by hand.

* ``<!-- cli-reference -->``: every ``napari-unet`` command's ``--help``, from argparse.
* ``<!-- include: PATH -->``: a file of the repository (the CHANGELOG).
* ``<!-- results: PATH -->``: a benchmark's JSON lines as a table, with its path.
* ``<!-- model-card: NAME -->``: a built-in model's facts, read from its own file
  (what it was trained on, how long, its scores, its settings).
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


def _model_card(name: str) -> str:
    from napari_unet.modelfile import read_model_config

    config = read_model_config(name)
    training = config.get("training", {})
    arch = config["architecture"]
    data = training.get("data", {})
    rows = [
        ("file", f"`src/napari_unet/models/{name}.safetensors`"),
        ("data", data.get("source", "not recorded")),
        (
            "trained on",
            data.get("train")
            or "; ".join(str(v) for k, v in data.items() if k not in ("source", "val"))
            or f"{training.get('n_train_images', '?')} images",
        ),
        ("validated on", data.get("val", "see 'trained on'")),
        ("image types", ", ".join(training.get("image_types", [])) or "not recorded"),
        (
            "network",
            f"U-Net, depth {arch['depth']}, {arch['base_channels']} base channels, "
            f"{arch['in_channels']} input channel(s), classes {', '.join(config['classes'])}",
        ),
        (
            "training",
            f"{training.get('steps', '?')} steps, {training.get('epochs_run', '?')} epochs, "
            f"{training.get('time_s', 0) / 60:.0f} min on {training.get('device', '?')}"
            + (", fine-tuned from another model" if training.get("started_from") else ""),
        ),
    ]
    for dataset, scores in training.get("validation_final", {}).items():
        rows.append(
            (
                f"scores on {dataset}/val",
                f"AP@0.5 {scores['ap50']:.3f}, AP@0.7 {scores['ap70']:.3f}, "
                f"mean AP@0.5:0.9 {scores['mean_ap_50_90']:.3f} ({scores['n_images']} images)",
            )
        )
    post = config["postprocessing"]
    rows.append(
        (
            "post-processing",
            ", ".join(f"{k} {v:g}" for k, v in post.items() if isinstance(v, int | float) and v),
        )
    )
    norm = config["normalization"]
    rows.append(
        (
            "normalization",
            f"percentiles {norm['low']:g}-{norm['high']:g}, image type {norm.get('image_type', 'auto')}",
        )
    )
    companions = config.get("companions", {})
    if companions:
        rows.append(
            ("hands over", ", ".join(f"{k} images to '{v}'" for k, v in companions.items()))
        )
    lines = ["| | |", "|---|---|"] + [f"| {k} | {v} |" for k, v in rows]
    return "\n".join(lines) + f"\n\n(read from the model file by `napari-unet info {name}`)\n"


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
        elif stripped.startswith("<!-- model-card: ") and stripped.endswith(" -->"):
            out.append(_model_card(stripped[len("<!-- model-card: ") : -4]))
        else:
            out.append(line)
    return "\n".join(out)
