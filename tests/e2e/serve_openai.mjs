// The official `openai` client against `strata serve` (run by serve_openai.sh,
// which installs the client beside a copy of this file).
// usage: node serve_openai.mjs BASE_URL EXPECT.json
// EXPECT.json: prompt, chat_prompt, n, base_params, and run.{base,dus,block-expansion,chat}: `strata run --json`.
// Prints "ok: ..." / "FAIL: ..." lines, then "done"; exits 1 if anything failed.
import fs from 'node:fs';
import OpenAI from 'openai';

const [baseURL, expectPath] = process.argv.slice(2);
const E = JSON.parse(fs.readFileSync(expectPath, 'utf8'));
const client = new OpenAI({ baseURL, apiKey: 'unused', maxRetries: 0, timeout: 30000 });
let failed = 0;
const ok = (m) => console.log(`ok: ${m}`);
const bad = (m) => { console.log(`FAIL: ${m}`); failed++; };
const check = (cond, m, detail = '') => (cond ? ok(m) : bad(detail ? `${m}: ${detail}` : m));
const show = (x) => JSON.stringify(x);
// What strata run's result implies for the server's finish_reason.
const finishOf = (run) => (run.tokens.length === E.n ? 'length' : 'stop');

async function models() {
  const list = await client.models.list();
  const byId = Object.fromEntries(list.data.map((m) => [m.id, m]));
  const ids = list.data.map((m) => m.id).sort();
  check(show(ids) === show(['base', 'block-expansion', 'dus']), 'models.list: ids are the variants', show(ids));
  const [b, d, x] = [byId.base, byId.dus, byId['block-expansion']];
  if (!b || !d || !x) return;
  check(list.data.every((m) => m.object === 'model' && typeof m.created === 'number'), 'models.list: object "model", created');
  check(b.layers === 4 && d.layers === 6 && x.layers === 6, 'models.list: layers 4, 6, 6',
        show([b.layers, d.layers, x.layers]));
  check(d.layers > b.layers && d.distinct_layers === 4, 'models.list: the DUS has more layers, 4 distinct',
        show([d.layers, d.distinct_layers]));
  check(b.distinct_bytes === 2 * E.base_params, 'models.list: base distinct_bytes = its bf16 parameters x 2',
        `${b.distinct_bytes} vs ${2 * E.base_params}`);
  check(d.distinct_bytes === b.distinct_bytes && d.shared_bytes === d.distinct_bytes,
        'models.list: the DUS shares every byte with the base', show([d.distinct_bytes, d.shared_bytes]));
  check(b.shared_bytes === b.distinct_bytes, 'models.list: every base byte is shared', show([b.shared_bytes, b.distinct_bytes]));
  check(x.shared_bytes > 0 && x.shared_bytes <= x.distinct_bytes, 'models.list: block expansion shares bytes',
        show([x.shared_bytes, x.distinct_bytes]));
}

async function chat() {
  const run = E.run.chat;
  const req = { model: 'base', messages: [{ role: 'user', content: E.chat_prompt }], max_tokens: E.n, temperature: 0 };
  const r = await client.chat.completions.create(req);
  const c = r.choices[0];
  check(r.object === 'chat.completion' && r.choices.length === 1 && c.message.role === 'assistant',
        'chat: one assistant choice');
  check(c.message.content === run.text, 'chat: content = strata run --chat', `${show(c.message.content)} vs ${show(run.text)}`);
  check(c.finish_reason === finishOf(run), `chat: finish_reason ${finishOf(run)}`, c.finish_reason);
  check(r.usage.prompt_tokens === run.prompt_tokens.length && r.usage.completion_tokens === run.tokens.length &&
        r.usage.total_tokens === run.prompt_tokens.length + run.tokens.length,
        'chat: usage counts = strata run tokens', `${show(r.usage)} vs ${run.prompt_tokens.length}+${run.tokens.length}`);

  for (const includeUsage of [false, true]) {
    const what = includeUsage ? 'chat stream (include_usage)' : 'chat stream';
    const s = await client.chat.completions.create({ ...req, stream: true,
      ...(includeUsage ? { stream_options: { include_usage: true } } : {}) });
    const chunks = [];
    for await (const ch of s) chunks.push(ch);
    const withChoices = chunks.filter((ch) => ch.choices.length > 0);
    const text = withChoices.map((ch) => ch.choices[0].delta.content ?? '').join('');
    check(text === c.message.content, `${what}: deltas concatenated = the non-streamed content`,
          `${show(text)} vs ${show(c.message.content)}`);
    check(withChoices.length > 0 && withChoices[0].choices[0].delta.role === 'assistant', `${what}: first chunk has delta.role`);
    const finishes = withChoices.map((ch) => ch.choices[0].finish_reason);
    check(finishes.at(-1) === c.finish_reason && finishes.slice(0, -1).every((f) => f == null),
          `${what}: only the last chunk has finish_reason ${c.finish_reason}`, show(finishes));
    check(chunks.every((ch) => ch.object === 'chat.completion.chunk' && ch.id === chunks[0].id && ch.model === 'base'),
          `${what}: every chunk is a chat.completion.chunk of one id`);
    const usage = chunks.filter((ch) => ch.usage);
    if (includeUsage) {
      const last = chunks.at(-1);
      check(usage.length === 1 && last.choices.length === 0 && show(last.usage) === show(r.usage),
            `${what}: last chunk has choices [] and the usage`, show(last));
    } else {
      check(usage.length === 0 && chunks.every((ch) => ch.choices.length === 1), `${what}: no usage chunk`);
    }
  }
}

