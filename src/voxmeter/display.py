"""What `voxmeter bench|models|flops|peak` print: rich tables, or one JSON document.

Every figure is summarised by the store's own aggregation (store.aggregate_results), so
`bench`, `results show` and the report print the same numbers with the same intervals: latency
percentiles pooled over clips x repeats, each with a cluster bootstrap interval (a clip
resampled with all its repeats), WER and CER with a bootstrap CI over clips, other figures as
mean ± half-width of a t-interval over repeats; every interval is printed with the method the
aggregation names. Text from data and users (labels, clip ids, reasons) is escaped, so rich
never reads its brackets as markup.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from voxmeter.result import METRIC_UNITS, Result
from voxmeter.spec import RunSpec

console = Console(width=None if sys.stdout.isatty() else 140)


def bench_row(results: list[Result]) -> Any:
    """The bench's repeats summarised exactly as the store summarises them (one AggRow)."""
    from voxmeter.store import aggregate_results

    rows = aggregate_results(results)
    return rows[0] if rows else None


def _agg_json(row: Any) -> dict[str, Any]:
    return {k: m.to_dict() for k, m in row.metrics.items()}


def results_json(spec: RunSpec, results: list[Result], note: str = "") -> dict[str, Any]:
    row = bench_row(results)
    return {
        "spec": spec.to_dict(),
        "spec_hash": spec.spec_hash,
        "label": spec.label(),
        "identity": results[0].identity.to_dict() if results else None,
        "note": note,
        "units": {k: u for k, (u, _) in METRIC_UNITS.items()},
        "aggregate": _agg_json(row) if row is not None else {},
        "notes": row.notes if row is not None else {},
        "skipped_clips": results[-1].skipped if results else [],
        "repeats": [r.to_dict() for r in results],
    }


def _fmt(v: Any, digits: int = 2) -> str:
    if v is None:
        return "n/a"
    if isinstance(v, float):
        if abs(v) >= 1000:
            return f"{v:,.0f}"
        return f"{v:.{digits}f}"
    return str(v)


def cell(row: Any, key: str, digits: int = 2) -> str:
    """value ± CI half-width (the figure's own CI method), or n/a."""
    m = row.metrics.get(key)
    if m is None:
        return "n/a"
    s = _fmt(m.mean, digits)
    if m.half_width is not None:
        s += f" ± {_fmt(m.half_width, digits)}"
    return s


def ci_note(row: Any, key: str) -> str:
    m = row.metrics.get(key)
    if m is None:
        return ""
    return f"{m.how}; CI: {m.ci_method}" if m.ci_method else m.how


def _row(t: Table, *cells: Any, **kw: Any) -> None:
    """t.add_row with every text cell taken literally: labels, clip ids, methods and
    intervals ("[1.2, 3.4]", "[n/a, n/a]") hold brackets that rich would read as markup."""
    t.add_row(*(escape(c) if isinstance(c, str) else c for c in cells), **kw)


def _is_estimated(method: str | None) -> bool:
    return bool(method) and str(method).startswith("estimated")


def print_bench(spec: RunSpec, results: list[Result], note: str = "") -> None:
    if not results:
        console.print("[red]no results[/red]")
        return
    row = bench_row(results)
    last = results[-1]
    m = last.metrics
    title = f"{spec.label()}  [{spec.spec_hash}]  {len(results)} repeat(s)"
    t = Table(title=escape(title), title_justify="left")
    t.add_column("figure")
    t.add_column("value", justify="right")
    t.add_column("unit")
    t.add_column("how", style="dim")

    def add(name: str, key: str, digits: int = 2, how: str = "") -> None:
        unit = METRIC_UNITS.get(key, ("", ""))[0]
        _row(t, name, cell(row, key, digits), unit, how or ci_note(row, key))

    t.add_section()
    _accuracy_rows(t, row, m, last)
    t.add_section()
    _latency_rows(t, row, add)
    t.add_section()
    _memory_rows(t, spec, row, m, last, add)
    t.add_section()
    _flops_rows(t, spec, m, last, add)
    t.add_section()
    est = " (estimated)" if _is_estimated(m.get("energy_method")) else ""
    add(f"energy{est}", "energy_j", 2, m.get("energy_method", ""))
    add(f"energy per audio s{est}", "j_per_audio_s", 3)
    add(f"energy per word{est}", "j_per_word", 3)
    t.add_section()
    add("CPU MHz mean", "cpu_mhz_mean", 0)
    add("CPU MHz min", "cpu_mhz_min", 0)
    add("other processes", "other_cpu_pct", 1)
    console.print(t)
    _print_footer(spec, results, last, note)


