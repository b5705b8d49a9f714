"""``rrsis-geo`` entry point: a click group; each command lives in its own module."""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys

# OpenMP threads that spin while they wait collapse throughput when other processes share the
# cores (segment, 1024² px on 2 busy cores: 23.8 s of tiles with 2 spinning threads, 2.3 s with
# 2 passive ones; README "Benchmarks"). Only effective before torch is imported, which this module
# does not do.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import click

from rrsis_geo import __version__

# command name -> module under rrsis_geo.cli holding a click command called ``command``
COMMANDS = {
    "info": "info",
    "segment": "segment",
    "segment-many": "segment_many",
    "synth": "synth",
    "train": "train",
    "train-objclass": "train_objclass",
    "evaluate": "evaluate",
    "render": "render",
    "dataset": "dataset",
}


class LazyGroup(click.Group):
    """Imports a command's module only when that command runs (keeps ``--help`` and ``info`` fast)."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return [n for n, m in COMMANDS.items() if importlib.util.find_spec(f"rrsis_geo.cli.{m}")]

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        mod = COMMANDS.get(name)
        if mod is None or importlib.util.find_spec(f"rrsis_geo.cli.{mod}") is None:
            return None
        return importlib.import_module(f"rrsis_geo.cli.{mod}").command


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="rrsis-geo")
@click.option("--debug", is_flag=True,
              help="Show the traceback of an unexpected error (also RRSIS_GEO_DEBUG=1).")
@click.option("-v", "--verbose", count=True,
              help="More messages on stderr: -v what the run does (weights, device, threads, "
              "downloads), -vv debugging detail.")
@click.option("-q", "--quiet", count=True,
              help="Only warnings and errors on stderr: no progress bar, no summary line "
              "(--progress jsonl output is unchanged).")
def cli(debug: bool, verbose: int, quiet: int) -> None:
    """Find the object a sentence refers to in a georeferenced raster; write it as GIS polygons.

    \b
    Exit codes: 0 ok (also "no target found"), 1 unexpected error (rerun with
    --debug), 2 usage (also an output that is an input, a read-only or full
    output folder, another run on the same output), 3 bad input, 4 weights/model
    problem, 5 out of memory, 130 interrupted (Ctrl-C), 143 terminated (SIGTERM).
    """
    from rrsis_geo import log, progress
    from rrsis_geo.cli import options

    options.DEBUG = bool(debug)
    verbosity = verbose - quiet
    log.configure(verbosity)
    progress.QUIET = verbosity < 0


def main() -> None:
    from rrsis_geo.cli.options import install_signal_handlers

    install_signal_handlers()  # the process is ours: SIGTERM ends a run like Ctrl-C
    cli(prog_name="rrsis-geo")


if __name__ == "__main__":
    sys.exit(main())
