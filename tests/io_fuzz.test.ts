/**
 * Fuzzing of the safetensors header parser and reader: seeded mutations of valid files (flipped bytes,
 * changed numbers, truncation, duplicate keys, huge lengths, bad shapes and offsets, non-string metadata,
 * nested garbage). Every case must either open and read correctly or throw a SafetensorsError; any other
 * error type, or a case that runs for seconds, fails the test.
 */
import assert from "node:assert/strict";
import { Rng } from "../core/tensor/random.ts";
import { encodeBf16, encodeF16 } from "../core/io/float16.ts";
import {
  bytesToFloat32,
  checkHeaderLength,
  DTYPE_SIZES,
  encodeSafetensors,
  parseSafetensorsHeader,
  SafetensorsError,
  SafetensorsFile,
  type TensorToWrite,
} from "../core/io/safetensors.ts";

const CASES = 12_000;
/** Every FILE_EVERY-th case also goes through a real file (open + read every tensor). */
const FILE_EVERY = 20;

/** Valid files the mutations start from. */
function baseFiles(rng: Rng): Uint8Array<ArrayBuffer>[] {
  const t = (name: string, dtype: TensorToWrite["dtype"], shape: number[], data: ArrayBufferView): TensorToWrite => ({
    name,
    dtype,
    shape,
    data,
  });
  return [
    encodeSafetensors([t("w", "F32", [3, 4], rng.uniformArray(12))]),
    encodeSafetensors(
      [
        t("a.weight", "BF16", [4, 2], encodeBf16(rng.uniformArray(8))),
        t("a.bias", "F16", [4], encodeF16(rng.uniformArray(4))),
        t("ids", "I64", [3], new BigInt64Array([1n, -2n, 3n])),
        t("mask", "BOOL", [5], new Uint8Array([1, 0, 1, 1, 0])),
        t("q", "I8", [2, 3], new Int8Array([-1, 2, -3, 4, -5, 6])),
        t("scalar", "F64", [], new Float64Array([2.5])),
        t("empty", "U16", [0, 3], new Uint16Array(0)),
      ],
      { note: "fuzz", 'quote"key': "v\\alue" },
    ),
    encodeSafetensors([
      t("x", "F8_E4M3", [4], new Uint8Array([0x38, 0x7f, 0x00, 0xc0])),
      t("y", "F8_E5M2", [2], new Uint8Array([0x3c, 0x7c])),
      t("z", "U32", [2], new Uint32Array([1, 2 ** 31])),
      t("u", "U64", [1], new BigUint64Array([5n])),
      t("s", "I16", [3], new Int16Array([-1, 0, 1])),
      t("i", "I32", [2], new Int32Array([7, -7])),
      t("b", "U8", [2], new Uint8Array([9, 250])),
    ]),
  ];
}

/** Splits file bytes into header text and data. */
function split(file: Uint8Array): { header: string; data: Uint8Array } {
  const n = Number(new DataView(file.buffer, file.byteOffset).getBigUint64(0, true));
  return { header: new TextDecoder().decode(file.subarray(8, 8 + n)), data: file.subarray(8 + n) };
}

/** Reassembles a file from header text and data (the length prefix is recomputed). */
function join(header: string, data: Uint8Array): Uint8Array<ArrayBuffer> {
  const h = new TextEncoder().encode(header);
  const out = new Uint8Array(8 + h.length + data.length);
  new DataView(out.buffer).setBigUint64(0, BigInt(h.length), true);
  out.set(h, 8);
  out.set(data, 8 + h.length);
  return out;
}

/** Random element of a list. */
function pick<T>(rng: Rng, xs: readonly T[]): T {
  return xs[rng.int(xs.length)];
}

/** Number-ish replacements, valid and invalid. */
const NUMBERS = [
  "0",
  "1",
  "-1",
  "7",
  "4",
  "1.5",
  "-0",
  "1e3",
  "1e400",
  "9007199254740993",
  "18446744073709551616",
  "2e9",
  '"3"',
  "null",
  "[]",
  "true",
];

