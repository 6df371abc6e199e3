// Finds where values sit inside raw JSON bytes without parsing them into objects.
//
// The API wraps what the materializer needs (a snapshot document, a list of patch records) in
// an envelope. JSON.parse + JSON.stringify to cut them out would do in JavaScript exactly the
// work the wasm materializer exists to do faster, so the worker instead hands the materializer
// zero-copy subarrays of the fetched bytes. This is a byte scanner, not a validator: the
// materializer parses (and checks) the ranges it is given; the envelope around them comes
// from our own server.

const QUOTE = 0x22, BACKSLASH = 0x5c, COLON = 0x3a, COMMA = 0x2c;
const OPEN_OBJ = 0x7b, CLOSE_OBJ = 0x7d, OPEN_ARR = 0x5b, CLOSE_ARR = 0x5d;
const encoder = new TextEncoder();
const decoder = new TextDecoder();

function skipWs(b, i) {
  while (i < b.length) {
    const c = b[i];
    if (c !== 0x20 && c !== 0x0a && c !== 0x0d && c !== 0x09) break;
    i++;
  }
  return i;
}

/** The index just past the string whose opening quote is at `i`. */
function skipString(b, i) {
  // A plain loop: JSON strings are mostly short keys and values, where calling indexOf per
  // string costs more than it saves.
  const n = b.length;
  for (i++; i < n; i++) {
    const c = b[i];
    if (c === QUOTE) return i + 1;
    if (c === BACKSLASH) i++;
  }
  throw new SyntaxError("unterminated string in JSON");
}

/** The index just past the value starting at `i` (after whitespace). */
export function skipValue(b, i) {
  i = skipWs(b, i);
  const c = b[i];
  if (c === QUOTE) return skipString(b, i);
  if (c !== OPEN_OBJ && c !== OPEN_ARR) {
    // Number, true, false, null: up to the next delimiter.
    while (i < b.length) {
      const d = b[i];
      if (d === COMMA || d === CLOSE_OBJ || d === CLOSE_ARR || d === 0x20 || d === 0x0a || d === 0x0d || d === 0x09) break;
      i++;
    }
    return i;
  }
  // One tight loop over the container: strings are skipped inline (brackets inside them do
  // not count), everything else only moves the depth.
  const n = b.length;
  let depth = 0;
  for (; i < n; i++) {
    const d = b[i];
    if (d === QUOTE) {
      for (i++; i < n; i++) {
        const e = b[i];
        if (e === QUOTE) break;
        if (e === BACKSLASH) i++;
      }
    } else if (d === OPEN_OBJ || d === OPEN_ARR) depth++;
    else if (d === CLOSE_OBJ || d === CLOSE_ARR) {
      if (--depth === 0) return i + 1;
    }
  }
  throw new SyntaxError("unterminated JSON value");
}

function sameBytes(b, start, end, key) {
  if (end - start !== key.length) return false;
  for (let k = 0; k < key.length; k++) if (b[start + k] !== key[k]) return false;
  return true;
}

/**
 * Ranges `{start, end}` of the members named in `keys` of the object at `[start, end)`, in one
 * pass; members that are absent are missing from the result. Keys are compared as raw bytes,
 * which is exact for the plain ASCII names our API uses.
 */
export function members(b, keys, start = 0) {
  const wanted = keys.map((k) => [k, encoder.encode(k)]);
  const out = {};
  let i = skipWs(b, start);
  if (b[i] !== OPEN_OBJ) throw new SyntaxError("expected a JSON object");
  i = skipWs(b, i + 1);
  if (b[i] === CLOSE_OBJ) return out;
  for (;;) {
    const keyEnd = skipString(b, i);
    const match = wanted.find(([, kb]) => sameBytes(b, i + 1, keyEnd - 1, kb));
    i = skipWs(b, keyEnd);
    if (b[i] !== COLON) throw new SyntaxError("expected ':' in JSON object");
    const valueStart = skipWs(b, i + 1);
    const valueEnd = skipValue(b, valueStart);
    if (match) out[match[0]] = { start: valueStart, end: valueEnd };
    i = skipWs(b, valueEnd);
    if (b[i] === COMMA) i = skipWs(b, i + 1);
    else if (b[i] === CLOSE_OBJ) return out;
    else throw new SyntaxError("expected ',' or '}' in JSON object");
  }
}

