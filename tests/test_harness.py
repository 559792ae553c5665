"""The harness end to end on two real clips: what a shortened input leaves unheard is counted."""

import pytest

from voxmeter.run.harness import run_spec
from voxmeter.spec import RunSpec


@pytest.mark.parametrize("frames", [200, "fit"])
def test_audio_past_the_input_is_counted_and_warned(frames, cache_dir):
    spec = RunSpec(max_clips=2, repeats=1, warmup=0).with_(frames=frames)
    (res,) = list(run_spec(spec, [0], cache_dir=cache_dir, instruments=False))
    durations = [c["duration_s"] for c in res.clips]
    if frames == "fit":  # every clip's input covers it, rounded up to the 1 s step
        assert all(d <= c["n_frames"] / 100 < d + 1.0 for d, c in zip(durations, res.clips))
        assert res.metrics["n_clips_cut"] == 0 and res.metrics["audio_cut_s"] == 0
        assert not any("never reached the encoder" in w for w in res.warnings)
    else:
        assert all(c["n_frames"] == 200 for c in res.clips)
        cut = [d for d in durations if d > 2.01]
        assert cut, "the first bundled clips are longer than 2 s"
        assert res.metrics["n_clips_cut"] == len(cut)
        assert res.metrics["audio_cut_s"] == pytest.approx(sum(d - 2.0 for d in cut))
        assert any("never reached the encoder" in w for w in res.warnings)
