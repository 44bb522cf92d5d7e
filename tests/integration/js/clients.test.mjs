// Issue 20: the client libraries application developers use, each exactly as its documentation
// shows, with nothing changed but the base URL: LangChain JS (@langchain/openai, on Chat
// Completions and on the Responses API), the Vercel AI SDK (`ai` with @ai-sdk/openai, whose
// default model speaks the Responses API, and @ai-sdk/openai-compatible on Chat Completions) and
// LlamaIndex TS (@llamaindex/openai; its packages are marked deprecated upstream, and still in use).
// Each does chat, streaming, structured output, forced tool calls and a tool loop (call -> result
// -> answer), and embeddings. The 260K-parameter model writes nonsense: tool calls are forced with
// tool_choice, and the checks are on the protocol (types, names, schema conformance), never prose.

import assert from 'node:assert/strict';
import { before, describe, test } from 'node:test';

import { createOpenAI } from '@ai-sdk/openai';
import { createOpenAICompatible } from '@ai-sdk/openai-compatible';
import { HumanMessage, ToolMessage } from '@langchain/core/messages';
import { ChatOpenAI, OpenAIEmbeddings } from '@langchain/openai';
import { tool as llamaTool } from '@llamaindex/core/tools';
import { OpenAI as LlamaOpenAI, OpenAIEmbedding } from '@llamaindex/openai';
import { embed, generateObject, generateText, stepCountIs, streamText, tool } from 'ai';
import { z } from 'zod';

import { MODELS, modelId, useServer } from './harness.mjs';

const KEY = 'sk-inferbox-test';
const Weather = z.object({ city: z.string().max(8), days: z.number().int().min(1).max(7) });
const WEATHER_JSON = {
  type: 'object',
  properties: { city: { type: 'string', maxLength: 8 }, days: { type: 'integer', minimum: 1, maximum: 7 } },
  required: ['city', 'days'],
  additionalProperties: false,
};
const Pair = z.object({ zeta: z.number().int().min(0).max(9), alpha: z.string().max(6) });

