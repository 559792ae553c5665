"""The `ct2` engine: CTranslate2's Whisper (what faster-whisper runs), stage by stage.

`encode` and `generate` are called separately so the harness times them like any engine's.
CTranslate2 accepts encoder inputs shorter than 3000 frames (it slices its position table), so
xT shortens real work here too; padding with silence states and xV subsampling happen on the
encoder output, in numpy, before it is handed to `generate`. Nothing here imports torch, so a
ct2 process stays as lean as faster-whisper's (tests/test_ct2_no_torch.py).

A batch goes to `encode` as one (B, n_mels, T) input and to one `generate` call with B prompts;
CTranslate2 drops finished items from its decoding batch as it goes. With timestamps, the
prompt has no <|notimestamps|> and CTranslate2's own timestamp rules apply (engines/rules.py
says how they differ from openai-whisper's).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from voxmeter.assets.bundled import ModelSource
from voxmeter.assets.convert import special_ids
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
    subsample,
    token_limit,
)
from voxmeter.errors import ModelError, SpecError
from voxmeter.spec import FULL_FRAMES, RunSpec

COMPUTE_TYPES = {"fp32": "float32", "int8": "int8", "bf16": "bfloat16", "fp16": "float16"}


class Ct2WhisperEngine:
    name = "ct2"
    stages = ASR_STAGES

    def __init__(
        self, spec: RunSpec, source: ModelSource, cache_dir: Path, replicas: int = 1
    ) -> None:
        import ctranslate2

        self.spec = spec
        self.source = source
        self.dims = source.dims
        if source.ct2_dir is None:
            what = "cost-only architecture" if source.kind == "cost-only" else "transformers dir"
            raise SpecError(
                f"model {source.name!r}: the ct2 engine needs CTranslate2 weights; this is a "
                f"{what} (use --engine hf)"
            )
        compute_type = COMPUTE_TYPES[spec.axes.precision]
        if spec.device == "cpu" and compute_type == "float16":
            raise SpecError("precision: fp16 needs --device cuda")
        self._ct2 = ctranslate2
        try:
            self.model = ctranslate2.models.Whisper(
                str(source.ct2_dir),
                device=spec.device,
                compute_type=compute_type,
                intra_threads=spec.threads,
                inter_threads=replicas,  # model copies serving concurrent calls (load_engine)
            )
        except (RuntimeError, ValueError) as e:
            if "compute type" in str(e):  # the machine, not the file, says no
                supported = ", ".join(sorted(ctranslate2.get_supported_compute_types(spec.device)))
                raise SpecError(
                    f"precision: {spec.axes.precision} ({compute_type}) is not supported by "
                    f"CTranslate2 on this {spec.device} (supported: {supported})"
                ) from None
            raise ModelError(f"{source.ct2_dir}: CTranslate2 cannot load it ({e})") from None
        self.compute_type = compute_type
        self.replicas = replicas
        self.precision_method = f"CTranslate2 compute type {compute_type}"
        self.ids = special_ids(self.dims)
        self.prompt = prompt_ids(self.dims)
        self.suppress, _ = load_suppress(source, self.ids)
        self.tokenizer = Tokenizer(source.tokenizer)
        self.max_new_tokens = self.dims.n_text_ctx // 2
        self._silence: np.ndarray | None = None
        self._shapes = _variable_shapes(source.ct2_dir / "model.bin")
        if spec.axes.pad == "silence" and spec.axes.frames != FULL_FRAMES:
            self.silence_states()  # part of loading: computed once, never inside a clip

    # -- accounting -----------------------------------------------------------------------
    def param_count(self) -> int:
        return sum(int(np.prod(s)) for s in self._shapes.values() if len(s) > 0)

    def weight_bytes(self) -> int:
        """Bytes as CTranslate2 holds them: computed from the variable shapes and compute type.

        CTranslate2 exposes no memory query. With int8 it stores each 2-D weight as one byte per
        value plus a float32 scale per row and keeps vectors in float32; with float types it
        stores matrices in that type. This is a formula from the shapes, not a reading.
        """
        total = 0
        per = {"float32": 4, "bfloat16": 2, "float16": 2, "int8": 1}[self.compute_type]
        for name, shape in self._shapes.items():
            n = int(np.prod(shape)) if shape else 0
            if self.compute_type == "int8":
                if len(shape) == 2 and name.endswith("weight"):
                    total += n + shape[0] * 4
                else:
                    total += n * 4
            else:
                total += n * (per if len(shape) >= 2 else 4)
        return total

    # -- stages ---------------------------------------------------------------------------
    def n_frames(self, n_samples: int) -> int:
        """The frames a clip of n_samples runs at alone: the spec's, or its own fit."""
        a = self.spec.axes
        return batch_frames([n_samples], a.frames, a.fit_step_s)

    def features(self, audios: Sequence[np.ndarray], n_frames: int | None = None):
        """(B, n_mels, T) StorageView of B clips by the spec's front end (see Engine)."""
        feats = features_for(self.spec, self.dims, audios, n_frames)
        return self._ct2.StorageView.from_array(np.ascontiguousarray(feats))

    def _encode_raw(self, feats):
        return self.model.encode(feats, to_cpu=self.spec.device != "cpu")

    def silence_states(self) -> np.ndarray:
        """(1, 1500, D) encoder states of a window of the front end's padding, computed once."""
        if self._silence is None:
            feats = np.ascontiguousarray(silence_features(self.spec, self.dims))
            out = self._encode_raw(self._ct2.StorageView.from_array(feats))
            self._silence = np.array(out, dtype=np.float32)
        return self._silence

    def encode(self, feats) -> Encoded:
        """Encoder states of the whole batch; pad and xV apply to every item alike."""
        out = self._encode_raw(feats)
        b, computed = int(out.shape[0]), int(out.shape[1])
        a = self.spec.axes
        n_dec = decoder_positions(computed, self.dims.n_audio_ctx, a)
        if n_dec == computed and a.stride == 1:
            return Encoded(out, computed, computed)
        states = np.array(out, dtype=np.float32)
        if a.pad == "silence" and computed < self.dims.n_audio_ctx:
            tail = self.silence_states()[:, computed:]
            tail = np.broadcast_to(tail, (b, *tail.shape[1:]))
            states = np.concatenate([states, tail], axis=1)
        states = subsample(states, a.stride, a.pool)
        assert states.shape[1] == n_dec
        sv = self._ct2.StorageView.from_array(np.ascontiguousarray(states))
        return Encoded(sv, computed, n_dec)

    def join(self, parts: Sequence[Encoded]) -> Encoded:
        """Parts of a batch as one (see Engine.join); the states are on the host."""
        if len(parts) == 1:
            return parts[0]
        states = np.concatenate([np.asarray(p.states) for p in parts])
        return joined(parts, self._ct2.StorageView.from_array(np.ascontiguousarray(states)))

    def _generate(
        self,
        enc: Encoded,
        prompts: list[list[int]],
        n_new: int,
        n_forced: Sequence[int] | None = None,
    ) -> list[list[int]]:
        """Greedy tokens per item (end-of-text dropped), at most n_new of them after the
        prompt's last n_forced[i] tokens (forced tokens, which the result begins with:
        CTranslate2 returns what follows the sot sequence, and applies the timestamp rules
        to it).

        One `generate` call takes the whole batch when the prompts have one length (always,
        without prefixes). CTranslate2 requires <|startoftranscript|> at the same index in
        every prompt of a call, so prompts of different lengths (prefixes, forced tokens) go
        in one call per length, each over its own rows of the states.
        """
        n_forced = n_forced or [0] * len(prompts)
        by_length: dict[tuple[int, int], list[int]] = {}
        for i, p in enumerate(prompts):
            by_length.setdefault((len(p), n_forced[i]), []).append(i)
        tokens: list[list[int]] = [[] for _ in prompts]
        for (length, extra), rows in by_length.items():
            states = enc.states if len(rows) == len(prompts) else self._rows(enc.states, rows)
            results = self.model.generate(
                states,
                [prompts[i] for i in rows],
                beam_size=1,
                max_length=ct2_max_length(n_new + extra, length - extra),
                suppress_blank=True,
                suppress_tokens=[-1],
                max_initial_timestamp_index=max_initial_index(self.dims.n_audio_ctx),
            )
            for i, res in zip(rows, results):
                tokens[i] = [t for t in res.sequences_ids[0] if t != self.ids["eot"]]
        return tokens

    def _rows(self, states, rows: list[int]):
        """Some rows of the encoder states (always on the host: encode copies them there)."""
        picked = np.ascontiguousarray(np.asarray(states)[rows])
        return self._ct2.StorageView.from_array(picked)

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
        """Greedy decoding of the batch in one `generate`, one output per item (see Engine).

        At most `max_new_tokens` tokens per item (as in the hf engine), or `max_new`; with
        timestamps, CTranslate2's own timestamp rules apply (the prompt has no
        <|notimestamps|>).
        `prefill_ms` stays None: CTranslate2's generate cannot be timed from inside; the
        harness gets the figure from `prefill_ms(enc)` in a separate, untimed pass.
        """
        if n_steps is not None:
            raise SpecError("the ct2 engine cannot force a decode length (cost-only runs use hf)")
        b = int(enc.states.shape[0])
        prompts = batch_prompts(self.dims, b, timestamps, prefixes, forced)
        limit = token_limit(max_new, self.max_new_tokens)
        n_forced = [len(f or []) for f in forced] if forced else [0] * b
        out = []
        for toks, k in zip(self._generate(enc, prompts, limit, n_forced), n_forced):
            # the n-th step was spent on a token, not on end-of-text: the limit stopped it
            hit_max = len(toks) - k >= limit
            out.append(DecodeOutput(toks, self.tokenizer.text(toks, self.ids["eot"]), hit_max, {}))
        return out

    def prefill_ms(self, enc: Encoded, *, timestamps: bool = False) -> float:
        """Milliseconds of one `generate` of the batch limited to the first generated token.

        That is the decoder's fixed cost per batch: moving the states to the device, the
        cross-attention K/V projection, the prompt's forward pass and the first step. Call it
        outside the timed decode (it repeats that work); CTranslate2 offers no hook inside.
        """
        prompts = batch_prompts(self.dims, int(enc.states.shape[0]), timestamps, None)
        t0 = time.perf_counter_ns()
        self._generate(enc, prompts, 1)  # returns with the results on the host
        return (time.perf_counter_ns() - t0) / 1e6

    def close(self) -> None:
        self.model = None


def ct2_max_length(n_new: int, prompt_len: int) -> int:
    """CTranslate2 Whisper's `max_length` that lets greedy decoding run exactly n_new steps.

    Its generate forwards the prompt but its last token as a prefix (start_step =
    prompt_len - 1) and then decodes min(max_length // 2, max_length - start_step) steps
    (src/models/whisper.cc, checked empirically on tiny.en with ctranslate2 4.x), so
    max_length is not "prompt + new tokens": prompt + 224 would stop at 113 steps.
    """
    if n_new < 1:
        raise SpecError(f"ct2 decoding needs at least one step, got {n_new}")
    return max(2 * n_new, n_new + prompt_len - 1)


def _variable_shapes(model_bin: Path) -> dict[str, list[int]]:
    """Shapes of the stored variables (read from the file header; aliases excluded)."""
    from voxmeter.assets.ct2 import read_ct2_model

    m = read_ct2_model(model_bin)
    return {k: list(v.shape) for k, v in m.variables.items() if v.ndim > 0}
