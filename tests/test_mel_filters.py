"""The shipped mel filter banks are transformers' own, and reading them imports no transformers."""

import subprocess
import sys

import numpy as np
import pytest

from voxmeter.audio import features


@pytest.mark.parametrize("n_mels", features.BANDS)
def test_shipped_filters_equal_what_transformers_computes(n_mels):
    shipped = features.mel_filters(n_mels)
    assert shipped.shape == (n_mels, 1 + features.N_FFT // 2)
    assert shipped.dtype == np.float32 and not shipped.flags.writeable
    np.testing.assert_array_equal(shipped, features.compute_mel_filters(n_mels))


def test_other_band_counts_are_computed():
    assert features.mel_filters(64).shape == (64, 1 + features.N_FFT // 2)


def test_reading_the_shipped_filters_imports_no_transformers():
    code = (
        "import sys; from voxmeter.audio.features import mel_filters; mel_filters(80); "
        "print('transformers' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
