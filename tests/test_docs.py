"""The front door's numbers are the data's: README results traced to their files."""

import json
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def readme_results() -> dict[str, str]:
    """The README's results table: first cell -> second cell."""
    text = (ROOT / "README.md").read_text()
    table = text.split("## Results", 1)[1].split("\n## ", 1)[0]
    rows = {}
    for line in table.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 2 and cells[0] not in ("images", "---"):
            rows[cells[0]] = cells[1]
    return rows


def jsonl_run(path: str, **match) -> dict:
    rows = [json.loads(x) for x in (ROOT / path).read_text().splitlines() if x.strip()]
    found = [r for r in rows if all(r.get(k) == v for k, v in match.items())]
    assert found, f"no run {match} in {path}"
    return found[0]


def numbers(text: str) -> list[str]:
    return re.findall(r"\d\.\d{3}", text)


def test_readme_nuclei_scores_are_the_model_files_own():
    from napari_unet.models.modelfile import read_model_config

    scores = read_model_config("default")["training"]["validation_final"]
    rows = readme_results()
    fluo = next(v for k, v in rows.items() if "dsb2018-fluo/val" in k)
    stained = next(v for k, v in rows.items() if "dsb2018-stained/val" in k)
    assert numbers(fluo)[0] == f"{scores['dsb2018-fluo']['ap50']:.3f}"
    assert numbers(stained)[0] == f"{scores['dsb2018-stained']['ap50']:.3f}"


@pytest.mark.parametrize(
    "row, path, images",
    [
        ("trained on 3 frames", "docs/results/cells/cells_val_recipe.jsonl", 3),
        ("all 63 frames", "docs/results/cells/cells_val_all63.jsonl", 63),
    ],
)
def test_readme_cell_scores_are_the_benchmarks_json(row, path, images):
    text = next(v for k, v in readme_results().items() if row in k)
    run = jsonl_run(path, model="fine_tuned", images=images)
    ap50, seg = numbers(text)[:2]
    assert (ap50, seg) == (f"{run['ap50']:.3f}", f"{run['seg']:.3f}")


PUBLISHED = {"0.7756"}  # the U-Net paper's DIC-HeLa SEG: a quotation, not ours


def test_the_results_page_holds_no_hand_copied_figure():
    # Its figures are rendered from JSON and the model files (docs/hooks); a
    # number typed into the page would drift from the data.
    text = (ROOT / "docs" / "results.md").read_text()
    prose = re.sub(r"<!--.*?-->|`[^`]*`", "", text)  # markers; commands and code
    figures = set(re.findall(r"\d+\.\d+", prose)) - PUBLISHED
    assert not figures, f"type no figures into docs/results.md: {sorted(figures)}"
    assert not re.search(r"@[A-Z0-9_]+@", text)


def test_every_file_the_results_page_renders_exists_and_has_its_machine():
    text = (ROOT / "docs" / "results.md").read_text()
    paths = re.findall(r"<!-- (?:results|benchmark): ([^ |]+)", text)
    assert paths
    for path in paths:
        data = (ROOT / path).read_text()
        assert '"cpu"' in data, f"{path} does not say which CPU it ran on"


def test_every_public_name_of_the_core_has_a_docstring():
    import importlib
    import inspect
    import pkgutil

    import napari_unet

    missing = []
    for info in pkgutil.iter_modules(napari_unet.__path__):
        if info.name.startswith("_"):
            continue
        module = importlib.import_module(f"napari_unet.{info.name}")
        if not (module.__doc__ or "").strip():
            missing.append(info.name)
        for name, obj in vars(module).items():
            if name.startswith("_") or getattr(obj, "__module__", None) != module.__name__:
                continue
            if (inspect.isclass(obj) or inspect.isfunction(obj)) and not (
                obj.__doc__ or ""
            ).strip():
                missing.append(f"{info.name}.{name}")
    assert missing == []
