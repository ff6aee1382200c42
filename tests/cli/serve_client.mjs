// Drives a running `flora serve` with the official openai npm package (and
// with plain fetch for what the package would refuse to send). Called by
// tests/cli/serve.sh, which started the server and wrote the references:
//   node serve_client.mjs CONFIG.json
// CONFIG: {src, base_url, api_key, pid, ctx, max_body,
//          refs: [{name, endpoint, model, prompt, max_tokens, out, err}]}
// where out/err are the files `flora generate` wrote for that model and prompt.
// Prints "FAIL ..." per failed check and "serve_client: N passed, M failed"; exits 1 on any failure.
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { pathToFileURL } from 'node:url';

const config = JSON.parse(readFileSync(process.argv[2], 'utf8'));
const { default: OpenAI } = await import(
  pathToFileURL(path.join(config.src, '.deps/npm/node_modules/openai/index.mjs')).href);

let passes = 0, failures = 0;
function check(name, ok, detail = '') {
  if (ok) passes++;
  else { failures++; console.log(`FAIL ${name}${detail ? ': ' + detail : ''}`); }
}
const show = (v) => JSON.stringify(v);
// What flora generate printed: the prompt text, the generated text, "\n" on
// stdout; "generated: N tokens[ (stopped at EOS)]" on stderr.
for (const ref of config.refs) {
  const out = readFileSync(ref.out);
  const head = Buffer.from(ref.prompt, 'utf8');
  if (!out.subarray(0, head.length).equals(head)) throw new Error(`${ref.out}: does not start with the prompt`);
  ref.text = new TextDecoder('utf-8').decode(out.subarray(head.length, out.length - 1));
  const err = readFileSync(ref.err, 'utf8');
  const m = err.match(/generated: (\d+) tokens( \(stopped at EOS\))?/);
  if (!m) throw new Error(`${ref.err}: no token count`);
  ref.tokens = Number(m[1]);
  ref.stopped = Boolean(m[2]);
}
const client = new OpenAI({ baseURL: config.base_url, apiKey: config.api_key, maxRetries: 0, timeout: 20000 });

async function rawPost(route, body, headers = {}) {
  const r = await fetch(config.base_url.replace(/\/v1$/, '') + route, {
    method: 'POST',
    headers: { 'Content-Type': 'application/json', Authorization: `Bearer ${config.api_key}`, ...headers },
    body,
  });
  let json = null;
  try { json = await r.json(); } catch { /* not JSON */ }
  return { status: r.status, headers: r.headers, json };
}
function isErrorObject(j) {
  return j && j.error && typeof j.error.message === 'string' && typeof j.error.type === 'string' &&
    'param' in j.error && 'code' in j.error;
}
// A good request after each bad one: the server keeps serving.
async function goodOne(label) {
  const c = await client.completions.create({ model: 'tiny', prompt: 'Hello', max_tokens: 2, temperature: 0 });
  check(`${label}: then a good request`, c.choices.length === 1 && c.usage.completion_tokens >= 0);
}

// Completions and chat, whole and streamed, against flora generate.
async function run(ref, stream, extra = {}) {
  const req = { model: ref.model, max_tokens: ref.max_tokens, temperature: 0, ...extra };
  const api = ref.endpoint === 'chat' ? client.chat.completions : client.completions;
  if (ref.endpoint === 'chat') req.messages = [{ role: 'user', content: ref.prompt }];
  else req.prompt = ref.prompt;
  if (!stream) {
    const r = await api.create(req);
    const text = ref.endpoint === 'chat' ? r.choices[0].message.content : r.choices[0].text;
    return { text, finish: r.choices[0].finish_reason, usage: r.usage, model: r.model, object: r.object };
  }
  const s = await api.create({ ...req, stream: true, stream_options: { include_usage: true } });
  let text = '', finish = null, usage = null, objects = new Set(), roleFirst = null;
  for await (const chunk of s) {
    objects.add(chunk.object);
    if (chunk.usage) usage = chunk.usage;
    for (const c of chunk.choices) {
      if (ref.endpoint === 'chat') {
        if (roleFirst === null) roleFirst = c.delta.role === 'assistant';
        text += c.delta.content ?? '';
      } else {
        text += c.text;
      }
      if (c.finish_reason) finish = c.finish_reason;
    }
  }
  return { text, finish, usage, objects: [...objects], roleFirst };
}

