"""Checks `bitdelta compress --save-full-model` from the outside: transformers loads the folder we wrote (weights,
config, tokenizer) and measures the same perplexity and arithmetic accuracy as the compressed model in
demo/oracle.json (there computed in f32 from base + delta; here from our f16-rounded sum, so a small difference).

Run on the GPU machine after `bitdelta compress --base demo/base --finetuned demo/finetuned --out DIR --save-full-model`:
    python3 tools/oracle/check_full_model.py DIR/model
"""
import json, os, sys
import torch
import transformers
import sentencepiece as spm

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import demo_pair

folder = sys.argv[1]
root = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "demo")
oracle = json.load(open(os.path.join(root, "oracle.json")))
torch.backends.cuda.matmul.allow_tf32 = False
model = demo_pair.load(folder)
tok = transformers.AutoTokenizer.from_pretrained(folder)
sp = spm.SentencePieceProcessor(model_file=os.path.join(folder, "tokenizer.model"))
text = open(os.path.join(root, "data", "arithmetic.valid.txt")).read()
assert tok(text).input_ids[:50] == ([1] + sp.encode(text))[:50], "AutoTokenizer and sentencepiece disagree"
qa = [json.loads(l) for l in open(os.path.join(root, "data", "arithmetic.qa.jsonl"))]
result = {"transformers": transformers.__version__, "folder": folder}
for f in ("stories.valid.txt", "arithmetic.valid.txt"):
    ids = torch.tensor([1] + sp.encode(open(os.path.join(root, "data", f)).read()))
    ppl, _ = demo_pair.perplexity(model, ids, oracle["context"], oracle["stride"])
    result[f] = {"saved full model": ppl, "compressed in oracle.json": oracle["models"]["compressed"][f]["perplexity"]}
result["accuracy"] = {"saved full model": demo_pair.accuracy(model, sp, qa),
                      "compressed in oracle.json": oracle["models"]["compressed"]["arithmetic.qa.jsonl accuracy"]}
print(json.dumps(result, indent=1))
