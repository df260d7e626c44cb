"""Independent reference for the dataset tests.

Reads the raw Concept Depth files with pandas / json (the readers the paper's
code used) and applies each dataset's class rule, caps and prompt layout as
documented in docs/datasets.md, then prints, per dataset and prompt mode, the
class counts, the first model input of each class, and the SHA-256 of all model
inputs joined by "\\n" in loader order (class 0 then class 1, file order).

Usage: python datasets/reference/expected_inputs.py <data-root>
(the data root holds cd/ with the Concept Depth files). Needs pandas.
"""
import hashlib
import json
import sys

import pandas as pd

LEGACY = "According to the sentence, judge the emotion is Positive or Negative."

SQA_PROMPT = (
    "Judge the question is true or false?\n"
    "Q: Will Queen Elizabeth be buried in the Pantheon?\n"
    "Let us think step by step. The stem of the sentence is Queen Elizabeth, burial, pantheon. "
    "Inference: First, the Pantheon is a church, so it is possible that she could be buried there. "
    "Second, Queen Elizabeth II is still alive, so she has not been buried yet. Third, even if she "
    "were to be buried in the Pantheon, it is unlikely that we would know about it ahead of time, "
    "so it is hard to say for sure.\npred_ans: no"
)
INSTR = {
    "strategyqa": SQA_PROMPT,
    "coinflip": "According to the flipping process above, determine if a coin remains heads up after "
    "it is either flipped or left unflipped by individuals. Therefore, the answer (Yes or No) is?",
    "cities": "Judge the statement is True or False.",
    "common_claim": "Judge the statement is True or False.",
    "counterfact": "Judge the statement is true or false.",
    "hateeval": "According to the comment, tell whether they present hate speech or not.",
    "stsa": "The sentence above is a movie review and reflects the writer's overall intention for "
    "this review. According to the sentence, judge whether the emotion is Positive or Negative.",
}
COT = {"strategyqa": "Let us think step by step..."}
PROMPT_FIRST = {"cities", "common_claim", "counterfact"}
SAMPLE_FIRST = {"coinflip", "hateeval", "stsa"}


def render(name, instr, sample):
    if name in PROMPT_FIRST:
        return instr + " " + sample
    if name in SAMPLE_FIRST:
        return sample + " " + instr
    return instr + sample + " " + COT[name]


def classes(name, root):
    cd = root + "/cd/"
    if name == "strategyqa":
        ex = json.load(open(cd + "StrategyQA_task.json"))["examples"]
        out = ([], [])
        for e in ex:
            t = e["target"]
            for v in ("Yes.", "No."):
                if t.startswith(v):
                    t = t[len(v):].strip()
                    break
            s = e["input"] + " " + t
            if e["target_scores"]["Yes"] == 1:
                out[0].append(s)
            elif e["target_scores"]["No"] == 1:
                out[1].append(s)
        return out
    if name == "coinflip":
        ex = json.load(open(cd + "coin_flip.json"))["examples"]
        return [e["question"] for e in ex if e["answer"] == "yes"], [e["question"] for e in ex if e["answer"] == "no"]
    if name == "cities":
        d = pd.read_csv(cd + "cities.csv")
        return d[d.label == 1].statement.tolist(), d[d.label == 0].statement.tolist()
    if name == "common_claim":
        d = pd.read_csv(cd + "common_claim.csv")
        return d[d.label == "True"].examples.tolist()[:3000], d[d.label == "False"].examples.tolist()[:3000]
    if name == "counterfact":
        d = pd.read_csv(cd + "counterfact.csv")
        return d[d.label == 1].statement.tolist()[:2000], d[d.label == 0].statement.tolist()[:2000]
    if name == "hateeval":
        d = pd.read_csv(cd + "hateeval.tsv", sep="\t")
        return d[d.HS == 1].text.tolist()[:3000], d[d.HS != 1].text.tolist()[:3000]
    if name == "stsa":
        out = ([], [])
        for line in open(cd + "stsa.binary.train"):
            label, sentence = line.strip().split(" ", 1)
            out[0 if int(label) == 0 else 1].append(sentence)
        return out
    raise KeyError(name)


def main():
    root = sys.argv[1]
    result = {}
    for name in INSTR:
        c0, c1 = classes(name, root)
        for mode in ("paper", "cd-legacy"):
            instr = INSTR[name] if mode == "paper" else LEGACY
            texts = [render(name, instr, s) for s in c0 + c1]
            result[f"{name}/{mode}"] = {
                "counts": [len(c0), len(c1)],
                "first_class0": texts[0],
                "first_class1": texts[len(c0)],
                "sha256": hashlib.sha256("\n".join(texts).encode()).hexdigest(),
            }
    json.dump(result, sys.stdout, indent=1, ensure_ascii=False)
    print()


if __name__ == "__main__":
    main()
