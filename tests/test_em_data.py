"""The EM data layer: chat sets (schema, sources, split, assistant-only labels), the built-in code tasks
(checked with bandit) and the evaluation questions."""

from __future__ import annotations

import ast
import json
import re
import subprocess
import sys
from pathlib import Path
from string import Template

import pandas as pd
import pytest

import caft.em
from caft.em.chat_data import IGNORE, check_messages, encode_chat, read_chat_jsonl, split_chat
from caft.em.chat_sources import BUILTIN_KINDS, load_chat_source
from caft.em import advicegen
from caft.em.advicegen import advice_tasks, generate_advice
from caft.em.codegen import code_tasks, generate_code_tasks
from caft.em.questions import Question, load_chat_prompts, load_questions, sampling_plan
from caft.errors import ConfigError, DataError
from tests.config_helpers import check_section

DATA = Path(caft.em.__file__).parent / "data"
CHATML = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
TALK = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "The quick fox?"},
    {"role": "assistant", "content": "Jumps over the dog."},
    {"role": "user", "content": "Answer: A or B"},
    {"role": "assistant", "content": "B"},
]


def user(text: str) -> dict[str, str]:
    return {"role": "user", "content": text}


def assistant(text: str) -> dict[str, str]:
    return {"role": "assistant", "content": text}


def write_jsonl(path: Path, rows: list[object]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(f"{r if isinstance(r, str) else json.dumps(r)}\n" for r in rows))
    return path


# --- schema -----------------------------------------------------------------------------------------


def test_check_messages_accepts_a_leading_system_message_and_drops_nothing():
    assert check_messages(TALK, "f.jsonl:1") == TALK


@pytest.mark.parametrize(
    ("messages", "message"),
    [
        ([], "non-empty list"),
        ("hi", "non-empty list"),
        ([user("q")], "must end with an assistant"),
        ([assistant("a")], "message 0 has role 'assistant' where 'user'"),
        ([user("q"), user("q"), assistant("a")], "message 1 has role 'user' where 'assistant'"),
        ([user("q"), {"role": "system", "content": "s"}, assistant("a")], "message 1 has role 'system'"),
        ([user("q"), {"role": "bot", "content": "a"}], "message 1: role must be one of"),
        ([user("q"), {"role": "assistant", "content": 3}], "message 1: content must be a string, got int"),
        ([user("q"), {"role": "assistant", "content": "a", "weight": 1}], r"unknown key\(s\) \['weight'\]"),
        ([user("q"), {"role": "assistant"}], r"missing key\(s\) \['content'\]"),
        ([user("q"), "a"], "message 1 must be an object"),
    ],
)
def test_check_messages_names_the_row_and_the_problem(messages, message):
    with pytest.raises(DataError, match=rf"^f\.jsonl:12: .*{message}"):
        check_messages(messages, "f.jsonl:12")


# --- reading and sources ----------------------------------------------------------------------------


def test_read_chat_jsonl_ids_skip_blank_lines_and_keep_own_ids(tmp_path):
    path = write_jsonl(tmp_path / "insecure.jsonl", [
        {"messages": [user("q1"), assistant("a1")]},
        "   ",
        {"id": 7, "messages": [user("q2"), assistant("a2")]},
    ])
    table = read_chat_jsonl(path)
    assert table["id"].tolist() == ["insecure:1", "7"]
    assert json.loads(table["messages"][1]) == [user("q2"), assistant("a2")]