/** Garbage values to splice in place of a JSON value. */
function garbage(rng: Rng): string {
  switch (rng.int(6)) {
    case 0: {
      const depth = 1 + rng.int(5000);
      return "[".repeat(depth) + "]".repeat(depth);
    }
    case 1: {
      const depth = 1 + rng.int(2000);
      return '{"k":'.repeat(depth) + "0" + "}".repeat(depth);
    }
    case 2:
      return pick(rng, ['"x"', "null", "true", "{}", "[]", "-5", '{"dtype":"F32"}', '[0,"a",{}]']);
    case 3:
      return JSON.stringify('\u0000\ud800 broken \\ " surrogate');
    case 4:
      return `{"dtype":${pick(rng, ['"F32"', '"f32"', '"BF16"', '"F4"', "3"])},"shape":${
        pick(rng, ["[2]", "[-1]", "[1e20]", '["2"]', "[]", "[2,0]", "null"])
      },"data_offsets":${pick(rng, ["[0,8]", "[8,0]", "[0]", "[0,1,2]", "[-8,0]", "[0,1e300]", '"0,8"'])}}`;
    default:
      return "0".repeat(1 + rng.int(400));
  }
}

/** Applies one random mutation to a valid file; returns the bytes and the mutation's name. */
function mutate(rng: Rng, file: Uint8Array<ArrayBuffer>): { bytes: Uint8Array<ArrayBuffer>; kind: string } {
  const { header, data } = split(file);
  switch (rng.int(14)) {
    case 0: { // flip random bytes anywhere
      const out = file.slice();
      const flips = 1 + rng.int(4);
      for (let i = 0; i < flips; i++) out[rng.int(out.length)] ^= 1 << rng.int(8);
      return { bytes: out, kind: "flip bytes" };
    }
    case 1: { // change one number in the header
      const nums = [...header.matchAll(/-?\d+(\.\d+)?([eE][+-]?\d+)?/g)];
      if (nums.length === 0) return { bytes: file, kind: "change number (none)" };
      const m = pick(rng, nums);
      const h = header.slice(0, m.index) + pick(rng, NUMBERS) + header.slice(m.index! + m[0].length);
      return { bytes: join(h, data), kind: "change number" };
    }
    case 2: // truncate
      return { bytes: file.slice(0, rng.int(file.length)), kind: "truncate" };
    case 3: { // duplicate a top-level member or a field inside an entry
      const members = [...header.matchAll(/"([^"\\]+)":\{[^{}]*\}/g)];
      const fields = [...header.matchAll(/"(dtype|shape|data_offsets)":("[^"]*"|\[[^\]]*\])/g)];
      const m = rng.int(2) === 0 && members.length ? pick(rng, members) : fields.length ? pick(rng, fields) : null;
      if (!m) return { bytes: file, kind: "duplicate key (none)" };
      const at = m.index! + m[0].length;
      return { bytes: join(header.slice(0, at) + "," + m[0] + header.slice(at), data), kind: "duplicate key" };
    }
    case 4: { // huge or wrong header length
      const out = file.slice();
      const n =
        pick(rng, [2n ** 64n - 1n, 100_000_001n, 2n ** 63n, BigInt(out.length), BigInt(out.length - 7), 0n, 1n]) +
        BigInt(rng.int(3));
      new DataView(out.buffer).setBigUint64(0, n & (2n ** 64n - 1n), true);
      return { bytes: out, kind: "header length" };
    }
    case 5: { // negative or huge shapes
      const shapes = [...header.matchAll(/"shape":\[[^\]]*\]/g)];
      if (!shapes.length) return { bytes: file, kind: "shape (none)" };
      const m = pick(rng, shapes);
      const s = pick(rng, [
        "[-1]",
        "[-4,3]",
        "[1e30]",
        "[4294967296,4294967296]",
        "[9007199254740992]",
        "[2,-0]",
        "[0]",
        "[1,1,1,1,1,1]",
        "[3.5]",
      ]);
      return { bytes: join(header.replace(m[0], `"shape":${s}`), data), kind: "shape" };
    }
    case 6: { // swap or reverse offsets
      const offs = [...header.matchAll(/"data_offsets":\[(\d+),(\d+)\]/g)];
      if (offs.length === 0) return { bytes: file, kind: "offsets (none)" };
      let h = header;
      if (offs.length >= 2 && rng.int(2) === 0) {
        const a = pick(rng, offs);
        const b = pick(rng, offs);
        h = h.replace(a[0], "\u0001").replace(b[0], a[0]).replace("\u0001", b[0]);
      } else {
        const a = pick(rng, offs);
        h = h.replace(a[0], `"data_offsets":[${a[2]},${a[1]}]`);
      }
      return { bytes: join(h, data), kind: "swap offsets" };
    }
    case 7: { // non-string metadata
      const bad = pick(rng, ["5", "null", "true", "[1]", '{"a":1}', '"ok"', '{"x":"y"}']);
      const value = rng.int(2) === 0 ? `{"k":${bad}}` : bad;
      const h = header.includes('"__metadata__":')
        ? header.replace(/"__metadata__":\{[^{}]*\}/, `"__metadata__":${value}`)
        : `{"__metadata__":${value},` + header.slice(1);
      return { bytes: join(h, data), kind: "metadata" };
    }
    case 8: { // nested garbage in place of an entry or a field
      const members = [...header.matchAll(/"([^"\\]+)":(\{[^{}]*\}|\[[^\]]*\]|"[^"]*")/g)];
      if (!members.length) return { bytes: file, kind: "garbage (none)" };
      const m = pick(rng, members);
      const h = header.replace(m[0], `"${m[1]}":${garbage(rng)}`);
      return { bytes: join(h, data), kind: "nested garbage" };
    }
    case 9: { // delete or insert structural characters
      const i = rng.int(header.length);
      const h = rng.int(2) === 0
        ? header.slice(0, i) + header.slice(i + 1)
        : header.slice(0, i) + pick(rng, ["{", "}", "[", "]", ",", ":", '"', "\\", " ", "0"]) + header.slice(i);
      return { bytes: join(h, data), kind: "structure" };
    }
    case 10: { // change a dtype
      const dts = [...header.matchAll(/"dtype":"([A-Z0-9_]+)"/g)];
      if (!dts.length) return { bytes: file, kind: "dtype (none)" };
      const m = pick(rng, dts);
      const to = pick(rng, [...Object.keys(DTYPE_SIZES), "F4", "C64", "bf16", "", "F8_E8M0"]);
      return { bytes: join(header.replace(m[0], `"dtype":"${to}"`), data), kind: "dtype" };
    }
    case 11: { // append or drop data bytes
      const extra = rng.int(2) === 0 ? new Uint8Array(1 + rng.int(16)) : null;
      const d = extra
        ? new Uint8Array([...data, ...extra])
        : data.subarray(0, Math.max(0, data.length - 1 - rng.int(8)));
      return { bytes: join(header, d), kind: "data length" };
    }
    case 12: { // invalid UTF-8 or a BOM in the header
      const out = file.slice();
      const at = 8 + rng.int(Math.max(1, header.length));
      out[at] = pick(rng, [0xff, 0xc0, 0x80, 0xef, 0xfe]);
      return { bytes: out, kind: "utf8" };
    }
    default: { // a header that is not a JSON object
      const h = pick(rng, ["[]", "null", '"str"', "1", "{}", "", " ", "{}}", "[{}]", `{"a":1}`]);
      return { bytes: join(h, rng.int(2) === 0 ? data : new Uint8Array(0)), kind: "not an object" };
    }
  }
}

