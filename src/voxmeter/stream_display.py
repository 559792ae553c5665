"""How `voxmeter stream` and `voxmeter load` print a stream: the live text as it is committed,
and each figure under one name, explained where it is printed (result.py defines the keys)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from rich.console import Console
from rich.text import Text

# one name for the figure `compute_ratio` (stream) and a load stream's compute per audio second
COMPUTE_RATIO = "compute/elapsed"
COMPUTE_RATIO_NOTE = (
    "compute/elapsed: model compute time / duration of the audio streamed (its wall time when "
    "spoken live); below 1 the model keeps up, above 1 it falls further behind"
)
UNAWARE_NOTE = (
    "compute-unaware: as if the model took no time (the commit policy's own wait, a lower "
    "bound); the other latencies count the compute, as a live listener sees it"
)
LOOPS_NOTE = (
    "hypotheses dropped as loops: steps whose hypothesis repeated itself (a repetition loop); "
    "dropped rather than compared, as two loops can agree"
)

# (key, label, digits) of the summary, in order
SUMMARY = (
    ("first_partial_s", "time to first partial (s)", 2),
    ("commit_ms_p50", "commit latency p50 (ms)", 0),
    ("commit_ms_p90", "commit latency p90 (ms)", 0),
    ("commit_ms_p99", "commit latency p99 (ms)", 0),
    ("commit_unaware_ms_p50", "commit latency p50, compute-unaware (ms)", 0),
    ("eou_ms_p50", "end-of-utterance latency p50 (ms)", 0),
    ("churn", "partial words revised per committed word", 2),
    ("stream_wer", "streaming WER (%)", 2),
    ("offline_wer", "offline WER, same audio (%)", 2),
    ("stream_wer_vs_offline", "streaming WER against offline (%)", 2),
    ("compute_ratio", COMPUTE_RATIO, 3),
    ("compute_ratio_worst_60s", f"{COMPUTE_RATIO}, worst 60 s", 3),
    ("buffer_s_max", "longest buffer (s)", 1),
    ("looped_steps", "hypotheses dropped as loops", 0),
    ("forced_trims", "forced buffer cuts (uncommitted audio dropped)", 0),
    ("rss_mb_end", "RSS at the end (MiB)", 0),
    ("rss_slope_mb_h", "RSS slope (MiB/hour)", 1),
    ("rss_floor_slope_mb_h", "RSS floor slope, trace excluded (MiB/hour)", 1),
    ("stream_audio_s", "audio streamed (s)", 1),
    ("stream_wall_s", "wall time (s)", 1),
)
# the note printed under the summary when the figure is in it
NOTES = (
    ("compute_ratio", COMPUTE_RATIO_NOTE),
    ("commit_unaware_ms_p50", UNAWARE_NOTE),
    ("looped_steps", LOOPS_NOTE),
)

LIVE_LEGEND = (
    "[audio streamed, s] committed text, then partial text in italic yellow (it may still change)"
)
PIPE_LEGEND = "one line per commit: [audio streamed, s] the words committed at that step"


def _fmt(v: float | None, digits: int) -> str:
    return "n/a" if v is None else f"{v:,.{digits}f}"


def _stamp(audio_s: float) -> str:
    return f"[{audio_s:7.1f} s] "


class LiveText:
    """The live view of one stream. On a terminal one line is redrawn in place: the committed
    words, then the partial ones in another style. Piped (not a terminal), a redrawn line
    would reach the reader as its last state only, so each commit is printed as it happens,
    one line per step that committed words."""

    def __init__(self, console: Console) -> None:
        self.console = console
        self.committed: list[str] = []
        self._live: Any = None

    @property
    def piped(self) -> bool:
        return not self.console.is_terminal

    def render(self, step: Any) -> Text:
        """The terminal line after `step` (the last 40 committed words, then the partial)."""
        text = Text.assemble((_stamp(step.audio_s), "dim"), " ".join(self.committed[-40:]))
        if step.partial:
            gap = " " if self.committed else ""
            text.append(gap + " ".join(w.text for w in step.partial), style="italic yellow")
        return text

    def on_step(self, step: Any) -> None:
        new = [w.text for w in step.committed]
        self.committed.extend(new)
        if self.piped:
            if new:
                self.console.print(
                    Text(_stamp(step.audio_s) + " ".join(new)), soft_wrap=True, highlight=False
                )
        elif self._live is not None:
            self._live.update(self.render(step))

    @contextmanager
    def running(self) -> Iterator[LiveText]:
        """Print the legend, then show the steps reported to `on_step` until the block ends."""
        from rich.live import Live

        legend = PIPE_LEGEND if self.piped else LIVE_LEGEND
        self.console.print(Text(legend, style="dim"), highlight=False)
        if self.piped:
            yield self
            return
        with Live(Text(""), console=self.console, transient=False, refresh_per_second=8) as live:
            self._live = live
            try:
                yield self
            finally:
                self._live = None


def print_summary(console: Console, title: str, metrics: dict[str, Any], note: str) -> None:
    """A stream's figures (SUMMARY), each note that explains a printed one, then `note`."""
    from rich.markup import escape
    from rich.table import Table

    t = Table(title=escape(title), show_header=False)
    for key, label, digits in SUMMARY:
        if metrics.get(key) is not None:
            t.add_row(label, _fmt(float(metrics[key]), digits))
    console.print(t)
    for key, text in NOTES:
        if metrics.get(key) is not None:
            console.print(Text(text, style="dim"), highlight=False)
    for extra in (metrics.get("stream_reference"), note):
        if extra:
            console.print(Text(str(extra), style="dim"), highlight=False)


def load_words_line(words: int, timed: int, latency: dict[str, float | None]) -> str:
    """The load report's pooled line: how many committed words have a latency, and why not
    all (only words matched to a reference word are timed)."""
    return (
        f"{timed} of {words} committed words timed (only words matched to a reference word "
        f"have a commit latency): p50 {_fmt(latency['p50'], 0)} ms, "
        f"p90 {_fmt(latency['p90'], 0)} ms, p99 {_fmt(latency['p99'], 0)} ms"
    )
