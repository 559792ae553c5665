"""Recovery training on the real tiny.en weights, a few clips and steps: distillation brings a
depth-2 student closer to its teacher (KL measured here, independently of the module), LoRA
merges back into the same structure, an interrupted run resumes to the weights of an
uninterrupted one, and a checkpoint of other settings or another base model is refused.

Students keep two decoder layers: their encoder equals the teacher's, so recovery freezes it
and a step is decoder-only (fast on a CPU). The teacher's outputs (its encoder at 3000 frames:
most of a run's time on a CPU) are computed once for the module; they depend on the pairs alone
and are deterministic (a run recomputing them on resume was also bit-identical)."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from voxmeter.compress.depth import keep_decoder_layers
from voxmeter.compress.recover import CKPT_FILE, checkpoint_dir, recover
from voxmeter.errors import DataError, SpecError
from voxmeter.spec import RunSpec

SOT = 50257  # tiny.en start of transcript; the prompt is the leading ids >= it


@pytest.fixture(scope="module")
def source(cache_dir):
    from voxmeter.assets.bundled import resolve_model
    from voxmeter.run.harness import prepare_weights

    return prepare_weights(RunSpec(), resolve_model("tiny.en", cache_dir), cache_dir)[0]


@pytest.fixture(scope="module")
def pairs(source):
    """Three calibration pairs: the bundled calib set's when it exists, else default clips
    (synthesized speech; for this test only, never for a real build)."""
    from voxmeter.compress import calibration_pairs
    from voxmeter.data.datasets import load_dataset

    try:
        ds = load_dataset("calib")
    except DataError:
        ds = load_dataset("default")
        ds.clips = [c for c in ds.clips if c.id.startswith("tts-")]
    ds.clips = sorted(ds.clips, key=lambda c: c.duration_s or 0.0)[:3]  # fewest tokens
    return calibration_pairs(source, ds).pairs


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Torch on one thread for this module: on a busy 2-core machine a step ran 4-6x faster
    than on two (threads wait at every op's barrier); results do not depend on it."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module", autouse=True)
def teacher_once():
    """recover's teacher pass, memoised per pairs list for this module (see the module doc)."""
    import voxmeter.compress.recover as rec

    real, memo = rec._teacher_outputs, {}

    def once(teacher, pairs, sot):
        if id(pairs) not in memo:
            memo[id(pairs)] = real(teacher, pairs, sot)
        return memo[id(pairs)]

    mp = pytest.MonkeyPatch()
    mp.setattr(rec, "_teacher_outputs", once)
    yield memo
    mp.undo()


@pytest.fixture(scope="module")
def teacher(source):
    from transformers import WhisperForConditionalGeneration

    return WhisperForConditionalGeneration.from_pretrained(source.hf_dir).eval()


@pytest.fixture(scope="module")
def enc_states(teacher, pairs, teacher_once):
    """The teacher's encoder states per clip (from the memoised pass: one encoder run)."""
    from voxmeter.compress.recover import _teacher_outputs

    return [s[None] for s in _teacher_outputs(teacher, pairs, SOT).states]


def _student(teacher):
    m = copy.deepcopy(teacher)
    keep_decoder_layers(m, 2)
    return m


def _kl(student, teacher, pairs, enc_states) -> float:
    """KL(teacher || student) at T = 1, mean per reference position (the prompt excluded); both
    decoders read the teacher's encoder states, which a depth-only student shares."""
    from transformers.modeling_outputs import BaseModelOutput

    total, n = 0.0, 0
    with torch.no_grad():
        for (_, ids), enc in zip(pairs, enc_states, strict=True):
            p = next(i for i, t in enumerate(ids) if t < SOT)
            kw = {
                "encoder_outputs": BaseModelOutput(last_hidden_state=enc),
                "decoder_input_ids": torch.tensor([ids[:-1]]),
            }
            lt = teacher(**kw).logits[0, p - 1 :].log_softmax(-1)
            ls = student(**kw).logits[0, p - 1 :].log_softmax(-1)
            total += float((lt.exp() * (lt - ls)).sum())
            n += lt.shape[0]
    return total / n


def _state(m: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in m.state_dict().items()}


def test_distillation_brings_the_student_closer(source, pairs, teacher, enc_states, tmp_path):
    student = _student(teacher)
    n_before, flags = (
        sum(p.numel() for p in student.parameters()),
        [p.requires_grad for p in student.parameters()],
    )
    kl0 = _kl(student, teacher, pairs, enc_states)
    seen = []
    out = tmp_path / "m"
    rep = recover(
        student, source, pairs, "distill", 4, out, batch=2, progress=lambda *a: seen.append(a)
    )
    kl1 = _kl(student, teacher, pairs, enc_states)
    assert kl1 < 0.8 * kl0, (kl0, kl1)
    # the report's KL is the same measure (its teacher logits are kept in float16)
    assert rep["kl_before"] == pytest.approx(kl0, rel=1e-2)
    assert rep["kl_after"] == pytest.approx(kl1, rel=1e-2)
    assert rep["loss_end"] < rep["loss_start"]
    assert rep["encoder"].startswith("frozen") and "encoder_mse" not in rep["loss_parts_end"]
    assert [s[1] for s in seen] == list(range(1, 5)) and seen[0] == ("recover step 1", 1, 4)
    # same structure, eval mode, fp32, flags as given; the frozen encoder did not move
    assert not student.training and sum(p.numel() for p in student.parameters()) == n_before
    assert [p.requires_grad for p in student.parameters()] == flags
    assert all(p.dtype == torch.float32 for p in student.parameters())
    enc_t = teacher.model.encoder.state_dict()
    assert all(torch.equal(v, enc_t[k]) for k, v in student.model.encoder.state_dict().items())
    assert not checkpoint_dir(out).exists()


