"""Command-line interface: ``napari-unet segment | train | evaluate | tune | info | demo``.

A thin shell over the library: it parses arguments, drives the same
generators the napari widgets use with a terminal progress bar, and turns a
user's mistake (:class:`UNetError`) into one line on stderr and exit code 2.

One module per command (``segment``, ``train``; the smaller ones in
``tools``), each with its ``cmd_*`` function and the flags it declares;
``arguments`` holds what they share.
"""

from __future__ import annotations

import argparse
import sys

from ..errors import UNetError


def build_parser() -> argparse.ArgumentParser:
    """The command-line parser with one sub-command per job."""
    # Imported here, inside main's handling of Ctrl-C: they pull in scikit-image
    # and the rest, and a Ctrl-C while they load is then a stop, not a traceback.
    from .arguments import _Parser
    from .segment import _add_segment_command
    from .tools import (
        _add_demo_command,
        _add_evaluate_command,
        _add_export_command,
        _add_info_command,
        _add_tune_command,
    )
    from .train import _add_train_command

    parser = _Parser(prog="napari-unet", description="U-Net segmentation of cells and nuclei.")
    parser.add_argument(
        "--version", action="version", version=f"%(prog)s {__import__('napari_unet').__version__}"
    )
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    _add_segment_command(sub)
    _add_train_command(sub)
    _add_evaluate_command(sub)
    _add_tune_command(sub)
    _add_info_command(sub)
    _add_export_command(sub)
    _add_demo_command(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the command line; returns the exit status (2 for a user's mistake, one line on stderr)."""
    try:
        args = build_parser().parse_args(argv)
        return int(args.func(args) or 0)
    except UNetError as exc:
        print(f"napari-unet: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("napari-unet: interrupted", file=sys.stderr)
        return 130


__all__ = ["build_parser", "main"]
