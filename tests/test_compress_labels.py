"""Pseudo-labels: which labels are refused and why, the on-disk cache that spares a rerun its
decoding, references kept where a clip has one, and a build labelled by base for tiny.en."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest


@pytest.mark.parametrize(
    "text, hit_max, seconds, why",
    [
        ("", False, 2.0, "empty label"),
        ("  ...  ", False, 2.0, "empty label"),
        ("Hmm.", False, 2.0, "empty label"),  # a filler alone: nothing after the normalizer
        ("I am going to", True, 2.0, "length limit"),
        ("Go there. Go there. Go there. Go there.", False, 9.0, "repetition loop"),
        ("the cat sat on the mat and then left", False, 1.0, "words/s"),
    ],
)
def test_unusable_labels_are_refused_with_their_reason(text, hit_max, seconds, why):
    from voxmeter.compress.labels import reject

    assert why in reject(text, hit_max, seconds)


def test_a_usable_label_passes():
    from voxmeter.compress.labels import reject

    assert reject("No, no, no. I will not.", False, 2.5) is None
    assert reject("Wanna bet?", False, 0.6) is None  # few words: no rate check


class _Fake:
    """An engine whose transcript of a clip is chosen by its sample count."""

    def __init__(self, texts: dict[int, str]) -> None:
        self.texts, self.decoded = texts, 0

    def features(self, audios):
        return [len(a) for a in audios]

    def encode(self, feats):
        return feats

    def decode(self, enc):
        from voxmeter.engines.base import DecodeOutput

        self.decoded += len(enc)
        return [DecodeOutput([], self.texts[n]) for n in enc]


def _set(n: int, unlabelled: set[int]):
    from voxmeter.data.datasets import load_dataset

    ds = load_dataset("calib")
    clips = ds.clips[:n]
    ds.clips = [
        replace(c, text="", extra={**c.extra, "has_text": False}) if i in unlabelled else c
        for i, c in enumerate(clips)
    ]
    return ds


def _lengths(ds) -> list[int]:
    from voxmeter.data.datasets import iter_audio

    return [len(a.samples) for _, a in iter_audio(ds)]


def test_labels_are_cached_by_labeller_and_audio_and_references_are_kept(tmp_path):
    from voxmeter.compress.labels import label

    ds = _set(4, {0, 1, 2})
    n = _lengths(ds)
    fake = _Fake({n[0]: "A fine label.", n[1]: "", n[2]: "Another one."})
    got = label(ds, lambda: fake, "digestA", tmp_path, progress=lambda *a: None)
    texts = {c.id: c.text for c in got.dataset.clips}
    ids = [c.id for c in ds.clips]
    assert texts == {ids[0]: "A fine label.", ids[2]: "Another one.", ids[3]: ds.clips[3].text}
    assert [s["id"] for s in got.skipped] == [ids[1]] and "empty" in got.skipped[0]["reason"]
    assert (got.n_pseudo, got.n_decoded, fake.decoded) == (2, 3, 3)  # the reference clip: none
    cached = json.loads((tmp_path / "labels" / "digestA-v1.json").read_text())
    assert len(cached) == 3  # keyed by audio sha256, the refused label too

    def never():
        raise AssertionError("a rerun must not decode again")

    again = label(ds, never, "digestA", tmp_path)
    assert [c.text for c in again.dataset.clips] == [c.text for c in got.dataset.clips]
    assert again.n_decoded == 0 and again.skipped == got.skipped
    other = _Fake(dict.fromkeys(n, "Other words."))
    label(ds, lambda: other, "digestB", tmp_path)  # another labeller's weights: decoded anew
    assert other.decoded == 3


def test_a_set_with_every_reference_never_loads_the_labeller(tmp_path):
    from voxmeter.compress.labels import label

    ds = _set(3, set())
    got = label(ds, lambda: pytest.fail("no labeller needed"), "d", tmp_path)
    assert got.dataset is ds and got.n_pseudo == 0


@pytest.mark.slow
def test_base_labels_tiny_en_in_the_students_tokens_and_the_directory_says_so(tmp_path, cache_dir):
    """Sequence-level distillation across tokenizers: base's English text, re-tokenised by
    tiny.en's tokenizer, is the target; the record names the labeller and the counts."""
    from voxmeter.assets.bundled import resolve_model
    from voxmeter.compress import build, training_pairs
    from voxmeter.compress.artifact import read_meta
    from voxmeter.compress.traindata import TrainData
    from voxmeter.engines.common import Tokenizer
    from voxmeter.identity import FileDigests, weights_digest
    from voxmeter.run.model import prepare_weights
    from voxmeter.spec import RunSpec

    hf = prepare_weights(RunSpec(), resolve_model("tiny.en", cache_dir), cache_dir)[0]
    ds = _set(2, {0, 1})
    train = TrainData("mine", ds, "base", 2, 2)
    pairs = training_pairs(hf, train, "x", cache_dir)
    base = weights_digest(resolve_model("base", cache_dir), FileDigests(cache_dir))
    labels = json.loads((Path(cache_dir) / "labels" / f"{base}-v1.json").read_text())
    tok = Tokenizer(hf.tokenizer)
    texts = [tok.decode([t for t in ids if t < 50257]).strip() for _, ids in pairs.pairs]
    assert set(texts) <= {v["text"] for v in labels.values()} and len(texts) == 2
    comp = RunSpec().with_(prune_ffn=0.1, recover="distill", recover_steps=1, labeller="base")
    out = build(comp.compression, hf, tmp_path / "m", train, cache=cache_dir)
    rec = read_meta(out)["calibration"]
    assert rec["labeller"] == "base" and rec["n_pseudo_labelled"] == 2 and rec["n_clips"] == 2


