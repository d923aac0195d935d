"""Golden fixtures for BitDelta compression: a fine-tune of each tiny model in tests/fixtures/models, and what
PyTorch computes for its binarized (compressed) form, so the C# compressor and the delta-aware forward pass can
be checked against it on the CPU in CI.

Run on the GPU machine from the repository root (CPU is enough; torch + transformers are there):
    python3 tools/oracle/bitdelta_golden.py --out /tmp/bd && tar -C /tmp/bd -cf $OUT/bitdelta.tar .
then unpack into tests/fixtures/bitdelta here. For each tiny model NAME it writes NAME/:
    config.json, model.safetensors   the fine-tune, in the base's dtype (save_pretrained)
    goldens.safetensors
        signs.<weight>   I32 [out, ceil(in/32)]  sign bits of delta = W_ft - W_base in f32, 1 where delta >= 0,
                                                 32 per word along the input dimension, least significant first
        alpha.<weight>   F32 [1]                 mean |delta| (torch's f32 mean, as the reference computes it)
        p{i}.ids, p{i}.last_logits, p{i}.first_logits   as tiny_models.py, for the compressed model
        p{i}.ft_last_logits                      the fine-tune's own logits (to show compression changed them)
The compressed model is computed in f32: every decoder linear is W_base + alpha*sign(delta) (BitDelta,
arXiv 2402.10193, 3.1); every other tensor is the fine-tune's.
"""
import argparse, os
import torch
import transformers
from safetensors.torch import save_file

LINEARS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
MODELS = {
    # what else the fine-tune changes besides the linears (stored whole in the delta file)
    "llama-f16": ("model.norm.weight", "lm_head.weight"),
    "mistral-bf16": (),
    "llama3-bf16-tied": ("model.embed_tokens.weight", "model.layers.1.input_layernorm.weight"),
}


def load(folder):
    kw = dict(attn_implementation="eager")
    try:
        return transformers.AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32, **kw).eval()
    except TypeError:
        return transformers.AutoModelForCausalLM.from_pretrained(folder, torch_dtype=torch.float32, **kw).eval()


def pack_signs(delta):
    bits = (delta >= 0).to(torch.int64)
    rows, cols = bits.shape
    words = (cols + 31) // 32
    padded = torch.zeros(rows, words * 32, dtype=torch.int64)
    padded[:, :cols] = bits
    weights = (2 ** torch.arange(32, dtype=torch.int64))
    packed = (padded.view(rows, words, 32) * weights).sum(-1)          # uint32 values in int64
    return torch.where(packed >= 2 ** 31, packed - 2 ** 32, packed).to(torch.int32)   # same bits as int32


def make(name, extra, fixtures, out):
    base_dir = os.path.join(fixtures, name)
    dtype = {"llama-f16": torch.float16}.get(name, torch.bfloat16)
    base = load(base_dir)
    g = torch.Generator().manual_seed(7)
    ft = load(base_dir)
    with torch.no_grad():
        for pname, p in ft.named_parameters():
            is_linear = pname.endswith(".weight") and pname.split(".")[-2] in LINEARS
            if is_linear or pname in extra:
                # A fine-tune-sized change: a few percent of the weights' spread, with some rows moved more.
                row = 1 + 2 * torch.rand(p.shape[0], *([1] * (p.dim() - 1)), generator=g)
                p.add_(0.05 * p.std() * row * torch.randn(p.shape, generator=g))
    folder = os.path.join(out, name)
    ft.to(dtype).save_pretrained(folder, safe_serialization=True)
    ft = load(folder)   # the weights as stored, upcast exactly

    goldens = {}
    comp = load(folder)
    b = dict(base.named_parameters())
    with torch.no_grad():
        for pname, p in comp.named_parameters():
            if pname.endswith(".weight") and pname.split(".")[-2] in LINEARS:
                delta = p.float() - b[pname].float()
                alpha = delta.abs().mean()
                goldens[f"signs.{pname}"] = pack_signs(delta)
                goldens[f"alpha.{pname}"] = alpha.reshape(1).float()
                p.copy_(b[pname].float() + alpha * torch.where(delta >= 0, 1.0, -1.0))
    with torch.no_grad():
        from safetensors.torch import load_file
        old = load_file(os.path.join(base_dir, "goldens.safetensors"))
        i = 0
        while f"p{i}.ids" in old:
            ids = old[f"p{i}.ids"].long()[None]
            logits = comp(ids).logits[0].float()
            goldens[f"p{i}.ids"] = old[f"p{i}.ids"]
            goldens[f"p{i}.last_logits"] = logits[-1].clone()
            goldens[f"p{i}.first_logits"] = logits[: min(4, ids.shape[1])].clone()
            goldens[f"p{i}.ft_last_logits"] = ft(ids).logits[0, -1].float().clone()
            diff = (logits[-1] - goldens[f"p{i}.ft_last_logits"]).abs().max().item()
            print(f"{name} p{i}: compressed vs fine-tune last logits differ by up to {diff:.4f}")
            i += 1
    save_file(goldens, os.path.join(folder, "goldens.safetensors"), metadata={
        "transformers": transformers.__version__, "torch": torch.__version__,
        "compute": "float32, eager attention, CPU", "base": f"tests/fixtures/models/{name}"})


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    ap.add_argument("--fixtures", default="tests/fixtures/models")
    args = ap.parse_args()
    print(f"transformers {transformers.__version__}, torch {torch.__version__}")
    for name, extra in MODELS.items():
        make(name, extra, args.fixtures, args.out)


if __name__ == "__main__":
    main()
