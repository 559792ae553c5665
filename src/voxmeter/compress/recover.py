"""Recovery training: the compressed student learns back from its uncompressed teacher.

"distill": KL to the teacher at T = 2 plus cross-entropy of the reference tokens (and, when
the encoder trains, MSE of its states), teacher-forced on the training speech (its reference
or pseudo-label tokens: compress/traindata.py, labels.py); "lora": the same
loss through peft adapters, merged back. Checkpoints resume a killed run bit for bit. The loss,
schedule and resume rules, with what was measured: docs/compression-notes.md#recovery-training.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from statistics import fmean
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from voxmeter.compress.prune import _prompt_len, n_params
from voxmeter.errors import DataError, SpecError
from voxmeter.progress import advance_or_bar

METHODS = ("distill", "lora")
TEMPERATURE = 2.0
WEIGHTS = {"kl": 1.0, "ce": 0.8, "encoder_mse": 1.0}
LR = {"distill": 1e-4, "lora": 1e-3}
WARMUP_SHARE, CLIP_NORM = 0.1, 1.0
LORA = {"r": 8, "alpha": 16}
FROZEN = ("model.decoder.embed_tokens", "model.decoder.embed_positions", "model.encoder.embed_positions")  # fmt: skip
CKPT_FORMAT, CKPT_FILE = 1, "recover.pt"
LAST = 5  # at most this many steps are averaged for the loss at start and at end

Pairs = Sequence[tuple[torch.Tensor, list[int]]]


class _Teacher(NamedTuple):
    """The teacher's outputs per clip: final encoder states (frames, d), logits at the scored
    positions (n, vocab) in float16, and the first scored position."""

    states: list[torch.Tensor]
    logits: list[torch.Tensor]
    start: list[int]


@dataclass(frozen=True)
class _Settings:
    method: str
    steps: int
    lr: float
    batch: int
    seed: int
    frozen: bool  # the encoder equals the teacher's: frozen, fed the cached states


@dataclass
class _Run:
    """Where training stands: what a checkpoint holds besides the tensors."""

    step: int = 0
    losses: list[float] = field(default_factory=list)
    events: list[dict] = field(default_factory=list)
    kl_before: float = 0.0
    parts_start: dict | None = None
    parts: dict | None = None


def checkpoint_dir(out: Path) -> Path:
    return Path(out).parent / f".{Path(out).name}.ckpt"


def recover(
    model: nn.Module,
    source: Any,
    pairs: Pairs,
    method: str,
    steps: int,
    out: Path,
    *,
    progress: Callable[[str, int, int], Any] | None = None,
    lr: float | None = None,
    batch: int | None = None,
    seed: int = 0,
    ckpt_every: int = 25,
    base_digest: str | None = None,
) -> dict[str, Any]:
    """Train `model` (the compressed student, fp32) in place for `steps` optimizer steps on
    `pairs` by `method` ("distill" or "lora", module doc); it is left in eval mode with the
    same structure. `batch` None: 4 clips, 2 when the encoder trains. Returns a report:
    settings, seconds, losses at start and end, teacher-student KL (T = 1, mean per scored token
    over all pairs) before and after, checkpoint and resume events. `base_digest`: the base
    weights' digest when the caller has it (else hashed here), which a checkpoint must match."""
    t0 = time.perf_counter()
    if method not in METHODS:
        raise SpecError(f"recover: expected one of {METHODS}, got {method!r}")
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise SpecError(f"recover_steps: must be an integer >= 1, got {steps!r}")
    cfg, teacher = _setup(model, source, pairs, method, steps, lr, batch, seed)
    ckpt_path = checkpoint_dir(out) / CKPT_FILE
    digest = _digest(cfg, model, pairs)
    base = base_digest or _weights_digest(source)
    ckpt = _load_checkpoint(ckpt_path, digest, base)  # refused before the teacher's pass
    cache = _teacher_outputs(teacher, pairs, model.config.decoder_start_token_id)
    del teacher
    teacher_s = time.perf_counter() - t0

    torch.manual_seed(seed)
    flags = {n: p.requires_grad for n, p in model.named_parameters()}
    for name in FROZEN + (("model.encoder",) if cfg.frozen else ()):
        model.get_submodule(name).requires_grad_(False)
    n_student = n_params(model)
    wrapped, n_targets = _lora_wrap(model, cfg.frozen) if method == "lora" else (None, 0)
    trainable = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    opt = torch.optim.AdamW([p for _, p in trainable], lr=cfg.lr, weight_decay=0.0, fused=True)
    if ckpt is not None:
        run = _restore(ckpt, trainable, opt)
        run.events.append({"event": "resumed", "step": run.step})
    else:
        run = _Run(kl_before=_mean_kl(model, pairs, cache, cfg))

    def save(kind: str) -> None:
        run.events.append({"event": kind, "step": run.step})
        _atomic_save(ckpt_path, {
            "format": CKPT_FORMAT, "settings": digest, "base": base, "run": asdict(run),
            "trainable": {n: p.detach().cpu() for n, p in trainable},
            "optimizer": opt.state_dict(), "rng": torch.get_rng_state(),
        })  # fmt: skip

    start = run.step
    train_s = _train(model, opt, trainable, pairs, cache, cfg, run, progress, ckpt_every, save)
    lora = _merge(wrapped, model, n_student, n_targets)
    for n, p in model.named_parameters():
        p.requires_grad_(flags.get(n, True))
    kl_after = _mean_kl(model, pairs, cache, cfg)
    shutil.rmtree(checkpoint_dir(out), ignore_errors=True)
    times = {"seconds": time.perf_counter() - t0, "teacher_s": teacher_s, "train_s": train_s}
    return _report(cfg, run, start, len(pairs), times, kl_after, lora)