// 1. The models list: the base, then each adapter with its parent.
const models = await client.models.list();
const ids = models.data.map((m) => m.id);
check('models list', show(ids) === show(['tiny', 'ffba', 'lora']), show(ids));
check('models parent', models.data[1].parent === 'tiny' && models.data[0].parent === null, show(models.data));

// 2. Greedy output equals flora generate's for the same adapter and prompt, token for token.
for (const ref of config.refs) {
  for (const stream of [false, true]) {
    const label = `${ref.name} ${stream ? 'streamed' : 'whole'}`;
    const got = await run(ref, stream);
    check(`${label}: text equals flora generate`, got.text === ref.text, `${show(got.text)} vs ${show(ref.text)}`);
    check(`${label}: completion tokens equal flora generate`, got.usage?.completion_tokens === ref.tokens,
      `${show(got.usage)} vs ${ref.tokens}`);
    check(`${label}: finish_reason`, got.finish === (ref.stopped ? 'stop' : 'length'), show(got.finish));
    if (stream) {
      const want = ref.endpoint === 'chat' ? 'chat.completion.chunk' : 'text_completion';
      check(`${label}: chunk object`, show(got.objects) === show([want]), show(got.objects));
      if (ref.endpoint === 'chat') check(`${label}: first delta has the role`, got.roleFirst === true);
    } else {
      check(`${label}: model and object`, got.model === ref.model &&
        got.object === (ref.endpoint === 'chat' ? 'chat.completion' : 'text_completion'), `${got.model} ${got.object}`);
    }
  }
}

// 3. Requests of different adapters at once (they share steps): each still as alone.
const together = await Promise.all(config.refs.slice(0, 3).map((ref) => run(ref, false)));
together.forEach((got, i) =>
  check(`concurrent ${config.refs[i].name}`, got.text === config.refs[i].text, show(got.text)));

// 3b. llama-server's convention: the adapter by id in a request's `lora` list
// (ids in --adapter order: ffba 0, lora 1), and the defaults of POST /lora-adapters.
{
  const root = config.base_url.replace(/\/v1$/, '');
  const auth = { Authorization: `Bearer ${config.api_key}` };
  const listed = await (await fetch(root + '/lora-adapters', { headers: auth })).json();
  check('GET /lora-adapters', show(listed.map((a) => [a.id, a.name, a.scale])) === show([[0, 'ffba', 0], [1, 'lora', 0]]) &&
    listed.every((a) => typeof a.path === 'string' && a.path.length > 0), show(listed));
  const idOf = { ffba: 0, lora: 1 };
  // The package sends fields it does not know as they are.
  const byId = (ref, lora, model = 'tiny') => run({ ...ref, model }, false, { lora });
  for (const ref of config.refs.filter((r) => r.model in idOf)) {
    const got = await byId(ref, [{ id: idOf[ref.model], scale: 1 }]);
    check(`${ref.name} by lora id: text equals flora generate`, got.text === ref.text && got.model === ref.model,
      `${show(got.text)} vs ${show(ref.text)} (model ${got.model})`);
  }
  const base = config.refs[0];
  const zero = await byId(base, [{ id: 0, scale: 0 }, { id: 1, scale: 0 }]);
  check('lora scale 0: the base', zero.text === base.text, `${show(zero.text)} vs ${show(base.text)}`);
  const setDefaults = async (list) => (await fetch(root + '/lora-adapters', { method: 'POST',
    headers: { ...auth, 'Content-Type': 'application/json' }, body: JSON.stringify(list) })).json();
  const ffbaRef = config.refs.find((r) => r.model === 'ffba');
  check('POST /lora-adapters', (await setDefaults([{ id: 0, scale: 1 }])).success === true);
  const dflt = await run({ ...ffbaRef, model: 'tiny' }, false);
  check('defaults: a request naming the base runs ffba', dflt.text === ffbaRef.text && dflt.model === 'ffba',
    `${show(dflt.text)} vs ${show(ffbaRef.text)} (model ${dflt.model})`);
  await setDefaults([]);
  const back = await run(base, false);
  check('defaults reset: the base again', back.text === base.text, show(back.text));
  const two = await rawPost('/v1/completions', JSON.stringify({ prompt: 'x', max_tokens: 1,
    lora: [{ id: 0, scale: 1 }, { id: 1, scale: 1 }] }));
  check('two adapters refused', two.status === 400 && two.json?.error?.param === 'lora', show(two.json));
  const unknown = await rawPost('/lora-adapters', JSON.stringify([{ id: 9, scale: 1 }]));
  check('unknown id refused', unknown.status === 400 && isErrorObject(unknown.json), show(unknown.json));
  await goodOne('lora lists');
}

