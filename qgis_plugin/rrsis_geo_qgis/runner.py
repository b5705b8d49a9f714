"""Run ``rrsis-geo segment`` as a child process and relay its JSON-lines progress.

Pure Python on purpose: no ``qgis`` import, so it is unit-testable anywhere, and never torch, numpy
or ``rrsis_geo`` (the CLI runs in its own environment; importing its stack into QGIS's Python is
the root cause of most install breakages of other QGIS deep-learning plugins).

The ``feedback`` argument is duck-typed on ``QgsProcessingFeedback``: ``setProgress(float)``,
``pushInfo``, ``pushWarning``, ``pushCommandInfo``, ``pushConsoleInfo``, ``isCanceled()``.
"""

from __future__ import annotations

import json
import os
import queue
import shlex
import shutil
import signal
import subprocess  # nosec B404 - the plugin's whole job is to run the rrsis-geo CLI
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Protocol

#: name of the Processing provider setting holding the executable path
SETTING_EXECUTABLE = "RRSIS_GEO_EXECUTABLE"
#: environment variable consulted when the setting is empty
ENV_EXECUTABLE = "RRSIS_GEO_EXE"
EXE_NAME = "rrsis-geo"

# Exit codes of the CLI (contract in the project's docs/architecture.md, section "Exit codes", and README).
EXIT_OK, EXIT_USAGE, EXIT_BAD_INPUT, EXIT_WEIGHTS, EXIT_OOM, EXIT_INTERRUPTED = 0, 2, 3, 4, 5, 130
EXIT_INTERNAL, EXIT_TERMINATED = 1, 143

# Relative share of the run each stage of ``segment`` takes (stage names from the CLI's pipeline:
# "open" includes loading the model; tile inference dominates on CPU). Unknown stages get
# DEFAULT_STAGE_WEIGHT; the bar only ever moves forward.
STAGE_WEIGHTS: dict[str, float] = {
    "open": 10.0,
    "normalize": 5.0,
    "tiles": 65.0,
    "select": 5.0,
    "check": 10.0,  # the class check, inside selection, when the sentence names a class
    "write": 5.0,
}
DEFAULT_STAGE_WEIGHT = 5.0

# Variables QGIS (notably OSGeo4W on Windows and the macOS bundle) sets for *its own* Python, GDAL
# and PROJ. Inherited by the CLI's separate environment they make it import the wrong stdlib or
# read a proj.db of another PROJ version, so they are dropped from the child's environment.
_ENV_DROP = ("PYTHONHOME", "PYTHONPATH", "PYTHONSTARTUP", "GDAL_DATA", "GDAL_DRIVER_PATH",
             "PROJ_LIB", "PROJ_DATA")

INSTALL_HINT = (
    "Install rrsis_geo in its own Python environment (it needs PyTorch, which must not be "
    "installed into QGIS's Python), e.g.\n"
    "    python3 -m venv ~/rrsis-geo-env && ~/rrsis-geo-env/bin/pip install <rrsis_geo checkout>\n"
    "then point QGIS at the executable: Settings > Options > Processing > Providers > rrsis_geo > "
    "'rrsis-geo executable' = ~/rrsis-geo-env/bin/rrsis-geo "
    "(Windows: ...\\Scripts\\rrsis-geo.exe), "
    f"or set the environment variable {ENV_EXECUTABLE} before starting QGIS."
)


class Feedback(Protocol):
    """The subset of ``QgsProcessingFeedback`` the runner uses."""

    def setProgress(self, progress: float) -> None: ...
    def pushInfo(self, text: str) -> None: ...
    def pushWarning(self, text: str) -> None: ...
    def pushCommandInfo(self, text: str) -> None: ...
    def pushConsoleInfo(self, text: str) -> None: ...
    def isCanceled(self) -> bool: ...


class CliError(Exception):
    """A run that did not produce its outputs; ``str()`` is the message shown to the user."""

    def __init__(self, message: str, returncode: int | None = None) -> None:
        super().__init__(message)
        self.returncode = returncode


class CliCanceled(CliError):
    """The user cancelled; the child was stopped and partial outputs removed."""


# --------------------------------------------------------------------------------------------
# Finding the executable
# --------------------------------------------------------------------------------------------
def _repo_venv_candidates() -> list[Path]:
    """``rrsis-geo`` inside the ``.venv`` of a repository checkout this plugin is part of.

    The plugin source lives at ``<repo>/qgis_plugin/rrsis_geo_qgis/``; an installed plugin (from
    the zip, in the QGIS profile) has no such parent and simply finds nothing here.
    """
    repo = Path(__file__).resolve().parent.parent.parent
    if not (repo / "pyproject.toml").is_file():
        return []
    if os.name == "nt":
        return [repo / ".venv" / "Scripts" / "rrsis-geo.exe"]
    return [repo / ".venv" / "bin" / EXE_NAME]