/**
 * Like members(), descending into nested objects instead of skipping them, so one pass finds
 * them all: `locate(b, {snapshot: {seq: true, document: true}, patches: true})` ->
 * `{snapshot: {start, end, seq: {start, end}, document: {start, end}}, patches: {start, end}}`.
 * Each byte is looked at once, where members() on the envelope and then on the snapshot
 * would skip the snapshot's document twice.
 */
export function locate(b, spec, start = 0) {
  return locateAt(b, spec, skipWs(b, start));
}

function locateAt(b, spec, i) {
  const wanted = Object.keys(spec).map((k) => [k, encoder.encode(k)]);
  const out = {};
  if (b[i] !== OPEN_OBJ) throw new SyntaxError("expected a JSON object");
  const start = i;
  i = skipWs(b, i + 1);
  if (b[i] === CLOSE_OBJ) return Object.assign(out, { start, end: i + 1 });
  for (;;) {
    const keyEnd = skipString(b, i);
    const match = wanted.find(([, kb]) => sameBytes(b, i + 1, keyEnd - 1, kb));
    i = skipWs(b, keyEnd);
    if (b[i] !== COLON) throw new SyntaxError("expected ':' in JSON object");
    const valueStart = skipWs(b, i + 1);
    let valueEnd;
    if (match && typeof spec[match[0]] === "object" && b[valueStart] === OPEN_OBJ) {
      const inner = locateAt(b, spec[match[0]], valueStart);
      valueEnd = inner.end;
      out[match[0]] = inner;
    } else {
      valueEnd = skipValue(b, valueStart);
      if (match) out[match[0]] = { start: valueStart, end: valueEnd };
    }
    i = skipWs(b, valueEnd);
    if (b[i] === COMMA) i = skipWs(b, i + 1);
    else if (b[i] === CLOSE_OBJ) return Object.assign(out, { start, end: i + 1 });
    else throw new SyntaxError("expected ',' or '}' in JSON object");
  }
}

/** Ranges of the elements of the array at `start`. */
export function elements(b, start) {
  const out = [];
  let i = skipWs(b, start);
  if (b[i] !== OPEN_ARR) throw new SyntaxError("expected a JSON array");
  i = skipWs(b, i + 1);
  if (b[i] === CLOSE_ARR) return out;
  for (;;) {
    const end = skipValue(b, i);
    out.push({ start: i, end });
    i = skipWs(b, end);
    if (b[i] === COMMA) i = skipWs(b, i + 1);
    else if (b[i] === CLOSE_ARR) return out;
    else throw new SyntaxError("expected ',' or ']' in JSON array");
  }
}

/** Parses a (small) range: for scalars such as ids, names and versions. */
export function parseRange(b, range) {
  return range ? JSON.parse(decoder.decode(b.subarray(range.start, range.end))) : undefined;
}

/** The bytes of a range, as a view (no copy). */
export const view = (b, range) => b.subarray(range.start, range.end);

/**
 * `[` + the elements `from..to` (inclusive) of an array + `]`: elements are contiguous in the
 * text, so this is one copy of the run between them.
 */
export function arrayOf(b, elems, from, to) {
  const first = elems[from].start, last = elems[to].end;
  const out = new Uint8Array(last - first + 2);
  out[0] = OPEN_ARR;
  out.set(b.subarray(first, last), 1);
  out[out.length - 1] = CLOSE_ARR;
  return out;
}