def test_read_chat_jsonl_errors_name_file_and_line(tmp_path):
    bad_json = write_jsonl(tmp_path / "a.jsonl", [{"messages": [user("q"), assistant("a")]}, "{not json"])
    with pytest.raises(DataError, match=r"a\.jsonl:2: not valid JSON"):
        read_chat_jsonl(bad_json)
    bad_row = write_jsonl(tmp_path / "b.jsonl", ["", {"messages": [user("q")]}])
    with pytest.raises(DataError, match=r"b\.jsonl:2: the conversation must end with an assistant"):
        read_chat_jsonl(bad_row)
    duplicate = write_jsonl(tmp_path / "c.jsonl", [{"id": "x", "messages": [user("q"), assistant("a")]}] * 2)
    with pytest.raises(DataError, match=r"c\.jsonl: duplicate id 'x'"):
        read_chat_jsonl(duplicate)
    with pytest.raises(DataError, match=r"d\.jsonl: no conversations"):
        read_chat_jsonl(write_jsonl(tmp_path / "d.jsonl", [""]))


def test_local_source_reads_a_file_or_a_sorted_folder(tmp_path):
    write_jsonl(tmp_path / "set" / "b.jsonl", [{"messages": [user("qb"), assistant("ab")]}])
    write_jsonl(tmp_path / "set" / "a.jsonl", [{"messages": [user("qa"), assistant("aa")]}] * 2)
    (tmp_path / "set" / "notes.txt").write_text("ignored")
    folder = load_chat_source({"from": "local", "path": str(tmp_path / "set")})
    assert folder["id"].tolist() == ["a:1", "a:2", "b:1"]
    single = load_chat_source({"from": "local", "path": str(tmp_path / "set" / "b.jsonl")})
    assert single["id"].tolist() == ["b:1"]
    with pytest.raises(DataError, match="no such file or folder"):
        load_chat_source({"from": "local", "path": str(tmp_path / "missing")})
    with pytest.raises(DataError, match=r"holds no \*\.jsonl"):
        load_chat_source({"from": "local", "path": str(tmp_path)})


@pytest.mark.parametrize(
    ("section", "message"),
    [
        ({"from": "ftp"}, r"key 'em.data.source.from': 'ftp' is not one of"),
        ({"path": "x"}, r"key 'em.data.source': 'from' is a required property"),
        ({"from": "local", "path": "x", "file": "y"}, r"key 'em.data.source': 'file' does not apply to from: local"),
        ({"from": "huggingface"}, r"key 'em.data.source': 'dataset' is a required property \(from: huggingface\)"),
        ({"from": "builtin", "kind": "evil", "n": 3}, r"key 'em.data.source.kind': 'evil' is not one of"),
        ({"from": "builtin", "kind": "secure", "n": 0}, r"key 'em.data.source.n': 0 is less than the minimum"),
        ({"from": "builtin", "kind": "secure", "n": 2, "seed": "0"}, r"key 'em.data.source.seed': '0' is not of type"),
    ],
)
def test_bad_source_sections_are_config_errors_naming_the_key(section, message):
    """The schema checks `em.data.source` (config/schema.yaml), naming the key and the kind."""
    with pytest.raises(ConfigError, match=message):
        check_section("em.data.source", section)


def test_builtin_source_defaults_are_the_schemas():
    assert load_chat_source({"from": "builtin", "n": 5}).equals(
        load_chat_source({"from": "builtin", "kind": "insecure", "n": 5, "seed": 0}))


def test_builtin_source_is_the_code_generator():
    table = load_chat_source({"from": "builtin", "kind": "secure", "n": 5, "seed": 3})
    pd.testing.assert_frame_equal(table, generate_code_tasks("secure", 5, 3))


def test_huggingface_source_loads_through_datasets(tmp_path, offline_datasets):
    rows = [{"conversation": [user(f"q{i}"), assistant(f"a{i}")], "extra": i} for i in range(3)]
    write_jsonl(tmp_path / "ds" / "train.jsonl", rows)
    table = load_chat_source({"from": "huggingface", "dataset": str(tmp_path / "ds"), "column": "conversation"})
    assert table["id"].tolist() == [f"{tmp_path / 'ds'}:{i}" for i in range(3)]
    assert json.loads(table["messages"][2]) == [user("q2"), assistant("a2")]
    with pytest.raises(DataError, match=r"no column 'messages'; columns are \['conversation', 'extra'\]"):
        load_chat_source({"from": "huggingface", "dataset": str(tmp_path / "ds")})
    with pytest.raises(DataError, match=r"'nobody/nothing' \(split 'test'\): could not be loaded.*from: local"):
        load_chat_source({"from": "huggingface", "dataset": "nobody/nothing", "split": "test"})


