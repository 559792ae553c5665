"""A process that runs the ct2 engine never imports torch.

faster-whisper never does, and importing torch costs about 195 MiB of RSS: a ct2 process that
loaded it would lose every peak-memory comparison against faster-whisper by that much, for
nothing CTranslate2 uses. The check runs in a fresh interpreter, since the test process itself
has torch loaded by other tests.
"""

from __future__ import annotations

import json
import subprocess
import sys

# engine stages under every axis that takes another code path (silence states, xV, both
# front ends, a batch), a sequential long-form pass over a ~40 s recording, then one whole
# instrumented run (harness, environment record, matmul peak lookup)
SCRIPT = """
import contextlib, json, sys
from pathlib import Path

import numpy as np

from voxmeter.data.datasets import iter_audio, load_dataset
from voxmeter.engines import load_engine
from voxmeter.engines.longform import ArrayAudio, transcribe_sequential
from voxmeter.run.harness import run_spec
from voxmeter.spec import RunSpec

cache = Path(sys.argv[1])
clips = [a.samples for _, a in iter_audio(load_dataset("default")) if not isinstance(a, Exception)]
texts = []
for axes in (
    {},
    {"frames": "fit", "stride": 2, "pool": "avg"},
    {"frames": 1000, "pad": "silence", "stride": 3, "pool": "avg"},
    {"frontend": "features", "precision": "int8"},
):
    e = load_engine(RunSpec(engine="ct2").with_(**axes), cache)
    texts += [o.text for o in e.decode(e.encode(e.features(clips[:2])))]
audio = np.concatenate([clips[0], np.zeros(16000, np.float32)] * 4)[: 40 * 16000]
e = load_engine(RunSpec(engine="ct2"), cache)
long = transcribe_sequential(e, ArrayAudio(audio), lambda name, rec: contextlib.nullcontext())
texts.append(long.text)
spec = RunSpec(engine="ct2", max_clips=1, repeats=1, warmup=0)
(res,) = list(run_spec(spec, [0], cache_dir=cache))
texts.append(res.clips[0]["hyp"])
torch = sorted(m for m in sys.modules if m.split(".")[0] == "torch")
print(json.dumps({"texts": texts, "windows": len(long.windows), "torch": torch[:5]}))
"""


def test_a_ct2_process_never_imports_torch(cache_dir):
    run = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(cache_dir)],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,  # the assertion shows its stderr
    )
    assert run.returncode == 0, run.stderr[-3000:]
    out = json.loads(run.stdout.strip().splitlines()[-1])
    assert all(out["texts"]), out["texts"]  # every pass transcribed something
    assert out["windows"] >= 2  # the long-form pass ran more than one window
    assert out["torch"] == [], f"torch was imported: {out['torch']}"
