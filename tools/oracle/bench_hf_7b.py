"""Hugging Face transformers' numbers on a Llama-2-7B-shaped checkpoint of random weights, for
bench/RESULTS.md next to ours. Run on the GPU machine:

    python3 tools/oracle/bench_hf_7b.py --make /tmp/llama7b     # writes the checkpoint (f16, ~13.5 GB)
    python3 tools/oracle/bench_hf_7b.py --bench /tmp/llama7b    # load, prefill 512, decode at batch 1 and 16
    python3 tools/oracle/bench_hf_7b.py --make-finetune /tmp/llama7b /tmp/ft7b   # a "fine-tune" of it, for compress

The checkpoint is never committed. Timings: CUDA-synchronised wall clock, after a warm-up, median of runs.
"""
import argparse, json, os, statistics, sys, time
import torch
import transformers

CONFIG = dict(vocab_size=32000, hidden_size=4096, intermediate_size=11008, num_hidden_layers=32,
              num_attention_heads=32, num_key_value_heads=32, max_position_embeddings=4096,
              rms_norm_eps=1e-5, rope_theta=10000.0, tie_word_embeddings=False, bos_token_id=1, eos_token_id=2)


def make(path):
    t = time.time()
    cfg = transformers.LlamaConfig(**CONFIG)
    torch.set_default_dtype(torch.float16)
    with torch.device("cuda"):
        model = transformers.LlamaForCausalLM(cfg)
    model.save_pretrained(path, safe_serialization=True)
    print(f"made {path} in {time.time() - t:.1f} s: {sum(p.numel() for p in model.parameters()) / 1e9:.2f} B parameters")


def make_finetune(base, out):
    """Every weight moved by a small random delta (1% of its tensor's spread, norms included), like a full fine-tune."""
    t = time.time()
    model = transformers.LlamaForCausalLM.from_pretrained(base, dtype=torch.float16, device_map="cuda")
    g = torch.Generator(device="cuda").manual_seed(1)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.01 * p.float().std() * torch.randn(p.shape, generator=g, device="cuda", dtype=torch.float16))
    model.save_pretrained(out, safe_serialization=True)
    print(f"made {out} from {base} in {time.time() - t:.1f} s")


def sync_time(fn, runs):
    times = []
    for _ in range(runs):
        torch.cuda.synchronize()
        t = time.perf_counter()
        fn()
        torch.cuda.synchronize()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def bench(path, prefill, batches, new_tokens):
    torch.cuda.synchronize()
    t = time.perf_counter()
    model = transformers.LlamaForCausalLM.from_pretrained(path, dtype=torch.float16, device_map="cuda").eval()
    torch.cuda.synchronize()
    load = time.perf_counter() - t
    g = torch.Generator(device="cuda").manual_seed(0)
    res = {"transformers": transformers.__version__, "torch": torch.__version__, "load_s": load,
           "attn": model.config._attn_implementation}
    with torch.no_grad():
        ids = torch.randint(3, 32000, (1, prefill), device="cuda", generator=g)
        model(ids)  # warm-up
        s = sync_time(lambda: model(ids), 5)
        res["prefill_tokens"] = prefill
        res["prefill_tok_s"] = prefill / s
        for b in batches:
            prompt = torch.randint(3, 32000, (b, 16), device="cuda", generator=g)
            kw = dict(max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False, pad_token_id=0)
            model.generate(prompt, **kw)  # warm-up
            torch.cuda.reset_peak_memory_stats()
            s = sync_time(lambda: model.generate(prompt, **kw), 3)
            res[f"decode_b{b}_tok_s"] = b * new_tokens / s
            res[f"decode_b{b}_ms_per_step"] = 1000 * s / new_tokens
            res[f"peak_gib_b{b}"] = torch.cuda.max_memory_allocated() / 2**30
    print(json.dumps(res, indent=1))


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--make")
    ap.add_argument("--bench")
    ap.add_argument("--make-finetune", nargs=2, metavar=("BASE", "OUT"))
    ap.add_argument("--prefill", type=int, default=512)
    ap.add_argument("--batches", default="1,16")
    ap.add_argument("--new-tokens", type=int, default=64)
    a = ap.parse_args()
    if a.make:
        make(a.make)
    if a.make_finetune:
        make_finetune(*a.make_finetune)
    if a.bench:
        bench(a.bench, a.prefill, [int(x) for x in a.batches.split(",")], a.new_tokens)
