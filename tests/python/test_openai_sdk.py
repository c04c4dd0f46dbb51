"""Hearth's OpenAI API driven by the official `openai` Python SDK (stdlib unittest).

Run by tests/openai_sdk.rs against a live server; by hand:
    HEARTH_BASE_URL=http://127.0.0.1:8080/v1 HEARTH_API_KEY=... HEARTH_MODEL=... \
        HEARTH_KEY_REQUIRED=0|1 [HEARTH_REMOTE=1] .venv/bin/python tests/python/test_openai_sdk.py -v

HEARTH_KEY_REQUIRED says whether the server needs a key (`server.api_key` or
`auth.require_auth`); on a default server it does not, and HEARTH_API_KEY is then any
placeholder, as users write `api_key="unused"`.

The clients are used as shipped: only base_url and api_key are set (plus max_retries=0 where an
error is expected, so the SDK cannot hide it behind a retry). Generations are short, since the
model runs on a small CPU; outputs are compared only at temperature 0 or with a fixed seed.
"""

import asyncio
import functools
import json
import math
import os
import unittest

import openai


def _env(name):
    value = os.environ.get(name)
    if not value:
        raise SystemExit(f"error: set {name} (see the docstring of {__file__})")
    return value


BASE_URL = _env("HEARTH_BASE_URL")
API_KEY = _env("HEARTH_API_KEY")
MODEL = _env("HEARTH_MODEL")
KEY_REQUIRED = _env("HEARTH_KEY_REQUIRED") == "1"
# The remote model is a loopback stand-in with canned replies: it relays, it cannot follow a
# schema, so tests of what the local model generates under a schema skip it.
REMOTE = os.environ.get("HEARTH_REMOTE") == "1"

PROMPT = "Write one sentence about the sea."
MAX_TOKENS = 24


def client(**kwargs):
    return openai.OpenAI(base_url=BASE_URL, api_key=API_KEY, **kwargs)


def async_client(**kwargs):
    return openai.AsyncOpenAI(base_url=BASE_URL, api_key=API_KEY, **kwargs)


def user(text):
    return [{"role": "user", "content": text}]


@functools.lru_cache(maxsize=None)
def greedy_chat(prompt=PROMPT, max_tokens=MAX_TOKENS):
    """The non-streamed greedy answer to one user message (asked once, then reused)."""
    with client() as c:
        return c.chat.completions.create(
            model=MODEL, messages=user(prompt), max_tokens=max_tokens, temperature=0
        )


class SdkTestCase(unittest.TestCase):
    def setUp(self):
        self.client = client()

    def tearDown(self):
        self.client.close()

    def assert_usage(self, usage, max_tokens=None):
        self.assertIsNotNone(usage)
        self.assertGreater(usage.prompt_tokens, 0)
        self.assertGreater(usage.completion_tokens, 0)
        self.assertEqual(usage.total_tokens, usage.prompt_tokens + usage.completion_tokens)
        if max_tokens is not None:
            self.assertLessEqual(usage.completion_tokens, max_tokens)


class ModelsTest(SdkTestCase):
    def test_list_contains_the_model(self):
        models = list(self.client.models.list())
        self.assertIn(MODEL, [m.id for m in models])
        for m in models:
            self.assertEqual(m.object, "model")

    def test_retrieve_the_model(self):
        m = self.client.models.retrieve(MODEL)
        self.assertEqual(m.id, MODEL)
        self.assertEqual(m.object, "model")
        self.assertIsInstance(m.created, int)
        self.assertIsInstance(m.owned_by, str)


