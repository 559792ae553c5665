"""When each reference word's audio ended: forced alignment of a known text to its audio.

Commit latency is measured from the end of a word's audio, so the reference needs word times.
They come from one named reference aligner, the same for every stream whatever model it
measures (so two models' latencies share one clock, and a model without CTranslate2 weights
streams too): the bundled tiny.en's cross-attention, aligned by dynamic time warping with
CTranslate2's `Whisper.align` (the method faster-whisper's `word_timestamps` runs), over the
alignment heads the model's config lists, given the reference text's tokens rather than a
hypothesis. A word starts where the DTW path first reaches its first token and ends where
the path reaches the next word's first token (the last word: where its last token's path ends).
Times are in the path's 20 ms steps. Spans are at most 30 s (one window); a long stream is
aligned span by span (each clip of a joined data set, or each offline segment of a file).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from voxmeter.errors import ModelError
from voxmeter.stream.policy import Word

SAMPLE_RATE = 16000
STEP_S = 0.02  # one encoder position: the DTW path's time resolution
MAX_SPAN_S = 30.0
REFERENCE_MODEL = "tiny.en"  # the reference aligner's model, whatever model streams
REFERENCE_ALIGNER = f"{REFERENCE_MODEL} (CTranslate2 Whisper.align, float32, CPU)"


@dataclass(frozen=True)
class Span:
    """A stretch of a stream whose text is known: at most 30 s."""

    start_s: float
    audio: np.ndarray  # its samples, 16 kHz mono float32
    text: str


def _sentence_case(text: str) -> str:
    # LibriVox references are upper case; the model aligns natural casing better
    return text.capitalize() if text.isupper() else text


def word_bounds(pieces: list[str]) -> list[tuple[int, int]]:
    """[first, last) token index of each word; a piece starting with a space starts a word."""
    bounds: list[tuple[int, int]] = []
    for i, piece in enumerate(pieces):
        if i == 0 or (piece.startswith(" ") and piece.strip()):
            bounds.append((i, i + 1))
        else:
            bounds[-1] = (bounds[-1][0], i + 1)
    return bounds


def words_from_path(
    path: Iterable[tuple[int, int]], pieces: list[str], offset_s: float
) -> list[Word]:
    """Word times from a DTW path of (token index, time step) pairs (see module doc)."""
    first: dict[int, int] = {}
    last: dict[int, int] = {}
    for tok, step in path:
        if 0 <= tok < len(pieces):
            first.setdefault(tok, step)
            last[tok] = step
    bounds = word_bounds(pieces)
    out = []
    for j, (a, b) in enumerate(bounds):
        if a not in first:
            continue
        start = first[a]
        nxt = bounds[j + 1][0] if j + 1 < len(bounds) else None
        end = first[nxt] if nxt is not None and nxt in first else last.get(b - 1, start) + 1
        text = "".join(pieces[a:b]).strip()
        out.append(Word(offset_s + start * STEP_S, offset_s + max(end, start + 1) * STEP_S, text))
    return out


def reference_aligner(cache: Path) -> Aligner:
    """The reference aligner every stream's word times come from (REFERENCE_ALIGNER)."""
    from voxmeter.assets.bundled import resolve_model

    return Aligner(resolve_model(REFERENCE_MODEL, cache))


class Aligner:
    """Forced alignment with the bundled CTranslate2 model of `source` (CPU, float32)."""

    def __init__(self, source: Any) -> None:
        import ctranslate2

        from voxmeter.engines.common import Tokenizer

        if source.ct2_dir is None:
            raise ModelError(
                f"{source.name}: reference word times need the model in CTranslate2 form "
                "(its alignment heads); a transformers-only directory cannot align"
            )
        self.dims = source.dims
        self.model = ctranslate2.models.Whisper(
            str(source.ct2_dir), device="cpu", compute_type="float32", intra_threads=2
        )
        self.tokenizer = Tokenizer(source.tokenizer)
        self._aligned: dict[tuple[str, str], list[Word]] = {}  # (audio digest, text) -> words

    def words(self, span: Span) -> list[Word]:
        """Reference words of one span with their times in the stream. A clip that recurs
        (an hour's stream repeats its data set) is aligned once and shifted to each place."""
        import hashlib

        key = (hashlib.blake2b(span.audio.tobytes(), digest_size=16).hexdigest(), span.text)
        if key not in self._aligned:
            self._aligned[key] = self._align(span.audio, span.text)
        return [
            Word(w.start + span.start_s, w.end + span.start_s, w.text) for w in self._aligned[key]
        ]

    def _align(self, samples: np.ndarray, ref: str) -> list[Word]:
        """The words of `ref` in `samples`, times from the samples' start."""
        import ctranslate2

        from voxmeter.assets.convert import special_ids
        from voxmeter.audio.features import log_mel
        from voxmeter.engines.common import sot_sequence

        text = _sentence_case(ref.strip())
        audio = samples[: int(MAX_SPAN_S * SAMPLE_RATE)]
        tokens = self.tokenizer.encode(text) if text else []
        if not tokens or len(audio) < SAMPLE_RATE // 10:
            return []
        feats = log_mel(audio, 3000, self.dims.n_mels).reshape(1, self.dims.n_mels, -1)
        n_frames = max(2, len(audio) // 160)
        start = [*sot_sequence(self.dims), special_ids(self.dims)["no_timestamps"]]
        (res,) = self.model.align(
            ctranslate2.StorageView.from_array(np.ascontiguousarray(feats, dtype=np.float32)),
            start,
            [tokens],
            [n_frames],
        )
        pieces = [self.tokenizer.piece(t) for t in tokens]
        return words_from_path(res.alignments, pieces, 0.0)
