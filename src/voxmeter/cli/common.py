"""What every command group shares: the typer app, logging, the console, option parsing."""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Mapping
from dataclasses import fields
from pathlib import Path
from typing import Annotated, Any

import typer

from voxmeter.errors import SpecError
from voxmeter.spec import AxisSettings, RunSpec, StreamSettings

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
    "train_data, labeller, train_clips, "
    "decoder_layers, lowrank_energy, recover, recover_steps (as in a sweep file's compression section)"
)

# Options that several commands share, defined once. A command gives each its default from the
# spec (`RunSpec()`'s fields, or LIVE's for the live commands), never a literal of its own, so a
# command's defaults and a sweep cell's are one configuration (tests/test_cli_stream.py checks).
Model = Annotated[str, typer.Option(help="tiny.en, base, small, medium, large-v3 or a dir")]
Engine = Annotated[str, typer.Option(help="hf (torch + transformers) or ct2 (CTranslate2)")]
Precision = Annotated[str, typer.Option(help="fp32, bf16, fp16 (cuda) or int8")]
Frames = Annotated[
    str, typer.Option(help="xT: encoder input frames (even, <=3000) or 'fit' (the input's length)")
]
Threads = Annotated[int, typer.Option(min=1, help="intra-op threads")]
Data = Annotated[
    str,
    typer.Option(help="default, noisy, longform, calib, a JSONL manifest or LibriSpeech dir"),
]
MaxClips = Annotated[int, typer.Option(help="use only the first N clips (0 = all)")]
Compress = Annotated[list[str] | None, typer.Option("--compress", help=COMPRESS_HELP)]
Store = Annotated[Path, typer.Option(help=STORE_HELP)]
CacheDir = Annotated[Path | None, typer.Option(help=CACHE_HELP)]
AsJson = Annotated[bool, typer.Option("--json", help="print one JSON document")]

# the stream options (StreamSettings' fields; --policy is `agreement`)
ChunkMs = Annotated[int, typer.Option(help="audio per processing step, [20, 10000] ms")]
Policy = Annotated[str, typer.Option(help="commit policy: local-agreement-N or N (N = 1..5)")]
Vad = Annotated[bool, typer.Option(help="Silero VAD: skip silence, end utterances")]
Prompt = Annotated[bool, typer.Option(help="prompt with the committed text before the buffer")]
FinalPass = Annotated[
    str,
    typer.Option(help="an utterance's last pass: 'plain' (no timestamps) or 'timestamps'"),
]
StepPass = Annotated[
    str,
    typer.Option(help="every other step: 'timestamps' or 'plain' (fewer tokens; needs --vad)"),
]
ForceCommitted = Annotated[
    bool,
    typer.Option(help="start each step's decode with the words already committed from the buffer"),
]
PauseCutMs = Annotated[
    int,
    typer.Option(
        help="also cut the buffer in pauses this long inside an utterance (needs --vad; 0: off)"
    ),
]
MaxWaitS = Annotated[
    float,
    typer.Option(help="commit a word not agreed on this long after its end anyway (s; 0: off)"),
]
RelaxS = Annotated[
    float,
    typer.Option(
        help="with LocalAgreement-3 or more: a word not agreed on this long after its end "
        "needs only the last two hypotheses to agree (s; 0: off)"
    ),
]

# What the live commands (stream, serve) run unless told otherwise: CTranslate2 int8 on the
# buffer's own length (xT 'fit'), 500 ms steps; every other field at the spec's default.
LIVE = RunSpec(
    engine="ct2",
    axes=AxisSettings(frames="fit", precision="int8"),
    stream=StreamSettings(chunk_ms=500),
)


def parse_agreement(policy: str) -> int:
    """`--policy`: local-agreement-N, or N alone."""
    m = re.fullmatch(r"(?:local-agreement-)?(\d+)", policy.strip())
    if not m:
        raise SpecError(f"--policy: expected local-agreement-N or N (N = 1..5), got {policy!r}")
    return int(m.group(1))


def live_spec(options: Mapping[str, Any], **fixed: Any) -> RunSpec:
    """A live command's RunSpec from its options (a `locals()`), matched to the spec's fields
    by name: --policy gives `agreement`, --frames is parsed, --compress read as in bench.
    `fixed` sets stream fields the command does not offer (serve: realtime). Validated."""
    if options.get("chunk_ms") == 0:  # 0 means "not a stream" in the spec: refuse it here
        raise SpecError("--chunk-ms: must be in [20, 10000], got 0")

    def picked(cls: type) -> dict[str, Any]:
        return {f.name: options[f.name] for f in fields(cls) if f.name in options}

    axes = {**picked(AxisSettings), "frames": parse_frames(options["frames"])}
    stream = {**picked(StreamSettings), "agreement": parse_agreement(options["policy"]), **fixed}
    top = {k: v for k, v in picked(RunSpec).items() if k not in ("axes", "stream", "compression")}
    return RunSpec(
        **top,
        repeats=1,
        axes=AxisSettings(**axes),
        compression=parse_compress(options.get("compress")),
        stream=StreamSettings(**stream),
    ).validate()


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