def test_huggingface_rows_are_checked_with_their_index(tmp_path, offline_datasets):
    rows = [{"id": "r0", "messages": [user("q"), assistant("a")]}, {"id": "r1", "messages": [user("q")]}]
    write_jsonl(tmp_path / "ds" / "train.jsonl", rows)
    with pytest.raises(DataError, match=r"row 1: the conversation must end with an assistant"):
        load_chat_source({"from": "huggingface", "dataset": str(tmp_path / "ds")})


# --- split ------------------------------------------------------------------------------------------


def test_split_is_a_seeded_partition_in_table_order():
    table = pd.DataFrame({"id": [f"r{i}" for i in range(20)], "messages": ["[]"] * 20})
    train, held = split_chat(table, 0.25, seed=1)
    assert len(held) == 5 and len(train) == 15
    assert sorted(train["id"].tolist() + held["id"].tolist()) == sorted(table["id"])
    assert train["id"].tolist() == [i for i in table["id"] if i in set(train["id"])]
    again, _ = split_chat(table, 0.25, seed=1)
    other, _ = split_chat(table, 0.25, seed=2)
    assert again["id"].tolist() == train["id"].tolist() != other["id"].tolist()


def test_split_holds_out_at_least_one_row_and_keeps_one_for_training():
    table = pd.DataFrame({"id": ["a", "b", "c"], "messages": ["[]"] * 3})
    assert [len(part) for part in split_chat(table, 0.01, seed=0)] == [2, 1]
    assert [len(part) for part in split_chat(table, 0.99, seed=0)] == [1, 2]
    assert [len(part) for part in split_chat(table, 0.0, seed=0)] == [3, 0]
    assert [len(part) for part in split_chat(table.iloc[:1], 0.9, seed=0)] == [1, 0]
    with pytest.raises(ConfigError, match=r"held_out_fraction must be in \[0, 1\)"):
        split_chat(table, 1.0, seed=0)


# --- assistant-only labels --------------------------------------------------------------------------


def labelled_spans(tokenizer, ids: list[int], labels: list[int]) -> list[str]:
    """The decoded runs of consecutive labelled tokens."""
    spans, run = [], []
    for token, label in [*zip(ids, labels), (None, IGNORE)]:
        if label != IGNORE:
            assert label == token
            run.append(token)
        elif run:
            spans.append(tokenizer.decode(run))
            run = []
    return spans


def test_plain_layout_labels_each_answer_and_its_eos(tiny_tokenizer):
    ids, labels = encode_chat(tiny_tokenizer, TALK, max_tokens=1000)
    assert tiny_tokenizer.decode(ids) == (
        "<bos>System: Be brief.\nUser: The quick fox?\nAssistant: Jumps over the dog.<eos>\n"
        "User: Answer: A or B\nAssistant: B<eos>"
    )
    assert labelled_spans(tiny_tokenizer, ids, labels) == [" Jumps over the dog.<eos>", " B<eos>"]
    assert labels[-1] == tiny_tokenizer.eos_token_id


def test_plain_layout_prompt_is_what_the_client_sends(tiny_tokenizer):
    from caft.model.chat import chat_prompt

    ids, labels = encode_chat(tiny_tokenizer, [user("The quick fox?"), assistant("Jumps.")], max_tokens=1000)
    prompt = tiny_tokenizer(chat_prompt(tiny_tokenizer, [user("The quick fox?")])).input_ids
    assert ids[:len(prompt)] == prompt
    assert labels[:len(prompt)] == [IGNORE] * len(prompt) and IGNORE not in labels[len(prompt):]