def test_the_card_names_the_labeller_and_the_pseudo_labelled_count():
    from voxmeter.compress.card import _calibration

    rec = {"data": "real-train", "n_clips": 250, "digest": "abc", "labeller": "base"}
    text = _calibration({**rec, "n_pseudo_labelled": 250, "skipped": [{"id": "q1", "reason": "pseudo-label: empty"}]}, "")  # fmt: skip
    assert text.startswith(
        "real-train (250 clips used, digest abc; 250 pseudo-labelled by the base"
    )
    assert "1 skipped as bad input (`q1`: pseudo-label: empty)" in text


def test_the_recovery_checkpoint_digest_holds_the_labels():
    """A resumed run must not continue on other pseudo-labels: the digest covers the tokens."""
    import torch

    from voxmeter.compress.recover import _digest, _Settings

    cfg = _Settings("distill", 10, 1e-4, 2, 0, True)
    model = torch.nn.Linear(2, 2)
    feats = torch.zeros(1, 80, 30)
    a = _digest(cfg, model, [(feats, [50257, 50362, 11, 50256])])
    b = _digest(cfg, model, [(feats, [50257, 50362, 12, 50256])])
    assert a != b and a == _digest(cfg, model, [(feats, [50257, 50362, 11, 50256])])


def test_a_killed_labelling_keeps_what_it_decoded_and_a_missing_file_is_never_cached(
    tmp_path, monkeypatch
):
    from voxmeter.compress import labels

    monkeypatch.setattr(labels, "BATCH", 1)
    ds = _set(3, {0, 1, 2})
    n = _lengths(ds)

    class Dies(_Fake):
        def decode(self, enc):
            if self.decoded:
                raise KeyboardInterrupt
            return super().decode(enc)

    with pytest.raises(KeyboardInterrupt):
        labels.label(ds, lambda: Dies(dict.fromkeys(n, "Kept words.")), "k", tmp_path)
    cache = tmp_path / "labels" / "k-v1.json"
    assert [v["text"] for v in json.loads(cache.read_text()).values()] == ["Kept words."]
    gone = replace(ds.clips[2], audio=tmp_path / "gone.flac")
    ds.clips = [*ds.clips[:2], gone]
    fake = _Fake(dict.fromkeys(n, "New words."))
    got = labels.label(ds, lambda: fake, "k", tmp_path)
    assert fake.decoded == 1  # clip 1 only: clip 0 was cached, the missing file never loads
    assert [s["id"] for s in got.skipped] == [gone.id] and "gone.flac" in got.skipped[0]["reason"]
    assert len(json.loads(cache.read_text())) == 2  # the missing file left no entry


def test_a_build_that_trains_on_nothing_says_so():
    from voxmeter.compress.card import _calibration

    assert _calibration({"data": "", "n_clips": 0}, "") == (
        "none (no method here trains or ranks on speech)"
    )
