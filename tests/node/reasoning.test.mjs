// Agent tool loops with reasoning through Ferrule, with the `openai` npm package and LangChain.js
// (`@langchain/openai` ChatOpenAI), unchanged (issue 13). The upstream is the simulated Anthropic
// API, which enforces the thinking-block rule: with thinking on, the assistant turn whose tool
// calls a request answers must start with its thinking blocks, unmodified, with their signatures.
// These clients never see a signature, so Ferrule has to put the blocks back itself.
//
// FERRULE_BASE_URL: the proxy's OpenAI base URL (…/v1); FERRULE_API_KEY: its key;
// FERRULE_MOCK_URL: the simulated upstream, scripted and read through its /_mock/ endpoints.
// Run by tests/test_clients_reasoning.py (`node --test`), once per Ferrule backend.
//
// Every loop is scripted (one entry per upstream request): "tools2" (two parallel tool calls),
// "tool" (one more call after the results), "words=5" (the answer). Afterwards each recorded
// upstream request is sent to the simulated upstream again with its entry: it must be accepted as
// Ferrule sent it, and its answer (a function of the request, signatures included) is the one the
// client got, which gives the thinking blocks the next request had to carry.

import assert from "node:assert/strict";
import { beforeEach, test } from "node:test";

import { AIMessage, HumanMessage, ToolMessage } from "@langchain/core/messages";
import { ChatOpenAI } from "@langchain/openai";
import OpenAI from "openai";

const BASE_URL = process.env.FERRULE_BASE_URL;
const MOCK_URL = process.env.FERRULE_MOCK_URL;
if (!BASE_URL || !MOCK_URL) throw new Error("FERRULE_BASE_URL and FERRULE_MOCK_URL must be set");
const API_KEY = process.env.FERRULE_API_KEY ?? "sk-ant-test-0000000000000000";

const PREFIX = "tokenpak-anthropic/";
const SONNET_46 = "claude-sonnet-4-6"; // thinking only when asked; adaptive or enabled
const OPUS_55 = "claude-opus-5-5"; // adaptive always on; blocks bound to their prefix
const FABLE_52 = "claude-fable-5-2"; // thinking text omitted: empty blocks must come back too
const LOOP = ["tools2", "tool", "words=5"];
const THINKING = new Set(["thinking", "redacted_thinking"]);

const WEATHER_TOOL = {
  type: "function",
  function: {
    name: "get_weather",
    description: "Current weather in a city",
    parameters: {
      type: "object",
      properties: { city: { type: "string" } },
      required: ["city"],
    },
  },
};
const TIME_TOOL = {
  type: "function",
  function: {
    name: "get_time",
    description: "Local time in a timezone",
    parameters: { type: "object", properties: { tz: { type: "string" } }, required: ["tz"] },
  },
};

// -- the simulated upstream ----------------------------------------------------------------------

