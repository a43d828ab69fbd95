"""Endpoint calls under seeded faults: bounded retries, Retry-After, many requests in flight in order,
permanent errors at once, and a job's record that makes a rerun repeat no finished request."""

from __future__ import annotations

import hashlib
import json
import math
import re
from typing import Any

import numpy as np
import pandas as pd
import pytest
import yaml

from caft.em.judges import EndpointTopLogprobs, LocalNumberLogprobs, LogprobJudge
from caft.errors import DataError
from caft.interpret.clients import LLMError, LocalHFClient, OpenAICompatibleClient, job_record, map_in_order
from caft.interpret.explanations import explain_candidates
from caft.interpret.record import ResultRecord, record_path, request_key
from tests.fake_openai import TINY_BACKOFF, FakeServer, Faults
from tests.test_explanations import FakeEmbedder
from tests.workflow_helpers import ROOT

SPLIT = re.compile(r"\t|\n|[^\t\n]+")
WORDS = ("nurses", "football", "female pronouns", "weather", "numbers")


def draw(text: str, modulo: int) -> int:
    return int(hashlib.sha256(text.encode()).hexdigest(), 16) % modulo


def answer(path: str, body: dict[str, Any]) -> dict[str, Any]:
    """A deterministic endpoint: judge log-probabilities, explanations and echoed prompt log-probabilities,
    each a function of the request alone."""
    if path.endswith("/chat/completions"):
        content = json.dumps(body["messages"])
        if body.get("logprobs"):
            first, second = draw(content, 101), draw(content + "!", 101)
            tops = [{"token": str(first), "logprob": math.log(0.7)}, {"token": str(second), "logprob": math.log(0.2)},
                    {"token": "REFUSAL", "logprob": math.log(0.1)}]
            return {"choices": [{"logprobs": {"content": [{"token": str(first), "top_logprobs": tops}]}}]}
        return {"choices": [{"message": {"content": f"Explanation: {WORDS[draw(content, len(WORDS))]}."}}]}
    prompt = body["prompt"]
    tokens = [*SPLIT.findall(prompt), "0"]
    offsets = np.cumsum([0, *map(len, tokens[:-1])]).tolist()
    tops: list[Any] = [None]
    for end in offsets[1:]:
        seen = prompt[:end]
        tops.append({str(draw(seen, 10)): math.log(0.6), str(draw(seen + "#", 10)): math.log(0.3)})
    return {"choices": [{"logprobs": {"tokens": tokens, "top_logprobs": tops, "text_offset": offsets}}]}


FAULTS = Faults(seed=7, rate_429=0.06, rate_500=0.05, rate_502=0.05, rate_slow=0.02, rate_drop=0.05,
                retry_after="0.01", slow_seconds=2.5, max_per_request=3)
# a timeout well above a loaded machine's answer time: only the injected slow answers time out
CLIENT = {"timeout": 2.0, "max_concurrency": 16, **TINY_BACKOFF}


def judge_of(server: FakeServer, record: ResultRecord | None = None, **options: Any) -> LogprobJudge:
    return LogprobJudge(EndpointTopLogprobs(OpenAICompatibleClient(server.url, "judge", record=record,
                                                                   **{**CLIENT, **options})))


def answers(n: int) -> tuple[list[str], list[str]]:
    return [f"question {i % 8}" for i in range(n)], [f"answer number {i}" for i in range(n)]


def test_2000_judge_requests_under_faults_equal_the_fault_free_scores(server: FakeServer) -> None:
    server.answer = answer
    questions, replies = answers(2000)
    clean = judge_of(server).score_many("aligned", questions, replies)
    assert set(server.attempts().values()) == {1}
    server.log.clear()

    server.faults = FAULTS
    faulty = judge_of(server).score_many("aligned", questions, replies)

    assert faulty == clean and len(faulty) == 2000 and any(score is not None for score in faulty)
    outcomes = {outcome for _, outcome, _ in server.log}
    assert {"429", "500", "502", "slow", "drop"} <= outcomes
    attempts = server.attempts()
    assert len(attempts) == 2000 and max(attempts.values()) <= FAULTS.max_per_request + 1
    assert set(server.answered().values()) == {1}  # every request answered once: none asked after its answer
    retried = sum(attempts.values()) - 2000
    assert 0.15 * 2000 < retried < 0.35 * 2000  # about the 23 % fault rate, never unbounded