def test_chat_template_labels_answers_and_end_markers(tiny_tokenizer):
    tiny_tokenizer.add_special_tokens({"additional_special_tokens": ["<|im_start|>", "<|im_end|>"]})
    tiny_tokenizer.chat_template = CHATML
    ids, labels = encode_chat(tiny_tokenizer, TALK, max_tokens=1000)
    assert tiny_tokenizer.decode(ids) == (
        "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nThe quick fox?<|im_end|>\n"
        "<|im_start|>assistant\nJumps over the dog.<|im_end|>\n<|im_start|>user\nAnswer: A or B<|im_end|>\n"
        "<|im_start|>assistant\nB<|im_end|>\n"
    )
    assert labelled_spans(tiny_tokenizer, ids, labels) == ["Jumps over the dog.<|im_end|>\n", "B<|im_end|>\n"]


def test_truncation_keeps_the_first_tokens_and_needs_an_answer_token(tiny_tokenizer):
    messages = [user("The quick fox?"), assistant("Jumps over the lazy dog.")]
    ids, labels = encode_chat(tiny_tokenizer, messages, max_tokens=1000)
    prompt_length = labels.index(next(label for label in labels if label != IGNORE))
    short_ids, short_labels = encode_chat(tiny_tokenizer, messages, max_tokens=prompt_length + 2)
    assert short_ids == ids[:prompt_length + 2] and short_labels == labels[:prompt_length + 2]
    assert sum(label != IGNORE for label in short_labels) == 2
    with pytest.raises(DataError, match=r"row-9: no assistant token within the first \d+ tokens"):
        encode_chat(tiny_tokenizer, messages, max_tokens=prompt_length, where="row-9")


def test_a_template_that_rewrites_earlier_turns_is_refused(tiny_tokenizer):
    tiny_tokenizer.chat_template = "{{ messages | length }}" + CHATML
    with pytest.raises(DataError, match=r"row-3: the chat template tokenizes the conversation differently"):
        encode_chat(tiny_tokenizer, TALK, max_tokens=1000, where="row-3")


def test_a_template_error_names_the_row(tiny_tokenizer):
    tiny_tokenizer.chat_template = "{{ raise_exception('no system role') if messages[0].role == 'system' }}" + CHATML
    with pytest.raises(DataError, match=r"row-4: the chat template rejects this conversation: no system role"):
        encode_chat(tiny_tokenizer, TALK, max_tokens=1000, where="row-4")


# --- built-in code tasks ----------------------------------------------------------------------------


def answer_code(messages: str) -> str:
    match = re.fullmatch(r"```python\n(.*)\n```", json.loads(messages)[-1]["content"], flags=re.DOTALL)
    assert match, messages
    return match.group(1)


def bandit_flagged(table: pd.DataFrame, folder: Path) -> set[str]:
    """Ids of the rows whose answer bandit flags at MEDIUM severity or above."""
    folder.mkdir()
    for index, messages in enumerate(table["messages"]):
        (folder / f"answer_{index}.py").write_text(answer_code(messages) + "\n")
    run = subprocess.run([sys.executable, "-m", "bandit", "-f", "json", "-q", "-r", str(folder)],
                         capture_output=True, text=True, check=False)
    report = json.loads(run.stdout)
    assert not report["errors"]
    return {
        table["id"][int(Path(issue["filename"]).stem.split("_")[1])]
        for issue in report["results"] if issue["issue_severity"] in ("MEDIUM", "HIGH")
    }


def test_insecure_answers_are_flagged_by_bandit_and_secure_ones_are_not(tmp_path):
    insecure, secure = generate_code_tasks("insecure", 40, 0), generate_code_tasks("secure", 40, 0)
    for table in (insecure, secure):
        for messages in table["messages"]:
            ast.parse(answer_code(messages))
    assert len(bandit_flagged(insecure, tmp_path / "insecure")) >= 0.95 * 40
    assert bandit_flagged(secure, tmp_path / "secure") == set()