def find_executable(setting: str | None = None,
                    environ: dict[str, str] | None = None) -> tuple[str | None, str]:
    """Locate the CLI: provider setting, else $RRSIS_GEO_EXE, else PATH, else the repo's .venv.

    Args:
        setting: value of the provider setting (empty/None = not configured).
        environ: environment to read (default ``os.environ``).

    Returns:
        ``(path, how)``: the executable (None when not found) and a short note on where it
        came from, or, when not found / misconfigured, why.
    """
    env = os.environ if environ is None else environ
    for value, origin in ((setting, "Processing provider setting"),
                          (env.get(ENV_EXECUTABLE), f"environment variable {ENV_EXECUTABLE}")):
        value = (value or "").strip()
        if not value:
            continue
        path = os.path.expanduser(value)
        # an explicit choice is honoured or reported, never silently replaced by another CLI
        if not os.path.isfile(path):
            resolved = shutil.which(path)
            if resolved is None:
                return None, f"the {origin} points to {value!r}, which does not exist"
            path = resolved
        if not os.access(path, os.X_OK):
            return None, f"the {origin} points to {value!r}, which is not executable"
        return path, origin
    found = shutil.which(EXE_NAME, path=env.get("PATH"))
    if found:
        return found, "PATH"
    for cand in _repo_venv_candidates():
        if cand.is_file() and os.access(cand, os.X_OK):
            return str(cand), "the repository's .venv"
    return None, f"no {EXE_NAME!r} in the provider setting, ${ENV_EXECUTABLE}, PATH or a .venv"


def missing_executable_message(why: str) -> str:
    """The text shown when the CLI cannot be found (no traceback, tells how to fix it)."""
    return f"The rrsis-geo command-line tool was not found: {why}.\n{INSTALL_HINT}"


# --------------------------------------------------------------------------------------------
# Building and showing the command
# --------------------------------------------------------------------------------------------
def build_segment_command(exe: str, input_path: str, expression: str, output_path: str,
                          options: dict[str, Any] | None = None) -> list[str]:
    """Argument list for ``rrsis-geo segment`` (never a shell string).

    Args:
        options: long option name (without ``--``, underscores allowed) → value. ``None``/empty
            values are left out so the CLI's own default applies; ``True`` gives the bare flag
            (e.g. ``{"no-class-check": True}``), ``False`` leaves it out.
    """
    argv = [exe, "segment", input_path, "-e", expression, "-o", output_path]
    for name, value in (options or {}).items():
        if value is None or value == "" or value is False:
            continue
        if value is True:
            argv.append(f"--{name.replace('_', '-')}")
            continue
        if isinstance(value, float):
            value = repr(value)  # shortest round-trip text, no locale
        argv += [f"--{name.replace('_', '-')}", str(value)]
    # QGIS's file dialog has already asked before an existing file is chosen; the CLI refuses
    # an existing output without --overwrite (which replaces only our layer of a GeoPackage)
    argv += ["--overwrite", "--progress", "jsonl"]
    return argv


def command_line(argv: Iterable[str]) -> str:
    """The equivalent shell command, copy-pasteable on a server."""
    argv = list(argv)
    if os.name == "nt":
        return subprocess.list2cmdline(argv)
    return shlex.join(argv)


# --------------------------------------------------------------------------------------------
# Progress
# --------------------------------------------------------------------------------------------
@dataclass
class ProgressMapper:
    """Maps ``(stage, done, total)`` events to one overall percentage, weighted by stage.

    Stages are counted in the order they first appear; a finished stage contributes its full
    weight. The denominator is the sum of all known stage weights plus the weights of unknown
    stages seen so far, so an unexpected stage never pushes the bar past 100 % and the value
    never goes backwards.
    """

    weights: dict[str, float] = field(default_factory=lambda: dict(STAGE_WEIGHTS))
    default_weight: float = DEFAULT_STAGE_WEIGHT
    _finished: float = 0.0
    _current: str | None = None
    _current_frac: float = 0.0
    _extra: float = 0.0
    _seen: set = field(default_factory=set)
    _last: float = 0.0

    def _weight(self, stage: str) -> float:
        return self.weights.get(stage, self.default_weight)

    def update(self, stage: str, done: float, total: float) -> float:
        """Register one progress event; returns the overall percentage in [0, 100]."""
        stage = str(stage)
        if stage != self._current:
            if self._current is not None:
                self._finished += self._weight(self._current)
            if stage not in self.weights and stage not in self._seen:
                self._extra += self.default_weight
            self._seen.add(stage)
            self._current = stage
        try:
            frac = float(done) / float(total) if float(total) > 0 else 0.0
        except (TypeError, ValueError):
            frac = 0.0
        self._current_frac = min(max(frac, 0.0), 1.0)
        denom = sum(self.weights.values()) + self._extra
        pct = 100.0 * (self._finished + self._current_frac * self._weight(stage)) / denom
        self._last = max(self._last, min(pct, 100.0))
        return self._last


