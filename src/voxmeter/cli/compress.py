"""The compress commands: compress (build a model directory), sensitivity (which layer groups
int8 hurts, and a hybrid spec under a budget), card (a compressed model's model card)."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import typer

from voxmeter.cli.common import (
    CACHE_HELP,
    COMPRESS_HELP,
    STORE_HELP,
    app,
    console,
    parse_compress,
    setup_logging,
)
from voxmeter.errors import SpecError
from voxmeter.store import DEFAULT_STORE_PATH

PANEL = "Compress"
MIB = 2**20
TRAIN_HELP = (
    "training speech for pruning importance and recovery: real-train, calib or a .jsonl "
    "manifest (default: real-train when built, else calib); checked disjoint from every test set"
)
log = logging.getLogger("voxmeter")


@app.command(rich_help_panel=PANEL)
def compress(
    model: str = typer.Option("tiny.en", help="the source: a model name or directory"),
    compress: list[str] | None = typer.Option(None, "--compress", help=COMPRESS_HELP),
    out: Path = typer.Option(..., "-o", "--out", help="the model directory to write"),
    force: bool = typer.Option(False, help="replace an existing model directory at -o"),
    train_data: str | None = typer.Option(None, "--train-data", help=TRAIN_HELP),
    cache_dir: Path | None = typer.Option(None, help=CACHE_HELP),
    quiet: bool = typer.Option(False, help="no notes"),
) -> None:
    """Build a compressed model directory (depth, pruning, low-rank, recovery, quantization)."""
    from voxmeter.assets.bundled import default_cache_dir, resolve_model
    from voxmeter.compress import build, quantization_settings
    from voxmeter.compress.artifact import read_meta
    from voxmeter.compress.traindata import from_settings
    from voxmeter.identity import FileDigests
    from voxmeter.run.harness import prepare_weights
    from voxmeter.spec import RunSpec

    setup_logging(quiet)
    comp = _with_train_data(parse_compress(compress), train_data)
    spec = RunSpec(model=model, compression=comp).validate()
    if comp.is_none:
        raise SpecError(
            "--compress: nothing to build: give decoder_layers, prune_heads, prune_ffn, "
            "lowrank_energy or quant (then bench the directory with --model)"
        )
    _check_out(out, force)
    cache = default_cache_dir(cache_dir)
    # resolved and checked disjoint from every test set before any work
    train = from_settings(comp, FileDigests(cache)) if comp.uses_train_data else None
    source = prepare_weights(spec, resolve_model(model, cache), cache)[0]
    comp.check_model(source.dims.n_text_layer)
    built = build(comp, source, out, train, carry_quant=True, cache=cache)
    meta = read_meta(built)
    report = meta["report"]
    c = console()
    c.print(
        f"{source.name} -> {built}: {report['params_before']:,} -> "
        f"{report['params_after']:,} parameters "
        f"({report['params_after'] / report['params_before']:.1%})"
    )
    _print_training(meta.get("calibration") or {})
    carried = quantization_settings(comp)
    if carried:
        what = ", ".join(f"{k}={v}" for k, v in carried.items())
        c.print(f"quantization carried by the directory, applied at every load: {what}")
    c.print("measure it with:")
    c.print(f"  voxmeter bench --model {built.resolve()}", soft_wrap=True)


def _with_train_data(comp: Any, train_data: str | None) -> Any:
    """`--train-data` into the settings; refused when --compress train_data= says otherwise."""
    from dataclasses import replace

    if train_data is None:
        return comp
    if comp.train_data and comp.train_data != train_data:
        raise SpecError(
            f"--train-data {train_data!r} and --compress train_data={comp.train_data!r}: give one"
        )
    return replace(comp, train_data=train_data)


def _print_training(rec: dict[str, Any]) -> None:
    """One line: the training data a build used (set, clips, labeller, skipped)."""
    if not rec.get("n_clips"):
        return
    console().print(
        f"trained on {rec.get('data')}: {rec['n_clips']} clips used of "
        f"{rec.get('n_selected', '?')} selected ({rec.get('n_listed', '?')} listed), "
        f"{rec.get('n_pseudo_labelled', 0)} labelled by the {rec.get('labeller', '?')}, "
        f"{len(rec.get('skipped') or [])} skipped",
        soft_wrap=True,
    )


def _check_out(out: Path, force: bool) -> None:
    """-o may be new or empty; an existing model directory only with --force; never a
    folder of other files (replacing it would delete them)."""
    from voxmeter.compress.artifact import is_artifact

    if not out.exists():
        return
    if not out.is_dir():
        raise SpecError(f"-o {out}: exists and is not a directory")
    if not any(out.iterdir()):
        return
    if not is_artifact(out):
        raise SpecError(f"-o {out}: holds files that are not a voxmeter model; not replacing it")
    if not force:
        raise SpecError(f"-o {out}: a model directory is already there; pass --force to replace it")


@app.command(rich_help_panel=PANEL)
def sensitivity(
    model: str = typer.Option("tiny.en", help="a model name or directory (fp32)"),
    train_data: str = typer.Option("", "--train-data", "--data", help=TRAIN_HELP),
    labeller: str = typer.Option(
        "teacher", help="labels clips without reference: teacher (this model) or base"
    ),
    train_clips: int = typer.Option(
        256, min=0, help="a seeded subset spread over games and speakers (0 = all)"
    ),
    max_clips: int = typer.Option(0, min=0, help="use only the first N clips (0 = all)"),
    weights_only: bool = typer.Option(
        False,
        "--weights-only",
        help="round weights alone (fake quantization, fp32 activations) instead of running "
        "the int8-dynamic scheme the hybrid runs",
    ),
    bits: int = typer.Option(8, help="weight bits (other than 8 only with --weights-only)"),
    threads: int = typer.Option(2, min=1, help="intra-op threads"),
    out: Path | None = typer.Option(
        None,
        "-o",
        "--out",
        help="the map as JSON; not inside a model dir (its .json files are hashed as weights)",
    ),
    html: Path | None = typer.Option(None, help="heat map HTML (default: beside the JSON)"),
    max_wer_increase: float | None = typer.Option(
        None, help="budget: estimated WER increase, points; prints the hybrid spec"
    ),
    max_weight_mb: float | None = typer.Option(
        None, help="budget: weight MiB; prints the hybrid spec"
    ),
    cache_dir: Path | None = typer.Option(None, help=CACHE_HELP),
    quiet: bool = typer.Option(False, help="no progress bar or notes"),
) -> None:
    """Quantize one layer group at a time; map WER and KL changes; keep the worst in fp32."""
    from voxmeter.compress.card import write_atomic
    from voxmeter.compress.sensitivity import choose_keep

    setup_logging(quiet)
    if max_wer_increase is not None and max_weight_mb is not None:
        raise SpecError("--max-wer-increase and --max-weight-mb: give one budget, not both")
    json_path = out or Path("sensitivity.json")
    html_path = html or json_path.with_suffix(".html")
    for p in (json_path, html_path):
        if not p.parent.is_dir():
            raise SpecError(f"{p}: folder {p.parent} does not exist")
    data = (train_data, labeller, train_clips)
    smap = _measure(model, data, max_clips, bits, weights_only, threads, cache_dir, quiet)
    write_atomic(json.dumps(smap, indent=1) + "\n", json_path)
    write_atomic(heatmap_html(smap), html_path)
    _print_map(smap)
    c = console()
    c.print(f"wrote {json_path} and {html_path}")
    if max_wer_increase is None and max_weight_mb is None:
        return
    budget = max_weight_mb * MIB if max_weight_mb is not None else None
    keep = choose_keep(smap, max_wer_increase=max_wer_increase, max_weight_bytes=budget)
    _print_keep(smap, keep, model)


def _measure(
    model: str,
    data: tuple[str, str, int],
    max_clips: int,
    bits: int,
    weights_only: bool,
    threads: int,
    cache: Path | None,
    quiet: bool,
) -> dict[str, Any]:
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
    )

    from voxmeter.assets.bundled import default_cache_dir, resolve_model
    from voxmeter.compress.labels import labelled_for
    from voxmeter.compress.sensitivity import sensitivity_map
    from voxmeter.compress.traindata import resolve
    from voxmeter.engines import load_engine
    from voxmeter.identity import FileDigests
    from voxmeter.run.harness import prepare_weights
    from voxmeter.spec import RunSpec, check_training

    if isinstance(bits, bool) or not 2 <= bits <= 16:
        raise SpecError(f"--bits: expected an integer from 2 to 16, got {bits}")
    if bits != 8 and not weights_only:
        raise SpecError(f"--bits {bits}: needs --weights-only (the int8 schemes are 8-bit)")
    train_data, labeller, train_clips = data
    check_training(train_data, labeller, train_clips)
    spec = RunSpec(model=model, threads=threads, max_clips=max_clips).validate()
    cache = default_cache_dir(cache)
    train = resolve(train_data, labeller, train_clips, FileDigests(cache))  # checked disjoint
    if max_clips:
        train.dataset.clips = train.dataset.clips[:max_clips]
    # prepared as `compress` prepares its source: the same weights digest keys the labels
    source = prepare_weights(spec, resolve_model(model, cache), cache)[0]
    engine = load_engine(spec, cache, source)
    bar = Progress(
        TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
        TimeRemainingColumn(), console=console_err(), transient=True, disable=quiet,
    )  # fmt: skip
    with bar:
        task = bar.add_task("sensitivity", total=None)

        def progress(what: str, done: int, total: int) -> None:
            bar.update(task, completed=done, total=total, description=what)

        dataset = labelled_for(engine, train, cache, progress)
        smap = sensitivity_map(
            engine, dataset, bits=bits, weights_only=weights_only, progress=progress
        )
    smap["data"].update(labeller=train.labeller, train_clips=train.train_clips)
    return smap


def console_err() -> Any:
    from rich.console import Console

    return Console(stderr=True)


def _print_map(smap: dict[str, Any]) -> None:
    from rich.markup import escape
    from rich.table import Table

    from voxmeter.compress.sensitivity import ALL

    grans, w = smap["granularities"], smap["weights"]
    data = smap["data"]
    what = "weights only" if smap.get("measured") == "weights-only" else "int8-dynamic"
    t = Table(
        title=escape(
            f"{smap['model']}: {what} ({smap['bits']}-bit), one group at a time; "
            f"{data['name']} ({data['n_clips']} clips, {smap['baseline']['ref_words']} words), "
            f"fp32 WER {_f(smap['baseline']['wer'])}"
        ),
        title_justify="left",
    )
    t.add_column("group")
    for g in grans:
        t.add_column(f"{g} ΔWER (95% CI)", justify="right")
        t.add_column(f"{g} KL", justify="right")
    t.add_column("fp32 bytes", justify="right")
    t.add_column(f"int{smap['bits']} bytes", justify="right")
    joint = smap.get("all_groups", smap["groups"])
    for group in [*smap["groups"], ALL]:
        row = [group]
        for g in grans:
            c = smap["cells"][g][group]
            row += [escape(_with_ci(c["delta_wer"], c.get("delta_wer_ci"))), f"{c['kl']:.2e}"]
        members = joint if group == ALL else [group]
        fp32 = sum(w[x]["fp32_bytes"] for x in members)
        q = sum(w[x]["quant_bytes"][grans[0]] for x in members)
        t.add_row(*row, f"{fp32:,}", f"{q:,}", end_section=group == smap["groups"][-1])
    sums = ["additive estimate"]
    for g in grans:
        a = smap["additivity"][g]
        sums += [_f(a["estimate_delta_wer"], signed=True), f"{a['sum_kl']:.2e}"]
    t.add_row(*sums, "", "", style="dim")
    c = console()
    c.print(t)
    c.print(
        f"'{ALL}' = {', '.join(joint)} quantized at once (measured); 'additive estimate' = the "
        "sum of those groups' WER increases (the estimate a hybrid's budget uses) and of their KL"
    )
    for line in smap.get("warnings") or []:
        c.print(f"[yellow]warning:[/] {escape(line)}")
    _print_gain(smap)


def _print_gain(smap: dict[str, Any]) -> None:
    from voxmeter.compress.sensitivity import ALL, per_channel_gain

    gain = per_channel_gain(smap)
    if gain is None:
        return
    g = gain["gain"]
    console().print(
        f"per-tensor -> per-channel: '{ALL}' gains {_f(g[ALL]['wer'])} WER points "
        f"(KL {g[ALL]['kl']:.2e}); conv front end alone {_f(g['conv']['wer'])} points "
        f"(KL {g['conv']['kl']:.2e}, {_pct(gain['conv_share_kl'])} of the '{ALL}' KL gain)"
    )


def _print_keep(smap: dict[str, Any], keep: list[str], model: str) -> None:
    from rich.markup import escape

    from voxmeter.compress.sensitivity import PER_CHANNEL, estimate, keep_spec

    est = estimate(smap, keep)
    quantized = [g for g in smap["groups"] if g not in {*keep, "conv"}]
    nothing = smap["additivity"][PER_CHANNEL]
    c = console()
    c.print(
        escape(
            f"keep fp32 (most sensitive first): {', '.join(keep) or 'nothing'}; conv stays fp32 "
            f"(no int8 path quantizes it). Estimated: WER +{est['delta_wer']:.2f} points (additive "
            f"estimate over the {len(quantized)} groups it quantizes; with nothing kept the same "
            f"estimate is {_f(nothing['estimate_delta_wer'], signed=True)} against "
            f"{_with_ci(nothing['all_delta_wer'], nothing.get('all_delta_wer_ci'))} measured "
            f"jointly), weights {est['weight_bytes'] / MIB:.2f} MiB"
        ),
        soft_wrap=True,
    )
    if smap.get("warnings"):
        c.print("[yellow]warning:[/] the estimate rests on per-group changes within the noise")
    c.print(f"voxmeter bench --model {model} {keep_spec(keep)}", soft_wrap=True)


def heatmap_html(smap: dict[str, Any]) -> str:
    """One self-contained page: the map's heat map (report/figures.py's `sensitivity_figure`,
    the one the main report shows too) with the figures' method under it."""
    import html as _html

    from voxmeter.report.figures import sensitivity_figure

    fig = sensitivity_figure(smap)
    body = fig.to_html(full_html=False, include_plotlyjs=True, config={"displaylogo": False})
    return (
        "<!doctype html><html><head><meta charset='utf-8'><title>voxmeter sensitivity</title>"
        f"</head><body>{body}<p>{_html.escape(smap['method'])}</p></body></html>\n"
    )


