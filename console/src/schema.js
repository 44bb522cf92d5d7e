// A small JSON Schema checker for the subset structured output usually uses: type, enum, const,
// properties, required, additionalProperties, items (schema or tuple), min/maxItems,
// min/maxLength, minimum/maximum (and exclusive*), pattern, allOf/anyOf/oneOf, local $ref.
// validate() returns null when the value conforms, else a message for the first violation.

function typeOf(v) {
  if (v === null) return 'null';
  if (Array.isArray(v)) return 'array';
  if (typeof v === 'number') return Number.isInteger(v) ? 'integer' : 'number';
  return typeof v;
}

function typeMatches(want, v) {
  const got = typeOf(v);
  if (want === 'number') return got === 'number' || got === 'integer';
  return want === got;
}

export function deepEqual(a, b) {
  if (a === b) return true;
  if (typeof a !== typeof b || a === null || b === null || typeof a !== 'object') return false;
  if (Array.isArray(a) !== Array.isArray(b)) return false;
  if (Array.isArray(a)) return a.length === b.length && a.every((x, i) => deepEqual(x, b[i]));
  const ka = Object.keys(a);
  const kb = Object.keys(b);
  return ka.length === kb.length && ka.every((k) => Object.prototype.hasOwnProperty.call(b, k) && deepEqual(a[k], b[k]));
}

function resolveRef(root, ref) {
  if (typeof ref !== 'string' || !ref.startsWith('#')) return undefined;
  const parts = ref.slice(1).split('/').filter(Boolean);
  let node = root;
  for (const raw of parts) {
    const p = decodeURIComponent(raw).replace(/~1/g, '/').replace(/~0/g, '~');
    if (node == null || typeof node !== 'object') return undefined;
    node = node[p];
  }
  return node;
}

function at(path, key) {
  return typeof key === 'number' ? `${path}[${key}]` : /^[A-Za-z_$][\w$]*$/.test(key) ? `${path}.${key}` : `${path}[${JSON.stringify(key)}]`;
}

function show(v) {
  const s = JSON.stringify(v);
  return s && s.length > 60 ? s.slice(0, 57) + '...' : s;
}