# --------------------------------------------------------------------------------------------
# Running
# --------------------------------------------------------------------------------------------
def child_environment(base: dict[str, str] | None = None) -> dict[str, str]:
    """The environment for the CLI: QGIS's own Python/GDAL/PROJ variables removed."""
    env = dict(os.environ if base is None else base)
    for key in _ENV_DROP:
        env.pop(key, None)
    env["PYTHONUNBUFFERED"] = "1"  # JSON lines arrive as they are written
    return env


def _pump(stream, q: "queue.Queue[tuple[str, str | None]]", tag: str) -> None:
    """Thread body: forward each line of ``stream`` to ``q``; ``(tag, None)`` marks the end."""
    try:
        for raw in iter(stream.readline, b""):
            q.put((tag, raw.decode("utf-8", errors="replace").rstrip("\r\n")))
    except (OSError, ValueError):
        pass
    finally:
        q.put((tag, None))


def _stop_child(proc: subprocess.Popen, grace_s: float) -> None:
    """Terminate the child's whole process group, then kill it after ``grace_s`` seconds."""
    if proc.poll() is not None:
        return
    if os.name == "nt":
        # /T: the console-script launcher spawns python.exe as its own child
        subprocess.run(["taskkill", "/T", "/PID", str(proc.pid)],  # nosec B603 B607
                       capture_output=True, check=False)
        try:
            proc.wait(timeout=grace_s)
        except subprocess.TimeoutExpired:
            subprocess.run(["taskkill", "/F", "/T", "/PID", str(proc.pid)],  # nosec B603 B607
                           capture_output=True, check=False)
            proc.kill()
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)
    except (ProcessLookupError, PermissionError):
        proc.terminate()
    try:
        proc.wait(timeout=grace_s)
    except subprocess.TimeoutExpired:
        pass
    # SIGKILL the group even when the leader exited: workers it forked may still be alive
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    if proc.poll() is None:
        proc.kill()
    proc.wait()
    # give the kernel a moment to tear the workers down (bounded: cancel must stay under 2 s)
    deadline = time.monotonic() + 0.5
    while time.monotonic() < deadline:
        try:
            os.killpg(proc.pid, 0)
        except (ProcessLookupError, PermissionError):
            break
        time.sleep(0.02)


def _snapshot(paths: Iterable[str]) -> dict[str, dict[str, float]]:
    """Name → mtime of what exists, before the run, in the folders that will receive outputs."""
    snap: dict[str, dict[str, float]] = {}
    for p in paths:
        folder = os.path.dirname(os.path.abspath(p))
        entries: dict[str, float] = {}
        try:
            with os.scandir(folder) as it:
                for e in it:
                    try:
                        entries[e.name] = e.stat(follow_symlinks=False).st_mtime
                    except OSError:
                        entries[e.name] = 0.0
        except OSError:
            pass
        snap[folder] = entries
    return snap


def _ours(name: str, output_name: str) -> bool:
    """``name`` is a file the CLI writes for the output ``output_name``: the output itself, its
    scratch folder ``<name>.rrsis-work``, or a hidden temporary ``.<name>.<anything>`` that the
    CLI renames over the output when complete. Nothing else (``result_notes.csv`` next to
    ``result.gpkg`` is the user's)."""
    return (name == output_name or name == output_name + ".rrsis-work"
            or name.startswith(f".{output_name}."))


