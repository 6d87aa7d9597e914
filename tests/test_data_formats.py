"""alpaca / sharegpt / openai rows -> AlignedRecord, LLaMA-Factory's converter rules, and the one-line errors."""

from __future__ import annotations

import json

import pytest

from tunery.data.formats import to_aligned
from tunery.data.loader import fill_placeholders, find_placeholders
from tunery.data.registry import spec_from_entry
from tunery.errors import ConfigError, DataError


def spec(entry: dict, name: str = "ds"):
    return spec_from_entry(name, {"file_name": "x.json", **entry}, "/data", "/data/dataset_info.json")


def roles(messages):
    return [m["role"] for m in messages]


# ---------------------------------------------------------------------------------------------------------- alpaca


def test_alpaca_prompt_query_history_system():
    s = spec(
        {
            "columns": {
                "prompt": "instruction",
                "query": "input",
                "response": "output",
                "system": "sys",
                "history": "history",
                "tools": "tools",
            }
        }
    )
    rows = [
        {
            "instruction": "Translate",
            "input": "hallo",
            "output": "hello",
            "sys": "be brief",
            "history": [["q1", "a1"], ["q2", "a2"]],
            "tools": [{"name": "f"}],
        },
        {"instruction": "Only instruction", "input": "", "output": "ok", "sys": None, "history": None, "tools": None},
    ]
    recs = to_aligned(rows, s, "sft")
    r = recs[0]
    assert roles(r.prompt) == ["user", "assistant", "user", "assistant", "user"]
    assert r.prompt[0]["content"] == "q1" and r.prompt[3]["content"] == "a2"
    assert r.prompt[-1]["content"] == "Translate\nhallo"  # "instruction\ninput"
    assert r.response == [{"role": "assistant", "content": "hello"}]
    assert r.system == "be brief" and json.loads(r.tools) == [{"name": "f"}]
    assert r.source == "ds[0]" and r.kto_tag is None
    assert recs[1].prompt == [{"role": "user", "content": "Only instruction"}] and recs[1].system == ""


def test_alpaca_missing_query_column_is_fine_by_default():
    recs = to_aligned([{"instruction": "hi", "output": "yo"}], spec({}), "sft")
    assert recs[0].prompt[0]["content"] == "hi"


def test_alpaca_ranking_and_kto():
    rank = spec(
        {"ranking": True, "columns": {"prompt": "instruction", "query": "input", "chosen": "c", "rejected": "r"}}
    )
    recs = to_aligned([{"instruction": "q", "input": "", "c": "good", "r": "bad"}], rank, "dpo")
    assert [m["content"] for m in recs[0].response] == ["good", "bad"]
    kto = spec({"columns": {"prompt": "instruction", "response": "output", "kto_tag": "kto_tag"}})
    rows = [
        {"instruction": "q", "output": "a", "kto_tag": True},
        {"instruction": "q", "output": "b", "kto_tag": "false"},
    ]
    recs = to_aligned(rows, kto, "kto")
    assert [r.kto_tag for r in recs] == [True, False]
    assert recs[1].response == [{"role": "assistant", "content": "b"}]


def test_alpaca_bad_history_names_record():
    s = spec({"columns": {"prompt": "instruction", "response": "output", "history": "history"}})
    rows = [
        {"instruction": "a", "output": "b", "history": []},
        {"instruction": "a", "output": "b", "history": [["only"]]},
    ]
    with pytest.raises(DataError, match=r"dataset ds, record 1: history\[0\] in column 'history' must be a"):
        to_aligned(rows, s, "sft")


def test_missing_mapped_column_in_one_record():
    s = spec({"columns": {"prompt": "content", "response": "summary"}}, name="adgen_local")
    rows = [{"content": f"c{i}", "summary": f"s{i}"} for i in range(20)]
    del rows[17]["summary"]
    with pytest.raises(DataError) as err:
        to_aligned(rows, s, "sft")
    msg = str(err.value)
    assert msg.startswith("dataset adgen_local, record 17: missing column 'summary' (mapped from response in ")
    assert "dataset_info.json" in msg


def test_mapped_column_no_record_has():
    s = spec({"columns": {"prompt": "instruction", "response": "output", "system": "system_prompt"}})
    with pytest.raises(
        DataError,
        match=r"no record has column 'system_prompt' \(mapped from system in /data/dataset_info.json\).*columns.system",
    ):
        to_aligned([{"instruction": "a", "output": "b"}], s, "sft")
    with pytest.raises(DataError, match=r"no record has column 'instruction' \(mapped from prompt by default\)"):
        to_aligned([{"question": "a", "answer": "b"}], spec({}), "sft")