function check(schema, v, path, root, depth) {
  if (depth > 64) return `${path}: schema nests too deeply`;
  if (schema === true || schema === undefined) return null;
  if (schema === false) return `${path}: no value is allowed here`;
  if (typeof schema !== 'object' || schema === null) return null;

  if (schema.$ref !== undefined) {
    const target = resolveRef(root, schema.$ref);
    if (target === undefined) return `${path}: cannot resolve $ref ${schema.$ref}`;
    const err = check(target, v, path, root, depth + 1);
    if (err) return err;
  }

  if (schema.type !== undefined) {
    const types = Array.isArray(schema.type) ? schema.type : [schema.type];
    if (!types.some((t) => typeMatches(t, v))) return `${path}: expected ${types.join(' or ')}, got ${typeOf(v)}`;
  }
  if (schema.const !== undefined && !deepEqual(schema.const, v)) return `${path}: must equal ${show(schema.const)}`;
  if (Array.isArray(schema.enum) && !schema.enum.some((e) => deepEqual(e, v))) {
    return `${path}: must be one of ${schema.enum.map(show).join(', ')}`;
  }

  if (typeof v === 'string') {
    const len = [...v].length;
    if (typeof schema.minLength === 'number' && len < schema.minLength) return `${path}: shorter than minLength ${schema.minLength}`;
    if (typeof schema.maxLength === 'number' && len > schema.maxLength) return `${path}: longer than maxLength ${schema.maxLength}`;
    if (typeof schema.pattern === 'string') {
      let re = null;
      try {
        re = new RegExp(schema.pattern, 'u');
      } catch {
        /* unsupported pattern: skip */
      }
      if (re && !re.test(v)) return `${path}: does not match pattern ${schema.pattern}`;
    }
  }

  if (typeof v === 'number') {
    if (typeof schema.minimum === 'number' && v < schema.minimum) return `${path}: less than minimum ${schema.minimum}`;
    if (typeof schema.maximum === 'number' && v > schema.maximum) return `${path}: greater than maximum ${schema.maximum}`;
    if (typeof schema.exclusiveMinimum === 'number' && v <= schema.exclusiveMinimum) return `${path}: must be greater than ${schema.exclusiveMinimum}`;
    if (typeof schema.exclusiveMaximum === 'number' && v >= schema.exclusiveMaximum) return `${path}: must be less than ${schema.exclusiveMaximum}`;
  }

  if (Array.isArray(v)) {
    if (typeof schema.minItems === 'number' && v.length < schema.minItems) return `${path}: fewer than minItems ${schema.minItems}`;
    if (typeof schema.maxItems === 'number' && v.length > schema.maxItems) return `${path}: more than maxItems ${schema.maxItems}`;
    let rest = 0;
    if (Array.isArray(schema.prefixItems)) {
      for (let i = 0; i < Math.min(v.length, schema.prefixItems.length); i++) {
        const err = check(schema.prefixItems[i], v[i], at(path, i), root, depth + 1);
        if (err) return err;
      }
      rest = schema.prefixItems.length;
    }
    if (Array.isArray(schema.items)) {
      for (let i = 0; i < Math.min(v.length, schema.items.length); i++) {
        const err = check(schema.items[i], v[i], at(path, i), root, depth + 1);
        if (err) return err;
      }
    } else if (schema.items !== undefined) {
      for (let i = rest; i < v.length; i++) {
        const err = check(schema.items, v[i], at(path, i), root, depth + 1);
        if (err) return err;
      }
    }
    if (schema.uniqueItems === true) {
      for (let i = 0; i < v.length; i++) {
        for (let j = i + 1; j < v.length; j++) if (deepEqual(v[i], v[j])) return `${path}: items ${i} and ${j} are equal`;
      }
    }
  }

  if (typeOf(v) === 'object') {
    const props = schema.properties && typeof schema.properties === 'object' ? schema.properties : {};
    if (Array.isArray(schema.required)) {
      for (const name of schema.required) {
        if (!Object.prototype.hasOwnProperty.call(v, name)) return `${path}: missing required property "${name}"`;
      }
    }
    const keys = Object.keys(v);
    if (typeof schema.minProperties === 'number' && keys.length < schema.minProperties) return `${path}: fewer than ${schema.minProperties} properties`;
    if (typeof schema.maxProperties === 'number' && keys.length > schema.maxProperties) return `${path}: more than ${schema.maxProperties} properties`;
    for (const k of keys) {
      if (Object.prototype.hasOwnProperty.call(props, k)) {
        const err = check(props[k], v[k], at(path, k), root, depth + 1);
        if (err) return err;
      } else if (schema.additionalProperties === false) {
        return `${at(path, k)}: property "${k}" is not allowed (additionalProperties is false)`;
      } else if (schema.additionalProperties && typeof schema.additionalProperties === 'object') {
        const err = check(schema.additionalProperties, v[k], at(path, k), root, depth + 1);
        if (err) return err;
      }
    }
  }

  if (Array.isArray(schema.allOf)) {
    for (const s of schema.allOf) {
      const err = check(s, v, path, root, depth + 1);
      if (err) return err;
    }
  }
  if (Array.isArray(schema.anyOf) && schema.anyOf.length) {
    const errs = schema.anyOf.map((s) => check(s, v, path, root, depth + 1));
    if (errs.every(Boolean)) return `${path}: matches none of anyOf (first: ${errs[0]})`;
  }
  if (Array.isArray(schema.oneOf) && schema.oneOf.length) {
    const errs = schema.oneOf.map((s) => check(s, v, path, root, depth + 1));
    const ok = errs.filter((e) => !e).length;
    if (ok === 0) return `${path}: matches none of oneOf (first: ${errs[0]})`;
    if (ok > 1) return `${path}: matches ${ok} of oneOf, expected exactly one`;
  }
  if (schema.not !== undefined && !check(schema.not, v, path, root, depth + 1)) return `${path}: must not match "not"`;
  return null;
}

export function validate(schema, value) {
  return check(schema, value, '$', schema, 0);
}

// Structured-output verdict for a finished answer: { ok, message }.
export function validateAnswer(schema, text) {
  let value;
  try {
    value = JSON.parse(text);
  } catch (e) {
    return { ok: false, message: `not valid JSON: ${e.message}` };
  }
  const err = validate(schema, value);
  return err ? { ok: false, message: err } : { ok: true, message: 'valid: matches the schema' };
}
