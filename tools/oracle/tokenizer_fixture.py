#!/usr/bin/env python3
"""Expected SentencePiece ids for tests/fixtures/tokenizer/llama2_ids.json.

The Llama-2 tokenizer.model is encoded with Google's sentencepiece package (the reference implementation,
the one Hugging Face's slow LlamaTokenizer wraps), without BOS/EOS: the C# Tokenizer adds BOS itself.
Its version and the model's SHA-256 go into the file, so that a test can tell a different model from a
different encoder.

    python3 tools/oracle/tokenizer_fixture.py [--model ../shared/fixtures/llama2/tokenizer.model] [--out tests/fixtures/tokenizer/llama2_ids.json]

Needs only `sentencepiece` (pip, or Debian's python3-sentencepiece).
"""
import argparse
import hashlib
import json
import os

import sentencepiece

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))

# Each string exercises something the encoder or the decoder can get wrong.
TEXTS = [
    "",
    "a",
    "Hello world",
    " Hello",                                   # leading space: the dummy prefix doubles it
    "   three leading spaces",
    "double  spaces   and    more",
    "trailing space ",
    "    ",                                     # spaces only
    "tab\there\tand\t\ttwo",
    "line one\nline two\n\nline four\n",
    "\n",
    "mixed\r\nline endings\r",
    "1234567890 3.14159 -42 1e10 2024-01-01",   # Llama splits digits one by one
    "Ünïcödé àccénts: café, naïve, façade, Ångström",
    "日本語のテキストです。",
    "中文字符测试",
    "Привет, мир!",
    "مرحبا بالعالم",
    "नमस्ते दुनिया",
    "안녕하세요",
    "emoji 😀🎉👍🏽 and 👨‍👩‍👧‍👦 family",               # byte fallback, ZWJ sequences
    "𝔘𝔫𝔦𝔠𝔬𝔡𝔢 math 𝛼",                              # astral plane letters: byte fallback
    "“curly quotes” — em dash … ellipsis",
    "zero\u200bwidth and\u00a0no-break space",
    "control \u0001 char",
    "def f(x):\n    return x ** 2  # square\n",
    "for (int i = 0; i < n; i++) { sum += a[i]; }",
    "<s> literal special tokens </s> <unk>",    # plain text to sentencepiece, not control ids
    "<0x0A> looks like a byte token",
    "\u2581 the sentencepiece marker itself",
    "ha" * 50,
]


def byte(b):
    """Id of the byte-fallback piece <0xNN> in Llama-2's vocabulary (ids 3..258)."""
    return 3 + b


# Id sequences for the decoder alone: control and unknown pieces in odd places, and invalid or unfinished
# UTF-8 from byte pieces (sentencepiece prints one U+FFFD per bad byte).
DECODE_IDS = [
    [263, 0, 289],                                 # ▁a <unk> ▁b
    [0, 263],                                      # <unk> first: the next word keeps its space
    [1, 0, 263],
    [1, 29871, 15043],                             # <s> ▁ ▁Hello
    [1, 2, 15043, 2, 1, 3186],                     # controls anywhere print nothing
    [259, 15043],                                  # ▁▁ first: one space dropped
    [13, 15043],                                   # a byte piece first: the next word keeps its space
    [byte(0xF0), byte(0x9F), byte(0x98), byte(0x80)],    # 😀 from bytes
    [byte(0xF0), byte(0x9F), byte(0x98)],                # unfinished at the end
    [byte(0xF0), byte(0x9F), byte(0x98), 15043],         # unfinished before a word
    [byte(0xF0), 29871, 15043],
    [byte(0xE2), byte(0x82), byte(0xAC), 289],           # € from bytes
    [byte(0xE2), byte(0xE2), byte(0x82), byte(0xAC)],    # a lone lead byte, then €
    [byte(0x82), byte(0xAC), 263],                       # continuation bytes alone
    [byte(0xC0), byte(0x80), 263],                       # overlong encoding
    [byte(0xED), byte(0xA0), byte(0x80)],                # a UTF-16 surrogate in UTF-8
    [byte(0xF4), byte(0x90), byte(0x80), byte(0x80)],    # past U+10FFFF
    [byte(0xFF), 263],
]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default=os.path.join(REPO, "..", "shared", "fixtures", "llama2", "tokenizer.model"))
    ap.add_argument("--out", default=os.path.join(REPO, "tests", "fixtures", "tokenizer", "llama2_ids.json"))
    args = ap.parse_args()

    with open(args.model, "rb") as f:
        model_bytes = f.read()
    sp = sentencepiece.SentencePieceProcessor(model_proto=model_bytes)
    cases = []
    for text in TEXTS:
        ids = sp.encode(text, out_type=int)
        cases.append({"text": text, "ids": ids, "decoded": sp.decode(ids)})
    decode_cases = [{"ids": ids, "decoded": sp.decode(ids)} for ids in DECODE_IDS]
    out = {
        "generator": "tools/oracle/tokenizer_fixture.py",
        "sentencepiece_version": sentencepiece.__version__,
        "model": "llama2/tokenizer.model",
        "model_sha256": hashlib.sha256(model_bytes).hexdigest(),
        "bos_id": sp.bos_id(),
        "eos_id": sp.eos_id(),
        "vocab_size": sp.get_piece_size(),
        "cases": cases,
    }
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    # One case per line, so that a diff after a re-run shows which strings changed.
    head = json.dumps(out, ensure_ascii=False, indent=1)[:-2]
    lists = [(name, rows) for name, rows in (("cases", cases), ("decode_cases", decode_cases))]
    body = "".join(
        f',\n "{name}": [\n' + ",\n".join("  " + json.dumps(r, ensure_ascii=False) for r in rows) + "\n ]"
        for name, rows in lists)
    with open(args.out, "w", encoding="utf-8") as f:
        f.write(head + body + "\n}\n")
    print(f"wrote {len(cases)} cases to {args.out} (sentencepiece {sentencepiece.__version__})")


if __name__ == "__main__":
    main()
