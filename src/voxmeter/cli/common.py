"""What every command group shares: the typer app, logging, the console, option parsing."""

from __future__ import annotations

import logging
import os
from typing import Any

import typer

from voxmeter.errors import SpecError

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="Measure what a speech model costs to run, and which cheaper configuration keeps its "
    "accuracy.",
)
results_app = typer.Typer(no_args_is_help=True, help="List, show and export stored results.")
app.add_typer(results_app, name="results", rich_help_panel="Results")

STORE_HELP = "results store (SQLite)"
CACHE_HELP = "conversion cache (env VOXMETER_CACHE)"
COST_ONLY_HELP = (
    "let a size without weights here (tiny, small, medium...) run on seeded random weights: "
    "FLOPs, latency and memory are real, accuracy is not measured"
)


def cost_only_option() -> Any:
    """`--cost-only`, one definition for every command that takes --model and runs it."""
    return typer.Option(False, "--cost-only", help=COST_ONLY_HELP)


def setup_logging(quiet: bool) -> None:
    """voxmeter's log lines through rich on stderr: stdout carries the table or JSON alone."""
    from rich.console import Console
    from rich.logging import RichHandler

    log = logging.getLogger("voxmeter")
    log.setLevel(logging.WARNING if quiet else logging.INFO)
    if not log.handlers:
        log.addHandler(RichHandler(console=Console(stderr=True), show_time=False, show_path=False))
        log.propagate = False
    # transformers' own progress bars and notices are noise on our stderr
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")


def console() -> Any:
    from voxmeter.display import console as _console

    return _console  # full width when piped, so tables are not squeezed to 80 columns


def parse_frames(frames: str) -> int | str:
    if frames == "fit":
        return "fit"
    try:
        return int(frames)
    except ValueError:
        raise SpecError(f"--frames: expected an even integer or 'fit', got {frames!r}") from None


def fmt(v: float | None, digits: int = 2) -> str:
    return "n/a" if v is None else f"{v:,.{digits}f}"


COMPRESS_HELP = (
    "compression KEY=VALUE, repeatable: quant, quant_embed, keep, prune_heads, prune_ffn, "
    "decoder_layers, lowrank_energy, recover, recover_steps (as in a sweep file's compression section)"
)


def parse_compress(items: list[str] | None) -> Any:
    """`--compress KEY=VALUE` options as CompressionSettings (values typed by the field)."""
    from dataclasses import fields

    from voxmeter.spec import CompressionSettings

    types = {
        f.name: type(getattr(CompressionSettings(), f.name)) for f in fields(CompressionSettings)
    }
    out: dict[str, Any] = {}
    for item in items or []:
        key, sep, raw = item.partition("=")
        key = key.strip().replace("-", "_")
        if not sep or key not in types:
            known = ", ".join(types)
            raise SpecError(f"--compress: expected KEY=VALUE with KEY one of {known}, got {item!r}")
        out[key] = _typed_value(key, raw.strip(), types[key])
    return CompressionSettings(**out)


def _typed_value(key: str, raw: str, kind: type) -> Any:
    if kind is bool:
        if raw.lower() in ("1", "true", "yes", "on"):
            return True
        if raw.lower() in ("0", "false", "no", "off"):
            return False
        raise SpecError(f"--compress: {key}: expected true or false, got {raw!r}")
    if kind in (int, float):
        try:
            return kind(raw)
        except ValueError:
            raise SpecError(f"--compress: {key}: expected a number, got {raw!r}") from None
    return raw