def _accuracy_rows(t: Table, row: Any, m: dict, last: Result) -> None:
    if m.get("wer") is None:
        _row(t, "WER / CER", "n/a", "", m.get("accuracy_note", "no reference or no weights"))
    else:
        scope = " (partial)" if m.get("wer_scope") else ""
        ci = f"[{_fmt(m.get('wer_ci_lo'))}, {_fmt(m.get('wer_ci_hi'))}]"
        how = f"corpus, normalised; 95% CI: bootstrap over clips {ci}"
        _row(t, f"WER{scope}", _fmt(m["wer"]), "%", how)
        cer_ci = f"[{_fmt(m.get('cer_ci_lo'))}, {_fmt(m.get('cer_ci_hi'))}]"
        cer_how = f"corpus, normalised; 95% CI: bootstrap over clips {cer_ci}"
        _row(t, f"CER{scope}", _fmt(m.get("cer")), "%", cer_how)
        if scope:
            _row(t, "", "", "", m["wer_scope"])
    _row(
        t,
        "clips",
        f"{m.get('n_clips')} ({m.get('n_skipped', 0)} skipped)",
        "",
        f"{_fmt(m.get('audio_s'), 1)} s audio",
    )
    flagged = [c for c in last.clips if c.get("flags")]
    _row(t, "flagged clips", str(len(flagged)), "", "hypothesis looks like a failure")


def percentile_cis(aggs: list[Any], names: tuple[str, ...] = ("p50", "p90", "p99")) -> str:
    """Each percentile's 95% CI, e.g. "95% CI (cluster bootstrap over clips): p50 [9.8, 10.4],
    p90 [...]", its method as the store's aggregation names it; "no CI" where none."""
    pairs = [(n, a) for n, a in zip(names, aggs) if a is not None]
    methods = list(dict.fromkeys(a.ci_method for _, a in pairs if a.ci_lo is not None))
    if not methods:
        return "no CI (too few runs)"
    parts = [
        f"{n} [{a.ci_lo:.1f}, {a.ci_hi:.1f}]" if a.ci_lo is not None else f"{n} no CI"
        for n, a in pairs
    ]
    return f"95% CI ({'; '.join(m or 'method not recorded' for m in methods)}): " + ", ".join(parts)


def _latency_rows(t: Table, row: Any, add: Any) -> None:
    from voxmeter.engines.base import ASR_STAGES

    labels = {st.key: st.label for st in ASR_STAGES}
    b = int(row.spec.get("batch_size") or 1)
    per = f"per clip at batch {b}" + (" (a clip waits for its whole batch)" if b > 1 else "")
    names = {
        "e2e": "end to end",
        "prefill": "decoder prefill",
        "batch": "per batch",
        "window": "per long-form window",
    }
    for stage in [*row.stage_keys, "prefill", "e2e", "batch", "window"]:
        ms = [row.metrics.get(f"{stage}_ms_p{q}") for q in (50, 90, 99)]
        if ms[0] is None:
            continue
        label = names.get(stage, labels.get(stage))
        scope = "" if stage in ("batch", "window") else f"{per}, "
        _row(
            t,
            f"latency {label or stage}",
            " / ".join(f"{x.mean:.1f}" for x in ms if x is not None),
            "ms",
            f"p50/p90/p99 {scope}{ms[0].how}; {percentile_cis(ms)}",
        )
    add(
        "decoder per token",
        "dec_ms_per_token",
        2,
        "after the prefill: (decode - prefill) / (steps - 1)",
    )
    if "padding_share" in row.metrics:
        add("batch padding", "padding_share", 1, "input frames that were padding (longest clip)")
    if "n_windows" in row.metrics:
        _row(
            t,
            "long-form windows",
            f"{row.value('n_windows'):.0f} ({row.value('n_windows_flagged'):.0f} flagged)",
            "",
            f"{row.value('n_recordings'):.0f} recording(s), {row.spec.get('workload', {}).get('longform', 'sequential')}; "
            + row.notes.get("longform_decoding", ""),
        )
    add("RTF", "rtf", 4)
    add("RTFx", "rtfx", 1)
    add("throughput", "throughput_clips_s", 2)
    add("model load", "load_s", 2, "not in RTFx; conversion and digests excluded")
    for name, key in (
        ("conversion (one-off)", "convert_s"),
        ("compression (one-off)", "compress_s"),
        ("digests (one-off)", "digest_s"),
    ):
        if key in row.metrics:  # paid once, by the first run that needed it
            add(name, key, 2, "first run only; not in model load")


def _precision_of_spec(spec: RunSpec) -> str:
    c = spec.compression
    if c.quant != "none":
        return c.quant + ("+emb" if c.quant_embed else "")
    return "fp32, int8 emb" if c.quant_embed else spec.axes.precision