class ChatTest(SdkTestCase):
    def test_completion_has_content_usage_and_finish_reason(self):
        r = self.client.chat.completions.create(
            model=MODEL, messages=user(PROMPT), max_tokens=16, temperature=0
        )
        self.assertTrue(r.id)
        self.assertEqual(r.object, "chat.completion")
        self.assertEqual(r.model, MODEL)
        self.assertEqual(len(r.choices), 1)
        choice = r.choices[0]
        self.assertEqual(choice.index, 0)
        self.assertEqual(choice.message.role, "assistant")
        self.assertIsInstance(choice.message.content, str)
        self.assertTrue(choice.message.content.strip())
        self.assertIn(choice.finish_reason, ("stop", "length"))
        self.assert_usage(r.usage, max_tokens=16)
        if choice.finish_reason == "length":
            self.assertEqual(r.usage.completion_tokens, 16)

    def test_max_tokens_is_respected(self):
        r = self.client.chat.completions.create(
            model=MODEL, messages=user(PROMPT), max_tokens=3, temperature=0
        )
        self.assertEqual(r.choices[0].finish_reason, "length")
        self.assertEqual(r.usage.completion_tokens, 3)
        self.assertTrue(r.choices[0].message.content)

    def test_max_completion_tokens_is_respected(self):
        r = self.client.chat.completions.create(
            model=MODEL, messages=user(PROMPT), max_completion_tokens=3, temperature=0
        )
        self.assertEqual(r.choices[0].finish_reason, "length")
        self.assertEqual(r.usage.completion_tokens, 3)

    def test_stream_with_usage_matches_the_non_streamed_answer(self):
        expected = greedy_chat()
        with self.client.chat.completions.create(
            model=MODEL,
            messages=user(PROMPT),
            max_tokens=MAX_TOKENS,
            temperature=0,
            stream=True,
            stream_options={"include_usage": True},
        ) as stream:
            chunks = list(stream)
        self.assertGreaterEqual(len(chunks), 3)
        self.assertEqual(len({c.id for c in chunks}), 1, "one id across chunks")
        for c in chunks:
            self.assertEqual(c.object, "chat.completion.chunk")
            self.assertEqual(c.model, MODEL)
        self.assertEqual(chunks[0].choices[0].delta.role, "assistant")

        final = chunks[-1]
        self.assertEqual(final.choices, [])
        self.assert_usage(final.usage, max_tokens=MAX_TOKENS)
        for c in chunks[:-1]:
            self.assertIsNone(c.usage, "usage only on the final chunk")
            self.assertEqual(len(c.choices), 1)
            self.assertEqual(c.choices[0].index, 0)

        with_choices = chunks[:-1]
        self.assertIn(with_choices[-1].choices[0].finish_reason, ("stop", "length"))
        for c in with_choices[:-1]:
            self.assertIsNone(c.choices[0].finish_reason)

        text = "".join(c.choices[0].delta.content or "" for c in with_choices)
        self.assertEqual(text, expected.choices[0].message.content)
        self.assertEqual(with_choices[-1].choices[0].finish_reason, expected.choices[0].finish_reason)
        self.assertEqual(final.usage.prompt_tokens, expected.usage.prompt_tokens)
        self.assertEqual(final.usage.completion_tokens, expected.usage.completion_tokens)

    def test_stop_string_cuts_the_greedy_answer_before_it(self):
        full = greedy_chat().choices[0].message.content
        words = full.split()
        self.assertGreaterEqual(len(words), 4, f"greedy answer too short to pick a stop word: {full!r}")
        stop = " " + words[2]
        prefix = full[: full.index(stop)]
        request = dict(
            model=MODEL, messages=user(PROMPT), max_tokens=MAX_TOKENS, temperature=0, stop=[stop]
        )
        r = self.client.chat.completions.create(**request)
        choice = r.choices[0]
        self.assertEqual(choice.message.content, prefix, f"stop={stop!r}, full={full!r}")
        self.assertNotIn(stop, choice.message.content)
        self.assertEqual(choice.finish_reason, "stop")
        # Streamed, the stop string must not leak out before it is recognised.
        with self.client.chat.completions.create(**request, stream=True) as stream:
            chunks = [c for c in stream if c.choices]
        self.assertEqual("".join(c.choices[0].delta.content or "" for c in chunks), prefix)
        self.assertEqual(chunks[-1].choices[0].finish_reason, "stop")

    def test_n_gives_indexed_choices(self):
        r = self.client.chat.completions.create(
            model=MODEL, messages=user(PROMPT), max_tokens=8, temperature=0.8, seed=7, n=2
        )
        self.assertEqual(sorted(c.index for c in r.choices), [0, 1])
        for c in r.choices:
            self.assertEqual(c.message.role, "assistant")
            self.assertTrue(c.message.content)
            self.assertIn(c.finish_reason, ("stop", "length"))
        self.assert_usage(r.usage, max_tokens=16)

    def test_logprobs_with_top_alternatives(self):
        r = self.client.chat.completions.create(
            model=MODEL,
            messages=user(PROMPT),
            max_tokens=5,
            temperature=0,
            logprobs=True,
            top_logprobs=2,
        )
        choice = r.choices[0]
        self.assertIsNotNone(choice.logprobs)
        content = choice.logprobs.content
        self.assertTrue(content)
        self.assertLessEqual(len(content), r.usage.completion_tokens)
        for entry in content:
            self.assertIsInstance(entry.token, str)
            self.assertTrue(math.isfinite(entry.logprob))
            self.assertLessEqual(entry.logprob, 0.0)
            self.assertEqual(len(entry.top_logprobs), 2)
            for alt in entry.top_logprobs:
                self.assertIsInstance(alt.token, str)
                self.assertLessEqual(alt.logprob, 0.0)
            self.assertGreaterEqual(entry.top_logprobs[0].logprob, entry.top_logprobs[1].logprob)
            # Greedy: the chosen token is the most likely one.
            self.assertEqual(entry.token, entry.top_logprobs[0].token)
            self.assertAlmostEqual(entry.logprob, entry.top_logprobs[0].logprob, places=4)
        self.assertEqual("".join(e.token for e in content), choice.message.content)

    def test_same_seed_gives_the_same_sample(self):
        def sample():
            return self.client.chat.completions.create(
                model=MODEL, messages=user(PROMPT), max_tokens=16, temperature=0.8, seed=1234
            ).choices[0].message.content

        first = sample()
        self.assertTrue(first)
        self.assertEqual(sample(), first)