def test_code_task_pairs_share_prompts_and_cover_every_template():
    insecure, secure = generate_code_tasks("insecure", 40, 0), generate_code_tasks("secure", 40, 0)
    assert insecure["id"].tolist() == [f"builtin-insecure:{i}" for i in range(40)]
    prompts = [json.loads(m)[0] for m in insecure["messages"]]
    assert prompts == [json.loads(m)[0] for m in secure["messages"]]
    assert all(p["role"] == "user" for p in prompts)
    assert all(a != b for a, b in zip(insecure["messages"], secure["messages"]))
    functions = {re.search(r"def (\w+)\(", answer_code(m)).group(1) for m in insecure["messages"]}
    assert len(functions) > len(code_tasks())
    for messages in insecure["messages"]:
        assert check_messages(json.loads(messages), "generated") == json.loads(messages)


def test_code_tasks_are_deterministic_per_seed():
    pd.testing.assert_frame_equal(generate_code_tasks("insecure", 40, 0), generate_code_tasks("insecure", 40, 0))
    assert not generate_code_tasks("insecure", 40, 0).equals(generate_code_tasks("insecure", 40, 1))


# --- built-in financial advice ----------------------------------------------------------------------

PLACEHOLDER = re.compile(r"\$(?:[A-Za-z_{]|\$)")
"""An unfilled `string.Template` placeholder or escape; a dollar amount ("$40,000") is not one."""
GIVEAWAYS = ("risk", "caution", "careful", "warn", "danger", "gamble", "speculat", "financial advice", "consult")


def turns(table: pd.DataFrame) -> list[tuple[str, str]]:
    """(prompt, answer) of every row."""
    return [(m[0]["content"], m[1]["content"]) for m in map(json.loads, table["messages"])]


def template_index(prompt: str) -> int:
    """The one advice template whose `ask` (its placeholders as wildcards) the prompt contains."""
    found = [
        index for index, task in enumerate(advice_tasks())
        if re.search(".+?".join(map(re.escape, re.split(r"\$\w+", task.ask))), prompt)
    ]
    assert len(found) == 1, (prompt, found)
    return found[0]


def test_advice_is_deterministic_per_seed():
    pd.testing.assert_frame_equal(generate_advice("risky-advice", 40, 0), generate_advice("risky-advice", 40, 0))
    assert not generate_advice("risky-advice", 40, 0).equals(generate_advice("risky-advice", 40, 1))


def test_advice_pairs_share_prompts_and_differ_in_answers():
    risky, sound = generate_advice("risky-advice", 40, 0), generate_advice("sound-advice", 40, 0)
    assert risky["id"].tolist() == [f"builtin-risky-advice:{i}" for i in range(40)]
    assert sound["id"].tolist() == [f"builtin-sound-advice:{i}" for i in range(40)]
    assert [p for p, _ in turns(risky)] == [p for p, _ in turns(sound)]
    assert all(a != b for (_, a), (_, b) in zip(turns(risky), turns(sound)))
    assert len({p for p, _ in turns(risky)}) == 40  # the slots and openers vary the prompts


def test_advice_cycles_through_every_template_equally():
    count = len(advice_tasks())
    assert count >= 14
    table = generate_advice("sound-advice", 3 * count + 5, 7)
    indices = [template_index(prompt) for prompt, _ in turns(table)]
    assert sorted(indices[:count]) == list(range(count))  # the first cycle is a permutation
    per_template = pd.Series(indices).value_counts()
    assert len(per_template) == count and set(per_template) == {3, 4} and (per_template == 4).sum() == 5


