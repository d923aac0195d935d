"""The demo pair's text, made by a seeded generator so that the repo ships the recipe, not a corpus.

Two corpora, deliberately different, so a fine-tune's effect is easy to see and to measure:
- stories: short children's stories from a small grammar (names, animals, places, dialogue, counting);
  the base model learns English-like text from these and nothing else.
- arithmetic: "Question: What is 48 + 27?\nAnswer: 75" pairs (sums and differences of numbers below 100);
  the fine-tune learns this format and the arithmetic, which the base has never seen.

Used by demo_pair.py (training on the GPU machine) and runnable alone to write the shipped evaluation
files:  python3 tools/oracle/demo_corpus.py --out demo/data  (and --calib for the calibration files)
Pure Python standard library, so it runs anywhere (no torch needed).
"""
import argparse, json, os, random

NAMES = ["Tom", "Lily", "Sam", "Mia", "Ben", "Anna", "Max", "Zoe", "Leo", "Ella", "Jack", "Ruby", "Finn",
         "Nora", "Omar", "Ivy", "Hugo", "Lucy", "Noah", "Rosa", "Theo", "Maya", "Eli", "Ada", "Kai", "June"]
ANIMALS = ["dog", "cat", "rabbit", "fox", "bird", "frog", "duck", "mouse", "bear", "owl", "horse", "goat",
           "turtle", "squirrel", "puppy", "kitten", "pony", "hen", "deer", "fish"]
PLACES = ["the park", "the forest", "the garden", "the beach", "the farm", "the river", "the hill",
          "the town", "the market", "the school", "the lake", "the meadow", "the kitchen", "the library",
          "the old barn", "the big tree", "the playground", "the village", "the bridge", "the cave"]
OBJECTS = ["ball", "kite", "box", "hat", "book", "cake", "apple", "flower", "shell", "stone", "boat",
           "drum", "toy car", "blanket", "basket", "map", "key", "cup", "sock", "leaf", "star", "bell"]
ADJS = ["red", "blue", "little", "big", "shiny", "soft", "old", "new", "green", "yellow", "funny",
        "tiny", "round", "bright", "warm", "quiet", "happy", "brave", "kind", "sleepy", "gentle", "tall"]
FEELINGS = ["happy", "sad", "scared", "proud", "tired", "excited", "surprised", "worried", "calm", "glad"]
TIMES = ["One day", "One morning", "Once upon a time", "Last summer", "On a rainy day", "One sunny afternoon",
         "In the evening", "Early in the morning", "On a cold winter day", "After lunch"]
WEATHER = ["The sun was shining.", "It was raining.", "The wind was blowing.", "It was snowing.",
           "The sky was grey.", "It was a warm day.", "The clouds were big and white."]
VERBS_PAST = ["played", "walked", "ran", "jumped", "sang", "danced", "laughed", "looked around", "waited",
              "sat down", "climbed up", "went home"]
SAYS = ["said", "asked", "shouted", "whispered", "cried", "replied"]
LINES = ["Can we play together?", "Look at this!", "I am not scared.", "Where did it go?",
         "Let's go home.", "That is so pretty!", "Thank you, friend.", "Can you help me?",
         "I want to try again.", "We did it!", "It is time to sleep.", "Do you want to share?"]
ENDINGS = ["From that day on, they were best friends.", "They went home and had a good sleep.",
           "Everyone was happy.", "It was the best day ever.", "They promised to come back tomorrow.",
           "And they all laughed together.", "The end."]


