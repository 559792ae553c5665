"""Aggregation over repeats: what analysis, the report and every command read.

`aggregate_results` never mixes what is not comparable: it groups rows by spec, identity,
mode (in-process, isolated, ray) and CPU model (threads are in the spec). Within a group,
latency percentiles (every stage's p50/p90/p99, end to end) are pooled over clips x repeats
from the clip records, with a cluster-bootstrap CI (clips resampled with all their repeats);
other figures take the mean over repeats and a 95% Student t-interval of it from 2 repeats
on. WER and CER are the exception: greedy decoding gives the same text every repeat, so a CI
over repeats would be a misleading zero; where the harness recorded a bootstrap CI over
clips (wer_ci_lo/hi, cer_ci_lo/hi) that interval is reported instead, and says so. The
intervals themselves are computed in voxmeter.stats.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from voxmeter.errors import SpecError
from voxmeter.identity import Identity
from voxmeter.result import Result
from voxmeter.stats import (
    PERCENTILES,
    cluster_percentile_ci,
    clusters_of,
    percentiles,
    t_interval,
)


@dataclass(frozen=True)
class MetricAgg:
    mean: float  # the figure: a mean over repeats, or a pooled percentile (see `how`)
    n: int  # repeats averaged, or clip runs pooled
    ci_lo: float | None = None  # 95% CI of the mean; None when it cannot be computed
    ci_hi: float | None = None
    ci_method: str = ""  # "t over repeats", "bootstrap over clips", or "" (no CI)
    how: str = "mean over repeats"

    @property
    def half_width(self) -> float | None:
        return None if self.ci_lo is None or self.ci_hi is None else (self.ci_hi - self.ci_lo) / 2

    def to_dict(self) -> dict[str, Any]:
        return {
            "value": self.mean,
            "ci": [self.ci_lo, self.ci_hi] if self.ci_lo is not None else None,
            "ci_method": self.ci_method or None,
            "how": self.how,
            "n": self.n,
        }


@dataclass
class AggRow:
    """One group of comparable repeats (same spec, identity, mode and CPU), summarised:
    what analysis and the report work from."""

    spec_hash: str
    spec: dict[str, Any]
    label: str
    n_repeats: int
    metrics: dict[str, MetricAgg]
    notes: dict[str, str] = field(default_factory=dict)  # string metrics, e.g. energy_method
    modes: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    envs: list[dict[str, Any]] = field(default_factory=list)
    clips: list[dict[str, Any]] = field(default_factory=list)  # clip records of every repeat
    code_fp: str = ""
    weights_digest: str = ""
    data_digest: str = ""
    cpu_model: str = ""
    stage_keys: list[str] = field(default_factory=list)
    skipped: list[dict[str, str]] = field(default_factory=list)

    def value(self, key: str) -> float | None:
        """The figure's value (mean or pooled percentile), or None when not measured."""
        m = self.metrics.get(key)
        return None if m is None else m.mean

    def axis(self, name: str) -> Any:
        return (self.spec.get("axes") or {}).get(name)

    @property
    def mode(self) -> str:
        return self.modes[0] if self.modes else ""

    @property
    def identity(self) -> Identity:
        return Identity(self.code_fp, self.weights_digest, self.data_digest)

    @property
    def group_key(self) -> str:
        """Unique per group: the spec hash, then what sets this group apart."""
        parts = (self.code_fp, self.weights_digest, self.data_digest, self.mode, self.cpu_model)
        return self.spec_hash + "/" + "/".join(parts)

    @property
    def data_key(self) -> tuple[str, str, int]:
        """Rows with equal data keys were measured on the same clips."""
        return (str(self.spec.get("data")), self.data_digest, int(self.spec.get("max_clips") or 0))


def _finite(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)


