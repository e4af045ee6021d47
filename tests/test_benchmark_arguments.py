"""The benchmarks of this release refuse a bad argument in one line, exit 2, before any work."""

import importlib.util
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"


def benchmark(name):
    spec = importlib.util.spec_from_file_location(name, BENCHMARKS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize(
    "name, argv, message",
    [
        ("click_cells", ["--skip", "-1"], "--skip"),
        ("click_cells", ["--seed-fractions", "0.4", "-0.1"], "--seed-fractions"),
        ("click_cells", ["--seed-fractions", "nan"], "--seed-fractions"),
        ("click_cells", ["--diameter", "0"], "--diameter"),
        ("two_channel_cells", ["--grow", "6", "-2"], "--grow"),
        ("two_channel_cells", ["--seed-fractions", "inf"], "--seed-fractions"),
        ("two_channel_cells", ["--limit", "0"], "--limit"),
    ],
)
def test_a_bad_benchmark_argument_is_one_line_and_exit_2(
    name, argv, message, capsys, tmp_path, monkeypatch
):
    module = benchmark(name)
    monkeypatch.setattr(module, "SHARED", tmp_path / "absent")  # no work could start anyway
    out = tmp_path / "out.json"
    assert module.main([*argv, "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1
    assert not out.exists()