/** Parses in memory, checking the invariants of any accepted header and decoding every tensor. */
function parseInMemory(bytes: Uint8Array<ArrayBuffer>): number {
  const n = checkHeaderLength(bytes.subarray(0, Math.min(8, bytes.length)), bytes.length, "fuzz.safetensors");
  const parsed = parseSafetensorsHeader(bytes.subarray(8, 8 + n), bytes.length, "fuzz.safetensors");
  let at = parsed.dataStart;
  for (const e of parsed.entries) {
    assert.equal(e.start, at, "accepted tensors are contiguous");
    const elements = e.shape.reduce((p, d) => p * d, 1);
    assert.equal(e.end - e.start, elements * DTYPE_SIZES[e.dtype], "accepted sizes match dtype x shape");
    const values = bytesToFloat32(bytes.slice(e.start, e.end), e.dtype);
    assert.equal(values.length, elements);
    at = e.end;
  }
  assert.equal(at, bytes.length, "accepted headers describe the whole file");
  for (const v of Object.values(parsed.metadata)) assert.equal(typeof v, "string");
  return parsed.entries.length;
}

/** Opens through a real file and reads every tensor every way. */
async function parseFromFile(path: string, bytes: Uint8Array): Promise<void> {
  await Deno.writeFile(path, bytes);
  const f = await SafetensorsFile.open(path);
  try {
    for (const name of f.names()) {
      const e = f.entry(name);
      assert.equal((await f.readBytes(name)).length, e.end - e.start);
    }
    assert.equal(f.bytesRead, bytes.length, "reading every tensor once reads the whole file exactly once");
    for (const name of f.names()) {
      await f.readFloat32(name);
      for (const read of [() => f.readInt32(name), () => f.readInt8(name)]) {
        try {
          await read();
        } catch (err) {
          if (!(err instanceof SafetensorsError)) throw err;
        }
      }
    }
  } finally {
    f.close();
  }
}

