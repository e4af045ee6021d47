"""MkDocs hook: pages whose content comes from the code and the data, never copied by hand.

* ``<!-- cli-reference -->``: every ``napari-unet`` command's ``--help``, from argparse.
* ``<!-- include: PATH -->``: a file of the repository (the CHANGELOG).
* ``<!-- results: PATH -->``: a benchmark's JSON lines as a table, with its path.
* ``<!-- model-card: NAME -->``: a built-in model's facts, read from its own file
  (what it was trained on, how long, its scores, its settings).
* ``<!-- model-scores -->``: every built-in model's recorded scores, one table.
* ``<!-- benchmark: PATH -->``: any benchmark's JSON (one object, or JSON lines),
  flattened to a table of its fields, with its path and the CPU it ran on;
  ``<!-- benchmark: PATH | a, b / c -->`` keeps only the fields starting so.
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
            "cell_diameter",
            "start_decay",
            "scored_on",
            "steps",
            "ap50",
            "ap70",
            "seg",
            "objects_per_image",
            "true_objects_per_image",
        )
        if any(k in r for r in runs)
    ]
    lines = ["| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
    lines += ["| " + " | ".join(str(r.get(k, "")) for k in keys) + " |" for r in runs]
    return "\n".join(lines) + f"\n\n(`{path}`; CPU: {machine})\n"


def _model_card(name: str) -> str:
    from napari_unet.models.modelfile import read_model_config

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


def _flat(value, prefix: str = "") -> dict:
    """A nested JSON object as {"a / b / c": leaf}; lists of numbers stay one cell."""
    if isinstance(value, dict):
        out = {}
        for key, item in value.items():
            out.update(_flat(item, f"{prefix} / {key}" if prefix else str(key)))
        return out
    return {prefix: value}


def _cell(value) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, list):
        return ", ".join(_cell(v) for v in value)
    return str(value).replace("|", "\\|")


def _benchmark_table(spec: str) -> str:
    """A benchmark's JSON as tables: one row per run when its runs share their fields."""
    path, _, wanted = (part.strip() for part in spec.partition("|"))
    prefixes = [w.strip() for w in wanted.split(",") if w.strip()]
    text = (ROOT / path).read_text()
    try:
        runs = [json.loads(text)]
    except json.JSONDecodeError:  # JSON lines: one object per run
        runs = [json.loads(line) for line in text.splitlines() if line.strip()]
    machine = next((str(r["cpu"]) for r in runs if isinstance(r, dict) and "cpu" in r), None)
    flat = [
        {
            k: v
            for k, v in _flat(r).items()
            if k != "cpu" and (not prefixes or any(k.startswith(p) for p in prefixes))
        }
        for r in runs
    ]
    keys = list(dict.fromkeys(k for row in flat for k in row))
    if len(flat) > 1 and len(keys) <= 10:
        lines = ["| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
        lines += ["| " + " | ".join(_cell(row.get(k, "")) for k in keys) + " |" for row in flat]
    else:
        lines = []
        for row in flat:
            lines += ["| field | value |", "|---|---|"]
            lines += [f"| {k} | {_cell(v)} |" for k, v in row.items()]
            lines.append("")
    where = f"`{path}`; CPU: {machine}" if machine else f"`{path}`"
    return "\n".join(lines).rstrip() + f"\n\n({where})\n"


def _model_scores() -> str:
    """Each built-in model's scores on the val splits, as recorded in its file."""
    from napari_unet.models.modelfile import BUILTIN_MODELS, read_model_config

    lines = [
        "| model | images | AP@0.5 | AP@0.7 | mean AP@0.5:0.9 | images scored |",
        "|---|---|---|---|---|---|",
    ]
    names = {file: name for name, file in reversed(BUILTIN_MODELS.items())}  # no aliases
    for name in names.values():
        training = read_model_config(name).get("training", {})
        for dataset, scores in training.get("validation_final", {}).items():
            lines.append(
                f"| `{name}` | `{dataset}/val` | {scores['ap50']:.3f} | {scores['ap70']:.3f} | "
                f"{scores['mean_ap_50_90']:.3f} | {scores['n_images']} |"
            )
    return "\n".join(lines) + "\n\n(read from the model files: `napari-unet info default`)\n"


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
        elif stripped.startswith("<!-- benchmark: ") and stripped.endswith(" -->"):
            out.append(_benchmark_table(stripped[len("<!-- benchmark: ") : -4]))
        elif stripped == "<!-- model-scores -->":
            out.append(_model_scores())
        else:
            out.append(line)
    return "\n".join(out)
