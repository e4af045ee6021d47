"""Headless segmentation at scale: many files, images bigger than memory, dask clusters.

* :func:`iter_segment_files` segments every input file into
  ``<out>/<stem>_labels.tif`` (or an NGFF label image for zarr inputs),
  skipping finished outputs (resumable), writing atomically, never touching
  inputs, and carrying on past a failing file. With a dask ``Client`` (or
  ``workers=N`` for a LocalCluster) files are segmented on the cluster; the
  model weights are sent to each worker once.
* Images with a side above ``block_size`` go block by block
  (:mod:`napari_unet.segmenting.blockwise`).
"""

from __future__ import annotations

import glob
import os
import time
import traceback
from collections.abc import Generator, Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from ..errors import UNetError
from ..heap import reusing_freed_memory
from ..images.io import READABLE_SUFFIXES, image_stem, output_owner
from ..progress import Progress, Stage, run_to_end
from .blockwise import iter_segment_large
from .options import BatchOptions

LABEL_SUFFIX = "_labels"
INPUT_SUFFIXES = READABLE_SUFFIXES  # io's registry: what read_image reads


@dataclass
class BatchReport:
    """What a batch run did: files segmented, skipped, failed, and notes about the inputs."""

    done: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    notes: dict[str, list[str]] = field(default_factory=dict)
    seconds: float = 0.0

    def summary(self) -> str:
        """A few lines for the terminal: counts, then each failure and note."""
        lines = [
            f"{len(self.done)} segmented, {len(self.skipped)} skipped (done by an earlier run), "
            f"{len(self.failed)} failed in {self.seconds:.1f}s"
        ]
        for name, notes in self.notes.items():
            lines.extend(f"  {Path(name).name}: {note}" for note in notes)
        for name, why in self.failed.items():
            lines.append(f"  FAILED {name}: {why}")
        return "\n".join(lines)

    def to_dict(self) -> dict:
        """The report as a JSON-ready dict."""
        return asdict(self)


# --------------------------------------------------------------------------
# Inputs and outputs
# --------------------------------------------------------------------------


def is_zarr_path(path: Path) -> bool:
    """True when ``path`` is a zarr store (a folder with zarr metadata or a .zarr name)."""
    from ..images.io import is_zarr

    return is_zarr(path)


def expand_inputs(inputs: Iterable[str | Path], ignored: list[Path] | None = None) -> list[Path]:
    """Files, folders (their images, not recursive) and globs; zarr folders count as one image."""
    found: list[Path] = []
    for item in inputs:
        item = str(item)
        matches = (
            [Path(m) for m in sorted(glob.glob(item))]
            if any(c in item for c in "*?[")
            else [Path(item)]
        )
        if not matches:
            raise UNetError(f"no file matches {item}")
        for path in matches:
            if not path.exists():
                raise UNetError(f"{path} does not exist")
            if path.is_dir() and not is_zarr_path(path):
                for child in sorted(path.iterdir()):
                    if child.name.startswith("."):
                        continue
                    if is_zarr_path(child) or child.suffix.lower() in INPUT_SUFFIXES:
                        if _stem(child).endswith(LABEL_SUFFIX):
                            continue
                        if _readable_kind(child):
                            found.append(child)
                        elif ignored is not None:
                            ignored.append(child)
            elif _readable_kind(path):
                found.append(path)
            else:
                raise UNetError(f"{path} is not a regular file (a pipe or device?); not reading it")
    # Absolute paths, not resolved ones: a link keeps the name the user gave it,
    # and two links to one file are two inputs with their own outputs.
    unique = list(dict.fromkeys(Path(os.path.abspath(p)) for p in found))
    if not unique:
        raise UNetError("no input images found (TIFF, PNG, JPEG or zarr)")
    return unique


def _readable_kind(path: Path) -> bool:
    """A regular file or a folder (zarr); never a pipe, socket or device, which could hang a read."""
    import stat

    try:
        mode = path.stat().st_mode
    except OSError:
        return False
    return stat.S_ISREG(mode) or stat.S_ISDIR(mode)


