"""The Hugging Face ``Trainer`` for ENEL: per-group learning rates, each loss term logged, atomic checkpoints,
a time budget, and a periodic look at generated captions.

Everything else (DDP / FSDP / DeepSpeed through ``torchrun`` or ``accelerate launch``, gradient accumulation,
bf16 autocast, the cosine schedule, resuming with RNG states) is the stock ``Trainer``'s.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch
from transformers import Trainer, TrainerCallback
from transformers.trainer_utils import rotate_checkpoints

from ..data.collate import model_inputs
from ..errors import StorageError

__all__ = ["EnelTrainer", "point_reliance", "BudgetClock", "TimeBudgetCallback", "CaptionPreviewCallback", "is_complete_checkpoint"]

_COMPLETE = "enel-checkpoint-complete"


def is_complete_checkpoint(path: str | os.PathLike) -> bool:
    return (Path(path) / _COMPLETE).is_file()


class EnelTrainer(Trainer):
    """``Trainer`` with ENEL's optimiser groups, loss-term logging and atomic checkpoints.

    Args:
        lr_new: learning rate of the new modules (point embedding, projector, special tokens, heads, aggregation).
        lr_llm: learning rate of the backbone's trainable weights.
        point_reliance: once per logging window, measure how much the answers depend on the clouds
            (:func:`point_reliance`; one extra no-grad forward every ``logging_steps`` steps) and log it.
    """

    def __init__(self, *args, lr_new: float, lr_llm: float, clock: "BudgetClock | None" = None,
                 point_reliance: bool = True, **kwargs):
        super().__init__(*args, **kwargs)
        self.lr_new = lr_new
        self.lr_llm = lr_llm
        self.clock = clock
        self.point_reliance = point_reliance
        self._reliance_step = -1
        self.model_accepts_loss_kwargs = False  # our loss is a plain mean, not a token-count-normalised sum
        self._term_sums: dict[str, float] = defaultdict(float)
        self._term_counts: dict[str, int] = defaultdict(int)

    # ---- optimiser ---------------------------------------------------------------------------------------
    def create_optimizer(self, model=None):
        if self.optimizer is None:
            from .freezing import parameter_groups

            groups = parameter_groups(
                self.model, lr_new=self.lr_new, lr_llm=self.lr_llm, weight_decay=self.args.weight_decay
            )
            self.optimizer = torch.optim.AdamW(
                groups, lr=self.lr_new, betas=(self.args.adam_beta1, self.args.adam_beta2), eps=self.args.adam_epsilon
            )
        return self.optimizer

    def create_scheduler(self, num_training_steps: int, optimizer=None):
        """Step-based schedule from the arguments, or, with a time budget, one that follows the clock."""
        if self.clock is None:
            return super().create_scheduler(num_training_steps, optimizer)
        if self.lr_scheduler is None:
            self.lr_scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer or self.optimizer, self.clock.lr_factor)
        return self.lr_scheduler

    # ---- loss --------------------------------------------------------------------------------------------
    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        inputs = model_inputs(inputs)
        outputs = model(**inputs)
        loss = outputs.loss
        if model.training:
            for name, value in {**(outputs.loss_terms or {}), **(outputs.diagnostics or {})}.items():
                self._term_sums[name] += float(value.detach().float())
                self._term_counts[name] += 1
            step, every = self.state.global_step, self.args.logging_steps
            if self.point_reliance and every and step % every == 0 and step != self._reliance_step:
                self._reliance_step = step  # the first micro-batch of the window only
                gap = point_reliance(model, inputs, outputs)
                if gap is not None:
                    self._term_sums["point_reliance"] += gap
                    self._term_counts["point_reliance"] += 1
        return (loss, outputs) if return_outputs else loss

    def log(self, logs: dict, start_time: float | None = None) -> None:
        if "loss" in logs and self._term_counts:
            for name, total in self._term_sums.items():
                logs[name] = round(total / max(1, self._term_counts[name]), 4)
            self._term_sums.clear()
            self._term_counts.clear()
        super().log(logs, start_time)

    # ---- atomic checkpoints ------------------------------------------------------------------------------
    def _save_checkpoint(self, model, trial):
        """Write ``checkpoint-N`` into a staging folder, mark it complete, then rename it into place.

        A run killed while saving leaves at most a staging folder behind, never a half-written
        ``checkpoint-N`` that ``--resume`` could pick up.
        """
        real_out = self.args.output_dir
        staging = os.path.join(real_out, ".staging")
        name = f"checkpoint-{self.state.global_step}"
        if self.args.should_save:
            shutil.rmtree(os.path.join(staging, name), ignore_errors=True)
        self.args.output_dir = staging
        try:
            super()._save_checkpoint(model, trial)
        except (OSError, RuntimeError) as exc:  # torch.save reports a full disk as a RuntimeError
            shutil.rmtree(os.path.join(staging, name), ignore_errors=True)
            raise StorageError(checkpoint_write_failure(name, staging, real_out, exc)) from exc
        finally:
            self.args.output_dir = real_out
        if self.args.world_size > 1 and torch.distributed.is_initialized():
            torch.distributed.barrier()
        if self.args.should_save:
            src, dst = os.path.join(staging, name), os.path.join(real_out, name)
            Path(src, _COMPLETE).write_text(json.dumps({"global_step": self.state.global_step}))
            shutil.rmtree(dst, ignore_errors=True)
            os.replace(src, dst)
            rotate_checkpoints(output_dir=real_out, save_total_limit=self.args.save_total_limit,
                               best_model_checkpoint=self.state.best_model_checkpoint, use_mtime=False)
        if self.args.world_size > 1 and torch.distributed.is_initialized():
            torch.distributed.barrier()


def checkpoint_write_failure(name: str, staging: str, out_dir: str, exc: BaseException) -> str:
    """The message for a checkpoint that could not be written: the cause, the disk's free space, what was kept."""
    try:
        free = f"{shutil.disk_usage(out_dir).free / 2**30:.1f} GiB free on that disk"
    except OSError:
        free = "the free space could not be read"
    from .run import last_checkpoint  # run imports this module

    kept = last_checkpoint(out_dir)
    resume = (f"the last complete checkpoint, {Path(kept).name}, is kept: free some space (old runs' checkpoint-* "
              "folders can go) and run the same command with --resume") if kept else (
              "no complete checkpoint was written yet: free some space and run the same command again")
    return f"could not write {name} into {staging} ({type(exc).__name__}: {exc}; {free}); {resume}"


