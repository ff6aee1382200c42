#!/usr/bin/env python3
"""Writes the seed corpora of tests/fuzz/corpus/<target>/ (committed; run from the
repository root to regenerate them: python3 tests/fuzz/make_corpus.py). Seeds are
the fixtures and small hand-written records of every form; files named crash-* are
regression inputs of crashes found by fuzzing and are never rewritten here."""
import json
import os
import struct

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CORPUS = os.path.join(ROOT, "tests", "fuzz", "corpus")
FIX = os.path.join(ROOT, "tests", "fixtures")


def put(target, name, data):
    d = os.path.join(CORPUS, target)
    os.makedirs(d, exist_ok=True)
    if isinstance(data, str):
        data = data.encode()
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


def fixture(*parts):
    with open(os.path.join(FIX, *parts), "rb") as f:
        return f.read()


def jsonl(*records):
    return "".join(json.dumps(r) + "\n" for r in records)


# --- safetensors: 8-byte little-endian header length, JSON header, tensor bytes.
def safetensors(tensors, metadata=None, pad=True):
    header, blob = {}, b""
    if metadata is not None:
        header["__metadata__"] = metadata
    for name, (dtype, shape, data) in tensors.items():
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [len(blob), len(blob) + len(data)]}
        blob += data
    h = json.dumps(header, separators=(",", ":")).encode()
    if pad:
        h += b" " * (-len(h) % 8)
    return struct.pack("<Q", len(h)) + h + blob


f32 = lambda *v: struct.pack(f"<{len(v)}f", *v)
T = "fuzz_safetensors"
put(T, "f32_2x2", safetensors({"w": ("F32", [2, 2], f32(1, 2, 3, 4))}, {"format": "pt"}))
put(T, "bf16_f16", safetensors({"a": ("BF16", [3], b"\x80\x3f" * 3), "b": ("F16", [1, 2], b"\x00\x3c" * 2)}))
put(T, "scalar_and_empty", safetensors({"s": ("F32", [], f32(7)), "e": ("F32", [0, 4], b"")}))
put(T, "ints", safetensors({"i": ("I32", [2], struct.pack("<2i", 1, -1)), "u": ("U8", [4], b"abcd"),
                            "l": ("I64", [1], struct.pack("<q", 5))}))
put(T, "layers", safetensors({f"model.layers.{i}.mlp.down_proj.weight": ("F32", [1, 2], f32(i, -i)) for i in range(3)},
                             {"producer": "make_corpus.py"}))
put(T, "unpadded", safetensors({"x": ("F32", [1], f32(1))}, pad=False))
put(T, "empty_header", struct.pack("<Q", 2) + b"{}")
put(T, "bad_offsets", struct.pack("<Q", 56) + b'{"w":{"dtype":"F32","shape":[2],"data_offsets":[4,0]}}' + b" " + b"\0" * 8)
real = fixture("tiny_llama", "adapters", "ffba-aorb", "adapter_model.safetensors")
n = struct.unpack("<Q", real[:8])[0]
put(T, "adapter_header_only", real[: 8 + n])  # the real header, tensors cut off

# --- tokenizer.json
T = "fuzz_tokenizer_json"
tiny = json.loads(fixture("tokenizer", "tiny_tokenizer.json"))
put(T, "tiny_tokenizer.json", fixture("tokenizer", "tiny_tokenizer.json"))
small = json.loads(json.dumps(tiny))
small["model"]["vocab"] = {k: v for k, v in tiny["model"]["vocab"].items() if v < 260}
small["model"]["merges"] = tiny["model"]["merges"][:4]
put(T, "small_vocab.json", json.dumps(small))
no_added = json.loads(json.dumps(small))
no_added["added_tokens"] = []
put(T, "no_added_tokens.json", json.dumps(no_added))
put(T, "not_bpe.json", json.dumps({"model": {"type": "WordPiece"}}))
put(T, "empty_object.json", "{}")

