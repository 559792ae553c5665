"""openai-whisper's timestamp rules, over a batch of logits at once (the hf engine's loop).

With timestamps on, the prompt has no <|notimestamps|> and at every step (decoding.py's
ApplyTimestampRules, applied after the blank and token suppression):
- <|notimestamps|> is never sampled;
- timestamps come in pairs, except directly before end-of-text: after a timestamp that follows
  text, only a timestamp or end-of-text may come; after two timestamps (or one at the start),
  only text;
- timestamps do not decrease, and a segment has nonzero length: a timestamp is at least the
  last one, and strictly greater when it would close a segment (text since the last one);
- the first token is a timestamp of at most `max_initial_index` steps (1.0 s at 0.02 s);
- when the timestamps' summed probability exceeds the most probable text token's, a
  timestamp is forced.

CTranslate2 applies the same rules inside its `generate` with one difference: it only forbids
timestamps *below* the last one, so a segment may close at its own start time (zero length).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

# torch-free, for the ct2 engine, which passes the first-timestamp limit to CTranslate2
from voxmeter.engines.common import MAX_INITIAL_TIMESTAMP_S, max_initial_index

__all__ = ["MAX_INITIAL_TIMESTAMP_S", "TimestampRules", "max_initial_index"]


@dataclass(frozen=True)
class TimestampRules:
    eot: int
    no_timestamps: int
    timestamp_begin: int
    max_initial_index: int | None = 50

    def apply(self, logits: torch.Tensor, sampled: torch.Tensor) -> None:
        """Mask `logits` (B, V) in place, given the tokens `sampled` (B, n) so far."""
        tb, neg = self.timestamp_begin, float("-inf")
        logits[:, self.no_timestamps] = neg
        n = sampled.shape[1]
        if n == 0:
            logits[:, :tb] = neg
            if self.max_initial_index is not None:
                logits[:, tb + self.max_initial_index + 1 :] = neg
        else:
            is_ts = sampled >= tb
            last = is_ts[:, -1]
            penult = is_ts[:, -2] if n >= 2 else torch.ones_like(last)
            logits[last & penult, tb:] = neg  # a pair is complete: text next
            logits[last & ~penult, : self.eot] = neg  # a segment just closed: no text
            # the rules keep timestamps non-decreasing, so the largest is the last one
            stamp = torch.where(is_ts, sampled, torch.full_like(sampled, -1)).amax(dim=1)
            floor = torch.where(last & ~penult, stamp, stamp + 1)
            vocab = torch.arange(logits.shape[1], device=logits.device)
            below = (vocab >= tb) & (vocab < floor[:, None]) & (stamp >= 0)[:, None]
            logits.masked_fill_(below, neg)
        logprobs = logits.log_softmax(dim=-1)
        force = logprobs[:, tb:].logsumexp(dim=-1) > logprobs[:, :tb].amax(dim=-1)
        logits[force, :tb] = neg