def answer_loss(outputs) -> torch.Tensor:
    """The cross-entropy on the answers alone: ``loss_ce`` when the objective adds terms, else the loss."""
    terms = outputs.loss_terms or {}
    return terms["loss_ce"] if "loss_ce" in terms else outputs.loss


@torch.no_grad()
def point_reliance(model, inputs: dict, outputs) -> float | None:
    """How much the answers depend on the clouds: answer loss with the clouds handed to the wrong samples
    (rolled by one along the batch) minus the answer loss with the right ones, in nats per answer token.

    ``inputs``: the model inputs of a training batch, ``point_clouds`` ``(B, N, C)`` (or a list of ``B`` clouds);
    ``outputs``: the model's outputs on them. About 0 while the model answers from the text alone (the point
    tokens are decoration); it grows as answers start to come from the points. Complements ``point_spread``,
    which says whether the tokens differ between clouds, not whether anything reads them. None for batches
    with fewer than two clouds. Runs in a forked RNG so that training draws the same random numbers with or
    without it.
    """
    clouds = inputs.get("point_clouds")
    if clouds is None or inputs.get("labels") is None or len(clouds) < 2:
        return None
    if not isinstance(clouds, torch.Tensor) and any(c is None for c in clouds):
        return None
    wrong = clouds.roll(1, dims=0) if isinstance(clouds, torch.Tensor) else clouds[-1:] + clouds[:-1]
    with torch.random.fork_rng(devices=[]):
        shuffled = model(**{**inputs, "point_clouds": wrong})
    return float(answer_loss(shuffled).detach().float() - answer_loss(outputs).detach().float())