def _stem(path: Path) -> str:
    return image_stem(path)


def target_path(path: Path, out_dir: Path | None, options: BatchOptions) -> Path:
    """Where the labels of ``path`` go: ``out_dir``, or the OME-Zarr image's own labels group."""
    if options.into_input:
        from ..images.ngff_labels import DEFAULT_LABELS_NAME

        return path / "labels" / DEFAULT_LABELS_NAME
    return output_path(path, out_dir)


def check_into_input(files: list[Path], options: BatchOptions) -> None:
    """Before any work: writing into the inputs needs OME-Zarr images and no side outputs.

    Raises
    ------
    UNetError
        Naming the first input that is not an OME-Zarr image, or the side
        output that has nowhere to go.
    """
    from ..images.ngff_labels import DEFAULT_LABELS_NAME, check_writable_into, read_ngff_image

    if options.save_probabilities or options.overlay:
        raise UNetError("--into-input writes only labels: leave out --probabilities and --overlay")
    for f in files:
        if not is_zarr_path(f):
            raise UNetError(f"--into-input writes into OME-Zarr images; {f} is not one (use --out)")
        read_ngff_image(f)
        check_writable_into(f, DEFAULT_LABELS_NAME)


def side_output_paths(out_path: Path) -> tuple[Path, Path]:
    """Where ``--probabilities`` and ``--overlay`` go, beside the labels ``out_path``."""
    stem = out_path.name.split(LABEL_SUFFIX)[0]
    return (
        out_path.with_name(stem + "_probabilities.tif"),
        out_path.with_name(stem + "_overlay.png"),
    )


def missing_side_outputs(target: Path, options: BatchOptions) -> list[str]:
    """The side outputs asked for that a finished input lacks (asked for after its run)."""
    probabilities, overlay = side_output_paths(target)
    missing = []
    if options.save_probabilities and output_owner(probabilities) != "napari-unet":
        missing.append("probabilities")
    if options.overlay and not overlay.exists() and _labels_ndim(target) == 2:
        missing.append("overlay")
    return missing


def _labels_ndim(target: Path) -> int:
    """Dimensions of finished labels (an overlay is drawn for 2-D labels only)."""
    import tifffile

    if target.name.endswith(".zarr"):
        from ..images.ngff_labels import read_ngff_image

        return len(read_ngff_image(target).shapes[0])
    with tifffile.TiffFile(target) as tif:
        return tif.series[0].ndim


def output_path(path: Path, out_dir: Path) -> Path:
    """Where the labels of ``path`` go in ``out_dir``: ``<stem>_labels.tif`` or ``.ome.zarr``."""
    if is_zarr_path(path):
        return out_dir / f"{_stem(path)}{LABEL_SUFFIX}.ome.zarr"
    return out_dir / f"{_stem(path)}{LABEL_SUFFIX}.tif"


def check_output_folder(inputs: list[Path], out_dir: Path, allow_input_folder: bool) -> None:
    """Check, before any work, that the outputs can be written without clashes.

    Raises
    ------
    UNetError
        When ``out_dir`` holds inputs (unless ``allow_input_folder``) or two
        inputs would write the same output name.
    """
    out = out_dir.resolve()
    folders = {p.parent.resolve() for p in inputs}
    if out in folders and not allow_input_folder:
        raise UNetError(
            f"the output folder {out_dir} holds input images; choose another --out "
            "(or pass --allow-input-folder)"
        )
    stems: dict[str, Path] = {}
    for p in inputs:
        target = output_path(p, out).name
        if target in stems:
            raise UNetError(
                f"{p} and {stems[target]} would both write {target}; segment them into different folders"
            )
        stems[target] = p


# --------------------------------------------------------------------------
# One file
# --------------------------------------------------------------------------


