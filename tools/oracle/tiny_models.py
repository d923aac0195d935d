"""Golden fixtures for the Llama/Mistral forward pass: tiny random checkpoints saved by Hugging Face
transformers in HF format, and what transformers computes from them.

Run on the GPU machine (it has torch + transformers; no network needed):
    python3 tools/oracle/tiny_models.py --out /tmp/models && tar -C /tmp/models -cf $OUT/models.tar .
then unpack into tests/fixtures/models here. Each model folder gets config.json, model.safetensors
(and generation_config.json) as save_pretrained writes them, plus goldens.safetensors:
    p{i}.ids            I32 [n]        prompt token ids (random, fixed seed)
    p{i}.last_logits    F32 [vocab]    logits at the last prompt position
    p{i}.first_logits   F32 [r, vocab] logits at the first r positions (r = min(4, n))
    p{i}.greedy         I32 [24]       greedy continuation (argmax, no EOS stop)
    p{i}.greedy_margin  F32 [24]       top-1 minus top-2 logit at each greedy step (near-ties)
Goldens are computed in float32 (weights upcast exactly from f16/bf16) with eager attention on the
CPU, so they are what "transformers in f32" means, with no TF32 or fused-kernel differences.
"""
import argparse, json, os, sys
import torch
import transformers
from safetensors.torch import save_file

GREEDY = 24

SPECS = {
    # Llama-2 style: f16, multi-head attention, untied lm_head.
    "llama-f16": dict(cls="llama", dtype=torch.float16, seed=1, cfg=dict(
        vocab_size=384, hidden_size=64, intermediate_size=160, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=128,
        rms_norm_eps=1e-6, rope_theta=10000.0, tie_word_embeddings=False,
        bos_token_id=1, eos_token_id=2)),
    # Mistral style: bf16, grouped-query attention (6 query heads over 2 kv heads), sliding window 8
    # (shorter than the 29-token prompt plus 24 generated tokens).
    "mistral-bf16": dict(cls="mistral", dtype=torch.bfloat16, seed=2, cfg=dict(
        vocab_size=384, hidden_size=96, intermediate_size=224, num_hidden_layers=2,
        num_attention_heads=6, num_key_value_heads=2, head_dim=16, max_position_embeddings=128,
        rms_norm_eps=1e-5, rope_theta=1000000.0, sliding_window=8, tie_word_embeddings=False,
        bos_token_id=1, eos_token_id=2)),
    # Llama-3 style: bf16, GQA, llama3 rope scaling whose three frequency bands all occur at head_dim 16
    # (wavelengths 6.3 < 16, 32 between 16 and 64, the rest > 64), tied embeddings, a list of EOS ids.
    "llama3-bf16-tied": dict(cls="llama", dtype=torch.bfloat16, seed=3, cfg=dict(
        vocab_size=384, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, head_dim=16, max_position_embeddings=256,
        rms_norm_eps=1e-5, rope_theta=500000.0, tie_word_embeddings=True,
        rope_scaling=dict(rope_type="llama3", factor=8.0, low_freq_factor=1.0, high_freq_factor=4.0,
                          original_max_position_embeddings=64),
        bos_token_id=1, eos_token_id=[2, 3])),
}

PROMPT_LENGTHS = [1, 6, 29]


def classes(kind):
    if kind == "llama":
        return transformers.LlamaConfig, transformers.LlamaForCausalLM
    return transformers.MistralConfig, transformers.MistralForCausalLM


def randomize(model, seed):
    # The default init (std 0.02, norms at 1) gives nearly flat logits and near-ties at every greedy
    # step; larger weights and non-trivial norm weights make the goldens discriminate.
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name:
                p.copy_(1.0 + 0.2 * torch.randn(p.shape, generator=g))
            else:
                p.copy_(torch.randn(p.shape, generator=g) * (0.6 / p.shape[-1] ** 0.5) * 3)


def make(name, spec, out):
    cfg_cls, model_cls = classes(spec["cls"])
    cfg = cfg_cls(**spec["cfg"])
    torch.manual_seed(spec["seed"])
    model = model_cls(cfg)
    randomize(model, spec["seed"])
    folder = os.path.join(out, name)
    model.to(spec["dtype"]).save_pretrained(folder, safe_serialization=True)

    try:  # transformers 5 calls it dtype, 4.x torch_dtype
        ref = model_cls.from_pretrained(folder, dtype=torch.float32, attn_implementation="eager").eval()
    except TypeError:
        ref = model_cls.from_pretrained(folder, torch_dtype=torch.float32, attn_implementation="eager").eval()
    g = torch.Generator().manual_seed(100 + spec["seed"])
    goldens = {}
    with torch.no_grad():
        for i, n in enumerate(PROMPT_LENGTHS):
            ids = torch.randint(3, cfg.vocab_size, (1, n), generator=g)
            logits = ref(ids).logits[0].float()
            goldens[f"p{i}.ids"] = ids[0].to(torch.int32)
            goldens[f"p{i}.last_logits"] = logits[-1].clone()
            goldens[f"p{i}.first_logits"] = logits[: min(4, n)].clone()
            seq, toks, margins = ids, [], []
            for _ in range(GREEDY):
                last = ref(seq).logits[0, -1].float()
                top2 = torch.topk(last, 2)
                toks.append(int(top2.indices[0]))
                margins.append(float(top2.values[0] - top2.values[1]))
                seq = torch.cat([seq, top2.indices[:1].view(1, 1)], dim=1)
            goldens[f"p{i}.greedy"] = torch.tensor(toks, dtype=torch.int32)
            goldens[f"p{i}.greedy_margin"] = torch.tensor(margins, dtype=torch.float32)
    save_file(goldens, os.path.join(folder, "goldens.safetensors"), metadata={
        "transformers": transformers.__version__, "torch": torch.__version__,
        "compute": "float32, eager attention, CPU"})
    print(f"{name}: {sum(p.numel() for p in model.parameters())} parameters, dtype {spec['dtype']}, "
          f"min greedy margin {min(float(goldens[f'p{i}.greedy_margin'].min()) for i in range(len(PROMPT_LENGTHS))):.4f}")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    print(f"transformers {transformers.__version__}, torch {torch.__version__}")
    for name, spec in SPECS.items():
        make(name, spec, args.out)


if __name__ == "__main__":
    main()