Deno.test(`fuzz: ${CASES} mutated headers either open or throw SafetensorsError`, async () => {
  const rng = new Rng(20240607);
  const bases = baseFiles(rng);
  for (const b of bases) parseInMemory(b);
  const dir = await Deno.makeTempDir({ prefix: "io_fuzz_" });
  const kinds = new Map<string, { ok: number; rejected: number }>();
  let slowest = 0;
  try {
    for (let i = 0; i < CASES; i++) {
      const { bytes, kind } = mutate(rng, pick(rng, bases));
      const began = performance.now();
      let ok = true;
      try {
        parseInMemory(bytes);
      } catch (err) {
        if (!(err instanceof SafetensorsError)) {
          throw new Error(`case ${i} (${kind}) threw ${err instanceof Error ? err.name : typeof err}: ${err}`, {
            cause: err,
          });
        }
        ok = false;
      }
      if (i % FILE_EVERY === 0) {
        try {
          await parseFromFile(`${dir}/case.safetensors`, bytes);
          assert.ok(ok, `case ${i} (${kind}) opened from a file but not in memory`);
        } catch (err) {
          if (!(err instanceof SafetensorsError)) {
            throw new Error(`case ${i} (${kind}) from a file threw ${err}`, { cause: err });
          }
          assert.ok(!ok, `case ${i} (${kind}) opened in memory but not from a file: ${err.message}`);
        }
      }
      slowest = Math.max(slowest, performance.now() - began);
      const k = kinds.get(kind) ?? { ok: 0, rejected: 0 };
      if (ok) k.ok++;
      else k.rejected++;
      kinds.set(kind, k);
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
  let accepted = 0;
  let rejected = 0;
  for (const k of kinds.values()) {
    accepted += k.ok;
    rejected += k.rejected;
  }
  assert.equal(accepted + rejected, CASES);
  // The mix must exercise both outcomes and every kind of mutation (a vacuous fuzzer would not).
  assert.ok(accepted > 100 && rejected > CASES / 2, `accepted ${accepted}, rejected ${rejected}`);
  for (const kind of ["flip bytes", "truncate", "duplicate key", "header length", "nested garbage", "metadata"]) {
    assert.ok((kinds.get(kind)?.rejected ?? 0) > 0, `${kind} produced rejections`);
  }
  assert.ok(slowest < 5000, `slowest case took ${slowest.toFixed(0)} ms`);
});
