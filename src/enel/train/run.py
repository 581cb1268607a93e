"""Run one training stage from a :class:`~enel.train.recipe.Recipe` (``enel train --recipe …``).

Stage 1 builds a new ENEL model around a backbone (or continues an ENEL folder) and trains the first K layers,
the point embedding, projector, special tokens and the objective heads; stage 2 loads a stage-1 folder, turns
the objectives off, adds the aggregation and fine-tunes everything. The final model is written atomically to
``<output_dir>/model`` with its tokenizer and a ``training_state`` recording what it has seen.

Multi-process: launch the same command with ``torchrun --nproc_per_node N -m enel.cli train …`` (or
``accelerate launch``); the ``Trainer`` sets up DDP (gloo on CPUs, NCCL on GPUs), and ``train.fsdp`` /
``train.deepspeed`` pass through to ``TrainingArguments`` (see ``docs/training.md``).
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from ..errors import ConfigError
from .recipe import Recipe

__all__ = ["train", "TrainOutcome", "build_model", "build_datasets", "pretrain_point_encoder", "prealign_embedding",
           "training_arguments",
           "last_checkpoint", "bf16_available"]


def bf16_available() -> bool:
    """bf16 autocast pays off: a CUDA GPU with bf16, or a CPU with AVX-512 bf16 / AMX."""
    if torch.cuda.is_available():
        return torch.cuda.is_bf16_supported()
    try:
        return bool(torch.cpu._is_avx512_bf16_supported()) or bool(getattr(torch.cpu, "_is_amx_tile_supported",
                                                                           lambda: False)())
    except Exception:  # pragma: no cover - private API moved
        return False


def _use_bf16(setting) -> bool:
    if setting in (True, "true"):
        return True
    if setting in (False, "false"):
        return False
    return bf16_available()


def _root(recipe: Recipe) -> Path:
    return Path(recipe.data.root).expanduser()


def build_model(recipe: Recipe):
    """The model and tokenizer this recipe starts from, with the stage's freezing rules applied."""
    from ..model import EnelForCausalLM
    from .freezing import apply_stage

    if recipe.stage == 1:
        if recipe.init_from:
            model, tokenizer = _load_with(recipe.init_from, objective_config=recipe.objective)
        else:
            model, tokenizer = EnelForCausalLM.from_backbone(
                recipe.backbone,
                point_config=recipe.point_config,
                point_encoder=recipe.point_encoder,
                encoder_config=recipe.encoder_config if recipe.point_encoder == "pointbert" else None,
                objective_config=recipe.objective,
                conversation_template=recipe.conversation_template,
                seed=recipe.train.seed,
            )
    else:
        if not recipe.init_from:
            raise ConfigError("a stage-2 recipe needs init_from: the folder of a stage-1 model")
        model, tokenizer = _load_with(
            recipe.init_from, objective_config={"name": "none"}, aggregation_config=recipe.aggregation
        )
    report = apply_stage(model, recipe.stage, trainable_layers=recipe.trainable_layers)
    return model, tokenizer, report


def _load_with(folder, **config_overrides):
    from transformers import AutoTokenizer

    from ..errors import ModelLoadError
    from ..model import EnelForCausalLM

    folder = Path(folder)
    if not (folder / "config.json").is_file():
        raise ModelLoadError(f"init_from={folder} holds no ENEL model (no config.json); train stage 1 first")
    from transformers.utils import logging as hf_logging

    # a stage-2 load drops the stage-1 heads and initialises the aggregation (gate at 0): expected, not news
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    try:
        model = EnelForCausalLM.from_pretrained(folder, dtype=torch.float32, **config_overrides)
    finally:
        hf_logging.set_verbosity(verbosity)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    return model, tokenizer


