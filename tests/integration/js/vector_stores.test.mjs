// The Vector Stores API (/v1/vector_stores) and the file_search tool through the official OpenAI
// SDK: two small text files with distinctive probe words go into a store (uploadAndPoll), a
// search for one probe word ranks that file's chunk first (keyword ranking makes this exact even
// with the tiny model's embeddings), another key sees none of it, the store survives a restart,
// and a /v1/responses call forced to file_search returns a file_search_call item with its
// results. Files carry attributes that filters (on search and on file_search) select by,
// ranking_options.score_threshold drops weak results, and rewrite_query searches a question's
// keywords (and answers them as search_query). One server (two keys, the ChatML model
// embedding and chatting), restarted once; a second server with one-second "days" (a test-build
// failpoint) checks expires_after.

import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';

import { toFile } from 'openai';

import { MODELS, assertErrorShape, openaiClient, postJson, startServer } from './harness.mjs';

const KEY_A = 'sk-vector-stores-key-a-0123456789';
const KEY_B = 'sk-vector-stores-key-b-9876543210';
const ZEBRA = 'The lighthouse keeper kept a quokkazebra in the garden.\n\nIt ate carrots every morning.\n';
const WALRUS = 'The baker sold a marmalade walrusbread on Sundays.\n\nChildren queued for it at dawn.\n';
const POLL = { pollIntervalMs: 50 };