class JsonModeTest(SdkTestCase):
    def test_json_object_answers_with_json(self):
        r = self.client.chat.completions.create(
            model=MODEL,
            messages=[
                {"role": "system", "content": "You reply in JSON."},
                {"role": "user", "content": "Give a JSON object with keys name and age for Alice, 30."},
            ],
            response_format={"type": "json_object"},
            temperature=0,
            max_tokens=64,
        )
        choice = r.choices[0]
        content = choice.message.content
        self.assertIn(choice.finish_reason, ("stop", "length"))
        if choice.finish_reason == "stop":
            value = json.loads(content)
            self.assertIsInstance(value, dict, content)
        else:
            self.assertTrue(content.lstrip().startswith("{"), content)

    def test_json_object_without_json_in_the_messages_is_rejected(self):
        with client(max_retries=0) as c:
            with self.assertRaises(openai.BadRequestError) as cm:
                c.chat.completions.create(
                    model=MODEL,
                    messages=user("Give me an object with keys name and age for Alice, 30."),
                    response_format={"type": "json_object"},
                    max_tokens=8,
                )
        self.assertEqual(cm.exception.status_code, 400)


class StructuredOutputsTest(SdkTestCase):
    """`response_format: json_schema` through the SDK's own `parse()` helper, which builds the
    strict schema from a Pydantic model and parses the answer back into it."""

    def setUp(self):
        if REMOTE and self._testMethodName != "test_unsupported_keyword_in_a_strict_schema_is_rejected":
            self.skipTest("the remote stand-in relays schemas but cannot follow them")
        super().setUp()

    def test_parse_fills_a_pydantic_model(self):
        import pydantic

        class Pet(pydantic.BaseModel):
            name: str = pydantic.Field(max_length=16)
            species: str = pydantic.Field(pattern="^(cat|dog|bird)$")
            age: int = pydantic.Field(ge=0, le=30)
            vaccinated: bool

        r = self.client.chat.completions.parse(
            model=MODEL,
            messages=user("Describe a pet as JSON."),
            response_format=Pet,
            temperature=0,
            max_tokens=96,
        )
        choice = r.choices[0]
        self.assertEqual(choice.finish_reason, "stop")
        pet = choice.message.parsed
        self.assertIsInstance(pet, Pet)
        self.assertIn(pet.species, ("cat", "dog", "bird"))
        self.assertTrue(0 <= pet.age <= 30)
        self.assertEqual(Pet.model_validate_json(choice.message.content), pet)

    def test_nested_models_and_enums(self):
        import enum
        import typing

        import pydantic

        class Priority(str, enum.Enum):
            low = "low"
            high = "high"

        class Task(pydantic.BaseModel):
            title: str = pydantic.Field(max_length=24)
            priority: Priority

        class Plan(pydantic.BaseModel):
            tasks: typing.List[Task] = pydantic.Field(max_length=3)
            done: typing.Optional[bool]

        for seed in (1, 2, 3):
            r = self.client.chat.completions.parse(
                model=MODEL,
                messages=user("Plan my day as JSON."),
                response_format=Plan,
                temperature=1.0,
                seed=seed,
                max_tokens=160,
            )
            choice = r.choices[0]
            self.assertEqual(choice.finish_reason, "stop", choice.message.content)
            self.assertIsInstance(choice.message.parsed, Plan)
            self.assertLessEqual(len(choice.message.parsed.tasks), 3)

    def test_the_readme_example_runs(self):
        """The README's structured-outputs example, as written (only the address, model id and
        key of this test's server substituted)."""
        import contextlib
        import io
        import pathlib
        import re

        readme = pathlib.Path(__file__).resolve().parents[2] / "README.md"
        section = readme.read_text().split("### Structured outputs", 1)[1]
        code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
        code = code.replace("http://127.0.0.1:8080/v1", BASE_URL)
        code = code.replace('"SmolLM2-135M-Instruct.Q4_1"', repr(MODEL))
        if KEY_REQUIRED:
            code = code.replace('api_key="unused"', f"api_key={API_KEY!r}")
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            exec(compile(code, "README.md", "exec"), {"__name__": "readme"})
        printed = out.getvalue()
        self.assertRegex(printed, r"name='.*' species='(cat|dog|bird)' age=\d+")

    def test_unsupported_keyword_in_a_strict_schema_is_rejected(self):
        with client(max_retries=0) as c:
            with self.assertRaises(openai.BadRequestError) as cm:
                c.chat.completions.create(
                    model=MODEL,
                    messages=user("Pick a number."),
                    response_format={
                        "type": "json_schema",
                        "json_schema": {
                            "name": "n",
                            "strict": True,
                            "schema": {"type": "integer", "multipleOf": 3},
                        },
                    },
                    max_tokens=8,
                )
        self.assertIn("multipleOf", str(cm.exception))