describe('client libraries, base URL only (stories260K-chatml.gguf)', () => {
  const ctx = useServer({ model: MODELS.chatml, parallel: 2, args: ['--ctx-size', 2048] });
  let model;
  let baseURL;
  before(async () => {
    model = await modelId(ctx.server);
    baseURL = `${ctx.server.url}/v1`;
  });

  describe('LangChain JS (@langchain/openai)', () => {
    const chat = (extra = {}) =>
      new ChatOpenAI({ model, apiKey: KEY, configuration: { baseURL }, temperature: 0, maxTokens: 16, ...extra });

    test('invoke and stream', ctx.wrap(async () => {
      const msg = await chat().invoke('Hi');
      assert.equal(typeof msg.content, 'string');
      assert.ok(msg.content.length > 0);
      assert.ok(msg.usage_metadata.input_tokens > 0);
      const parts = [];
      for await (const chunk of await chat().stream('Hi')) {
        parts.push(chunk.content);
      }
      assert.ok(parts.filter((p) => p).length >= 5, `${parts.length} chunks`);
      assert.equal(parts.join(''), msg.content);
    }));

    test('withStructuredOutput (json_schema): an object in the schema\'s order', ctx.wrap(async () => {
      const out = await chat({ maxTokens: 80 }).withStructuredOutput(Pair, { method: 'jsonSchema', name: 'pair' })
        .invoke('Give a pair');
      assert.deepEqual(Object.keys(out), ['zeta', 'alpha']);
      Pair.parse(out);
    }));

    test('bindTools with a forced tool, then the tool result: a tool loop', ctx.wrap(async () => {
      const llm = chat({ maxTokens: 300 });
      const withTools = llm.bindTools(
        [{ type: 'function', function: { name: 'get_weather', description: 'Weather', parameters: WEATHER_JSON } }],
        { tool_choice: 'get_weather', parallel_tool_calls: false },
      );
      const question = new HumanMessage('Weather in Paris?');
      const ai = await withTools.invoke([question]);
      assert.equal(ai.tool_calls.length, 1, JSON.stringify(ai));
      assert.equal(ai.tool_calls[0].name, 'get_weather');
      Weather.parse(ai.tool_calls[0].args);
      const answer = await chat({ maxTokens: 8 }).invoke([
        question, ai, new ToolMessage({ tool_call_id: ai.tool_calls[0].id, content: 'sunny, 21 C' }),
      ]);
      assert.equal(typeof answer.content, 'string');
      // The call and its result are in the prompt: more than the question alone.
      const alone = await chat({ maxTokens: 8 }).invoke([question]);
      assert.ok(answer.usage_metadata.input_tokens > alone.usage_metadata.input_tokens + 10,
        `${answer.usage_metadata.input_tokens} vs ${alone.usage_metadata.input_tokens}`);
    }));

    test('useResponsesApi: invoke, stream and a forced tool', ctx.wrap(async () => {
      const llm = chat({ useResponsesApi: true });
      const msg = await llm.invoke('Hi');
      const text = typeof msg.content === 'string' ? msg.content : msg.content.map((c) => c.text ?? '').join('');
      assert.ok(text.length > 0, JSON.stringify(msg.content));
      let streamed = '';
      for await (const chunk of await llm.stream('Hi')) {
        streamed += typeof chunk.content === 'string' ? chunk.content : chunk.content.map((c) => c.text ?? '').join('');
      }
      assert.equal(streamed, text);
      const ai = await chat({ useResponsesApi: true, maxTokens: 300 })
        .bindTools([{ type: 'function', function: { name: 'get_weather', parameters: WEATHER_JSON } }],
          { tool_choice: 'get_weather', parallel_tool_calls: false })
        .invoke('Weather in Paris?');
      assert.equal(ai.tool_calls.length, 1, JSON.stringify(ai));
      Weather.parse(ai.tool_calls[0].args);
    }));

    test('OpenAIEmbeddings', ctx.wrap(async () => {
      const emb = new OpenAIEmbeddings({ model, apiKey: KEY, configuration: { baseURL } });
      const [one, two] = await emb.embedDocuments(['hello', 'world']);
      assert.equal(one.length, two.length);
      assert.ok(one.length > 0);
      assert.equal((await emb.embedQuery('hello')).length, one.length);
    }));
  });

  describe('Vercel AI SDK (ai 5, @ai-sdk/openai on the Responses API, @ai-sdk/openai-compatible)', () => {
    const openai = () => createOpenAI({ baseURL, apiKey: KEY });
    const compatible = () => createOpenAICompatible({ name: 'inferbox', baseURL, apiKey: KEY });

    test('generateText and streamText, on the Responses API and on Chat Completions', ctx.wrap(async () => {
      for (const [what, m] of [['openai(model)', openai()(model)], ['openai.chat', openai().chat(model)],
        ['openai-compatible', compatible()(model)]]) {
        const r = await generateText({ model: m, prompt: 'Hi', maxOutputTokens: 16, temperature: 0 });
        assert.ok(r.text.length > 0, what);
        assert.ok(r.usage.inputTokens > 0 && r.usage.outputTokens > 0, `${what}: ${JSON.stringify(r.usage)}`);
        const s = streamText({ model: m, prompt: 'Hi', maxOutputTokens: 16, temperature: 0 });
        const parts = [];
        for await (const p of s.textStream) {
          parts.push(p);
        }
        assert.ok(parts.length >= 5, `${what}: ${parts.length} text parts`);
        assert.equal(parts.join(''), r.text, what);
      }
    }));

    test('generateObject with a zod schema', ctx.wrap(async () => {
      for (const m of [openai()(model), openai().chat(model)]) {
        const { object } = await generateObject({ model: m, schema: Pair, prompt: 'A pair', maxOutputTokens: 80, temperature: 0 });
        Pair.parse(object);
        assert.deepEqual(Object.keys(object), ['zeta', 'alpha']);
      }
    }));

    test('a tool loop: a forced call, its execute result, then an answer', ctx.wrap(async () => {
      for (const m of [openai()(model), openai().chat(model)]) {
        const seen = [];
        const r = await generateText({
          model: m,
          prompt: 'Weather in Paris?',
          maxOutputTokens: 300,
          temperature: 0,
          tools: {
            get_weather: tool({
              description: 'Weather for a city',
              inputSchema: Weather,
              execute: async (input) => {
                seen.push(input);
                return 'sunny, 21 C';
              },
            }),
          },
          prepareStep: ({ stepNumber }) => ({ toolChoice: stepNumber === 0 ? 'required' : 'none' }),
          stopWhen: stepCountIs(2),
          providerOptions: { openai: { parallelToolCalls: false } },
        });
        assert.equal(r.steps.length, 2, JSON.stringify(r.steps.map((s) => s.finishReason)));
        assert.equal(r.steps[0].toolCalls[0].toolName, 'get_weather');
        assert.equal(seen.length, 1);
        Weather.parse(seen[0]);
        assert.equal(r.steps[1].toolCalls.length, 0);
        // The second step's prompt carries the call and its result: more than the question alone.
        const alone = await generateText({ model: m, prompt: 'Weather in Paris?', maxOutputTokens: 4, temperature: 0 });
        assert.ok(r.steps[1].usage.inputTokens > alone.usage.inputTokens + 10,
          `${r.steps[1].usage.inputTokens} vs ${alone.usage.inputTokens}`);
      }
    }));

    test('embed', ctx.wrap(async () => {
      const { embedding } = await embed({ model: openai().textEmbeddingModel(model), value: 'hello' });
      assert.ok(Array.isArray(embedding) && embedding.length > 0);
    }));
  });

  describe('LlamaIndex TS (@llamaindex/openai)', () => {
    const llm = (extra = {}) => new LlamaOpenAI({ model, apiKey: KEY, baseURL, temperature: 0, maxTokens: 16, ...extra });
    const hi = [{ role: 'user', content: 'Hi' }];

    test('chat and streaming chat', ctx.wrap(async () => {
      const res = await llm().chat({ messages: hi });
      assert.equal(res.message.role, 'assistant');
      assert.equal(typeof res.message.content, 'string');
      assert.ok(res.message.content.length > 0);
      const parts = [];
      for await (const chunk of await llm().chat({ messages: hi, stream: true })) {
        parts.push(chunk.delta);
      }
      assert.ok(parts.filter((p) => p).length >= 5, `${parts.length} chunks`);
      assert.equal(parts.join(''), res.message.content);
    }));

    test('a forced tool call with a JSON Schema, and the tool loop back to an answer', ctx.wrap(async () => {
      const weather = llamaTool({
        name: 'get_weather',
        description: 'Weather for a city',
        parameters: WEATHER_JSON,
        execute: ({ city, days }) => `sunny in ${city} for ${days} days`,
      });
      const forced = llm({ maxTokens: 160, additionalChatOptions: { tool_choice: 'required' } });
      const res = await forced.chat({ messages: [{ role: 'user', content: 'Weather in Oslo?' }], tools: [weather] });
      const calls = res.message.options?.toolCall;
      assert.ok(Array.isArray(calls) && calls.length >= 1, JSON.stringify(res.message));
      assert.equal(calls[0].name, 'get_weather');
      const input = typeof calls[0].input === 'string' ? JSON.parse(calls[0].input) : calls[0].input;
      assert.ok(typeof input.city === 'string' && input.city.length <= 8, JSON.stringify(input));
      assert.ok(Number.isInteger(input.days) && input.days >= 1 && input.days <= 7, JSON.stringify(input));
      // The call and its result go back as LlamaIndex writes them; the model answers in text.
      const answer = await llm({ maxTokens: 16 }).chat({
        messages: [
          { role: 'user', content: 'Weather in Oslo?' },
          res.message,
          { role: 'user', content: await weather.call(input),
            options: { toolResult: { id: calls[0].id, result: 'sunny', isError: false } } },
        ],
        tools: [weather],
      });
      assert.equal(typeof answer.message.content, 'string');
    }));

    test('embeddings', ctx.wrap(async () => {
      const emb = new OpenAIEmbedding({ model, apiKey: KEY, baseURL });
      const v = await emb.getTextEmbedding('hello');
      assert.ok(Array.isArray(v) && v.length > 0 && v.every(Number.isFinite));
    }));
  });
});
