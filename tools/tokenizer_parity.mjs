// Writes the tokenizer parity fixtures that tests/test_tokenizer.cpp compares
// flora's tokenizer with: the ids that an independent implementation,
// @huggingface/tokenizers (tokenizers.js, used inside transformers.js), gives
// for every line of tests/fixtures/tokenizer/corpus.jsonl.
//
// Regenerate (from the repository root, after scripts/setup.sh):
//   cmake --build build --target test_tokenizer
//   FLORA_UPDATE_FIXTURES=1 ./build/test_tokenizer --gtest_filter='TinyTokenizer.TrainingReproducesFixture'
//       (rewrites tests/fixtures/tokenizer/tiny_tokenizer.json, only needed if training changed)
//   node tools/tokenizer_parity.mjs
// which writes tests/fixtures/tokenizer/llama3_ids.jsonl (from .deps/llama3/tokenizer.json)
// and tests/fixtures/tokenizer/tiny_ids.jsonl (from tiny_tokenizer.json).
// Options: --tokenizers DIR   the @huggingface/tokenizers package
//                             (default: $FLORA_TOKENIZERS_JS or .deps/npm/node_modules/@huggingface/tokenizers)
//          --only NAME        llama3 or tiny
//
// Live modes, used by tests/cli/tokenizer_parity.sh to compare with `flora tokenize`:
//   --make-text OUT [--random-lines N] [--seed S]
//       writes the corpus lines joined by "\n" (hex lines as their raw bytes), then
//       N lines of seeded random text mixing many scripts, digits and white space
//   --encode FILE --tokenizer JSON [--no-bos]    prints the ids of FILE's text
//   --decode FILE --tokenizer JSON               FILE holds a JSON array of ids; prints the text
// FILE's bytes are read through TextDecoder, as for hex lines. Output is formatted
// as `flora tokenize` formats it: one JSON array, or the text, then "\n".
//
// Corpus lines are JSON strings, or {"hex": "66 80 ..."} for raw bytes that may
// be invalid UTF-8. JS strings cannot hold invalid UTF-8, so for those lines the
// bytes go through new TextDecoder() (WHATWG: each maximal ill-formed subpart
// becomes U+FFFD) and that string is encoded; flora is given the raw bytes, and
// the test checks that it replaces them the same way (the decoded text is stored
// as "text").
//
// Output: a header line recording the size and SHA-256 of the tokenizer.json and
// of the corpus (the C++ test refuses a stale fixture), then one line per corpus
// line: {"line", "ids" (no special tokens added), "ids_bos" (add_special_tokens),
// "decoded" (decode(ids)), "pieces" (decode([id]) for each id), "text" (hex lines only)}.
// Special tokens written in the text are always parsed (tokenizers.js has no switch).
// Decoding is done with clean_up_tokenization_spaces: false, as flora decodes.
//
// The lenml copy of the Llama 3 tokenizer.json has a ByteLevel post-processor
// and so adds no BOS; for "ids_bos" the script wraps it as Llama 3.1's
// tokenizer.json does: Sequence[ByteLevel, TemplateProcessing(<|begin_of_text|> $A)].
// The header says so ("bos_template": "added").

import { createHash } from "node:crypto";
import fs from "node:fs";
import path from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..");
const args = process.argv.slice(2);
const option = (name) => {
  const i = args.indexOf(name);
  return i >= 0 ? args[i + 1] : undefined;
};
const tokenizersDir = path.resolve(
  option("--tokenizers") ??
    process.env.FLORA_TOKENIZERS_JS ??
    path.join(root, ".deps/npm/node_modules/@huggingface/tokenizers"),
);
const only = option("--only");

const pkg = JSON.parse(fs.readFileSync(path.join(tokenizersDir, "package.json"), "utf8"));
const { Tokenizer } = await import(pathToFileURL(path.join(tokenizersDir, "dist/tokenizers.mjs")).href);

const fixtures = path.join(root, "tests/fixtures/tokenizer");
const corpusPath = path.join(fixtures, "corpus.jsonl");
const corpusBytes = fs.readFileSync(corpusPath);
const corpus = corpusBytes
  .toString("utf8")
  .split("\n")
  .filter((line) => line.length > 0)
  .map((line) => JSON.parse(line));

const sha256 = (bytes) => createHash("sha256").update(bytes).digest("hex");

function hasTemplate(pp) {
  if (!pp) return false;
  if (pp.type === "TemplateProcessing") return true;
  return pp.type === "Sequence" && (pp.processors ?? []).some(hasTemplate);
}

function withBosTemplate(json) {
  const bos = "<|begin_of_text|>";
  const token = json.added_tokens.find((t) => t.content === bos);
  if (!token) throw new Error(`no ${bos} among added_tokens`);
  const ref = (type_id) => ({ SpecialToken: { id: bos, type_id } });
  const seq = (id, type_id) => ({ Sequence: { id, type_id } });
  const template = {
    type: "TemplateProcessing",
    single: [ref(0), seq("A", 0)],
    pair: [ref(0), seq("A", 0), ref(1), seq("B", 1)],
    special_tokens: { [bos]: { id: bos, ids: [token.id], tokens: [bos] } },
  };
  const processors = json.post_processor ? [json.post_processor, template] : [template];
  return { ...json, post_processor: { type: "Sequence", processors } };
}

