"""What the commands share: argument types checked at parse time, output checks, progress."""

from __future__ import annotations

import argparse
import math
import os
import sys
from pathlib import Path

from ..errors import UNetError


class _Parser(argparse.ArgumentParser):
    """argparse, but a user's mistake is one line on stderr and exit status 2."""

    def error(self, message: str):  # noqa: D102
        self.exit(2, f"napari-unet: error: {message}\n")


def _whole_number(text: str, at_least: int) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < at_least:
        bound = "0 or more" if at_least == 0 else f"at least {at_least}"
        raise argparse.ArgumentTypeError(f"must be {bound}, got {value}")
    return value


def _non_negative_int(text: str) -> int:
    return _whole_number(text, 0)


# Smallest --block-size: a block must be much larger than the margin around it
# (objects are completed there), or an image becomes thousands of tiny blocks.
MIN_BLOCK_SIZE = 256


def _block_size(text: str) -> int:
    value = _positive_int(text)
    if value < MIN_BLOCK_SIZE:
        raise argparse.ArgumentTypeError(f"must be at least {MIN_BLOCK_SIZE} pixels, got {value}")
    return value


def _positive_int(text: str) -> int:
    return _whole_number(text, 1)


DEVICE_HELP = "auto (CUDA, then Apple MPS, then CPU), cuda, cuda:N, mps or cpu (default: auto)"


def _device(text: str) -> str:
    """A device name that exists on this machine (checked before any work)."""
    from ..devices import resolve_device

    try:
        resolve_device(text)
    except UNetError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return text


def _finite_float(text: str) -> float:
    """``text`` as a finite number, or NaN for a number that is not (refused by the callers)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    return value if math.isfinite(value) else math.nan


def _channels(text: str) -> tuple[int, ...]:
    """argparse type of --channels: 'C' or 'C,N', channel indices from 0."""
    parts = text.split(",")
    if not 1 <= len(parts) <= 2 or not all(p.strip().isdigit() for p in parts):
        raise argparse.ArgumentTypeError(
            f"expected CELLS or CELLS,NUCLEI channel indices (e.g. 0 or 0,1), got {text!r}"
        )
    return tuple(int(p) for p in parts)


def _positive_float(text: str) -> float:
    value = _finite_float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be a positive number, got {text}")
    return value


def _non_negative_float(text: str) -> float:
    value = _finite_float(text)
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"must be 0 or a positive number, got {text}")
    return value


def _in_range(option):
    """argparse type of a setting declared as a ThresholdOption: a number in its range."""

    def parse(text: str) -> float:
        value = _finite_float(text)
        try:
            option.check(value)
        except UNetError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None
        return value

    return parse


def _iou_threshold(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"IoU thresholds are numbers, got {text!r}") from None
    if not 0 < value <= 1:
        raise argparse.ArgumentTypeError(f"IoU thresholds lie in (0, 1], got {text}")
    return value


def _nearest_existing(path: Path) -> Path:
    path = path.absolute()
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def check_writable_file(path: str | Path, what: str, overwrite: bool = True) -> Path:
    """Raise UNetError now, before any work, when ``path`` cannot be written as a file."""
    path = Path(path)
    if path.is_dir():
        raise UNetError(f"{what} {path} is a folder; give a file name")
    if path.exists() and not overwrite:
        raise UNetError(f"{what} {path} exists; choose another name or pass --overwrite")
    folder = _nearest_existing(path.parent)
    if not folder.is_dir() or not os.access(folder, os.W_OK | os.X_OK):
        raise UNetError(f"cannot write {what} {path}: {folder} is not a writable folder")
    return path


def check_output_file(path: str | Path, suffix: str, overwrite: bool) -> Path:
    """``--out`` as a file with ``suffix`` that can be written (one line, before any work)."""
    path = Path(path)
    if path.suffix != suffix:
        raise UNetError(f"--out must end in {suffix}, got {path.name}")
    return check_writable_file(path, "--out", overwrite=overwrite)


def check_writable_folder(path: str | Path, what: str) -> Path:
    """Raise UNetError now when ``path`` cannot be (or become) a writable folder."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise UNetError(f"{what} {path} is a file; give a folder")
    folder = _nearest_existing(path)
    if not os.access(folder, os.W_OK | os.X_OK):
        raise UNetError(f"cannot write into {what} {path}: {folder} is not writable")
    return path


def _progress_bar(total: int | None, desc: str, disable: bool = False):
    from tqdm import tqdm

    return tqdm(
        total=total, desc=desc, unit="step", dynamic_ncols=True, disable=disable, file=sys.stderr
    )


def _model_line(source) -> str:
    """'model 'default': finds nuclei ~21 px across' (what the model was trained to find)."""
    from ..models.modelfile import get_model, model_display_name
    from ..segmenting.notes import what_model_knows

    model = get_model(source)
    return f"model {model_display_name(model)!r}: finds {what_model_knows(model)}"


def _given_thresholds(args: argparse.Namespace) -> dict[str, float]:
    """The post-processing flags given, checked against their ranges before any work."""
    from ..labels.instances import THRESHOLD_OPTIONS, InstanceParams, with_thresholds

    given = {
        o.field: getattr(args, o.field)
        for o in THRESHOLD_OPTIONS
        if getattr(args, o.field, None) is not None
    }
    with_thresholds(InstanceParams(), **given)  # a UNetError names the flag and its range
    return given


def _add_threshold_options(p: argparse.ArgumentParser) -> None:
    """One flag per post-processing setting, from the one declaration (instances.THRESHOLD_OPTIONS)."""
    from ..labels.instances import THRESHOLD_OPTIONS

    group = p.add_argument_group(
        "post-processing (default: the model's own; `napari-unet info MODEL` shows them)"
    )
    for option in THRESHOLD_OPTIONS:
        group.add_argument(
            option.flag,
            type=int if option.field == "min_size" else float,
            default=None,
            metavar="N" if option.field == "min_size" else "X",
            help=f"{option.help} [{option.low:g}-{option.high:g}] (default: the model's)",
        )