def segment_one_file(
    path: str, out_path: str, options: BatchOptions, blob: bytes, model_name: str = "model"
) -> dict:
    """Segment one file into ``out_path`` (runs in-process or on a dask worker)."""
    return run_to_end(iter_segment_one_file(path, out_path, options, blob, model_name))


def iter_segment_one_file(
    path: str, out_path: str, options: BatchOptions, blob: bytes, model_name: str = "model"
) -> Generator[Progress, None, dict]:
    """Generator form of :func:`segment_one_file`: an image bigger than memory reports each block.

    Its ``Stage.BLOCKS`` events carry the ``file`` and ``eta_s`` (seconds left,
    from the blocks done so far) besides the block phase.
    """
    from ..images.io import read_image
    from ..models.modelfile import cached_model_from_bytes

    path, out_path = Path(path), Path(out_path)
    model = cached_model_from_bytes(blob, model_name)
    image = read_image(path, axes=options.axes, lazy=True)
    axes = image.axes
    ny, nx = image.shape[axes.index("Y")], image.shape[axes.index("X")]
    large = max(ny, nx) > options.block_size
    t0 = time.perf_counter()
    if large and options.channels is not None:
        raise UNetError(
            f"{path.name}: --channels is not supported block by block (images over "
            f"{options.block_size} px); raise --block-size or give the cell channel alone"
        )
    if large:
        blocks = iter_segment_large(
            image.data,
            out_path,
            model,
            axes=axes,
            options=options,
            pixel_size=image.pixel_size,
            unit=image.unit,
            into_image=path if options.into_input else None,
        )
        while True:
            try:
                event = next(blocks)
            except StopIteration as finished:
                notes = finished.value["notes"]
                break
            elapsed = time.perf_counter() - t0
            eta = elapsed / event.step * (event.total - event.step) if event.step else None
            yield Progress(
                Stage.BLOCKS,
                event.step,
                event.total,
                {**event.info, "file": str(path), "eta_s": eta},
            )
    else:
        # Planes are read one at a time from the (lazy) file: a stack's memory is its labels'.
        notes = _segment_in_memory(image, out_path, model, options)
    return {
        "file": str(path),
        "output": str(out_path),
        "seconds": time.perf_counter() - t0,
        "blocks": large,
        "notes": notes,
    }


def _overlay_plane(data, axes: str, channels) -> np.ndarray:
    """The image an overlay is drawn on: the cell channel of a multi-channel image."""
    if channels is not None and "C" in axes:
        return np.take(np.asarray(data), channels[0], axis=axes.index("C"))
    return np.squeeze(np.asarray(data))


def _segment_in_memory(image, out_path: Path, model, options: BatchOptions) -> list[str]:
    """Segment an image held in memory (or read plane by plane) and write its outputs.

    Returns the notes on how it was read. The outputs keep the image's pixel size.
    """
    data, axes, source = image.data, image.axes, image.path
    spacing = {"pixel_size": image.pixel_size, "unit": image.unit}
    from ..images.io import overlay_png, write_ngff_labels, write_png, write_tiff
    from ..images.planes import PlaneLayout, axes_with_channels
    from .notes import note_collector
    from .segmentation import iter_segment

    if options.channels is not None and options.axes is None:
        axes = axes_with_channels(data.shape, axes)
    notes: list[str] = []
    collect = note_collector(notes)
    kwargs = {**options.segment_kwargs(model), "axes": axes}
    result = run_to_end(
        iter_segment(data, model, return_probabilities=options.save_probabilities, **kwargs),
        collect,
    )
    labels, probs = result if options.save_probabilities else (result, None)
    out_axes = PlaneLayout(axes).output_axes
    # Side outputs first, the labels last: the labels are what marks an input done,
    # so a run killed in between leaves it to be redone, side outputs and all.
    probabilities, overlay = side_output_paths(out_path)
    if probs is not None:
        write_tiff(probabilities, probs, axes="C" + out_axes, **spacing)
    if options.overlay and labels.ndim == 2:
        write_png(overlay, overlay_png(_overlay_plane(data, axes, options.channels), labels))
    if options.into_input:
        from ..images.ngff_labels import write_labels_into_image

        write_labels_into_image(source, labels, out_path.name)
    elif out_path.name.endswith(".zarr"):
        write_ngff_labels(out_path, labels, out_axes, source, **spacing)
    else:
        write_tiff(out_path, labels, axes=out_axes, **spacing)
    return notes