def _memory_rows(t: Table, spec: RunSpec, row: Any, m: dict, last: Result, add: Any) -> None:
    _row(t, "parameters", f"{m.get('param_count', 0) / 1e6:.2f} M", "", "")
    _row(
        t,
        "weights",
        _fmt((m.get("weight_bytes") or 0) / 2**20),
        "MiB",
        m.get("weight_bytes_method", ""),
    )
    if m.get("precision_method"):
        shown = m.get("precision") or _precision_of_spec(spec)  # rows stored before it
        _row(t, "precision", shown, "", m["precision_method"])
    add("peak RSS (clips)", "peak_rss_mb", 1, f"{m.get('rss_method', '')}; {last.mode}")
    add("peak RSS (process)", "process_peak_rss_mb", 1, "model load included")
    add("steady RSS", "steady_rss_mb", 1)
    for key in row.stage_keys:
        add(f"transient {key}", f"{key}_mem_mb", 1, "peak in stage - RSS before")
    if m.get("cuda_max_alloc_mb") is not None:
        add("CUDA max allocated", "cuda_max_alloc_mb", 1)
    if m.get("gpu_process_mb") is not None:
        add("GPU memory (process)", "gpu_process_mb", 1, m.get("gpu_mem_method", ""))


def _flops_rows(t: Table, spec: RunSpec, m: dict, last: Result, add: Any) -> None:
    from voxmeter.measure.flops import paper_label

    for stage in ("enc", "dec"):
        name = "encoder" if stage == "enc" else "decoder"
        ratio = m.get(f"flops_counted_vs_analytic_{stage}")
        same = m.get(f"gflops_analytic_counted_{stage}")
        how = "on the same counted clips"
        if ratio is not None:
            how += f"; counted/analytic {ratio:.4f}"
        _row(
            t,
            f"GFLOPs {name} counted | analytic",
            f"{_fmt(m.get(f'gflops_counted_{stage}'))} | {_fmt(same)}",
            "GFLOP/clip",
            how,
        )
        add(f"GFLOPs {name} analytic, all clips", f"gflops_analytic_{stage}", 2, "mean over clips")
    _row(t, "FLOPs counting", "", "", m.get("flops_counted_method", ""))
    _row(
        t,
        "GFLOPs total",
        f"{_fmt(m.get('gflops_analytic_total'))} | paper {_fmt(m.get('gflops_paper_total'))}",
        "GFLOP/clip",
        f"analytic | {paper_label()}",
    )
    gap = paper_gap(spec, m, last.clips)
    if gap:
        _row(t, "paper / analytic", gap[0], "", gap[1])
    add("encoder achieved", "enc_gflops_per_s", 1)
    add("share of matmul peak", "enc_peak_share", 1, m.get("peak_note", ""))


def _shapes_run(clips: list[dict]) -> tuple[float, float] | None:
    """Mean input frames and output tokens per clip (a recording: summed over its windows,
    every item of a batched window counted), from the clip records; None if not recorded."""
    frames, tokens = [], []
    for c in clips:
        wins = [w for w in c.get("windows", []) if "n_frames" in w]
        if "n_frames" in c:
            frames.append(c["n_frames"])
        elif wins:
            frames.append(
                sum(sum(w.get("item_frames") or [w["n_frames"]] * w.get("batch", 1)) for w in wins)
            )
        else:
            continue
        tokens.append(c.get("n_tokens", 0))
    if not frames:
        return None
    return sum(frames) / len(frames), sum(tokens) / len(tokens)


