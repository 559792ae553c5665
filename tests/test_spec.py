import pytest

from voxmeter.errors import SpecError
from voxmeter.spec import MAX_SEED, AxisSettings, RunSpec, check_device, is_cuda


def test_hash_is_stable_and_ignores_repeats():
    a = RunSpec()
    assert a.spec_hash == RunSpec().spec_hash
    assert a.spec_hash == a.with_(repeats=7, warmup=0).spec_hash
    assert a.spec_hash != a.with_(stride=2).spec_hash
    assert a.spec_hash != a.with_(precision="int8").spec_hash
    assert len(a.spec_hash) == 16


def test_round_trip_through_dict():
    s = RunSpec(model="base", engine="ct2").with_(frames="fit", pad="none", stride=3, pool="avg")
    back = RunSpec.from_dict(s.to_dict())
    assert back == s and back.spec_hash == s.spec_hash


@pytest.mark.parametrize(
    "change, key",
    [
        (dict(frames=3001), "frames"),
        (dict(frames=3002), "frames"),
        (dict(frames=0), "frames"),
        (dict(frames="half"), "frames"),
        (dict(stride=0), "stride"),
        (dict(pad="zeros"), "pad"),
        (dict(pool="max"), "pool"),
        (dict(precision="int4"), "precision"),
        (dict(engine="onnx"), "engine"),
        (dict(precision="fp16"), "precision"),  # fp16 on CPU
        (dict(seed=-1), "seed: must be in \\[0, 4294967295\\]"),
        (dict(seed=2**32), "seed"),
        (dict(seed=1.5), "seed: expected an integer"),
        (dict(fit_step_s=float("inf")), "fit_step_s"),
        (dict(fit_step_s="1"), "fit_step_s"),
    ],
)
def test_invalid_values_name_the_key(change, key):
    with pytest.raises(SpecError, match=key):
        RunSpec().with_(**change).validate()


def test_unknown_key_rejected():
    with pytest.raises(SpecError, match="unknown spec key"):
        RunSpec.from_dict({"model": "tiny.en", "colour": "blue"})


def test_label_mentions_axes():
    s = RunSpec().with_(frames="fit", stride=2)
    assert "T=fit/silence" in s.label() and "k=2/stride" in s.label()
    assert AxisSettings().is_full


def test_seed_range_is_numpys():
    import numpy as np

    for seed in (0, MAX_SEED):
        RunSpec(seed=seed).validate()
        np.random.default_rng(seed)  # the bounds numpy itself accepts


def test_device_names():
    assert [is_cuda(d) for d in ("cpu", "cuda", "cuda:1", "cudax", "mps")] == [
        False,
        True,
        True,
        False,
        False,
    ]
    for ok in ("cpu", "cuda", "cuda:0", "cuda:12"):
        assert check_device(ok) == ok
    for bad in ("X", "cuda:", "cuda:-1", "cuda:x", "cuda:\u0661", "CPU", ""):
        with pytest.raises(SpecError, match=f"--device: expected cpu, cuda or cuda:N, got {bad!r}"):
            check_device(bad, "--device")


def test_workload_defaults_keep_the_old_hash_and_others_change_it():
    from voxmeter.spec import RunSpec

    base = RunSpec()
    assert "workload" not in base.hash_dict()  # stores from before the field still match
    changed = base.with_(frontend="features")
    assert changed.spec_hash != base.spec_hash and "fe=features" in changed.label()
    assert RunSpec.from_dict(changed.to_dict()) == changed


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"batch_size": 0}, "batch_size"),
        ({"longform": "parallel"}, "longform"),
        ({"vad_threshold": 0.0}, "vad_threshold"),
        ({"max_segment_s": 0}, "max_segment_s"),
        ({"condition_on_previous_text": "yes"}, "condition_on_previous_text"),
    ],
)
def test_bad_workload_fields_are_named(change, field):
    from voxmeter.errors import SpecError
    from voxmeter.spec import RunSpec

    with pytest.raises(SpecError, match=field):
        RunSpec().with_(**change).validate()


