// What the tests of the server's own tools run against: a small SQLite shop (for --sql-database),
// the sqlite3 shell's answer to a query (the reference the sql tool's rows are checked against),
// and the reference MCP server from npm (package.json), run by inferbox over stdio.
import { execFileSync } from 'node:child_process';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

export const EVERYTHING_JS = path.join(path.dirname(fileURLToPath(import.meta.url)),
  'node_modules', '@modelcontextprotocol', 'server-everything', 'dist', 'index.js');

// Writes the shop database into `dir` (items, and orders of some of them); returns its path.
export function makeShop(dir) {
  const file = path.join(dir, 'shop.db');
  execFileSync('sqlite3', [file, `
    CREATE TABLE items(id INTEGER PRIMARY KEY, name TEXT, price REAL);
    INSERT INTO items(name, price) VALUES ('apple', 1.5), ('pear', 2.0), ('plum', 0.5), ('fig', 3.25);
    CREATE TABLE orders(id INTEGER PRIMARY KEY, item_id INTEGER, qty INTEGER);
    INSERT INTO orders(item_id, qty) VALUES (1, 2), (3, 7);
  `]);
  return file;
}

// What the sqlite3 shell answers for a query, as rows of values. Its -json rows are objects, and
// the model may name a column twice (`SELECT AVG(id), AVG(id) ...`), which JSON.parse would fold
// into one key: so the objects are read as arrays of their values, in order, duplicates kept.
export function sqliteRows(file, query) {
  const out = execFileSync('sqlite3', ['-readonly', '-json', file, query], { encoding: 'utf8' }).trim();
  if (!out) {
    return [];
  }
  let text = '';
  for (let i = 0; i < out.length; i++) {
    const ch = out[i];
    if (ch === '"') {
      let j = i + 1;
      while (out[j] !== '"') {
        j += out[j] === '\\' ? 2 : 1;
      }
      let k = j + 1;
      while (/\s/.test(out[k] ?? '')) {
        k++;
      }
      if (out[k] === ':') {
        i = k; // a column name: dropped
      } else {
        text += out.slice(i, j + 1);
        i = j;
      }
    } else {
      text += ch === '{' ? '[' : ch === '}' ? ']' : ch;
    }
  }
  return JSON.parse(text);
}
