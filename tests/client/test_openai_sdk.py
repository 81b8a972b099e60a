"""The official OpenAI Python SDK against tandem: what a user's code would do."""

import json
from typing import Literal

import openai
import pytest
from pydantic import BaseModel

# Exactly max_tokens tokens come back (the tiny test model may otherwise stop at once).
FIXED = {"ignore_eos": True}


def test_models_are_listed_and_retrievable(client, model):
    assert model in [m.id for m in client.models.list()]
    assert client.models.retrieve(model).id == model
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("no-such-model")


def test_completion(client, model):
    r = client.completions.create(model=model, prompt="Hello there", max_tokens=6, extra_body=FIXED)
    assert r.object == "text_completion"
    assert r.id.startswith("cmpl-")
    assert r.model == model
    assert len(r.choices) == 1
    assert isinstance(r.choices[0].text, str)
    assert r.choices[0].finish_reason == "length"
    assert r.usage.completion_tokens == 6
    assert r.usage.prompt_tokens > 0
    assert r.usage.total_tokens == r.usage.prompt_tokens + 6


def test_completion_from_token_ids(client, model):
    r = client.completions.create(model=model, prompt=[1, 2, 3, 4], max_tokens=3, extra_body=FIXED)
    assert r.usage.prompt_tokens == 4
    assert r.usage.completion_tokens == 3


def test_streamed_completion_equals_the_whole_one(client, model):
    whole = client.completions.create(model=model, prompt="Once upon", max_tokens=8, extra_body=FIXED)
    chunks = list(
        client.completions.create(
            model=model,
            prompt="Once upon",
            max_tokens=8,
            stream=True,
            stream_options={"include_usage": True},
            extra_body=FIXED,
        )
    )
    text = "".join(c.choices[0].text for c in chunks if c.choices)
    assert text == whole.choices[0].text
    assert [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason] == ["length"]
    last = chunks[-1]
    assert last.choices == []
    assert last.usage.completion_tokens == 8
    assert all(c.usage is None for c in chunks[:-1])


def test_chat_completion(client, model):
    r = client.chat.completions.create(
        model=model,
        messages=[{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}],
        max_tokens=5,
        extra_body=FIXED,
    )
    assert r.object == "chat.completion"
    assert r.id.startswith("chatcmpl-")
    assert r.choices[0].message.role == "assistant"
    assert isinstance(r.choices[0].message.content, str)
    assert r.choices[0].finish_reason == "length"
    assert r.usage.completion_tokens == 5


def test_streamed_chat_starts_with_the_role(client, model):
    messages = [{"role": "user", "content": "Tell me a story"}]
    whole = client.chat.completions.create(model=model, messages=messages, max_tokens=8, extra_body=FIXED)
    chunks = list(
        client.chat.completions.create(
            model=model,
            messages=messages,
            max_tokens=8,
            stream=True,
            stream_options={"include_usage": True},
            extra_body=FIXED,
        )
    )
    assert chunks[0].object == "chat.completion.chunk"
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == whole.choices[0].message.content
    assert chunks[-1].usage.completion_tokens == 8


def test_completion_logprobs(client, model):
    r = client.completions.create(model=model, prompt="Hello", max_tokens=4, logprobs=2, extra_body=FIXED)
    lp = r.choices[0].logprobs
    assert len(lp.tokens) == len(lp.token_logprobs) == len(lp.top_logprobs) == 4
    assert all(x <= 0 for x in lp.token_logprobs)
    assert all(1 <= len(top) <= 2 for top in lp.top_logprobs)


def test_chat_logprobs(client, model):
    r = client.chat.completions.create(
        model=model,
        messages=[{"role": "user", "content": "Hi"}],
        max_tokens=4,
        logprobs=True,
        top_logprobs=3,
        extra_body=FIXED,
    )
    content = r.choices[0].logprobs.content
    assert len(content) == 4
    for tok in content:
        assert tok.logprob <= 0
        assert len(tok.top_logprobs) == 3


def test_n_choices(client, model):
    r = client.completions.create(
        model=model, prompt="Hello", max_tokens=4, n=3, temperature=1.0, seed=5, extra_body=FIXED
    )
    assert sorted(c.index for c in r.choices) == [0, 1, 2]
    assert r.usage.completion_tokens == 12


