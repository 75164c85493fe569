// The Vercel AI SDK (`ai` + `@ai-sdk/openai-compatible`), unchanged, against a running Ferrule.
//
// FERRULE_BASE_URL is the OpenAI base URL of the proxy, e.g. http://127.0.0.1:8766/v1 (what an app
// would configure); FERRULE_API_KEY is the key sent as `Authorization: Bearer`. The upstream is the
// simulated Anthropic API, scripted by `[mock:...]` directives in the last user message.
// Run by tests/test_clients_node.py (`node --test`), once per Ferrule backend.

import assert from "node:assert/strict";
import { test } from "node:test";

import { createOpenAICompatible } from "@ai-sdk/openai-compatible";
import { generateText, stepCountIs, streamText, tool } from "ai";
import { z } from "zod";

const BASE_URL = process.env.FERRULE_BASE_URL;
if (!BASE_URL) throw new Error("FERRULE_BASE_URL is not set");
const API_KEY = process.env.FERRULE_API_KEY ?? "sk-ant-test-0000000000000000";

const ferrule = createOpenAICompatible({
  name: "ferrule",
  baseURL: BASE_URL,
  apiKey: API_KEY,
  includeUsage: true,
});
const model = ferrule.chatModel("tokenpak-anthropic/claude-sonnet-4-6");

const weather = tool({
  description: "Current weather in a city",
  inputSchema: z.object({
    city: z.string().describe("City name"),
    unit: z.enum(["celsius", "fahrenheit"]),
  }),
});

test("generateText: text, finish reason and usage", async () => {
  const result = await generateText({ model, prompt: "Hello there", maxRetries: 0 });
  assert.ok(result.text.length > 0, "empty text");
  assert.equal(result.finishReason, "stop");
  assert.ok(result.usage.inputTokens > 0, `usage: ${JSON.stringify(result.usage)}`);
  assert.ok(result.usage.outputTokens > 0, `usage: ${JSON.stringify(result.usage)}`);
});

test("streamText: the collected text equals the generateText answer", async () => {
  const args = { model, prompt: "Tell me something [mock:words=30]", maxRetries: 0 };
  const plain = await generateText(args);
  const result = streamText(args);
  let text = "";
  let parts = 0;
  for await (const delta of result.textStream) {
    text += delta;
    parts += 1;
  }
  assert.ok(parts > 1, `expected several text deltas, got ${parts}`);
  assert.equal(text, plain.text); // the simulated answer is a function of the request
  assert.equal(await result.finishReason, "stop");
  const usage = await result.usage; // from the include_usage chunk
  assert.ok(usage.inputTokens > 0 && usage.outputTokens > 0, JSON.stringify(usage));
});

test("generateText: a tool call arrives with its name and parsed input", async () => {
  const result = await generateText({
    model,
    prompt: "What is the weather in Paris? [mock:tool]",
    tools: { get_weather: weather },
    maxRetries: 0,
  });
  assert.equal(result.finishReason, "tool-calls");
  assert.equal(result.toolCalls.length, 1);
  const [call] = result.toolCalls;
  assert.equal(call.toolName, "get_weather");
  assert.ok(call.toolCallId.startsWith("toolu_"), call.toolCallId);
  assert.equal(typeof call.input, "object");
  assert.equal(typeof call.input.city, "string");
  assert.equal(call.input.unit, "celsius"); // the simulated model picks the first enum value
});

test("streamText: a streamed tool call is rebuilt with its parsed input", async () => {
  const result = streamText({
    model,
    prompt: "Weather in Oslo? [mock:tool]",
    tools: { get_weather: weather },
    maxRetries: 0,
  });
  const deltas = [];
  for await (const part of result.fullStream) {
    if (part.type === "tool-input-delta") deltas.push(part.delta);
    if (part.type === "error") throw part.error;
  }
  const calls = await result.toolCalls;
  assert.equal(calls.length, 1);
  assert.equal(calls[0].toolName, "get_weather");
  assert.deepEqual(calls[0].input, JSON.parse(deltas.join("")));
  assert.equal(await result.finishReason, "tool-calls");
});

test("tool round trip: the tool result goes back and reaches Anthropic as tool_result", async () => {
  // The SDK runs the tool, then sends the result; its text holds [mock:echo], so the second
  // answer is the Anthropic request Ferrule sent upstream.
  const result = await generateText({
    model,
    prompt: "Weather in Rome? [mock:tool]",
    tools: {
      get_weather: tool({
        description: weather.description,
        inputSchema: weather.inputSchema,
        execute: async ({ city }) => `sunny in ${city} [mock:echo]`,
      }),
    },
    stopWhen: stepCountIs(2),
    maxRetries: 0,
  });
  assert.equal(result.steps.length, 2);
  const [call] = result.steps[0].toolCalls;
  const sent = JSON.parse(result.text);
  const [user, assistant, toolTurn] = sent.messages;
  assert.equal(user.role, "user");
  assert.equal(assistant.role, "assistant");
  const use = assistant.content.find((b) => b.type === "tool_use");
  assert.equal(use.id, call.toolCallId);
  assert.equal(use.name, "get_weather");
  assert.deepEqual(use.input, call.input);
  assert.equal(toolTurn.role, "user");
  const res = toolTurn.content.find((b) => b.type === "tool_result");
  assert.equal(res.tool_use_id, call.toolCallId);
  assert.match(JSON.stringify(res.content), /sunny in /);
  assert.equal(sent.tools[0].name, "get_weather");
  assert.equal(sent.tools[0].input_schema.type, "object");
});

test("reasoning: reasoning_content arrives as the SDK's reasoning", async () => {
  const args = {
    model,
    prompt: "Think first [mock:thinking]",
    providerOptions: { ferrule: { reasoningEffort: "low" } },
    maxRetries: 0,
  };
  const plain = await generateText(args);
  assert.ok(plain.reasoningText && plain.reasoningText.length > 0, "no reasoning text");
  assert.ok(plain.text.length > 0);
  assert.ok(!plain.text.includes(plain.reasoningText), "reasoning leaked into the text");
  const streamed = streamText(args);
  let reasoning = "";
  for await (const part of streamed.fullStream) {
    if (part.type === "reasoning-delta") reasoning += part.text;
    if (part.type === "error") throw part.error;
  }
  assert.equal(reasoning, plain.reasoningText);
});

test("an upstream 429 surfaces as an API error with its status", async () => {
  await assert.rejects(
    generateText({ model, prompt: "Hello [mock:error=429]", maxRetries: 0 }),
    (err) => {
      assert.equal(err.statusCode, 429, String(err));
      return true;
    },
  );
});