class ToolsTest(SdkTestCase):
    """A tool-calling round trip as the SDK's users write it: a function tool from a Pydantic
    model, the call streamed (`delta.tool_calls`) and read back by the SDK's `stream()` helper,
    the assistant message appended as the SDK returned it, a `tool` result, and the answer."""

    MESSAGES = user("What is the weather in Paris?")

    @staticmethod
    def weather_tool():
        import pydantic

        class GetWeather(pydantic.BaseModel):
            """Current weather in a city."""

            city: str = pydantic.Field(max_length=20)

        return GetWeather, openai.pydantic_function_tool(GetWeather, name="get_weather")

    def call(self, tool, **kwargs):
        # A named function is constrained to its arguments' schema, so even the small local
        # model makes a valid call; one call is what this test wants.
        return dict(
            model=MODEL,
            messages=self.MESSAGES,
            tools=[tool],
            tool_choice={"type": "function", "function": {"name": "get_weather"}},
            parallel_tool_calls=False,
            temperature=0,
            max_tokens=64,
            **kwargs,
        )

    def test_streamed_call_matches_the_whole_one_and_parses_into_the_model(self):
        GetWeather, tool = self.weather_tool()
        whole = self.client.chat.completions.create(**self.call(tool))
        choice = whole.choices[0]
        self.assertEqual(choice.finish_reason, "tool_calls")
        self.assertIsNone(choice.message.content)
        [expected] = choice.message.tool_calls
        self.assertEqual(expected.type, "function")
        self.assertEqual(expected.function.name, "get_weather")
        GetWeather.model_validate_json(expected.function.arguments)

        # The raw stream: the first piece names the call, the next ones carry its arguments.
        with self.client.chat.completions.create(**self.call(tool), stream=True) as stream:
            chunks = [c for c in stream if c.choices]
        pieces = [t for c in chunks for t in (c.choices[0].delta.tool_calls or [])]
        self.assertGreater(len(pieces), 1, "the arguments arrive in pieces")
        first = pieces[0]
        self.assertEqual((first.index, first.type, first.function.name), (0, "function", "get_weather"))
        self.assertTrue(first.id)
        self.assertTrue(all(p.index == 0 for p in pieces))
        self.assertEqual(
            "".join(p.function.arguments or "" for p in pieces), expected.function.arguments
        )
        self.assertEqual(chunks[-1].choices[0].finish_reason, "tool_calls")

        # The SDK's stream() helper assembles the same call and parses it into the model.
        with self.client.chat.completions.stream(**self.call(tool)) as stream:
            done = [e for e in stream if e.type == "tool_calls.function.arguments.done"]
            final = stream.get_final_completion()
        self.assertEqual(len(done), 1)
        self.assertEqual(done[0].name, "get_weather")
        self.assertIsInstance(done[0].parsed_arguments, GetWeather)
        [call] = final.choices[0].message.tool_calls
        self.assertEqual(call.function.arguments, expected.function.arguments)
        self.assertEqual(call.function.parsed_arguments, done[0].parsed_arguments)

    def test_round_trip_with_the_sdk_message_appended_as_returned(self):
        GetWeather, tool = self.weather_tool()
        first = self.client.chat.completions.create(**self.call(tool), stream=False)
        message = first.choices[0].message
        [call] = message.tool_calls
        city = GetWeather.model_validate_json(call.function.arguments).city
        # As OpenAI's function-calling guide does: the SDK's own message object goes back.
        messages = [*self.MESSAGES, message]
        messages.append(
            {
                "role": "tool",
                "tool_call_id": call.id,
                "content": json.dumps({"city": city, "temperature": 18, "sky": "sunny"}),
            }
        )
        r = self.client.chat.completions.create(
            model=MODEL,
            messages=messages,
            tools=[tool],
            tool_choice="none",
            temperature=0,
            max_tokens=24,
        )
        answer = r.choices[0]
        self.assertIn(answer.finish_reason, ("stop", "length"))
        self.assertTrue(answer.message.content)
        self.assertFalse(answer.message.tool_calls)
        self.assert_usage(r.usage, max_tokens=24)


