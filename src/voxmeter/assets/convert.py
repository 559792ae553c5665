"""CTranslate2 Whisper -> transformers `WhisperForConditionalGeneration`, cached as safetensors.

The mapping is one-to-one: CTranslate2 fuses q/k/v (self-attention) and k/v (cross-attention)
into one matrix each, which we split; the output projection is tied to the token embedding.
CTranslate2 gives the key projection a zero bias where transformers has none; a key bias adds
the same q.b to every score of a query, which softmax ignores, so dropping it is exact.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import tempfile
from pathlib import Path

import numpy as np

from voxmeter.assets.ct2 import Ct2Model, dequantize, read_ct2_model
from voxmeter.assets.dims import ModelDims
from voxmeter.errors import ModelError

CONVERSION_VERSION = 1  # bump when the mapping changes, so caches are rebuilt


def _count_layers(m: Ct2Model, side: str) -> int:
    pattern = re.compile(rf"^{side}/layer_(\d+)/")
    return len({hit.group(1) for k in m.variables if (hit := pattern.match(k))})


def dims_from_ct2(m: Ct2Model) -> ModelDims:
    conv1 = m.shaped("encoder/conv1/weight", 3)  # (state, mels, kernel)
    emb = m.shaped("decoder/embeddings/weight", 2)  # (vocab, state)
    dims = ModelDims(
        n_mels=int(conv1.shape[1]),
        n_audio_ctx=int(m.shaped("encoder/position_encodings/encodings", 2).shape[0]),
        n_audio_state=int(conv1.shape[0]),
        n_audio_head=m.scalar("encoder/num_heads"),
        n_audio_layer=_count_layers(m, "encoder"),
        n_vocab=int(emb.shape[0]),
        n_text_ctx=int(m.shaped("decoder/position_encodings/encodings", 2).shape[0]),
        n_text_state=int(emb.shape[1]),
        n_text_head=m.scalar("decoder/num_heads"),
        n_text_layer=_count_layers(m, "decoder"),
    )
    bad = {k: v for k, v in dims.__dict__.items() if v < 1}
    if bad:
        raise ModelError(
            f"{m.path}: corrupt Whisper model ({', '.join(f'{k}={v}' for k, v in bad.items())})"
        )
    return dims


def special_ids(dims: ModelDims) -> dict[str, int]:
    """Whisper's special tokens; multilingual vocabularies shift them by one."""
    shift = 0 if dims.english_only else 1
    return {
        "eot": 50256 + shift,
        "sot": 50257 + shift,
        "no_timestamps": 50362 + shift,
        "timestamp_begin": 50363 + shift,  # <|0.00|>; one token per 0.02 s up to <|30.00|>
        "sot_prev": 50360 + shift,  # opens the previous-text prompt
        "transcribe": 50358 + shift,
        "en": 50259,  # language tokens exist only in multilingual vocabularies
    }


def whisper_config(dims: ModelDims):  # -> transformers.WhisperConfig
    from transformers import WhisperConfig

    ids = special_ids(dims)
    return WhisperConfig(
        vocab_size=dims.n_vocab,
        num_mel_bins=dims.n_mels,
        d_model=dims.n_audio_state,
        encoder_layers=dims.n_audio_layer,
        encoder_attention_heads=dims.n_audio_head,
        decoder_layers=dims.n_text_layer,
        decoder_attention_heads=dims.n_text_head,
        encoder_ffn_dim=dims.d_ff_audio,
        decoder_ffn_dim=dims.d_ff_text,
        max_source_positions=dims.n_audio_ctx,
        max_target_positions=dims.n_text_ctx,
        decoder_start_token_id=ids["sot"],
        eos_token_id=ids["eot"],
        bos_token_id=ids["eot"],
        pad_token_id=ids["eot"],
        tie_word_embeddings=True,
    )


def _ln(sd: dict, hf: str, m: Ct2Model, ct: str) -> None:
    sd[f"{hf}.weight"] = dequantize(m, f"{ct}/gamma")
    sd[f"{hf}.bias"] = dequantize(m, f"{ct}/beta")


def _lin(sd: dict, hf: str, m: Ct2Model, ct: str, bias: bool = True) -> None:
    sd[f"{hf}.weight"] = dequantize(m, f"{ct}/weight")
    if bias:
        sd[f"{hf}.bias"] = dequantize(m, f"{ct}/bias")


def _split(sd: dict, names: list[str], m: Ct2Model, ct: str) -> None:
    """Split a fused projection into len(names) equal parts; a None name drops its bias."""
    w = dequantize(m, f"{ct}/weight")
    b = dequantize(m, f"{ct}/bias")
    for name, wpart, bpart in zip(names, np.split(w, len(names)), np.split(b, len(names))):
        sd[f"{name}.weight"] = wpart
        if not name.endswith("k_proj"):
            sd[f"{name}.bias"] = bpart


