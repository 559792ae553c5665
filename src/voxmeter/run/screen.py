"""The screen of `real-test`: keep the Drascula clips whose subtitle is what was spoken.

Subtitles are not always what the actor said. Every subtitled clip (`real-test-unscreened`) is
transcribed once by a screening model (the bundled multilingual `base`, English forced, greedy,
one 30 s window, CTranslate2 int8), and a clip is kept when the character error rate between
its normalised subtitle and the normalised hypothesis is at most `max_cer`. The kept clips are
`real-test`; each line gains `screen_cer` and `screen_model`. A report JSON beside the manifests
says how many were dropped and why.

Hypotheses are cached in `<cache>/real/screen/<model>-<engine>-<precision>-<digest>.jsonl`, one
line per clip keyed by its audio's sha256, so a rebuild (or a killed screen) transcribes only
what it has not heard. This lives in run/ because it drives an engine; data/ cannot.

A filter chosen by agreement with a model biases WER down for every configuration measured on
the kept clips: `real-test-unscreened` stays available to measure without that bias.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from voxmeter.metrics import clip_counts, corpus_wer, failure_flags, normalize

UNSCREENED = "real-test-unscreened"
SCREENED = "real-test"
REPORT = "real-test.screen.json"
DROP_CER = "cer_above_max"
DROP_EMPTY_REF = "reference_empty_after_normalising"


@dataclass(frozen=True)
class ScreenRule:
    """Which model screens, how it decodes, and the largest CER a kept clip may have."""

    model: str = "base"
    engine: str = "ct2"
    precision: str = "int8"
    # a fraction of the normalised subtitle's characters; why 0.5: docs/real-speech.md
    max_cer: float = 0.5

    def label(self, digest: str) -> str:
        return f"{self.model} {self.engine} {self.precision} greedy en ({digest})"


@dataclass
class Screened:
    """The kept records (with their screen fields), the dropped ones, and the report."""

    kept: list[dict[str, Any]] = field(default_factory=list)
    dropped: list[dict[str, Any]] = field(default_factory=list)
    report: dict[str, Any] = field(default_factory=dict)


def clip_cer(ref: str, hyp: str) -> float | None:
    """CER (a fraction) of one clip after the project's normaliser on both sides; None when
    the reference normalises to nothing (no characters to divide by)."""
    r, h = normalize(ref), normalize(hyp)
    if not r.strip():
        return None
    _, _, _, _, edits, chars = clip_counts(r, h)
    return edits / chars if chars else None


class HypothesisCache:
    """Hypotheses of one screening model, keyed by clip sha256, appended line by line."""

    def __init__(self, folder: Path, rule: ScreenRule, digest: str) -> None:
        self.path = folder / f"{rule.model}-{rule.engine}-{rule.precision}-{digest}.jsonl"
        self.hyps: dict[str, str] = {}
        if self.path.is_file():
            for line in self.path.read_text(encoding="utf-8", errors="replace").splitlines():
                try:
                    rec = json.loads(line)
                except json.JSONDecodeError:
                    continue  # a line cut short by a kill
                if isinstance(rec, dict) and isinstance(rec.get("hyp"), str):
                    self.hyps[str(rec.get("sha256"))] = rec["hyp"]

    def add(self, sha256: str, clip_id: str, hyp: str) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a", encoding="utf-8") as f:
            f.write(json.dumps({"sha256": sha256, "id": clip_id, "hyp": hyp}) + "\n")
        self.hyps[sha256] = hyp


def screen_records(
    records: list[dict[str, Any]], hyps: dict[str, str], rule: ScreenRule, model_label: str
) -> Screened:
    """Split records by the rule; every record must have a hypothesis (by its sha256)."""
    out = Screened()
    for rec in records:
        hyp = hyps[rec["sha256"]]
        cer = clip_cer(rec["text"], hyp)
        if cer is None:
            out.dropped.append(_dropped(rec, hyp, None, DROP_EMPTY_REF))
        elif cer > rule.max_cer:
            out.dropped.append(_dropped(rec, hyp, cer, DROP_CER))
        else:
            out.kept.append({**rec, "screen_cer": round(cer, 4), "screen_model": model_label})
    out.report = _report(records, hyps, out, rule, model_label)
    return out


def _dropped(rec: dict[str, Any], hyp: str, cer: float | None, reason: str) -> dict[str, Any]:
    return {
        "id": rec["id"],
        "speaker": rec["speaker"],
        "duration_s": rec["duration_s"],
        "reason": reason,
        "cer": None if cer is None else round(cer, 4),
        # a loop or an early end says the model failed, not that the subtitle is wrong
        "model_failure": failure_flags(hyp, float(rec["duration_s"]), rec["text"]),
        "text": rec["text"],
        "hyp": hyp,
    }


def _report(
    records: list[dict[str, Any]],
    hyps: dict[str, str],
    out: Screened,
    rule: ScreenRule,
    model_label: str,
) -> dict[str, Any]:
    """Counts, minutes and the screening model's own WER before and after (which the screen
    lowers by construction: that is the bias the docs warn about)."""
    cers = [c for c in (clip_cer(r["text"], hyps[r["sha256"]]) for r in records) if c is not None]
    reasons: dict[str, int] = {}
    for d in out.dropped:
        reasons[d["reason"]] = reasons.get(d["reason"], 0) + 1
    speakers: dict[str, list[int]] = {}
    for r in records:
        speakers.setdefault(r["speaker"], [0, 0])[1] += 1
    for r in out.kept:
        speakers[r["speaker"]][0] += 1

    def wer(recs: Iterable[dict[str, Any]]) -> float | None:
        recs = list(recs)
        return corpus_wer([r["text"] for r in recs], [hyps[r["sha256"]] for r in recs]).wer

    q = np.quantile(cers, [0.5, 0.75, 0.9, 0.95]).round(4).tolist() if cers else []
    return {
        "rule": asdict(rule) | {"compare": "CER(normalise(subtitle), normalise(hypothesis))"},
        "model": model_label,
        "decoding": "greedy, English forced, no timestamps, one 30 s window, batch 1",
        "normaliser": "voxmeter.metrics.normalize (Whisper's English normalizer)",
        "n_clips": len(records),
        "n_kept": len(out.kept),
        "n_dropped": len(out.dropped),
        "dropped_by_reason": reasons,
        "dropped_with_model_failure_flags": sum(bool(d["model_failure"]) for d in out.dropped),
        "minutes_all": round(sum(r["duration_s"] for r in records) / 60, 2),
        "minutes_kept": round(sum(r["duration_s"] for r in out.kept) / 60, 2),
        "cer_quantiles_p50_p75_p90_p95": q,
        "screen_model_wer_all": wer(records),
        "screen_model_wer_kept": wer(out.kept),
        "kept_of_total_by_speaker": speakers,
        "dropped": out.dropped,
    }


def transcribe_missing(
    records: list[dict[str, Any]],
    root: Path,
    cache: HypothesisCache,
    transcribe: Callable[[np.ndarray], str],
    advance: Callable[[int], None] | None = None,
) -> dict[str, str]:
    """Hypotheses of every record, transcribing only clips the cache has not heard."""
    from voxmeter.audio.io import load_audio

    for rec in records:
        if rec["sha256"] not in cache.hyps:
            audio = load_audio(root / rec["audio"]).samples
            cache.add(rec["sha256"], rec["id"], transcribe(audio))
        if advance is not None:
            advance(1)
    return {r["sha256"]: cache.hyps[r["sha256"]] for r in records}


def write_screened(out: Path, screened: Screened) -> Path:
    """`real-test.jsonl` (kept) and the report JSON, each written atomically."""
    path = out / f"{SCREENED}.jsonl"
    _atomic(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in screened.kept))
    _atomic(out / REPORT, json.dumps(screened.report, indent=1, ensure_ascii=False) + "\n")
    return path


def _atomic(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def open_screen_model(
    rule: ScreenRule, cache_dir: Path, threads: int = 2
) -> tuple[Callable[[], Callable[[np.ndarray], str]], str]:
    """The screening model's weights digest, and a function that loads its engine (only
    called when some clip is not in the cache) and returns a clip -> hypothesis function."""
    from voxmeter.assets.bundled import resolve_model
    from voxmeter.assets.digests import FileDigests
    from voxmeter.identity import weights_digest
    from voxmeter.spec import AxisSettings, RunSpec

    spec = RunSpec(
        model=rule.model,
        engine=rule.engine,
        threads=threads,
        axes=AxisSettings(precision=rule.precision),
    ).validate()
    source = resolve_model(rule.model, cache_dir)
    digest = weights_digest(source, FileDigests(cache_dir))

    def load() -> Callable[[np.ndarray], str]:
        from voxmeter.engines import load_engine

        engine = load_engine(spec, cache_dir, source)

        def transcribe(audio: np.ndarray) -> str:
            return engine.decode(engine.encode(engine.features([audio])))[0].text.strip()

        return transcribe

    return load, digest


def read_manifest_records(path: Path) -> list[dict[str, Any]]:
    """The JSON lines of a manifest written by the builder."""
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line]


def screen_set(
    out: Path,
    cache_dir: Path,
    rule: ScreenRule = ScreenRule(),
    advance: Callable[[int], None] | None = None,
    threads: int = 2,
) -> Screened:
    """Screen `<out>/real-test-unscreened.jsonl` into `<out>/real-test.jsonl` and its report."""
    from voxmeter.errors import DataError

    src = out / f"{UNSCREENED}.jsonl"
    if not src.is_file():
        raise DataError(f"screen: {src} missing; build it first (voxmeter data build real)")
    records = read_manifest_records(src)
    load, digest = open_screen_model(rule, cache_dir, threads)
    cache = HypothesisCache(out / "screen", rule, digest)
    transcribe: Callable[[np.ndarray], str] | None = None

    def lazy(audio: np.ndarray) -> str:
        nonlocal transcribe
        if transcribe is None:
            transcribe = load()
        return transcribe(audio)

    hyps = transcribe_missing(records, out, cache, lazy, advance)
    screened = screen_records(records, hyps, rule, rule.label(digest))
    write_screened(out, screened)
    return screened