function generate(name, tokenizerPath, outPath) {
  const bytes = fs.readFileSync(tokenizerPath);
  let json = JSON.parse(bytes.toString("utf8"));
  const added = !hasTemplate(json.post_processor);
  if (added) json = withBosTemplate(json);
  const tokenizer = new Tokenizer(json, {});
  const decode = (ids) =>
    ids.length === 0 ? "" : tokenizer.decode(ids, { clean_up_tokenization_spaces: false });

  const out = [
    JSON.stringify({
      fixture: "tokenizer parity",
      tokenizer: name,
      tokenizer_bytes: bytes.length,
      tokenizer_sha256: sha256(bytes),
      corpus_bytes: corpusBytes.length,
      corpus_sha256: sha256(corpusBytes),
      corpus_lines: corpus.length,
      generator: `${pkg.name} ${pkg.version}`,
      bos_template: added ? "added" : "from tokenizer.json",
    }),
  ];
  corpus.forEach((entry, line) => {
    let text = entry;
    const record = { line };
    if (typeof entry !== "string") {
      text = new TextDecoder("utf-8", { ignoreBOM: true }).decode(Buffer.from(entry.hex.replace(/\s+/g, ""), "hex"));
      record.text = text;
    }
    record.ids = tokenizer.encode(text, { add_special_tokens: false }).ids;
    record.ids_bos = tokenizer.encode(text, { add_special_tokens: true }).ids;
    record.decoded = decode(record.ids);
    record.pieces = record.ids.map((id) => decode([id]));
    out.push(JSON.stringify(record));
  });
  fs.writeFileSync(outPath, out.join("\n") + "\n");
  console.log(`${name}: ${corpus.length} lines -> ${path.relative(root, outPath)}`);
}

// Deterministic random text (xorshift32) over old Unicode blocks, so that the
// Unicode versions of PCRE2 and V8 agree on every character. U+017F is left
// out: see "(?i:" in src/tokenizer/pretokenizer.h.
function randomText(lines, seed) {
  let state = seed >>> 0 || 1;
  const next = () => {
    state ^= state << 13;
    state >>>= 0;
    state ^= state >>> 17;
    state ^= state << 5;
    state >>>= 0;
    return state;
  };
  const pick = (n) => next() % n;
  const blocks = [
    [0x20, 0x7e], [0xa0, 0x24f], [0x300, 0x36f], [0x370, 0x3ff], [0x400, 0x4ff], [0x590, 0x5ff],
    [0x600, 0x6ff], [0x900, 0x97f], [0xe00, 0xe7f], [0x1100, 0x11ff], [0x1e00, 0x1eff],
    [0x2000, 0x206f], [0x2100, 0x218f], [0x2190, 0x22ff], [0x2500, 0x257f], [0x3000, 0x30ff],
    [0x4e00, 0x4fff], [0xac00, 0xad00], [0xff00, 0xffef], [0x1f300, 0x1f64f], [0x1f900, 0x1f9ff],
    [0x1d400, 0x1d4ff], [0x20000, 0x20100],
  ];
  const spaces = [" ", "  ", "\n", "\t", "\r\n", "\n\n", " \n", "\u00a0", "\u3000", "\u0085", "\u180e", "\u000b"];
  const contractions = ["'s", "'T", "'re", "'LL", "'ve", "'m", "'d", "'Re"];
  const out = [];
  for (let i = 0; i < lines; ++i) {
    let line = "";
    for (let chunks = 1 + pick(20); chunks > 0; --chunks) {
      const r = pick(100);
      if (r < 30) line += spaces[pick(spaces.length)];
      else if (r < 40) line += String(pick(1e9));
      else if (r < 45) line += contractions[pick(contractions.length)];
      else {
        const [lo, hi] = blocks[pick(blocks.length)];
        for (let n = 1 + pick(12); n > 0; --n) {
          const cp = lo + pick(hi - lo + 1);
          if (cp !== 0x17f) line += String.fromCodePoint(cp);
        }
      }
    }
    out.push(line);
  }
  return out.join("\n");
}

function loadForLive(tokenizerPath) {
  let json = JSON.parse(fs.readFileSync(tokenizerPath, "utf8"));
  if (!hasTemplate(json.post_processor)) json = withBosTemplate(json);
  return new Tokenizer(json, {});
}

const readText = (file) => new TextDecoder("utf-8", { ignoreBOM: true }).decode(fs.readFileSync(file));

if (option("--make-text")) {
  const parts = corpus.map((entry) =>
    typeof entry === "string" ? Buffer.from(entry, "utf8") : Buffer.from(entry.hex.replace(/\s+/g, ""), "hex"),
  );
  const lines = Number(option("--random-lines") ?? 0);
  if (lines > 0) parts.push(Buffer.from(randomText(lines, Number(option("--seed") ?? 1)), "utf8"));
  fs.writeFileSync(option("--make-text"), Buffer.concat(parts.flatMap((p, i) => (i ? [Buffer.from("\n"), p] : [p]))));
} else if (option("--encode")) {
  const tokenizer = loadForLive(option("--tokenizer"));
  const ids = tokenizer.encode(readText(option("--encode")), { add_special_tokens: !args.includes("--no-bos") }).ids;
  process.stdout.write(JSON.stringify(ids) + "\n");
} else if (option("--decode")) {
  const tokenizer = loadForLive(option("--tokenizer"));
  const ids = JSON.parse(fs.readFileSync(option("--decode"), "utf8"));
  const text = ids.length ? tokenizer.decode(ids, { clean_up_tokenization_spaces: false }) : "";
  process.stdout.write(text + "\n");
} else {
  if (!only || only === "llama3") {
    generate("llama3", path.join(root, ".deps/llama3/tokenizer.json"), path.join(fixtures, "llama3_ids.jsonl"));
  }
  if (!only || only === "tiny") {
    generate("tiny", path.join(fixtures, "tiny_tokenizer.json"), path.join(fixtures, "tiny_ids.jsonl"));
  }
}