class CompletionsTest(SdkTestCase):
    PROMPT = "The capital of France is"

    def create(self, **kwargs):
        return self.client.completions.create(
            model=MODEL, prompt=self.PROMPT, max_tokens=8, temperature=0, **kwargs
        )

    def test_completion(self):
        r = self.create()
        self.assertEqual(r.object, "text_completion")
        self.assertEqual(r.model, MODEL)
        self.assertEqual(len(r.choices), 1)
        self.assertEqual(r.choices[0].index, 0)
        self.assertTrue(r.choices[0].text)
        self.assertIn(r.choices[0].finish_reason, ("stop", "length"))
        self.assert_usage(r.usage, max_tokens=8)

    def test_stream_matches_the_non_streamed_text(self):
        expected = self.create()
        with self.create(stream=True) as stream:
            chunks = list(stream)
        self.assertTrue(chunks)
        self.assertEqual(len({c.id for c in chunks}), 1, "one id across chunks")
        for c in chunks:
            self.assertEqual(c.object, "text_completion")
            self.assertEqual(len(c.choices), 1)
        self.assertIn(chunks[-1].choices[0].finish_reason, ("stop", "length"))
        for c in chunks[:-1]:
            self.assertIsNone(c.choices[0].finish_reason)
        text = "".join(c.choices[0].text for c in chunks)
        self.assertEqual(text, expected.choices[0].text)