def _setup(
    model: nn.Module,
    source: Any,
    pairs: Pairs,
    method: str,
    steps: int,
    lr: float | None,
    batch: int | None,
    seed: int,
) -> tuple[_Settings, nn.Module]:
    """The run's settings and the teacher (the uncompressed model, loaded again)."""
    from transformers import WhisperForConditionalGeneration

    sot = model.config.decoder_start_token_id
    _check_pairs(pairs, sot)
    device = next(model.parameters()).device
    teacher = WhisperForConditionalGeneration.from_pretrained(source.hf_dir).to(device).eval()
    frozen = _same_encoder(model, teacher)
    batch = max(1, min(batch or (4 if frozen else 2), len(pairs)))
    cfg = _Settings(method, steps, LR[method] if lr is None else float(lr), batch, seed, frozen)
    return cfg, teacher


def _weights_digest(source: Any) -> str:
    from voxmeter.identity import FileDigests, weights_digest

    return weights_digest(source, FileDigests(None))


def _train(model, opt, trainable, pairs, cache, cfg, run, progress, ckpt_every, save) -> float:
    """Optimizer steps until `cfg.steps`, a checkpoint every `ckpt_every` and on Ctrl-C; the
    seconds it took. The model is left in eval mode."""
    t_train = time.perf_counter()
    model.train()
    with advance_or_bar(
        progress, "recover", cfg.steps, run.step, lambda i: f"recover step {i}"
    ) as advance:
        try:
            while run.step < cfg.steps:
                _step(model, opt, [p for _, p in trainable], pairs, cache, cfg, run)
                if run.step % max(1, ckpt_every) == 0 and run.step < cfg.steps:
                    save("checkpoint")
                advance(run.step)
        except KeyboardInterrupt:
            save("interrupted")
            raise
    model.eval()
    return time.perf_counter() - t_train


