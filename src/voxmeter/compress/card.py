"""A compressed model's card: what made it and what it measured, from records, never typed in.

`model_card` reads the directory's own `voxmeter.json` (the source model, the settings, each
method's report, the calibration set) and the results store: every result whose spec's model
resolves to this directory (resolved absolute paths compared) and whose weights digest is the
directory's as it is now, so a directory rebuilt in place never inherits the old weights'
figures. Figures come from the store's own aggregation (`aggregate_results`), so the card
prints what `bench` and `results show` print, with the same intervals and methods. With no
result, the card says so and gives the command that would measure one; a figure that was not
measured is never filled in. Known failure modes are the clips the harness flagged, the clips
it skipped, and, when a sensitivity map is at hand, the layer groups int8 hurts most.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from voxmeter.compress.compare import base_for, base_rows, wer_gap
from voxmeter.compress.writing import writable, write_atomic
from voxmeter.errors import ModelError, SpecError

__all__ = ["README", "SENSITIVITY", "model_card", "writable", "write_atomic"]

README = "README.md"
SENSITIVITY = "sensitivity.json"
WORST = 3  # sensitivity groups named on the card


def model_card(
    directory: Path,
    store_path: Path,
    *,
    sensitivity: Path | None = None,
    cache_dir: Path | None = None,
) -> str:
    """The card of the compressed model in `directory`, as markdown."""
    from voxmeter.compress.artifact import META, is_artifact, read_meta

    d = Path(directory).expanduser().resolve()
    if not is_artifact(d):
        raise ModelError(
            f"{d}: not a compressed model directory (no {META}); build one with voxmeter compress"
        )
    meta = read_meta(d)
    rows, notes = _results_for(d, Path(store_path), cache_dir)
    base = base_rows(Path(store_path), meta) if rows else []
    given = Path(sensitivity) if sensitivity is not None else None
    smap = _sensitivity(given or d / SENSITIVITY, required=given is not None)
    parts = [
        f"# {d.name}\n",
        _source(d, meta),
        _measured(d, Path(store_path), rows, notes, base),
        _failures(rows, smap),
    ]
    return "\n".join(p for p in parts if p)


# -- the records -------------------------------------------------------------------------------


def _resolves_to(model: Any, d: Path) -> bool:
    try:
        return Path(str(model)).expanduser().resolve() == d
    except (OSError, RuntimeError):
        return False


def _results_for(d: Path, store_path: Path, cache_dir: Path | None) -> tuple[list[Any], list[str]]:
    """Aggregated rows of this directory's results, and notes on what was left out."""
    from voxmeter.assets.bundled import default_cache_dir, resolve_model
    from voxmeter.identity import FileDigests, weights_digest
    from voxmeter.store import aggregate_results, open_existing

    if not store_path.is_file():
        return [], []
    with open_existing(store_path) as store:
        mine = [r for r in store.all() if _resolves_to(r.spec.get("model"), d)]
    if not mine:
        return [], []
    cache = default_cache_dir(cache_dir)
    files = FileDigests(cache)
    digest = weights_digest(resolve_model(str(d), cache), files)
    files.save()
    now = [r for r in mine if r.weights_digest == digest]
    side = (d / SENSITIVITY).is_file()  # identity hashes every .json of a model directory
    notes = []
    if len(now) < len(mine):
        notes.append(
            f"{len(mine) - len(now)} stored repeat(s) measured other weights at this path "
            "(the directory was rebuilt or its files changed since); left out"
            + (f"; note that {SENSITIVITY} there is hashed with the weights" if side else "")
        )
    return aggregate_results(now), notes


def _sensitivity(path: Path, required: bool) -> dict[str, Any] | None:
    if not path.is_file():
        if required:
            raise SpecError(f"--sensitivity: {path}: no such file")
        return None
    try:
        smap = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise SpecError(f"{path}: not a sensitivity map ({e})") from None
    if not isinstance(smap, dict) or "cells" not in smap or "groups" not in smap:
        raise SpecError(f"{path}: not a sensitivity map (no groups or cells)")
    return smap


# -- the sections ------------------------------------------------------------------------------


