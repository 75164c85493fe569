// The `openai` npm package's Responses API through Ferrule's POST /v1/responses, unchanged
// (issue 14): text, a stream, a function tool across two turns chained by previous_response_id,
// and structured output through text.format (json_schema). The upstream is the simulated
// Anthropic API, scripted as the model through /_mock/script and read through /_mock/requests.
//
// FERRULE_BASE_URL: the proxy's OpenAI base URL (…/v1); FERRULE_API_KEY: its key;
// FERRULE_MOCK_URL: the simulated upstream. Run by tests/test_clients_responses.py
// (`node --test`), once per Ferrule backend.

import assert from "node:assert/strict";
import { beforeEach, test } from "node:test";

import OpenAI from "openai";
import { zodTextFormat } from "openai/helpers/zod";
import { z } from "zod";

const BASE_URL = process.env.FERRULE_BASE_URL;
const MOCK_URL = process.env.FERRULE_MOCK_URL;
if (!BASE_URL || !MOCK_URL) throw new Error("FERRULE_BASE_URL and FERRULE_MOCK_URL must be set");
const API_KEY = process.env.FERRULE_API_KEY ?? "sk-ant-test-0000000000000000";
const MODEL = "claude-sonnet-4-6";

const client = new OpenAI({ baseURL: BASE_URL, apiKey: API_KEY, maxRetries: 0 });

const LOOKUP_TOOL = {
  type: "function",
  name: "lookup",
  description: "Look a word up in the dictionary",
  parameters: {
    type: "object",
    properties: { word: { type: "string" } },
    required: ["word"],
    additionalProperties: false,
  },
  strict: true,
};

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

beforeEach(async () => {
  await mockPost("/_mock/reset");
});

test("responses.create: text", async () => {
  await mockPost("/_mock/script", [{ text: "Hello from Claude through Ferrule." }]);
  const resp = await client.responses.create({
    model: MODEL,
    input: "Say hello",
    instructions: "Be brief.",
  });
  assert.equal(resp.object, "response");
  assert.equal(resp.status, "completed");
  assert.match(resp.id, /^resp_/);
  assert.equal(resp.output_text, "Hello from Claude through Ferrule.");
  assert.equal(resp.usage.output_tokens, 5);
  assert.ok(resp.usage.input_tokens > 0);
  const [sent] = await messageRequests();
  assert.deepEqual(sent.body.system, [{ type: "text", text: "Be brief." }]);
  assert.equal(sent.body.model, MODEL);
});

test("responses.create stream: events in order, response.completed last", async () => {
  await mockPost("/_mock/script", [{ text: "one two three four" }]);
  const stream = await client.responses.create({ model: MODEL, input: "Count", stream: true });
  const events = [];
  for await (const event of stream) events.push(event);
  const types = events.map((e) => e.type);
  assert.equal(types[0], "response.created");
  assert.equal(types[1], "response.in_progress");
  assert.equal(types.at(-1), "response.completed");
  assert.equal(types.filter((t) => t === "response.completed").length, 1);
  for (const t of [
    "response.output_item.added",
    "response.content_part.added",
    "response.output_text.done",
    "response.content_part.done",
    "response.output_item.done",
  ]) {
    assert.ok(types.includes(t), `${t} missing: ${types}`);
  }
  const seq = events.map((e) => e.sequence_number);
  for (let i = 1; i < seq.length; i++) assert.ok(seq[i] > seq[i - 1], `sequence: ${seq}`);
  const deltas = events.filter((e) => e.type === "response.output_text.delta");
  assert.equal(deltas.length, 4);
  assert.equal(deltas.map((e) => e.delta).join(""), "one two three four");
  const done = events.at(-1).response;
  assert.equal(done.status, "completed");
  assert.equal(done.output_text ?? done.output[0].content[0].text, "one two three four");
  assert.equal(done.usage.output_tokens, 4);
});

