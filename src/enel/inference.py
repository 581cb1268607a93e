"""Asking an ENEL model about point clouds: :func:`prepare_cloud` (a file or an array → the model's input) and
the :class:`Assistant` (a loaded model that answers questions about clouds).

Used by the CLI (``enel caption / classify / ask / chat``), the evaluation and the demo. Saving and loading a
model folder live in :mod:`enel.model.saving`.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass, field

import numpy as np
import torch

from .errors import PointCloudError
from .model.saving import load_model

__all__ = [
    "GenerationSettings",
    "prepare_cloud",
    "Assistant",
]

@dataclass
class GenerationSettings:
    """Decoding settings; greedy by default so answers are reproducible (PointLLM sampled, unseeded)."""

    max_new_tokens: int = 64
    do_sample: bool = False
    temperature: float = 1.0
    top_k: int = 50
    top_p: float = 0.95
    num_beams: int = 1
    seed: int = 0
    repetition_penalty: float = 1.0

    def to_kwargs(self) -> dict:
        kw = dict(max_new_tokens=self.max_new_tokens, num_beams=self.num_beams, do_sample=self.do_sample,
                  repetition_penalty=self.repetition_penalty)
        if self.do_sample:
            kw.update(temperature=self.temperature, top_k=self.top_k, top_p=self.top_p)
        return kw


def prepare_cloud(source, num_points: int, *, seed: int = 0, resample: str = "fps", up: str = "z"):
    """A file path or an ``(N, 3|6)`` array → ``(num_points, 6)`` float32, normalised as PointLLM does.

    Steps: read (:func:`~enel.points.io.load_point_cloud` / :func:`~enel.points.io.from_array`), turn to the
    canonical z-up frame (:func:`~enel.points.transforms.to_z_up`; ``up="y"`` for y-up files such as
    PointLLM's Objaverse ``.npy``), resample to ``num_points``, ``pc_norm`` the xyz.

    Returns:
        ``(points, cloud)`` — the model input and the loaded :class:`~enel.points.io.PointCloud` (for notes;
        as read, in the file's own frame).
    """
    from .points.io import from_array, load_point_cloud
    from .points.transforms import model_input, to_z_up

    cloud = load_point_cloud(source, seed=seed) if isinstance(source, (str, os.PathLike)) else from_array(
        np.asarray(source)
    )
    if num_points < 1:
        raise PointCloudError(f"--points must be positive, got {num_points}")
    return model_input(to_z_up(cloud.as_array(), up), num_points, method=resample, seed=seed), cloud


@dataclass
class Assistant:
    """A loaded model and tokenizer with the prompt format of its config."""

    model: object
    tokenizer: object
    settings: GenerationSettings = field(default_factory=GenerationSettings)

    @classmethod
    def from_folder(cls, path, **settings) -> "Assistant":
        model, tok = load_model(path)
        return cls(model, tok, GenerationSettings(**settings))

    @property
    def num_points(self) -> int:
        return self.model.config.point.num_points

    @property
    def template(self) -> str:
        return self.model.config.conversation_template

    @property
    def trained(self) -> bool:
        return self.model.config.is_trained

    def metadata(self) -> dict:
        cfg = self.model.config
        meta = {
            "backbone": cfg.backbone,
            "training_state": cfg.training_state,
            "trained": cfg.is_trained,
            "settings": self.settings.__dict__,
        }
        if not cfg.is_trained:
            meta["warning"] = "untrained model: its text is not meaningful until it is trained (enel quickstart)"
        return meta

    def _encode(self, questions: list[str], histories: list[list[tuple[str, str]]] | None):
        from .data.conversation import build_prompt, tokenize_prompts

        histories = histories or [[] for _ in questions]
        prompts = [
            build_prompt(self.tokenizer, q, template=self.template,
                         num_point_tokens=self.model.config.num_point_tokens, history=h)
            for q, h in zip(questions, histories)
        ]
        return tokenize_prompts(self.tokenizer, prompts, self.template)

    def _generate_kwargs(self, enc, clouds: np.ndarray) -> dict:
        device = next(self.model.parameters()).device
        return dict(
            input_ids=enc["input_ids"].to(device),
            attention_mask=enc["attention_mask"].to(device),
            point_clouds=torch.from_numpy(np.ascontiguousarray(clouds)).to(device),
            pad_token_id=self.tokenizer.pad_token_id,
            eos_token_id=self.tokenizer.eos_token_id,
            **self.settings.to_kwargs(),
        )

    @torch.no_grad()
    def ask(self, clouds: np.ndarray, questions: list[str], histories=None) -> list[str]:
        """Answer one question per cloud: ``clouds (B, N, 6)``, ``questions`` of length B."""
        if len(questions) != len(clouds):
            raise ValueError(f"{len(clouds)} clouds but {len(questions)} questions")
        enc = self._encode(questions, histories)
        torch.manual_seed(self.settings.seed)
        out = self.model.generate(**self._generate_kwargs(enc, clouds))
        new = out[:, enc["input_ids"].shape[1]:]
        return [t.strip() for t in self.tokenizer.batch_decode(new, skip_special_tokens=True)]

    def stream(self, cloud: np.ndarray, question: str, history=None, *, stopping_criteria=None):
        """Yield the answer to one question piece by piece (``TextIteratorStreamer``).

        Args:
            stopping_criteria: optional ``transformers`` stopping criteria (a list) added to the length limit,
                e.g. a wall-clock deadline or a cancel flag (the demo passes one).

        Closing the generator early (a consumer that stops reading) waits for the generation thread to end, so
        a caller that serialises access to the model never has two generations running: pass a criterion that
        stops it promptly when that matters.
        """
        from transformers import StoppingCriteriaList, TextIteratorStreamer

        enc = self._encode([question], [history or []])
        streamer = TextIteratorStreamer(self.tokenizer, skip_prompt=True, skip_special_tokens=True)
        kwargs = self._generate_kwargs(enc, cloud[None])
        kwargs["streamer"] = streamer
        if stopping_criteria:
            kwargs["stopping_criteria"] = StoppingCriteriaList(list(stopping_criteria))
        errors: list[BaseException] = []

        def run():
            try:
                torch.manual_seed(self.settings.seed)
                with torch.no_grad():
                    self.model.generate(**kwargs)
            except BaseException as exc:  # surfaced to the caller below
                errors.append(exc)
                streamer.end()

        thread = threading.Thread(target=run, daemon=True)
        thread.start()
        try:
            yield from streamer
        finally:
            thread.join()
        if errors:
            raise errors[0]