def test_null_response_is_dropped_and_counted():
    dropped = {}
    recs = to_aligned(
        [{"instruction": "a", "output": "b"}, {"instruction": "c", "output": None}], spec({}), "sft", dropped=dropped
    )
    assert len(recs) == 1 and dropped == {"ds: no response": 1}


def test_pretrain_text_and_empty_lines():
    s = spec({"columns": {"prompt": "text"}})
    dropped = {}
    recs = to_aligned([{"text": "doc one"}, {"text": ""}, {"text": "doc two"}], s, "pt", dropped=dropped)
    assert [r.prompt for r in recs] == [
        [{"role": "user", "content": "doc one"}],
        [{"role": "user", "content": "doc two"}],
    ]
    assert all(r.response == [] for r in recs) and dropped == {"ds: empty text": 1}
    # alpaca data used for pt: LLaMA-Factory trains on the first prompt message (instruction + input) only
    recs = to_aligned([{"instruction": "i", "input": "x", "output": "o"}], spec({}), "pt")
    assert recs[0].prompt == [{"role": "user", "content": "i\nx"}] and recs[0].response == []


def test_unknown_stage():
    with pytest.raises(ConfigError, match="unknown stage 'stf'.*did you mean 'sft'"):
        to_aligned([], spec({}), "stf")


# -------------------------------------------------------------------------------------------------------- sharegpt

SG = {"formatting": "sharegpt", "columns": {"messages": "conversations"}}
SG_FULL = {"formatting": "sharegpt", "columns": {"messages": "conversations", "system": "system", "tools": "tools"}}


def turn(frm, value):
    return {"from": frm, "value": value}


def test_sharegpt_tools_and_system_turn():
    rows = [
        {
            "conversations": [
                turn("system", "sys!"),
                turn("human", "hi"),
                turn("function_call", '{"name": "f"}'),
                turn("observation", "42"),
                turn("gpt", "it is 42"),
            ],
            "tools": "[]",
        },
        {"conversations": [turn("human", "a"), turn("gpt", "b")], "system": "column system"},
    ]
    recs = to_aligned(rows, spec(SG_FULL), "sft")
    assert recs[0].system == "sys!"
    assert roles(recs[0].prompt) == ["user", "function", "observation"]
    assert recs[0].response == [{"role": "assistant", "content": "it is 42"}]
    assert recs[0].tools == "[]"
    assert recs[1].system == "column system" and recs[1].tools == ""


def test_sharegpt_broken_alternation_is_dropped_and_counted():
    rows = [
        {"conversations": [turn("human", "a"), turn("gpt", "b")]},
        {"conversations": [turn("human", "a"), turn("human", "b")]},
        {"conversations": [turn("human", "a"), turn("gpt", "b"), turn("human", "c")]},
        {"conversations": [turn("human", "a"), turn("gpt", "b"), turn("system", "late system")]},
    ]
    dropped = {}
    recs = to_aligned(rows, spec(SG), "sft", dropped=dropped)
    assert [r.source for r in recs] == ["ds[0]"]
    assert dropped == {"ds: invalid role order": 2, "ds: odd turn count": 1}


def test_sharegpt_all_dropped_is_an_error_that_names_the_tag():
    kto_like = [{"conversations": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]}] * 3
    with pytest.raises(DataError, match="message has no 'from' key"):
        to_aligned(kto_like, spec(SG), "sft")
    wrong_tags = [{"conversations": [turn("user", "a"), turn("assistant", "b")]}] * 3
    with pytest.raises(DataError) as err:
        to_aligned(wrong_tags, spec(SG), "sft")
    msg = str(err.value)
    assert "all 3 records were dropped" in msg and "ds[0], turn 0: role 'user' where 'human' or 'observation'" in msg


def test_sharegpt_structural_errors_name_record_and_turn():
    with pytest.raises(DataError, match=r"dataset ds, record 1, turn 1: message has no 'value' key"):
        to_aligned(
            [
                {"conversations": [turn("human", "a"), turn("gpt", "b")]},
                {"conversations": [turn("human", "a"), {"from": "gpt"}]},
            ],
            spec(SG),
            "sft",
        )
    with pytest.raises(DataError, match=r"dataset ds, record 0: column 'conversations' must be a list"):
        to_aligned([{"conversations": "hello"}], spec(SG), "sft")


def test_sharegpt_custom_tags():
    s = spec(
        {
            "formatting": "sharegpt",
            "columns": {"messages": "msgs"},
            "tags": {"role_tag": "speaker", "content_tag": "text", "user_tag": "Q", "assistant_tag": "A"},
        }
    )
    recs = to_aligned([{"msgs": [{"speaker": "Q", "text": "1"}, {"speaker": "A", "text": "2"}]}], s, "sft")
    assert recs[0].prompt == [{"role": "user", "content": "1"}] and recs[0].response[0]["content"] == "2"