def _f(v: float | None, signed: bool = False) -> str:
    if v is None:
        return "n/a"
    return f"{v:+.2f}" if signed else f"{v:.2f}"


def _with_ci(v: float | None, ci: list[float] | None) -> str:
    """A WER change with its interval: '+0.36 [-0.18, +0.90]'."""
    if v is None or not ci:
        return _f(v, signed=True)
    return f"{v:+.2f} [{ci[0]:+.2f}, {ci[1]:+.2f}]"


def _pct(v: float | None) -> str:
    return "n/a" if v is None else f"{v:.0%}"


@app.command(rich_help_panel=PANEL)
def card(
    directory: Path = typer.Argument(..., help="a compressed model directory"),
    store: Path = typer.Option(Path(DEFAULT_STORE_PATH), help=STORE_HELP),
    sensitivity: Path | None = typer.Option(
        None, help="a sensitivity map (default: DIR/sensitivity.json when there)"
    ),
    out: Path | None = typer.Option(None, "-o", "--out", help="default: DIR/README.md"),
    cache_dir: Path | None = typer.Option(None, help=CACHE_HELP),
) -> None:
    """Write a compressed model's card: methods, measured figures, known failure modes."""
    from voxmeter.compress.card import README, model_card, writable, write_atomic

    setup_logging(True)
    target = writable(out or Path(directory) / README, "card -o")  # before any work
    text = model_card(directory, store, sensitivity=sensitivity, cache_dir=cache_dir)
    path = write_atomic(text, target, "card -o")
    console().print(f"wrote {path}")