def _self_attention(sd: dict, hf: str, m: Ct2Model, ct: str) -> None:
    """A layer's self-attention (encoder and decoder alike): fused QKV split into q/k/v."""
    _ln(sd, f"{hf}.self_attn_layer_norm", m, f"{ct}/self_attention/layer_norm")
    qkv = [f"{hf}.self_attn.{p}_proj" for p in "qkv"]
    _split(sd, qkv, m, f"{ct}/self_attention/linear_0")
    _lin(sd, f"{hf}.self_attn.out_proj", m, f"{ct}/self_attention/linear_1")


def _ffn(sd: dict, hf: str, m: Ct2Model, ct: str) -> None:
    _ln(sd, f"{hf}.final_layer_norm", m, f"{ct}/ffn/layer_norm")
    _lin(sd, f"{hf}.fc1", m, f"{ct}/ffn/linear_0")
    _lin(sd, f"{hf}.fc2", m, f"{ct}/ffn/linear_1")


def ct2_to_hf_state_dict(m: Ct2Model) -> tuple[ModelDims, dict[str, np.ndarray]]:
    dims = dims_from_ct2(m)
    sd: dict[str, np.ndarray] = {}
    e, d = "model.encoder", "model.decoder"
    for i in (1, 2):
        _lin(sd, f"{e}.conv{i}", m, f"encoder/conv{i}")
    sd[f"{e}.embed_positions.weight"] = dequantize(m, "encoder/position_encodings/encodings")
    for i in range(dims.n_audio_layer):
        hf, ct = f"{e}.layers.{i}", f"encoder/layer_{i}"
        _self_attention(sd, hf, m, ct)
        _ffn(sd, hf, m, ct)
    _ln(sd, f"{e}.layer_norm", m, "encoder/layer_norm")

    sd[f"{d}.embed_tokens.weight"] = dequantize(m, "decoder/embeddings/weight")
    sd[f"{d}.embed_positions.weight"] = dequantize(m, "decoder/position_encodings/encodings")
    for i in range(dims.n_text_layer):
        hf, ct = f"{d}.layers.{i}", f"decoder/layer_{i}"
        _self_attention(sd, hf, m, ct)
        _ln(sd, f"{hf}.encoder_attn_layer_norm", m, f"{ct}/attention/layer_norm")
        _lin(sd, f"{hf}.encoder_attn.q_proj", m, f"{ct}/attention/linear_0")
        kv = [f"{hf}.encoder_attn.{p}_proj" for p in "kv"]
        _split(sd, kv, m, f"{ct}/attention/linear_1")
        _lin(sd, f"{hf}.encoder_attn.out_proj", m, f"{ct}/attention/linear_2")
        _ffn(sd, hf, m, ct)
    _ln(sd, f"{d}.layer_norm", m, "decoder/layer_norm")
    sd = {k: np.ascontiguousarray(v, dtype=np.float32) for k, v in sd.items()}
    return dims, sd


def file_fingerprint(path: Path) -> str:
    """Content hash of a model file (sha256 of its bytes, read in 8 MiB blocks)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(8 << 20):
            h.update(block)
    return h.hexdigest()[:20]


def convert_cached(ct2_dir: Path, cache_dir: Path) -> Path:
    """Convert once; return the directory holding config.json + model.safetensors."""
    from safetensors.numpy import save_file

    model_bin = ct2_dir / "model.bin"
    if not model_bin.is_file():
        raise ModelError(f"{model_bin}: model file not found")
    key = f"{file_fingerprint(model_bin)}-v{CONVERSION_VERSION}"
    out = cache_dir / "hf" / key
    if (out / "model.safetensors").is_file() and (out / "config.json").is_file():
        return out
    m = read_ct2_model(model_bin)
    if m.spec_name != "WhisperSpec":
        raise ModelError(f"{model_bin}: not a Whisper model (spec {m.spec_name!r})")
    try:
        dims, sd = ct2_to_hf_state_dict(m)
    except (KeyError, ValueError) as e:
        raise ModelError(f"{model_bin}: unexpected Whisper layout ({e})") from None
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=".tmp-"))
    save_file(sd, str(tmp / "model.safetensors"))
    whisper_config(dims).to_json_file(str(tmp / "config.json"))
    (tmp / "source.json").write_text(json.dumps({"ct2": str(model_bin), "key": key}))
    try:
        os.replace(tmp, out)  # atomic: a concurrent or killed conversion never leaves half a cache
    except OSError:
        if not (out / "model.safetensors").is_file():
            raise
    return out