// 4. A stop string: the text ends before it.
{
  const ref = config.refs[0];
  const cut = Math.max(1, Math.floor(ref.text.length / 2));
  const stop = ref.text.slice(cut, cut + 2);
  if (stop.length === 2 && !stop.includes('\uFFFD')) {
    const r = await client.completions.create({ model: ref.model, prompt: ref.prompt, max_tokens: ref.max_tokens,
      temperature: 0, stop: [stop] });
    check('stop string', r.choices[0].text === ref.text.slice(0, ref.text.indexOf(stop)) &&
      r.choices[0].finish_reason === 'stop', show(r.choices[0]));
  }
}

// 5. Bad requests: the OpenAI error object with the right status, each followed by a good request.
const bad = [
  ['malformed JSON', () => rawPost('/v1/completions', '{"prompt": "x",'), 400],
  ['not an object', () => rawPost('/v1/completions', '[1]'), 400],
  ['wrong type', () => rawPost('/v1/completions', '{"prompt": "x", "max_tokens": "five"}'), 400, 'max_tokens'],
  ['n = 2', () => rawPost('/v1/completions', '{"prompt": "x", "n": 2}'), 400, 'n'],
  ['absurd max_tokens', () => rawPost('/v1/completions', '{"prompt": "x", "max_tokens": 1000000000}'), 400, 'max_tokens'],
  ['negative max_tokens', () => rawPost('/v1/completions', '{"prompt": "x", "max_tokens": -1}'), 400, 'max_tokens'],
  ['prompt longer than the context', () => rawPost('/v1/completions',
    JSON.stringify({ prompt: Array(config.ctx + 5).fill(5) })), 400, 'prompt'],
  ['unknown model', () => rawPost('/v1/chat/completions',
    '{"model": "nope", "messages": [{"role": "user", "content": "x"}]}'), 404, 'model'],
  ['bad role', () => rawPost('/v1/chat/completions', '{"messages": [{"role": "robot", "content": "x"}]}'), 400],
  ['missing key', () => rawPost('/v1/completions', '{"prompt": "x"}', { Authorization: '' }), 401],
  ['wrong key', () => rawPost('/v1/completions', '{"prompt": "x"}', { Authorization: 'Bearer wrong' }), 401],
  ['body too big', () => rawPost('/v1/completions', JSON.stringify({ prompt: 'x'.repeat(config.max_body + 10) })), 413],
  ['unknown route', () => rawPost('/v1/nothing', '{}'), 404],
];
for (const [name, send, status, param] of bad) {
  const r = await send();
  check(`${name}: status ${status}`, r.status === status, `got ${r.status} ${show(r.json)}`);
  check(`${name}: error object`, isErrorObject(r.json), show(r.json));
  if (param) check(`${name}: param`, r.json?.error?.param === param, show(r.json));
  await goodOne(name);
}
// The package's own error classes see the same.
try {
  await client.completions.create({ model: 'missing', prompt: 'x' });
  check('sdk NotFoundError', false, 'no error');
} catch (e) {
  check('sdk NotFoundError', e instanceof OpenAI.NotFoundError && e.status === 404, `${e}`);
}
try {
  await new OpenAI({ baseURL: config.base_url, apiKey: 'wrong', maxRetries: 0 }).models.list();
  check('sdk AuthenticationError', false, 'no error');
} catch (e) {
  check('sdk AuthenticationError', e instanceof OpenAI.AuthenticationError && e.status === 401, `${e}`);
}
await goodOne('sdk errors');

