"""The chat layout every chat-reading stage shares (training on chats, sampling, judging, explaining).

Torch-free, so the modules the rule files import can use it without pulling torch into every parse.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # transformers is imported by whoever loads a tokenizer; this is only an annotation
    from transformers import PreTrainedTokenizerBase

Message = dict[str, str]
"""One chat message: ``{"role": "system" | "user" | "assistant", "content": ...}``."""


def chat_prompt(tokenizer: PreTrainedTokenizerBase, messages: Sequence[Message]) -> str:
    """The text the model continues: its chat template, or a plain ``Role: text`` layout if it has none.

    Tokenizers without a template (base models, the test fixtures) still get a usable prompt ending in
    ``Assistant:``, so `complete` works with any causal LM.
    """
    if tokenizer.chat_template:
        return tokenizer.apply_chat_template(list(messages), tokenize=False, add_generation_prompt=True)
    lines = [f"{m['role'].capitalize()}: {m['content']}" for m in messages]
    return "\n".join([*lines, "Assistant:"])
