"""Prompt extension: rewrite a short user prompt into a detailed one with a language model before generating.

Backends share :class:`PromptExpander` (system prompt choice, answer cleaning, fallback to the user's prompt):
``wan.prompt.dashscope`` (the DashScope API through its SDK) and ``wan.prompt.qwen`` (local Qwen2.5 /
Qwen2.5-VL as MindSpore Cells). Nothing heavy is imported here: the SDK and the local models load on use.
"""
from .base import PromptExpander, PromptOutput
from .dashscope import DashScopePromptExpander
from .system_prompts import clean_answer, pick_system_prompt

__all__ = ["PromptExpander", "PromptOutput", "DashScopePromptExpander", "pick_system_prompt", "clean_answer"]
