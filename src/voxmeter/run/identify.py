"""The identity of a run as resolved here and now: the model's weights (joined with the
training data of a compression that trains), the data set's digest, the code and libraries.

It lives in run/, not beside Identity in voxmeter/identity.py, because a trained compression's
identity asks compress/ which data it trains on: identity.py sits below compress/ (result and
store read it), and data moves one way.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from voxmeter.identity import (
    FileDigests,
    Identity,
    code_fingerprint,
    data_digest,
    library_versions,
    weights_digest,
)

__all__ = ["identity_of"]


def _trained_weights(spec: Any, digest: str, files: FileDigests) -> str:
    """The weights digest of a spec whose compression trains (pruning importance, recovery):
    the base weights' digest joined with the training data's key (set, digest, labeller,
    train_clips; compress.train_identity), so models trained on other data never share rows."""
    from voxmeter.compress import train_identity

    key = train_identity(spec.compression, files)
    if key is None:
        return digest
    return hashlib.sha256(json.dumps([digest, key], sort_keys=True).encode()).hexdigest()[:16]


def identity_of(
    spec: Any,
    cache_dir: Path,
    source: Any = None,
    dataset: Any = None,
    files: FileDigests | None = None,
) -> Identity:
    """The identity a run of `spec` would have here and now (resolves model and data)."""
    from voxmeter.assets.bundled import resolve_model
    from voxmeter.data.datasets import load_dataset

    files = files or FileDigests(cache_dir)
    source = source or resolve_model(spec.model, cache_dir)
    dataset = dataset or load_dataset(spec.data)
    libraries = library_versions()
    ident = Identity(
        code_fingerprint(libraries=libraries),
        _trained_weights(spec, weights_digest(source, files), files),
        data_digest(dataset, files),
        libraries=libraries,
        weights=source.provenance,
    )
    files.save()
    return ident