def test_no_compression_keeps_the_old_hash_and_each_method_changes_it():
    from voxmeter.spec import RunSpec

    base = RunSpec()
    old = {"quant": "none", "prune_heads": 0.0, "prune_ffn": 0.0, "lowrank_rank": 0, "lora": ""}
    assert base.hash_dict()["compression"] == old  # stores from before the fields still match
    changes = [
        {"quant": "int8-weight"},
        {"quant_embed": True},
        {"prune_heads": 0.25},
        {"prune_ffn": 0.5},
        {"decoder_layers": 2},
        {"lowrank_energy": 0.95},
        {"decoder_layers": 2, "recover": "distill"},
    ]
    hashes = {base.spec_hash}
    for c in changes:
        s = base.with_(**c).validate()
        hashes.add(s.spec_hash)
        assert RunSpec.from_dict(s.to_dict()) == s
        assert s.compression.tag() and s.compression.tag() in s.label()
    assert len(hashes) == len(changes) + 1


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"prune_heads": 1.0}, "^prune_heads: a pruning ratio must be in"),
        ({"prune_ffn": -0.1}, "^prune_ffn: a pruning ratio must be in"),
        ({"decoder_layers": -1}, "^decoder_layers: must be >= 0"),
        ({"lowrank_energy": 1.5}, "^lowrank_energy: "),
        ({"quant": "int3"}, "^quant: expected one of"),
        ({"keep": "enc.0"}, "^keep: .*quant is 'none'"),
        ({"recover": "lora"}, "^recover: lora retrains"),
        ({"decoder_layers": 2, "recover": "magic"}, "^recover: expected one of"),
        ({"engine": "ct2", "decoder_layers": 2}, "^compression: .*use --engine hf"),
        ({"quant": "int8-weight", "precision": "int8"}, "^quant: .*must be fp32"),
        ({"precision": "fp16"}, "^precision: fp16 needs --device cuda"),
    ],
)
def test_unsupported_compression_is_one_line_naming_the_field(change, message):
    from voxmeter.errors import SpecError
    from voxmeter.spec import RunSpec

    with pytest.raises(SpecError, match=message) as e:
        RunSpec().with_(**change).validate()
    assert "\n" not in str(e.value)


def test_decoder_depth_beyond_the_model_is_refused_before_work():
    from voxmeter.errors import SpecError
    from voxmeter.spec import RunSpec

    c = RunSpec().with_(decoder_layers=5).validate().compression
    c.check_model(5)
    with pytest.raises(SpecError, match="^decoder_layers: 5 is more than the model's 4"):
        c.check_model(4)


@pytest.mark.parametrize(
    "fields, needle",
    [
        # ranges
        (dict(chunk_ms=5), "chunk_ms: must be an integer in [20, 10000]"),
        (dict(chunk_ms=500, holdback_s=True), "holdback_s: must be in [0, 5] s, got True"),
        (dict(chunk_ms=500, trim_s=40.0), "trim_s: must be in [0.5, max_buffer_s) s"),
        # choices
        (dict(chunk_ms=500, final_pass="x"), "final_pass: expected one of"),
        (dict(chunk_ms=500, vad=1), "vad: expected true or false, got 1"),
        # combinations
        (dict(chunk_ms=500, step_pass="plain"), "step_pass: 'plain' needs vad"),
        (dict(chunk_ms=500, vad=True, pause_cut_ms=600), "pause_cut_ms: must be 0 (off)"),
        (dict(chunk_ms=500, relax_s=1.0), "relax_s: needs agreement >= 3"),
        (dict(chunk_ms=500, agreement=3, relax_s=2.0, max_wait_s=1.0), "shorter than max_wait"),
        (dict(chunk_ms=9000, trim_s=5.0), "chunk_ms: 9000 ms is longer than trim_s"),
    ],
)
def test_stream_settings_refuse_each_kind_of_bad_value(fields, needle):
    """StreamSettings.validate, split by concern (ranges, choices, combinations), still
    refuses each with a message naming the field; RunSpec.validate reaches them."""
    from voxmeter.spec import StreamSettings

    with pytest.raises(SpecError) as e:
        RunSpec(stream=StreamSettings(**fields)).validate()
    assert needle in str(e.value)
    good = StreamSettings(chunk_ms=500, agreement=3, relax_s=1.0, max_wait_s=2.0, vad=True)
    assert RunSpec(stream=good).validate().stream is good
