/**
 * Tests of core/io: safetensors reading and writing (every dtype, lazy reads, every rejected input),
 * BF16/F16 conversion against a bit-level reference, the atomic writer, and sharded checkpoints.
 */
import assert from "node:assert/strict";
import { Rng } from "../core/tensor/random.ts";
import { AtomicWriteError, writeFileAtomic, writeTextAtomic } from "../core/io/atomic.ts";
import { Checkpoint, CheckpointError, writeCheckpoint } from "../core/io/checkpoint.ts";
import {
  BF16_NAN,
  bf16BitsToF32,
  decodeBf16,
  decodeF16,
  encodeBf16,
  encodeF16,
  f16BitsToF32,
  f32ToBf16Bits,
  f32ToF16Bits,
} from "../core/io/float16.ts";
import {
  DTYPE_SIZES,
  type SafetensorsDType,
  SafetensorsError,
  SafetensorsFile,
  type TensorToWrite,
  writeSafetensors,
} from "../core/io/safetensors.ts";
import { sharedTest } from "./shared_data.ts";

// ---------------------------------------------------------------------------------------------
// helpers

/** Runs `fn` with a fresh temporary directory, removed afterwards. */
async function withTempDir(fn: (dir: string) => Promise<void>): Promise<void> {
  const dir = await Deno.makeTempDir({ prefix: "io_safetensors_" });
  try {
    await fn(dir);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

/** Names of the entries of a directory, sorted. */
async function listDir(dir: string): Promise<string[]> {
  const out: string[] = [];
  for await (const e of Deno.readDir(dir)) out.push(e.name);
  return out.sort();
}

/** Builds file bytes by hand: an 8-byte length (`declared` or the real one), header text, data. */
function rawFile(header: string, data: Uint8Array | number = 0, declared?: bigint): Uint8Array<ArrayBuffer> {
  const h = new TextEncoder().encode(header);
  const d = typeof data === "number" ? new Uint8Array(data) : data;
  const out = new Uint8Array(8 + h.length + d.length);
  new DataView(out.buffer).setBigUint64(0, declared ?? BigInt(h.length), true);
  out.set(h, 8);
  out.set(d, 8 + h.length);
  return out;
}

/** Asserts that opening `bytes` as a file fails with a SafetensorsError whose message matches `pattern`. */
async function expectOpenError(dir: string, bytes: Uint8Array, pattern: RegExp, tensor?: string): Promise<void> {
  const path = `${dir}/bad.safetensors`;
  await Deno.writeFile(path, bytes);
  const err = await SafetensorsFile.open(path).then(
    (f) => {
      f.close();
      return undefined;
    },
    (e) => e,
  );
  assert.ok(err instanceof SafetensorsError, `expected a SafetensorsError for ${pattern}, got ${err}`);
  assert.match(err.message, pattern);
  assert.ok(err.message.includes(path), `message names the file: ${err.message}`);
  if (tensor !== undefined) {
    assert.equal(err.tensor, tensor);
    assert.ok(err.message.includes(`"${tensor}"`), `message names the tensor: ${err.message}`);
  }
  assert.equal(err.message.split(/\.\s/).length, 1, `one sentence: ${err.message}`);
}

/** Bytes of a typed array. */
function bytesOf(a: ArrayBufferView): Uint8Array {
  return new Uint8Array(a.buffer, a.byteOffset, a.byteLength);
}

// ---------------------------------------------------------------------------------------------
// independent bit-level reference for the 16-bit float formats

/** Value of an IEEE binary16 pattern, from the format's definition. */
function refHalfValue(bits: number): number {
  const sign = bits & 0x8000 ? -1 : 1;
  const exp = (bits >> 10) & 0x1f;
  const man = bits & 0x3ff;
  if (exp === 0x1f) return man ? NaN : sign * Infinity;
  if (exp === 0) return sign * man * 2 ** -24;
  return sign * (1 + man / 1024) * 2 ** (exp - 15);
}

/** Value of a bfloat16 pattern, from the format's definition (8 exponent bits, 7 mantissa bits). */
function refBf16Value(bits: number): number {
  const sign = bits & 0x8000 ? -1 : 1;
  const exp = (bits >> 7) & 0xff;
  const man = bits & 0x7f;
  if (exp === 0xff) return man ? NaN : sign * Infinity;
  if (exp === 0) return sign * man * 2 ** -133;
  return sign * (1 + man / 128) * 2 ** (exp - 127);
}

/**
 * Round-to-nearest-even encoder built from a table: the positive finite values in bit order, then the
 * infinity pattern standing for the next power of two (so overflow rounds as IEEE 754 prescribes).
 */
function makeRefEncoder(value: (bits: number) => number, infBits: number, infValue: number) {
  const vals: number[] = [];
  const bits: number[] = [];
  for (let b = 0; b < infBits; b++) {
    vals.push(value(b));
    bits.push(b);
  }
  vals.push(infValue);
  bits.push(infBits);
  return (x: number): number | "nan" => {
    if (Number.isNaN(x)) return "nan";
    const sign = x < 0 || Object.is(x, -0) ? 0x8000 : 0;
    const a = Math.abs(x);
    if (a >= infValue) return sign | infBits;
    let lo = 0;
    let hi = vals.length - 1;
    while (hi - lo > 1) {
      const mid = (lo + hi) >> 1;
      if (vals[mid] <= a) lo = mid;
      else hi = mid;
    }
    if (vals[lo] === a) return sign | bits[lo];
    const dLo = a - vals[lo];
    const dHi = vals[hi] - a;
    if (dLo < dHi) return sign | bits[lo];
    if (dHi < dLo) return sign | bits[hi];
    return sign | ((bits[lo] & 1) === 0 ? bits[lo] : bits[hi]);
  };
}

const refF16 = makeRefEncoder(refHalfValue, 0x7c00, 2 ** 16);
const refBf16 = makeRefEncoder(refBf16Value, 0x7f80, 2 ** 128);

/** Float32 inputs that stress rounding: specials, ties between neighbours, and one f32 ulp either side. */
function stressInputs(value: (bits: number) => number, infBits: number): number[] {
  const xs = [0, -0, Infinity, -Infinity, 3.4028234663852886e38, -3.4028234663852886e38, 1e-45, -1e-45, 65504, 65520];
  xs.push(Math.fround(65519.99), 1.1754942106924411e-38, 5.960464477539063e-8, 2.9802322387695312e-8);
  const f = new Float32Array(1);
  const u = new Uint32Array(f.buffer);
  for (let b = 0; b < infBits; b += 7) {
    const mid = (value(b) + value(b + 1)) / 2;
    f[0] = mid;
    assert.equal(f[0], mid, "midpoints are exact in float32");
    xs.push(mid, -mid);
    const base = u[0];
    u[0] = base + 1;
    xs.push(f[0]);
    if (base > 0) {
      u[0] = base - 1;
      xs.push(f[0]);
    }
  }
  return xs;
}

/** Random float32 values drawn from uniformly random bit patterns. */
function randomF32(rng: Rng, n: number): Float32Array {
  const u = new Uint32Array(n);
  for (let i = 0; i < n; i++) u[i] = rng.nextU32();
  return new Float32Array(u.buffer);
}

Deno.test("F16 encoding matches a bit-level round-to-nearest-even reference", () => {
  const rng = new Rng(11);
  const xs = [...stressInputs(refHalfValue, 0x7c00), ...randomF32(rng, 100_000)];
  const encoded = encodeF16(xs);
  let checked = 0;
  for (let i = 0; i < xs.length; i++) {
    const want = refF16(xs[i]);
    const got = f32ToF16Bits(xs[i]);
    assert.equal(encoded[i], got, `array and scalar encoders agree on ${xs[i]}`);
    if (want === "nan") {
      assert.equal(got, 0x7e00, `NaN is written as the quiet NaN 0x7e00, got ${got.toString(16)}`);
    } else {
      assert.equal(got, want, `f16(${xs[i]}) = 0x${got.toString(16)}, reference 0x${want.toString(16)}`);
    }
    checked++;
  }
  assert.ok(checked > 100_000);
  // Named edge cases, written out from the IEEE binary16 definition.
  assert.equal(f32ToF16Bits(65520), 0x7c00, "65520 (max + half ulp) ties to even: infinity");
  assert.equal(f32ToF16Bits(Math.fround(65519.99)), 0x7bff);
  assert.equal(f32ToF16Bits(2 ** -25), 0x0000, "half the smallest subnormal ties to zero");
  assert.equal(f32ToF16Bits(3 * 2 ** -25), 0x0002, "1.5 subnormal ulps ties up to the even 2");
  assert.equal(f32ToF16Bits(-0), 0x8000);
  assert.equal(f32ToF16Bits(-Infinity), 0xfc00);
  assert.equal(f32ToF16Bits(1 + 2 ** -11), 0x3c00, "tie between 1 and 1+2^-10 goes to even 1");
  assert.equal(f32ToF16Bits(1 + 3 * 2 ** -11), 0x3c02);
});

Deno.test("BF16 encoding matches a bit-level round-to-nearest-even reference; NaN is 0x7FC0", () => {
  const rng = new Rng(12);
  const xs = [...stressInputs(refBf16Value, 0x7f80), ...randomF32(rng, 100_000)];
  const encoded = encodeBf16(Float32Array.from(xs));
  const encodedPlain = encodeBf16(xs);
  for (let i = 0; i < xs.length; i++) {
    const want = refBf16(xs[i]);
    const got = f32ToBf16Bits(xs[i]);
    assert.equal(encoded[i], got);
    assert.equal(encodedPlain[i], got);
    assert.equal(got, want === "nan" ? 0x7fc0 : want, `bf16(${xs[i]}) = 0x${got.toString(16)}`);
  }
  // Signalling and negative NaN payloads must not round into infinity.
  const nanBits = new Uint32Array([0x7f800001, 0xff800001, 0x7fffffff, 0xffffffff, 0x7fc00000]);
  for (const b of encodeBf16(new Float32Array(nanBits.buffer))) assert.equal(b, BF16_NAN);
  assert.equal(f32ToBf16Bits(1 + 2 ** -8), 0x3f80, "tie between 1 and 1+2^-7 goes to even 1");
  assert.equal(f32ToBf16Bits(1 + 3 * 2 ** -8), 0x3f82);
  assert.equal(f32ToBf16Bits(3.4028234663852886e38), 0x7f80, "float32 max rounds to infinity");
  assert.equal(f32ToBf16Bits(2 ** -133), 0x0001, "smallest bf16 subnormal");
});

Deno.test("F16 and BF16 decoding match the format definitions for all 65536 patterns", () => {
  const all = new Uint16Array(65536).map((_, i) => i);
  const h = decodeF16(all);
  const b = decodeBf16(all);
  for (let i = 0; i < 65536; i++) {
    const wantH = refHalfValue(i);
    const wantB = Math.fround(refBf16Value(i));
    if (Number.isNaN(wantH)) assert.ok(Number.isNaN(h[i]) && Number.isNaN(f16BitsToF32(i)));
    else assert.ok(Object.is(h[i], wantH) && Object.is(f16BitsToF32(i), wantH), `f16 0x${i.toString(16)}`);
    if (Number.isNaN(wantB)) assert.ok(Number.isNaN(b[i]) && Number.isNaN(bf16BitsToF32(i)));
    else assert.ok(Object.is(b[i], wantB) && Object.is(bf16BitsToF32(i), wantB), `bf16 0x${i.toString(16)}`);
  }
});

// ---------------------------------------------------------------------------------------------
// round trip of every dtype

/** One tensor per dtype with its expected float and int32 values (written out by hand). */
function everyDtype(): { t: TensorToWrite; floats: number[]; ints?: number[] }[] {
  const f16 = [0, 1, -2, 0.5, 65504, -0.000060975551605224609];
  const bf16 = [0, 1, -2, 0.5, 3.3895313892515355e38, 1.5];
  return [
    {
      t: { name: "bool", dtype: "BOOL", shape: [4], data: new Uint8Array([0, 1, 1, 0]) },
      floats: [0, 1, 1, 0],
      ints: [0, 1, 1, 0],
    },
    {
      t: { name: "u8", dtype: "U8", shape: [3], data: new Uint8Array([0, 200, 255]) },
      floats: [0, 200, 255],
      ints: [0, 200, 255],
    },
    {
      t: { name: "i8", dtype: "I8", shape: [3], data: new Int8Array([-128, 0, 127]) },
      floats: [-128, 0, 127],
      ints: [-128, 0, 127],
    },
    {
      t: { name: "i16", dtype: "I16", shape: [2], data: new Int16Array([-32768, 32767]) },
      floats: [-32768, 32767],
      ints: [-32768, 32767],
    },
    {
      t: { name: "u16", dtype: "U16", shape: [2], data: new Uint16Array([0, 65535]) },
      floats: [0, 65535],
      ints: [0, 65535],
    },
    { t: { name: "f16", dtype: "F16", shape: [2, 3], data: encodeF16(f16) }, floats: f16 },
    { t: { name: "bf16", dtype: "BF16", shape: [3, 2], data: encodeBf16(bf16) }, floats: bf16 },
    {
      t: { name: "i32", dtype: "I32", shape: [3], data: new Int32Array([-(2 ** 31), 7, 2 ** 31 - 1]) },
      floats: [-(2 ** 31), 7, 2 ** 31 - 1],
      ints: [-(2 ** 31), 7, 2 ** 31 - 1],
    },
    {
      t: { name: "u32", dtype: "U32", shape: [2], data: new Uint32Array([5, 2 ** 31 - 1]) },
      floats: [5, 2 ** 31 - 1],
      ints: [5, 2 ** 31 - 1],
    },
    {
      t: { name: "f32", dtype: "F32", shape: [2, 2], data: new Float32Array([1.25, -3.5, 1e-40, Infinity]) },
      floats: [1.25, -3.5, Math.fround(1e-40), Infinity],
    },
    {
      t: { name: "f64", dtype: "F64", shape: [3], data: new Float64Array([0.1, -1e300, 2]) },
      floats: [Math.fround(0.1), -Infinity, 2],
    },
    {
      t: { name: "i64", dtype: "I64", shape: [3], data: new BigInt64Array([-5n, 0n, 2147483647n]) },
      floats: [-5, 0, 2147483647],
      ints: [-5, 0, 2147483647],
    },
    {
      t: { name: "u64", dtype: "U64", shape: [2], data: new BigUint64Array([9n, 1000n]) },
      floats: [9, 1000],
      ints: [9, 1000],
    },
    // F8_E4M3 (fn): 0x38 = 1, 0xC0 = -2, 0x7E = 448 (max), 0x01 = 2^-9, 0x7F = NaN.
    {
      t: { name: "f8e4m3", dtype: "F8_E4M3", shape: [5], data: new Uint8Array([0x38, 0xc0, 0x7e, 0x01, 0x7f]) },
      floats: [1, -2, 448, 2 ** -9, NaN],
    },
    // F8_E5M2: 0x3C = 1, 0x7B = 57344 (max), 0x7C = inf, 0x01 = 2^-16, 0x80 = -0.
    {
      t: { name: "f8e5m2", dtype: "F8_E5M2", shape: [5], data: new Uint8Array([0x3c, 0x7b, 0x7c, 0x01, 0x80]) },
      floats: [1, 57344, Infinity, 2 ** -16, -0],
    },
    { t: { name: "scalar", dtype: "F32", shape: [], data: new Float32Array([42]) }, floats: [42] },
    { t: { name: "empty", dtype: "F32", shape: [0, 4], data: new Float32Array(0) }, floats: [] },
  ];
}

Deno.test("writeSafetensors round-trips every dtype with aligned, ordered layout", async () => {
  await withTempDir(async (dir) => {
    const cases = everyDtype();
    assert.deepEqual(new Set(cases.map((c) => c.t.dtype)), new Set(Object.keys(DTYPE_SIZES)), "every dtype covered");
    const path = `${dir}/all.safetensors`;
    const size = await writeSafetensors(path, cases.map((c) => c.t), { source: "test" });
    assert.equal(size, (await Deno.stat(path)).size);
    const f = await SafetensorsFile.open(path);
    try {
      assert.deepEqual(f.metadata, { format: "pt", source: "test" });
      assert.equal(f.dataStart % 8, 0, "data section starts 8-byte aligned");
      const order = f.entries();
      for (let i = 1; i < order.length; i++) {
        const a = order[i - 1];
        const b = order[i];
        const sa = DTYPE_SIZES[a.dtype];
        const sb = DTYPE_SIZES[b.dtype];
        assert.ok(sa > sb || (sa === sb && a.name < b.name), `order ${a.name} before ${b.name}`);
      }
      for (const e of order) assert.equal((e.start - f.dataStart) % DTYPE_SIZES[e.dtype], 0, `${e.name} aligned`);
      for (const { t, floats, ints } of cases) {
        const e = f.entry(t.name);
        assert.equal(e.dtype, t.dtype);
        assert.deepEqual(e.shape, t.shape);
        assert.deepEqual(await f.readBytes(t.name), bytesOf(t.data).slice());
        const got = await f.readFloat32(t.name);
        assert.equal(got.length, floats.length);
        for (let i = 0; i < floats.length; i++) {
          if (Number.isNaN(floats[i])) assert.ok(Number.isNaN(got[i]), `${t.name}[${i}] NaN`);
          else assert.ok(Object.is(got[i], Math.fround(floats[i])), `${t.name}[${i}] = ${got[i]}, want ${floats[i]}`);
        }
        if (ints) assert.deepEqual([...await f.readInt32(t.name)], ints);
        else {
          await assert.rejects(() => f.readInt32(t.name), (err: unknown) => {
            assert.ok(err instanceof SafetensorsError);
            assert.match(
              err.message,
              new RegExp(`tensor "${t.name}" in .* has dtype ${t.dtype}, which readInt32 does not`),
            );
            return true;
          });
        }
      }
      assert.deepEqual([...await f.readInt8("i8")], [-128, 0, 127]);
      await assert.rejects(() => f.readInt8("u8"), /tensor "u8" in .* has dtype U8, which readInt8 does not support/);
    } finally {
      f.close();
    }
  });
});

Deno.test("readInt32 rejects 64-bit values outside the int32 range", async () => {
  await withTempDir(async (dir) => {
    const path = `${dir}/big.safetensors`;
    await writeSafetensors(path, [
      { name: "ids", dtype: "I64", shape: [3], data: new BigInt64Array([1n, -2147483649n, 3n]) },
      { name: "u", dtype: "U32", shape: [1], data: new Uint32Array([2 ** 31]) },
    ]);
    const f = await SafetensorsFile.open(path);
    await assert.rejects(() => f.readInt32("ids"), /tensor "ids" in .* has element 1 outside the int32 range/);
    await assert.rejects(() => f.readInt32("u"), /tensor "u" in .* has element 0 outside the int32 range/);
    f.close();
  });
});

Deno.test("writeSafetensors validates its input and leaves nothing behind", async () => {
  await withTempDir(async (dir) => {
    const path = `${dir}/x.safetensors`;
    const good: TensorToWrite = { name: "a", dtype: "F32", shape: [2], data: new Float32Array(2) };
    const bad: [TensorToWrite[], RegExp][] = [
      [[{ ...good, data: new Float32Array(3) }], /tensor "a" \(F32 \[2\]\) needs 8 bytes but has 12 bytes/],
      [[good, good], /tensor "a" is given twice/],
      [[{ ...good, dtype: "F7" as SafetensorsDType }], /tensor "a" has unknown dtype "F7"/],
      [[{ ...good, shape: [-2] }], /tensor "a" has shape \[-2\], not non-negative integers/],
      [[{ ...good, name: "__metadata__" }], /"__metadata__" is not a valid tensor name/],
    ];
    for (const [tensors, pattern] of bad) {
      await assert.rejects(() => writeSafetensors(path, tensors), (err: unknown) => {
        assert.ok(err instanceof SafetensorsError);
        assert.match(err.message, pattern);
        assert.ok(err.message.includes(path));
        return true;
      });
    }
    assert.deepEqual(await listDir(dir), []);
  });
});

// ---------------------------------------------------------------------------------------------
// lazy reads

Deno.test("opening reads only the header; reading one tensor reads exactly its bytes", async () => {
  await withTempDir(async (dir) => {
    const rng = new Rng(3);
    const tensors: TensorToWrite[] = [];
    for (let i = 0; i < 6; i++) {
      tensors.push({ name: `w${i}`, dtype: "F32", shape: [64, 32 + i], data: rng.uniformArray(64 * (32 + i)) });
    }
    tensors.push({ name: "h", dtype: "BF16", shape: [100], data: encodeBf16(rng.uniformArray(100)) });
    const path = `${dir}/lazy.safetensors`;
    const fileSize = await writeSafetensors(path, tensors);
    const f = await SafetensorsFile.open(path);
    const headerLen = Number(new DataView((await Deno.readFile(path)).buffer).getBigUint64(0, true));
    assert.equal(f.bytesRead, 8 + headerLen, "open reads the 8-byte prefix and the header only");
    assert.equal(f.headerBytes, 8 + headerLen);
    assert.equal(f.tensorBytesRead, 0);
    assert.ok(f.bytesRead < fileSize / 20);

    const w3 = await f.readFloat32("w3");
    assert.deepEqual(w3, tensors[3].data);
    assert.equal(f.tensorBytesRead, 64 * 35 * 4, "one read fetches exactly the tensor's bytes");
    assert.equal(f.bytesRead, 8 + headerLen + 64 * 35 * 4);
    await f.readBytes("h");
    assert.equal(f.tensorBytesRead, 64 * 35 * 4 + 200);

    // Concurrent reads on one handle must not interleave their seeks.
    const all = await Promise.all(tensors.map((t) => f.readBytes(t.name)));
    all.forEach((b, i) => assert.deepEqual(b, bytesOf(tensors[i].data).slice(), tensors[i].name));
    f.close();
    await assert.rejects(() => f.readBytes("w0"), /is closed, so tensor "w0" cannot be read/);
  });
});

// ---------------------------------------------------------------------------------------------
// every bad input gives its sentence

const ENTRY = (dtype: string, shape: unknown, offs: unknown) =>
  `{"dtype":${JSON.stringify(dtype)},"shape":${JSON.stringify(shape)},"data_offsets":${JSON.stringify(offs)}}`;

Deno.test("each malformed file is rejected with its own sentence", async () => {
  await withTempDir(async (dir) => {
    const ok = `{"a":${ENTRY("F32", [2], [0, 8])}}`;
    // Sanity: the unmutated file opens.
    await Deno.writeFile(`${dir}/ok.safetensors`, rawFile(ok, 8));
    (await SafetensorsFile.open(`${dir}/ok.safetensors`)).close();

    await expectOpenError(dir, new Uint8Array(5), /is truncated: it has 5 bytes, fewer than the 8-byte header length/);
    await expectOpenError(dir, rawFile(ok, 8, 5000n), /declares a header of 5000 bytes but only \d+ bytes follow/);
    await expectOpenError(
      dir,
      rawFile(ok, 8, 2n ** 64n - 1n),
      /header of 18446744073709551615 bytes, more than the 100 MB limit/,
    );
    await expectOpenError(dir, rawFile(`{"a":${ENTRY("F32", [2], [0, 8])}`, 8), /header that is not valid JSON/);
    await expectOpenError(dir, rawFile(`[1,2]`, 0), /header that is not a JSON object/);
    await expectOpenError(
      dir,
      rawFile(`{"a":${ENTRY("F32", [1], [0, 4])},"a":${ENTRY("F32", [1], [4, 8])}}`, 8),
      /lists the key "a" twice/,
      "a",
    );
    await expectOpenError(
      dir,
      rawFile(`{"a":{"dtype":"F32","dtype":"F32","shape":[2],"data_offsets":[0,8]}}`, 8),
      /key "dtype" twice inside "a"/,
      "a",
    );
    await expectOpenError(
      dir,
      rawFile(`{"a":${ENTRY("F32", [2], [0, 8])},"b":${ENTRY("F32", [2], [4, 12])}}`, 12),
      /tensor "b" in .* has data_offsets \[4,12\] that overlap tensor "a" ending at 8/,
      "b",
    );
    await expectOpenError(
      dir,
      rawFile(`{"a":${ENTRY("F32", [2], [0, 8])},"b":${ENTRY("F32", [2], [12, 20])}}`, 20),
      /tensor "b" in .* starts at data offset 12, leaving a gap of 4 bytes after tensor "a"/,
      "b",
    );
    await expectOpenError(
      dir,
      rawFile(`{"a":${ENTRY("F32", [2], [4, 12])}}`, 12),
      /leaving a gap of 4 bytes after the start/,
      "a",
    );
    await expectOpenError(
      dir,
      rawFile(`{"a":${ENTRY("F32", [3], [0, 8])}}`, 8),
      /tensor "a" in .* has dtype F32 and shape \[3\] \(12 bytes\) but its data_offsets \[0,8\] span 8 bytes/,
      "a",
    );
    await expectOpenError(
      dir,
      rawFile(`{"a":${ENTRY("F12", [2], [0, 8])}}`, 8),
      /tensor "a" in .* has unknown dtype "F12"/,
      "a",
    );
    await expectOpenError(
      dir,
      rawFile(`{"a":${ENTRY("F32", [-2], [0, 8])}}`, 8),
      /shape \[-2\], which is not a list of non-negative integers/,
      "a",
    );
    await expectOpenError(
      dir,
      rawFile(`{"a":${ENTRY("F32", [2], [8, 0])}}`, 8),
      /data_offsets \[8,0\], not two non-negative integers/,
      "a",
    );
    await expectOpenError(
      dir,
      rawFile(`{"a":{"dtype":"F32","shape":[2]}}`, 8),
      /tensor "a" in .* has no data_offsets/,
      "a",
    );
    await expectOpenError(dir, rawFile(`{"a":[1]}`, 0), /tensor "a" in .* has an entry that is not an object/, "a");
    await expectOpenError(
      dir,
      rawFile(`{"__metadata__":{"k":5},"a":${ENTRY("F32", [2], [0, 8])}}`, 8),
      /__metadata__ value "k" of type number; values must be strings/,
    );
    await expectOpenError(
      dir,
      rawFile(ok, 4),
      /is truncated: its header describes 8 bytes of tensor data but only 4 bytes follow it/,
    );
    await expectOpenError(dir, rawFile(ok, 12), /has 4 bytes after the last tensor's data/);
    const badUtf8 = rawFile(`{"a":${ENTRY("F32", [2], [0, 8])}}`, 8);
    badUtf8[10] = 0xff;
    await expectOpenError(dir, badUtf8, /header that is not valid UTF-8/);

    const missing = `${dir}/nope.safetensors`;
    await assert.rejects(() => SafetensorsFile.open(missing), (err: unknown) => {
      assert.ok(err instanceof SafetensorsError);
      assert.equal(err.message, `cannot open safetensors file ${missing}: no such file`);
      return true;
    });
    await Deno.mkdir(`${dir}/sub.safetensors`);
    await assert.rejects(() => SafetensorsFile.open(`${dir}/sub.safetensors`), (err: unknown) => {
      assert.ok(err instanceof SafetensorsError, String(err));
      assert.match(err.message, /sub.safetensors( is not a regular file|: )/);
      return true;
    });
    const f = await SafetensorsFile.open(`${dir}/ok.safetensors`);
    assert.throws(() => f.entry("zz"), (err: unknown) => {
      assert.ok(err instanceof SafetensorsError);
      assert.equal(err.message, `tensor "zz" is not in ${dir}/ok.safetensors`);
      assert.equal(err.tensor, "zz");
      return true;
    });
    await assert.rejects(() => f.readFloat32("zz"), /tensor "zz" is not in/);
    await assert.rejects(() => f.readBytes("zz"), /tensor "zz" is not in/);
    f.close();
  });
});

Deno.test("zero-size tensors and scalars follow the reference rules", async () => {
  await withTempDir(async (dir) => {
    const path = `${dir}/z.safetensors`;
    const header = `{"e":${ENTRY("F32", [0], [0, 0])},"s":${ENTRY("I64", [], [0, 8])},"f":${
      ENTRY("F16", [3, 0], [8, 8])
    }}`;
    await Deno.writeFile(path, rawFile(header, new Uint8Array(new BigInt64Array([-7n]).buffer)));
    const f = await SafetensorsFile.open(path);
    assert.deepEqual([...await f.readInt32("s")], [-7]);
    assert.equal((await f.readFloat32("e")).length, 0);
    assert.equal((await f.readFloat32("f")).length, 0);
    f.close();
  });
});

// ---------------------------------------------------------------------------------------------
// atomic writes

Deno.test("writeFileAtomic replaces the target whole, and leaves no temporary file on failure", async () => {
  await withTempDir(async (dir) => {
    const path = `${dir}/out.bin`;
    await writeTextAtomic(path, "old");
    await writeFileAtomic(path, [new Uint8Array([1, 2]), new Uint8Array([3])]);
    assert.deepEqual(await Deno.readFile(path), new Uint8Array([1, 2, 3]));

    // The data source fails halfway: its own error comes through, the old file stays, no temp remains.
    class SourceBroke extends Error {}
    async function* failing() {
      yield new Uint8Array(1000);
      throw new SourceBroke("source broke");
    }
    await assert.rejects(() => writeFileAtomic(path, failing()), SourceBroke);
    assert.deepEqual(await Deno.readFile(path), new Uint8Array([1, 2, 3]));
    assert.deepEqual(await listDir(dir), ["out.bin"]);

    // The rename fails (the target is a non-empty directory): an AtomicWriteError naming the target.
    await Deno.mkdir(`${dir}/taken`);
    await Deno.writeTextFile(`${dir}/taken/x`, "x");
    await assert.rejects(() => writeTextAtomic(`${dir}/taken`, "data"), (err: unknown) => {
      assert.ok(err instanceof AtomicWriteError);
      assert.ok(err.message.startsWith(`could not write ${dir}/taken: `));
      return true;
    });
    assert.deepEqual(await listDir(dir), ["out.bin", "taken"]);

    // The directory does not exist.
    await assert.rejects(() => writeTextAtomic(`${dir}/no/such/file`, "x"), AtomicWriteError);
  });
});

// ---------------------------------------------------------------------------------------------
// checkpoints

/** A small Llama-like tensor set. */
function llamaTensors(layers: number, rng: Rng): TensorToWrite[] {
  const out: TensorToWrite[] = [{
    name: "model.embed_tokens.weight",
    dtype: "F32",
    shape: [32, 16],
    data: rng.uniformArray(512),
  }];
  for (let i = 0; i < layers; i++) {
    for (const p of ["q_proj", "k_proj", "v_proj", "o_proj"]) {
      out.push({
        name: `model.layers.${i}.self_attn.${p}.weight`,
        dtype: "BF16",
        shape: [16, 16],
        data: encodeBf16(rng.uniformArray(256)),
      });
    }
    out.push({
      name: `model.layers.${i}.input_layernorm.weight`,
      dtype: "F32",
      shape: [16],
      data: rng.uniformArray(16),
    });
  }
  out.push({ name: "model.norm.weight", dtype: "F32", shape: [16], data: rng.uniformArray(16) });
  return out;
}

Deno.test("writeCheckpoint shards with an index that Checkpoint reads back lazily", async () => {
  await withTempDir(async (dir) => {
    const tensors = llamaTensors(4, new Rng(5));
    const total = tensors.reduce((s, t) => s + t.data.byteLength, 0);
    const written = await writeCheckpoint(dir, tensors, { maxShardBytes: 3000 });
    assert.ok(written.files.length >= 3, `${written.files.length} shards`);
    const n = String(written.files.length).padStart(5, "0");
    assert.deepEqual(
      written.files,
      written.files.map((_, i) => `model-${String(i + 1).padStart(5, "0")}-of-${n}.safetensors`),
    );
    assert.deepEqual(await listDir(dir), [...written.files, "model.safetensors.index.json"].sort());
    const index = JSON.parse(await Deno.readTextFile(`${dir}/model.safetensors.index.json`));
    assert.equal(index.metadata.total_size, total);
    assert.equal(Object.keys(index.weight_map).length, tensors.length);

    for (const file of written.files) {
      const f = await SafetensorsFile.open(`${dir}/${file}`);
      let bytes = 0;
      for (const e of f.entries()) bytes += e.end - e.start;
      assert.ok(bytes <= 3000 || f.names().length === 1, `${file} holds ${bytes} bytes`);
      f.close();
    }

    const ck = await Checkpoint.open(dir);
    assert.equal(ck.layout, "sharded");
    assert.deepEqual(new Set(ck.names()), new Set(tensors.map((t) => t.name)));
    const headers = ck.headerBytes;
    assert.equal(ck.bytesRead, headers);
    const name = "model.layers.2.self_attn.k_proj.weight";
    assert.equal(ck.fileOf(name), `${dir}/${index.weight_map[name]}`);
    assert.equal(ck.entry(name).file, ck.fileOf(name));
    const t = tensors.find((x) => x.name === name)!;
    assert.deepEqual(await ck.readFloat32(name), decodeBf16(t.data as Uint16Array));
    assert.equal(ck.bytesRead, headers + 512, "reading one tensor reads its 512 bytes only");
    for (const x of tensors) assert.deepEqual(await ck.readBytes(x.name), bytesOf(x.data).slice(), x.name);
    assert.equal(ck.tensorBytesRead, total + 512);
    assert.throws(() => ck.fileOf("lm_head.weight"), /tensor "lm_head.weight" is not in checkpoint/);
    ck.close();

    // Saving again unsharded removes the shards and the index.
    const single = await writeCheckpoint(dir, tensors);
    assert.deepEqual(single.files, ["model.safetensors"]);
    assert.deepEqual(await listDir(dir), ["model.safetensors"]);
    const ck2 = await Checkpoint.open(dir);
    assert.equal(ck2.layout, "single");
    assert.deepEqual(await ck2.readBytes("model.norm.weight"), bytesOf(tensors.at(-1)!.data).slice());
    ck2.close();
  });
});

Deno.test("Checkpoint falls back to every *.safetensors file and rejects bad directories", async () => {
  await withTempDir(async (dir) => {
    await assert.rejects(() => Checkpoint.open(dir), (err: unknown) => {
      assert.ok(err instanceof CheckpointError);
      assert.equal(
        err.message,
        `model directory ${dir} holds no weights: expected model.safetensors, model.safetensors.index.json or *.safetensors files`,
      );
      return true;
    });
    await assert.rejects(() => Checkpoint.open(`${dir}/missing`), /model directory .*missing does not exist/);

    const a: TensorToWrite = { name: "a", dtype: "F32", shape: [1], data: new Float32Array([1]) };
    const b: TensorToWrite = { name: "b", dtype: "I8", shape: [2], data: new Int8Array([-1, 2]) };
    await writeSafetensors(`${dir}/one.safetensors`, [a]);
    await writeSafetensors(`${dir}/two.safetensors`, [b]);
    const ck = await Checkpoint.open(dir);
    assert.equal(ck.layout, "directory");
    assert.deepEqual(ck.names(), ["a", "b"]);
    assert.deepEqual([...await ck.readInt8("b")], [-1, 2]);
    assert.equal(ck.fileOf("b"), `${dir}/two.safetensors`);
    ck.close();

    await writeSafetensors(`${dir}/three.safetensors`, [a]);
    await assert.rejects(
      () => Checkpoint.open(dir),
      /tensor "a" appears in both .*one.safetensors and .*three.safetensors/,
    );
  });
});

Deno.test("Checkpoint validates the shard index", async () => {
  await withTempDir(async (dir) => {
    await writeSafetensors(`${dir}/s1.safetensors`, [{
      name: "a",
      dtype: "F32",
      shape: [1],
      data: new Float32Array(1),
    }]);
    const index = `${dir}/model.safetensors.index.json`;
    const cases: [string, RegExp][] = [
      [
        `{"weight_map":{"a":"s1.safetensors","b":"s2.safetensors"}}`,
        /maps tensor "b" to s2.safetensors, which does not exist in/,
      ],
      [
        `{"weight_map":{"a":"s1.safetensors","c":"s1.safetensors"}}`,
        /maps tensor "c" to s1.safetensors, but s1.safetensors does not contain it/,
      ],
      [`{"metadata":{}}`, /has no "weight_map" object/],
      [`{"weight_map":{"a":"../s1.safetensors"}}`, /which is not a file name in/],
      [`{"weight_map":`, /is not valid JSON/],
    ];
    for (const [text, pattern] of cases) {
      await Deno.writeTextFile(index, text);
      await assert.rejects(() => Checkpoint.open(dir), (err: unknown) => {
        assert.ok(err instanceof CheckpointError, String(err));
        assert.match(err.message, pattern);
        assert.ok(err.message.includes(index));
        return true;
      });
    }
    await Deno.writeTextFile(index, `{"metadata":{"total_size":4},"weight_map":{"a":"s1.safetensors"}}`);
    const ck = await Checkpoint.open(dir);
    assert.equal(ck.layout, "sharded");
    assert.deepEqual(ck.metadata, { total_size: 4 });
    ck.close();
  });
});

// ---------------------------------------------------------------------------------------------
// the real stories260k checkpoint

sharedTest(
  "stories260k model.safetensors opens, validates and reads lazily",
  "models/stories260k/model.safetensors",
  async (path) => {
    const f = await SafetensorsFile.open(path);
    try {
      const size = (await Deno.stat(path)).size;
      assert.equal(f.bytesRead, f.dataStart);
      // Expected shapes from the model's README/config: hidden 64, intermediate 172, 5 layers, 8 heads x 8, 4 kv heads.
      const want: Record<string, number[]> = {
        "model.embed_tokens.weight": [512, 64],
        "model.norm.weight": [64],
      };
      for (let i = 0; i < 5; i++) {
        const p = `model.layers.${i}`;
        Object.assign(want, {
          [`${p}.self_attn.q_proj.weight`]: [64, 64],
          [`${p}.self_attn.k_proj.weight`]: [32, 64],
          [`${p}.self_attn.v_proj.weight`]: [32, 64],
          [`${p}.self_attn.o_proj.weight`]: [64, 64],
          [`${p}.mlp.gate_proj.weight`]: [172, 64],
          [`${p}.mlp.up_proj.weight`]: [172, 64],
          [`${p}.mlp.down_proj.weight`]: [64, 172],
          [`${p}.input_layernorm.weight`]: [64],
          [`${p}.post_attention_layernorm.weight`]: [64],
        });
      }
      assert.deepEqual(new Set(f.names()), new Set(Object.keys(want)), "tied embeddings: no lm_head.weight");
      let elements = 0;
      for (const [name, shape] of Object.entries(want)) {
        const e = f.entry(name);
        assert.equal(e.dtype, "F32");
        assert.deepEqual(e.shape, shape, name);
        elements += shape.reduce((a, b) => a * b, 1);
      }
      assert.equal(f.dataStart + elements * 4, size, "the header accounts for every byte of the file");
      const norm = await f.readFloat32("model.layers.3.input_layernorm.weight");
      assert.equal(f.tensorBytesRead, 64 * 4);
      assert.ok(norm.every(Number.isFinite));
      // Cross-check the lazy read against the same bytes taken from the whole file at the entry's offsets.
      const whole = await Deno.readFile(path);
      const e = f.entry("model.layers.3.input_layernorm.weight");
      assert.deepEqual(new Uint8Array(norm.buffer), whole.slice(e.start, e.end));
    } finally {
      f.close();
    }
    const dir = path.slice(0, path.lastIndexOf("/"));
    const ck = await Checkpoint.open(dir);
    assert.equal(ck.layout, "single");
    assert.equal(ck.names().length, 2 + 5 * 9);
    ck.close();
  },
);

/** Whether element i of raw `dtype` bytes is finite, from each format's definition. */
function refFinite(bytes: Uint8Array, dtype: SafetensorsDType, i: number): boolean {
  const v = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  switch (dtype) {
    case "F64":
      return Number.isFinite(v.getFloat64(i * 8, true));
    case "F32":
      return Number.isFinite(v.getFloat32(i * 4, true));
    case "F16":
      return Number.isFinite(refHalfValue(v.getUint16(i * 2, true)));
    case "BF16":
      return Number.isFinite(refBf16Value(v.getUint16(i * 2, true)));
    case "F8_E4M3": // fn variant: exponent 1111 with mantissa 111 is NaN; there is no infinity
      return !(((bytes[i] >> 3) & 0xf) === 0xf && (bytes[i] & 7) === 7);
    case "F8_E5M2": // exponent 11111 is infinity or NaN
      return ((bytes[i] >> 2) & 0x1f) !== 0x1f;
    default:
      return true;
  }
}

Deno.test("firstNonFinite finds the first NaN or infinity of every float dtype, reading in chunks", async () => {
  const rng = new Rng(41);
  const floats: SafetensorsDType[] = ["F64", "F32", "F16", "BF16", "F8_E4M3", "F8_E5M2"];
  await withTempDir(async (dir) => {
    let found = 0, clean = 0;
    for (let trial = 0; trial < 120; trial++) {
      const dtype = floats[trial % floats.length];
      const n = 1 + (rng.nextU32() % 700);
      const data = new Uint8Array(n * DTYPE_SIZES[dtype]);
      for (let j = 0; j < data.length; j++) data[j] = rng.nextU32() & 0xff;
      // Half of the trials: make every element finite (clear the high exponent bits), then maybe plant one NaN
      // (all bits set is NaN in every float format) anywhere, so late and chunk-crossing positions occur.
      if (trial % 2 === 1) {
        const size = DTYPE_SIZES[dtype];
        for (let i = 0; i < n; i++) if (!refFinite(data, dtype, i)) data[(i + 1) * size - 1] &= 0x80;
        const k = rng.nextU32() % n;
        if (rng.nextU32() % 2) data.fill(0xff, k * size, (k + 1) * size);
      }
      let want = -1;
      for (let i = 0; i < n && want < 0; i++) if (!refFinite(data, dtype, i)) want = i;
      want < 0 ? clean++ : found++;
      const path = `${dir}/t${trial}.safetensors`;
      await writeSafetensors(path, [{ name: "w", dtype, shape: [n], data }, {
        name: "ids",
        dtype: "I32",
        shape: [2],
        data: new Int32Array([-1, 0x7fffffff]),
      }]);
      const f = await SafetensorsFile.open(path);
      try {
        const chunk = 8 * (1 + (rng.nextU32() % 40)) + (trial % 3); // odd chunk sizes round down to 8 bytes
        assert.equal(await f.firstNonFinite("w", chunk), want, `${dtype}, ${n} elements, chunks of ${chunk} bytes`);
        assert.equal(await f.firstNonFinite("ids"), -1, "integer tensors are never non-finite");
      } finally {
        f.close();
      }
    }
    assert.ok(found > 20 && clean > 20, `found ${found}, clean ${clean}: both cases must be exercised`);
  });
});