# --- config.json
T = "fuzz_config_json"
cfg = json.loads(fixture("tiny_llama", "f32", "config.json"))
put(T, "tiny_f32.json", fixture("tiny_llama", "f32", "config.json"))
put(T, "tiny_bf16.json", fixture("tiny_llama", "bf16", "config.json"))
one_b = dict(cfg, hidden_size=2048, intermediate_size=8192, num_hidden_layers=16, num_attention_heads=32,
             num_key_value_heads=8, head_dim=64, vocab_size=128256, bos_token_id=128000,
             eos_token_id=[128001, 128008, 128009], max_position_embeddings=131072, torch_dtype="bfloat16",
             rope_scaling=dict(cfg["rope_scaling"], original_max_position_embeddings=8192))
put(T, "llama_3_2_1b.json", json.dumps(one_b, indent=2))
plain = {k: v for k, v in cfg.items() if k not in ("rope_scaling", "head_dim")}
put(T, "no_rope_scaling.json", json.dumps(plain))
put(T, "bad_numbers.json", json.dumps(dict(cfg, hidden_size=-64, num_attention_heads=0, rms_norm_eps="x")))

# --- adapter_config.json
T = "fuzz_adapter_config_json"
for v in ("lora", "ffa", "ffba", "ffba-aorb", "ffba-qg", "ffba-relu", "ffba-gelu"):
    put(T, f"{v}.json", fixture("tiny_llama", "adapters", v, "adapter_config.json"))
lora = json.loads(fixture("tiny_llama", "adapters", "lora", "adapter_config.json"))
put(T, "lora_rslora_patterns.json", json.dumps(dict(lora, use_rslora=True, rank_pattern={"q_proj": 8},
                                                    alpha_pattern={"q_proj": 16}, target_modules="all-linear")))

# --- training JSONL (src/train/data.h)
T = "fuzz_train_jsonl"
put(T, "arith_alpaca.jsonl", b"".join(fixture("train", "arith.jsonl").splitlines(True)[:8]))
put(T, "alpaca_input_answer.jsonl", jsonl(
    {"instruction": "Add the numbers.", "input": "2 and 3", "output": "5", "answer": "5"},
    {"instruction": "Say hi", "output": "hi <|eot_id|>"}))
put(T, "chat.jsonl", jsonl(
    {"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hello?"},
                  {"role": "assistant", "content": "Hi."}]},
    {"messages": [{"role": "user", "content": "2+2"}, {"role": "assistant", "content": "4"},
                  {"role": "user", "content": "and 3+3"}, {"role": "assistant", "content": "6"}]},
    {"messages": [{"role": "tool", "content": "{}"}, {"role": "ipython", "content": "x"},
                  {"role": "assistant", "content": ""}]}))
put(T, "tokenized.jsonl", jsonl(
    {"input_ids": [379, 10, 20, 30, 380], "labels": [-100, -100, 20, 30, 380]},
    {"input_ids": [1, 2, 3]},
    {"input_ids": [5, 6], "labels": [-100, -100]}))
put(T, "text.jsonl", jsonl({"text": "The quick brown fox."}, {"text": ""}, {"text": "<|begin_of_text|>x\u00e9\u4e2d"}))
put(T, "mixed_forms.jsonl", jsonl({"text": "a"}, {"input_ids": [4, 5]}, {"instruction": "q", "output": "r"},
                                  {"messages": [{"role": "assistant", "content": "z"}]}) + "\n  \n")
put(T, "bad_lines.jsonl", '{"text": 1}\n{"input_ids": [99999]}\nnot json\n{"unknown": "key"}\n'
                          '{"messages": [{"role": "bot", "content": "x"}]}\n{"input_ids": [1,2], "labels": [1]}\n')

# --- evaluation records (src/eval/tasks.h)
T = "fuzz_eval_records"
for f in ("records_mcq_llm_adapters.jsonl", "records_mcq_plain.jsonl", "records_math_gsm8k.jsonl",
          "records_math_llm_adapters.json", "records_samsum.jsonl", "records_xsum.jsonl", "records_ppl.jsonl"):
    put(T, f, fixture("eval", f))