def _agg_metric(key: str, results: list[Result]) -> MetricAgg | None:
    vals = [float(r.metrics[key]) for r in results if _finite(r.metrics.get(key))]
    if not vals:
        return None
    mean = sum(vals) / len(vals)
    if key in ("wer", "cer"):
        los = [r.metrics.get(f"{key}_ci_lo") for r in results]
        his = [r.metrics.get(f"{key}_ci_hi") for r in results]
        if los and all(_finite(v) for v in los + his):
            return MetricAgg(
                mean, len(vals), sum(los) / len(los), sum(his) / len(his), "bootstrap over clips"
            )
    ci = t_interval(vals)
    if ci is None:
        return MetricAgg(mean, len(vals))
    return MetricAgg(mean, len(vals), ci[0], ci[1], "t over repeats")


def stage_keys_of(results: Iterable[Result]) -> list[str]:
    """The engine's stage keys as the results recorded them (older rows: feat, enc, dec)."""
    for r in results:
        keys = r.metrics.get("stage_keys")
        if isinstance(keys, str) and keys:
            return keys.split(",")
    return ["feat", "enc", "dec"]


def _clip_unit(c: dict[str, Any], i: int) -> tuple[str, Any]:
    """What a clip record is resampled with: its batch (a batch ran, and was timed, as one),
    else the clip itself (by id; by position in the repeat for records without one)."""
    return ("batch", c["batch"]) if "batch" in c else ("clip", c.get("id", i))


def _latency_series(
    results: list[Result], stage_keys: list[str]
) -> dict[str, tuple[list[Any], list[float]]]:
    """series name -> (cluster key per value, values): every stage, prefill and end to end per
    clip; each batch once; each long-form window (its recording is its cluster)."""
    out: dict[str, tuple[list[Any], list[float]]] = {}
    for stage in [*stage_keys, "prefill", "e2e"]:
        pairs = [
            (_clip_unit(c, i), c[f"{stage}_ms"])
            for r in results
            for i, c in enumerate(r.clips)
            if _finite(c.get(f"{stage}_ms"))
        ]
        out[stage] = ([k for k, _ in pairs], [v for _, v in pairs])
    batches = [
        (b, c["e2e_ms"])
        for r in results
        for b, c in {c["batch"]: c for c in r.clips if "batch" in c}.items()
        if _finite(c.get("e2e_ms"))
    ]
    out["batch"] = ([k for k, _ in batches], [v for _, v in batches])
    windows = [
        (c.get("id", i), w["e2e_ms"])
        for r in results
        for i, c in enumerate(r.clips)
        for w in c.get("windows", [])
        if "n_frames" in w and _finite(w.get("e2e_ms"))
    ]
    out["window"] = ([k for k, _ in windows], [v for _, v in windows])
    return out


def _cluster_method(stage: str, keys: list[Any]) -> str:
    if stage == "window":
        return "cluster bootstrap over recordings (windows and repeats kept together)"
    if stage == "batch" or (keys and keys[0][0] == "batch"):
        return "cluster bootstrap over batches (repeats kept together)"
    return "cluster bootstrap over clips (repeats kept together)"


def pooled_percentiles(results: list[Result], stage_keys: list[str]) -> dict[str, MetricAgg]:
    """Every stage's and the end-to-end p50/p90/p99, pooled over clips x repeats, each with
    a 95% cluster-bootstrap CI (voxmeter.stats.cluster_percentile_ci): a clip is resampled
    with all its repeats, a batch as one unit, a recording with all its windows, because
    repeats of one clip are correlated. Seeded: the same rows give the same interval in
    every command."""
    unit = {"batch": "batch runs", "window": "windows"}
    out: dict[str, MetricAgg] = {}
    for stage, (keys, vals) in _latency_series(results, stage_keys).items():
        if not vals:
            continue
        how = f"pooled over {len(vals)} {unit.get(stage, 'clip runs (clips x repeats)')}"
        point = percentiles(vals)
        cis = cluster_percentile_ci(clusters_of(keys, vals))
        method = _cluster_method(stage, keys) if cis is not None else ""
        for i, q in enumerate(PERCENTILES):
            lo, hi = cis[i] if cis is not None else (None, None)
            out[f"{stage}_ms_p{q}"] = MetricAgg(point[i], len(vals), lo, hi, method, how)
    return out


