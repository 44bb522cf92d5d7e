// The Files API (/v1/files) through the official OpenAI SDK: upload (toFile and a read stream),
// list with its filters and pages, retrieve, content, delete; the per-file limit refused with the
// limit named; malformed multipart bodies refused; one API key never sees another's files; files
// survive a restart on the same data directory. One server (two keys, a 64 KiB file limit), restarted once.

import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';

import { toFile } from 'openai';

import { MODELS, assertErrorShape, openaiClient, startServer } from './harness.mjs';

const KEY_A = 'sk-files-test-key-a-0123456789';
const KEY_B = 'sk-files-test-key-b-9876543210';
const LIMIT = 64 * 1024;
const NOTES = '# Notes\n\nThe code word is *heliotrope*.\n';

describe('the Files API', () => {
  const dataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'inferbox-files-'));
  const args = ['--api-key', KEY_A, '--api-key', KEY_B, '--data-dir', dataDir, '--files-max-bytes', '64KiB'];
  let server;
  let a; // clients of key A and key B
  let b;
  const binary = Buffer.from(Array.from({ length: 3000 }, (_, i) => (i * 37) % 256));
  let mdId;
  let binId;

  const clients = () => {
    a = openaiClient(server, { apiKey: KEY_A });
    b = openaiClient(server, { apiKey: KEY_B });
  };
  before(async () => {
    server = await startServer({ model: MODELS.plain, args });
    clients();
  });
  after(async () => {
    await server?.stop();
    fs.rmSync(dataDir, { recursive: true, force: true });
  });

  test('uploads with toFile and with a read stream answer file objects', async () => {
    const md = await a.files.create({
      file: await toFile(Buffer.from(NOTES), 'notes.md'),
      purpose: 'assistants',
    });
    assert.match(md.id, /^file-[0-9a-f]{24}$/);
    assert.equal(md.object, 'file');
    assert.equal(md.bytes, Buffer.byteLength(NOTES));
    assert.equal(md.filename, 'notes.md');
    assert.equal(md.purpose, 'assistants');
    assert.equal(md.status, 'processed');
    assert.ok(Math.abs(md.created_at - Date.now() / 1000) < 120, `created_at ${md.created_at}`);
    mdId = md.id;

    const file = path.join(dataDir, 'upload.bin');
    fs.writeFileSync(file, binary);
    const bin = await a.files.create({ file: fs.createReadStream(file), purpose: 'user_data' });
    assert.equal(bin.bytes, binary.length);
    assert.equal(bin.filename, 'upload.bin');
    assert.equal(bin.purpose, 'user_data');
    binId = bin.id;
  });

  test('list, retrieve and content give back what was uploaded', async () => {
    const page = await a.files.list();
    assert.deepEqual(page.data.map((f) => f.id), [binId, mdId]); // newest first
    const asc = await a.files.list({ order: 'asc' });
    assert.deepEqual(asc.data.map((f) => f.id), [mdId, binId]);
    const onlyUser = await a.files.list({ purpose: 'user_data' });
    assert.deepEqual(onlyUser.data.map((f) => f.id), [binId]);
    // Pages of one: the SDK follows has_more and `after` to the end.
    const all = [];
    for await (const f of a.files.list({ limit: 1 })) {
      all.push(f.id);
    }
    assert.deepEqual(all, [binId, mdId]);
    // The list shape itself, which the SDK's page object does not keep whole.
    const raw = await fetch(`${server.url}/v1/files?limit=1&order=desc`, { headers: { authorization: `Bearer ${KEY_A}` } });
    const first = await raw.json();
    assert.equal(first.object, 'list');
    assert.equal(first.has_more, true);
    assert.equal(first.first_id, binId);
    assert.equal(first.last_id, binId);

    const got = await a.files.retrieve(mdId);
    assert.equal(got.filename, 'notes.md');
    assert.equal(got.bytes, Buffer.byteLength(NOTES));
    const text = await (await a.files.content(mdId)).text();
    assert.equal(text, NOTES);
    const bytes = Buffer.from(await (await a.files.content(binId)).arrayBuffer());
    assert.ok(bytes.equals(binary), 'binary content differs');
  });

  test('another API key never sees, reads or deletes the files', async () => {
    assert.deepEqual((await b.files.list()).data, []);
    for (const call of [() => b.files.retrieve(mdId), () => b.files.content(mdId), () => b.files.delete(mdId)]) {
      await assert.rejects(call(), (err) => {
        assert.equal(err.status, 404);
        assert.equal(err.code, 'file_not_found');
        return true;
      });
    }
    // No key at all is refused before anything else.
    const res = await fetch(`${server.url}/v1/files`);
    assert.equal(res.status, 401);
  });

  test('a file over --files-max-bytes is refused naming the limit', async () => {
    await assert.rejects(
      a.files.create({ file: await toFile(Buffer.alloc(LIMIT + 1, 'x'), 'big.txt'), purpose: 'assistants' }),
      (err) => {
        assert.equal(err.status, 413);
        assert.equal(err.code, 'file_too_large');
        assert.match(err.message, /the limit is 65536 bytes \(--files-max-bytes\)/);
        return true;
      },
    );
    // Far over it, the body itself is refused before it is read.
    const form = new FormData();
    form.append('purpose', 'assistants');
    form.append('file', new Blob([Buffer.alloc(4 * LIMIT, 'y')]), 'huge.txt');
    const res = await fetch(`${server.url}/v1/files`, {
      method: 'POST',
      headers: { authorization: `Bearer ${KEY_A}` },
      body: form,
    });
    const body = await res.json();
    const err = assertErrorShape({ status: res.status, body, text: JSON.stringify(body) }, 413);
    assert.match(err.message, /exceeds the limit of 131072 bytes/);
    assert.equal((await a.files.list()).data.length, 2, 'nothing was stored');
  });

  test('malformed uploads are refused with what is wrong', async () => {
    const post = async (contentType, body) => {
      const res = await fetch(`${server.url}/v1/files`, {
        method: 'POST',
        headers: { authorization: `Bearer ${KEY_A}`, 'content-type': contentType },
        body,
      });
      const json = await res.json();
      return assertErrorShape({ status: res.status, body: json, text: JSON.stringify(json) }, 400);
    };
    assert.match((await post('application/json', '{}')).message, /not multipart\/form-data/);
    const noEnd = '--b\r\nContent-Disposition: form-data; name="file"; filename="a.txt"\r\n\r\nx';
    const err = await post('multipart/form-data; boundary=b', noEnd);
    assert.equal(err.code, 'invalid_multipart');
    assert.match(err.message, /no boundary after its data/);
    const noPurpose = '--b\r\nContent-Disposition: form-data; name="file"; filename="a.txt"\r\n\r\nx\r\n--b--\r\n';
    assert.match((await post('multipart/form-data; boundary=b', noPurpose)).message, /purpose is required/);
    await assert.rejects(a.files.create({ file: await toFile(Buffer.from('x'), 'a.txt'), purpose: 'chat' }), (e) => {
      assert.equal(e.status, 400);
      assert.equal(e.param, 'purpose');
      return true;
    });
  });

  test('files survive a restart on the same data directory; delete removes them', async () => {
    await server.stop();
    server = await startServer({ model: MODELS.plain, args });
    clients();
    assert.deepEqual((await a.files.list()).data.map((f) => f.id), [binId, mdId]);
    const bytes = Buffer.from(await (await a.files.content(binId)).arrayBuffer());
    assert.ok(bytes.equals(binary), 'binary content differs after the restart');
    assert.deepEqual((await b.files.list()).data, []);

    const gone = await a.files.delete(mdId);
    assert.deepEqual(gone, { id: mdId, object: 'file', deleted: true });
    await assert.rejects(a.files.retrieve(mdId), (err) => err.status === 404);
    assert.deepEqual((await a.files.list()).data.map((f) => f.id), [binId]);
  });
});
