// llama.cpp (node-llama-cpp's prebuilt build, installed by scripts/setup.sh)
// reads GGUF files that `flora quantize` wrote, and must compute what flora
// computes from them (tests/cli/gguf.sh):
//   node llama_cpp_check.mjs CONFIG.json
// CONFIG: {src, tokens: [ids], texts: [{text, flora: [ids]}],
//          cases: [{gguf, lora (optional: a GGUF LoRA file), flora_logits (safetensors: logits F32 [T, V]),
//                   tolerance, texts (optional: the case's own, as the top-level texts)}]}
// Per case: the logits of every position within `tolerance` of flora's (see
// gguf.sh for why each is what it is), the same argmax wherever flora's top
// two logits are more than 2 x tolerance apart, and the tokenizer's ids
// (llama.cpp's own, from the file's metadata) equal to flora's.
// Prints "FAIL ..." per failed check and "llama_cpp_check: N passed, M failed".
import { readFileSync } from 'node:fs';
import { pathToFileURL } from 'node:url';

const config = JSON.parse(readFileSync(process.argv[2], 'utf8'));
const { getLlama } = await import(
  pathToFileURL(config.src + '/.deps/npm/node_modules/node-llama-cpp/dist/index.js').href);
let passes = 0, failures = 0;
function check(name, ok, detail = '') {
  if (ok) passes++;
  else { failures++; console.log(`FAIL ${name}${detail ? ': ' + detail : ''}`); }
}

// A safetensors file holding one F32 tensor: [rows, cols] and its values.
function readSafetensors(path) {
  const b = readFileSync(path);
  const n = Number(b.readBigUInt64LE(0));
  const header = JSON.parse(b.subarray(8, 8 + n).toString('utf8'));
  const t = header.logits;
  const [begin, end] = t.data_offsets;
  const data = b.subarray(8 + n + begin, 8 + n + end);
  const values = new Float32Array(data.buffer.slice(data.byteOffset, data.byteOffset + data.length));
  return { shape: t.shape, values };
}

const llama = await getLlama({ gpu: false, build: 'never', logLevel: 'error', progressLogs: false });
for (const c of config.cases) {
  const label = c.gguf.split('/').pop() + (c.lora ? ' + ' + c.lora.split('/').pop() : '');
  const model = await llama.loadModel({ modelPath: c.gguf });
  const context = await model.createContext({ contextSize: 256, batchSize: 256, threads: 1,
    ...(c.lora ? { lora: { adapters: [{ filePath: c.lora, scale: 1 }] } } : {}) });
  const sequence = context.getSequence();
  const out = await sequence.controlledEvaluate(config.tokens.map((t) => [t, { generateNext: { logits: true } }]));
  const ref = readSafetensors(c.flora_logits);
  const [T, V] = ref.shape;
  check(`${label}: positions`, out.length === T, `${out.length} vs ${T}`);
  let worst = 0, argmaxChecked = 0, argmaxSame = 0;
  for (let t = 0; t < Math.min(T, out.length); t++) {
    const got = new Float64Array(V).fill(NaN);
    for (const [id, v] of out[t].next.logits) got[id] = v;
    let best = 0, second = -Infinity, gotBest = 0;
    for (let v = 0; v < V; v++) {
      const want = ref.values[t * V + v];
      const d = Math.abs(got[v] - want);
      if (!(d <= worst)) worst = Number.isNaN(d) ? Infinity : Math.max(worst, d);
      if (want > ref.values[t * V + best]) { second = ref.values[t * V + best]; best = v; }
      else if (v !== best && want > second) second = want;
      if (got[v] > got[gotBest]) gotBest = v;
    }
    if (ref.values[t * V + best] - second > 2 * c.tolerance) {
      argmaxChecked++;
      if (gotBest === best) argmaxSame++;
    }
  }
  console.log(`info: ${label}: largest logit difference ${worst.toExponential(2)} over ${T} x ${V} ` +
    `(tolerance ${c.tolerance}); argmax equal at ${argmaxSame} of ${argmaxChecked} clear positions`);
  check(`${label}: logits within ${c.tolerance}`, worst <= c.tolerance, `${worst}`);
  check(`${label}: argmax`, argmaxSame === argmaxChecked && argmaxChecked > 0, `${argmaxSame}/${argmaxChecked}`);
  for (const { text, flora } of c.texts ?? config.texts) {
    const ids = [...model.tokenize(text)];
    check(`${label}: tokenize ${JSON.stringify(text)}`, JSON.stringify(ids) === JSON.stringify(flora),
      `${JSON.stringify(ids)} vs flora ${JSON.stringify(flora)}`);
  }
  await context.dispose();
  await model.dispose();
}
console.log(`llama_cpp_check: ${passes} passed, ${failures} failed`);
process.exit(failures > 0 ? 1 : 0);