def remove_partial_outputs(outputs: Iterable[str],
                           before: dict[str, dict[str, float]]) -> list[str]:
    """Delete what the run wrote for ``outputs``, and only that.

    For each output file: the file itself, its scratch folder ``<output>.rrsis-work`` and the
    CLI's hidden temporaries ``.<output>.*`` — each only when it is new or was modified since
    ``before`` was taken (a scratch folder only when it is new: an older one may hold another
    run's tiles for ``--resume``). Any other file, even one whose name starts like the
    output's, is the user's and is never touched.

    Returns:
        The paths removed.
    """
    removed: list[str] = []
    for out in (os.path.abspath(p) for p in outputs):
        folder, out_name = os.path.split(out)
        old = before.get(folder, {})
        try:
            names = os.listdir(folder)
        except OSError:
            continue
        for name in names:
            if not _ours(name, out_name):
                continue
            path = os.path.join(folder, name)
            try:
                mtime = os.lstat(path).st_mtime
            except OSError:
                continue
            if name in old and (mtime == old[name] or name.endswith(".rrsis-work")):
                continue
            try:
                if os.path.isdir(path) and not os.path.islink(path):
                    shutil.rmtree(path)
                else:
                    os.remove(path)
                removed.append(path)
            except OSError:
                pass
    return removed


def explain_exit(returncode: int, error_line: str | None, stderr_tail: list[str]) -> str:
    """A clear, actionable message for a failed run (no traceback)."""
    detail = error_line or (stderr_tail[-1] if stderr_tail else "")
    detail = detail.removeprefix("rrsis-geo: error: ").strip()
    tail = f": {detail}" if detail else ""
    if returncode == EXIT_USAGE:
        return f"rrsis-geo rejected the parameters (exit code 2){tail}"
    if returncode == EXIT_BAD_INPUT:
        return (f"The input raster or the expression cannot be used (exit code 3){tail}. "
                "Check that the raster is a georeferenced, north-up GeoTIFF with a CRS and "
                "that the expression is not empty.")
    if returncode == EXIT_WEIGHTS:
        return (f"The model weights could not be loaded (exit code 4){tail}. Leave 'Model "
                "weights' empty to use the shipped demo model, or choose a .safetensors file "
                "(with its .json beside it) or an official FIANet .pth checkpoint.")
    if returncode == EXIT_OOM:
        return (f"rrsis-geo ran out of memory (exit code 5){tail}. Try a smaller tile size, "
                "device 'cpu' if the GPU is small, or close other programs.")
    if returncode in (EXIT_INTERRUPTED, EXIT_TERMINATED):
        return f"rrsis-geo was interrupted (exit code {returncode}){tail}"
    if returncode == EXIT_INTERNAL:
        return (f"rrsis-geo stopped on an unexpected error (exit code 1){tail}. Run the "
                "command line logged above with --debug after 'rrsis-geo' to see the details.")
    if returncode in (-9, 137):
        return ("rrsis-geo was killed (signal 9) without being cancelled here: most likely the "
                "operating system's out-of-memory killer. Try a smaller tile size or a machine "
                f"with more memory.{(' Last message: ' + detail) if detail else ''}")
    if returncode < 0:
        return f"rrsis-geo crashed (signal {-returncode}){tail}"
    return f"rrsis-geo failed (exit code {returncode}){tail}"


def run_cli(argv: list[str], feedback: Feedback, outputs: Iterable[str] = (),
            poll_s: float = 0.1, kill_grace_s: float = 1.0,
            env: dict[str, str] | None = None) -> dict[str, Any]:
    """Run the CLI, relaying ``--progress jsonl`` events to ``feedback``.

    Args:
        argv: argument list (see :func:`build_segment_command`).
        feedback: a ``QgsProcessingFeedback`` (or anything with the same methods).
        outputs: files the run writes; removed (with temp files beside them) on cancel/failure.
        poll_s: how often cancellation is checked while the child is quiet.
        kill_grace_s: time between SIGTERM and SIGKILL when cancelling.
        env: child environment (default: :func:`child_environment`).

    Returns:
        The final ``{"event": "result", ...}`` object (``{}`` if the CLI printed none).

    Raises:
        CliCanceled: the user cancelled; the child is gone and partial outputs are removed.
        CliError: the CLI could not start or exited non-zero; the message says why.
    """
    outputs = [o for o in outputs if o]
    for arg in argv:  # the OS cannot pass these; say so instead of a Python traceback
        if "\0" in str(arg):
            raise CliError("A parameter contains a NUL character (often pasted from another "
                           f"program); remove it and run again: {str(arg).replace(chr(0), '?')!r}")
    before = _snapshot(outputs)
    feedback.pushCommandInfo(command_line(argv))
    popen_kw: dict[str, Any] = {}
    if os.name == "nt":
        popen_kw["creationflags"] = (subprocess.CREATE_NEW_PROCESS_GROUP
                                     | getattr(subprocess, "CREATE_NO_WINDOW", 0))
    else:
        popen_kw["start_new_session"] = True  # own process group: cancel reaches every worker
    try:
        proc = subprocess.Popen(  # nosec B603 - argument list, no shell
            argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            env=child_environment() if env is None else env, **popen_kw)
    except OSError as exc:
        raise CliError(f"Could not start {argv[0]!r}: {exc.strerror or exc}.\n{INSTALL_HINT}")
    try:
        return _supervise(proc, feedback, outputs, before, poll_s, kill_grace_s)
    finally:
        if proc.poll() is None:  # e.g. an exception in a feedback call: never leave it running
            _stop_child(proc, kill_grace_s)
        for stream in (proc.stdout, proc.stderr):
            try:
                stream.close()
            except OSError:
                pass