def spec_label(spec: dict[str, Any], spec_hash: str = "") -> str:
    from voxmeter.spec import RunSpec

    try:
        return RunSpec.from_dict(spec).label()
    except (SpecError, TypeError, ValueError):
        return spec_hash or "unknown spec"  # a spec written by another voxmeter version


def _group_key(r: Result) -> tuple[str, ...]:
    cpu = str(r.env.get("cpu_model") or "")
    return (r.spec_hash, r.code_fp, r.weights_digest, r.data_digest, r.mode, cpu)


def aggregate_results(results: Iterable[Result]) -> list[AggRow]:
    """Group successful repeats by spec, identity, mode and CPU model; summarise each group.

    Labels name what sets rows apart where several are shown (see `distinguish`).
    """
    groups: dict[tuple[str, ...], list[Result]] = {}
    for r in results:
        if r.status == "ok":
            groups.setdefault(_group_key(r), []).append(r)
    out = []
    for (h, code, weights, data, mode, cpu), rs in groups.items():
        rs.sort(key=lambda r: r.repeat)
        keys = sorted({k for r in rs for k, v in r.metrics.items() if _finite(v)})
        metrics = {k: a for k in keys if (a := _agg_metric(k, rs)) is not None}
        stages = stage_keys_of(rs)
        metrics.update(pooled_percentiles(rs, stages))
        notes = {k: v for r in rs for k, v in r.metrics.items() if isinstance(v, str)}
        warnings = list(dict.fromkeys(w for r in rs for w in r.warnings))
        out.append(
            AggRow(
                spec_hash=h,
                spec=rs[-1].spec,
                label=spec_label(rs[-1].spec, h),
                n_repeats=len(rs),
                metrics=metrics,
                notes=notes,
                modes=[mode],
                warnings=warnings,
                envs=[r.env for r in rs],
                clips=[dict(c, repeat=r.repeat) for r in rs for c in r.clips],
                code_fp=code,
                weights_digest=weights,
                data_digest=data,
                cpu_model=cpu,
                stage_keys=stages,
                skipped=rs[-1].skipped,
            )
        )
    return distinguish(out)


def distinguish(rows: list[AggRow]) -> list[AggRow]:
    """Add to each label what differs among the rows shown: data set, threads, max_clips,
    then, for rows of one spec, code, weights, mode and CPU. Returns the same rows."""
    specs = [r.spec for r in rows]

    def varies(f: Any) -> bool:
        return len({json.dumps(f(x), default=str) for x in specs}) > 1

    parts: dict[int, list[str]] = {i: [] for i in range(len(rows))}
    if varies(lambda s: (s.get("data"),)) or len({r.data_digest for r in rows}) > 1:
        for i, r in enumerate(rows):
            parts[i].append(f"data={r.spec.get('data')}")
            if len({x.data_digest for x in rows if x.spec.get("data") == r.spec.get("data")}) > 1:
                parts[i][-1] += f"@{r.data_digest[:6]}"
    if varies(lambda s: s.get("threads")):
        for i, r in enumerate(rows):
            parts[i].append(f"threads={r.spec.get('threads')}")
    if varies(lambda s: s.get("max_clips")):
        for i, r in enumerate(rows):
            n = r.spec.get("max_clips") or 0
            parts[i].append(f"clips<={n}" if n else "all clips")
    by_spec: dict[str, list[AggRow]] = {}
    for r in rows:
        by_spec.setdefault(r.spec_hash, []).append(r)
    for i, r in enumerate(rows):
        same = by_spec[r.spec_hash]
        if len(same) < 2:
            continue
        for attr, name in (
            ("code_fp", "code"),
            ("weights_digest", "weights"),
            ("mode", "mode"),
            ("cpu_model", "cpu"),
        ):
            if len({getattr(x, attr) for x in same}) > 1:
                v = getattr(r, attr)
                parts[i].append(f"{name}={v[:12] if attr != 'cpu_model' else v}")
    for i, r in enumerate(rows):
        if parts[i]:
            r.label = f"{r.label} [{', '.join(parts[i])}]"
    return rows
