"""Write src/voxmeter/audio/mel_filters.npz: the Slaney mel filter banks (80 and 128 bands)
that the front end uses, computed by transformers' `mel_filter_bank`.

Shipping them (as openai-whisper ships its own mel_filters.npz) spares every process that
computes features the import of transformers (about 1.3 s here), which a ct2-only run
otherwise pays for one small matrix. tests/test_mel_filters.py checks the shipped arrays equal
what transformers computes now. Run again if the front end's STFT settings change.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from voxmeter.audio.features import BANDS, compute_mel_filters

OUT = Path(__file__).resolve().parents[1] / "src" / "voxmeter" / "audio" / "mel_filters.npz"


def main() -> None:
    np.savez_compressed(OUT, **{f"mel_{n}": compute_mel_filters(n) for n in BANDS})
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