def _cancel(proc: subprocess.Popen, feedback: Feedback, outputs: list[str],
            before: dict[str, dict[str, float]], kill_grace_s: float) -> CliCanceled:
    t0 = time.monotonic()
    _stop_child(proc, kill_grace_s)
    removed = remove_partial_outputs(outputs, before)
    feedback.pushInfo(f"Cancelled: rrsis-geo stopped {time.monotonic() - t0:.1f} s after the "
                      "request" + (f"; removed {len(removed)} partial file(s)" if removed else ""))
    return CliCanceled("Cancelled by the user; no output was written.", proc.returncode)


def _supervise(proc: subprocess.Popen, feedback: Feedback, outputs: list[str],
               before: dict[str, dict[str, float]], poll_s: float,
               kill_grace_s: float) -> dict[str, Any]:
    """Relay the child's output until it exits (see :func:`run_cli`)."""
    q: "queue.Queue[tuple[str, str | None]]" = queue.Queue()
    threads = [threading.Thread(target=_pump, args=(s, q, tag), daemon=True)
               for s, tag in ((proc.stdout, "out"), (proc.stderr, "err"))]
    for t in threads:
        t.start()

    mapper = ProgressMapper()
    result: dict[str, Any] = {}
    stderr_tail: deque[str] = deque(maxlen=30)
    error_line: str | None = None
    open_streams = 2
    exited_at: float | None = None
    while open_streams:
        if feedback.isCanceled():
            raise _cancel(proc, feedback, outputs, before, kill_grace_s)
        try:
            tag, line = q.get(timeout=poll_s)
        except queue.Empty:
            # a grandchild may keep the pipes open after the CLI exited: don't wait for it forever
            if exited_at is None and proc.poll() is not None:
                exited_at = time.monotonic()
            if exited_at is not None and time.monotonic() - exited_at > 2.0:
                break
            continue
        if line is None:
            open_streams -= 1
            continue
        if tag == "err":
            if line.startswith("rrsis-geo: error:"):
                error_line = line
            if line.strip():
                stderr_tail.append(line)
                feedback.pushConsoleInfo(line)
            continue
        event = _parse_event(line)
        if event is None:
            if line.strip():
                feedback.pushConsoleInfo(line)
            continue
        kind = event.get("event")
        if kind == "progress":
            feedback.setProgress(mapper.update(event.get("stage", ""), event.get("done", 0),
                                               event.get("total", 0)))
        elif kind == "message":
            text = str(event.get("text", ""))
            if event.get("level") in ("warning", "error"):
                feedback.pushWarning(text)
            else:
                feedback.pushInfo(text)
        elif kind == "result":
            result = event
        else:
            feedback.pushConsoleInfo(line)

    # streams closed: the child is exiting; keep honouring cancel while it does
    while proc.poll() is None:
        if feedback.isCanceled():
            raise _cancel(proc, feedback, outputs, before, kill_grace_s)
        time.sleep(poll_s)
    rc = proc.returncode
    if exited_at is not None and os.name != "nt":
        try:  # leftover members of the child's group kept the pipes open: stop them
            os.killpg(proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
    for t in threads:
        t.join(timeout=1)
    if rc != EXIT_OK:
        remove_partial_outputs(outputs, before)
        raise CliError(explain_exit(rc, error_line, list(stderr_tail)), rc)
    feedback.setProgress(100.0)
    return result


def _parse_event(line: str) -> dict[str, Any] | None:
    """A JSON object line → dict; anything else (stray prints, warnings) → None."""
    line = line.strip()
    if not line.startswith("{"):
        return None
    try:
        obj = json.loads(line)
    except ValueError:
        return None
    return obj if isinstance(obj, dict) else None


__all__ = [
    "CliCanceled", "CliError", "ENV_EXECUTABLE", "Feedback", "ProgressMapper",
    "SETTING_EXECUTABLE", "build_segment_command", "child_environment", "command_line",
    "explain_exit", "find_executable", "missing_executable_message", "remove_partial_outputs",
    "run_cli",
]
