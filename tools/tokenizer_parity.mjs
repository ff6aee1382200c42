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

if (!only || only === "llama3") {
  generate("llama3", path.join(root, ".deps/llama3/tokenizer.json"), path.join(fixtures, "llama3_ids.jsonl"));
}
if (!only || only === "tiny") {
  generate("tiny", path.join(fixtures, "tiny_tokenizer.json"), path.join(fixtures, "tiny_ids.jsonl"));
}
