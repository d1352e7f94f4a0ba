"""The prompt-extension interface every backend (DashScope, local Qwen) implements.

A backend turns (system prompt, user prompt[, image]) into an answer; choosing the system prompt, cleaning the
answer and falling back to the original prompt on failure are common and live here, so backends stay small.
"""
from __future__ import annotations

import logging
import random
from dataclasses import dataclass, field
from typing import Optional

log = logging.getLogger("wan")

__all__ = ["PromptOutput", "PromptExpander"]


@dataclass
class PromptOutput:
    """One extension attempt. ``prompt`` is the extended prompt on success and the original one on failure;
    ``message`` says why it failed (never contains secrets)."""
    status: bool
    prompt: str
    seed: int = -1
    system_prompt: str = ""
    message: str = ""
    extras: dict = field(default_factory=dict)


class PromptExpander:
    """Base class. Subclasses implement :meth:`complete`; callers use :meth:`__call__`.

    Args:
        task_kind: "t2v" | "i2v" | "ti2v" (which system prompt to use).
        is_vl: the backend accepts an image.
    """

    #: the answers to image requests get their line breaks escaped (the official DashScope vision-language call)
    escape_newlines_with_image = False

    def __init__(self, task_kind: str, is_vl: bool = False):
        if task_kind not in ("t2v", "i2v", "ti2v"):
            raise ValueError(f"prompt extension: unknown task kind {task_kind!r}; expected t2v, i2v or ti2v")
        self.task_kind = task_kind
        self.is_vl = is_vl

    def redact(self, text: str) -> str:
        """``text`` with any secret of the backend removed (failure messages are logged and returned)."""
        return text

    def complete(self, system_prompt: str, prompt: str, *, image=None, seed: int = -1) -> str:
        """The model's raw answer to ``prompt`` under ``system_prompt`` (``image``: a PIL image or None).
        Raises on failure; :meth:`__call__` turns the exception into the fallback."""
        raise NotImplementedError

    def __call__(self, prompt: str, *, tar_lang: str = "zh", image=None, seed: int = -1,
                 system_prompt: Optional[str] = None) -> PromptOutput:
        """Extend ``prompt``; on any failure return the original prompt with status False and the reason."""
        from .system_prompts import clean_answer, pick_system_prompt

        if image is not None and not self.is_vl:
            raise ValueError(f"{type(self).__name__} with a text-only model got an image; use a vision-language "
                             f"model (e.g. qwen-vl-max, QwenVL2.5_7B) for image-conditioned tasks")
        system = system_prompt or pick_system_prompt(self.task_kind, tar_lang, with_image=image is not None,
                                                     empty_prompt=not prompt.strip())
        if seed < 0:  # the official draws one per call; 31 bits, which every backend accepts
            seed = random.randint(0, 2 ** 31 - 1)
        try:
            answer = self.complete(system, prompt, image=image, seed=seed)
            extended = clean_answer(answer, escape_newlines=self.escape_newlines_with_image and image is not None)
            if not extended:
                raise RuntimeError("the model answered with an empty prompt")
        except Exception as e:  # noqa: BLE001 - the official behaviour: fall back to the user's prompt
            reason = self.redact(f"{type(e).__name__}: {e}")
            log.warning("prompt extension failed (%s); using the original prompt", reason)
            return PromptOutput(False, prompt, seed, system, reason)
        return PromptOutput(True, extended, seed, system, "")