async function completions() {
  for (const v of ['base', 'dus', 'block-expansion']) {
    const run = E.run[v];
    const r = await client.completions.create({ model: v, prompt: E.prompt, max_tokens: E.n, temperature: 0 });
    const c = r.choices[0];
    check(r.object === 'text_completion' && r.model === v, `completions ${v}: a text_completion of ${v}`);
    check(c.text === run.text, `completions ${v}: text = strata run`, `${show(c.text)} vs ${show(run.text)}`);
    check(c.finish_reason === finishOf(run) && r.usage.completion_tokens === run.tokens.length &&
          r.usage.prompt_tokens === run.prompt_tokens.length, `completions ${v}: finish_reason and usage`,
          `${c.finish_reason} ${show(r.usage)}`);
    const s = await client.completions.create({ model: v, prompt: E.prompt, max_tokens: E.n, temperature: 0, stream: true });
    let text = '';
    let finish = null;
    for await (const ch of s) {
      text += ch.choices[0]?.text ?? '';
      finish = ch.choices[0]?.finish_reason ?? finish;
    }
    check(text === run.text && finish === c.finish_reason, `completions ${v} stream: text and finish_reason`,
          `${show(text)} ${finish}`);
  }
  // The variants must be told apart for the comparisons above to mean anything.
  check(E.run.dus.text !== E.run.base.text, 'strata run: DUS and base texts differ');
}

async function errors() {
  const cases = [
    ['unknown model (chat)', () => client.chat.completions.create({ model: 'nope', messages: [{ role: 'user', content: 'hi' }] }),
      OpenAI.NotFoundError, 404, 'model', 'model_not_found'],
    ['unknown model (completions)', () => client.completions.create({ model: 'nope', prompt: 'hi' }),
      OpenAI.NotFoundError, 404, 'model', 'model_not_found'],
    ['max_tokens a string', () => client.completions.create({ model: 'base', prompt: 'hi', max_tokens: 'many' }),
      OpenAI.BadRequestError, 400, 'max_tokens', null],
    ['n = 2', () => client.chat.completions.create({ model: 'base', messages: [{ role: 'user', content: 'hi' }], n: 2 }),
      OpenAI.BadRequestError, 400, 'n', null],
  ];
  for (const [what, call, cls, status, param, code] of cases) {
    try {
      await call();
      bad(`${what}: no error`);
    } catch (e) {
      check(e instanceof cls && e.status === status && e.param === param && e.code === code &&
            e.type === 'invalid_request_error' && typeof e.message === 'string' && e.message.length > 0,
            `${what}: ${cls.name} ${status}`, `${e.constructor.name} ${e.status} param=${e.param} code=${e.code} ${e.message}`);
    }
  }
}

for (const [name, f] of [['models', models], ['chat', chat], ['completions', completions], ['errors', errors]]) {
  try {
    await f();
  } catch (e) {
    bad(`${name}: threw ${e.constructor.name}: ${e.message}`);
  }
}
console.log('done');
process.exit(failed ? 1 : 0);
