#!/usr/bin/env node
// Builds the console: node build.mjs [--cpp OUT.cpp] [--outdir DIR]
//  - bundles src/ with esbuild into DIR (default dist/): index.html + content-hashed assets/
//  - prints raw and gzipped sizes; fails when the gzipped total is over the budget
//  - with --cpp, also writes a C++ source embedding every file (see src/console/assets.h)
import { build } from 'esbuild';
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { gzipSync } from 'node:zlib';

const BUDGET = 250 * 1024;
const here = dirname(fileURLToPath(import.meta.url));

function parseArgs(argv) {
  const opts = { outdir: join(here, 'dist'), cpp: null };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    const value = () => {
      if (i + 1 >= argv.length) fail(`${a} needs a value`);
      return argv[++i];
    };
    if (a === '--cpp') opts.cpp = resolve(value());
    else if (a.startsWith('--cpp=')) opts.cpp = resolve(a.slice(6));
    else if (a === '--outdir') opts.outdir = resolve(value());
    else if (a.startsWith('--outdir=')) opts.outdir = resolve(a.slice(9));
    else if (a === '-h' || a === '--help') {
      console.log('usage: node build.mjs [--cpp OUT.cpp] [--outdir DIR]');
      process.exit(0);
    } else fail(`unknown argument: ${a}`);
  }
  return opts;
}

function fail(message) {
  console.error(`build.mjs: ${message}`);
  process.exit(2);
}

const sha256 = (buf) => createHash('sha256').update(buf).digest('hex');

const TYPES = {
  '.html': 'text/html; charset=utf-8',
  '.js': 'text/javascript; charset=utf-8',
  '.css': 'text/css; charset=utf-8',
  '.svg': 'image/svg+xml',
  '.json': 'application/json',
  '.png': 'image/png',
  '.woff2': 'font/woff2',
};

function contentType(path) {
  const m = /\.[^./]+$/.exec(path);
  const type = m && TYPES[m[0]];
  if (!type) fail(`no content type known for ${path}`);
  return type;
}

async function bundle() {
  const result = await build({
    entryPoints: [join(here, 'src/main.jsx')],
    bundle: true,
    minify: true,
    format: 'esm',
    target: 'es2020',
    jsx: 'automatic',
    jsxImportSource: 'preact',
    outdir: join(here, '.esbuild-out'), // names only: nothing is written (write: false)
    entryNames: 'app',
    write: false,
    legalComments: 'none',
    charset: 'utf8',
    define: { 'process.env.NODE_ENV': '"production"' },
    logLevel: 'warning',
  });
  const files = {};
  for (const f of result.outputFiles) {
    if (f.path.endsWith('.js')) files.js = Buffer.from(f.contents);
    else if (f.path.endsWith('.css')) files.css = Buffer.from(f.contents);
    else fail(`unexpected esbuild output ${f.path}`);
  }
  if (!files.js || !files.css) fail('esbuild did not produce both app.js and app.css');
  return files;
}

function hashedName(stem, ext, body) {
  return `/assets/${stem}-${sha256(body).slice(0, 10)}${ext}`;
}

// Every asset as { path, body }; "/" (index.html) first, then /assets/ sorted by path.
async function assets() {
  const { js, css } = await bundle();
  const icon = readFileSync(join(here, 'src/icon.svg'));
  const jsPath = hashedName('app', '.js', js);
  const cssPath = hashedName('app', '.css', css);
  const iconPath = hashedName('icon', '.svg', icon);
  const html = readFileSync(join(here, 'src/index.html'), 'utf8')
    .replace('{{JS}}', jsPath)
    .replace('{{CSS}}', cssPath)
    .replace('{{ICON}}', iconPath);
  if (/<script(?![^>]*\bsrc=)[^>]*>|<style|\sstyle=|\son[a-z]+=/i.test(html)) fail('index.html must have no inline script, style or handlers');
  const list = [
    { path: jsPath, body: js },
    { path: cssPath, body: css },
    { path: iconPath, body: icon },
  ].sort((a, b) => (a.path < b.path ? -1 : 1));
  return [{ path: '/', body: Buffer.from(html) }, ...list];
}

function writeDist(outdir, list) {
  mkdirSync(outdir, { recursive: true });
  // Remove only what a previous build wrote, never anything else in the folder.
  rmSync(join(outdir, 'assets'), { recursive: true, force: true });
  rmSync(join(outdir, 'index.html'), { force: true });
  mkdirSync(join(outdir, 'assets'));
  for (const a of list) writeFileSync(join(outdir, a.path === '/' ? 'index.html' : a.path.slice(1)), a.body);
}