def test_sharegpt_ranking():
    s = spec(
        {
            "formatting": "sharegpt",
            "ranking": True,
            "columns": {"messages": "conversations", "chosen": "chosen", "rejected": "rejected"},
        }
    )
    rows = [
        {"conversations": [turn("human", "q")], "chosen": turn("gpt", "good"), "rejected": turn("gpt", "bad")},
        {
            "conversations": [turn("human", "q"), turn("gpt", "x")],
            "chosen": turn("gpt", "g"),
            "rejected": turn("gpt", "b"),
        },
        {"conversations": [turn("human", "q")], "chosen": turn("human", "g"), "rejected": turn("gpt", "b")},
    ]
    dropped = {}
    recs = to_aligned(rows, s, "rm", dropped=dropped)
    assert len(recs) == 1 and roles(recs[0].prompt) == ["user"]
    assert [m["content"] for m in recs[0].response] == ["good", "bad"]
    assert dropped == {"ds: even turn count in a ranking prompt": 1, "ds: invalid chosen/rejected role": 1}


def test_sharegpt_kto_label():
    s = spec(
        {
            "formatting": "sharegpt",
            "columns": {"messages": "messages", "kto_tag": "label"},
            "tags": {"role_tag": "role", "content_tag": "content", "user_tag": "user", "assistant_tag": "assistant"},
        }
    )
    msgs = [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]
    recs = to_aligned([{"messages": msgs, "label": False}], s, "kto")
    assert recs[0].kto_tag is False and recs[0].response == [{"role": "assistant", "content": "a"}]
    with pytest.raises(DataError, match="record 0: missing column 'label'"):
        to_aligned([{"messages": msgs}, {"messages": msgs, "label": True}], s, "kto")


# ---------------------------------------------------------------------------------------------------------- openai


def test_openai_tool_calls_and_tool_results():
    s = spec({"formatting": "openai", "columns": {"messages": "messages", "tools": "tools"}})
    call = {"id": "c1", "type": "function", "function": {"name": "weather", "arguments": '{"city": "Paris"}'}}
    msgs = [
        {"role": "system", "content": "be nice"},
        {"role": "user", "content": "weather in Paris and Rome?"},
        {"role": "assistant", "content": None, "tool_calls": [call, call]},
        {"role": "tool", "content": "sunny"},
        {"role": "tool", "content": "rainy"},
        {"role": "assistant", "content": [{"type": "text", "text": "Sunny, then rainy."}]},
    ]
    recs = to_aligned([{"messages": msgs, "tools": [{"type": "function", "function": {"name": "weather"}}]}], s, "sft")
    r = recs[0]
    assert r.system == "be nice"
    assert roles(r.prompt) == ["user", "function", "observation"]
    assert json.loads(r.prompt[1]["content"]) == [{"name": "weather", "arguments": {"city": "Paris"}}] * 2
    assert r.prompt[2]["content"] == "sunny\n</tool_response>\n<tool_response>\nrainy"
    assert r.response == [{"role": "assistant", "content": "Sunny, then rainy."}]
    assert json.loads(r.tools)[0]["function"]["name"] == "weather"


def test_openai_bad_order_dropped():
    s = spec({"formatting": "openai"})
    rows = [
        {"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]},
        {"messages": [{"role": "assistant", "content": "a"}, {"role": "user", "content": "b"}]},
        {"messages": [{"role": "user", "content": "a"}, {"role": "developer", "content": "b"}]},
    ]
    dropped = {}
    assert len(to_aligned(rows, s, "sft", dropped=dropped)) == 1
    assert dropped == {"ds: invalid role order": 2}


# ---------------------------------------------------------------------------------------------------- placeholders


def test_fill_and_find_placeholders():
    recs = to_aligned(
        [
            {"instruction": "who are you", "output": "I am {{name}}, made by {{ author }}."},
            {"instruction": "{{name}}?", "output": "yes"},
            {"instruction": "x", "output": "{{other}}"},
        ],
        spec({}),
        "sft",
    )
    assert find_placeholders(recs) == {"name": 2, "author": 1, "other": 1}
    fill_placeholders(recs, {"name": "Tunery", "author": "the team"})
    assert recs[0].response[0]["content"] == "I am Tunery, made by the team."
    assert recs[1].prompt[0]["content"] == "Tunery?"
    assert find_placeholders(recs) == {"other": 1}
