"""The `hf` engine: transformers' WhisperForConditionalGeneration, run by our own loop.

Weights load through transformers (so a converted checkpoint is validated by it), but the
forward pass is ours, written over the same modules, for three reasons transformers' `generate`
cannot serve: the encoder must run on fewer than 3000 frames (xT: transformers refuses any other
length), encoder states must be padded or subsampled before cross-attention (xV), and the
decoder loop must be lean (a preallocated self-attention cache and cross-attention K/V computed
once), since per-token Python overhead is what separates a transformers decoder from
CTranslate2's. Linear layers are called as modules, so dynamic int8 quantization applies.
Attention is SDPA while timing and explicit matmuls while counting FLOPs, since
FlopCounterMode cannot see CPU SDPA kernels.

A batch is decoded as one tensor: every step runs all B rows (finished ones ride along until
the last item ends), and prompts of different lengths are left-padded and masked, each item
keeping its own positions. Greedy argmax, blank and token suppression and, with timestamps,
openai-whisper's timestamp rules (engines/rules.py) are applied to the whole batch at once.
Batched results equal single-clip ones in fp32 on the bundled clips; the last bits of a
logit can differ (a matmul over B rows may use another kernel than over one), so equality is
a measured fact, not a guarantee. With dynamic int8 the rows of a batch share one activation
scale, which can change an item's tokens.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from voxmeter.assets.bundled import ModelSource
from voxmeter.assets.convert import convert_cached, special_ids, whisper_config
from voxmeter.audio.features import batch_frames
from voxmeter.engines.base import ASR_STAGES, DecodeOutput, Encoded, joined
from voxmeter.engines.common import (
    Tokenizer,
    batch_prompts,
    decoder_positions,
    features_for,
    load_suppress,
    max_initial_index,
    prompt_ids,
    silence_features,
    steps_per_item,
    subsample,
    token_limit,
)
from voxmeter.engines.hf_decode import DecodeState, padded_causal_mask
from voxmeter.engines.hf_weights import carried_quantization, quiet_transformers
from voxmeter.engines.rules import TimestampRules
from voxmeter.errors import ModelError, SpecError
from voxmeter.measure.flops import ModelShape
from voxmeter.spec import FULL_FRAMES, CompressionSettings, RunSpec, check_quant_device, is_cuda

_TORCH_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


HEAD_DIM = 64  # Whisper's head width at every size; a pruned layer has fewer heads, not narrower


def _heads(x: torch.Tensor, dh: int = HEAD_DIM) -> torch.Tensor:
    """(B, T, heads * dh) -> (B, heads, T, dh); the head count follows the layer's width."""
    b, t, d = x.shape
    return x.view(b, t, d // dh, dh).transpose(1, 2)


def _merge(x: torch.Tensor) -> torch.Tensor:
    b, h, t, dh = x.shape
    return x.transpose(1, 2).reshape(b, t, h * dh)


def _load(hf_dir: Path) -> torch.nn.Module:
    """Whisper weights from a transformers directory, or a compressed model directory (whose
    shapes transformers' config cannot express; engines/hf_weights.py rebuilds them)."""
    from transformers import WhisperForConditionalGeneration

    from voxmeter.engines.hf_weights import is_artifact, load_model

    if is_artifact(hf_dir):
        return load_model(hf_dir)
    try:
        return WhisperForConditionalGeneration.from_pretrained(hf_dir)
    except (OSError, ValueError) as e:
        raise ModelError(f"{hf_dir}: cannot load Whisper weights ({e})") from None


def _load_time_compression(spec: RunSpec, carried: dict) -> CompressionSettings:
    """The quantization the engine applies at load: the spec's; precision int8 as CTranslate2
    runs it (every Linear and the tied embedding/output projection int8); or what a compressed
    directory carries, which the spec may not quantize again."""
    comp = spec.compression
    if carried:
        asked = comp.quant != "none" or comp.quant_embed or comp.keep
        if asked or spec.axes.precision != "fp32":
            what = ", ".join(f"{k}={v}" for k, v in carried.items())
            raise SpecError(
                f"model {spec.model}: the directory carries its quantization ({what}); "
                "drop --compress quant/keep/quant_embed and --precision to run it"
            )
        comp = replace(comp, **carried)
        check_quant_device(comp, spec.device)
    elif spec.axes.precision == "int8" and comp.quant == "none":
        comp = replace(comp, quant="int8-dynamic", quant_embed=True)
    return comp


class HFWhisperEngine:
    name = "hf"
    stages = ASR_STAGES

    def __init__(self, spec: RunSpec, source: ModelSource, cache_dir: Path) -> None:
        quiet_transformers()
        from transformers import WhisperForConditionalGeneration

        self.spec = spec
        self.source = source
        self.dims = source.dims
        self.count_mode = False  # explicit attention matmuls, so FlopCounterMode sees them
        torch.set_num_threads(spec.threads)
        precision = spec.axes.precision
        if is_cuda(spec.device) and not torch.cuda.is_available():
            raise SpecError("device: cuda requested but torch sees no CUDA device")
        if precision == "int8" and spec.device != "cpu":
            raise SpecError("precision: int8 in the hf engine is dynamic quantization, CPU only")
        self.device = torch.device(spec.device)

        carried: dict = {}
        if source.kind == "cost-only":
            torch.manual_seed(spec.seed)
            model = WhisperForConditionalGeneration(whisper_config(self.dims))
        else:
            hf_dir = source.hf_dir or convert_cached(source.ct2_dir, cache_dir)
            carried = carried_quantization(hf_dir)
            model = _load(hf_dir)
        model.eval()
        self._n_params = sum(p.numel() for p in model.parameters())
        self.shape = ModelShape.of_model(model)  # the layers it has (compression may shrink them)
        self.compression = _load_time_compression(spec, carried)
        self.model = self._quantize(model, carried)
        self.dtype = torch.float32 if precision == "int8" else _TORCH_DTYPES[precision]
        self.enc = self.model.model.encoder
        self.dec = self.model.model.decoder
        self.ids = special_ids(self.dims)
        self.prompt = prompt_ids(self.dims)
        self.suppress, self.suppress_begin = load_suppress(source, self.ids)
        self.tokenizer = Tokenizer(source.tokenizer)
        self.max_new_tokens = self.dims.n_text_ctx // 2
        self._silence: torch.Tensor | None = None
        self._silence_kv: list[tuple[torch.Tensor, torch.Tensor]] | None = None
        self._suppress_mask = self._mask(self.suppress)
        self._suppress_begin_mask = self._mask(self.suppress_begin)
        if spec.axes.pad == "silence" and spec.axes.frames != FULL_FRAMES:
            self.silence_cross_kv()  # part of loading: computed once, never inside a clip

    def _quantize(self, model: nn.Module, carried: dict) -> nn.Module:
        """`model` at the precision the spec (or its directory) asks; sets precision_method."""
        precision, comp = self.spec.axes.precision, self.compression
        self.precision_method = f"torch {precision} weights and activations"
        if comp.quant == "none" and not comp.quant_embed:
            return model.to(device=self.device, dtype=_TORCH_DTYPES[precision])
        from voxmeter.engines.quant import apply_quantization
        from voxmeter.measure.envinfo import cpu_info

        model, self.precision_method = apply_quantization(model, comp, cpu_info().flags)
        if carried:
            what = ", ".join(f"{k}={v}" for k, v in carried.items())
            self.precision_method += f" (carried by the model directory: {what})"
        return model

    def _mask(self, ids: list[int]) -> torch.Tensor:
        m = torch.zeros(self.dims.n_vocab, dtype=torch.bool, device=self.device)
        m[[i for i in ids if 0 <= i < self.dims.n_vocab]] = True
        return m

    # -- accounting -----------------------------------------------------------------------
    def param_count(self) -> int:
        """Architectural parameters (the tied output projection counted once)."""
        return self._n_params

    def weight_bytes(self) -> int:
        """Bytes of weights as loaded: parameters, buffers, packed int8 Linear weights and any
        compression scheme's own storage (one count for every scheme: engines/quant.py)."""
        from voxmeter.engines.quant import weight_bytes

        return weight_bytes(self.model)

    # -- stages ---------------------------------------------------------------------------
    def n_frames(self, n_samples: int) -> int:
        """The frames a clip of n_samples runs at alone: the spec's, or its own fit."""
        a = self.spec.axes
        return batch_frames([n_samples], a.frames, a.fit_step_s)

    def features(self, audios: Sequence[np.ndarray], n_frames: int | None = None) -> torch.Tensor:
        """(B, n_mels, T) features of B clips by the spec's front end (see Engine)."""
        feats = torch.from_numpy(features_for(self.spec, self.dims, audios, n_frames))
        return feats.to(device=self.device, dtype=self.dtype)

    def _attention(
        self,
        q: torch.Tensor,
        k: torch.Tensor,
        v: torch.Tensor,
        causal: bool,
        mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Attention; `mask` (B, 1, t, L), True where allowed, replaces `causal` when given."""
        if not self.count_mode:
            if mask is not None:
                return F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
            return F.scaled_dot_product_attention(q, k, v, is_causal=causal)
        scores = (q @ k.transpose(-1, -2)) / math.sqrt(q.shape[-1])
        if mask is not None:
            scores = scores.masked_fill(~mask, float("-inf"))
        elif causal:
            t, s = scores.shape[-2:]
            upper = torch.ones(t, s, dtype=torch.bool, device=q.device).triu(s - t + 1)
            scores = scores.masked_fill(upper, float("-inf"))
        return scores.softmax(-1) @ v

    @torch.inference_mode()
    def run_encoder(self, feats: torch.Tensor) -> torch.Tensor:
        enc = self.enc
        x = F.gelu(enc.conv1(feats))
        x = F.gelu(enc.conv2(x)).transpose(1, 2)
        x = x + enc.embed_positions.weight[: x.shape[1]].to(x.dtype)
        for layer in enc.layers:
            a = layer.self_attn
            y = layer.self_attn_layer_norm(x)
            q, k, v = (_heads(p(y)) for p in (a.q_proj, a.k_proj, a.v_proj))
            x = x + a.out_proj(_merge(self._attention(q, k, v, causal=False)))
            y = layer.final_layer_norm(x)
            x = x + layer.fc2(F.gelu(layer.fc1(y)))
        return enc.layer_norm(x)

    def silence_states(self) -> torch.Tensor:
        """(1, 1500, D) encoder states of a window of the front end's padding, computed once."""
        if self._silence is None:
            feats = torch.from_numpy(silence_features(self.spec, self.dims))
            self._silence = self.run_encoder(feats.to(self.device, self.dtype))
        return self._silence

    @torch.inference_mode()
    def encode(self, feats: torch.Tensor) -> Encoded:
        """Encoder states of the whole batch; pad and xV apply to every item alike."""
        states = self.run_encoder(feats)
        b, computed = states.shape[:2]
        a = self.spec.axes
        if a.pad == "silence" and computed < self.dims.n_audio_ctx:
            tail = self.silence_states()[:, computed:].expand(b, -1, -1)
            states = torch.cat([states, tail], dim=1)
        states = subsample(states, a.stride, a.pool)
        assert states.shape[1] == decoder_positions(computed, self.dims.n_audio_ctx, a)
        kv = states.shape[1]
        if a.pad == "silence" and computed < self.dims.n_audio_ctx:
            # pooled group g depends on real audio iff g * k < computed (stride and avg alike)
            kv = min(kv, -(-computed // a.stride))
        return Encoded(states, computed, states.shape[1], kv)

    def join(self, parts: Sequence[Encoded]) -> Encoded:
        """Parts of a batch as one (see Engine.join)."""
        if len(parts) == 1:
            return parts[0]
        return joined(parts, torch.cat([p.states for p in parts]))

    def silence_cross_kv(self) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Cross-attention K/V of the pooled silence states, per decoder layer, cached.

        Projection is affine and pooling linear, so K/V of pooled silence equal the pooled K/V:
        reusing them for the padded positions of every clip is exact, not an approximation.
        """
        if self._silence_kv is None:
            a = self.spec.axes
            s = subsample(self.silence_states(), a.stride, a.pool)
            with torch.inference_mode():
                self._silence_kv = [
                    (
                        _heads(layer.encoder_attn.k_proj(s)),
                        _heads(layer.encoder_attn.v_proj(s)),
                    )
                    for layer in self.dec.layers
                ]
        return self._silence_kv

    def _cross_kv(self, enc: Encoded) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Per decoder layer, (B, heads, positions, dh) K and V: projected for the positions
        that hold audio, the cached silence K/V for the rest."""
        m = enc.kv_projected
        s = enc.states[:, :m]
        b = s.shape[0]
        cached = self.silence_cross_kv() if m < enc.decoder_positions else None
        cross = []
        for i, layer in enumerate(self.dec.layers):
            a = layer.encoder_attn
            k, v = _heads(a.k_proj(s)), _heads(a.v_proj(s))
            if cached is not None:
                k = torch.cat([k, cached[i][0][:, :, m:].expand(b, -1, -1, -1)], dim=2)
                v = torch.cat([v, cached[i][1][:, :, m:].expand(b, -1, -1, -1)], dim=2)
            cross.append((k, v))
        return cross

    @torch.inference_mode()
    def decode(
        self,
        enc: Encoded,
        n_steps: int | Sequence[int] | None = None,
        *,
        timestamps: bool = False,
        prefixes: Sequence[Sequence[int] | None] | None = None,
        max_new: int | None = None,
        forced: Sequence[Sequence[int] | None] | None = None,
    ) -> list[DecodeOutput]:
        """Greedy decoding of the batch as one tensor, one output per item (see Engine).

        Each item stops at its own end-of-text or length limit; finished items ride along
        (their rows are computed and ignored) until a quarter of the rows left are finished,
        then leave the batch tensors. At most `max_new_tokens` tokens are generated
        (openai-whisper's sample_len, and what the ct2 engine is limited to), or `max_new`
        where given (a streaming buffer of a few seconds holds a few words: a shorter limit
        caps what a repetition loop costs). With n_steps (cost-only models), item i runs
        exactly n_steps[i] steps (an int: every item). Prompts of different lengths (prefixes)
        are left-padded: each item keeps its own positions and the padding is masked out of
        self-attention. Forced tokens go in the prompt's pass and begin the timestamp rules'
        history, as in CTranslate2; every item of a batch must then force as many.
        `prefill_ms` is the batch's time from entry through the first token's argmax: the
        cross-attention K/V projection and the prompt's forward pass, the part of decoding
        whose cost does not grow with the number of tokens.
        """
        self._sync()
        t0 = time.perf_counter_ns()
        st = self._decode_state(enc, n_steps, timestamps, prefixes, max_new, forced)
        eot = self.ids["eot"]
        prefill_ms: float | None = None  # set at the first step, which always runs
        while True:
            tok = self._next_token(st)
            toks = tok.tolist()  # waits for the argmax
            if st.steps == 1:
                self._sync()
                prefill_ms = (time.perf_counter_ns() - t0) / 1e6
            st.record(toks, eot)
            if all(st.done):
                break
            st.sampled[:, st.n_forced + st.steps - 1] = tok
            st.fed = tok[:, None]
            # finished rows may run on past the last position
            st.pos = (st.pos[:, -1:] + 1).clamp(max=self.dims.n_text_ctx - 1)
            st.drop_finished()
        return [
            DecodeOutput(
                st.out[j],
                self.tokenizer.text(st.out[j], eot),
                st.hit_max[j],
                {"steps": st.item_steps[j]},
                prefill_ms=prefill_ms,
            )
            for j in range(len(st.out))
        ]

    def _decode_state(
        self,
        enc: Encoded,
        n_steps: int | Sequence[int] | None,
        timestamps: bool,
        prefixes: Sequence[Sequence[int] | None] | None,
        max_new: int | None,
        forced: Sequence[Sequence[int] | None] | None,
    ) -> DecodeState:
        """The batch's tensors before the first step: prompts left-padded, an empty
        self-attention cache per layer, the cross-attention K/V, the limits per item."""
        dims, dev = self.dims, self.device
        b = enc.states.shape[0]
        prompts = batch_prompts(dims, b, timestamps, prefixes, forced)
        starts = [list(f or []) for f in forced] if forced else [[] for _ in range(b)]
        n_forced = len(starts[0])
        if any(len(f) != n_forced for f in starts):
            raise SpecError("hf decode: forced prefixes of different lengths in one batch")
        fixed = steps_per_item(n_steps, b)
        # a prompt of length p leaves room for n_text_ctx - p + 1 tokens
        caps = [dims.n_text_ctx - len(p) + 1 for p in prompts]
        limit = token_limit(max_new, self.max_new_tokens)
        limits = [min(f if fixed else limit, c) for f, c in zip(fixed or caps, caps)]
        width = max(len(p) for p in prompts)
        pads = torch.tensor([width - len(p) for p in prompts], device=dev)
        columns = width + max(limits) - 1  # the prompt, then every token but the last
        # each layer's own head count (fewer where heads were pruned)
        heads = [layer.self_attn.q_proj.out_features // HEAD_DIM for layer in self.dec.layers]
        cache = [
            tuple(torch.empty(b, h, columns, HEAD_DIM, dtype=self.dtype, device=dev) for _ in "kv")
            for h in heads
        ]
        eot = self.ids["eot"]
        # the timestamp rules' history: the forced tokens, then each step's token
        sampled = torch.empty(b, n_forced + max(limits), dtype=torch.long, device=dev)
        if n_forced:
            sampled[:, :n_forced] = torch.tensor(starts, device=dev)
        return DecodeState(
            fixed=fixed,
            limits=limits,
            n_forced=n_forced,
            cache=cache,
            cross=self._cross_kv(enc),
            fed=torch.tensor([[eot] * (width - len(p)) + p for p in prompts], device=dev),
            pos=(torch.arange(width, device=dev) - pads[:, None]).clamp(min=0),
            # keys a query may see: its item's own columns (a pad column sees only itself)
            real=torch.arange(columns, device=dev) >= pads[:, None] if pads.any() else None,
            rules=self._timestamp_rules() if timestamps else None,
            sampled=sampled,
            out=[list(f) for f in starts],
            done=[False] * b,
            hit_max=[False] * b,
            item_steps=[0] * b,
            rows=list(range(b)),  # the items still in the batch tensors, in row order
        )

    def _next_token(self, st: DecodeState) -> torch.Tensor:
        """One decoder pass over the fed tokens; the argmax of the last position's logits
        after suppression and the timestamp rules, per row."""
        dec, eot = self.dec, self.ids["eot"]
        t = st.fed.shape[1]
        mask = None if st.real is None else padded_causal_mask(st.real, st.length, t)
        embedded = dec.embed_tokens(st.fed) + dec.embed_positions.weight[st.pos]
        x = self._step(embedded, st.cache, st.cross, st.length, mask)
        st.length += t
        st.steps += 1
        logits = self._logits(dec.layer_norm(x[:, -1])).float()
        logits.masked_fill_(self._suppress_mask, float("-inf"))
        if st.steps == 1:
            logits.masked_fill_(self._suppress_begin_mask, float("-inf"))
        if st.rules is not None:
            st.rules.apply(logits, st.sampled[:, : st.n_forced + st.steps - 1])
        tok = logits.argmax(dim=-1)
        if st.fixed is not None:  # a fixed length never ends early: take the runner-up
            tok = torch.where(tok == eot, logits.topk(2, dim=-1).indices[:, 1], tok)
        return tok

    def _logits(self, h: torch.Tensor) -> torch.Tensor:
        """(B, vocab) logits of (B, D) hidden states through the output projection.

        For a float projection and B >= 2 this is W @ h.T, transposed: on CPU, F.linear's
        (B x D) @ (D x 51864) with a transposed weight takes a kernel 2-3x slower at small B
        (tiny.en, 2 cores, fp32: 12.9 vs 4.8 ms at B=8; measured), and this projection is the
        largest matmul of a decoding step. Same products, in another summation order.
        """
        proj = self.model.proj_out
        if h.shape[0] < 2 or type(proj) is not nn.Linear or proj.bias is not None:
            return proj(h)
        return (proj.weight @ h.t()).t()

    def _step(
        self,
        x: torch.Tensor,
        cache: list[tuple[torch.Tensor, torch.Tensor]],
        cross: list[tuple[torch.Tensor, torch.Tensor]],
        length: int,
        mask: torch.Tensor | None,
    ) -> torch.Tensor:
        """One decoder pass over t new positions (B, t, D) after `length` cached ones."""
        t = x.shape[1]
        for (kc, vc), (ck, cv), layer in zip(cache, cross, self.dec.layers):
            a = layer.self_attn
            y = layer.self_attn_layer_norm(x)
            q, k, v = (_heads(p(y)) for p in (a.q_proj, a.k_proj, a.v_proj))
            kc[:, :, length : length + t] = k
            vc[:, :, length : length + t] = v
            k_all, v_all = kc[:, :, : length + t], vc[:, :, : length + t]
            x = x + a.out_proj(_merge(self._attention(q, k_all, v_all, t > 1, mask)))
            c = layer.encoder_attn
            q = _heads(c.q_proj(layer.encoder_attn_layer_norm(x)))
            x = x + c.out_proj(_merge(self._attention(q, ck, cv, causal=False)))
            x = x + layer.fc2(F.gelu(layer.fc1(layer.final_layer_norm(x))))
        return x

    def _timestamp_rules(self) -> TimestampRules:
        return TimestampRules(
            eot=self.ids["eot"],
            no_timestamps=self.ids["no_timestamps"],
            timestamp_begin=self.ids["timestamp_begin"],
            max_initial_index=max_initial_index(self.dims.n_audio_ctx),
        )

    def _sync(self) -> None:
        # CUDA kernels run asynchronously: a clock read must wait for the work it times
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def close(self) -> None:
        self.model = None  # type: ignore[assignment]
        self._silence = self._silence_kv = None