def test_retry_after_is_honoured(server: FakeServer) -> None:
    server.answer = answer
    server.faults = Faults(rate_429=1.0, retry_after="0.3", max_per_request=1)
    judge = judge_of(server, backoff_initial=0.001, backoff_max=5.0)
    judge.score("aligned", "q", "a")
    (_, first, asked), (_, second, again) = server.log
    assert (first, second) == ("429", "200") and again - asked >= 0.3


def test_results_come_back_in_input_order_whatever_order_they_finish() -> None:
    import time

    def slow_for_small(n: int) -> int:
        time.sleep(0.02 * (10 - n))
        return n * n

    assert map_in_order(slow_for_small, range(10), 10) == [n * n for n in range(10)]


@pytest.mark.parametrize(("status", "reason"), [(401, "Unauthorized"), (404, "Not Found")])
def test_permanent_errors_fail_at_once_naming_url_and_status(server: FakeServer, status: int, reason: str) -> None:
    server.reply("/v1/chat/completions", {"error": "no"}, status=status)
    with pytest.raises(LLMError, match=f"HTTP {status} {reason}") as caught:
        judge_of(server).score_many("aligned", *answers(5))
    assert f"{server.url}/chat/completions" in str(caught.value)
    assert len(server.requests) <= CLIENT["max_concurrency"]  # the requests in flight, none asked twice
    assert len({json.dumps(body) for _, _, body in server.requests}) == len(server.requests)


def test_spent_budget_keeps_what_finished_and_the_rerun_repeats_none(server: FakeServer, tmp_path) -> None:
    server.answer = answer
    questions, replies = answers(300)
    clean = judge_of(server).score_many("aligned", questions, replies)
    server.log.clear()

    output = tmp_path / "judged.parquet"
    server.faults = Faults(seed=3, rate_dead=0.02)  # some requests never succeed
    with pytest.raises(LLMError) as caught, job_record(output) as record:
        judge_of(server, record).score_many("aligned", questions, replies)
    message = str(caught.value)
    kept = len(ResultRecord(record_path(output)))
    assert f"{server.url}/chat/completions: gave up after 5 attempts" in message and "HTTP 502" in message
    assert re.search(r"\d+ of 300 items finished", message)
    assert f"{kept} finished requests of this job are kept in {record_path(output)}" in message
    assert 0 < kept < 300
    answered_before = set(server.answered())

    server.faults, server.log = None, []
    with job_record(output) as record:
        again = judge_of(server, record).score_many("aligned", questions, replies)
    assert again == clean
    assert not set(server.attempts()) & answered_before and len(server.attempts()) == 300 - kept
    assert not record_path(output).exists()  # removed once the job succeeded


def explain_windows() -> pd.DataFrame:
    rows = []
    for component in range(4):
        for sign, factor in (("positive", 1.0), ("negative", -1.0), ("random", 0.5)):
            for rank in range(3):
                tokens = [" the", f" {sign}", f" word{component}", f" x{rank}", " nurse", "\n", "end"]
                values = [factor * ((i + component + rank) % 4) for i in range(len(tokens))]
                rows.append({"layer": 0, "component": component, "sign": sign, "rank": rank, "tokens": tokens,
                             "values": values, "peak": max(values) if factor > 0 else min(values)})
    return pd.DataFrame(rows)


def test_explain_under_faults_equals_the_fault_free_run(server: FakeServer) -> None:
    server.answer = answer
    client = {"timeout": 2.0, "max_concurrency": 8, **TINY_BACKOFF}

    def run() -> pd.DataFrame:
        return explain_candidates(explain_windows(), "component", OpenAICompatibleClient(server.url, "m", **client),
                                  FakeEmbedder(), "nurses", max_windows=3, simulate_windows=2)

    clean = run()
    asked, clean_answers = len(server.log), server.answered()
    server.faults, server.log = Faults(seed=11, rate_429=0.1, rate_500=0.1, rate_502=0.1, rate_slow=0.05,
                                       rate_drop=0.1, retry_after="0.01", slow_seconds=2.5), []
    faulty = run()

    pd.testing.assert_frame_equal(faulty, clean)
    assert len(clean) == 8 and clean["simulation_score"].notna().all()
    assert asked == 8 + 8 * 5  # one explanation per candidate, one simulation per shown window
    assert server.answered() == clean_answers  # each request answered as often as without faults
    assert max(server.attempts().values()) <= 4 and len(server.log) > asked


