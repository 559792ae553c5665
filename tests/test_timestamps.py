"""Timestamp decoding (the decoder side of long-form) and previous-text prompts.

The rules are checked by hand on a toy vocabulary; on real speech (four LibriVox utterances
joined into 23 s) both engines must give well-formed timestamp pairs inside the window, the
same tokens, and the text the no-timestamp decoding gives.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from voxmeter.engines import load_engine
from voxmeter.engines.common import prompt_ids
from voxmeter.engines.rules import TimestampRules, max_initial_index
from voxmeter.errors import SpecError
from voxmeter.metrics import normalize
from voxmeter.spec import RunSpec

NEG = float("-inf")
# a toy vocabulary: text 0-4, end-of-text 5, specials 6-7 (<|notimestamps|> 7), timestamps 8-13
EOT, NO_TS, TB, V = 5, 7, 8, 14


def _masked(sampled: list[list[int]], logits: torch.Tensor | None = None) -> list[set]:
    """Which token ids the rules forbid next, per item, after `sampled`. By default text and
    end-of-text are far likelier than any timestamp, so the summed-probability rule stays out
    of the way of the structural ones."""
    rules = TimestampRules(EOT, NO_TS, TB, max_initial_index=2)
    if logits is None:
        logits = torch.zeros(len(sampled), V)
        logits[:, : EOT + 1] = 10.0
    x = logits.clone()
    rules.apply(x, torch.tensor(sampled, dtype=torch.long).view(len(sampled), -1))
    return [{i for i in range(V) if row[i] == NEG} for row in x]


def test_first_token_is_an_early_timestamp():
    (m,) = _masked([[]])
    assert m == set(range(TB)) | {TB + 3, TB + 4, TB + 5}  # text, eot, <|notimestamps|>, > 2


def test_after_a_start_timestamp_text_follows():
    (m,) = _masked([[TB + 1]])
    assert m == {NO_TS} | set(range(TB, V))


def test_a_segment_closes_after_its_start_and_then_only_a_timestamp_or_eot():
    (a,), (b,) = _masked([[TB + 1, 2]]), _masked([[TB + 1, 2, TB + 3]])
    assert a == {NO_TS, TB, TB + 1}  # the closing timestamp is strictly later
    assert b == set(range(EOT)) | {NO_TS, TB, TB + 1, TB + 2}  # >= the end: a new start


def test_after_a_pair_text_follows_and_batch_rows_are_independent():
    a, b = _masked([[TB, 1, TB + 2, TB + 2], [TB, 1, 2, 3]])
    assert a == {NO_TS} | set(range(TB, V))
    assert b == {NO_TS, TB}


def test_timestamps_are_forced_when_their_summed_probability_wins():
    # after <|0|> and a word, timestamps TB+1..TB+5 are open: five at e^0 against one word
    logits = torch.zeros(2, V)
    logits[0, 1] = 2.0  # e^2 = 7.4 > 5: the word may still win, nothing more is masked
    logits[1, 1] = 1.0  # e^1 = 2.7 < 5: the timestamps together win, all text is masked
    a, b = _masked([[TB, 1], [TB, 1]], logits=logits)
    assert a == {NO_TS, TB}
    assert b == set(range(TB)) | {TB}


def test_prompts_with_and_without_timestamps_and_previous_text(tiny_source):
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(tiny_source.tokenizer))
    dims = tiny_source.dims
    sot, nots = tok.token_to_id("<|startoftranscript|>"), tok.token_to_id("<|notimestamps|>")
    prev = tok.token_to_id("<|startofprev|>")
    assert prompt_ids(dims) == [sot, nots]
    assert prompt_ids(dims, timestamps=True) == [sot]
    long_prefix = list(range(300))
    p = prompt_ids(dims, timestamps=True, prefix=long_prefix)
    assert p == [prev, *range(300 - 223, 300), sot]  # the last n_text_ctx // 2 - 1 tokens
    assert prompt_ids(dims, prefix=[]) == [sot, nots]  # no previous text, no <|startofprev|>
    assert max_initial_index(dims.n_audio_ctx) == 50  # 1.0 s at 0.02 s per timestamp


@pytest.fixture(scope="module")
def speech(default_clips):
    clips = {c.id: a.samples for c, a in default_clips}
    gap = np.zeros(8000, dtype=np.float32)
    parts = ["librivox-0870", "librivox-0920", "librivox-0890", "librivox-0930"]
    joined = np.concatenate([x for p in parts for x in (clips[p], gap)][:-1])
    return joined, clips


def _well_formed(tokens: list[int], tb: int, duration_s: float, strict: bool) -> None:
    ts = [t >= tb for t in tokens]
    assert ts[0] and tokens[0] - tb <= 50, "starts with a timestamp of at most 1.0 s"
    runs, i = [], 0
    while i < len(tokens):
        j = i
        while j < len(tokens) and ts[j] == ts[i]:
            j += 1
        if ts[i]:
            runs.append((i, j - i))
        i = j
    for start, n in runs:  # pairs, except the opening stamp and a closing one before eot
        assert n == 2 or (n == 1 and start in (0, len(tokens) - 1)), (start, n)
    stamps = [t - tb for t in tokens if t >= tb]
    assert stamps == sorted(stamps), "timestamps never decrease"
    if strict:  # openai-whisper's rule: every segment has a nonzero length
        assert all(b > a for a, b in zip(stamps[::2], stamps[1::2]))
    assert stamps[-1] * 0.02 <= min(30.0, duration_s + 0.5), "inside the window and the audio"


@pytest.fixture(scope="module")
def decoded(speech, engines):
    """Per engine: the 23 s recording and a 3 s clip in one batch, with and without
    timestamps."""
    joined, clips = speech
    audios = [joined, clips["librivox-0880"]]
    out = {}
    for name, e in engines.items():
        enc = e.encode(e.features(audios))
        out[name] = (audios, e.decode(enc, timestamps=True), e.decode(enc))
    return out


@pytest.mark.parametrize("name", ["hf", "ct2"])
def test_real_speech_gives_well_formed_pairs_and_the_same_text(name, decoded, engines):
    e = engines[name]
    tb = e.ids["timestamp_begin"]
    audios, with_ts, plain = decoded[name]
    for i, (ts, nts) in enumerate(zip(with_ts, plain)):
        _well_formed(ts.tokens, tb, len(audios[i]) / 16000, strict=name == "hf")
        assert len([t for t in ts.tokens if t >= tb]) >= (8 if i == 0 else 2)
        assert ts.text == e.tokenizer.decode([t for t in ts.tokens if t < tb])
        assert normalize(ts.text) == normalize(nts.text)


def test_hf_and_ct2_give_the_same_timestamp_tokens(decoded):
    for a, b in zip(decoded["hf"][1], decoded["ct2"][1]):
        assert a.tokens == b.tokens


@pytest.mark.parametrize("timestamps", [False, True])
def test_prefixes_of_different_lengths_batch_like_alone(timestamps, speech, engines):
    """hf left-pads the shorter prompts (masked); ct2 runs one generate per prompt length."""
    _, clips = speech
    audios = [clips["librivox-0880"], clips["librivox-0930"], clips["cards-005"]]
    prefixes = [[464, 3797, 3332, 319, 262, 2603, 13], None, [1544, 13]]
    results = {}
    for name, e in engines.items():
        batch = e.decode(e.encode(e.features(audios)), timestamps=timestamps, prefixes=prefixes)
        alone = [
            e.decode(e.encode(e.features([a])), timestamps=timestamps, prefixes=[p])[0]
            for a, p in zip(audios, prefixes)
        ]
        assert [o.tokens for o in batch] == [o.tokens for o in alone], name
        results[name] = [o.tokens for o in batch]
    assert results["hf"] == results["ct2"]


@pytest.mark.parametrize("name", ["hf", "ct2"])
def test_a_forced_start_is_continued_as_free_decoding_continues_it(name, decoded, engines):
    """Forcing the first k tokens of a free timestamped decode (timestamp tokens included, cut
    mid-segment or not) gives back the same tokens: the rules see the forced tokens as
    sampled. max_new and hit_max_length count generated tokens only."""
    e = engines[name]
    audios, with_ts, _ = decoded[name]
    enc = e.encode(e.features([audios[0]]))
    full = with_ts[0].tokens
    assert len(full) > 12
    for k in (1, 2, len(full) // 2, len(full) - 2):
        (out,) = e.decode(enc, timestamps=True, forced=[full[:k]])
        assert out.tokens == full and not out.hit_max_length, k
        (short,) = e.decode(enc, timestamps=True, forced=[full[:k]], max_new=2)
        assert short.tokens == full[: k + 2] and short.hit_max_length, k


def test_hf_refuses_forced_starts_of_different_lengths_in_one_batch(speech, engines):
    _, clips = speech
    e = engines["hf"]
    enc = e.encode(e.features([clips["cards-005"], clips["librivox-0930"]]))
    tb = e.ids["timestamp_begin"]
    with pytest.raises(SpecError, match="forced"):
        e.decode(enc, timestamps=True, forced=[[tb], [tb, 464]])


@pytest.fixture(scope="module")
def engines(cache_dir, tiny_source):
    return {n: load_engine(RunSpec(engine=n), cache_dir, tiny_source) for n in ("hf", "ct2")}


def test_ctranslate2_chooses_what_our_rules_choose_on_its_own_logits(speech, engines):
    """CTranslate2 returns each step's raw logits: blank and token suppression plus our
    timestamp rules, applied to them, pick the very token its generate picked, step by step."""
    from voxmeter.engines.common import load_suppress

    joined, clips = speech
    e = engines["ct2"]
    suppress, begin = load_suppress(e.source, e.ids)
    rules = engines["hf"]._timestamp_rules()
    steps = 0
    for audio in (joined, clips["cards-005"], clips["librivox-0890"]):
        enc = e.encode(e.features([audio]))
        (res,) = e.model.generate(
            enc.states,
            [e.prompt[:-1]],  # the sot sequence without <|notimestamps|>
            beam_size=1,
            max_length=448,
            suppress_blank=True,
            suppress_tokens=[-1],
            return_logits_vocab=True,
        )
        chosen = res.sequences_ids[0] + [e.ids["eot"]]
        for step, raw in enumerate(res.logits[0]):
            x = torch.from_numpy(np.array(raw, dtype=np.float32))[None]
            x[0, suppress + (begin if step == 0 else [])] = NEG
            rules.apply(x, torch.tensor([chosen[:step]], dtype=torch.long).view(1, -1))
            assert int(x.argmax()) == chosen[step], (step, chosen[: step + 1])
            steps += 1
    assert steps > 100
