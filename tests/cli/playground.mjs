// Drives the playground page of two running `flora serve`s in headless chromium
// (Debian's /usr/bin/chromium through playwright-core). Called by
// tests/cli/playground.sh, which started the servers:
//   node playground.mjs CONFIG.json
// CONFIG: {src, open_url, keyed_url, api_key, base, adapters: [3 names], max_tokens}
// open_url serves without a key, keyed_url with api_key.
// Prints "FAIL ..." per failed check and "playground: N passed, M failed"; exits 1 on any failure.
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { pathToFileURL } from 'node:url';

const config = JSON.parse(readFileSync(process.argv[2], 'utf8'));
const { chromium } = await import(
  pathToFileURL(path.join(config.src, '.deps/npm/node_modules/playwright-core/index.mjs')).href);

let passes = 0, failures = 0;
function check(name, ok, detail = '') {
  if (ok) passes++;
  else { failures++; console.log(`FAIL ${name}${detail ? ': ' + detail : ''}`); }
}
const show = (v) => JSON.stringify(v);
const PROMPT = 'Tell me about the cat that sat on the mat.';
const models = [config.base, ...config.adapters];
const sameSet = (a, b) => a.length === b.length && [...a].sort().join('\n') === [...b].sort().join('\n');

// The answer the API gives to the page's request, asked directly and whole.
async function direct(baseUrl, endpoint, model, key) {
  const body = { model, max_tokens: config.max_tokens, temperature: 0 };
  if (endpoint === 'chat') body.messages = [{ role: 'user', content: PROMPT }];
  else body.prompt = PROMPT;
  const r = await fetch(`${baseUrl}/v1/${endpoint === 'chat' ? 'chat/completions' : 'completions'}`, {
    method: 'POST',
    headers: { 'Content-Type': 'application/json', ...(key ? { Authorization: `Bearer ${key}` } : {}) },
    body: JSON.stringify(body),
  });
  const j = await r.json();
  if (r.status !== 200) throw new Error(`direct ${endpoint} ${model}: ${r.status} ${show(j)}`);
  const c = j.choices[0];
  return { text: endpoint === 'chat' ? c.message.content : c.text, finish: c.finish_reason,
           tokens: j.usage.completion_tokens };
}

// Everything the page shows of its columns, in order.
function readColumns(page) {
  return page.$$eval('#columns .column', (cols) => cols.map((c) => {
    const f = (name) => c.querySelector(`[data-field="${name}"]`);
    return {
      model: c.dataset.model, heading: f('model').textContent, state: c.dataset.state,
      text: f('text').textContent, finish: f('finish').textContent, tokens: f('tokens').textContent,
      ttft: f('ttft').dataset.value ?? null, tpot: f('tpot').dataset.value ?? null,
      error: f('error').hidden ? null : f('error').textContent,
    };
  }));
}

// Sends the form and waits (bounded) until no column is running.
async function runAndWait(page, label) {
  const t0 = Date.now();
  await page.click('#submit');
  await page.waitForFunction(() => document.querySelector('#columns').dataset.state === 'done' &&
    !document.querySelector('#columns .column[data-state=running]'), null, { timeout: 60000 });
  console.log(`info: ${label}: ${Date.now() - t0} ms from the click to the last answer`);
  return readColumns(page);
}

async function waitModels(page) {
  await page.waitForFunction(() => document.querySelector('#models-status').dataset.state !== 'loading', null,
                             { timeout: 10000 });
  return page.$eval('#models-status', (e) => ({ state: e.dataset.state, text: e.textContent }));
}

async function listed(page) {
  return {
    bases: await page.$$eval('#base option', (os) => os.map((o) => o.value)),
    adapters: await page.$$eval('#adapters input[data-adapter]', (is) => is.map((i) => i.dataset.adapter)),
  };
}

// Console errors and uncaught exceptions of a page, kept for the checks.
function watch(page) {
  const errors = [];
  page.on('console', (m) => { if (m.type() === 'error') errors.push(`console: ${m.text()}`); });
  page.on('pageerror', (e) => errors.push(`pageerror: ${e.message}`));
  return errors;
}

// As root, chromium's sandbox cannot start; the test loads only the page under test.
// A container's small /dev/shm can crash it: shared memory goes to /tmp instead.
const browser = await chromium.launch({ executablePath: '/usr/bin/chromium', chromiumSandbox: false,
                                        args: ['--no-sandbox', '--disable-dev-shm-usage'] });