def paper_gap(spec: RunSpec, m: dict, clips: list[dict]) -> tuple[str, str] | None:
    """Why the paper column differs from the analytic one, from the shapes: (ratio, reason).

    The paper's formula assumes one 3000-frame input and 20 output tokens per clip, whatever
    ran, and charges every parameter 2 FLOPs per token, encoder tokens included; analytic
    counts each layer on the tokens it really sees, at the frames and tokens this run had.
    """
    from voxmeter.measure.flops import PAPER_FRAMES, PAPER_TOKENS

    analytic, paper = m.get("gflops_analytic_total"), m.get("gflops_paper_total")
    shapes = _shapes_run(clips)
    if not analytic or paper is None or shapes is None:
        return None
    frames, tokens = shapes
    k = spec.axes.stride
    enc_tokens = -(-(PAPER_FRAMES // 2) // k)  # Whisper's conv stem halves the frames
    reason = (
        f"the paper's formula assumes a {PAPER_FRAMES}-frame input ({enc_tokens} encoder "
        f"tokens at k={k}) and {PAPER_TOKENS} output tokens per clip, and charges every "
        "parameter (embeddings and decoder included) 2 FLOPs per token, encoder tokens too; "
        f"analytic counts each layer on the shapes run: {frames:,.0f} input frames and "
        f"{tokens:.1f} output tokens per clip on average"
    )
    return f"{paper / analytic:.2f}x", reason


def _print_footer(spec: RunSpec, results: list[Result], last: Result, note: str) -> None:
    env = last.env
    versions = env.get("versions", {})
    line = (
        f"env: voxmeter {env.get('voxmeter_version')} @ {env.get('git_commit')}, "
        f"python {env.get('python')}, torch {versions.get('torch')}, "
        f"ctranslate2 {versions.get('ctranslate2')}; CPU {env.get('cpu_model')}; "
        f"threads {spec.threads}; GPU {env.get('gpu') or 'none'}; seed {spec.seed}"
    )
    console.print(f"[dim]{escape(line)}[/dim]")
    console.print(f"[dim]identity: {escape(last.identity.short())}[/dim]", highlight=False)
    for c in [c for c in last.clips if c.get("flags")]:
        text = f"{c['id']}: {', '.join(c['flags'])}: {c['hyp'][:80]!r}"
        console.print(f"[yellow]flagged[/yellow] {escape(text)}")
    for sk in last.skipped:
        text = f"{sk['id']}: {sk['reason']}"
        console.print(f"[yellow]skipped[/yellow] {escape(text)}", highlight=False)
    for w in sorted({w for r in results for w in r.warnings}):
        console.print(f"[yellow]warning[/yellow] {escape(w)}")
    if note:
        console.print(f"[dim]{escape(note)}[/dim]")


def list_models(model: str | None, cache_dir: Path | None, as_json: bool) -> None:
    from voxmeter.assets.bundled import resolve_model
    from voxmeter.assets.dims import ARCHITECTURES, param_count
    from voxmeter.errors import ModelError

    rows = []
    names = [*ARCHITECTURES] + ([model] if model else [])  # every size; which have weights
    for name in names:
        try:
            src = resolve_model(name, cache_dir)
        except ModelError as e:
            if name == model:
                raise
            rows.append({"name": name, "kind": "missing", "note": str(e)})
            continue
        n = param_count(src.dims)
        disk = None
        if src.ct2_dir is not None and (src.ct2_dir / "model.bin").is_file():
            disk = (src.ct2_dir / "model.bin").stat().st_size
        rows.append(
            {
                "name": src.name,
                "kind": src.kind,
                "params": n,
                "weight_bytes_fp32": n * 4,
                "file_bytes": disk,
                "accuracy": "yes" if src.has_weights else "n/a: no weights here (--cost-only)",
                "path": str(src.ct2_dir or src.hf_dir or ""),
            }
        )
    if as_json:
        print(json.dumps(rows, indent=2))
        return
    t = Table(title="Whisper models: with weights here, or cost-only (random weights, --cost-only)")
    for col in ("name", "kind", "params", "fp32 weights", "on disk", "accuracy"):
        t.add_column(col)
    for r in rows:
        if r["kind"] == "missing":
            _row(t, r["name"], "missing", "", "", "", r["note"])
            continue
        disk = f"{r['file_bytes'] / 2**20:.1f} MiB" if r["file_bytes"] else ""
        _row(
            t,
            r["name"],
            r["kind"],
            f"{r['params'] / 1e6:.1f} M",
            f"{r['weight_bytes_fp32'] / 2**20:.1f} MiB",
            disk,
            r["accuracy"],
        )
    console.print(t)
    console.print("[dim]paths: voxmeter models --json[/dim]")


def print_flops(table: dict[str, Any]) -> None:
    t = Table(title=escape(f"FLOPs per clip: {table['label']} (GFLOP; 2 FLOPs per multiply-add)"))
    for col in ("stage", "counted", "analytic", "paper", "counted/analytic"):
        t.add_column(col, justify="right" if col != "stage" else "left")
    for stage in ("encoder", "decoder", "total"):
        c, a, p = (table[k].get(stage) for k in ("counted", "analytic", "paper"))
        ratio = f"{c / a:.4f}" if c is not None and a else "n/a"
        _row(
            t, stage, _fmt(c and c / 1e9, 3), _fmt(a and a / 1e9, 3), _fmt(p and p / 1e9, 3), ratio
        )
    console.print(t)
    for line in table.get("notes", []):
        console.print(f"[dim]{escape(line)}[/dim]")


def print_peak(res: Any, as_json: bool) -> None:
    from dataclasses import asdict, is_dataclass

    d = asdict(res) if is_dataclass(res) else dict(res)
    if as_json:
        print(json.dumps(d, indent=2, default=str))
        return
    console.print(
        f"matmul peak: [bold]{d.get('gflops_per_s', 0):.1f} GFLOP/s[/bold] "
        + ", ".join(f"{k}={v}" for k, v in d.items() if k != "gflops_per_s")
    )