// 6. A full server answers 503 with Retry-After; the others are served, and then a good one.
{
  const many = await Promise.all(Array.from({ length: 24 }, () => rawPost('/v1/completions',
    JSON.stringify({ prompt: 'Once', max_tokens: 1500, ignore_eos: true, temperature: 0 }))));
  const busy = many.filter((r) => r.status === 503);
  const served = many.filter((r) => r.status === 200);
  console.log(`info: burst of ${many.length}: ${served.length} served, ${busy.length} refused with 503`);
  check('queue full: some 503', busy.length > 0, `statuses ${show(many.map((r) => r.status))}`);
  check('queue full: the rest served', busy.length + served.length === many.length &&
    served.every((r) => r.json.usage.completion_tokens === 1500), show(many.map((r) => r.status)));
  check('queue full: Retry-After and error object', busy.length > 0 && busy[0].headers.get('retry-after') === '1' &&
    isErrorObject(busy[0].json) && busy[0].json.error.code === 'queue_full', busy.length ? show(busy[0].json) : '');
  await goodOne('queue full');
}

const health = async () => (await fetch(config.base_url.replace('/v1', '/health'))).json();

// 7. A client that goes away mid-stream frees its slot: its request stops long before max_tokens.
{
  const before = await health();
  const ac = new AbortController();
  const s = await client.completions.create({ model: 'ffba', prompt: 'Once', max_tokens: 2000, ignore_eos: true,
    temperature: 0, stream: true }, { signal: ac.signal });
  try {
    for await (const _ of s) { ac.abort(); }
  } catch { /* aborted */ }
  let after = await health();
  for (let i = 0; i < 100 && after.running > 0; i++) {
    await new Promise((r) => setTimeout(r, 20));
    after = await health();
  }
  console.log(`info: disconnected stream ran ${after.steps - before.steps} steps of 2000`);
  check('disconnect: the slot is free', after.running === 0, show(after));
  check('disconnect: the request was cut', after.steps - before.steps < 1999, `${before.steps} -> ${after.steps}`);
  await goodOne('disconnect');
}

// 7b. So does a client that goes away while it waits for a whole (non-streamed) answer: past
// --keep-alive (serve.sh: 0.05 s) the server sends the answer chunked, a space before the JSON each
// interval, and the write that fails cancels the request. The client leaves once the headers came.
{
  const before = await health();
  const ac = new AbortController();
  let encoding = null;
  try {
    const r = await fetch(config.base_url + '/completions', {
      method: 'POST', signal: ac.signal,
      headers: { 'Content-Type': 'application/json', Authorization: `Bearer ${config.api_key}` },
      body: JSON.stringify({ model: 'ffba', prompt: 'Once', max_tokens: 2000, ignore_eos: true, temperature: 0 }),
    });
    encoding = r.headers.get('transfer-encoding');
    ac.abort();
  } catch { /* aborted */ }
  let after = await health();
  for (let i = 0; i < 250 && after.running > 0; i++) {
    await new Promise((r) => setTimeout(r, 20));
    after = await health();
  }
  console.log(`info: disconnected whole answer ran ${after.steps - before.steps} steps of 2000`);
  check('disconnect, not streamed: sent chunked', encoding === 'chunked', `${encoding}`);
  check('disconnect, not streamed: the slot is free', after.running === 0, show(after));
  check('disconnect, not streamed: the request was cut', after.steps - before.steps < 1999,
    `${before.steps} -> ${after.steps}`);
  await goodOne('disconnect, not streamed');
}

// 8. SIGTERM during a stream: the stream still ends with a finish_reason (the shell checks exit 0).
{
  const s = await client.chat.completions.create({ model: 'lora', messages: [{ role: 'user', content: 'Tell me' }],
    max_tokens: 1800, ignore_eos: true, temperature: 0, stream: true });
  let signalled = false, finish = null, pieces = 0;
  try {
    for await (const chunk of s) {
      pieces++;
      if (!signalled) { process.kill(config.pid, 'SIGTERM'); signalled = true; }
      for (const c of chunk.choices) if (c.finish_reason) finish = c.finish_reason;
    }
  } catch (e) {
    check('SIGTERM: stream ends cleanly', false, `${e}`);
  }
  console.log(`info: SIGTERM after the first of ${pieces} chunks; finish_reason ${finish}`);
  check('SIGTERM: finish_reason', finish === 'length' || finish === 'stop', `${finish} after ${pieces} chunks`);
}

console.log(`serve_client: ${passes} passed, ${failures} failed`);
process.exit(failures > 0 ? 1 : 0);