function report(list) {
  let total = 0;
  const rows = list.map((a) => {
    const gz = a.gzip.length;
    total += gz;
    return [a.path === '/' ? 'index.html' : a.path.slice(1), a.body.length, gz];
  });
  const w = Math.max(...rows.map((r) => r[0].length), 10);
  console.log(`${'file'.padEnd(w)}  ${'raw'.padStart(9)}  ${'gzip'.padStart(9)}`);
  for (const [name, raw, gz] of rows) console.log(`${name.padEnd(w)}  ${String(raw).padStart(9)}  ${String(gz).padStart(9)}`);
  console.log(`${'total'.padEnd(w)}  ${String(list.reduce((n, a) => n + a.body.length, 0)).padStart(9)}  ${String(total).padStart(9)}  (gzip budget ${BUDGET})`);
  return total;
}

function literal(buf, indent) {
  if (!buf.length) return `${indent}""`;
  const perLine = 1000; // 4 characters per byte: lines of about 4000 characters
  const lines = [];
  for (let i = 0; i < buf.length; i += perLine) {
    let s = '';
    const end = Math.min(buf.length, i + perLine);
    for (let j = i; j < end; j++) s += '\\x' + buf[j].toString(16).padStart(2, '0');
    lines.push(`${indent}"${s}"`);
  }
  return lines.join('\n');
}

const cppString = (s) => '"' + s.replace(/\\/g, '\\\\').replace(/"/g, '\\"') + '"';

function cppSource(list) {
  const out = [];
  out.push('// Generated by console/build.mjs from console/src; do not edit. Rebuild: node console/build.mjs --cpp <this file>');
  out.push('#include "console/assets.h"');
  out.push('');
  out.push('namespace inferbox {');
  out.push('namespace {');
  list.forEach((a, i) => {
    out.push('');
    out.push(`// ${a.path} (${a.body.length} bytes, ${a.gzip.length} gzipped)`);
    out.push(`constexpr char asset_${i}_body[] =`);
    out.push(`${literal(a.body, '    ')};`);
    out.push(`constexpr char asset_${i}_gzip[] =`);
    out.push(`${literal(a.gzip, '    ')};`);
  });
  out.push('');
  out.push('} // namespace');
  out.push('');
  out.push('const std::vector<console_asset> &console_assets() {');
  out.push('    static const std::vector<console_asset> assets = {');
  list.forEach((a, i) => {
    out.push(
      `        {${cppString(a.path)}, ${cppString(a.type)}, std::string_view(asset_${i}_body, ${a.body.length}), ` +
        `std::string_view(asset_${i}_gzip, ${a.gzip.length}), ${cppString(a.etag)}, ${a.immutable}},`,
    );
  });
  out.push('    };');
  out.push('    return assets;');
  out.push('}');
  out.push('');
  out.push('} // namespace inferbox');
  out.push('');
  return out.join('\n');
}

function writeIfChanged(path, text) {
  if (existsSync(path) && readFileSync(path, 'utf8') === text) return false;
  mkdirSync(dirname(path), { recursive: true });
  writeFileSync(path, text);
  return true;
}

async function main() {
  const opts = parseArgs(process.argv.slice(2));
  const list = (await assets()).map((a) => ({
    ...a,
    type: contentType(a.path === '/' ? 'index.html' : a.path),
    gzip: gzipSync(a.body, { level: 9 }),
    etag: `"${sha256(a.body).slice(0, 16)}"`,
    immutable: a.path.startsWith('/assets/'),
  }));
  writeDist(opts.outdir, list);
  const total = report(list);
  if (opts.cpp) {
    const changed = writeIfChanged(opts.cpp, cppSource(list));
    console.log(`${opts.cpp}: ${changed ? 'written' : 'unchanged'}`);
  }
  if (total > BUDGET) {
    console.error(`build.mjs: gzipped total ${total} bytes is over the budget of ${BUDGET}`);
    process.exit(1);
  }
  console.log(`wrote ${opts.outdir}: index.html, assets/ (${readdirSync(join(opts.outdir, 'assets')).length} files)`);
}

main().catch((e) => {
  console.error(e && e.stack ? e.stack : e);
  process.exit(1);
});