async function mockPost(path, body) {
  const resp = await fetch(MOCK_URL + path, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  assert.equal(resp.status, 200, `${path}: ${await resp.text()}`);
}

async function messageRequests() {
  const resp = await fetch(MOCK_URL + "/_mock/requests");
  return (await resp.json()).filter((r) => r.path === "/v1/messages");
}

// The upstream's non-streaming answer to a recorded request, under the entry that shaped it.
async function replay(recorded, entry) {
  await mockPost("/_mock/script", [entry]);
  const headers = {
    "x-api-key": API_KEY,
    "anthropic-version": recorded.headers["anthropic-version"],
    "content-type": "application/json",
  };
  const beta = recorded.headers["anthropic-beta"];
  if (beta) headers["anthropic-beta"] = beta;
  const { stream: _stream, ...body } = recorded.body;
  const resp = await fetch(MOCK_URL + "/v1/messages", {
    method: "POST",
    headers,
    body: JSON.stringify(body),
  });
  const text = await resp.text();
  assert.equal(
    resp.status,
    200,
    `the upstream refuses the request as Ferrule sent it: ${text}\n` +
      `messages: ${JSON.stringify(body.messages).slice(0, 3000)}`,
  );
  return JSON.parse(text);
}

const textOf = (message) =>
  message.content
    .filter((b) => b.type === "text")
    .map((b) => b.text)
    .join("");

// One upstream request per model call, each accepted and thinking; every request after the
// first carries each earlier tool turn's thinking blocks, exact, in front of that turn.
async function checkLoop(model, toolIds, finalText, stream) {
  const recorded = await messageRequests();
  assert.equal(recorded.length, LOOP.length, JSON.stringify(recorded.map((r) => r.body.messages)));
  const answers = [];
  for (const [n, rec] of recorded.entries()) answers.push(await replay(rec, LOOP[n]));
  for (const answer of answers.slice(0, -1)) assert.equal(answer.stop_reason, "tool_use");
  assert.equal(answers.at(-1).stop_reason, "end_turn");
  const expected = textOf(answers.at(-1));
  assert.equal(expected.split(" ").length, 5);
  assert.equal(finalText, expected);
  for (const [n, rec] of recorded.entries()) {
    assert.equal(rec.body.model, model);
    assert.equal(Boolean(rec.body.stream), stream, `request ${n}: stream=${rec.body.stream}`);
    const assistants = rec.body.messages.filter((m) => m.role === "assistant");
    assert.equal(assistants.length, n, JSON.stringify(rec.body.messages));
    for (const [turn, sent] of assistants.entries()) {
      assert.ok(Array.isArray(sent.content), JSON.stringify(sent));
      const ids = sent.content.filter((b) => b.type === "tool_use").map((b) => b.id);
      assert.deepEqual(ids, toolIds[turn], `request ${n}, assistant turn ${turn}`);
    }
  }
  for (const [n, rec] of recorded.entries()) {
    assert.equal(
      answers[n].content[0].type,
      "thinking",
      `request ${n}: the model did not think: thinking=${JSON.stringify(rec.body.thinking)}`,
    );
    const assistants = rec.body.messages.filter((m) => m.role === "assistant");
    for (const [turn, sent] of assistants.entries()) {
      const blocks = answers[turn].content.filter((b) => THINKING.has(b.type));
      assert.deepEqual(
        sent.content.slice(0, blocks.length),
        blocks,
        `request ${n}, assistant turn ${turn}: the thinking blocks of that answer ` +
          "(with their signatures) are not in front of it",
      );
    }
  }
}

// -- what the client saw -------------------------------------------------------------------------

// A fetch that records the status and warnings of every chat-completions response.
function recordingFetch() {
  const seen = [];
  const wrapped = async (url, init) => {
    const resp = await fetch(url, init);
    if (String(url).endsWith("/chat/completions")) {
      seen.push({ status: resp.status, warning: resp.headers.get("x-ferrule-warning") });
    }
    return resp;
  };
  return { seen, fetch: wrapped };
}

function checkSeen(seen, calls) {
  assert.deepEqual(seen.map((s) => s.status), Array(calls).fill(200), JSON.stringify(seen));
  for (const { warning } of seen) {
    assert.ok(!warning || !warning.includes("thinking"), `degraded: ${warning}`);
  }
}

const toolOutput = (name, args) => `${name}(${args}): sunny, 22C`;

beforeEach(async () => {
  await mockPost("/_mock/reset");
  await mockPost("/_mock/script", LOOP);
});

// -- openai npm: the manual loop -----------------------------------------------------------------

async function openaiLoop(client, model, stream) {
  const messages = [{ role: "user", content: "Weather and time in Paris, then decide." }];
  const ids = [];
  for (let step = 0; step < 5; step += 1) {
    const params = {
      model: PREFIX + model,
      messages,
      tools: [WEATHER_TOOL, TIME_TOOL],
      reasoning_effort: "medium",
    };
    let assistant;
    if (stream) {
      let content = "";
      const calls = [];
      for await (const chunk of await client.chat.completions.create({ ...params, stream: true })) {
        const delta = chunk.choices[0]?.delta;
        if (!delta) continue;
        content += delta.content ?? "";
        for (const d of delta.tool_calls ?? []) {
          calls[d.index] ??= { id: "", type: "function", function: { name: "", arguments: "" } };
          if (d.id) calls[d.index].id = d.id;
          calls[d.index].function.name += d.function?.name ?? "";
          calls[d.index].function.arguments += d.function?.arguments ?? "";
        }
      }
      assistant = { role: "assistant", content: content || null };
      if (calls.length) assistant.tool_calls = calls;
    } else {
      const answer = await client.chat.completions.create(params);
      assistant = answer.choices[0].message; // sent back as the SDK returned it
    }
    const calls = assistant.tool_calls ?? [];
    if (!calls.length) return { final: assistant.content ?? "", ids };
    ids.push(calls.map((c) => c.id));
    messages.push(assistant);
    for (const c of calls) {
      messages.push({
        role: "tool",
        tool_call_id: c.id,
        content: toolOutput(c.function.name, c.function.arguments),
      });
    }
  }
  throw new Error("the loop did not end");
}

for (const model of [SONNET_46, OPUS_55]) {
  for (const stream of [false, true]) {
    const name = `openai npm: tool loop with reasoning_effort on ${model}`;
    test(name + (stream ? ", streamed" : ""), async () => {
      const { seen, fetch: recording } = recordingFetch();
      const client = new OpenAI({
        baseURL: BASE_URL,
        apiKey: API_KEY,
        maxRetries: 0,
        fetch: recording,
      });
      const { final, ids } = await openaiLoop(client, model, stream);
      assert.deepEqual(ids.map((i) => i.length), [2, 1]); // parallel calls, then one
      checkSeen(seen, LOOP.length);
      await checkLoop(model, ids, final, stream);
    });
  }
}

// -- LangChain.js: ChatOpenAI with bindTools, a manual loop ------------------------------------

async function langchainLoop(llm, stream) {
  const bound = llm.bindTools([WEATHER_TOOL, TIME_TOOL]);
  const messages = [new HumanMessage("Weather and time in Paris, then decide.")];
  const ids = [];
  for (let step = 0; step < 5; step += 1) {
    let ai;
    if (stream) {
      let total;
      for await (const chunk of await bound.stream(messages)) {
        total = total ? total.concat(chunk) : chunk;
      }
      ai = new AIMessage({
        content: total.content,
        tool_calls: total.tool_calls,
        additional_kwargs: total.additional_kwargs,
      });
    } else {
      ai = await bound.invoke(messages);
    }
    if (!ai.tool_calls?.length) return { final: ai.content, ids };
    ids.push(ai.tool_calls.map((c) => c.id));
    messages.push(ai);
    for (const c of ai.tool_calls) {
      messages.push(
        new ToolMessage({
          content: toolOutput(c.name, JSON.stringify(c.args)),
          tool_call_id: c.id,
        }),
      );
    }
  }
  throw new Error("the loop did not end");
}

const LANGCHAIN_SETUPS = [
  { model: OPUS_55, how: "reasoning: {effort}", options: { reasoning: { effort: "medium" } } },
  { model: FABLE_52, how: "modelKwargs", options: { modelKwargs: { reasoning_effort: "medium" } } },
];

for (const { model, how, options } of LANGCHAIN_SETUPS) {
  for (const stream of [false, true]) {
    const name = `LangChain.js: tool loop with ${how} on ${model}`;
    test(name + (stream ? ", streamed" : ""), async () => {
      const { seen, fetch: recording } = recordingFetch();
      const llm = new ChatOpenAI({
        model: PREFIX + model,
        apiKey: API_KEY,
        maxRetries: 0,
        configuration: { baseURL: BASE_URL, fetch: recording },
        ...options,
      });
      const { final, ids } = await langchainLoop(llm, stream);
      assert.deepEqual(ids.map((i) => i.length), [2, 1]); // parallel calls, then one
      checkSeen(seen, LOOP.length);
      await checkLoop(model, ids, final, stream);
    });
  }
}