# --------------------------------------------------------------------------
# Many files
# --------------------------------------------------------------------------


@reusing_freed_memory
def iter_segment_files(
    inputs: Iterable[str | Path],
    out_dir: str | Path | None,
    options: BatchOptions | None = None,
    *,
    client=None,
    workers: int | None = None,
    scheduler: str | None = None,
) -> Generator[Progress, None, BatchReport]:
    """Segment many files; yields a Progress per finished file and returns a report.

    ``client`` (a ``dask.distributed.Client``), ``scheduler`` (its address) or
    ``workers`` (start a LocalCluster with that many workers) run files on a
    cluster; otherwise they run one after another in this process.
    """
    from ..models.modelfile import cached_model_from_bytes, model_display_name, model_to_bytes

    options = options or BatchOptions()
    options.check()
    ignored: list[Path] = []
    files = expand_inputs(inputs, ignored)
    blob = model_to_bytes(options.model)
    model_name = model_display_name(options.model)
    # Build the network once here: a file whose weights do not fit its config
    # is one clear error before any work, not one failure per image, and
    # before the output folder is made (a bad model leaves nothing behind).
    cached_model_from_bytes(blob, model_name)
    out_dir = _check_outputs(files, out_dir, options)
    report = BatchReport()
    for path in ignored:
        report.notes[str(path)] = ["not a regular file (a pipe or device?): skipped"]
    t0 = time.perf_counter()
    todo = _plan_outputs(files, out_dir, options, report)
    total = len(files)
    done = len(report.skipped) + len(report.failed)
    if report.skipped:
        yield Progress(Stage.BATCH, done, total, {"file": "", "skipped": len(report.skipped)})

    own_cluster = None
    if client is None and (workers or scheduler):
        client, own_cluster = _make_client(workers, scheduler)

    def finish(f: Path, result) -> Progress:
        nonlocal done
        if isinstance(result, Exception):  # one bad file must not stop the batch
            report.failed[str(f)] = _describe(result)
        else:
            report.done.append(str(f))
            if result["notes"]:
                report.notes[str(f)] = result["notes"]
        done += 1
        return Progress(Stage.BATCH, done, total, {"file": str(f), "failed": len(report.failed)})

    try:
        if client is None:
            yield from _run_here(todo, options, blob, model_name, finish)
        else:
            yield from _run_on_cluster(client, todo, options, blob, model_name, finish)
    finally:
        if own_cluster is not None:
            client.close()
            own_cluster.close()
    report.seconds = time.perf_counter() - t0
    return report


def _check_outputs(files: list[Path], out_dir, options: BatchOptions) -> Path | None:
    """Before any work: the output folder, or the OME-Zarr inputs the labels go into."""
    if options.into_input:
        check_into_input(files, options)
        return None
    if out_dir is None:
        raise UNetError("give an output folder (--out), or write into OME-Zarr inputs")
    out_dir = Path(out_dir)
    check_output_folder(files, out_dir, options.allow_input_folder)
    out_dir.mkdir(parents=True, exist_ok=True)
    return out_dir