class AsyncTest(unittest.IsolatedAsyncioTestCase):
    async def asyncSetUp(self):
        # IsolatedAsyncioTestCase runs the loop in debug mode, which logs any step over 0.1 s
        # (the SDK's first request imports and builds a lot); that is noise here.
        asyncio.get_running_loop().slow_callback_duration = 10.0
        self.client = async_client()

    async def asyncTearDown(self):
        await self.client.close()

    async def test_async_chat(self):
        r = await self.client.chat.completions.create(
            model=MODEL, messages=user(PROMPT), max_tokens=8, temperature=0
        )
        self.assertTrue(r.choices[0].message.content)
        self.assertIn(r.choices[0].finish_reason, ("stop", "length"))
        self.assertEqual(r.usage.total_tokens, r.usage.prompt_tokens + r.usage.completion_tokens)

    async def test_async_stream_matches_the_non_streamed_answer(self):
        expected = await asyncio.to_thread(greedy_chat)
        stream = await self.client.chat.completions.create(
            model=MODEL,
            messages=user(PROMPT),
            max_tokens=MAX_TOKENS,
            temperature=0,
            stream=True,
            stream_options={"include_usage": True},
        )
        chunks = [c async for c in stream]
        self.assertEqual(chunks[0].choices[0].delta.role, "assistant")
        self.assertEqual(chunks[-1].choices, [])
        self.assertIsNotNone(chunks[-1].usage)
        text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        self.assertEqual(text, expected.choices[0].message.content)

    async def test_concurrent_requests(self):
        prompts = ["Say hello.", "Name a color.", "Count to three.", "Name a fruit."]
        results = await asyncio.gather(
            *(
                self.client.chat.completions.create(
                    model=MODEL, messages=user(p), max_tokens=8, temperature=0
                )
                for p in prompts
            )
        )
        self.assertEqual(len(results), len(prompts))
        self.assertEqual(len({r.id for r in results}), len(prompts), "distinct ids")
        for r in results:
            self.assertTrue(r.choices[0].message.content)
            self.assertIn(r.choices[0].finish_reason, ("stop", "length"))
            self.assertLessEqual(r.usage.completion_tokens, 8)


class ErrorsTest(unittest.TestCase):
    def setUp(self):
        self.client = client(max_retries=0)

    def tearDown(self):
        self.client.close()

    def test_unknown_model_is_not_found(self):
        with self.assertRaises(openai.NotFoundError) as cm:
            self.client.chat.completions.create(
                model="no-such-model", messages=user("hi"), max_tokens=4
            )
        e = cm.exception
        self.assertEqual(e.status_code, 404)
        self.assertIsInstance(e.body, dict)
        self.assertEqual(e.code, "model_not_found")

    def test_unknown_model_retrieve_is_not_found(self):
        with self.assertRaises(openai.NotFoundError):
            self.client.models.retrieve("no-such-model")

    def test_out_of_range_temperature_names_the_param(self):
        with self.assertRaises(openai.BadRequestError) as cm:
            self.client.chat.completions.create(
                model=MODEL, messages=user("hi"), max_tokens=4, temperature=5
            )
        e = cm.exception
        self.assertEqual(e.status_code, 400)
        # The SDK unwraps {"error": {...}} and exposes the inner object as e.body.
        self.assertIsInstance(e.body, dict)
        self.assertEqual(e.body.get("param"), "temperature")
        self.assertEqual(e.body.get("type"), "invalid_request_error")
        self.assertTrue(e.body.get("message"))
        self.assertEqual(e.param, "temperature")
        self.assertEqual(e.type, "invalid_request_error")

    def test_empty_messages_is_a_bad_request(self):
        with self.assertRaises(openai.BadRequestError) as cm:
            self.client.chat.completions.create(model=MODEL, messages=[], max_tokens=4)
        self.assertEqual(cm.exception.param, "messages")

    def test_a_revoked_or_made_up_hearth_key_is_unauthorized(self):
        # Hearth's own keys are always checked, whether or not the server needs one.
        with openai.OpenAI(base_url=BASE_URL, api_key="sk-hearth-wrong", max_retries=0) as c:
            with self.assertRaises(openai.AuthenticationError) as cm:
                c.models.list()
            self.assertEqual(cm.exception.status_code, 401)
            with self.assertRaises(openai.AuthenticationError):
                c.chat.completions.create(model=MODEL, messages=user("hi"), max_tokens=4)

    def test_a_foreign_key_is_refused_only_where_a_key_is_required(self):
        with openai.OpenAI(base_url=BASE_URL, api_key="sk-wrong", max_retries=0) as c:
            if KEY_REQUIRED:
                with self.assertRaises(openai.AuthenticationError) as cm:
                    c.models.list()
                self.assertEqual(cm.exception.status_code, 401)
            else:
                ids = [m.id for m in c.models.list().data]
                self.assertIn(MODEL, ids)


if __name__ == "__main__":
    unittest.main()
