#!/usr/bin/env python3
"""Remembers which translation units clang-tidy found clean, so that lint.sh checks only the
ones that could give another answer.

A unit's key is the SHA-256 of everything clang-tidy's verdict depends on:
  - clang-tidy's version and the repository's .clang-tidy;
  - the unit's compile command (from compile_commands.json);
  - the unit preprocessed with comments kept (-E -C): its own text, every header it includes
    (ours, llama.cpp's, the system's) with their line markers, and every NOLINT comment.
The clone's own path is replaced by a placeholder in the command and in the preprocessed text,
so the same sources in another folder (CI's clean clone) have the same key. Preprocessing costs
well under a second a unit; clang-tidy costs 5-20 s. Only a clean verdict is stored: a unit with
warnings is checked again every time.

  tidy_cache.py pending --build DIR --root DIR --cache DIR FILE...   prints the units to check
                                                                     (and remembers their keys)
  tidy_cache.py mark --build DIR --cache DIR                         stores the remembered keys
                                                                     after a clean clang-tidy run
"""
import argparse
import concurrent.futures
import hashlib
import json
import os
import pathlib
import shlex
import subprocess
import sys

PENDING = "tidy-pending.json"


def preprocess_command(entry):
    """The unit's compile command turned into a preprocessor run that writes to stdout."""
    args = entry["arguments"] if "arguments" in entry else shlex.split(entry["command"])
    out, skip = [], False
    for a in args:
        if skip:
            skip = False
            continue
        if a == "-o":
            skip = True
            continue
        if a in ("-c",) or a.startswith("-o") and len(a) > 2:
            continue
        out.append(a)
    return out + ["-E", "-C", "-o", "-"]


def unit_key(entry, root, salt):
    command = entry.get("command") or " ".join(entry["arguments"])
    run = subprocess.run(preprocess_command(entry), cwd=entry["directory"], capture_output=True, check=False)
    if run.returncode != 0:
        return None  # let clang-tidy itself report what does not compile
    h = hashlib.sha256()
    h.update(salt)
    h.update(command.replace(root, "@ROOT@").encode())
    h.update(b"\0")
    h.update(run.stdout.replace(root.encode(), b"@ROOT@"))
    return h.hexdigest()


def pending(args):
    root = os.path.realpath(args.root)
    build = pathlib.Path(args.build)
    cache = pathlib.Path(args.cache)
    entries = {}
    for e in json.loads((build / "compile_commands.json").read_text()):
        entries.setdefault(os.path.realpath(os.path.join(e["directory"], e["file"])), e)
    version = subprocess.run(["clang-tidy", "--version"], capture_output=True, check=True).stdout
    salt = version + b"\0" + (pathlib.Path(root) / ".clang-tidy").read_bytes() + b"\0"

    files = [os.path.realpath(os.path.join(root, f)) for f in args.files]

    def key_of(f):
        e = entries.get(f)
        return unit_key(e, root, salt) if e is not None else None

    with concurrent.futures.ThreadPoolExecutor(max_workers=os.cpu_count() or 2) as pool:
        keys = list(pool.map(key_of, files))
    todo = {}
    for f, k in zip(files, keys):
        if k is None or not (cache / k).exists():
            todo[f] = k
    (build / PENDING).write_text(json.dumps(todo))
    for f in todo:
        print(os.path.relpath(f, root))


def mark(args):
    cache = pathlib.Path(args.cache)
    cache.mkdir(parents=True, exist_ok=True)
    todo = json.loads((pathlib.Path(args.build) / PENDING).read_text())
    for f, k in todo.items():
        if k is not None:
            (cache / k).write_text(f + "\n")


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    a = sub.add_parser("pending")
    a.add_argument("--build", required=True)
    a.add_argument("--root", required=True)
    a.add_argument("--cache", required=True)
    a.add_argument("files", nargs="*")
    b = sub.add_parser("mark")
    b.add_argument("--build", required=True)
    b.add_argument("--cache", required=True)
    args = p.parse_args()
    (pending if args.cmd == "pending" else mark)(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