def test_lora_merges_back_into_the_same_structure(source, pairs, teacher, tmp_path):
    from peft.tuners.tuners_utils import BaseTunerLayer

    from voxmeter.compress import artifact
    from voxmeter.compress.lowrank import LowRankLinear, factorize

    student = _student(teacher)
    factorize(student, 0.9, include=["model.decoder.layers.0.fc1"])  # one low-rank pair
    low = student.model.decoder.layers[0].fc1
    assert isinstance(low, LowRankLinear)
    n_before, before = sum(p.numel() for p in student.parameters()), _state(student)
    rep = recover(student, source, pairs, "lora", 2, tmp_path / "m", batch=2)
    assert not any(isinstance(m, BaseTunerLayer) for m in student.modules())
    assert not hasattr(student, "peft_config")
    assert sum(p.numel() for p in student.parameters()) == n_before
    after = _state(student)
    assert after.keys() == before.keys() and all(after[k].shape == before[k].shape for k in after)
    assert student.model.decoder.layers[0].fc1 is low  # the pair is still ours, both parts moved
    for k in (
        "model.decoder.layers.0.fc1.0.weight",
        "model.decoder.layers.0.fc1.1.weight",
        "model.decoder.layers.1.self_attn.q_proj.weight",
        "model.decoder.layers.1.fc2.weight",
    ):
        assert not torch.equal(after[k], before[k]), k
    # adapters on the decoder's Linears only (the encoder is the teacher's and stays frozen)
    assert rep["lora"]["targets"] == 2 * 10 + 1 and rep["kl_after"] < rep["kl_before"]
    assert all(torch.equal(after[k], before[k]) for k in after if k.startswith("model.encoder"))
    # and it saves and loads as a model directory like any compressed model
    path = artifact.save_model(student, tmp_path / "art", {}, tokenizer=None, suppress=([], []))
    loaded = artifact.load_model(path).state_dict()
    assert all(torch.equal(loaded[k], v) for k, v in after.items())


def test_an_interrupted_run_resumes_to_the_same_weights(source, pairs, teacher, tmp_path):
    steps, k, kw = 4, 3, {"batch": 2, "ckpt_every": 2}
    whole = _student(teacher)
    recover(whole, source, pairs, "distill", steps, tmp_path / "a", **kw)

    def stop_at_k(_msg, i, _n):
        if i == k:
            raise KeyboardInterrupt

    out = tmp_path / "b"
    with pytest.raises(KeyboardInterrupt):
        recover(_student(teacher), source, pairs, "distill", steps, out, progress=stop_at_k, **kw)
    assert (checkpoint_dir(out) / CKPT_FILE).is_file()
    assert [p.name for p in checkpoint_dir(out).iterdir()] == [CKPT_FILE]  # no temp file left
    resumed = _student(teacher)
    rep = recover(resumed, source, pairs, "distill", steps, out, **kw)
    assert rep["steps_this_run"] == steps - k
    assert rep["events"] == [
        {"event": "checkpoint", "step": 2},
        {"event": "interrupted", "step": k},
        {"event": "resumed", "step": k},
    ]
    a, b = whole.state_dict(), resumed.state_dict()
    assert all(torch.equal(a[n], b[n]) for n in a)  # bit for bit
    assert not checkpoint_dir(out).exists()


def test_a_checkpoint_of_other_settings_is_refused(source, pairs, teacher, tmp_path):
    def stop(_msg, i, _n):
        raise KeyboardInterrupt

    out = tmp_path / "m"
    with pytest.raises(KeyboardInterrupt):
        recover(_student(teacher), source, pairs, "distill", 3, out, batch=2, progress=stop)
    path = checkpoint_dir(out) / CKPT_FILE
    with pytest.raises(SpecError) as e:
        recover(_student(teacher), source, pairs, "distill", 3, out, batch=2, lr=5e-5)
    assert "\n" not in str(e.value) and str(path) in str(e.value) and "settings" in str(e.value)
    ckpt = torch.load(path, weights_only=True)
    ckpt["base"] = "0123456789abcdef"  # as if made from other base weights
    torch.save(ckpt, path)
    with pytest.raises(SpecError) as e:
        recover(_student(teacher), source, pairs, "distill", 3, out, batch=2)
    assert "\n" not in str(e.value) and str(path) in str(e.value) and "base model" in str(e.value)
    with pytest.raises(SpecError, match="recover: expected one of"):
        recover(_student(teacher), source, pairs, "prune", 3, out)
