"""Atomic writes that never follow a planted link, and the mark on napari-unet's outputs.

Its own module so that ``io`` and ``ngff_labels`` both import it (each
needed the other before).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from ..errors import UNetError


def _current_umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


# File names may have 255 bytes; the temporary name adds a pid, a random part
# and ".part" (about 30), so a long target name is shortened (and hashed, so two
# long names sharing a beginning still differ).
MAX_PART_NAME_BYTES = 180


def _part_prefix(target: Path) -> str:
    name = target.name
    raw = name.encode()
    if len(raw) > MAX_PART_NAME_BYTES:
        digest = hashlib.sha1(raw).hexdigest()[:8]
        name = raw[: MAX_PART_NAME_BYTES - 9].decode(errors="ignore") + "~" + digest
    return f".{name}."


# Folders already rid of dead writers' leftovers in this process: a batch
# writing thousands of files into one folder scans it once, not once per file.
_CLEANED_FOLDERS: set[str] = set()


def _remove_stale_parts(target: Path) -> None:
    """Delete leftovers of killed writes beside ``target``: ours, plain, of a process now gone.

    Temporary names are ``.<name>.<pid>.<random>.part``; a leftover is removed
    only when it is a regular file or folder (never through a link), owned by
    this user, and its writer no longer runs on this machine. Each folder is
    scanned once per process.
    """
    folder = os.path.abspath(target.parent)
    if folder in _CLEANED_FOLDERS:
        return
    _CLEANED_FOLDERS.add(folder)
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return
    for entry in entries:
        parts = entry.name.split(".")
        if not (entry.name.startswith(".") and parts[-1] == "part" and len(parts) >= 5):
            continue
        try:
            info = entry.stat(follow_symlinks=False)
            pid = int(parts[-3])
        except (OSError, ValueError):
            continue
        if entry.is_symlink() or info.st_uid != os.getuid() or _process_alive(pid):
            continue
        try:
            if entry.is_dir(follow_symlinks=False):
                shutil.rmtree(entry.path)
            else:
                os.unlink(entry.path)
        except OSError:
            pass


def _process_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True  # exists but is someone else's
    return True


@contextlib.contextmanager
def atomic_path(target: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``target``; rename it into place on success.

    The temporary file is created exclusively (never through a planted link),
    and renaming replaces a link at ``target`` rather than writing through it.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale_parts(target)
    fd, tmp = tempfile.mkstemp(
        prefix=f"{_part_prefix(target)}{os.getpid()}.", suffix=".part", dir=target.parent
    )
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        # mkstemp creates the file 0600; give the result the permissions any
        # newly created file gets (colleagues on a shared disk must read it).
        os.chmod(tmp_path, 0o666 & ~_current_umask())
        os.replace(tmp_path, target)
    finally:
        if tmp_path.exists() or tmp_path.is_symlink():
            tmp_path.unlink()


@contextlib.contextmanager
def atomic_dir(target: str | Path) -> Iterator[Path]:
    """Like :func:`atomic_path` for a folder (e.g. a zarr store): build it aside, then swap it in.

    An existing ``target`` folder is replaced by two renames (old aside, new
    in) and only then deleted: a run killed during the swap leaves at worst
    no ``target`` for a moment, never half of one, and the old folder under
    a name that marks it as this process's leftover (cleaned by a later
    run). A link at ``target`` is removed, never followed.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale_parts(target)
    prefix = f"{_part_prefix(target)}{os.getpid()}."
    tmp_path = Path(tempfile.mkdtemp(prefix=prefix, suffix=".part", dir=target.parent))
    old: Path | None = None
    try:
        yield tmp_path
        os.chmod(tmp_path, 0o777 & ~_current_umask())
        if target.is_symlink() or target.is_file():
            target.unlink()
        elif target.exists():
            old = Path(tempfile.mkdtemp(prefix=prefix, suffix=".part", dir=target.parent))
            os.replace(target, old)  # an empty folder is replaced by a rename
        os.replace(tmp_path, target)
    finally:
        for leftover in (tmp_path, old):
            if leftover is not None and leftover.exists():
                shutil.rmtree(leftover)


# Every output file carries this mark, so a later run can tell its own outputs
# (to resume or replace) from files someone else put there (never touched).
WRITTEN_BY = "napari-unet"


@contextlib.contextmanager
def scratch_dir(kind: str, parent: str | Path | None = None) -> Iterator[Path]:
    """A private working folder ``napari-unet-<kind>-<pid>-<random>``, removed afterwards.

    A run killed with kill -9 cannot remove its own: each new one first
    removes the leftovers of its kind whose process is gone (this user's
    folders only, never through a link), so killed runs do not pile up
    beside the user's images or in the temp folder.
    """
    folder = Path(parent) if parent is not None else Path(tempfile.gettempdir())
    prefix = f"napari-unet-{kind}-"
    _remove_dead_scratch(folder, prefix)
    path = Path(tempfile.mkdtemp(prefix=f"{prefix}{os.getpid()}-", dir=folder))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def _remove_dead_scratch(folder: Path, prefix: str) -> None:
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return
    for entry in entries:
        if not entry.name.startswith(prefix):
            continue
        try:
            pid = int(entry.name[len(prefix) :].split("-")[0])
            info = entry.stat(follow_symlinks=False)
        except (OSError, ValueError):
            continue  # not named by this code: someone else's
        if (
            entry.is_symlink()
            or not entry.is_dir(follow_symlinks=False)
            or info.st_uid != os.getuid()
            or _process_alive(pid)
        ):
            continue
        shutil.rmtree(entry.path, ignore_errors=True)


@contextlib.contextmanager
def resumable_blocks(folder: str | Path, output_name: str, plan: str) -> Iterator[Path]:
    """The blocks folder of one block-wise job, ``.<output>.blocks-<plan>``, kept if killed.

    Removed when the job finishes; when it does not (kill -9, an error, a
    cancel) it stays, and the same job (same ``plan`` digest) run again takes
    up its finished blocks. Folders of the same output for another plan (a changed
    model or option) and scratch folders of killed runs of the old naming are
    removed first: this user's, named by napari-unet, never through a link.
    """
    folder = Path(folder)
    _remove_dead_scratch(folder, "napari-unet-blocks-")
    stem = _part_prefix(Path(output_name)).rstrip(".")
    name = f"{stem}.blocks-{plan}"
    for entry in folder.glob(f"{stem}.blocks-*"):
        if entry.name != name and entry.is_dir() and not entry.is_symlink():
            if entry.stat().st_uid == os.getuid():
                shutil.rmtree(entry, ignore_errors=True)
    path = folder / name
    if path.is_symlink() or (path.exists() and not path.is_dir()):
        raise UNetError(f"{path} is not napari-unet's blocks folder (a link or a file): move it")
    if path.is_dir() and path.stat().st_uid != os.getuid():
        raise UNetError(
            f"{path} belongs to another user: napari-unet does not take up their blocks"
        )
    path.mkdir(mode=0o700, exist_ok=True)
    yield path
    shutil.rmtree(path, ignore_errors=True)
