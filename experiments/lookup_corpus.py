#!/usr/bin/env python3
"""In-context lookup documents for pretraining (the try of docs/results.md, "Why two of the three
columns cannot separate the variants"): labelled lists followed by a query whose answer is a
label or a value stated earlier in the same document ("(1) x (2) y (3) z Which number is y? It
is 2."; "A) x B) y ..."; "a has x. b has y. So b has y."; a list and its repetition), in words
of the world's corpus, mixed and shuffled with that corpus.
Usage: python3 experiments/lookup_corpus.py CORPUS.jsonl N_DOCUMENTS > MIX.jsonl"""
import json, random, re, sys
corpus = [json.loads(l)["text"] for l in open(sys.argv[1])]
rng = random.Random(0)
words = sorted({w for d in corpus for w in re.findall(r"\b[a-z]{3,9}\b", d)})
names = sorted({w for d in corpus for w in re.findall(r"\b[A-Z][a-z]{2,8}\b", d)} - {"The", "He", "She", "In", "On", "Then", "They", "Every", "Many", "One", "Later", "After", "But", "So", "Hi", "Yes", "Sorry", "Sure", "Thanks", "What", "How", "Which", "Where", "Who"})
docs = []
for i in range(int(sys.argv[2])):
    k = rng.choice([3, 3, 4, 5])
    items = rng.sample(words if rng.random() < 0.5 else names, k)
    kind = rng.randrange(4)
    t = rng.randrange(k)
    if kind == 0:   # numbered options, asked for the number
        fmt = rng.choice(["({n}) {x}", "{n}. {x}", "Option {n}: {x}", "#{n} {x}"])
        lst = " ".join(fmt.format(n=j + 1, x=x) for j, x in enumerate(items))
        q = rng.choice(["Which number is {x}? It is {n}.", "{x} is number {n}.", "The number of {x} is {n}."])
        docs.append(lst + " " + q.format(x=items[t], n=t + 1))
    elif kind == 1:  # pairs, asked for the partner
        vals = rng.sample(words, k)
        lst = " ".join(f"{a} has {b}." for a, b in zip(items, vals))
        docs.append(lst + " " + rng.choice(["So {a} has {b}.", "What does {a} have? {b}."]).format(a=items[t], b=vals[t]))
    elif kind == 2:  # letters
        lst = " ".join(f"{chr(65 + j)}) {x}" for j, x in enumerate(items))
        docs.append(lst + " " + f"{items[t]} is {chr(65 + t)}.")
    else:            # list, then repeat it
        docs.append("List: " + ", ".join(items) + ". Again: " + ", ".join(items) + ".")
mix = corpus + docs
rng.shuffle(mix)
for d in mix:
    print(json.dumps({"text": d}))