describe('vector stores and file_search (two keys, --ctx-size 4096)', () => {
  const dataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'inferbox-vector-stores-'));
  const args = ['--api-key', KEY_A, '--api-key', KEY_B, '--data-dir', dataDir, '--ctx-size', 4096];
  let server;
  let a;
  let b;
  let store;
  let zebraFile;
  let walrusFile;

  const clients = () => {
    a = openaiClient(server, { apiKey: KEY_A });
    b = openaiClient(server, { apiKey: KEY_B });
  };
  before(async () => {
    server = await startServer({ model: MODELS.chatml, args });
    clients();
  });
  after(async () => {
    await server?.stop();
    fs.rmSync(dataDir, { recursive: true, force: true });
  });

  test('create a store, add two files, and they complete', async () => {
    store = await a.vectorStores.create({
      name: 'probes',
      metadata: { suite: 'integration' },
      chunking_strategy: { type: 'static', static: { max_chunk_size_tokens: 100, chunk_overlap_tokens: 20 } },
    });
    assert.match(store.id, /^vs_[0-9a-f]{24}$/);
    assert.equal(store.object, 'vector_store');
    assert.equal(store.name, 'probes');
    assert.equal(store.status, 'completed');
    assert.deepEqual(store.metadata, { suite: 'integration' });
    assert.equal(store.file_counts.total, 0);

    const zebra = await a.vectorStores.files.uploadAndPoll(store.id, await toFile(Buffer.from(ZEBRA), 'zebra.txt'), POLL);
    assert.equal(zebra.status, 'completed', JSON.stringify(zebra.last_error));
    assert.equal(zebra.object, 'vector_store.file');
    assert.equal(zebra.vector_store_id, store.id);
    assert.equal(zebra.chunking_strategy.static.max_chunk_size_tokens, 100);
    zebraFile = zebra.id;

    const upload = await a.files.create({ file: await toFile(Buffer.from(WALRUS), 'walrus.md'), purpose: 'assistants' });
    const walrus = await a.vectorStores.files.createAndPoll(store.id, { file_id: upload.id }, POLL);
    assert.equal(walrus.status, 'completed', JSON.stringify(walrus.last_error));
    walrusFile = walrus.id;

    const now = await a.vectorStores.retrieve(store.id);
    assert.equal(now.file_counts.completed, 2);
    assert.equal(now.file_counts.total, 2);
    assert.ok(now.usage_bytes > 0);
    const files = await a.vectorStores.files.list(store.id);
    assert.deepEqual(files.data.map((f) => f.id).sort(), [zebraFile, walrusFile].sort());
  });

  test('search ranks the chunk with the probe word first', async () => {
    const page = await a.vectorStores.search(store.id, { query: 'quokkazebra', max_num_results: 5 });
    assert.ok(page.data.length >= 1, JSON.stringify(page.data));
    const top = page.data[0];
    assert.equal(top.file_id, zebraFile);
    assert.equal(top.filename, 'zebra.txt');
    assert.equal(top.content[0].type, 'text');
    assert.match(top.content[0].text, /quokkazebra/);
    assert.ok(top.score > 0 && top.score <= 1, String(top.score));

    const other = await a.vectorStores.search(store.id, { query: 'walrusbread' });
    assert.equal(other.data[0].file_id, walrusFile);
    // A filter on the file id keeps the other file's chunks out.
    const filtered = await a.vectorStores.search(store.id, {
      query: 'walrusbread',
      filters: { type: 'eq', key: 'file_id', value: zebraFile },
    });
    assert.ok(filtered.data.every((r) => r.file_id === zebraFile), JSON.stringify(filtered.data));
  });

  test('rewrite_query searches a question by its keywords and answers them as search_query', async () => {
    // A store of its own, so the other tests' file counts stay as they are.
    const own = await a.vectorStores.create({ name: 'rewrite' });
    const target = await a.vectorStores.files.uploadAndPoll(
      own.id,
      await toFile(Buffer.from('The orbital telescope measured the glimmerwhisk constant at dawn.\n'), 'telescope.txt'),
      POLL,
    );
    assert.equal(target.status, 'completed', JSON.stringify(target.last_error));
    const other = await a.vectorStores.files.uploadAndPoll(
      own.id,
      await toFile(Buffer.from('What is it that you would like to know about the bakery?\n'), 'bakery.txt'),
      POLL,
    );
    assert.equal(other.status, 'completed', JSON.stringify(other.last_error));

    // The page as sent: the SDK's page object keeps search_query out of reach.
    const search = async (body) => {
      const res = await postJson(`${server.url}/v1/vector_stores/${own.id}/search`, body, {
        headers: { Authorization: `Bearer ${KEY_A}` },
      });
      assert.equal(res.status, 200, res.text);
      return res.body;
    };
    const question = 'Could you please tell me what the glimmerwhisk constant of the orbital telescope is?';
    const page = await search({ query: question, rewrite_query: true, max_num_results: 5 });
    assert.deepEqual(page.search_query, ['glimmerwhisk constant orbital telescope']);
    assert.ok(page.data.length >= 1, JSON.stringify(page.data));
    assert.equal(page.data[0].file_id, target.id);
    assert.match(page.data[0].content[0].text, /glimmerwhisk constant/);
    // The bakery file shares only stop words with the question: the rewritten query's keyword
    // ranking leaves it out, so it can only trail the telescope file (vector ranking alone).
    for (const r of page.data.slice(1)) {
      assert.ok(r.score < page.data[0].score, JSON.stringify(page.data));
    }

    // Without rewrite_query (or with false) the query is searched and answered as sent.
    const asSent = await search({ query: question, rewrite_query: false });
    assert.deepEqual(asSent.search_query, [question]);
    const absent = await search({ query: question });
    assert.deepEqual(absent.search_query, [question]);
    // Only stop words: the query itself, lower-cased, is searched.
    const stops = await search({ query: 'What Is It?', rewrite_query: true });
    assert.deepEqual(stops.search_query, ['what is it?']);

    const deleted = await a.vectorStores.delete(own.id);
    assert.equal(deleted.deleted, true);
  });

  test('attributes round-trip through create, retrieve, list and update', async () => {
    const walrus = await a.vectorStores.files.retrieve(walrusFile, { vector_store_id: store.id });
    assert.deepEqual(walrus.attributes, {});
    const updated = await a.vectorStores.files.update(walrusFile, {
      vector_store_id: store.id,
      attributes: { animal: 'walrus', legs: 0, edible: true },
    });
    assert.deepEqual(updated.attributes, { animal: 'walrus', legs: 0, edible: true });
    await a.vectorStores.files.update(zebraFile, {
      vector_store_id: store.id,
      attributes: { animal: 'zebra', legs: 4, edible: false },
    });
    const zebra = await a.vectorStores.files.retrieve(zebraFile, { vector_store_id: store.id });
    assert.deepEqual(zebra.attributes, { animal: 'zebra', legs: 4, edible: false });
    const listed = await a.vectorStores.files.list(store.id);
    const byId = Object.fromEntries(listed.data.map((f) => [f.id, f.attributes]));
    assert.deepEqual(byId[walrusFile], { animal: 'walrus', legs: 0, edible: true });

    // A third file added with attributes in the create call.
    const upload = await a.files.create({ file: await toFile(Buffer.from('Nothing to see here.\n'), 'plain.txt'), purpose: 'assistants' });
    const plain = await a.vectorStores.files.createAndPoll(store.id, { file_id: upload.id, attributes: { animal: 'none', legs: 2 } }, POLL);
    assert.equal(plain.status, 'completed', JSON.stringify(plain.last_error));
    assert.deepEqual(plain.attributes, { animal: 'none', legs: 2 });
    await a.vectorStores.files.delete(plain.id, { vector_store_id: store.id });
    // Another key cannot touch them.
    await assert.rejects(
      b.vectorStores.files.update(zebraFile, { vector_store_id: store.id, attributes: { animal: 'x' } }),
      (err) => err.status === 404,
    );
  });

  test('a filtered search returns exactly the matching file, with its attributes', async () => {
    // The query names the walrus file's probe word; the filter admits only the zebra file, so the
    // one result is the zebra file's chunk (found by its embedding alone).
    const page = await a.vectorStores.search(store.id, {
      query: 'walrusbread',
      max_num_results: 5,
      filters: {
        type: 'and',
        filters: [
          { type: 'eq', key: 'animal', value: 'zebra' },
          { type: 'or', filters: [{ type: 'gte', key: 'legs', value: 4 }, { type: 'eq', key: 'edible', value: true }] },
        ],
      },
    });
    assert.equal(page.data.length, 1, JSON.stringify(page.data));
    assert.equal(page.data[0].file_id, zebraFile);
    assert.match(page.data[0].content[0].text, /quokkazebra/);
    assert.deepEqual(page.data[0].attributes, { animal: 'zebra', legs: 4, edible: false });

    const walrusOnly = await a.vectorStores.search(store.id, {
      query: 'quokkazebra',
      filters: { type: 'nin', key: 'animal', value: ['zebra'] },
    });
    assert.ok(walrusOnly.data.length >= 1);
    assert.ok(walrusOnly.data.every((r) => r.file_id === walrusFile), JSON.stringify(walrusOnly.data));
    assert.deepEqual(walrusOnly.data[0].attributes, { animal: 'walrus', legs: 0, edible: true });

    const none = await a.vectorStores.search(store.id, { query: 'quokkazebra', filters: { type: 'lt', key: 'legs', value: 0 } });
    assert.deepEqual(none.data, []);
    // The file_id pseudo-attribute still works.
    const byId = await a.vectorStores.search(store.id, {
      query: 'quokkazebra',
      filters: { type: 'in', key: 'file_id', value: [walrusFile] },
    });
    assert.ok(byId.data.length >= 1 && byId.data.every((r) => r.file_id === walrusFile), JSON.stringify(byId.data));
  });

  test('ranking_options.score_threshold drops the results below it', async () => {
    const all = await a.vectorStores.search(store.id, { query: 'quokkazebra', max_num_results: 10 });
    assert.ok(all.data.length >= 2, JSON.stringify(all.data));
    const scores = all.data.map((r) => r.score);
    const top = scores[0];
    const bottom = scores[scores.length - 1];
    assert.ok(top > bottom, JSON.stringify(scores));
    const threshold = (top + bottom) / 2;
    const kept = await a.vectorStores.search(store.id, {
      query: 'quokkazebra',
      max_num_results: 10,
      ranking_options: { ranker: 'auto', score_threshold: threshold },
    });
    assert.deepEqual(kept.data.map((r) => r.score), scores.filter((x) => x >= threshold));
    const noRanker = await a.vectorStores.search(store.id, {
      query: 'quokkazebra',
      max_num_results: 10,
      ranking_options: { ranker: 'none' },
    });
    assert.deepEqual(noRanker.data.map((r) => r.file_id), all.data.map((r) => r.file_id));
  });

  test('malformed filters, attributes, ranking options and expiry are 400s naming the field', async () => {
    const raw = async (method, url, body) => {
      const res = await fetch(`${server.url}${url}`, {
        method,
        headers: { Authorization: `Bearer ${KEY_A}`, 'Content-Type': 'application/json' },
        body: JSON.stringify(body),
      });
      const text = await res.text();
      return assertErrorShape({ status: res.status, body: JSON.parse(text), text }, 400);
    };
    let deep = { type: 'eq', key: 'a', value: 1 };
    for (let i = 0; i < 8; i++) deep = { type: 'and', filters: [deep] };
    let err = await raw('POST', `/v1/vector_stores/${store.id}/search`, { query: 'x', filters: deep });
    assert.match(err.message, /more than 8 levels/);
    assert.match(err.param, /^filters(\.filters\[0\])+$/);
    err = await raw('POST', `/v1/vector_stores/${store.id}/search`, {
      query: 'x',
      filters: { type: 'in', key: 'a', value: Array.from({ length: 65 }, (_, i) => i) },
    });
    assert.equal(err.param, 'filters.value');
    assert.match(err.message, /1 to 64/);
    err = await raw('POST', `/v1/vector_stores/${store.id}/search`, {
      query: 'x',
      filters: { type: 'gt', key: 'legs', value: true },
    });
    assert.equal(err.param, 'filters.value');
    err = await raw('POST', `/v1/vector_stores/${store.id}/search`, {
      query: 'x',
      ranking_options: { score_threshold: 1.5 },
    });
    assert.equal(err.param, 'ranking_options.score_threshold');
    err = await raw('POST', `/v1/vector_stores/${store.id}/search`, { query: 'x', rewrite_query: 'yes' });
    assert.equal(err.param, 'rewrite_query');
    assert.match(err.message, /rewrite_query must be a boolean/);
    const tooMany = Object.fromEntries(Array.from({ length: 17 }, (_, i) => [`k${i}`, i]));
    err = await raw('POST', `/v1/vector_stores/${store.id}/files/${zebraFile}`, { attributes: tooMany });
    assert.equal(err.param, 'attributes');
    assert.match(err.message, /at most 16/);
    err = await raw('POST', `/v1/vector_stores/${store.id}/files/${zebraFile}`, { attributes: { long: 'x'.repeat(513) } });
    assert.equal(err.param, 'attributes.long');
    err = await raw('POST', `/v1/vector_stores/${store.id}/files`, { file_id: zebraFile, attributes: { nested: { a: 1 } } });
    assert.equal(err.param, 'attributes.nested');
    err = await raw('POST', '/v1/vector_stores', { name: 'x', expires_after: { anchor: 'last_active_at', days: 0 } });
    assert.equal(err.param, 'expires_after.days');
    err = await raw('POST', '/v1/vector_stores', { name: 'x', expires_after: { anchor: 'created_at', days: 3 } });
    assert.equal(err.param, 'expires_after.anchor');
    err = await raw('POST', '/v1/responses', {
      input: 'x',
      tools: [{ type: 'file_search', vector_store_ids: [store.id], filters: { type: 'like', key: 'a', value: 1 } }],
    });
    assert.equal(err.param, 'tools[0].filters.type');
    err = await raw('POST', '/v1/responses', {
      input: 'x',
      tools: [{ type: 'file_search', vector_store_ids: [store.id], ranking_options: { score_threshold: -1 } }],
    });
    assert.equal(err.param, 'tools[0].ranking_options.score_threshold');
  });

  test('bounds are errors that name them', async () => {
    const tooMany = await fetch(`${server.url}/v1/vector_stores/${store.id}/search`, {
      method: 'POST',
      headers: { Authorization: `Bearer ${KEY_A}`, 'Content-Type': 'application/json' },
      body: JSON.stringify({ query: 'x', max_num_results: 51 }),
    });
    const text = await tooMany.text();
    const body = JSON.parse(text);
    assertErrorShape({ status: tooMany.status, body, text }, 400);
    assert.equal(body.error.param, 'max_num_results');
    assert.match(body.error.message, /1 to 50/);
    await assert.rejects(
      a.vectorStores.create({
        name: 'bad',
        chunking_strategy: { type: 'static', static: { max_chunk_size_tokens: 5000, chunk_overlap_tokens: 0 } },
      }),
      (err) => err.status === 400 && /100 to 4096/.test(err.message),
    );
  });

  test('another key sees, searches and deletes none of it', async () => {
    const list = await b.vectorStores.list();
    assert.deepEqual(list.data, []);
    await assert.rejects(b.vectorStores.retrieve(store.id), (err) => err.status === 404);
    await assert.rejects(b.vectorStores.search(store.id, { query: 'quokkazebra' }), (err) => err.status === 404);
    await assert.rejects(b.vectorStores.delete(store.id), (err) => err.status === 404);
    // Nor can it add its own file to the store, or A's file to a store of its own.
    const mine = await b.vectorStores.create({ name: 'b' });
    await assert.rejects(b.vectorStores.files.create(mine.id, { file_id: zebraFile }), (err) => err.status === 404);
  });

  test('file_search in /v1/responses returns a file_search_call with the results', async () => {
    const r = await a.responses.create({
      input: 'What lives in the garden?',
      tools: [{ type: 'file_search', vector_store_ids: [store.id], max_num_results: 3 }],
      tool_choice: { type: 'file_search' },
      include: ['file_search_call.results'],
      max_output_tokens: 400,
      temperature: 0,
    });
    const call = r.output.find((o) => o.type === 'file_search_call');
    assert.ok(call, JSON.stringify(r.output));
    assert.equal(call.status, 'completed', JSON.stringify(call));
    assert.equal(call.queries.length, 1);
    assert.match(call.id, /^file_search_/);
    // Every chunk has an embedding, so any query the model wrote finds at least one.
    assert.ok(Array.isArray(call.results) && call.results.length >= 1, JSON.stringify(call));
    for (const res of call.results) {
      assert.ok([zebraFile, walrusFile].includes(res.file_id), JSON.stringify(res));
      assert.equal(typeof res.text, 'string');
    }
    // Filters narrow the tool's search too: only the walrus file, and its attributes come back.
    const filtered = await a.responses.create({
      input: 'What lives in the garden?',
      tools: [
        {
          type: 'file_search',
          vector_store_ids: [store.id],
          filters: { type: 'eq', key: 'animal', value: 'walrus' },
          ranking_options: { ranker: 'auto', score_threshold: 0 },
        },
      ],
      tool_choice: { type: 'file_search' },
      include: ['file_search_call.results'],
      max_output_tokens: 400,
      temperature: 0,
    });
    const fcall = filtered.output.find((o) => o.type === 'file_search_call');
    assert.ok(fcall && fcall.status === 'completed', JSON.stringify(filtered.output));
    assert.ok(fcall.results.length >= 1, JSON.stringify(fcall));
    for (const res of fcall.results) {
      assert.equal(res.file_id, walrusFile, JSON.stringify(res));
      assert.deepEqual(res.attributes, { animal: 'walrus', legs: 0, edible: true });
    }
    // Another key's request cannot name the store.
    await assert.rejects(
      b.responses.create({
        input: 'x',
        tools: [{ type: 'file_search', vector_store_ids: [store.id] }],
        max_output_tokens: 8,
      }),
      (err) => err.status === 404,
    );
  });

  test('the store survives a restart; deleting a file and the store removes them', async () => {
    await server.stop();
    server = await startServer({ model: MODELS.chatml, args });
    clients();
    const again = await a.vectorStores.retrieve(store.id);
    assert.equal(again.name, 'probes');
    assert.equal(again.file_counts.completed, 2);
    const page = await a.vectorStores.search(store.id, { query: 'quokkazebra' });
    assert.equal(page.data[0].file_id, zebraFile);
    assert.deepEqual(page.data[0].attributes, { animal: 'zebra', legs: 4, edible: false });

    const renamed = await a.vectorStores.update(store.id, { name: 'renamed' });
    assert.equal(renamed.name, 'renamed');
    const gone = await a.vectorStores.files.delete(zebraFile, { vector_store_id: store.id });
    assert.equal(gone.deleted, true);
    const after = await a.vectorStores.search(store.id, { query: 'quokkazebra' });
    assert.ok(after.data.every((r) => r.file_id !== zebraFile), JSON.stringify(after.data));
    const deleted = await a.vectorStores.delete(store.id);
    assert.equal(deleted.deleted, true);
    await assert.rejects(a.vectorStores.retrieve(store.id), (err) => err.status === 404);
  });
});