class BudgetClock:
    """Training time spent against a budget, kept across resumes in ``<output_dir>/enel_clock.json``.

    With a budget the learning rate follows the clock instead of the step count: linear warm-up over the first
    ``warmup`` fraction of the time, then cosine decay to 0 when the budget is spent. A machine that turns slower
    (another job, thermal throttling) then gets fewer steps, never a schedule cut off half-way; a fixed
    ``train.max_steps`` keeps the usual step-based, bit-reproducible schedule instead.
    """

    def __init__(self, minutes: float, warmup: float, path: str | os.PathLike):
        self.seconds = minutes * 60.0
        self.warmup = min(max(warmup, 0.0), 0.5)
        self.path = Path(path)
        self.spent = 0.0
        self.started: float | None = None
        if self.path.is_file():
            self.spent = float(json.loads(self.path.read_text()).get("spent_seconds", 0.0))

    def start(self) -> None:
        self.started = time.time()

    def elapsed(self) -> float:
        return self.spent + (time.time() - self.started if self.started is not None else 0.0)

    def progress(self) -> float:
        return min(1.0, self.elapsed() / self.seconds) if self.seconds > 0 else 1.0

    def lr_factor(self, _step: int = 0) -> float:
        p = self.progress()
        if p < self.warmup:
            return max(p / self.warmup, 1e-3)
        return 0.5 * (1.0 + math.cos(math.pi * (p - self.warmup) / max(1e-9, 1.0 - self.warmup)))

    def save(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps({"spent_seconds": self.elapsed(), "budget_seconds": self.seconds}))
        os.replace(tmp, self.path)


class TimeBudgetCallback(TrainerCallback):
    """Starts the :class:`BudgetClock`, records it with each checkpoint, and stops training (with a final save)
    once the budget is spent."""

    def __init__(self, clock: BudgetClock):
        self.clock = clock

    def on_train_begin(self, args, state, control, **kwargs):
        self.clock.start()

    def on_save(self, args, state, control, **kwargs):
        if state.is_world_process_zero:
            self.clock.save()

    def on_step_end(self, args, state, control, **kwargs):
        if self.clock.progress() >= 1.0:
            control.should_training_stop = True
            control.should_save = True
        return control


class CaptionPreviewCallback(TrainerCallback):
    """Every ``every`` steps, caption a few held-out clouds and log them next to the ground truth."""

    def __init__(self, model, tokenizer, samples: list[dict], every: int, log_path: str | os.PathLike):
        self.model = model
        self.tokenizer = tokenizer
        self.samples = samples  # each: {"object_id", "points" (N, 6) float32, "ground_truth"}
        self.every = every
        self.log_path = Path(log_path)

    def preview(self, step: int) -> list[dict]:
        from ..data.prompts import PROMPTS
        from ..inference import Assistant, GenerationSettings

        was_training = self.model.training
        self.model.eval()
        try:
            assistant = Assistant(self.model, self.tokenizer, GenerationSettings(max_new_tokens=40))
            clouds = np.stack([s["points"] for s in self.samples])
            answers = assistant.ask(clouds, [PROMPTS["caption"]] * len(self.samples))
        finally:
            self.model.train(was_training)
        records = [
            {"step": step, "object_id": s["object_id"], "ground_truth": s["ground_truth"], "model_output": a}
            for s, a in zip(self.samples, answers)
        ]
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "a") as f:
            for r in records:
                f.write(json.dumps(r) + "\n")
        return records

    def on_step_end(self, args, state, control, **kwargs):
        if self.every and state.global_step % self.every == 0 and state.is_world_process_zero and self.samples:
            for r in self.preview(state.global_step):
                print(f"[preview step {r['step']}] {r['object_id']}: {r['model_output']!r}  (gt: {r['ground_truth']!r})",
                      flush=True)
        return control