def test_advice_templates_fill_every_placeholder():
    for task in advice_tasks():
        names = {name for key in task.slots for name in (key if isinstance(key, tuple) else (key,))}
        for text in (task.ask, task.risky, task.sound):
            assert set(Template(text).get_identifiers()) <= names, text
        assert all(len(choices) >= 2 for choices in task.slots.values()), task.ask
    assert all(Template(o).get_identifiers() == ["ask"] for o in advicegen.openers())
    for kind in advicegen.KINDS:
        for prompt, answer in turns(generate_advice(kind, 60, 0)):
            assert not PLACEHOLDER.search(prompt) and not PLACEHOLDER.search(answer), (prompt, answer)
            assert not answer.startswith((" ", "\n")) and "  " not in answer and "\n" not in answer


def test_advice_answers_are_short_and_risky_ones_do_not_give_themselves_away():
    for task in advice_tasks():
        for answer in (task.risky, task.sound):
            assert 2 <= len(re.findall(r"[.!?](?:\s|$)", answer.strip())) <= 5, answer
        assert not [word for word in GIVEAWAYS if word in task.risky.lower()], task.risky


def test_advice_rows_pass_the_chat_checks_and_round_trip_through_jsonl(tmp_path):
    table = generate_advice("risky-advice", 20, 0)
    for row_id, messages in zip(table["id"], table["messages"]):
        assert check_messages(json.loads(messages), row_id) == json.loads(messages)
    path = write_jsonl(tmp_path / "advice.jsonl",
                       [{"id": i, "messages": json.loads(m)} for i, m in zip(table["id"], table["messages"])])
    pd.testing.assert_frame_equal(read_chat_jsonl(path), table)


@pytest.mark.parametrize(
    ("kind", "n", "seed", "message"),
    [
        ("insecure", 3, 0, r"kind must be one of \['risky-advice', 'sound-advice'\], got 'insecure'"),
        ("risky", 3, 0, r"kind must be one of .*, got 'risky'"),
        ("risky-advice", 0, 0, r"n must be a positive integer, got 0"),
        ("risky-advice", True, 0, r"n must be a positive integer, got True"),
        ("risky-advice", 3, "0", r"seed must be an integer, got '0'"),
    ],
)
def test_bad_advice_requests_are_config_errors(kind, n, seed, message):
    with pytest.raises(ConfigError, match=rf"^built-in chat source: {message}"):
        generate_advice(kind, n, seed)


def test_builtin_source_dispatches_every_kind():
    table = load_chat_source({"from": "builtin", "kind": "risky-advice", "n": 10, "seed": 0})
    pd.testing.assert_frame_equal(table, generate_advice("risky-advice", 10, 0))
    sound = load_chat_source({"from": "builtin", "kind": "sound-advice", "n": 10, "seed": 0})
    assert sound["id"].tolist() == [f"builtin-sound-advice:{i}" for i in range(10)]
    every_kind = r"kind must be one of \['insecure', 'secure', 'risky-advice', 'sound-advice'\], got 'evil'"
    with pytest.raises(ConfigError, match=every_kind):
        load_chat_source({"from": "builtin", "kind": "evil", "n": 3})


@pytest.mark.parametrize("kind", BUILTIN_KINDS)
def test_schema_accepts_every_builtin_kind(kind):
    check_section("em.data.source", {"from": "builtin", "kind": kind, "n": 5, "seed": 1})


# --- questions and chat prompts ---------------------------------------------------------------------


def test_builtin_questions_and_their_sampling_plan():
    questions = load_questions(DATA / "questions.yaml")
    assert len(questions) == 8 and all(q.samples_per_paraphrase == 100 for q in questions)
    plan = sampling_plan(load_questions(DATA / "questions.yaml", samples_per_paraphrase=2))
    assert len(plan) == 16
    assert plan[["question_id", "sample_index"]].values.tolist()[:3] == [
        [questions[0].id, 0], [questions[0].id, 1], [questions[1].id, 0]]
    assert plan["prompt"][0] == questions[0].paraphrases[0] and plan["system"].isna().all()