def _plan_outputs(files, out_dir, options: BatchOptions, report: BatchReport) -> list:
    """(input, output) pairs to segment; skipped and refused files go into ``report``."""
    todo = []
    for f in files:
        target = target_path(f, out_dir, options)
        try:
            exists = target.exists()
        except OSError as exc:  # e.g. a name too long for this file system: this file only
            report.failed[str(f)] = f"cannot write {target.name}: {exc.strerror or exc}"
            continue
        owner = output_owner(target) if exists else None
        theirs = _others_side_outputs(target, options)
        if theirs and not options.replace_others:
            report.failed[str(f)] = (
                f"{theirs} exists and was not written by napari-unet (your own file?); "
                "not touching it: choose another --out, move it, or pass --replace-others"
            )
        elif owner == "other" and not options.replace_others:
            report.failed[str(f)] = (
                f"{target} exists and was not written by napari-unet (your own file?); "
                "not touching it: choose another --out, move it, or pass --replace-others"
            )
        elif (
            owner == "napari-unet"
            and not options.overwrite
            and (reason := _not_finished(f, target, options))
        ):
            report.notes[str(f)] = [f"{reason}: segmented again"]
            todo.append((f, target))
        elif owner == "napari-unet" and not options.overwrite:
            report.skipped.append(str(f))
        else:
            if owner == "damaged":
                report.notes[str(f)] = [f"{target.name} was incomplete: segmented again"]
            todo.append((f, target))
    return todo


def _others_side_outputs(target: Path, options: BatchOptions) -> Path | None:
    """A side output asked for whose file exists and is someone else's (never overwritten)."""
    if options.into_input:
        return None
    probabilities, overlay = side_output_paths(target)
    for asked, path in ((options.save_probabilities, probabilities), (options.overlay, overlay)):
        if asked and (path.exists() or path.is_symlink()) and output_owner(path) == "other":
            return path
    return None


def _not_finished(image: Path, target: Path, options: BatchOptions) -> str | None:
    """Why labels napari-unet wrote do not make an input done (None when they do).

    A run killed after the labels group was swapped in but before the image's
    labels list was updated leaves labels no viewer finds; side outputs asked
    for now may be missing from an earlier run.
    """
    if options.into_input:
        from ..images.ngff_labels import labels_listed

        if not labels_listed(image, target.name):
            return f"labels/{target.name} was not listed in the image's labels"
        return None
    missing = missing_side_outputs(target, options)
    return f"its {' and '.join(missing)} were missing" if missing else None


def _run_here(todo, options, blob, model_name, finish):
    """Files one after another in this process; a large image reports its blocks on the way."""
    for f, target in todo:
        try:
            result = yield from iter_segment_one_file(
                str(f), str(target), options, blob, model_name
            )
        except Exception as exc:
            result = exc
        yield finish(f, result)


def _run_on_cluster(client, todo, options, blob, model_name, finish):
    """Files on a dask cluster, reported as they finish."""
    from dask.distributed import as_completed

    blob_future = client.scatter(blob, broadcast=True)
    futures = {
        client.submit(
            segment_one_file, str(f), str(t), options, blob_future, model_name, pure=False
        ): f
        for f, t in todo
    }
    for future in as_completed(futures):
        try:
            result = future.result()
        except Exception as exc:
            result = exc
        yield finish(futures[future], result)


def segment_files(inputs, out_dir, options: BatchOptions | None = None, **kwargs) -> BatchReport:
    """Blocking form of :func:`iter_segment_files`."""

    return run_to_end(iter_segment_files(inputs, out_dir, options, **kwargs))


def _describe(exc: BaseException) -> str:
    if isinstance(exc, UNetError):
        return str(exc)
    last = traceback.format_exception_only(type(exc), exc)[-1].strip()
    return last


def _make_client(workers: int | None, scheduler: str | None):
    from dask.distributed import Client, LocalCluster

    if scheduler:
        try:
            return Client(scheduler, timeout="20s"), None
        except Exception as exc:
            raise UNetError(f"cannot connect to the dask scheduler at {scheduler}: {exc}") from exc
    n = max(1, int(workers))
    threads = max(1, (os.cpu_count() or 1) // n)
    cluster = LocalCluster(
        n_workers=n, threads_per_worker=threads, processes=True, dashboard_address=None
    )
    return Client(cluster), cluster