def _source(d: Path, meta: dict[str, Any]) -> str:
    base = meta.get("base", {})
    comp = meta.get("compression", {})
    report = meta.get("report", {})
    calib = meta.get("calibration", {})
    synth = ", synthesized speech, not a test set" if calib.get("data") == "calib" else ""
    lines = [
        "## Source and methods\n",
        (
            f"- Source model: {base.get('name', '?')} (weights digest "
            f"{str(meta.get('base_digest', '?'))[:16]})"
        ),
        (
            f"- Built by voxmeter {meta.get('voxmeter', '?')}; calibration data: "
            f"{_calibration(calib, synth)}"
        ),
        f"- Parameters: {_int(report.get('params_before'))} -> {_int(report.get('params_after'))}",
        _quantization(meta.get("quantization") or {}),
        "",
        "Methods, in the order they ran:\n",
    ]
    for line in _methods(comp, report):
        lines.append(f"- {line}")
    return "\n".join(lines) + "\n"


def _quantization(carried: dict[str, Any]) -> str:
    if not carried:
        return (
            "- Quantization: none carried; the weights load fp32 (`--compress quant=...` adds it)."
        )
    what = ", ".join(f"{k}={v}" for k, v in carried.items())
    return (
        f"- Quantization carried by the directory and applied at every load: {what} "
        "(the weights are stored fp32)."
    )


def _calibration(calib: dict[str, Any], synth: str) -> str:
    """The calibration set, the clips it really used, and those skipped as bad input."""
    if calib.get("n_clips") == 0:
        return "none (no method here trains or ranks on speech)"
    skipped = calib.get("skipped") or []
    why = "; ".join(f"`{s.get('id')}`: {s.get('reason')}" for s in skipped)
    bad = f"; {len(skipped)} skipped as bad input ({why})" if skipped else ""
    n_pseudo = calib.get("n_pseudo_labelled")
    who = f"; {n_pseudo} pseudo-labelled by the {calib.get('labeller')}" if n_pseudo else ""
    digest = f", digest {calib['digest']}" if calib.get("digest") else ""
    used = f"{calib.get('n_clips', '?')} clips used{synth}{digest}{who}{bad}"
    return f"{calib.get('data', '?')} ({used})"


def _methods(comp: dict[str, Any], report: dict[str, Any]) -> list[str]:
    out = []
    if comp.get("decoder_layers"):
        kept = report.get("decoder_layers_kept")
        out.append(f"depth: {comp['decoder_layers']} decoder layers kept (teacher layers {kept})")
    if comp.get("prune_heads") or comp.get("prune_ffn"):
        out.append(
            f"pruning by Taylor importance on calibration speech: {comp.get('prune_heads', 0):g} "
            f"of attention heads, {comp.get('prune_ffn', 0):g} of FFN neurons removed"
        )
    if comp.get("lowrank_energy"):
        n = len(report.get("lowrank") or {})
        out.append(
            f"low-rank: truncated SVD keeping {comp['lowrank_energy']:g} of each Linear's "
            f"squared singular-value energy ({n} Linears)"
        )
    if comp.get("recover", "none") != "none":
        r = report.get("recover") or {}
        out.append(
            f"recovery: {comp['recover']}, {r.get('steps', comp.get('recover_steps'))} steps on "
            f"{r.get('clips', '?')} calibration clips; loss {_num(r.get('loss_start'))} -> "
            f"{_num(r.get('loss_end'))}, KL to the teacher {_num(r.get('kl_before'))} -> "
            f"{_num(r.get('kl_after'))}"
        )
    return out or ["none (the source weights, copied)"]


def _measured(d: Path, store: Path, rows: list[Any], notes: list[str], base: list[Any]) -> str:
    if not rows:
        lines = [
            "## Measured results\n",
            f"None measured: the store {store} holds no result for this directory."
            if store.is_file()
            else f"None measured: there is no results store at {store}.",
            *(f"({n})" for n in notes),
            "To measure it (accuracy, speed, memory, energy), run:\n",
            f"    voxmeter bench --model {d} --store {store}\n",
        ]
        return "\n".join(lines)
    by_data: dict[str, list[Any]] = {}
    for row in rows:
        by_data.setdefault(str(row.spec.get("data")), []).append(row)
    out = ["## Accuracy\n", *(f"({n})\n" for n in notes)]
    for data, group in by_data.items():
        out.append(_accuracy(data, group, base))
    out.append("## Speed, memory and energy\n")
    for data, group in by_data.items():
        pairs = [b for b in (base_for(r, base) for r in group) if b is not None]
        out.append(_cost(data, [*group, *{id(b): b for b in pairs}.values()]))
    out.append(_environment(rows))
    return "\n".join(out)


