"""Result: one measured repeat of one RunSpec; the row the store keeps and analysis reads.

`metrics` is a flat mapping so that the store, Pareto fronts, recommendations and the report
can treat every figure alike. The keys and their units are listed in METRIC_UNITS; a figure
that could not be measured is None (never 0, never a guess). Figures that are estimates carry
their method in a sibling key (e.g. energy_method = "estimated: ...").
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from voxmeter.identity import Identity
from voxmeter.stats import PERCENTILES  # noqa: F401  (percentile figures: pooled, see store)

# key -> (unit, description). Percent figures are 0..100.
METRIC_UNITS: dict[str, tuple[str, str]] = {
    "n_clips": ("", "clips measured"),
    "n_skipped": ("", "clips skipped as bad input"),
    "n_flagged": ("", "clips whose hypothesis looks like a failure (early end, loop)"),
    "n_clips_cut": ("", "clips longer than the encoder's input (frames x 10 ms)"),
    "audio_cut_s": ("s", "audio past the encoder's input, never transcribed"),
    "audio_s": ("s", "audio measured"),
    "wer": ("%", "corpus WER after Whisper's English normalizer"),
    "cer": ("%", "corpus CER after Whisper's English normalizer"),
    "wer_ci_lo": ("%", "WER's 95% bootstrap interval over clips, low end"),
    "wer_ci_hi": ("%", "WER's 95% bootstrap interval over clips, high end"),
    "cer_ci_lo": ("%", "CER's 95% bootstrap interval over clips, low end"),
    "cer_ci_hi": ("%", "CER's 95% bootstrap interval over clips, high end"),
    "load_s": ("s", "model load time (not in RTFx)"),
    "convert_s": ("s", "one-off conversion to transformers format (first run only)"),
    "compress_s": ("s", "one-off structural compression (and recovery), cached as a model"),
    "digest_s": ("s", "one-off hashing of weights and audio for the identity (first run only)"),
    "feat_ms_p50": ("ms", "feature extraction per clip, median"),
    "feat_ms_p90": ("ms", "feature extraction per clip, 90th percentile"),
    "feat_ms_p99": ("ms", "feature extraction per clip, 99th percentile"),
    "enc_ms_p50": ("ms", "encoder per clip, median"),
    "enc_ms_p90": ("ms", "encoder per clip, 90th percentile"),
    "enc_ms_p99": ("ms", "encoder per clip, 99th percentile"),
    "dec_ms_p50": ("ms", "decoder per clip, median"),
    "dec_ms_p90": ("ms", "decoder per clip, 90th percentile"),
    "dec_ms_p99": ("ms", "decoder per clip, 99th percentile"),
    "prefill_ms_p50": ("ms", "decoder prefill per clip (prompt + cross-attention K/V), median"),
    "dec_ms_per_token": ("ms/token", "decoder time per generated token after the prefill"),
    "e2e_ms_p50": ("ms", "end-to-end latency per clip, median"),
    "e2e_ms_p90": ("ms", "end-to-end latency per clip, 90th percentile"),
    "e2e_ms_p99": ("ms", "end-to-end latency per clip, 99th percentile"),
    "batch_ms_p50": ("ms", "latency of a batch (every clip in it waits for it), median"),
    "batch_ms_p90": ("ms", "latency of a batch, 90th percentile"),
    "batch_ms_p99": ("ms", "latency of a batch, 99th percentile"),
    "n_batches": ("", "batches run"),
    "padding_share": ("%", "input frames batching added: padding to the longest clip's input"),
    "n_recordings": ("", "recordings over 30 s, transcribed long-form"),
    "n_windows": ("", "long-form windows (sequential) or VAD chunk batches decoded"),
    "n_windows_flagged": ("", "long-form windows whose text looks like a failure"),
    "window_ms_p50": ("ms", "latency of one long-form window or chunk batch, median"),
    "window_ms_p90": ("ms", "latency of one long-form window or chunk batch, 90th percentile"),
    "window_ms_p99": ("ms", "latency of one long-form window or chunk batch, 99th percentile"),
    "vad_ms_total": ("ms", "voice activity detection over the long recordings (in RTFx)"),
    "rtf": ("", "processing seconds / audio seconds (total/total)"),
    "rtfx": ("x", "audio seconds / processing seconds (total/total), after warm-up"),
    "wall_s": ("s", "the repeat's wall clock: stages, the code between them and instruments"),
    "rtfx_wall": ("x", "audio seconds / the repeat's wall-clock seconds, after warm-up"),
    "throughput_clips_s": ("clips/s", "clips per processing second"),
    "param_count": ("", "model parameters"),
    "weight_bytes": ("B", "bytes of weights as loaded"),
    "peak_rss_mb": ("MiB", "peak RSS while the clips ran (weights resident)"),
    "process_peak_rss_mb": ("MiB", "peak RSS over the process's life, model load included"),
    "steady_rss_mb": ("MiB", "RSS after the run"),
    "feat_mem_mb": ("MiB", "feature-extraction transient: peak during stage - RSS before"),
    "enc_mem_mb": ("MiB", "encoder transient: peak during stage - RSS before"),
    "dec_mem_mb": ("MiB", "decoder transient: peak during stage - RSS before"),
    "cuda_max_alloc_mb": ("MiB", "torch.cuda.max_memory_allocated (torch engines on a GPU)"),
    "gpu_process_mb": ("MiB", "this process's GPU memory from NVML (other engines on a GPU)"),
    "gflops_counted_enc": ("GFLOP", "encoder FLOPs per clip counted on the first clips"),
    "gflops_counted_dec": ("GFLOP", "decoder FLOPs per clip counted on the first clips"),
    "gflops_analytic_enc": ("GFLOP", "encoder FLOPs per clip, closed form from shapes run"),
    "gflops_analytic_dec": ("GFLOP", "decoder FLOPs per clip, closed form from shapes run"),
    "gflops_analytic_total": ("GFLOP", "encoder + decoder analytic FLOPs per clip"),
    "gflops_analytic_counted_enc": ("GFLOP", "analytic encoder FLOPs on the counted clips"),
    "gflops_analytic_counted_dec": ("GFLOP", "analytic decoder FLOPs on the counted clips"),
    "gflops_paper_total": (
        "GFLOP",
        "the paper's formula as we reconstruct it (3000 frames, 20 tokens, stride k)",
    ),
    "enc_gflops_per_s": ("GFLOP/s", "achieved encoder throughput (analytic FLOPs / time)"),
    "enc_peak_share": (
        "%",
        (
            "achieved encoder GFLOP/s as a share of the matmul peak measured in the dtype "
            "each part computes in (enc_peak_dtype); none where that peak was not measured"
        ),
    ),
    "energy_j": ("J", "energy over the measured clips"),
    "j_per_audio_s": ("J/s", "energy per second of audio"),
    "j_per_word": ("J/word", "energy per reference word"),
    "cpu_mhz_mean": ("MHz", "CPU frequency sampled during the run, mean"),
    "cpu_mhz_min": ("MHz", "CPU frequency sampled during the run, minimum"),
    "other_cpu_pct": ("%", "CPU used by other processes during the run"),
    # live streams (stream/measures.py); "aware" figures count compute, "unaware" take it as 0
    "commit_ms_p50": ("ms", "stream: word committed - its audio's end, median (compute-aware)"),
    "commit_ms_p90": ("ms", "stream: commit latency per word, 90th percentile"),
    "commit_ms_p99": ("ms", "stream: commit latency per word, 99th percentile"),
    "commit_unaware_ms_p50": ("ms", "stream: commit latency, compute taken as zero, median"),
    "commit_unaware_ms_p90": ("ms", "stream: commit latency, compute-unaware, 90th percentile"),
    "commit_unaware_ms_p99": ("ms", "stream: commit latency, compute-unaware, 99th percentile"),
    "eou_ms_p50": ("ms", "stream: end of speech to an utterance's final text, median"),
    "eou_ms_p90": ("ms", "stream: end-of-utterance latency, 90th percentile"),
    "eou_ms_p99": ("ms", "stream: end-of-utterance latency, 99th percentile"),
    "eou_unaware_ms_p50": ("ms", "stream: end-of-utterance latency, compute-unaware, median"),
    "eou_unaware_ms_p90": ("ms", "stream: end-of-utterance latency, compute-unaware, p90"),
    "eou_unaware_ms_p99": ("ms", "stream: end-of-utterance latency, compute-unaware, p99"),
    "first_partial_s": ("s", "stream: first text shown - start of speech (compute-aware)"),
    "first_partial_unaware_s": ("s", "stream: time to first partial, compute-unaware"),
    "words_committed": ("", "stream: words committed"),
    "words_matched_share": ("%", "stream: reference words matched by a committed word"),
    "words_relaxed_share": ("%", "stream: words committed on two hypotheses' agreement (relax_s)"),
    "words_unagreed_share": ("%", "stream: words committed with no agreement (max_wait_s)"),
    "churn": ("", "stream: partial words revised or withdrawn per committed word"),
    "stream_wer": ("%", "stream: WER of the committed text against the reference"),
    "offline_wer": ("%", "stream: WER of the same audio transcribed offline"),
    "stream_wer_vs_offline": ("%", "stream: WER of the committed text against the offline one"),
    "compute_ratio": ("", "stream: compute/elapsed, model compute s / audio streamed s (>1 lags)"),
    "compute_ratio_worst_60s": ("", "stream: compute/elapsed over the worst 60 s"),
    "lag_end_s": ("s", "stream: last output - end of audio (compute-aware)"),
    "stream_audio_s": ("s", "stream: audio streamed"),
    "stream_wall_s": ("s", "stream: wall time the replay took"),
    "n_steps": ("", "stream: processing steps"),
    "forced_trims": ("", "stream: buffer cuts that dropped uncommitted audio"),
    "looped_steps": ("", "stream: hypotheses dropped as repetition loops"),
    "buffer_s_max": ("s", "stream: longest audio buffer the model saw"),
    "rss_mb_start": ("MiB", "stream: RSS at the session's start (model loaded)"),
    "rss_mb_end": ("MiB", "stream: RSS at the session's end"),
    "rss_slope_mb_h": ("MiB/h", "stream: least-squares RSS slope after the first 5 minutes"),
    "rss_slope_all_mb_h": ("MiB/h", "stream: least-squares RSS slope over the whole session"),
    "rss_floor_slope_mb_h": (
        "MiB/h",
        "stream: Theil-Sen slope of each 5-minute window's lowest RSS less the replay's trace",
    ),
    "rss_floor_slope_lo_mb_h": ("MiB/h", "stream: the floor slope's 95% interval, low end"),
    "rss_floor_slope_hi_mb_h": ("MiB/h", "stream: the floor slope's 95% interval, high end"),
    "trace_mb": ("MiB", "stream: the replay's own record of the session (in its RSS)"),
    "commit_ms_slope_h": ("ms/h", "stream: least-squares slope of commit latency over time"),
}

# Keys whose values are strings describing how a figure was obtained.
METHOD_KEYS = (
    "energy_method",
    "flops_counted_method",
    "rss_method",
    "weight_bytes_method",
    "prefill_method",
    "gpu_mem_method",
    "longform_decoding",
    "vad_model",
    "wer_scope",
    "stream_reference",
    "reference_aligner",
    "allocator",
)


@dataclass
class Result:
    spec_hash: str
    spec: dict[str, Any]
    repeat: int
    metrics: dict[str, Any]
    clips: list[dict[str, Any]] = field(default_factory=list)
    env: dict[str, Any] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    mode: str = "inprocess"  # "inprocess", "isolated" (own child process) or "ray" (shared)
    status: str = "ok"  # "ok" or "failed"
    created_at: float = field(default_factory=time.time)
    # identity beside the spec hash (see voxmeter.identity): rows that differ in any of these
    # are never averaged together, and a re-run skips a spec only when all of them match
    code_fp: str = ""
    weights_digest: str = ""
    data_digest: str = ""
    skipped: list[dict[str, str]] = field(default_factory=list)  # bad clips: id, reason

    @property
    def identity(self) -> Identity:
        return Identity(self.code_fp, self.weights_digest, self.data_digest)

    def with_identity(self, ident: Identity) -> Result:
        self.code_fp = ident.code_fp
        self.weights_digest = ident.weights_digest
        self.data_digest = ident.data_digest
        if ident.libraries:  # what went into code_fp and weights_digest, in words
            self.env["libraries"] = dict(ident.libraries)
        if ident.weights:
            self.env["weights"] = ident.weights
        return self

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), default=_json_default)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Result:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known})


def _json_default(o: Any) -> Any:
    try:
        import numpy as np

        if isinstance(o, np.generic):
            return o.item()
        if isinstance(o, np.ndarray):
            return o.tolist()
    except ImportError:  # pragma: no cover
        pass
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")