def _report(cfg, run, start, n_clips, times, kl_after, lora) -> dict[str, Any]:
    """What `recover` returns (and `voxmeter.json` keeps)."""
    last = max(1, min(LAST, len(run.losses) // 2))  # start and end never share a step
    return {
        "method": cfg.method, "steps": cfg.steps, "steps_this_run": run.step - start,
        "batch": cfg.batch, "lr": cfg.lr, "warmup_steps": _warmup(cfg.steps), "seed": cfg.seed,
        "temperature": TEMPERATURE, "weights": WEIGHTS, "clips": n_clips,
        "encoder": "frozen (equal to the teacher's)" if cfg.frozen else "trained",
        **times, "s_per_step": times["train_s"] / max(1, run.step - start),
        "loss_start": fmean(run.losses[:last]), "loss_end": fmean(run.losses[-last:]),
        "loss_parts_start": run.parts_start, "loss_parts_end": run.parts,
        "kl_before": run.kl_before, "kl_after": kl_after, "events": run.events, "lora": lora,
    }  # fmt: skip


def _step(model, opt, params: list, pairs: Pairs, cache: _Teacher, cfg: _Settings, run: _Run):
    """One optimizer step at the scheduled learning rate on the scheduled batch."""
    for group in opt.param_groups:
        group["lr"] = cfg.lr * _lr_factor(run.step, cfg.steps)
    idx = _batch_indices(run.step, len(pairs), cfg.batch, cfg.seed)
    opt.zero_grad(set_to_none=True)
    loss, parts = _loss(model, pairs, cache, idx, cfg.frozen)
    loss.backward()
    threads = torch.get_num_threads()
    with _sigint_held():
        # one thread: the update is elementwise over many small tensors, where threads only
        # add barriers (AdamW on 4.7M weights, busy 2-core machine: 1.1 s on two, 13 ms on one)
        torch.set_num_threads(1)
        try:
            nn.utils.clip_grad_norm_(params, CLIP_NORM)
            opt.step()
        finally:
            torch.set_num_threads(threads)
        run.step += 1
        run.losses.append(float(loss.detach()))
        run.parts, run.parts_start = parts, run.parts_start or parts


def _check_pairs(pairs: Pairs, sot: int) -> None:
    if not pairs:
        raise DataError("recover: no calibration (features, tokens) pairs were given")
    for feats, ids in pairs:
        p = _prompt_len(ids, sot)
        if feats.dim() != 3 or feats.shape[0] != 1 or p == 0 or len(ids) <= p:
            raise DataError("recover: a pair must be features (1, mels, frames), prompt + text")


def _digest(cfg: _Settings, model: nn.Module, pairs: Pairs) -> str:
    """Digest of what decides the trained weights: settings, loss, the student's initial
    weights and the calibration pairs."""
    h = hashlib.sha256()
    fixed = [CKPT_FORMAT, TEMPERATURE, WEIGHTS, WARMUP_SHARE, CLIP_NORM, LORA, FROZEN]
    h.update(json.dumps([asdict(cfg), fixed], sort_keys=True).encode())
    for name, t in sorted(model.state_dict().items()):
        h.update(f"{name}{tuple(t.shape)}{t.dtype}".encode())
        h.update(t.detach().cpu().contiguous().view(torch.uint8).numpy())
    for feats, ids in pairs:
        h.update(feats.detach().float().contiguous().numpy().tobytes())
        h.update(json.dumps(list(ids)).encode())
    return h.hexdigest()[:20]


def _same_encoder(student: nn.Module, teacher: nn.Module) -> bool:
    a, b = student.model.encoder.state_dict(), teacher.model.encoder.state_dict()
    return a.keys() == b.keys() and all(
        a[k].shape == b[k].shape and torch.equal(a[k], b[k].to(a[k].device)) for k in a
    )


@torch.no_grad()
def _teacher_outputs(teacher: nn.Module, pairs: Pairs, sot: int) -> _Teacher:
    device = next(teacher.parameters()).device
    states, logits, start = [], [], []
    for feats, ids in pairs:
        s = _prompt_len(ids, sot) - 1  # the first position that predicts the reference
        out = teacher(
            input_features=feats.to(device),
            decoder_input_ids=torch.tensor([ids[:-1]], device=device),
            use_cache=False,
        )
        states.append(out.encoder_last_hidden_state[0].float())
        logits.append(out.logits[0, s:].to(torch.float16))
        start.append(s)
    return _Teacher(states, logits, start)


def _forward(model: nn.Module, pairs: Pairs, cache: _Teacher, idx: list[int], frozen: bool):
    """Student logits at the scored positions of clips `idx`, pooled (N, vocab), the teacher's
    (float32), and the student's final encoder states (B, frames, d), None when frozen."""
    from transformers.modeling_outputs import BaseModelOutput

    device = next(model.parameters()).device
    ids = [pairs[i][1] for i in idx]
    width = max(len(x) for x in ids) - 1
    kw = {
        "decoder_input_ids": torch.tensor(
            [x[:-1] + [x[-1]] * (width - len(x) + 1) for x in ids], device=device
        ),
        "use_cache": False,
    }
    if frozen:
        enc = torch.stack([cache.states[i] for i in idx]).to(device)
        out, states = model(encoder_outputs=BaseModelOutput(last_hidden_state=enc), **kw), None
    else:
        out = model(input_features=torch.cat([pairs[i][0] for i in idx]).to(device), **kw)
        states = out.encoder_last_hidden_state
    logits = torch.cat([out.logits[j, cache.start[i] : len(ids[j]) - 1] for j, i in enumerate(idx)])
    teacher = torch.cat([cache.logits[i] for i in idx]).to(device, torch.float32)
    return logits, teacher, states


def _kl(student: torch.Tensor, teacher: torch.Tensor, t: float, reduction: str) -> torch.Tensor:
    """KL(teacher || student) of the softmaxes at temperature t, per row."""
    s, q = F.log_softmax(student / t, -1), F.log_softmax(teacher / t, -1)
    return F.kl_div(s, q, log_target=True, reduction=reduction)


def _loss(model, pairs: Pairs, cache: _Teacher, idx: list[int], frozen: bool):
    """The distillation loss of one batch (module doc) and its parts as floats."""
    logits, teacher, states = _forward(model, pairs, cache, idx, frozen)
    target = [t for i in idx for t in pairs[i][1][cache.start[i] + 1 :]]
    kl = _kl(logits, teacher, TEMPERATURE, "batchmean") * TEMPERATURE**2
    ce = F.cross_entropy(logits, torch.tensor(target, device=logits.device))
    loss = WEIGHTS["kl"] * kl + WEIGHTS["ce"] * ce
    parts = {"kl_t2": float(kl.detach()), "ce": float(ce.detach())}
    if states is not None:
        ref = torch.stack([cache.states[i] for i in idx]).to(states.device)
        mse = (((states - ref) ** 2).mean((1, 2)) / (ref**2).mean((1, 2))).mean()
        loss = loss + WEIGHTS["encoder_mse"] * mse
        parts["encoder_mse"] = float(mse.detach())
    return loss, parts


@torch.no_grad()
def _mean_kl(model, pairs: Pairs, cache: _Teacher, cfg: _Settings) -> float:
    """KL(teacher || student) at T = 1, mean per scored token over all pairs."""
    was, total, n = model.training, 0.0, 0
    model.eval()
    for b in range(0, len(pairs), cfg.batch):
        idx = list(range(b, min(b + cfg.batch, len(pairs))))
        logits, teacher, _ = _forward(model, pairs, cache, idx, cfg.frozen)
        total, n = total + float(_kl(logits, teacher, 1.0, "sum")), n + logits.shape[0]
    model.train(was)
    return total / n


def _warmup(steps: int) -> int:
    return max(1, round(WARMUP_SHARE * steps))


def _lr_factor(step: int, steps: int) -> float:
    """Linear warm-up over the first steps, then linear decay to zero at `steps`."""
    warm = _warmup(steps)
    return (step + 1) / warm if step < warm else (steps - step) / (steps - warm + 1)


def _batch_indices(step: int, n: int, batch: int, seed: int) -> list[int]:
    """Clips of step `step`: consecutive slots of one seeded permutation per epoch, so the
    schedule depends on the step alone (a resumed run draws the same batches)."""
    idx = []
    for slot in range(step * batch, (step + 1) * batch):
        epoch, pos = divmod(slot, n)
        g = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
        idx.append(int(torch.randperm(n, generator=g)[pos]))
    return idx


def _lora_wrap(model: nn.Module, frozen: bool) -> tuple[Any, int]:
    """peft LoRA adapters on the Linears of the trained stacks (module doc), injected into
    `model` in place; (the PeftModel, to merge later, and the number of Linears adapted)."""
    from peft import LoraConfig, get_peft_model

    stacks = ("model.decoder.layers.",) + (() if frozen else ("model.encoder.layers.",))
    targets = [n for n, m in model.named_modules() if type(m) is nn.Linear and n.startswith(stacks)]
    config = LoraConfig(
        r=LORA["r"], lora_alpha=LORA["alpha"], lora_dropout=0.0, target_modules=targets
    )
    return get_peft_model(model, config), len(targets)


def _merge(wrapped: Any, model: nn.Module, n_student: int, n_targets: int) -> dict | None:
    """Merge the LoRA adapters into the weights and check nothing of peft is left."""
    if wrapped is None:
        return None
    from peft.tuners.tuners_utils import BaseTunerLayer

    adapters = n_params(model) - n_student
    if wrapped.merge_and_unload() is not model:
        raise RuntimeError("recover: peft merged into another model object than the student")
    if hasattr(model, "peft_config"):
        del model.peft_config
    left = [n for n, m in model.named_modules() if isinstance(m, BaseTunerLayer)]
    if left or n_params(model) != n_student:
        raise RuntimeError(f"recover: LoRA merge left {left[:3]} / {n_params(model)} params")
    return {**LORA, "targets": n_targets, "adapter_params": adapters}


def _restore(ckpt: dict, trainable: list, opt: torch.optim.Optimizer) -> _Run:
    saved = ckpt["trainable"]
    if set(saved) != {n for n, _ in trainable}:
        raise SpecError("recover: the checkpoint's parameters are not this student's")
    with torch.no_grad():
        for n, p in trainable:
            p.copy_(saved[n])
    opt.load_state_dict(ckpt["optimizer"])
    torch.set_rng_state(ckpt["rng"])
    return _Run(**ckpt["run"])


def _load_checkpoint(path: Path, digest: str, base: str) -> dict | None:
    """The checkpoint at `path` if it was made with these settings and base weights, None if
    there is none; any other is refused in one line naming it."""
    if not path.is_file():
        return None
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # any unreadable file gets the same one line
        raise SpecError(f"recover: cannot read checkpoint {path} ({type(e).__name__})") from e
    why = (
        "has another format" if not isinstance(ckpt, dict) or ckpt.get("format") != CKPT_FORMAT
        else "was made from another base model" if ckpt.get("base") != base
        else "was made with other settings" if ckpt.get("settings") != digest
        else None
    )  # fmt: skip
    if why:
        raise SpecError(f"recover: checkpoint {path} {why}; remove it to start over")
    return ckpt


def _atomic_save(path: Path, state: dict) -> None:
    """torch.save into a temporary sibling, fsync, then rename over `path`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(state, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


@contextmanager
def _sigint_held():
    """Hold Ctrl-C during an optimizer update (weights and Adam's moments change together)
    and raise it right after. Only where Python's default handler is installed (main thread)."""
    held = threading.current_thread() is threading.main_thread() and (
        signal.getsignal(signal.SIGINT) is signal.default_int_handler
    )
    caught = []
    if held:
        signal.signal(signal.SIGINT, lambda *a: caught.append(a))
    try:
        yield
    finally:
        if held:
            signal.signal(signal.SIGINT, signal.default_int_handler)
    if caught:
        raise KeyboardInterrupt