def test_a_seed_makes_sampling_reproducible(client, model):
    def sample(seed):
        r = client.chat.completions.create(
            model=model,
            messages=[{"role": "user", "content": "Hi"}],
            max_tokens=12,
            temperature=1.0,
            top_p=0.95,
            seed=seed,
            extra_body=FIXED,
        )
        return r.choices[0].message.content

    assert sample(1234) == sample(1234)


def test_stop_strings(client, model):
    full = client.completions.create(model=model, prompt="Hello", max_tokens=24, extra_body=FIXED)
    text = full.choices[0].text
    stop = text[len(text) // 2 : len(text) // 2 + 2]
    r = client.completions.create(model=model, prompt="Hello", max_tokens=24, stop=[stop], extra_body=FIXED)
    assert r.choices[0].text == text[: text.find(stop)]
    assert r.choices[0].finish_reason == "stop"


def test_unknown_model_is_not_found(client):
    with pytest.raises(openai.NotFoundError) as e:
        client.completions.create(model="gpt-9", prompt="x", max_tokens=1)
    assert e.value.param == "model"


@pytest.mark.parametrize(
    "kwargs,param",
    [
        ({"max_tokens": 0}, "max_tokens"),
        ({"temperature": -1}, "temperature"),
        ({"top_p": 1.5}, "top_p"),
        ({"presence_penalty": 5}, "presence_penalty"),
        ({"n": 1000}, "n"),
        ({"logprobs": 50}, "logprobs"),
        ({"stop": [""]}, "stop"),
        ({"prompt": ""}, "prompt"),
        ({"prompt": [1, 2, 99999]}, "prompt"),
        ({"stream_options": {"include_usage": True}}, "stream_options"),
    ],
)
def test_bad_completion_parameters(client, model, kwargs, param):
    args = {"model": model, "prompt": "Hello", "max_tokens": 4, **kwargs}
    with pytest.raises(openai.BadRequestError) as e:
        client.completions.create(**args)
    assert e.value.param == param


def test_bad_chat_messages(client, model):
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(model=model, messages=[], max_tokens=4)
    assert e.value.param == "messages"
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(model=model, messages=[{"role": "user"}], max_tokens=4)
    assert e.value.param == "messages[0].content"


def test_context_length(client, model):
    with pytest.raises(openai.BadRequestError) as e:
        client.completions.create(model=model, prompt=list(range(10, 260)), max_tokens=100)
    assert "maximum context length" in e.value.message
    assert e.value.code == "context_length_exceeded"


class Weather(BaseModel):
    """A schema whose every value is a choice, so the tiny random model finishes it quickly."""

    city: Literal["Oslo", "Paris"]
    sunny: bool


def test_parse_with_a_pydantic_model(client, model):
    r = client.chat.completions.parse(
        model=model,
        messages=[{"role": "user", "content": "Weather?"}],
        response_format=Weather,
        max_tokens=40,
        temperature=0,
    )
    choice = r.choices[0]
    assert choice.finish_reason == "stop"
    assert isinstance(choice.message.parsed, Weather)
    assert Weather.model_validate_json(choice.message.content) == choice.message.parsed


WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Today's weather in a city.",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string", "enum": ["Oslo", "Paris"]}},
            "required": ["city"],
            "additionalProperties": False,
        },
    },
}


def test_a_tool_call_round_trip(client, model):
    messages = [{"role": "user", "content": "Weather in Oslo?"}]
    r = client.chat.completions.create(
        model=model,
        messages=messages,
        tools=[WEATHER_TOOL],
        tool_choice="required",
        parallel_tool_calls=False,
        max_tokens=40,
        temperature=0,
    )
    choice = r.choices[0]
    assert choice.finish_reason == "tool_calls"
    (call,) = choice.message.tool_calls
    assert call.id.startswith("call_")
    assert call.function.name == "get_weather"
    assert json.loads(call.function.arguments)["city"] in ("Oslo", "Paris")

    # The call and its result go back in the next turn.
    messages.append(choice.message.model_dump(exclude_none=True))
    messages.append({"role": "tool", "tool_call_id": call.id, "content": "-3C, sunny"})
    r = client.chat.completions.create(
        model=model,
        messages=messages,
        tools=[WEATHER_TOOL],
        tool_choice="none",
        max_tokens=4,
        extra_body=FIXED,
    )
    assert isinstance(r.choices[0].message.content, str)
    assert r.choices[0].finish_reason == "length"