describe('vector store expiry (expires_after, one-second days)', () => {
  const dataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'inferbox-vector-stores-expiry-'));
  let server;
  let a;
  before(async () => {
    server = await startServer({
      model: MODELS.chatml,
      args: ['--api-key', KEY_A, '--data-dir', dataDir, '--ctx-size', 4096],
      // Test builds only (common/failpoint.h): an expires_after day lasts one second.
      env: { INFERBOX_FAILPOINT_VECTOR_STORE_DAY_MS: '1000' },
    });
    a = openaiClient(server, { apiKey: KEY_A });
  });
  after(async () => {
    await server?.stop();
    fs.rmSync(dataDir, { recursive: true, force: true });
  });

  test('expires_after sets expires_at; an expired store says so and cannot be searched', async () => {
    const plain = await a.vectorStores.create({ name: 'forever' });
    assert.equal(plain.expires_after, null);
    assert.equal(plain.expires_at, null);

    // 365 one-second days: time enough to add a file.
    const store = await a.vectorStores.create({ name: 'brief', expires_after: { anchor: 'last_active_at', days: 365 } });
    assert.deepEqual(store.expires_after, { anchor: 'last_active_at', days: 365 });
    assert.equal(store.expires_at, store.last_active_at + 365);
    assert.equal(store.status, 'completed');
    const file = await a.vectorStores.files.uploadAndPoll(store.id, await toFile(Buffer.from(ZEBRA), 'zebra.txt'), POLL);
    assert.equal(file.status, 'completed', JSON.stringify(file.last_error));
    const found = await a.vectorStores.search(store.id, { query: 'quokkazebra' });
    assert.equal(found.data[0].file_id, file.id);

    const shorter = await a.vectorStores.update(store.id, { expires_after: { anchor: 'last_active_at', days: 200 } });
    assert.deepEqual(shorter.expires_after, { anchor: 'last_active_at', days: 200 });
    assert.equal(shorter.expires_at, shorter.last_active_at + 200);
    const cleared = await a.vectorStores.update(plain.id, { expires_after: null });
    assert.equal(cleared.expires_at, null);
    const shortAgain = await a.vectorStores.update(store.id, { expires_after: { anchor: 'last_active_at', days: 1 } });
    assert.equal(shortAgain.expires_at, shortAgain.last_active_at + 1);

    await new Promise((resolve) => setTimeout(resolve, 2500));
    const expired = await a.vectorStores.retrieve(store.id);
    assert.equal(expired.status, 'expired');
    assert.equal(expired.file_counts.total, 0);
    const listed = await a.vectorStores.list();
    assert.equal(listed.data.find((s) => s.id === store.id).status, 'expired');
    assert.equal(listed.data.find((s) => s.id === plain.id).status, 'completed');
    await assert.rejects(
      a.vectorStores.search(store.id, { query: 'quokkazebra' }),
      (err) => err.status === 404 && err.code === 'vector_store_expired',
    );
    assert.equal(fs.existsSync(path.join(dataDir, 'vector_stores', store.id)), false);
    const deleted = await a.vectorStores.delete(store.id);
    assert.equal(deleted.deleted, true);
    await assert.rejects(a.vectorStores.retrieve(store.id), (err) => err.status === 404);
  });
});
