"""Property tests on random conversations (hypothesis)."""

from __future__ import annotations

from harmony_fixtures import reference_ids
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from osstune.engine.data.dataset_formats import FormatOptions, row_to_chat
from osstune.engine.data.harmony import IGNORE_INDEX, HarmonyRenderer, RenderSettings

END_IDS = {200002, 200007, 200012}  # <|return|>, <|end|>, <|call|>
START_ID = 200006

PROPERTY_SETTINGS = settings(max_examples=60, deadline=None,
                             suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                    HealthCheck.too_slow])

text = st.one_of(
    st.text(max_size=40),
    st.sampled_from(["<|end|>", "<|start|>assistant", "<|call|>", " ", "\n\n", "🙂👍🏽", "日本語",
                     "{\"a\": 1}", "functions.f to=assistant"]),
)
tool_names = st.sampled_from(["get_weather", "search", "calc"])


@st.composite
def conversations(draw):
    messages = []
    if draw(st.booleans()):
        messages.append({"role": draw(st.sampled_from(["system", "developer"])),
                         "content": draw(text)})
    call_id = 0
    used = set()
    for _turn in range(draw(st.integers(1, 3))):
        messages.append({"role": "user", "content": draw(text)})
        for _step in range(draw(st.integers(0, 2))):
            calls = []
            for _ in range(draw(st.integers(1, 3))):
                call_id += 1
                name = draw(tool_names)
                used.add(name)
                args = draw(st.one_of(
                    st.dictionaries(st.sampled_from(["a", "city", "ü"]), st.integers() | text,
                                    max_size=2),
                    st.just('{"raw": true}')))
                calls.append({"id": f"c{call_id}", "type": "function",
                              "function": {"name": name, "arguments": args}})
            messages.append({"role": "assistant", "content": None,
                             "thinking": draw(st.none() | text), "tool_calls": calls})
            for c in calls:
                messages.append({"role": "tool", "tool_call_id": c["id"], "content": draw(text)})
        messages.append({"role": "assistant", "content": draw(text),
                         "thinking": draw(st.none() | text)})
    tools = [{"type": "function", "function": {
        "name": n, "description": f"The {n} tool.",
        "parameters": {"type": "object", "properties": {"a": {"type": "string"}}}}}
        for n in sorted(used)]
    return {"messages": messages, "tools": tools}


def render(tokenizer, row, **kw):
    return HarmonyRenderer(tokenizer, RenderSettings(**kw)).render(
        row_to_chat(row, "messages", FormatOptions()))


@PROPERTY_SETTINGS
@given(row=conversations())
def test_random_conversations_match_openai_harmony(tokenizer, harmony_encoding, row):
    [ex] = render(tokenizer, row)
    assert ex.input_ids == reference_ids(harmony_encoding, row)


def _check_mask_invariants(ex):
    assert len(ex.input_ids) == len(ex.labels) == len(ex.message_index) == len(ex.role)
    for i, (tid, label, role) in enumerate(zip(ex.input_ids, ex.labels, ex.role, strict=True)):
        assert label in (IGNORE_INDEX, tid)  # labels are a subset of the inputs
        if label != IGNORE_INDEX:
            assert role == "assistant"  # nothing else trained by default
            ends_span = i + 1 == len(ex.labels) or ex.labels[i + 1] == IGNORE_INDEX
            if ends_span:
                assert tid in END_IDS  # every trained span ends in an end token
    # a masked <|start|> is followed by prompt header, a trained one only after <|end|>
    for i, (tid, label) in enumerate(zip(ex.input_ids, ex.labels, strict=True)):
        if tid == START_ID and label != IGNORE_INDEX:
            assert ex.input_ids[i - 1] == 200007 and ex.role[i - 1] == "assistant"


@PROPERTY_SETTINGS
@given(row=conversations(), mode=st.sampled_from(["all", "last", "expand"]))
def test_mask_invariants(tokenizer, row, mode):
    examples = render(tokenizer, row, train_turns=mode)
    assert examples
    for ex in examples:
        _check_mask_invariants(ex)
        assert ex.trained_tokens > 0
        assert ex.input_ids[-1] in END_IDS and ex.labels[-1] == ex.input_ids[-1]
    users = sum(m["role"] == "user" for m in row["messages"])
    if mode == "expand":
        assert [e.turn for e in examples] == list(range(1, users + 1))