def build_datasets(recipe: Recipe, model, tokenizer):
    """The training dataset (the recipe's sources, mixed by weight) and the clouds used for caption previews."""
    from ..data.mixing import MixedDataset
    from ..data.pointllm import load_benchmark_gt

    root = _root(recipe)
    num_points = recipe.data.num_points or model.config.point.num_points
    parts, weights, names = [], [], []
    if recipe.data.anno and recipe.data.weight > 0:
        parts.append(_pointllm_source(recipe, model, tokenizer, num_points))
        weights.append(recipe.data.weight)
        names.append(str(root))
    mn = recipe.data.modelnet40
    if mn["weight"]:
        parts.append(modelnet40_source(recipe, model, tokenizer, num_points))
        weights.append(float(mn["weight"]))
        names.append("modelnet40")
    if len(parts) == 1 and recipe.data.length is None:
        dataset = parts[0]
    else:
        dataset = MixedDataset(parts, weights, names, length=recipe.data.length, seed=recipe.train.seed)
    previews = []
    if recipe.data.preview and recipe.train.preview_every and (root / recipe.data.preview).is_file():
        from ..data.pointllm import load_point_file

        gt = load_benchmark_gt(root / recipe.data.preview)
        step = max(1, len(gt) // max(1, recipe.train.preview_samples))  # spread over the file (categories)
        for rec in gt[::step][: recipe.train.preview_samples]:
            pts = load_point_file(rec["object_id"], root / recipe.data.points, num_points=num_points,
                                  point_file_pattern=recipe.data.point_file_pattern, seed=recipe.train.seed)
            previews.append({"object_id": rec["object_id"], "points": pts, "ground_truth": rec["ground_truth"]})
    return dataset, previews


def _pointllm_source(recipe: Recipe, model, tokenizer, num_points: int):
    from ..data.pointllm import PointLLMDataset

    root = _root(recipe)
    missing = [a for a in recipe.data.anno if not (root / a).is_file()]
    if missing:
        raise ConfigError(
            f"annotation file(s) {missing} not found under {root}; generate the procedural data with "
            "`enel data synth` or point data.root at a PointLLM data folder"
        )
    return PointLLMDataset(
        anno_paths=[root / a for a in recipe.data.anno],
        point_dir=root / recipe.data.points,
        tokenizer=tokenizer,
        template=model.config.conversation_template,
        num_point_tokens=model.config.num_point_tokens,
        num_points=num_points,
        conversation_types=recipe.data.conversation_types,
        max_length=recipe.data.max_length,
        point_file_pattern=recipe.data.point_file_pattern,
        seed=recipe.train.seed,
        encode_upfront=recipe.data.encode_upfront,
        pack_per_object=recipe.data.pack_per_object,
        augment=recipe.data.augment,
        class_names=_procedural_nouns(root) if recipe.objective.get("word_align", 0) else None,
    )


def _procedural_nouns(root: Path) -> dict[str, str] | None:
    """``{object_id: noun}`` of a procedural data folder (its ``objects.jsonl``: the noun its answers use), or
    None for other data (PointLLM's Objaverse files name no class)."""
    if not (root / "objects.jsonl").is_file():
        return None
    from ..data.procedural.generate import load_objects

    return {o["object_id"]: o["noun"] for o in load_objects(root)}


def modelnet40_source(recipe: Recipe, model, tokenizer, num_points: int):
    """The training split of ``data.modelnet40`` (its validation split carved out) as a conversation dataset."""
    from ..data.modelnet_conversations import ModelNetConversationDataset, split_by_class
    from ..data.modelnet_import import load_modelnet_archive

    mn = recipe.data.modelnet40
    if not Path(mn["path"]).is_file():
        raise ConfigError(
            f"data.modelnet40.path={mn['path']} not found: import ModelNet40 with `enel data modelnet40 --from FILE` "
            "(our npz, PointLLM's .dat or Princeton's ModelNet40.zip), point data.modelnet40.path at an archive, "
            "or train on the other sources alone with data.modelnet40.weight=0"
        )
    archive = load_modelnet_archive(mn["path"])
    train_idx, _ = split_by_class(archive.labels, mn["val_fraction"], mn["split_seed"])
    return ModelNetConversationDataset(
        archive.points, archive.labels, archive.class_names, archive.object_ids, train_idx, tokenizer,
        template=model.config.conversation_template, num_point_tokens=model.config.num_point_tokens,
        num_points=num_points, max_length=recipe.data.max_length, kinds=mn["kinds"], identify=mn["identify"],
        augment=mn["augment"], seed=recipe.train.seed, balance=bool(mn["balance"]),
    )


def training_arguments(recipe: Recipe, max_steps: int | None = None):
    from transformers import TrainingArguments

    t, o = recipe.train, recipe.optim
    return TrainingArguments(
        output_dir=t.output_dir,
        per_device_train_batch_size=t.batch_size,
        gradient_accumulation_steps=t.grad_accum,
        num_train_epochs=t.epochs,
        max_steps=max_steps if max_steps is not None else t.max_steps,
        learning_rate=o.lr_new,
        weight_decay=o.weight_decay,
        lr_scheduler_type=o.scheduler,
        warmup_steps=float(o.warmup_ratio),  # a float in [0, 1) is a ratio of the total steps
        max_grad_norm=o.max_grad_norm,
        logging_steps=t.logging_steps,
        save_strategy="steps",
        save_steps=t.save_steps,
        save_total_limit=t.save_total_limit,
        bf16=_use_bf16(t.bf16),
        activation_checkpointing=t.gradient_checkpointing,
        seed=t.seed,
        data_seed=t.seed,
        dataloader_num_workers=t.dataloader_workers,
        report_to=[],
        remove_unused_columns=False,
        fsdp=t.fsdp or None,
        fsdp_config=t.fsdp_config,
        deepspeed=t.deepspeed,
        ddp_backend=t.ddp_backend or ("gloo" if _distributed() and not torch.cuda.is_available() else None),
        ddp_find_unused_parameters=True,
        use_cpu=not torch.cuda.is_available(),
        disable_tqdm=False,
    )


def _distributed() -> bool:
    """Launched by torchrun / accelerate with more than one process."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def last_checkpoint(output_dir: str | os.PathLike) -> str | None:
    """The newest complete ``checkpoint-N`` in ``output_dir`` (incomplete ones are ignored)."""
    from .trainer import is_complete_checkpoint

    out = Path(output_dir)
    if not out.is_dir():
        return None
    steps = []
    for p in out.iterdir():
        if p.is_dir() and p.name.startswith("checkpoint-") and p.name[11:].isdigit() and is_complete_checkpoint(p):
            steps.append((int(p.name[11:]), p))
    return str(max(steps)[1]) if steps else None


@dataclass
class TrainOutcome:
    """What :func:`train` leaves: the final model folder, the step count and the trained model in memory."""

    model_dir: Path
    global_step: int
    model: object


def train(recipe: Recipe, *, resume: bool = False, max_steps: int | None = None, log=print) -> TrainOutcome:
    """Train one stage; the final model is written to ``<output_dir>/model`` (by the main process)."""
    from transformers import set_seed

    from ..model.saving import save_model
    from .trainer import BudgetClock, CaptionPreviewCallback, EnelTrainer, TimeBudgetCallback

    recipe.validate()
    if recipe.train.threads:
        torch.set_num_threads(recipe.train.threads)
    set_seed(recipe.train.seed)
    out = Path(recipe.train.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    checkpoint = last_checkpoint(out) if resume else None
    if resume and checkpoint is None:
        log(f"[enel] --resume: no complete checkpoint in {out}; starting from the beginning")
    elif checkpoint:
        log(f"[enel] resuming from {checkpoint}")

    model, tokenizer, report = build_model(recipe)
    log(f"[enel] stage {recipe.stage} ({recipe.name}): {report}")
    saved_attn = model.config._attn_implementation
    bf16_copies = (_use_bf16(recipe.train.bf16) and not torch.cuda.is_available()
                   and not (recipe.train.fsdp or recipe.train.deepspeed))
    if bf16_copies:  # the frozen weights cast to bf16 once, not every step (same maths; enel.train.speed)
        from .speed import cache_frozen_bf16

        cache_frozen_bf16(model)
    if recipe.train.attn_implementation:
        model.set_attn_implementation(recipe.train.attn_implementation)
    dataset, previews = build_datasets(recipe, model, tokenizer)
    log(f"[enel] {len(dataset)} training samples from {', '.join(recipe.data.anno)}")
    pretrained = None
    if recipe.encoder_pretrain["steps"] and recipe.stage == 1 and not recipe.init_from and not checkpoint:
        pretrained = pretrain_point_encoder(recipe, model, dataset, log)
        (out / "encoder_pretrain.json").write_text(json.dumps(pretrained, indent=1))
    prealigned = None
    if recipe.word_prealign["steps"] and not checkpoint:  # a checkpoint's weights already hold it
        prealigned = prealign_embedding(recipe, model, dataset, tokenizer, log)
        (out / "word_prealign.json").write_text(json.dumps(prealigned, indent=1))

    from ..data.collate import EnelCollator

    collator = EnelCollator.from_tokenizer(tokenizer, return_extras=False)
    args = training_arguments(recipe, max_steps=max_steps)
    callbacks = []
    clock = None  # drives the learning rate when the run is budgeted in minutes alone
    steps_wanted = max_steps if max_steps is not None and max_steps > 0 else recipe.train.max_steps
    if recipe.train.max_minutes:
        if not checkpoint:
            (out / "enel_clock.json").unlink(missing_ok=True)
        budget = BudgetClock(recipe.train.max_minutes, recipe.optim.warmup_ratio, out / "enel_clock.json")
        callbacks.append(TimeBudgetCallback(budget))
        if steps_wanted > 0:
            log(f"[enel] {steps_wanted} steps, capped at {recipe.train.max_minutes:g} min ({budget.elapsed() / 60:.1f} "
                "spent): the learning rate follows the steps; training stops early if the cap is reached first")
        else:
            clock = budget
            log(f"[enel] time budget {recipe.train.max_minutes:g} min ({budget.elapsed() / 60:.1f} spent): the "
                "learning rate follows the clock (warm-up, then cosine to 0) and training stops when the budget is "
                "spent")
    if previews and not (recipe.train.fsdp or recipe.train.deepspeed):
        callbacks.append(CaptionPreviewCallback(model, tokenizer, previews, recipe.train.preview_every,
                                                out / "previews.jsonl"))
    trainer = EnelTrainer(
        model=model,
        args=args,
        train_dataset=dataset,
        data_collator=collator,
        processing_class=tokenizer,
        callbacks=callbacks,
        lr_new=recipe.optim.lr_new,
        lr_llm=recipe.optim.lr_llm,
        point_reliance=recipe.train.point_reliance,
        clock=clock,
    )
    start = time.time()
    result = trainer.train(resume_from_checkpoint=checkpoint)
    minutes = (time.time() - start) / 60
    if bf16_copies:
        cache_frozen_bf16(model, enable=False)
    final = out / "model"
    if trainer.is_world_process_zero():
        state = dict(model.config.training_state or {})
        history = list(state.get("history", []))
        history.append({"stage": recipe.stage, "recipe": recipe.name, "steps": trainer.state.global_step,
                        "minutes": round(minutes, 2), "loss": round(float(result.training_loss), 4)})
        model.config.training_state = {
            "stage": recipe.stage,
            "steps": sum(h["steps"] for h in history),
            "history": history,
        }
        if pretrained or state.get("encoder_pretrain"):  # what the baseline's encoder saw before stage 1
            model.config.training_state["encoder_pretrain"] = state.get("encoder_pretrain") or {
                k: pretrained[k] for k in ("steps", "clouds", "loss_first", "loss_last")}
        if prealigned or state.get("word_prealign"):  # what the point embedding saw before stage 1
            model.config.training_state["word_prealign"] = state.get("word_prealign") or {
                k: prealigned[k] for k in ("steps", "samples", "vocabulary", "loss_first", "loss_last")}
        if recipe.train.attn_implementation:  # a training-time choice: the saved model keeps its own kernel
            model.set_attn_implementation(saved_attn)
        save_model(trainer.model if not hasattr(trainer.model, "module") else trainer.model.module, tokenizer, final)
        (out / "train_summary.json").write_text(json.dumps({
            "recipe": recipe.to_dict(),
            "global_step": trainer.state.global_step,
            "resumed_from": checkpoint,
            "train_loss": result.training_loss,
            "minutes": minutes,
            "seconds_per_step": minutes * 60 / max(1, trainer.state.global_step - _start_step(checkpoint)),
            "max_steps": trainer.state.max_steps,
            "stopped_early": trainer.state.global_step < trainer.state.max_steps,
            "log_history": trainer.state.log_history,
        }, indent=1, default=str))
        log(f"[enel] stage {recipe.stage} done: {trainer.state.global_step} steps in {minutes:.1f} min → {final}")
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.barrier()
    return TrainOutcome(final, trainer.state.global_step, model)


def pretrain_point_encoder(recipe: Recipe, model, dataset, log=print) -> dict:
    """Masked point modelling of the baseline's encoder on clouds of the training data, before stage 1.

    Draws ``encoder_pretrain.clouds`` samples spread evenly over ``dataset`` (their clouds, as the loaders
    prepared them) and runs :func:`enel.model.baseline.pretrain_mae`; the freezing rules keep the encoder frozen
    afterwards. Then fits the model's ``point_feature_norm`` to the encoder's tokens on the same clouds and, when
    the recipe matches the point tokens' scale, matches it again for the pre-trained encoder. Returns the settings,
    the cloud count, the losses (first, last, every step) and the share of the tokens' energy that differs between
    clouds before and after the standardisation.
    """
    from ..model.baseline import encoder_features, pretrain_mae
    from ..model.modeling_enel import point_token_spread

    settings = dict(recipe.encoder_pretrain)
    want = min(int(settings.pop("clouds")), len(dataset))
    steps = int(settings.pop("steps"))
    picks = torch.linspace(0, len(dataset) - 1, want).round().long().unique().tolist()
    clouds = [c for c in (dataset[i]["point_cloud"] for i in picks) if c is not None]
    if not clouds:
        raise ConfigError("encoder_pretrain found no point clouds in the training data")
    shape = clouds[0].shape
    clouds = torch.stack([c for c in clouds if c.shape == shape]).float()
    log(f"[enel] pre-training the point encoder (masked point modelling): {steps} steps on {len(clouds)} clouds")
    start = time.time()
    losses = pretrain_mae(model.model.point_backbone, clouds, steps=steps, seed=recipe.train.seed, log=log, **settings)
    window = max(1, min(10, len(losses) // 4))
    first, last = sum(losses[:window]) / window, sum(losses[-window:]) / window
    features = encoder_features(model.model.point_backbone, clouds)
    norm = model.model.point_feature_norm
    norm.fit(features)
    spread = {"raw": float(point_token_spread(features)), "standardized": float(point_token_spread(norm(features)))}
    if model.config.point.match_token_scale:
        model.model.match_point_token_scale(seed=recipe.train.seed)
    log(f"[enel] encoder pre-training done in {(time.time() - start) / 60:.1f} min: Chamfer-L2 {first:.5f} → {last:.5f}; "
        f"tokens differing between clouds: {spread['raw']:.4f} of their energy, {spread['standardized']:.4f} standardized")
    return {"steps": steps, "clouds": len(clouds), "loss_first": round(first, 6), "loss_last": round(last, 6),
            "minutes": round((time.time() - start) / 60, 2), "settings": settings, "token_spread": spread,
            "losses": losses}


def prealign_embedding(recipe: Recipe, model, dataset, tokenizer, log=print) -> dict:
    """The recipe's ``word_prealign``: the class-word alignment of the point embedding alone, and the colour-word
    alignment of its colour skip when it has one, on the stage's training data
    (:func:`enel.train.prealign.prealign_point_tokens`), before stage 1. Returns its summary."""
    from .prealign import class_vocabulary, colour_vocabulary, prealign_point_tokens

    p = recipe.word_prealign
    vocab = class_vocabulary(dataset.class_words() if hasattr(dataset, "class_words") else [])
    colours = colour_vocabulary(tokenizer) if getattr(model.config.point, "color_skip", False) else None
    note = ""
    if colours is not None and not colours[0].numel():
        colours, note = None, "; no colour name is one token of this tokenizer, so the colour skip is not aligned"
    elif colours is not None:
        note = f"; its colour skip over the {colours[0].numel()} colour names that are one token"
    log(f"[enel] class-word pre-alignment of the point embedding: {p['steps']} steps of {p['batch_size']} clouds, "
        f"over the {vocab.numel()} tokens of the training data's class names{note}")
    result = prealign_point_tokens(
        model, dataset, vocab, steps=int(p["steps"]), batch_size=int(p["batch_size"]), lr=float(p["lr"]),
        warmup_steps=int(p["warmup_steps"]), seed=recipe.train.seed,
        bf16=_use_bf16(recipe.train.bf16) and not torch.cuda.is_available(), colours=colours, log=log)
    colour = result["colour"]
    log(f"[enel] pre-alignment done in {result['minutes']:.1f} min: loss {result['loss_first']:.3f} → "
        f"{result['loss_last']:.3f}" + (f"; colour {colour['loss_first']:.3f} → {colour['loss_last']:.3f} on "
                                        f"{100 * colour['labelled']:.0f} % of the tokens" if colour else ""))
    return result


def _start_step(checkpoint: str | None) -> int:
    if not checkpoint:
        return 0
    try:
        return int(Path(checkpoint).name.split("-")[-1])
    except ValueError:
        return 0

