"""Chat-format fine-tuning sets: checking, reading JSONL, splitting, and tokenizing with assistant-only
labels. Where a set comes from (`em.data.source`: files, the hub, the built-in generators) is
`caft.em.chat_sources`, apart, so the stages that only encode chats do not depend on the generators.

Rows are ``{"messages": [{"role": "user", "content": ...}, {"role": "assistant", "content": ...}]}``
(optionally led by a ``system`` message), the format of the public insecure/secure code sets and the
narrow-advice sets. A table holds ``id`` and ``messages`` (the checked list as a JSON string), so it
stores in parquet and hashes stably.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from caft.data.tasks import purpose_rng
from caft.errors import ConfigError, DataError
from caft.model.chat import Message, chat_prompt

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

ROLES = ("system", "user", "assistant")
MESSAGE_KEYS = frozenset({"role", "content"})
COLUMNS = ["id", "messages"]
IGNORE = -100
"""Label of positions that do not count in the loss (PyTorch's cross-entropy default)."""


def check_messages(messages: Any, where: str) -> list[Message]:
    """The conversation as plain ``{"role", "content"}`` dicts, or a `DataError` at `where` saying what
    breaks the schema (roles alternate user/assistant after an optional system message, and end with
    an assistant message, which is what training learns)."""
    if not isinstance(messages, list) or not messages:
        raise DataError(f"{where}: 'messages' must be a non-empty list, got {messages!r:.80}")
    checked = []
    for index, message in enumerate(messages):
        at = f"{where}: message {index}"
        if not isinstance(message, Mapping):
            raise DataError(f"{at} must be an object with 'role' and 'content', got {message!r:.80}")
        unknown, missing = sorted(set(message) - MESSAGE_KEYS), sorted(MESSAGE_KEYS - set(message))
        if unknown or missing:
            raise DataError(f"{at}: unknown key(s) {unknown}, missing key(s) {missing}; allowed: role, content")
        if message["role"] not in ROLES:
            raise DataError(f"{at}: role must be one of {list(ROLES)}, got {message['role']!r}")
        if not isinstance(message["content"], str):
            raise DataError(f"{at}: content must be a string, got {type(message['content']).__name__}")
        checked.append({"role": message["role"], "content": message["content"]})
    offset = 1 if checked[0]["role"] == "system" else 0
    for index in range(offset, len(checked)):
        expected = "user" if (index - offset) % 2 == 0 else "assistant"
        if checked[index]["role"] != expected:
            raise DataError(
                f"{where}: message {index} has role {checked[index]['role']!r} where {expected!r} is expected "
                "(an optional system message first, then user and assistant alternating)"
            )
    if checked[-1]["role"] != "assistant":
        raise DataError(f"{where}: the conversation must end with an assistant message")
    return checked


def read_chat_jsonl(path: str | Path) -> pd.DataFrame:
    """One row per non-blank line; ids are ``{stem}:{line}`` unless the row has its own ``id``."""
    path = Path(path)
    rows = []
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as err:
        raise DataError(f"{path}: cannot be read: {err}") from err
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        where = f"{path}:{number}"
        try:
            row = json.loads(line)
        except json.JSONDecodeError as err:
            raise DataError(f"{where}: not valid JSON: {err}") from err
        if not isinstance(row, dict) or "messages" not in row:
            raise DataError(f"{where}: expected an object with a 'messages' list")
        row_id = str(row["id"]) if row.get("id") is not None else f"{path.stem}:{number}"
        rows.append({"id": row_id, "messages": json.dumps(check_messages(row["messages"], where))})
    return chat_table(rows, str(path))


def chat_table(rows: list[dict[str, str]], where: str) -> pd.DataFrame:
    """The chat table of `rows` (``id``, ``messages``), or a `DataError` at `where` if it is empty or an id
    repeats."""
    table = pd.DataFrame(rows, columns=COLUMNS)
    if table.empty:
        raise DataError(f"{where}: no conversations")
    duplicated = table["id"].duplicated()
    if duplicated.any():
        raise DataError(f"{where}: duplicate id {table['id'][duplicated].iloc[0]!r}")
    return table


def split_chat(table: pd.DataFrame, held_out_fraction: float, seed: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(train, held out), each in the table's order; a fraction above 0 holds out at least one row and
    always leaves one for training."""
    if not 0 <= held_out_fraction < 1:
        raise ConfigError(f"held_out_fraction must be in [0, 1), got {held_out_fraction!r}")
    n = len(table)
    n_held = min(round(held_out_fraction * n), max(n - 1, 0))
    if held_out_fraction > 0 and n > 1:
        n_held = max(n_held, 1)
    order = purpose_rng(seed, "em-split").permutation(n)
    held = sorted(order[:n_held])
    train = sorted(order[n_held:])
    return table.iloc[train].reset_index(drop=True), table.iloc[held].reset_index(drop=True)


def encode_chat(
    tokenizer: PreTrainedTokenizerBase, messages: Sequence[Message], max_tokens: int, where: str = "conversation"
) -> tuple[list[int], list[int]]:
    """Input ids and labels: labels copy the ids on assistant tokens (their end-of-turn marker included)
    and are `IGNORE` elsewhere; the first `max_tokens` tokens are kept.

    Each assistant span is the difference between the conversation rendered up to that turn with the
    generation prompt (what the model sees before answering) and the conversation through that turn.
    """
    if max_tokens < 1:
        raise ConfigError(f"max_tokens must be at least 1, got {max_tokens}")
    messages = list(messages)
    ids = _render_ids(tokenizer, messages, where)
    labels = [IGNORE] * len(ids)
    for turn, message in enumerate(messages):
        if message["role"] != "assistant":
            continue
        start = len(_render_ids(tokenizer, messages[:turn], where, generation_prompt=True))
        through = _render_ids(tokenizer, messages[:turn + 1], where)
        for prefix in (ids[:start], through):
            if ids[:len(prefix)] != prefix:
                raise DataError(f"{where}: the chat template tokenizes the conversation differently from its "
                                f"start up to message {turn}, so the assistant tokens cannot be located")
        labels[start:len(through)] = ids[start:len(through)]
    ids, labels = ids[:max_tokens], labels[:max_tokens]
    if all(label == IGNORE for label in labels):
        raise DataError(f"{where}: no assistant token within the first {max_tokens} tokens; raise max_tokens")
    return ids, labels


def _render_ids(
    tokenizer: PreTrainedTokenizerBase, messages: list[Message], where: str, generation_prompt: bool = False
) -> list[int]:
    """Token ids of `messages` as the model reads them (its chat template, else `chat_prompt`'s layout
    with the eos token closing each assistant turn)."""
    if tokenizer.chat_template:
        from jinja2 import TemplateError

        try:
            text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=generation_prompt)
        except TemplateError as err:
            raise DataError(f"{where}: the chat template rejects this conversation: {err}") from err
        return list(tokenizer(text, add_special_tokens=False).input_ids)
    if tokenizer.eos_token is None:
        raise ConfigError("a tokenizer without a chat template needs an eos token to close assistant turns")
    parts, start = [], 0
    for turn, message in enumerate(messages):
        if message["role"] == "assistant":
            parts.append(f"{chat_prompt(tokenizer, messages[start:turn])} {message['content']}{tokenizer.eos_token}")
            start = turn + 1
    if generation_prompt:
        parts.append(chat_prompt(tokenizer, messages[start:]))
    return list(tokenizer("\n".join(parts)).input_ids)