try {
  // ---- the server without a key: the page's answers are the API's ----
  {
    const context = await browser.newContext();
    const page = await context.newPage();
    const errors = watch(page);
    const sent = [];  // the bodies of the page's completion requests
    page.on('request', (r) => { if (r.method() === 'POST') sent.push({ url: r.url(), body: r.postDataJSON() }); });
    await page.goto(config.open_url + '/');
    check('title', (await page.title()) === 'flora playground', await page.title());
    const status = await waitModels(page);
    check('models listed', status.state === 'ok', show(status));
    const l = await listed(page);
    check('base list', sameSet(l.bases, [config.base]), show(l.bases));
    check('adapter list', sameSet(l.adapters, config.adapters), show(l.adapters));
    check('chat is the default', (await page.inputValue('#endpoint')) === 'chat');
    check('temperature 0 is the default', Number(await page.inputValue('#temperature')) === 0);

    for (const a of config.adapters) await page.check(`#adapters input[data-adapter="${a}"]`);
    await page.fill('#prompt', PROMPT);
    await page.fill('#max-tokens', String(config.max_tokens));
    await page.fill('#temperature', '0');

    for (const endpoint of ['chat', 'completion']) {
      await page.selectOption('#endpoint', endpoint);
      sent.length = 0;
      const cols = await runAndWait(page, endpoint);
      // One streamed request per column, named by its model, with the form's settings.
      const route = endpoint === 'chat' ? '/v1/chat/completions' : '/v1/completions';
      const content = endpoint === 'chat' ? { messages: [{ role: 'user', content: PROMPT }] } : { prompt: PROMPT };
      const bodies = sent.filter((r) => new URL(r.url).pathname === route).map((r) => r.body);
      check(`${endpoint}: four requests`, sent.length === 4 && bodies.length === 4, show(sent));
      for (const m of models) {
        const want = { model: m, stream: true, stream_options: { include_usage: true }, max_tokens: config.max_tokens,
                       temperature: 0, ...content };
        const b = bodies.find((x) => x.model === m);
        const same = b && Object.keys(want).length === Object.keys(b).length &&
          Object.entries(want).every(([k, v]) => show(b[k]) === show(v));
        check(`${endpoint} ${m}: request body`, same, show(b));
      }
      check(`${endpoint}: four columns`, cols.length === 4, show(cols));
      const order = show(cols.map((c) => c.model));
      check(`${endpoint}: columns in order`, order === show(models), order);
      for (const [i, c] of cols.entries()) {
        const name = `${endpoint} ${models[i]}`;
        const want = await direct(config.open_url, endpoint, models[i]);
        check(`${name}: done`, c.state === 'done', show(c));
        check(`${name}: heading`, c.heading === models[i], show(c.heading));
        check(`${name}: text`, c.text.length > 0, show(c));
        check(`${name}: text is the API's`, c.text === want.text, `${show(c.text)} vs ${show(want.text)}`);
        check(`${name}: finish_reason`, c.finish === want.finish && ['stop', 'length'].includes(c.finish),
              `${show(c.finish)} vs ${show(want.finish)}`);
        check(`${name}: tokens`, c.tokens === String(want.tokens), `${show(c.tokens)} vs ${want.tokens}`);
        check(`${name}: TTFT`, c.ttft !== null && Number.isFinite(Number(c.ttft)) && Number(c.ttft) >= 0, show(c.ttft));
        check(`${name}: TPOT`, c.tpot !== null && Number.isFinite(Number(c.tpot)) && Number(c.tpot) >= 0, show(c.tpot));
        check(`${name}: no error`, c.error === null, show(c.error));
      }
    }
    check('no console errors (no key)', errors.length === 0, show(errors));
    await context.close();
  }

  // ---- the stream parser on bodies the server would send only on a failure ----
  {
    const context = await browser.newContext();
    const page = await context.newPage();
    const errors = watch(page);
    const ev = (j) => `data: ${JSON.stringify(j)}\n\n`;
    const delta = (content, finish = null) => ({ object: 'chat.completion.chunk',
                                               choices: [{ index: 0, delta: { content }, finish_reason: finish }] });
    const streams = {
      // Comments between events, a role chunk without text, CRLF line ends, the usage chunk.
      [config.base]: ': keep-alive\n\n' + ev({ choices: [{ index: 0, delta: { role: 'assistant', content: '' } }] }) +
        ev(delta('Hel')) + ': keep-alive\n\n' + ev(delta('lo, ')).replace(/\n/g, '\r\n') + ev(delta('w\u00f6rld')) +
        ev({ choices: [{ index: 0, delta: {}, finish_reason: 'stop' }] }) +
        ev({ choices: [], usage: { prompt_tokens: 5, completion_tokens: 3, total_tokens: 8 } }) + 'data: [DONE]\n\n',
      // An error event after some text (a generation that failed mid-way).
      [config.adapters[0]]: ev(delta('Hi')) +
        ev({ error: { message: 'generation failed: boom', type: 'server_error', param: null, code: null } }) +
        'data: [DONE]\n\n',
      // A stream cut short: no [DONE].
      [config.adapters[2]]: ev(delta('cut')),
    };
    await page.route('**/v1/chat/completions', (route) => {
      const model = route.request().postDataJSON().model;
      if (model in streams)
        return route.fulfill({ status: 200, contentType: 'text/event-stream', body: streams[model] });
      return route.fulfill({ status: 404, contentType: 'application/json', body: JSON.stringify({ error: {
        message: `the model '${model}' does not exist`, type: 'invalid_request_error', param: 'model',
        code: 'model_not_found' } }) });
    });
    // A fourth adapter in the list, to see the limit of three.
    await page.route('**/v1/models', (route) => route.fulfill({ status: 200, contentType: 'application/json',
      body: JSON.stringify({ object: 'list', data: [...models, 'extra'].map((id) => ({
        id, object: 'model', parent: id === config.base ? null : config.base, root: config.base })) }) }));
    await page.goto(config.open_url + '/');
    await waitModels(page);
    for (const a of config.adapters) await page.check(`#adapters input[data-adapter="${a}"]`);
    check('a fourth adapter cannot be chosen', await page.isDisabled('#adapters input[data-adapter="extra"]'));
    await page.uncheck(`#adapters input[data-adapter="${config.adapters[0]}"]`);
    check('one less: it can again', await page.isEnabled('#adapters input[data-adapter="extra"]'));
    await page.check(`#adapters input[data-adapter="${config.adapters[0]}"]`);
    await page.fill('#prompt', PROMPT);
    const cols = await runAndWait(page, 'made-up streams');
    check('made-up streams: four columns', show(cols.map((c) => c.model)) === show(models), show(cols));
    const by = Object.fromEntries(cols.map((c) => [c.model, c]));
    const b = by[config.base], e = by[config.adapters[0]], nf = by[config.adapters[1]], cut = by[config.adapters[2]];
    check('sse: comments and CRLF skipped', b && b.state === 'done' && b.text === 'Hello, w\u00f6rld' &&
          b.finish === 'stop' && b.tokens === '3' && b.ttft !== null && b.tpot !== null, show(b));
    check('sse: the error event shown', e && e.state === 'error' && e.text === 'Hi' &&
          e.error === 'error during the stream: generation failed: boom', show(e));
    check('sse: the 404 error object shown', nf && nf.state === 'error' &&
          nf.error === `404: the model '${config.adapters[1]}' does not exist (model_not_found)`, show(nf));
    check('sse: a stream without [DONE] is an error', cut && cut.state === 'error' && cut.text === 'cut' &&
          /without data: \[DONE\]/.test(cut.error), show(cut));
    const others = errors.filter((x) => !/^console: Failed to load resource: .* 404 \(Not Found\)$/.test(x));
    check('sse: no console errors but the 404', others.length === 0, show(others));
    await context.close();
  }

  // ---- the server with a key ----
  {
    const context = await browser.newContext();
    const page = await context.newPage();
    const errors = watch(page);
    await page.goto(config.keyed_url + '/');
    let status = await waitModels(page);
    check('keyed: models refused without the key', status.state === 'error' && /401: no API key/.test(status.text),
          show(status));
    await page.fill('#api-key', config.api_key);
    await page.press('#api-key', 'Tab');  // the change event: the list comes with the key
    await page.waitForSelector('#adapters input[data-adapter]', { timeout: 10000 });
    status = await waitModels(page);
    check('keyed: models with the key', status.state === 'ok', show(status));
    check('keyed: adapter list', sameSet((await listed(page)).adapters, config.adapters));
    for (const a of config.adapters) await page.check(`#adapters input[data-adapter="${a}"]`);
    await page.fill('#prompt', PROMPT);
    await page.fill('#max-tokens', String(config.max_tokens));
    let cols = await runAndWait(page, 'keyed');
    check('keyed: four answers with the key', cols.length === 4 && cols.every((c) => c.state === 'done' && c.text),
          show(cols));

    await page.fill('#api-key', 'sk-wrong');
    await page.press('#api-key', 'Tab');
    cols = await runAndWait(page, 'wrong key');
    check('wrong key: four columns', show(cols.map((c) => c.model)) === show(models), show(cols));
    for (const c of cols)
      check(`wrong key ${c.model}: the 401 shown`, c.state === 'error' && c.error !== null &&
            c.error.includes('401') && c.error.includes('the API key is wrong') && c.text === '', show(c));

    await page.reload();
    check('keyed: the key is remembered', (await page.inputValue('#api-key')) === 'sk-wrong');
    status = await waitModels(page);
    check('keyed: models refused with the wrong key',
          status.state === 'error' && /the API key is wrong/.test(status.text), show(status));
    // Chromium logs each refused request ("Failed to load resource: ... 401"); nothing else may appear.
    const others = errors.filter((e) => !/^console: Failed to load resource: .* 401 \(Unauthorized\)$/.test(e));
    check('keyed: no console errors but the 401s', others.length === 0, show(others));
    await context.close();
  }
} catch (e) {
  check('driving the page', false, e.stack);
} finally {
  await browser.close();
}
console.log(`playground: ${passes} passed, ${failures} failed`);
process.exit(failures > 0 ? 1 : 0);
