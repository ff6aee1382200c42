#!/usr/bin/env python3
"""Does the base model know the facts that the mcq test asks about? For every person question
of the test split (town, job, favourite colour, pet, age), greedy completion of the corpus's
canonical sentence ("Mira lives in") by `flora generate`, checked against the correct choice.
Separates "the model does not know the fact" from "the model cannot map it onto the options".
Usage: python3 experiments/probe_knowledge.py MODEL MCQ_TEST_JSONL [N]   (FLORA: the binary)"""
import json
import os
import re
import subprocess
import sys

FLORA = os.environ.get("FLORA", "./build/flora")
# (question forms of src/synth/tasks.cpp, the canonical sentence's start, relation name)
RELATIONS = [
    (r"Where does ([A-Z]\w+) live\?|In which town does (\w+) live\?|Which town is (\w+)'s home\?", "{} lives in", "town"),
    (r"What is (\w+)'s job\?|What does (\w+) do for a living\?|What job does (\w+) have\?", "{} is", "job"),
    (r"What is (\w+)'s favourite colour\?|Which colour does (\w+) like best\?", "{}'s favourite colour is", "colour"),
    (r"What pet does (\w+) have\?|Which animal does (\w+) keep as a pet\?", "{} has a pet", "pet"),
    (r"How old is (\w+)\?|What is (\w+)'s age\?", "{}'s age is", "age"),
]


def bare(s):
    return re.sub(r"^(a|an) ", "", s.strip().lower())


def main():
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    model, data = sys.argv[1], sys.argv[2]
    limit = int(sys.argv[3]) if len(sys.argv) > 3 else 100
    per = {}
    for line in open(data):
        r = json.loads(line)
        q = re.search(r"question: (.*?)\n", r["instruction"]).group(1)
        options = re.findall(r"Answer\d: (.*?)(?= Answer\d:|\n)", r["instruction"])
        answer = bare(options[int(r["answer"][-1]) - 1])
        for pattern, prompt, name in RELATIONS:
            m = re.fullmatch(pattern, q)
            if not m:
                continue
            subject = next(g for g in m.groups() if g)
            start = prompt.format(subject)
            text = subprocess.run([FLORA, "generate", "-m", model, "-p", start, "-n", "6", "--temp", "0"],
                                  capture_output=True, text=True, check=True).stdout
            text = text[len(start):] if text.startswith(start) else text  # generate echoes the prompt
            words = re.findall(r"[a-z0-9]+", text.lower())
            got = " ".join(words[:len(answer.split()) + (1 if name == "job" else 0)])
            ok = answer in got.split() or got.endswith(answer) or got == answer
            per.setdefault(name, [0, 0])
            per[name][0] += ok
            per[name][1] += 1
            break
        if sum(n for _, n in per.values()) >= limit:
            break
    total = [sum(x) for x in zip(*per.values())]
    print(f"facts completed correctly: {total[0]}/{total[1]}; " +
          ", ".join(f"{k} {a}/{n}" for k, (a, n) in per.items()))


if __name__ == "__main__":
    main()
