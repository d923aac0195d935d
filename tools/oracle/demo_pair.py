"""Trains the demo pair the repo ships (demo/base, demo/finetuned) and records what the reference stack
(PyTorch + transformers) measures on it, so `bitdelta eval` can be checked against it.

Run on the GPU machine (torch, transformers and sentencepiece are there; no network needed):
    PYTHONUNBUFFERED=1 python3 tools/oracle/demo_pair.py --out /tmp/demo
then copy /tmp/demo/{base,finetuned,oracle.json} into demo/ here. About 5 minutes on an H100. The shipped
pair was made in two calls: the base with the first defaults, then the fine-tune with --reuse-base.

What it makes:
- tokenizer.model: a SentencePiece BPE model (1024 pieces, byte fallback, digits split, identity
  normalisation: the options Llama-2's tokenizer uses) trained on both corpora.
- base: a Llama-architecture model (6 layers, hidden 256, 8 heads over 4 kv heads, SwiGLU 640, untied
  head, ~4.7M parameters) trained from scratch on the stories corpus only; saved in f16.
- finetuned: the base, fully fine-tuned (every weight) on arithmetic with a tenth of stories mixed in so it
  keeps its English (2500 steps, lr 1e-3: 100% on the held-out problems; 1000 steps at 3e-4 gave 14.5%,
  3000 at 3e-4 gave 60%); saved in f16. Its delta is what BitDelta compresses.
- oracle.json: perplexities (BitDelta's windowed method) and arithmetic accuracy of base, fine-tune and the
  BitDelta-compressed fine-tune (W_base + mean|Δ|·sign(Δ), computed in f32 here), and sample generations.
Documents are packed as BOS + text + EOS into 512-token training rows.
"""
import argparse, json, math, os, random, shutil, sys, time
import torch
import transformers
import sentencepiece as spm

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import demo_corpus as corpus

LINEARS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
CONFIG = dict(vocab_size=1024, hidden_size=256, intermediate_size=640, num_hidden_layers=6,
              num_attention_heads=8, num_key_value_heads=4, max_position_embeddings=512, rms_norm_eps=1e-5,
              rope_theta=10000.0, tie_word_embeddings=False, bos_token_id=1, eos_token_id=2)
SEQ, BATCH = 512, 32


def train_tokenizer(work):
    sample = os.path.join(work, "tok.txt")
    with open(sample, "w") as f:
        for d in corpus.documents("stories", 1, 20000): f.write(d + "\n")
        for d in corpus.documents("arithmetic", 1, 4000): f.write(d + "\n")
    spm.SentencePieceTrainer.train(
        input=sample, model_prefix=os.path.join(work, "tokenizer"), vocab_size=1024, model_type="bpe",
        character_coverage=1.0, byte_fallback=True, split_digits=True, normalization_rule_name="identity",
        add_dummy_prefix=True, remove_extra_whitespaces=False, allow_whitespace_only_pieces=True,
        unk_id=0, bos_id=1, eos_id=2, pad_id=-1, num_threads=16, minloglevel=2)
    return os.path.join(work, "tokenizer.model")


def pack(sp, docs):
    ids = []
    for d in docs: ids += [1] + sp.encode(d) + [2]
    return torch.tensor(ids, dtype=torch.long)


def batches(streams, weights, steps, seed):
    """Random 512-token rows; each row comes from one stream, picked with the given weights."""
    g = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        rows = []
        for _ in range(BATCH):
            s = streams[int(torch.multinomial(torch.tensor(weights), 1, generator=g))]
            at = int(torch.randint(0, len(s) - SEQ, (1,), generator=g))
            rows.append(s[at:at + SEQ])
        yield torch.stack(rows).cuda()


def train(model, streams, weights, steps, lr, seed, what):
    opt = torch.optim.AdamW(model.parameters(), lr=lr, betas=(0.9, 0.95), weight_decay=0.1)
    warm = min(100, steps // 10)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: (s + 1) / warm if s < warm else
                                              0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * (s - warm) / max(1, steps - warm))))
    model.train()
    t0 = time.time()
    for step, x in enumerate(batches(streams, weights, steps, seed)):
        with torch.autocast("cuda", dtype=torch.bfloat16):
            loss = model(input_ids=x, labels=x).loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step(); sched.step()
        if step % 200 == 0 or step == steps - 1:
            print(f"{what} step {step}/{steps} loss {loss.item():.4f} ({time.time() - t0:.0f} s)", flush=True)
    model.eval()


def load(folder):
    try:
        return transformers.LlamaForCausalLM.from_pretrained(folder, dtype=torch.float32).cuda().eval()
    except TypeError:
        return transformers.LlamaForCausalLM.from_pretrained(folder, torch_dtype=torch.float32).cuda().eval()


def bitdelta_compressed(base, ft):
    """The compressed fine-tune in f32: every decoder linear W_base + alpha*sign(delta) with alpha = mean|delta|
    (sign +1 where delta >= 0), every other tensor as the fine-tune has it (BitDelta, arXiv 2402.10193, 3.1)."""
    out = load_state_like(ft)
    b = dict(base.named_parameters())
    with torch.no_grad():
        for name, p in out.named_parameters():
            if name.endswith(".weight") and name.split(".")[-2] in LINEARS:
                delta = p.float() - b[name].float()
                alpha = delta.abs().mean()
                p.copy_(b[name].float() + alpha * torch.where(delta >= 0, 1.0, -1.0))
    return out


def load_state_like(model):
    m = transformers.LlamaForCausalLM(model.config).cuda().eval()
    m.load_state_dict(model.state_dict())
    return m


