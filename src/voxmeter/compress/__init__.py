"""Compression: what turns a loaded model into a smaller one, between the weights and the engine.

Two kinds of method, with different lives:
- Structural methods change the weights: keep k decoder layers (depth.py), remove attention
  heads and FFN neurons by measured importance (prune.py), factorise Linears by truncated SVD
  (lowrank.py), then optionally retrain (recover.py: distillation from the uncompressed
  teacher, or LoRA merged back). They run once per (base weights, settings, calibration data,
  compression code) and the result is cached as a model directory (artifact.py), which loads
  like any transformers Whisper directory. The seconds spent building it are a one-off figure
  of their own (`compress_s`), never inside load time or RTFx.
- Quantization (engines/quant.py) runs at every load, like the precision axis: the spec's
  scheme, the groups it keeps in fp32 (hybrid precision), and the embedding/projection option.
  A directory built by `voxmeter compress` with quant=... carries these settings in its
  `voxmeter.json` (its weights stay fp32), so `--model DIR` runs what was built.

Order of the structural methods: depth, pruning, low-rank, recovery (each sees the previous
one's model; recovery repairs what all of them removed). Training speech (pruning importance,
recovery) is the spec's `train_data` (traindata.py: `real-train` when built, else the bundled
synthetic `calib`), a seeded subset of `train_clips` clips, checked to share no audio and no
speaker with any test set before any work; clips without reference are labelled by the
`labeller` (labels.py). Which set, how many clips, its digest and the labeller are part of the
artifact key, of the directory's voxmeter.json and of a result's identity.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from voxmeter.errors import SpecError

log = logging.getLogger("voxmeter")
COMPRESS_VERSION = 1  # bump when a structural method's output changes for the same inputs
CALIB_SET = "calib"


def _quiet_imports() -> None:
    """transformers (under torch-pruning and peft) must not pull torchao in with its warnings,
    nor print its loading bars."""
    from voxmeter.engines.hf_whisper import quiet_transformers
    from voxmeter.engines.quant import silence_torchao_noise

    silence_torchao_noise()
    quiet_transformers()


def structural_settings(comp: Any) -> dict[str, Any]:
    """The fields that decide a structural artifact (quantization is applied at load)."""
    d = asdict(comp)
    for k in ("quant", "quant_embed", "keep"):
        d.pop(k)
    if d["recover"] == "none":
        d.pop("recover_steps")
    if not comp.uses_train_data:  # nothing trains: the training fields decide nothing
        for k in ("train_data", "labeller", "train_clips"):
            d.pop(k)
    return d


def artifact_key(comp: Any, base_digest: str, calib_digest: Any, code: str) -> str:
    """`calib_digest`: the training data's key (TrainData.key: set, digest, labeller,
    train_clips), or "" for a spec that trains on nothing."""
    blob = json.dumps(
        [structural_settings(comp), base_digest, calib_digest, code, COMPRESS_VERSION],
        sort_keys=True,
    )
    return hashlib.sha256(blob.encode()).hexdigest()[:20]


def train_identity(comp: Any, files: Any) -> dict[str, Any] | None:
    """What decides the training data of `comp` (TrainData.key), None when nothing trains;
    resolving it checks the set against every test set (DataError on overlap)."""
    if not comp.changes_weights or not comp.uses_train_data:
        return None
    from voxmeter.compress.traindata import from_settings

    return from_settings(comp, files).key(files)


def compressed_source(
    spec: Any, source: Any, cache: Path, progress: Any = None
) -> tuple[Any, float]:
    """The model directory of `spec.compression`'s structural methods applied to `source` (an
    hf-ready ModelSource), built and cached if need be; and the seconds building took (0.0
    when it was cached). A spec without structural methods gets `source` back unchanged.
    The caller has checked the settings against the model (`check_model`) before any work."""
    comp = spec.compression
    if not comp.changes_weights:
        return source, 0.0
    from voxmeter.assets.bundled import resolve_model
    from voxmeter.identity import FileDigests, code_fingerprint, weights_digest

    files = FileDigests(cache)
    train = _train_data(comp, files)
    base = weights_digest(source, files)
    key = artifact_key(comp, base, train.key(files) if train else "", code_fingerprint())
    files.save()
    out = cache / "compressed" / key
    took = 0.0
    if not (out / "model.safetensors").is_file():
        t0 = time.perf_counter()
        build(comp, source, out, train, progress=progress, base_digest=base, cache=cache)
        took = time.perf_counter() - t0
    built = resolve_model(str(out), cache)
    return replace(built, name=f"{source.name}+{comp.tag()}"), took


def _train_data(comp: Any, files: Any) -> Any:
    """The resolved, checked training data of `comp`; None when no method here trains."""
    if not comp.uses_train_data:
        return None
    from voxmeter.compress.traindata import from_settings

    return from_settings(comp, files)


def quantization_settings(comp: Any) -> dict[str, Any]:
    """The load-time fields of `comp` that are not at their defaults (quant, quant_embed,
    keep): what a compressed directory carries for the engine to apply at load."""
    out: dict[str, Any] = {}
    if comp.quant != "none":
        out["quant"] = comp.quant
    if comp.quant_embed:
        out["quant_embed"] = True
    if comp.keep:
        out["keep"] = comp.keep
    return out


def build(
    comp: Any,
    source: Any,
    out: Path,
    calib: Any,
    progress: Any = None,
    base_digest: str | None = None,
    carry_quant: bool = False,
    cache: Path | None = None,
) -> Path:
    """Apply the structural methods of `comp` to the fp32 model of `source`; save to `out`.

    `calib`: the training data, a traindata.TrainData or a Dataset (used whole, labelled by
    `comp.labeller`); None resolves `comp`'s own. Either is checked against every test set
    before any work. `cache`: where pseudo-labels are cached and the base labeller is
    resolved (None: labels are not cached).
    With `carry_quant`, the directory also carries `comp`'s quantization (its weights stay
    fp32; the hf engine quantizes them at load, so `--model out` runs what was built); the
    cache of `compressed_source` never does, since its spec applies quantization itself.
    `base_digest` is `source`'s weights digest when the caller has it (hashing the base
    weights again costs a read of every file); recovery's checkpoints and the directory's
    `voxmeter.json` are stamped with it."""
    _quiet_imports()
    from transformers import WhisperForConditionalGeneration

    import voxmeter
    from voxmeter.compress import artifact
    from voxmeter.engines.common import load_suppress

    base_digest = base_digest or _base_digest(source)
    train = _as_train_data(comp, calib) if comp.uses_train_data else None
    if train is not None:
        from voxmeter.compress.traindata import check_disjoint
        from voxmeter.identity import FileDigests

        files = FileDigests(cache)  # the test sets' file digests, cached where there is a cache
        check_disjoint(train.dataset, files)  # before any work (resolve checked the whole set)
        files.save()
    model = WhisperForConditionalGeneration.from_pretrained(source.hf_dir).eval()
    n_before = sum(p.numel() for p in model.parameters())
    report: dict[str, Any] = {}
    if comp.decoder_layers:
        from voxmeter.compress.depth import keep_decoder_layers

        report["decoder_layers_kept"] = keep_decoder_layers(model, comp.decoder_layers)
    used: Calibration | None = None
    if comp.prune_heads or comp.prune_ffn:
        from voxmeter.compress.prune import prune

        used = training_pairs(source, train, base_digest, cache, progress)
        report["prune"] = prune(model, comp.prune_heads, comp.prune_ffn, used.pairs)
    if comp.lowrank_energy:
        from voxmeter.compress.lowrank import factorize

        report["lowrank"] = factorize(model, comp.lowrank_energy)
    if comp.recover != "none":
        from voxmeter.compress.recover import recover

        used = used or training_pairs(source, train, base_digest, cache, progress)
        report["recover"] = recover(
            model,
            source,
            used.pairs,
            comp.recover,
            comp.recover_steps,
            out,
            progress=progress,
            base_digest=base_digest,
        )
    report["params_before"] = n_before
    report["params_after"] = sum(p.numel() for p in model.parameters())
    carried = quantization_settings(comp) if carry_quant else {}
    if carried:
        _check_quantization(model, comp)
    meta = {
        "base": {"name": source.name, "dir": str(source.hf_dir)},
        "base_digest": base_digest,
        "compression": structural_settings(comp),
        "quantization": carried,
        "calibration": used.record() if used else {"data": "", "n_clips": 0},
        "report": report,
        "voxmeter": voxmeter.__version__,
    }
    return artifact.save_model(
        model, out, meta, tokenizer=source.tokenizer, suppress=load_suppress(source, _ids(source))
    )


def _check_quantization(model: Any, comp: Any) -> None:
    """The groups `keep` names exist in the built model, and quant_embed does not clash with
    keeping 'proj': refused before the directory is written, not at its first load."""
    from voxmeter.engines.quant import check_groups

    kept = check_groups("keep", comp.keep, model)
    if comp.quant_embed and "proj" in kept:
        raise SpecError(
            "keep: 'proj' keeps the output projection fp32, but quant_embed quantizes it"
        )


def _ids(source: Any) -> dict[str, int]:
    from voxmeter.assets.convert import special_ids

    return special_ids(source.dims)


def _base_digest(source: Any) -> str:
    from voxmeter.identity import FileDigests, weights_digest

    return weights_digest(source, FileDigests(None))


def _as_train_data(comp: Any, calib: Any) -> Any:
    from voxmeter.compress.traindata import TrainData, from_settings

    if calib is None:
        return from_settings(comp)
    if isinstance(calib, TrainData):
        return calib
    n = len(calib.clips)
    return TrainData(calib.name, calib, comp.labeller, comp.train_clips, n)


@dataclass
class Calibration:
    """The calibration pairs a build trained or ranked on, and the clips it could not use."""

    pairs: list[tuple[Any, list[int]]]
    skipped: list[dict[str, str]]  # id, reason: as a data set's bad clips are recorded
    about: dict[str, Any] = field(default_factory=lambda: {"data": CALIB_SET})

    def record(self) -> dict[str, Any]:
        """What `voxmeter.json` keeps: the data (name, digest, labeller, clips selected and
        pseudo-labelled), the clips used (not the clips listed) and the skipped."""
        return {**self.about, "n_clips": len(self.pairs), "skipped": self.skipped}


def training_pairs(
    source: Any, train: Any, base_digest: str, cache: Path | None, progress: Any = None
) -> Calibration:
    """`calibration_pairs` of the training data, its clips without reference labelled by
    the labeller first (labels.py); skipped clips of both steps recorded."""
    from voxmeter.compress.labels import label
    from voxmeter.identity import FileDigests

    engine_of, digest = _labeller(train.labeller, source, base_digest, cache)
    got = label(train.dataset, engine_of, digest, cache, progress)
    out = calibration_pairs(source, got.dataset)
    out.skipped = got.skipped + out.skipped
    out.about = {
        **train.key(FileDigests(cache)),
        "n_listed": train.n_listed,
        "n_selected": len(train.dataset.clips),
        "n_pseudo_labelled": got.n_pseudo,
    }
    return out


def _labeller(name: str, source: Any, base_digest: str, cache: Path | None) -> tuple[Any, str]:
    """(a function loading the labeller's hf engine, its weights digest): "teacher" is the
    uncompressed source, "base" the bundled multilingual base model (English transcription)."""
    if name == "teacher":
        return (lambda: _engine(source, cache)), base_digest
    from voxmeter.assets.bundled import default_cache_dir, resolve_model
    from voxmeter.identity import FileDigests, weights_digest

    root = default_cache_dir(cache)
    other = resolve_model(name, root)
    return (lambda: _engine(other, root)), weights_digest(other, FileDigests(cache))


def _engine(source: Any, cache: Path | None) -> Any:
    """An fp32 hf engine of `source` on the caller's threads (greedy, 3000 frames)."""
    import torch

    from voxmeter.assets.bundled import default_cache_dir
    from voxmeter.engines import load_engine
    from voxmeter.spec import RunSpec

    spec = RunSpec(model=source.name, engine="hf", threads=torch.get_num_threads())
    return load_engine(spec, default_cache_dir(cache), source)


def calibration_pairs(source: Any, calib: Any, n_frames: int = 3000) -> Calibration:
    """(features (1, n_mels, n_frames), prompt + reference tokens + end-of-text) per
    calibration clip, by the openai-whisper front end. A clip that fails to load or is longer
    than one window is skipped, logged and recorded with why; none usable is a SpecError."""
    import torch

    from voxmeter.assets.convert import special_ids
    from voxmeter.audio.features import clip_features
    from voxmeter.audio.io import LoadedAudio
    from voxmeter.data.datasets import iter_audio
    from voxmeter.engines.common import Tokenizer, prompt_ids

    tok = Tokenizer(source.tokenizer)
    if not tok.available:
        raise SpecError(f"compression: model {source.name!r} has no tokenizer for calibration")
    eot = special_ids(source.dims)["eot"]
    prompt = prompt_ids(source.dims)
    out = Calibration([], [])
    for clip, audio in iter_audio(calib):
        if not isinstance(audio, LoadedAudio):
            why = str(audio) if isinstance(audio, Exception) else "longer than one 30 s window"
            log.warning("calibration: skipped clip %s: %s", clip.id, why)
            out.skipped.append({"id": clip.id, "reason": why})
            continue
        feats = torch.as_tensor(clip_features(audio.samples, n_frames, source.dims.n_mels))
        out.pairs.append((feats, [*prompt, *tok.encode(clip.text), eot]))
    if not out.pairs:
        raise SpecError(
            f"calibration: data {getattr(calib, 'name', CALIB_SET)!r} has no usable clip "
            f"({len(out.skipped)} skipped)"
        )
    if out.skipped:
        log.warning("calibration: %d clip(s) skipped as bad input", len(out.skipped))
    return out


def quantize_loaded(model: Any, comp: Any, cpu_flags: Any) -> tuple[Any, str]:
    """Apply the spec's quantization to a loaded fp32 model; (model, method in words).
    The hf engine applies it at load: engines/quant.py's `apply_quantization`."""
    from voxmeter.engines.quant import apply_quantization

    return apply_quantization(model, comp, cpu_flags)
