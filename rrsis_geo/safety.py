"""Guards that keep a run from destroying data or leaving litter, shared by every command that
writes files (``segment``, ``segment-many``, ``render``, ``synth``, ``train``, ``evaluate``, ...).

* :func:`check_outputs` — before any work: an output is never an input (same path, same file
  through a link, or the same inode), never another output of the same run, not a folder, and
  its folder exists and accepts a new file.
* :class:`Scratch` — the per-output scratch folder (``OUT.rrsis-work``): created exclusively with
  a marker file, locked for the whole run (a second run on the same output gets one line, exit
  2), reused by ``--resume`` only when it is ours, and removed file by file (only the files this
  package writes there); a folder without our marker is never touched.
* :func:`check_expression` — the sentence is text: no NUL, no invalid UTF-8, no control
  characters.
* :func:`exclusive_lock` — a run-wide lock on a folder (``segment-many``'s ``--out-dir``).
* :func:`atomic_write` — a file appears complete or not at all: written under a hidden
  temporary name beside it, then renamed over it.

No heavy imports here: the CLI calls these before the model or GDAL are loaded.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import tempfile
import time
import unicodedata
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Union

from rrsis_geo.errors import BadInputError, OutputError

try:  # POSIX only; elsewhere runs are simply not locked
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

__all__ = ["SCRATCH_MARKER", "Scratch", "atomic_write", "check_expression",
           "check_folder_writable", "check_outputs", "exclusive_lock", "os_error_message",
           "same_file"]

PathLike = Union[str, os.PathLike]
Labelled = Union[PathLike, tuple[str, PathLike]]

#: file that marks a scratch folder as made by rrsis-geo (first line: this text)
SCRATCH_MARKER = ".rrsis-geo-scratch"
_MARKER_TEXT = "rrsis-geo scratch folder"
#: names the pipeline writes into its scratch folder; nothing else there is ever deleted
SCRATCH_FILES = ("sums.f32", "manifest.json", "done_tiles.txt", "roi.vrt", "local.vrt")


# -- atomic files ------------------------------------------------------------------------------
@contextlib.contextmanager
def atomic_write(path: PathLike, suffix: str = ".tmp",
                 side_suffixes: Sequence[str] = ()) -> Iterator[Path]:
    """Give a temporary path beside ``path``; rename it over ``path`` when the block succeeds.

    The temporary name is hidden and unique, ``.NAME.XXXXXXXX`` + ``suffix`` (pass a suffix
    ending in the real extension when a writer picks the format from it, e.g. ``".tmp.png"``);
    nothing is created there, the block writes it. On any error or interruption the temporary
    file, and ``TMP + s`` for every ``s`` in ``side_suffixes`` (files a writer adds beside its
    output, e.g. SQLite's ``-journal``), are removed and an existing ``path`` is left untouched.
    """
    import uuid

    path = Path(path)
    parent = path.parent if str(path.parent) else Path(".")
    tmp = parent / f".{path.name}.{uuid.uuid4().hex[:8]}{suffix}"
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        for p in (tmp, *(Path(f"{tmp}{s}") for s in side_suffixes)):
            with contextlib.suppress(OSError):
                p.unlink()


# -- outputs -----------------------------------------------------------------------------------

def same_file(a: PathLike, b: PathLike) -> bool:
    """True when ``a`` and ``b`` name one file: equal real paths, or the same inode (hard link,
    bind mount). A path that does not exist is the same as nothing but its own real path."""
    a, b = os.fspath(a), os.fspath(b)
    if os.path.realpath(a) == os.path.realpath(b):
        return True
    try:
        return os.path.samefile(a, b)
    except (OSError, ValueError):
        return False


def _labelled(items: Iterable[Labelled], default: str) -> list[tuple[str, str]]:
    out = []
    for item in items:
        if item is None or item == "":
            continue
        if isinstance(item, tuple):
            label, path = item
        else:
            label, path = default, item
        if path is None or path == "":
            continue
        out.append((str(label), os.fspath(path)))
    return out


def check_folder_writable(folder: PathLike, what: str = "output") -> None:
    """The folder exists, is a folder, and a new file can be created in it (tried for real, so a
    read-only mount, missing permissions or ACLs are all caught, also when running as root).

    Raises:
        OutputError: one line naming the folder and why.
    """
    folder = os.fspath(folder) or "."
    if not os.path.exists(folder):
        raise OutputError(f"{what} folder does not exist: {folder}")
    if not os.path.isdir(folder):
        raise OutputError(f"{what} folder is not a folder: {folder}")
    try:
        fd, probe = tempfile.mkstemp(dir=folder, prefix=".rrsis-geo-probe-")
    except OSError as exc:
        raise OutputError(f"{what} folder is not writable: {folder} "
                          f"({exc.strerror or exc})") from None
    os.close(fd)
    with contextlib.suppress(OSError):
        os.unlink(probe)


def check_outputs(inputs: Iterable[Labelled], outputs: Iterable[Labelled],
                  *, folders_ok: Sequence[PathLike] = ()) -> None:
    """Refuse, before any work, outputs that would destroy data or cannot be written.

    Args:
        inputs: files the run reads (paths, or ``(label, path)``); missing ones are skipped.
            URLs and ``/vsi…`` paths are not local files; for an archive path
            (``/vsizip/a.zip/x.tif``) the archive on this disk counts as the input.
        outputs: files the run writes (paths, or ``(label, path)`` such as ``("--prob-raster",
            p)``, used in the message).
        folders_ok: outputs that are folders by design (e.g. ``--out-dir``): they may exist as
            folders; when they do not, their nearest existing ancestor must be writable (they
            are created with their parents).

    Raises:
        OutputError (exit 2): an output is an input or names another output, is an existing
            folder, or its folder is missing or not writable.
    """
    from rrsis_geo.geo.sources import is_local, local_container

    ins = []
    for in_label, inp in _labelled(inputs, "input"):
        if is_local(inp):
            ins.append((in_label, inp))
        else:  # a URL or /vsi… path: only an archive on this disk can be overwritten
            container = local_container(inp)
            if container:
                ins.append((f"archive of the {in_label}", container))
    outs = _labelled(outputs, "output")
    dir_outputs = {os.path.realpath(os.fspath(p)) for p in folders_ok}
    for label, out in outs:
        if "\0" in out:
            raise OutputError(f"{label} path contains a NUL byte")
        if not is_local(out):
            raise OutputError(f"{label} {out}: outputs are written to local files only (write "
                              "here, then copy to the remote store)")
        for in_label, inp in ins:
            if os.path.lexists(inp) and same_file(out, inp):
                raise OutputError(
                    f"{label} {out} is the {in_label} {inp}: writing it would destroy the "
                    f"{in_label}; choose another file")
        is_dir_output = os.path.realpath(out) in dir_outputs
        if os.path.isdir(out) and not is_dir_output:
            raise OutputError(f"{label} {out} is a folder; give a file name")
        if os.path.lexists(out) and not os.path.exists(out):
            raise OutputError(f"{label} {out} is a broken symbolic link; remove it or choose "
                              "another file")
        if is_dir_output:
            # a folder output is created with its parents: its nearest existing ancestor must
            # take a new entry
            folder = os.path.abspath(out)
            while not os.path.exists(folder) and os.path.dirname(folder) != folder:
                folder = os.path.dirname(folder)
            check_folder_writable(folder, label)
        else:
            check_folder_writable(os.path.dirname(os.path.abspath(out)), label)
    for i, (la, a) in enumerate(outs):
        for lb, b in outs[i + 1:]:
            if same_file(a, b):
                raise OutputError(f"{la} and {lb} name the same file {a}; give each its own")


# -- the sentence --------------------------------------------------------------------------------

def check_expression(text: object) -> str:
    """The referring sentence as clean text, or one-line ``BadInputError`` (exit 3).

    Refused: not text, a NUL byte, invalid UTF-8 (bytes that reached Python as lone surrogates,
    e.g. from a Latin-1 terminal), control characters other than tab and newline, and an empty
    or blank sentence.
    """
    if not isinstance(text, str):
        raise BadInputError("the expression must be text")
    if "\0" in text:
        raise BadInputError("the expression contains a NUL byte")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise BadInputError("the expression is not valid UTF-8 text (check the encoding of "
                            "the terminal or script that passed it)") from None
    for ch in text:
        if ch not in "\t\n\r" and unicodedata.category(ch) in ("Cc", "Cs"):
            raise BadInputError(f"the expression contains the control character "
                                f"U+{ord(ch):04X}")
    if not text.strip():
        raise BadInputError("the expression is empty")
    return text


# -- OS errors -----------------------------------------------------------------------------------

_NO_SPACE = {errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)}
_NO_WRITE = {errno.EACCES, errno.EPERM, errno.EROFS}


def os_error_message(exc: OSError, where: PathLike) -> str | None:
    """A one-line message for an OSError that is the output side's fault (disk full, quota,
    read-only, permission), else None."""
    if exc.errno in _NO_SPACE:
        return (f"no space left on the device holding {os.fspath(where) or '.'} "
                f"({exc.strerror}); free some space or write the output elsewhere")
    if exc.errno in _NO_WRITE:
        return f"cannot write in {os.fspath(where)} ({exc.strerror})"
    return None


# -- locks ---------------------------------------------------------------------------------------

def _try_flock(fd: int) -> bool:
    if fcntl is None:
        return True
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    except OSError:  # filesystem without locks: proceed unlocked
        return True
    return True


@contextlib.contextmanager
def _folder_mutex(folder: str) -> Iterator[None]:
    """Serialize scratch claims in one folder (held for milliseconds; blocking)."""
    fd = None
    if fcntl is not None:
        with contextlib.suppress(OSError):
            fd = os.open(folder or ".", os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
            fcntl.flock(fd, fcntl.LOCK_EX)
    try:
        yield
    finally:
        if fd is not None:
            os.close(fd)


@contextlib.contextmanager
def exclusive_lock(folder: PathLike, what: str) -> Iterator[None]:
    """Hold an exclusive, non-blocking lock on ``folder`` (created when missing) for a run.

    Raises:
        OutputError: another process holds it (``what`` says what is busy).
    """
    folder = os.fspath(folder)
    os.makedirs(folder, exist_ok=True)
    fd = os.open(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        if not _try_flock(fd):
            raise OutputError(f"another rrsis-geo run is writing {what}; wait for it to "
                              "finish or choose another output")
        yield
    finally:
        os.close(fd)


# -- scratch -------------------------------------------------------------------------------------

class Scratch:
    """A run's scratch folder, ours alone (see the module docstring).

    Use :meth:`claim`; then :meth:`release` with ``keep=True`` after an interruption (the tiles
    stay for ``--resume``) or ``keep=False`` after success or any other error.

    Attributes:
        path: the folder.
        created: this run created it (False: it reused the scratch of an earlier run).
    """

    def __init__(self, path: Path, fd: int | None, created: bool) -> None:
        self.path = path
        self._fd = fd
        self.created = created

    @staticmethod
    def is_ours(path: PathLike) -> bool:
        """``path`` is a real folder (not a link) holding our marker file."""
        p = Path(path)
        if p.is_symlink() or not p.is_dir():
            return False
        marker = p / SCRATCH_MARKER
        try:
            if marker.is_symlink() or not marker.is_file():
                return False
            with open(marker, encoding="utf-8", errors="replace") as f:
                return f.readline().strip() == _MARKER_TEXT
        except OSError:
            return False

    @classmethod
    def claim(cls, path: PathLike, *, resume: bool, output: PathLike) -> "Scratch":
        """Create (or, ours and idle, reuse) the scratch folder and lock it for this run.

        A fresh run (``resume=False``) empties an idle scratch of ours left by an interrupted
        run; ``resume=True`` keeps its files.

        Raises:
            OutputError: the path exists but is not our scratch folder (left untouched), or
                another run holds it.
        """
        path = Path(path)
        with _folder_mutex(os.path.dirname(os.path.abspath(path))):
            if os.path.lexists(path):
                if not cls.is_ours(path):
                    raise OutputError(
                        f"{path} exists and was not made by rrsis-geo (it is left untouched); "
                        "move it away or choose another output")
                fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
                if not _try_flock(fd):
                    os.close(fd)
                    raise OutputError(
                        f"another rrsis-geo run is writing {os.fspath(output)} (its scratch "
                        f"folder {path} is in use); wait for it to finish or choose another "
                        "output")
                scratch = cls(path, fd, created=False)
                if not resume:
                    scratch._remove_files(keep_marker=True)
                return scratch
            try:
                os.mkdir(path)  # exclusive: never adopt a folder that appeared meanwhile
            except OSError as exc:
                raise OutputError(f"cannot create the scratch folder {path}: "
                                  f"{exc.strerror or exc}") from None
            try:
                with open(path / SCRATCH_MARKER, "x", encoding="utf-8") as f:
                    f.write(f"{_MARKER_TEXT}\n")
                    f.write(json.dumps({"output": os.path.abspath(output), "pid": os.getpid(),
                                        "created": time.time()}) + "\n")
                fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
            except OSError as exc:
                with contextlib.suppress(OSError):
                    (path / SCRATCH_MARKER).unlink()
                with contextlib.suppress(OSError):
                    os.rmdir(path)
                msg = os_error_message(exc, path.parent) or f"cannot create {path}: {exc}"
                raise OutputError(msg) from None
            _try_flock(fd)
            return cls(path, fd, created=True)

    def _remove_files(self, keep_marker: bool, folder: Path | None = None) -> None:
        """Delete the files this package writes here (and their hidden temporaries), also in
        the per-sentence folders ``expr<N>`` of a run with several sentences."""
        folder = folder or self.path
        names = set(SCRATCH_FILES)
        try:
            entries = os.listdir(folder)
        except OSError:
            return
        for name in entries:
            temp_of_ours = name.startswith(".") and any(
                name.startswith(f".{n}.") for n in SCRATCH_FILES)
            if name in names or temp_of_ours:
                with contextlib.suppress(OSError):
                    os.unlink(folder / name)
            elif folder == self.path and re.fullmatch(r"expr\d+", name) \
                    and (folder / name).is_dir():
                self._remove_files(keep_marker=True, folder=folder / name)
                with contextlib.suppress(OSError):
                    os.rmdir(folder / name)  # stays if it holds someone else's files
        if folder != self.path:
            return
        if not keep_marker:
            with contextlib.suppress(OSError):
                os.unlink(self.path / SCRATCH_MARKER)

    def release(self, keep: bool) -> None:
        """Unlock; with ``keep=False`` also delete our files and the folder (a folder that still
        holds someone else's files after that stays, with them)."""
        if not keep:
            self._remove_files(keep_marker=False)
            with contextlib.suppress(OSError):
                os.rmdir(self.path)
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.close(self._fd)
            self._fd = None
