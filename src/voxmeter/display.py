"""What `voxmeter bench|models|flops|peak` print: rich tables, or one JSON document.

Figures over repeats are shown as mean ± half-width of a 95% CI (bootstrap over repeats; none
with fewer than 3 repeats). Latency percentiles pool clips x repeats. WER's CI is a bootstrap
over clips (greedy decoding gives the same text every repeat).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console
from rich.table import Table

from voxmeter.result import METRIC_UNITS, Result
from voxmeter.spec import RunSpec

console = Console(width=None if sys.stdout.isatty() else 140)


def _summ(values: list[float]) -> dict[str, Any]:
    from voxmeter.measure.stats import summarize

    vals = [float(v) for v in values if v is not None]
    if not vals:
        return {"mean": None, "ci": None, "n": 0}
    s = summarize(vals)
    ci = None if s.ci_lo is None else [s.ci_lo, s.ci_hi]
    return {"mean": s.mean, "ci": ci, "n": s.n}


def pooled_latency(results: list[Result]) -> dict[str, Any]:
    """p50/p90/p99 per stage over clips x repeats, and decoder ms per token."""
    out: dict[str, Any] = {}
    for stage in ("feat", "enc", "dec", "e2e"):
        vals = [c[f"{stage}_ms"] for r in results for c in r.clips if f"{stage}_ms" in c]
        if vals:
            p = np.percentile(vals, [50, 90, 99])
            out[stage] = {"p50": p[0], "p90": p[1], "p99": p[2], "n": len(vals)}
    return out


def aggregate(results: list[Result]) -> dict[str, Any]:
    keys = sorted({k for r in results for k, v in r.metrics.items() if isinstance(v, int | float)})
    return {k: _summ([r.metrics.get(k) for r in results]) for k in keys}


def results_json(spec: RunSpec, results: list[Result], note: str = "") -> dict[str, Any]:
    return {
        "spec": spec.to_dict(),
        "spec_hash": spec.spec_hash,
        "label": spec.label(),
        "note": note,
        "units": {k: u for k, (u, _) in METRIC_UNITS.items()},
        "aggregate": aggregate(results),
        "latency_pooled_ms": pooled_latency(results),
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


def _cell(agg: dict[str, Any], key: str, digits: int = 2) -> str:
    a = agg.get(key)
    if not a or a["mean"] is None:
        return "n/a"
    s = _fmt(a["mean"], digits)
    if a["ci"] is not None:
        s += f" ± {_fmt((a['ci'][1] - a['ci'][0]) / 2, digits)}"
    return s


def print_bench(spec: RunSpec, results: list[Result], note: str = "") -> None:
    if not results:
        console.print("[red]no results[/red]")
        return
    agg = aggregate(results)
    last = results[-1]
    m = last.metrics
    lat = pooled_latency(results)
    t = Table(
        title=f"{spec.label()}  [{spec.spec_hash}]  {len(results)} repeat(s)", title_justify="left"
    )
    t.add_column("figure")
    t.add_column("value", justify="right")
    t.add_column("unit")
    t.add_column("how", style="dim")

    def row(name: str, key: str, digits: int = 2, how: str = "") -> None:
        unit = METRIC_UNITS.get(key, ("", ""))[0]
        t.add_row(name, _cell(agg, key, digits), unit, how)

    t.add_section()
    if m.get("wer") is None:
        t.add_row("WER / CER", "n/a", "", m.get("accuracy_note", "no reference or no weights"))
    else:
        ci = f"[{_fmt(m.get('wer_ci_lo'))}, {_fmt(m.get('wer_ci_hi'))}]"
        t.add_row("WER", _fmt(m["wer"]), "%", f"corpus, normalised; 95% CI over clips {ci}")
        t.add_row("CER", _fmt(m.get("cer")), "%", "corpus, normalised")
    t.add_row(
        "clips",
        f"{m.get('n_clips')} ({m.get('n_skipped', 0)} skipped)",
        "",
        f"{_fmt(m.get('audio_s'), 1)} s audio",
    )
    flagged = [c for c in last.clips if c.get("flags")]
    t.add_row("flagged clips", str(len(flagged)), "", "hypothesis looks like a failure")
    t.add_section()
    for stage, label in (
        ("feat", "features"),
        ("enc", "encoder"),
        ("dec", "decoder"),
        ("e2e", "end to end"),
    ):
        if stage in lat:
            p = lat[stage]
            t.add_row(
                f"latency {label}",
                f"{p['p50']:.1f} / {p['p90']:.1f} / {p['p99']:.1f}",
                "ms",
                f"p50/p90/p99 per clip over {p['n']} clip runs (batch 1)",
            )
    row("decoder per token", "dec_ms_per_token")
    row("RTF", "rtf", 4, "processing s / audio s")
    row("RTFx", "rtfx", 1, "audio s / processing s, after warm-up")
    row("throughput", "throughput_clips_s", 2)
    row("model load", "load_s", 2, "not in RTFx")
    t.add_section()
    t.add_row("parameters", f"{m.get('param_count', 0) / 1e6:.2f} M", "", "")
    t.add_row(
        "weights",
        _fmt((m.get("weight_bytes") or 0) / 2**20),
        "MiB",
        m.get("weight_bytes_method", ""),
    )
    if m.get("precision_method"):
        t.add_row("precision", spec.axes.precision, "", m["precision_method"])
    row("peak RSS (clips)", "peak_rss_mb", 1, f"{m.get('rss_method', '')}; {last.mode}")
    row("peak RSS (process)", "process_peak_rss_mb", 1, "model load included")
    row("steady RSS", "steady_rss_mb", 1)
    row("transient features", "feat_mem_mb", 1, "peak in stage - RSS before")
    row("transient encoder", "enc_mem_mb", 1, "peak in stage - RSS before")
    row("transient decoder", "dec_mem_mb", 1, "peak in stage - RSS before")
    if m.get("cuda_max_alloc_mb") is not None:
        row("CUDA max allocated", "cuda_max_alloc_mb", 1)
    t.add_section()
    for stage in ("enc", "dec"):
        name = "encoder" if stage == "enc" else "decoder"
        ratio = m.get(f"flops_counted_vs_analytic_{stage}")
        how = "analytic: mean over clips, from the shapes run"
        if ratio is not None:
            how += f"; counted/analytic on the counted clips {ratio:.4f}"
        t.add_row(
            f"GFLOPs {name} counted | analytic",
            f"{_fmt(m.get(f'gflops_counted_{stage}'))} | {_fmt(m.get(f'gflops_analytic_{stage}'))}",
            "GFLOP/clip",
            how,
        )
    t.add_row("FLOPs counting", "", "", m.get("flops_counted_method", ""))
    t.add_row(
        "GFLOPs total",
        f"{_fmt(m.get('gflops_analytic_total'))} | paper {_fmt(m.get('gflops_paper_total'))}",
        "GFLOP/clip",
        "analytic | paper formula (3000 frames, 20 tokens)",
    )
    row("encoder achieved", "enc_gflops_per_s", 1)
    row("share of matmul peak", "enc_peak_share", 1, m.get("peak_note", ""))
    t.add_section()
    row("energy", "energy_j", 2, m.get("energy_method", ""))
    row("energy per audio s", "j_per_audio_s", 3)
    row("energy per word", "j_per_word", 3)
    t.add_section()
    row("CPU MHz mean", "cpu_mhz_mean", 0)
    row("CPU MHz min", "cpu_mhz_min", 0)
    row("other processes", "other_cpu_pct", 1)
    console.print(t)
    env = last.env
    console.print(
        f"[dim]env: voxmeter {env.get('voxmeter_version')} @ {env.get('git_commit')}, "
        f"python {env.get('python')}, torch {env.get('versions', {}).get('torch')}, "
        f"ctranslate2 {env.get('versions', {}).get('ctranslate2')}; CPU {env.get('cpu_model')}; "
        f"threads {spec.threads}; GPU {env.get('gpu') or 'none'}; seed {spec.seed}[/dim]"
    )
    for c in flagged:
        console.print(
            f"[yellow]flagged[/yellow] {c['id']}: {', '.join(c['flags'])}: {c['hyp'][:80]!r}"
        )
    for w in sorted({w for r in results for w in r.warnings}):
        console.print(f"[yellow]warning[/yellow] {w}")
    if note:
        console.print(f"[dim]{note}[/dim]")


def list_models(model: str | None, cache_dir: Path | None, as_json: bool) -> None:
    from voxmeter.assets.bundled import BUNDLED, COST_ONLY, resolve_model
    from voxmeter.assets.dims import param_count
    from voxmeter.errors import ModelError

    rows = []
    names = [*BUNDLED, *COST_ONLY] + ([model] if model else [])
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
                "accuracy": "yes" if src.has_weights else "n/a (cost-only)",
                "path": str(src.ct2_dir or src.hf_dir or ""),
            }
        )
    if as_json:
        print(json.dumps(rows, indent=2))
        return
    t = Table(title="models that can run here")
    for col in ("name", "kind", "params", "fp32 weights", "on disk", "accuracy"):
        t.add_column(col)
    for r in rows:
        if r["kind"] == "missing":
            t.add_row(r["name"], "missing", "", "", "", r["note"])
            continue
        disk = f"{r['file_bytes'] / 2**20:.1f} MiB" if r["file_bytes"] else ""
        t.add_row(
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
    t = Table(title=f"FLOPs per clip: {table['label']} (GFLOP; 2 FLOPs per multiply-add)")
    for col in ("stage", "counted", "analytic", "paper", "counted/analytic"):
        t.add_column(col, justify="right" if col != "stage" else "left")
    for stage in ("encoder", "decoder", "total"):
        c, a, p = (table[k].get(stage) for k in ("counted", "analytic", "paper"))
        ratio = f"{c / a:.4f}" if c is not None and a else "n/a"
        t.add_row(
            stage, _fmt(c and c / 1e9, 3), _fmt(a and a / 1e9, 3), _fmt(p and p / 1e9, 3), ratio
        )
    console.print(t)
    for line in table.get("notes", []):
        console.print(f"[dim]{line}[/dim]")


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
