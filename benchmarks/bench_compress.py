"""Compression on recorded speech: the configurations issue 28's targets need, each in its own
process, on each test set, beside the ct2 engine at int8 and full settings (the speed
yardstick), in one run.

Test sets (`--data`, comma-separated): `real-test` (Drascula lines with their subtitles; built
by `voxmeter data build real`) and `default-recorded` (every recorded clip of the bundled
default set: its 11 LibriVox clips, the 39 espeak-ng ones left out); also any set name or
manifest. `--max-clips N` keeps N clips of each set spread evenly over it (written as a
manifest under <cache>/bench_compress/), so a run fits in a bounded time; recovery training
is not cut by it (`--steps`, `--train-clips`), and its models are cached, so a rerun skips it.
Training data (CompressionSettings.train_data, for pruning importance and recovery alike):
`real-train` (no references: a labeller transcribes it, the uncompressed tiny.en or base) or,
for the comparison, the synthetic `calib` set. With --full, the hybrid row's sensitivity map
is still measured on calib (it scores WER against references).

Targets (tiny.en; checked per test set and over all of them, written in the JSON):
1. a pruned or shallower model plus recovery on real-train with at least 30% fewer analytic
   FLOPs than fp32, within 2.0 WER points of it;
2. the best compressed configuration combined with xT/xV, within 1.0 WER point of fp32 at
   full settings, at RTFx at least 8x the ct2 engine's int8 at full settings;
3. recovery trained on calib (espeak-ng) against recovery on real-train, the same
   configurations side by side on the same test clips (also with base as the labeller);
4. an int8 or hybrid model within 0.5 WER points of fp32, weights at most 30% of fp32's bytes,
   peak RSS below fp32's.

    python benchmarks/bench_compress.py [--data real-test,default-recorded] [--max-clips 100]
        [--models tiny.en] [--full] [--steps 200] [--train-clips 256] [--only REGEX] [--plan]
        [--resume]
(fp32 and ct2-int8 always run: the yardsticks; --plan prints the configurations and stops;
--resume keeps the figures of this machine's latest JSON made with the same sets and training,
so a killed run goes on where it stopped.)
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from dataclasses import dataclass, fields
from pathlib import Path

from common import latest, machine_name, pick, write
from compress_targets import TRAINING, markdown, targets
from fresh import PEAK_RSS_DEFINITION

from voxmeter.run.isolate import run_spec_isolated
from voxmeter.spec import QUANT_SCHEMES, CompressionSettings, RunSpec

KEYS = (
    "wer",
    "wer_ci_lo",
    "wer_ci_hi",
    "cer",
    "rtfx",
    "weight_bytes",
    "peak_rss_mb",
    "process_peak_rss_mb",
    "rss_method",
    "n_flagged",
    "gflops_analytic_total",
    "compress_s",
    "param_count",
    "audio_s",
)
TRAIN_FIELDS = ("train_data", "labeller", "train_clips")  # CompressionSettings, issue 28
RECORDED = "default-recorded"
INT8_AXES = {"quant": "int8-dynamic", "quant_embed": True, "frames": "fit", "pool": "avg"}


@dataclass
class TestSet:
    name: str  # as results name it
    data: str  # what RunSpec.data gets: a set's name or a manifest path
    n: int
    n_total: int


def spread(items: list, n: int) -> list:
    """`n` items spread evenly over `items`, first and last included (all when n <= 0 or
    n >= len); deterministic, so two runs measure the same clips."""
    if n <= 0 or n >= len(items):
        return list(items)
    if n == 1:
        return [items[len(items) // 2]]
    step = (len(items) - 1) / (n - 1)  # >= 1: int(i * step + 0.5) never repeats
    return [items[int(i * step + 0.5)] for i in range(n)]


def test_set(name: str, max_clips: int, workdir: Path) -> TestSet:
    """A test set by name, cut to `max_clips` spread clips (a manifest in `workdir`)."""
    from voxmeter.data.datasets import load_dataset
    from voxmeter.data.manifest import write_manifest
    from voxmeter.run.references import check_references

    if name == RECORDED:  # the LibriVox/CMU recordings: espeak-ng clips are "tts-...", and
        ds = load_dataset("default")  # the bundled Drascula lines are in real-test already
        ds.clips = [c for c in ds.clips if not c.id.startswith(("tts-", "drascula-"))]
    else:
        ds = load_dataset(name)
    check_references(RunSpec(data=name), ds)  # a test set needs references
    clips = spread(ds.clips, max_clips)
    if len(clips) == len(ds.clips) and name != RECORDED:
        return TestSet(name, name, len(clips), len(ds.clips))
    stem = Path(name).stem if name.endswith(".jsonl") else name
    label = stem if len(clips) == len(ds.clips) else f"{stem}-spread{len(clips)}"
    path = workdir / f"{label}.jsonl"
    workdir.mkdir(parents=True, exist_ok=True)
    write_manifest(type(ds)(label, clips, ds.root), path)
    return TestSet(label, str(path), len(clips), len(ds.clips))


def configs(model: str, full: bool, steps: int, train_clips: int) -> dict[str, dict]:
    """name -> RunSpec.with_ changes: what the targets need (module doc), or with `full` also
    every other method of the complete list."""
    tiny = model.startswith("tiny")
    out: dict[str, dict] = {
        "fp32": {},
        "q-int8-dynamic+emb": {"quant": "int8-dynamic", "quant_embed": True},
    }
    out["q-int8-weight+emb"] = {"quant": "int8-weight", "quant_embed": True}
    recovered = {
        "dec2": {"decoder_layers": 2},
        "prune-0.35": {"prune_heads": 0.35, "prune_ffn": 0.35},
    }
    for base, change in recovered.items():
        for suffix, how in TRAINING.items():
            if suffix == "@real/base" and not tiny:
                continue  # base labelling base is the teacher's own labels
            train = {"recover": "distill", "recover_steps": steps, "train_clips": train_clips}
            out[f"{base}+distill{suffix}"] = {**change, **train, **how}
    for k in (2, 3):  # the axes alone on the int8 model, then with recovered compression
        out[f"int8emb+fit+k{k}"] = {**INT8_AXES, "stride": k}
        out[f"dec2+distill@real+int8emb+fit+k{k}"] = {
            **out["dec2+distill@real"],
            **INT8_AXES,
            "stride": k,
        }
    out["prune-0.35+distill@real+int8emb+fit+k2"] = {
        **out["prune-0.35+distill@real"],
        **INT8_AXES,
        "stride": 2,
    }
    if full:
        out.update(full_configs(model, steps, train_clips))
    return out


def full_configs(model: str, steps: int, train_clips: int) -> dict[str, dict]:
    """The rest of the complete list: bf16, every int8 scheme with and without the embedding,
    pruning 25%/50% and depth with and without recovery (on real-train), low-rank."""
    out: dict[str, dict] = {"bf16": {"precision": "bf16"}}
    for q in [q for q in QUANT_SCHEMES if q != "none"]:
        out[f"q-{q}+emb"] = {"quant": q, "quant_embed": True}
        out[f"q-{q}"] = {"quant": q}
    train = {
        "recover": "distill",
        "recover_steps": steps,
        "train_clips": train_clips,
        **TRAINING["@real"],
    }
    structural = {f"prune-{r:g}": {"prune_heads": r, "prune_ffn": r} for r in (0.25, 0.35, 0.5)}
    for k in (2,) if model.startswith("tiny") else (2, 3):
        structural[f"dec{k}"] = {"decoder_layers": k}
    for name, change in structural.items():
        out[name] = change
        out[f"{name}+distill@real"] = {**change, **train}
        out[f"{name}+lora@real"] = {**change, **train, "recover": "lora"}
    out["lowrank-0.9"] = {"lowrank_energy": 0.9}
    out["lowrank-0.9+distill@real"] = {"lowrank_energy": 0.9, **train}
    return out


def check_fields(cfgs: dict[str, dict]) -> None:
    """Exit with one line when a configuration needs a CompressionSettings field this tree
    lacks (the training-data fields of issue 28 land with `--train-data`)."""
    have = {f.name for f in fields(CompressionSettings)}
    need = sorted({k for c in cfgs.values() for k in c if k in TRAIN_FIELDS} - have)
    if need:
        sys.exit(
            f"bench_compress: CompressionSettings has no field {', '.join(need)}: these "
            "configurations train on a chosen data set (issue 28's --train-data, --labeller, "
            "--train-clips); use a tree that has them, or --only a configuration without "
            "recovery"
        )


def training(spec: RunSpec) -> dict:
    """What a row trained on (recovery, pruning importance), as the JSON and table name it."""
    c = spec.compression
    data = getattr(c, "train_data", None)
    if not (c.changes_weights or c.keep):
        return {"train_data": None, "labeller": None, "train_clips": None}
    if data == "":
        from voxmeter.data.games.build import manifest_path

        data = "real-train (auto)" if manifest_path("real-train").is_file() else "calib (auto)"
    return {
        "train_data": data if data is not None else "calib (this tree's only choice)",
        "labeller": getattr(c, "labeller", None) if c.recover != "none" else None,
        "train_clips": getattr(c, "train_clips", None),
    }


def measure(spec: RunSpec, ts: TestSet) -> dict:
    (res,) = list(run_spec_isolated(spec.with_(data=ts.data), [0]))
    row = pick(res, KEYS)
    row["label"] = spec.label()
    if ts.name.startswith("default") and ts.name != RECORDED:
        row.update(wer_by_source(res.clips))
    return row


def wer_by_source(clips: list[dict]) -> dict:
    """Corpus WER over the recorded clips and over the espeak-ng ones apart (the default set:
    39 of its 50 clips are espeak-ng, as every calib clip is)."""
    from voxmeter.metrics import corpus_wer

    out = {}
    for name, synth in (("wer_recorded", False), ("wer_synth", True)):
        part = [c for c in clips if c["id"].startswith("tts-") == synth and c.get("ref")]
        if part:
            wer = corpus_wer([c["ref"] for c in part], [c["hyp"] for c in part]).wer
            out[name], out[f"n_{name[4:]}"] = wer, len(part)
    return out


def hybrid_keep(model: str, max_clips: int) -> str:
    """The two groups whose int8 weights cost the most on calib (by WER change, then KL,
    per-channel scales), conv left out: no int8 scheme touches it."""
    from voxmeter.compress.sensitivity import ranked, sensitivity_map
    from voxmeter.data.datasets import load_dataset
    from voxmeter.engines import load_engine

    engine = load_engine(RunSpec(model=model))
    ds = load_dataset("calib")
    ds.clips = ds.clips[:max_clips]
    smap = sensitivity_map(engine, ds, per_channel=(True,))
    return ",".join(ranked(smap, exclude=("conv",))[:2])


def plan(args: argparse.Namespace) -> dict[str, RunSpec]:
    """key -> the spec each configuration runs (fp32 always: the yardstick), checked."""
    base = RunSpec(repeats=1)
    out = {"tiny.en/ct2-int8": base.with_(engine="ct2", precision="int8")}
    for model in args.models.split(","):
        cfgs = configs(model, args.full, args.steps, args.train_clips)
        cfgs = {k: v for k, v in cfgs.items() if k == "fp32" or re.search(args.only, k)}
        check_fields(cfgs)
        if args.full and re.search(args.only, "hybrid"):
            try:
                keep = hybrid_keep(model, 20)
                cfgs["hybrid"] = {"quant": "int8-dynamic", "keep": keep}
            except Exception as e:  # noqa: BLE001 - the benchmark goes on without it
                print(f"{model}: no hybrid row ({e})", file=sys.stderr)
        for name, change in cfgs.items():
            out[f"{model}/{name}"] = base.with_(model=model, **change).validate()
    return out


def changes_of(spec: RunSpec) -> dict:
    """The compression and axis fields `spec` sets off their defaults."""
    plain = RunSpec()
    out = {k: v for k, v in spec.compression.__dict__.items() if v != getattr(plain.compression, k)}
    for k in ("precision", "frames", "stride", "pool"):
        if getattr(spec.axes, k) != getattr(plain.axes, k):
            out[k] = getattr(spec.axes, k)
    return out


def run(specs: dict[str, RunSpec], sets: list[TestSet], rows: dict[str, dict]) -> None:
    """Measure every spec on every test set into `rows` (a failure is a row that says so)."""
    for key, spec in specs.items():
        if key not in rows:
            rows[key] = {"label": spec.label(), "training": training(spec), "by_data": {}}
        row = rows[key]
        row["changes"] = changes_of(spec)
        if key.endswith("/hybrid"):
            row["training"]["train_data"] = "calib (sensitivity map)"
        for ts in [ts for ts in sets if ts.name not in row["by_data"]]:
            try:
                fig = measure(spec, ts)
            except Exception as e:  # noqa: BLE001 - a failed configuration is a row
                fig = {"error": f"{type(e).__name__}: {e}"}
            row["by_data"][ts.name] = fig
            shown = {
                k: round(v, 2) if isinstance(v, float) else v
                for k, v in fig.items()
                if k in ("wer", "rtfx", "gflops_analytic_total", "process_peak_rss_mb", "error")
            }
            print(f"{key:46s} {ts.name:24s} {shown}", flush=True)


def resumed(name: str, specs: dict[str, RunSpec], sets: list[TestSet], args) -> dict:
    """The rows of this machine's latest JSON of `name` that this run would measure alike
    (same test sets, clips and training settings; same changes): their figures are kept,
    their errors measured again. Nothing when that JSON was made otherwise."""
    path = latest(name)
    if path is None:
        return {}
    old = json.loads(path.read_text())
    same = old.get("test_sets") == [ts.__dict__ for ts in sets] and all(
        old.get("settings", {}).get(k) == getattr(args, k) for k in ("steps", "train_clips")
    )
    if not same:
        print(
            f"--resume: {path} measured other test sets or training: not resumed", file=sys.stderr
        )
        return {}
    rows = {}
    for key, spec in specs.items():
        r = old.get("rows", {}).get(key)
        if r and r.get("changes") == changes_of(spec):
            rows[key] = {
                **r,
                "by_data": {t: f for t, f in r["by_data"].items() if "error" not in f},
            }
    print(f"--resume: {len(rows)} configuration(s) taken from {path}", file=sys.stderr)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", default=f"real-test,{RECORDED}", help="test sets, comma-separated")
    ap.add_argument(
        "--max-clips", type=int, default=100, help="N clips spread over each set (0: all)"
    )
    ap.add_argument("--models", default="tiny.en")
    ap.add_argument("--full", action="store_true", help="every method, not only the targets'")
    ap.add_argument("--steps", type=int, default=200, help="recovery optimizer steps")
    ap.add_argument("--train-clips", type=int, default=256, help="training clips (real-train)")
    ap.add_argument("--only", default="", help="regex: only the configurations it matches")
    ap.add_argument("--plan", action="store_true", help="print the configurations and stop")
    ap.add_argument("--resume", action="store_true", help="keep this machine's latest figures")
    ap.add_argument(
        "--tag",
        default="",
        help="added to the result's name: a variant run (say, more steps) "
        "gets its own JSON beside the committed one",
    )
    args = ap.parse_args()
    from voxmeter.errors import VoxmeterError
    from voxmeter.paths import default_cache_dir

    try:
        specs = plan(args)
        work = default_cache_dir() / "bench_compress"
        sets = [test_set(n, args.max_clips, work) for n in args.data.split(",")]
    except VoxmeterError as e:
        sys.exit(f"bench_compress: {e}")
    for ts in sets:
        print(f"test set {ts.name}: {ts.n} of {ts.n_total} clips ({ts.data})", file=sys.stderr)
    if args.plan:
        for key, spec in specs.items():
            print(f"{key:46s} {spec.compression.tag() or '-':40s} {training(spec)}")
        return
    name = "bench_compress-" + args.models.replace(",", "-") + (f"-{args.tag}" if args.tag else "")
    rows: dict[str, dict] = resumed(name, specs, sets, args) if args.resume else {}
    try:
        run(specs, sets, rows)
    finally:  # an interrupted run keeps what it measured, marked incomplete
        names = [ts.name for ts in sets]
        goals = targets(rows, names)
        table = markdown(
            rows, names, f"Measured on {machine_name()}, {args.max_clips or 'all'} clips per set:"
        )
        print(table)
        for t, goal in goals.items():
            print(f"target {t}: met={goal['met']} {goal.get('configs', '')}")
        write(
            name,
            {
                "complete": len(rows) == len(specs)
                and all(len(r["by_data"]) == len(sets) for r in rows.values()),
                "test_sets": [ts.__dict__ for ts in sets],
                "settings": vars(args),
                "rows": rows,
                "targets": goals,
                "table_markdown": table,
                "peak_rss_definition": PEAK_RSS_DEFINITION,
            },
        )


if __name__ == "__main__":
    main()