put(T, "mcq_forms.jsonl", jsonl(
    {"instruction": "Pick one.\n\nAnswer format: option1/option2", "answer": "option2", "id": 1},
    {"instruction": "true or false?", "input": "", "output": "", "answer": "false"},
    {"instruction": "Ending?\n\nAnswer format: ending1/ending2/ending3/ending4", "answer": "ending4"},
    {"instruction": "Fix it.\n\nAnswer format: solution1/solution2", "answer": "solution1"},
    {"question": "Q?", "choices": ["a", "b", "c"], "answer": "B"},
    {"question": "Q2?", "choices": ["x", "y"], "answer": 0},
    {"question": "Q3?", "choices": ["x", "y"], "answer": "option2"}))
put(T, "math_forms.jsonl", jsonl({"instruction": "1+1?", "answer": 2}, {"instruction": "1.5*2?", "answer": "3.0"},
                                 {"question": "2*3?", "answer": "2*3=6\n#### 6"}, {"question": "q", "answer": "-1,000"}))
put(T, "rouge_forms.jsonl", jsonl({"dialogue": "A: hi\nB: hello", "summary": "They greet."},
                                  {"document": "Long text.", "summary": "Short.", "id": "d1"}))
put(T, "array.json", json.dumps([{"text": "one"}, {"question": "q", "choices": ["a", "b"], "answer": 1},
                                 {"instruction": "i", "answer": "answer1"}], indent=1))
put(T, "bad_records.jsonl", '{"question": "q", "choices": [], "answer": 0}\n{"answer": "option9"}\n[1,2]\n'
                            '{"text": 5}\n{"dialogue": "d"}\n{"question": "q", "choices": ["a"], "answer": 3}\n')

# --- GGUF: magic, version, counts, typed key/values, tensor infos, aligned data (src/io/gguf.h).
def gguf_str(s):
    b = s.encode()
    return struct.pack("<Q", len(b)) + b


def gguf(kvs, tensors, alignment=32):
    """kvs: [(key, type, payload bytes)]; tensors: [(name, ne, ggml type, data bytes)]."""
    out = b"GGUF" + struct.pack("<IQQ", 3, len(tensors), len(kvs))
    for key, vtype, payload in kvs:
        out += gguf_str(key) + struct.pack("<I", vtype) + payload
    offset, data = 0, b""
    for name, ne, gtype, blob in tensors:
        out += gguf_str(name) + struct.pack("<I", len(ne)) + struct.pack(f"<{len(ne)}Q", *ne)
        out += struct.pack("<IQ", gtype, offset)
        data += blob + b"\0" * (-len(blob) % alignment)
        offset += len(blob) + (-len(blob) % alignment)
    return out + b"\0" * (-len(out) % alignment) + data


T = "fuzz_gguf"
put(T, "llama_small", gguf(
    [("general.architecture", 8, gguf_str("llama")), ("llama.block_count", 4, struct.pack("<I", 2)),
     ("llama.rope.freq_base", 6, struct.pack("<f", 500000.0)),
     ("tokenizer.ggml.tokens", 9, struct.pack("<IQ", 8, 3) + gguf_str("a") + gguf_str("b") + gguf_str("<s>")),
     ("tokenizer.ggml.token_type", 9, struct.pack("<IQ3i", 5, 3, 1, 1, 3)), ("flag", 7, b"\x01")],
    [("token_embd.weight", [2, 3], 0, f32(1, 2, 3, 4, 5, 6)), ("q", [32], 8, b"\x00\x3c" + bytes(range(32))),
     ("k4", [256], 12, bytes(144)), ("b", [4], 30, b"\x80\x3f" * 4)]))
put(T, "aligned_64", gguf([("general.alignment", 4, struct.pack("<I", 64))], [("w", [4], 0, f32(1, 2, 3, 4))], 64))
put(T, "header_only", gguf([("k", 10, struct.pack("<Q", 7))], []))
