import pytest

from voxmeter.errors import SpecError
from voxmeter.spec import AxisSettings, RunSpec


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