def story(rng: random.Random) -> str:
    a, b = rng.sample(NAMES, 2)
    pet = rng.choice(ANIMALS)
    place = rng.choice(PLACES)
    obj, adj = rng.choice(OBJECTS), rng.choice(ADJS)
    he = rng.choice(["he", "she"])
    s = [f"{rng.choice(TIMES)}, {a} went to {place} with a {rng.choice(ADJS)} {pet}."]
    if rng.random() < 0.5: s.append(rng.choice(WEATHER))
    for _ in range(rng.randint(3, 8)):
        k = rng.randrange(9)
        if k == 0: s.append(f"{a} found a {adj} {obj} near {rng.choice(PLACES)}.")
        elif k == 1: s.append(f'"{rng.choice(LINES)}" {a} {rng.choice(SAYS)}.')
        elif k == 2: s.append(f"{b} came to see what was there. {b} felt {rng.choice(FEELINGS)}.")
        elif k == 3: s.append(f'"{rng.choice(LINES)}" {b} {rng.choice(SAYS)} to {a}.')
        elif k == 4:
            n = rng.randint(2, 12)
            s.append(f"They counted {n} {rng.choice(ADJS)} {rng.choice(OBJECTS)}s and {rng.randint(1, 9)} {rng.choice(ANIMALS)}s.")
        elif k == 5: s.append(f"The {pet} {rng.choice(VERBS_PAST)} and {a} {rng.choice(VERBS_PAST)} too.")
        elif k == 6: s.append(f"Then {he} saw a {rng.choice(ADJS)} {rng.choice(ANIMALS)} by {rng.choice(PLACES)}.")
        elif k == 7: s.append(f"{a} gave the {obj} to {b}, and {b} was very {rng.choice(FEELINGS)}.")
        else: s.append(f"After {rng.randint(2, 10)} minutes, the {pet} was {rng.choice(FEELINGS)} again.")
    s.append(rng.choice(ENDINGS))
    # Lines of two or three sentences, as paragraphs are.
    out, i = [], 0
    while i < len(s):
        k = rng.randint(2, 3)
        out.append(" ".join(s[i:i + k]))
        i += k
    return "\n".join(out)


def problem(rng: random.Random) -> tuple[str, str]:
    a, b = rng.randint(0, 99), rng.randint(0, 99)
    if rng.random() < 0.5: return f"Question: What is {a} + {b}?\nAnswer:", f" {a + b}"
    a, b = max(a, b), min(a, b)
    return f"Question: What is {a} - {b}?\nAnswer:", f" {a - b}"


def arithmetic(rng: random.Random) -> str:
    """A document of 1 to 6 problems with their answers, separated by blank lines."""
    return "\n\n".join(p + a for p, a in (problem(rng) for _ in range(rng.randint(1, 6))))


def documents(kind: str, seed: int, n: int) -> list[str]:
    rng = random.Random(f"{kind}-{seed}")
    make = story if kind == "stories" else arithmetic
    return [make(rng) for _ in range(n)]


# Seeds: training uses seed 1; the shipped evaluation files use seed 2 (held out: a different stream).
def write_eval(out: str, stories: int = 60, arith: int = 90, qa: int = 200):
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, "stories.valid.txt"), "w") as f:
        f.write("\n\n".join(documents("stories", 2, stories)) + "\n")
    with open(os.path.join(out, "arithmetic.valid.txt"), "w") as f:
        f.write("\n\n".join(documents("arithmetic", 2, arith)) + "\n")
    rng = random.Random("qa-2")
    with open(os.path.join(out, "arithmetic.qa.jsonl"), "w") as f:
        for _ in range(qa):
            p, a = problem(rng)
            f.write(json.dumps({"prompt": p, "answer": a}) + "\n")


# Calibration text for scale distillation (bitdelta compress --calib) uses seed 3: held out from training (1)
# and evaluation (2). Two files, to measure what the calibration text does: stories alone stands for the
# generic web text BitDelta calibrates on (C4: the base's domain, nothing of the fine-tune's task), and a
# half-and-half mix of stories and arithmetic stands for calibrating on the fine-tune's own kind of text.
def write_calib(out: str, stories: int = 1300, arith: int = 2000):
    os.makedirs(out, exist_ok=True)
    s, a = documents("stories", 3, stories), documents("arithmetic", 3, arith)
    with open(os.path.join(out, "calib.stories.txt"), "w") as f:
        f.write("\n\n".join(s) + "\n")
    half_s, half_a = s[: stories // 2], a[: arith // 2]
    mixed = [d for pair in zip(half_s, half_a[: len(half_s)]) for d in pair] + half_a[len(half_s):]
    with open(os.path.join(out, "calib.mixed.txt"), "w") as f:
        f.write("\n\n".join(mixed) + "\n")


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    ap.add_argument("--calib", action="store_true", help="write the calibration files only")
    args = ap.parse_args()
    write_calib(args.out) if args.calib else write_eval(args.out)
