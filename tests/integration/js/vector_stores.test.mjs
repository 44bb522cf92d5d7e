// The Vector Stores API (/v1/vector_stores) and the file_search tool through the official OpenAI
// SDK: two small text files with distinctive probe words go into a store (uploadAndPoll), a
// search for one probe word ranks that file's chunk first (keyword ranking makes this exact even
// with the tiny model's embeddings), another key sees none of it, the store survives a restart,
// and a /v1/responses call forced to file_search returns a file_search_call item with its
// results. One server (two keys, the ChatML model embedding and chatting), restarted once.

import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';

import { toFile } from 'openai';

import { MODELS, assertErrorShape, openaiClient, startServer } from './harness.mjs';

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