def _accuracy(data: str, rows: list[Any], base: list[Any]) -> str:
    lines = [
        f"Data set `{data}`:\n",
        (
            "| configuration | clips | repeats | WER % (95% CI) | CER % | flagged clips | "
            "WER vs base, points (95% CI) |"
        ),
        "|---|---|---|---|---|---|---|",
    ]
    methods, missing = set(), 0
    for r in rows:
        wer = r.metrics.get("wer")
        if wer is not None and wer.ci_method:
            methods.add(wer.ci_method)
        b = base_for(r, base)
        gap = wer_gap(r, b) if b is not None else None
        missing += b is None
        vs = "not measured" if gap is None else f"{gap[0]:+.2f} [{gap[1]:+.2f}, {gap[2]:+.2f}]"
        lines.append(_accuracy_row(r, wer, vs))
        if b is not None:
            lines.append(_accuracy_row(b, b.metrics.get("wer"), "(the base model)", "base: "))
    how = "; ".join(sorted(methods)) or "none (a single clip or no reference)"
    lines.append(f"\nWER: corpus-level after Whisper's English normalizer; CI: {how}.")
    lines.append(
        "WER vs base: this directory's WER minus the source model's, measured with the same "
        "settings on the same data in this store, over the clips both hold; 95% paired "
        "percentile bootstrap over clips."
    )
    if missing:
        lines.append(
            f"{missing} configuration(s) have no base result to compare with: run `voxmeter "
            "bench` with the source model and the same settings into this store."
        )
    return "\n".join(lines) + "\n"


def _accuracy_row(r: Any, wer: Any, vs: str, prefix: str = "") -> str:
    return (
        f"| {prefix}{r.label} | {_int(r.value('n_clips'))} | {r.n_repeats} | {_ci(wer)} | "
        f"{_num(r.value('cer'))} | {_int(r.value('n_flagged'))} | {vs} |"
    )


def _cost(data: str, rows: list[Any]) -> str:
    lines = [
        f"Data set `{data}`:\n",
        (
            "| configuration | RTFx | e2e p50 ms | e2e p90 ms | peak RSS MiB | weight bytes | "
            "energy J per audio s |"
        ),
        "|---|---|---|---|---|---|---|",
    ]
    methods: dict[str, dict[str, str]] = {}
    for r in rows:
        energy = r.notes.get("energy_method", "")
        est = " (estimated)" if energy.startswith("estimated") else ""
        lines.append(
            f"| {r.label} | {_num(r.value('rtfx'))} | {_num(r.value('e2e_ms_p50'))} | "
            f"{_num(r.value('e2e_ms_p90'))} | {_num(r.value('peak_rss_mb'), 1)} | "
            f"{_int(r.value('weight_bytes'))} | {_num(r.value('j_per_audio_s'), 3)}{est} |"
        )
        p50 = r.metrics.get("e2e_ms_p50")
        for key, v in (
            ("latency", p50.how if p50 is not None else ""),
            ("peak RSS", r.notes.get("rss_method", "")),
            ("weight bytes", r.notes.get("weight_bytes_method", "")),
            ("precision", r.notes.get("precision_method", "")),
            ("energy", energy),
        ):
            methods.setdefault(key, {})[r.label] = v
    lines.append("\nMethods:\n")
    lines += _method_lines(methods)
    lines.append("- RTFx: audio seconds / processing seconds, after warm-up; load time apart")
    return "\n".join(lines) + "\n"


def _method_lines(methods: dict[str, dict[str, str]]) -> list[str]:
    """One line per method when every configuration shares it; otherwise one per
    configuration, so no row is described by another row's method."""
    out = []
    for key, by_row in methods.items():
        values = {v for v in by_row.values() if v}
        if len(values) == 1 and all(by_row.values()):
            out.append(f"- {key}: {values.pop()}")
        elif values:
            out.append(f"- {key}, per configuration:")
            out += [f"    - {label}: {v or 'not recorded'}" for label, v in by_row.items()]
    return out