@torch.no_grad()
def perplexity(model, ids, context, stride):
    """BitDelta's eval_ppl.py: windows of context+stride tokens moving by stride over the stream cut to a
    multiple of stride; loss on the last stride tokens of each window; exp of the mean of window means."""
    max_len, seq_len = context + stride, len(ids) - len(ids) % stride
    nlls = []
    for begin in range(0, seq_len, stride):
        end = begin + max_len
        x = ids[begin:end].cuda()[None]
        labels = x.clone()
        labels[:, :-stride] = -100
        nlls.append(model(input_ids=x, labels=labels).loss.float())
        if end >= seq_len: break
    return math.exp(torch.stack(nlls).mean().item()), len(nlls)


@torch.no_grad()
def greedy(model, sp, prompt, n):
    ids = torch.tensor([[1] + sp.encode(prompt)]).cuda()
    out = []
    for _ in range(n):
        t = int(model(input_ids=ids).logits[0, -1].argmax())
        if t == 2: break
        out.append(t)
        ids = torch.cat([ids, torch.tensor([[t]]).cuda()], dim=1)
    return sp.decode(out)


def accuracy(model, sp, qa):
    right = 0
    for item in qa:
        said = greedy(model, sp, item["prompt"], 6).split("\n")[0]
        right += said.strip() == item["answer"].strip()
    return right / len(qa)


def save(model, folder, tok):
    model.to(torch.float16).save_pretrained(folder, safe_serialization=True)
    shutil.copy(tok, os.path.join(folder, "tokenizer.model"))
    with open(os.path.join(folder, "tokenizer_config.json"), "w") as f:
        json.dump({"tokenizer_class": "LlamaTokenizer", "bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>",
                   "add_bos_token": True, "add_eos_token": False, "model_max_length": CONFIG["max_position_embeddings"]}, f, indent=2)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    ap.add_argument("--base-steps", type=int, default=3000)
    ap.add_argument("--ft-steps", type=int, default=2500)
    ap.add_argument("--ft-lr", type=float, default=1e-3)
    ap.add_argument("--arith-mix", type=float, default=0.9, help="share of fine-tuning rows from arithmetic")
    ap.add_argument("--reuse-base", help="a base folder made earlier by this script: skip training it (and its tokenizer)")
    args = ap.parse_args()
    torch.manual_seed(0); random.seed(0)
    os.makedirs(args.out, exist_ok=True)
    work = os.path.join(args.out, "work"); os.makedirs(work, exist_ok=True)
    print(f"torch {torch.__version__}, transformers {transformers.__version__}, sentencepiece {spm.__version__}", flush=True)
    t0 = time.time()
    tok = os.path.join(args.reuse_base, "tokenizer.model") if args.reuse_base else train_tokenizer(work)
    sp = spm.SentencePieceProcessor(model_file=tok)
    stories = pack(sp, corpus.documents("stories", 1, 150000))
    arith = pack(sp, corpus.documents("arithmetic", 1, 150000))
    print(f"tokenizer and data: {time.time() - t0:.0f} s; stories {len(stories)} tokens, arithmetic {len(arith)} tokens", flush=True)

    torch.backends.cuda.matmul.allow_tf32 = True
    model = transformers.LlamaForCausalLM(transformers.LlamaConfig(**CONFIG)).cuda()
    print(f"parameters: {sum(p.numel() for p in model.parameters())}", flush=True)
    base_dir, ft_dir = os.path.join(args.out, "base"), os.path.join(args.out, "finetuned")
    if args.reuse_base:
        shutil.copytree(args.reuse_base, base_dir, dirs_exist_ok=True)
    else:
        train(model, [stories], [1.0], args.base_steps, 2e-3, 1, "base")
        save(model, base_dir, tok)
    # The fine-tune starts from the f16 weights as released, so its delta is a fine-tune's delta alone.
    model = load(base_dir); model.train()
    train(model, [arith, stories], [args.arith_mix, 1 - args.arith_mix], args.ft_steps, args.ft_lr, 2, "finetune")
    save(model, ft_dir, tok)

    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    data = os.path.join(work, "eval"); corpus.write_eval(data)
    qa = [json.loads(l) for l in open(os.path.join(data, "arithmetic.qa.jsonl"))]
    base, ft = load(base_dir), load(ft_dir)
    models = {"base": base, "finetuned": ft, "compressed": bitdelta_compressed(base, ft)}
    result = {"fine-tune": {"steps": args.ft_steps, "lr": args.ft_lr, "arith_mix": args.arith_mix}, "torch": torch.__version__, "transformers": transformers.__version__, "compute": "float32 on CUDA, TF32 off",
              "context": 256, "stride": 128, "models": {}}
    for name, m in models.items():
        r = {}
        for f in ("stories.valid.txt", "arithmetic.valid.txt"):
            ids = torch.tensor([1] + sp.encode(open(os.path.join(data, f)).read()))
            ppl, windows = perplexity(m, ids, 256, 128)
            r[f] = {"perplexity": ppl, "windows": windows, "tokens": len(ids)}
        r["arithmetic.qa.jsonl accuracy"] = accuracy(m, sp, qa)
        r["samples"] = {p: greedy(m, sp, p, 40) for p in ("Once upon a time,", "Question: What is 23 + 45?\nAnswer:")}
        result["models"][name] = r
        print(name, json.dumps(r, indent=1), flush=True)
    with open(os.path.join(args.out, "oracle.json"), "w") as f: json.dump(result, f, indent=2)
    print(f"done in {time.time() - t0:.0f} s", flush=True)


if __name__ == "__main__":
    main()
