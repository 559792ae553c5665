"""The hf engine's batched greedy decoding, the parts apart from the model: the state one decode
carries from step to step, and the self-attention mask of a left-padded batch."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from voxmeter.engines.rules import TimestampRules


def padded_causal_mask(real: torch.Tensor, length: int, t: int) -> torch.Tensor:
    """(B, 1, t, length + t) self-attention mask, True where allowed, for t new positions after
    `length`: causal, and a row's keys are its item's real (non-padding) columns. A padding
    query sees only itself, so its row stays finite and is simply never looked at."""
    cols = torch.arange(length + t, device=real.device)
    rows = torch.arange(length, length + t, device=real.device)[:, None]
    own = cols[None, :] == rows
    return ((cols[None, :] <= rows) & (real[:, None, : length + t] | own))[:, None]


@dataclass
class DecodeState:
    """What one batched greedy decode carries from step to step (see HFWhisperEngine.decode)."""

    fixed: list[int] | None  # cost-only: the exact steps per item
    limits: list[int]  # the most tokens per item
    n_forced: int
    cache: list[tuple[torch.Tensor, ...]]  # self-attention K/V per layer
    cross: list[tuple[torch.Tensor, torch.Tensor]]  # cross-attention K/V per layer
    fed: torch.Tensor  # the tokens the next pass reads
    pos: torch.Tensor  # their positions, per row
    real: torch.Tensor | None  # per row, the non-padding columns (None: no padding)
    rules: TimestampRules | None
    sampled: torch.Tensor  # the timestamp rules' history
    out: list[list[int]]  # per item: forced tokens, then generated ones
    done: list[bool]
    hit_max: list[bool]
    item_steps: list[int]
    rows: list[int]  # the items still in the batch tensors, in row order
    length: int = 0  # positions in the cache
    steps: int = 0

    def record(self, toks: list[int], eot: int) -> None:
        """Each live item's token of this step: kept, or the end of that item."""
        for r, j in enumerate(self.rows):
            if self.done[j]:
                continue
            if self.fixed is not None and self.steps >= self.fixed[j]:
                self.done[j] = True  # the n-th step's logits were computed; nothing is kept
            elif self.fixed is None and toks[r] == eot:
                self.done[j] = True
            else:
                self.out[j].append(toks[r])
                if self.steps >= self.limits[j]:
                    self.done[j] = True
                    self.hit_max[j] = self.fixed is None
            self.item_steps[j] = self.steps

    def drop_finished(self) -> None:
        """Drop finished rows once a quarter of the batch is done: every later step reads
        each row's cross-attention K/V, so riding along is not free."""
        finished = [r for r, j in enumerate(self.rows) if self.done[j]]
        if len(finished) < max(1, len(self.rows) // 4):
            return
        keep = [r for r, j in enumerate(self.rows) if not self.done[j]]
        idx = torch.tensor(keep, device=self.fed.device)
        self.cache = [(kc.index_select(0, idx), vc.index_select(0, idx)) for kc, vc in self.cache]
        self.cross = [(ck.index_select(0, idx), cv.index_select(0, idx)) for ck, cv in self.cross]
        self.sampled, self.fed, self.pos = (
            z.index_select(0, idx) for z in (self.sampled, self.fed, self.pos)
        )
        self.real = None if self.real is None else self.real.index_select(0, idx)
        self.rows = [self.rows[r] for r in keep]