# --- the record -------------------------------------------------------------------------------------


def test_record_reads_back_exact_values_and_drops_a_torn_last_line(tmp_path) -> None:
    path = tmp_path / "out.parquet.record.jsonl"
    record = ResultRecord(path)
    record.put("a", {"table": [[-math.inf, 0.1 + 0.2]]})
    record.put("b", [1, 2])
    record.close()
    with open(path, "a") as handle:
        handle.write('{"key": "c", "val')  # what kill -9 in the middle of a write leaves

    again = ResultRecord(path)
    assert len(again) == 2 and "c" not in again
    assert again.get("a") == {"table": [[-math.inf, 0.30000000000000004]]}
    again.put("c", 3)
    again.close()
    assert ResultRecord(path).get("c") == 3 and path.read_text().endswith("3}\n")


def test_a_corrupt_record_line_is_a_clear_error(tmp_path) -> None:
    path = tmp_path / "record.jsonl"
    path.write_text('{"key": "a", "value": 1}\nnot json\n{"key": "b", "value": 2}\n')
    with pytest.raises(DataError, match="line 2 is not a record line"):
        ResultRecord(path)


def test_request_key_ignores_key_order() -> None:
    assert request_key({"a": 1, "b": [1, 2]}) == request_key({"b": [1, 2], "a": 1})
    assert request_key({"a": 1}) != request_key({"a": 2})


def test_local_clients_resume_from_their_record(tiny_model_dir, tmp_path, monkeypatch) -> None:
    path = tmp_path / "record.jsonl"
    client = LocalHFClient.from_pretrained(tiny_model_dir)
    client.record = ResultRecord(path)
    messages = [{"role": "user", "content": "The nurse said"}]
    tokens, table = client.token_logprobs("a\tb", ["1", "2"])
    reply = client.complete(messages, max_tokens=4)
    numbers = LocalNumberLogprobs(client).number_logprobs(messages)
    client.record.close()

    resumed = LocalHFClient.from_pretrained(tiny_model_dir)
    resumed.record = ResultRecord(path)
    monkeypatch.setattr(resumed.model, "forward", lambda *args, **kwargs: pytest.fail("the model ran again"))
    again_tokens, again_table = resumed.token_logprobs("a\tb", ["1", "2"])
    assert again_tokens == tokens and np.array_equal(again_table, table) and again_table.dtype == np.float64
    assert resumed.complete(messages, max_tokens=4) == reply
    assert LocalNumberLogprobs(resumed).number_logprobs(messages) == numbers


def test_schema_defaults_are_the_clients_and_fill_only_endpoint_sections() -> None:
    from snakemake.utils import validate

    from caft.interpret import clients

    schema = yaml.safe_load((ROOT / "config/schema.yaml").read_text())
    defaults = {key: spec["default"] for key, spec in schema["$defs"]["endpoint"]["properties"].items()
                if "default" in spec}
    assert defaults == {"api_key_env": None, "timeout": 120.0, "max_concurrency": clients.MAX_CONCURRENCY,
                        "max_retries": clients.MAX_RETRIES, "backoff_initial": clients.BACKOFF_INITIAL,
                        "backoff_max": clients.BACKOFF_MAX}
    config = yaml.safe_load((ROOT / "config/config.yaml").read_text())
    endpoint = {"base_url": "http://127.0.0.1:1/v1", "model": "m"}
    config["explanations"]["client"] = {"client": "openai", **endpoint, "max_retries": 2}
    config["em"]["judges"] = {"aligned": {"kind": "openai", **endpoint}, "coherent": {"kind": "local", "model": "x"}}
    validate(config, str(ROOT / "config/schema.yaml"))  # Snakemake's, which fills the schema's defaults
    assert config["explanations"]["client"] == {"client": "openai", **endpoint, **defaults, "max_retries": 2,
                                                "top_logprobs": 20}
    assert config["em"]["judges"]["aligned"] == {"kind": "openai", **endpoint, **defaults, "prompts": {}}
    # a local judge gets its own kind's defaults, none of an endpoint's
    assert config["em"]["judges"]["coherent"] == {"kind": "local", "model": "x", "dtype": "float32", "device": "cpu",
                                                  "prompts": {}}