test("function tool across two turns with previous_response_id", async () => {
  await mockPost("/_mock/script", [
    { tool_calls: [{ name: "lookup", input: { word: "ferrule" } }] },
    { text: "A ferrule is a metal ring." },
  ]);
  const first = await client.responses.create({
    model: MODEL,
    input: "What is a ferrule? Look it up.",
    tools: [LOOKUP_TOOL],
  });
  assert.equal(first.status, "completed");
  const calls = first.output.filter((item) => item.type === "function_call");
  assert.equal(calls.length, 1, JSON.stringify(first.output));
  const [call] = calls;
  assert.equal(call.name, "lookup");
  assert.deepEqual(JSON.parse(call.arguments), { word: "ferrule" });
  assert.ok(call.call_id);

  const second = await client.responses.create({
    model: MODEL,
    previous_response_id: first.id,
    input: [
      { type: "function_call_output", call_id: call.call_id, output: "a ring that holds parts" },
    ],
    tools: [LOOKUP_TOOL],
  });
  assert.equal(second.status, "completed");
  assert.equal(second.previous_response_id, first.id);
  assert.equal(second.output_text, "A ferrule is a metal ring.");

  // The second upstream request carries the whole conversation, rebuilt from the stored first
  // response: the question, the tool call, and its result under the same id.
  const sent = await messageRequests();
  assert.equal(sent.length, 2);
  const messages = sent[1].body.messages;
  assert.equal(messages.length, 3, JSON.stringify(messages));
  assert.equal(messages[0].role, "user");
  const question = messages[0].content;
  const questionText =
    typeof question === "string" ? question : question.map((b) => b.text ?? "").join("");
  assert.equal(questionText, "What is a ferrule? Look it up.");
  const toolUse = messages[1].content.find((b) => b.type === "tool_use");
  assert.ok(toolUse, JSON.stringify(messages[1]));
  assert.equal(toolUse.name, "lookup");
  assert.deepEqual(toolUse.input, { word: "ferrule" });
  const result = messages[2].content.find((b) => b.type === "tool_result");
  assert.ok(result, JSON.stringify(messages[2]));
  assert.equal(result.tool_use_id, toolUse.id);
  const resultText =
    typeof result.content === "string"
      ? result.content
      : result.content.map((b) => b.text ?? "").join("");
  assert.equal(resultText, "a ring that holds parts");
});

test("structured output: text.format json_schema", async () => {
  const schema = {
    type: "object",
    properties: {
      word: { type: "string" },
      letters: { type: "integer" },
      vowels: { type: "array", items: { type: "string" } },
    },
    required: ["word", "letters", "vowels"],
    additionalProperties: false,
  };
  const resp = await client.responses.create({
    model: MODEL,
    input: "Describe the word 'ferrule'",
    text: { format: { type: "json_schema", name: "word_info", schema, strict: true } },
  });
  assert.equal(resp.status, "completed");
  const parsed = JSON.parse(resp.output_text);
  assert.deepEqual(Object.keys(parsed).sort(), ["letters", "vowels", "word"]);
  assert.equal(typeof parsed.word, "string");
  assert.ok(Number.isInteger(parsed.letters));
  assert.ok(Array.isArray(parsed.vowels));
  // the schema reached the upstream as Anthropic's structured-output format
  const [sent] = await messageRequests();
  assert.equal(sent.body.output_config?.format?.type, "json_schema", JSON.stringify(sent.body));
  assert.deepEqual(sent.body.output_config.format.schema.required, ["word", "letters", "vowels"]);
  // and the stored response echoes the format
  const again = await client.responses.retrieve(resp.id);
  assert.equal(again.text.format.type, "json_schema");
  assert.equal(again.text.format.name, "word_info");
});

test("responses.parse with a zod text format", async () => {
  const Word = z.object({ word: z.string(), letters: z.number().int() });
  const resp = await client.responses.parse({
    model: MODEL,
    input: "Describe the word 'ferrule'",
    text: { format: zodTextFormat(Word, "word") },
  });
  assert.equal(resp.status, "completed");
  // output_parsed is the SDK's own parse of the answer against the zod schema
  assert.ok(resp.output_parsed, JSON.stringify(resp.output));
  assert.equal(typeof resp.output_parsed.word, "string");
  assert.ok(Number.isInteger(resp.output_parsed.letters));
  assert.deepEqual(resp.output_parsed, Word.parse(JSON.parse(resp.output_text)));
});