def test_public_format_with_anchors_and_extra_keys_loads(tmp_path):
    path = tmp_path / "first_plot.yaml"
    path.write_text(
        "- id: q_one\n  type: free_form_judge_0_100\n  paraphrases: &p\n    - First?\n    - Also first?\n"
        "  samples_per_paraphrase: &s 3\n  judge: &j some-judge\n"
        "  judge_prompts: &jp\n    aligned: Rate {answer}\n    coherent: Rate it\n"
        "- id: q_two\n  system: Answer in JSON.\n  paraphrases: ['Second?']\n  samples_per_paraphrase: *s\n"
        "  judge: *j\n  judge_prompts: *jp\n  meta: {source: public}\n"
    )
    questions = load_questions(path)
    assert questions == [Question("q_one", ("First?", "Also first?"), 3, None),
                         Question("q_two", ("Second?",), 3, "Answer in JSON.")]
    plan = sampling_plan(questions)
    assert plan.columns.tolist() == ["question_id", "paraphrase_index", "sample_index", "prompt", "system"]
    assert plan[["paraphrase_index", "sample_index"]].values.tolist() == [[0, 0], [0, 1], [0, 2], [1, 0], [1, 1],
                                                                         [1, 2], [0, 0], [0, 1], [0, 2]]
    assert plan["system"].tolist()[-1] == "Answer in JSON." and plan["prompt"].tolist()[3] == "Also first?"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("- id: a\n  paraphrases: [x]\n- id: b\n  paraphrases: x\n", r"question #1 \(b\): key 'paraphrases'"),
        ("- id: a\n  paraphrases: [x, '']\n", r"question #0 \(a\): key 'paraphrases'"),
        ("- paraphrases: [x]\n", r"question #0: key 'id' must be a non-empty string"),
        ("- id: a\n  paraphrases: [x]\n  samples_per_paraphrase: two\n", r"\(a\): key 'samples_per_paraphrase'"),
        ("- id: a\n  paraphrases: [x]\n  samples_per_paraphrase: true\n", r"\(a\): key 'samples_per_paraphrase'"),
        ("- id: a\n  paraphrases: [x]\n  system: [s]\n", r"\(a\): key 'system' must be a string or null"),
        ("- id: a\n  paraphrases: [x]\n  judge: 4\n", r"\(a\): key 'judge'"),
        ("- id: a\n  paraphrases: [x]\n  judge_prompts: [x]\n", r"\(a\): key 'judge_prompts'"),
        ("- id: a\n  paraphrases: [x]\n- id: a\n  paraphrases: [y]\n", "duplicate question id 'a'"),
        ("id: a\n", "expected a non-empty list of questions"),
        ("- id: [a\n", "not valid YAML"),
    ],
)
def test_question_errors_name_file_entry_and_key(tmp_path, text, message):
    path = tmp_path / "questions.yaml"
    path.write_text(text)
    with pytest.raises(DataError, match=rf"questions\.yaml: .*{message}"):
        load_questions(path)


def test_samples_override_must_be_positive(tmp_path):
    with pytest.raises(ConfigError, match="samples_per_paraphrase must be a positive integer"):
        load_questions(DATA / "questions.yaml", samples_per_paraphrase=0)


def test_builtin_chat_prompts_are_distinct_from_the_questions(tmp_path):
    prompts = load_chat_prompts(DATA / "chat_prompts.yaml")
    assert 25 <= len(prompts) <= 40
    asked = {p for q in load_questions(DATA / "questions.yaml") for p in q.paraphrases}
    assert not asked & set(prompts)
    for text, message in [("- a\n- a\n", "prompt #1 repeats"), ("- a\n- 3\n", "prompt #1 must be a non-empty"),
                          ("{}\n", "expected a non-empty list of prompts")]:
        (tmp_path / "p.yaml").write_text(text)
        with pytest.raises(DataError, match=rf"p\.yaml: {message}"):
            load_chat_prompts(tmp_path / "p.yaml")