def _environment(rows: list[Any]) -> str:
    envs = [e for r in rows for e in r.envs]
    if not envs:
        return ""
    env = max(envs, key=lambda e: str(e.get("time_utc", "")))
    versions = ", ".join(f"{k} {v}" for k, v in (env.get("versions") or {}).items() if v)
    dirty = " (uncommitted changes)" if env.get("git_dirty") else ""
    lines = [
        "## Environment (newest result)\n",
        (
            f"- CPU: {env.get('cpu_model', '?')}, {env.get('cpu_physical', '?')} cores / "
            f"{env.get('cpu_logical', '?')} threads; device {env.get('device', '?')}"
        ),
        f"- Threads: {env.get('threads', '?')} (torch {env.get('torch_threads', '?')})",
        f"- Python {env.get('python', '?')}; {versions}",
        f"- Weights that ran: {env.get('weights') or 'not recorded with these results'}",
        (
            f"- voxmeter {env.get('voxmeter_version', '?')}, commit {env.get('git_commit') or '?'}"
            f"{dirty}"
        ),
        f"- OS: {env.get('os', '?')}; measured {env.get('time_utc', '?')}",
    ]
    return "\n".join(lines) + "\n"


def _failures(rows: list[Any], smap: dict[str, Any] | None) -> str:
    lines = ["## Known failure modes\n"]
    flagged: dict[tuple[str, str], set[str]] = {}
    skipped: dict[tuple[str, str], str] = {}
    for r in rows:
        data = str(r.spec.get("data"))
        for c in r.clips:
            if c.get("flags"):
                flagged.setdefault((data, str(c.get("id"))), set()).update(c["flags"])
        for s in r.skipped:
            skipped[(data, str(s.get("id")))] = str(s.get("reason"))
    if not rows:
        lines.append("- Flagged clips: none known (nothing measured).")
    elif not flagged:
        lines.append("- Flagged clips: none (no early end, loop or over-long output).")
    for (data, cid), why in sorted(flagged.items()):
        lines.append(f"- Flagged: `{cid}` ({data}): {', '.join(sorted(why))}")
    for (data, cid), why in sorted(skipped.items()):
        lines.append(f"- Skipped as bad input: `{cid}` ({data}): {why}")
    lines.append(_worst_groups(smap))
    return "\n".join(lines) + "\n"


def _worst_groups(smap: dict[str, Any] | None) -> str:
    from voxmeter.compress.sensitivity import PER_CHANNEL, measured_label, ranked

    if smap is None:
        return "- Layer sensitivity: not measured (run `voxmeter sensitivity`)."
    grans = smap.get("granularities") or [PER_CHANNEL]
    gran = PER_CHANNEL if PER_CHANNEL in grans else grans[0]
    cells = smap["cells"][gran]
    worst = ranked(smap, gran)[:WORST]
    data = smap.get("data", {})
    lines = [
        (
            f"- Most int8-sensitive layer groups ({gran}, {measured_label(smap)}, "
            f"{data.get('name', '?')} set, {data.get('n_clips', '?')} clips; fp32 WER "
            f"{_num(smap.get('baseline', {}).get('wer'))}):"
        ),
    ]
    for g in worst:
        c = cells[g]
        lines.append(
            f"    - {g}: WER {_signed(c.get('delta_wer'))} points, KL {c.get('kl', 0):.2e}"
        )
    return "\n".join(lines)


# -- formatting --------------------------------------------------------------------------------


def _num(v: Any, digits: int = 2) -> str:
    return "n/a" if v is None else f"{float(v):,.{digits}f}"


def _int(v: Any) -> str:
    return "n/a" if v is None else f"{int(v):,}"


def _signed(v: Any) -> str:
    return "n/a" if v is None else f"{float(v):+.2f}"


def _ci(m: Any) -> str:
    if m is None:
        return "n/a"
    if m.ci_lo is None or m.ci_hi is None:
        return f"{m.mean:.2f}"
    return f"{m.mean:.2f} [{m.ci_lo:.2f}, {m.ci_hi:.2f}]"
