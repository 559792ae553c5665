"""What the real-test screen does to WER: tiny.en and base on `real-test-unscreened` and on the
screened `real-test`, from the screen's own decoding (ct2 int8, English, greedy, one window).

The screen keeps the lines whose subtitle the base model hears within a CER (run/screen.py).
A filter chosen by agreement with a model biases every WER down, and most for that model; this
measures by how much, with bootstrap 95% intervals over clips, and copies the screen's report
(counts, rule, CER quantiles) into the JSON. Hypotheses come from the screen's cache
(<cache>/real/screen/), so a rerun decodes nothing it has heard; a missing one is decoded.

    python benchmarks/bench_screen.py [--models tiny.en,base]
"""

from __future__ import annotations

import argparse
import json
import sys

from common import write

from voxmeter.assets.bundled import default_cache_dir
from voxmeter.data.games.build import manifest_path
from voxmeter.metrics import accuracy_bootstrap_cis, corpus_wer
from voxmeter.run.screen import (
    UNSCREENED,
    HypothesisCache,
    ScreenRule,
    open_screen_model,
    read_manifest_records,
    transcribe_missing,
)

SETS = (UNSCREENED, "real-test")


def hypotheses(model: str, out, cache_dir) -> tuple[dict[str, str], str]:
    """sha256 -> hypothesis of `model` for every unscreened line (decoding what is missing)."""
    rule = ScreenRule(model=model)
    load, digest = open_screen_model(rule, cache_dir, threads=2)
    cache = HypothesisCache(out / "screen", rule, digest)
    records = read_manifest_records(out / f"{UNSCREENED}.jsonl")
    loaded = []

    def lazy(audio):
        if not loaded:
            loaded.append(load())
        return loaded[0](audio)

    found = transcribe_missing(records, out, cache, lazy)
    return found, f"{model} ct2 int8 greedy en ({digest})"


def figures(records: list[dict], hyps: dict[str, str]) -> dict:
    refs = [r["text"] for r in records]
    out = [hyps[r["sha256"]] for r in records]
    acc = corpus_wer(refs, out)
    cis = accuracy_bootstrap_cis(refs, out)
    return {
        "n_clips": len(records),
        "minutes": round(sum(r["duration_s"] for r in records) / 60, 2),
        "wer": round(acc.wer, 2),
        "wer_ci": [round(x, 2) for x in cis["wer"]],
        "cer": round(acc.cer, 2),
        "cer_ci": [round(x, 2) for x in cis["cer"]],
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--models", default="tiny.en,base")
    args = ap.parse_args()
    cache_dir = default_cache_dir()
    out = manifest_path("real-test").parent
    sets = {}
    for name in SETS:
        path = manifest_path(name)
        if not path.is_file():
            print(f"{path}: not built; run `voxmeter data build real`", file=sys.stderr)
            return 2
        sets[name] = read_manifest_records(path)
    rows = []
    for model in args.models.split(","):
        hyps, what = hypotheses(model, out, cache_dir)
        for name, records in sets.items():
            row = {"model": what, "set": name, **figures(records, hyps)}
            rows.append(row)
            lo, hi = row["wer_ci"]
            print(f"{model:8s} {name:22s} {row['n_clips']:4d} clips  WER {row['wer']:6.2f} "
                  f"[{lo:.2f}, {hi:.2f}]  CER {row['cer']:6.2f}")  # fmt: skip
    report = json.loads((out / "real-test.screen.json").read_text(encoding="utf-8"))
    report.pop("dropped", None)  # the per-line list stays in the cache's report
    write("bench_screen", {"rows": rows, "screen": report})
    return 0


if __name__ == "__main__":
    sys.exit(main())
