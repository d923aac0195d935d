"""BitDelta scale distillation (arXiv 2402.10193, 3.2) in PyTorch, as the oracle for `bitdelta compress --steps`.

The method, as the reference's bitdelta/train.py runs it: the teacher is the fine-tune, the student is the base
plus alpha * sign(delta) in every decoder linear; loss = F.mse_loss(teacher logits, student logits) over every
position of the batch; torch.optim.AdamW(lr) with its defaults (betas 0.9/0.999, eps 1e-8, weight decay 0.01);
CosineAnnealingLR(optimizer, steps), stepped after each optimizer step. Only the scales train (the paper's
choice; the reference hands every un-frozen parameter to the optimizer). Everything is f32.

Calibration samples are consecutive windows of `seq` tokens of one token stream; step s takes samples
s*batch ... s*batch+batch-1 (wrapping around the stream's windows when it runs out), exactly as the C# side does.

Two jobs; run on the GPU machine from the repository root:
  python3 tools/oracle/distill_golden.py fixtures --out /tmp/dg
      For each tiny model NAME (tests/fixtures/models/NAME + its fine-tune in tests/fixtures/bitdelta/NAME), on
      the CPU: random calibration ids (seeded), a few steps, and writes NAME/distill.safetensors with
        calib_ids I32 [steps*batch, seq]     the samples, in the order they are used
        alpha0.<w>, grad0.<w>  F32 [1]       the initial scale (mean |delta|) and d loss / d alpha at step 0
        alpha1.<w>, alpha.<w>  F32 [1]       the scale after the first step and after the last
        loss, lr               F32 [steps]   loss before each step's update, and the lr that step used
      metadata: steps, batch, seq, lr. Copy NAME/distill.safetensors into tests/fixtures/bitdelta/NAME/.
  python3 tools/oracle/distill_golden.py demo --out /tmp/dd [--steps 200 --batch 4 --seq 128 --lr 1e-4]
      The demo pair (demo/base, demo/finetuned) distilled on demo/data/calib.stories.txt and calib.mixed.txt
      on CUDA (TF32 off); perplexities and accuracy as demo_pair.py measures them. Writes oracle-distill.json;
      copy it into demo/.
"""
import argparse, copy, json, os, sys, time
import torch
import torch.nn.functional as F
from safetensors.torch import save_file

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bitdelta_golden as golden

LINEARS = golden.LINEARS


class BitDeltaLinear(torch.nn.Module):
    """x @ W_base^T + alpha * (x @ S^T): the reference's `x @ base + coeff * binary_bmm(x, mask)`."""

    def __init__(self, base_w, sign, alpha):
        super().__init__()
        self.register_buffer("base", base_w)
        self.register_buffer("sign", sign)
        self.alpha = torch.nn.Parameter(torch.tensor(float(alpha), dtype=torch.float32, device=base_w.device))

    def forward(self, x):
        return F.linear(x, self.base) + self.alpha * F.linear(x, self.sign)


def student_of(base, ft):
    """The fine-tune's module tree with every decoder linear replaced by a BitDeltaLinear over the base's weight:
    every other tensor (norms, embedding, head) stays the fine-tune's, as the delta file keeps them."""
    student = copy.deepcopy(ft)
    b = dict(base.named_parameters())
    names = []
    for mname, module in list(student.named_modules()):
        for child, sub in list(module.named_children()):
            if child in LINEARS and isinstance(sub, torch.nn.Linear):
                wname = f"{mname}.{child}.weight"
                delta = sub.weight.detach().float() - b[wname].detach().float()
                setattr(module, child, BitDeltaLinear(b[wname].detach().float().clone(),
                                                      torch.where(delta >= 0, 1.0, -1.0), delta.abs().mean()))
                names.append(wname)
    for p in student.parameters(): p.requires_grad_(False)
    alphas = {n: student.get_submodule(n[: -len(".weight")]).alpha for n in names}
    for a in alphas.values(): a.requires_grad_(True)
    return student, alphas


def windows(ids, seq):
    n = len(ids) // seq
    if n == 0: raise SystemExit(f"calibration stream of {len(ids)} tokens is shorter than one {seq}-token sample")
    return ids[: n * seq].view(n, seq)


def distill(teacher, student, alphas, samples, steps, batch, lr, device, log=None):
    opt = torch.optim.AdamW(list(alphas.values()), lr=lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
    rec = {"loss": [], "lr": [], "alpha0": {n: a.item() for n, a in alphas.items()}}
    for step in range(steps):
        rows = [(step * batch + r) % len(samples) for r in range(batch)]
        x = samples[rows].to(device)
        with torch.no_grad():
            t = teacher(input_ids=x).logits.float()
        s = student(input_ids=x).logits.float()
        loss = F.mse_loss(t, s)
        opt.zero_grad()
        loss.backward()
        if step == 0: rec["grad0"] = {n: a.grad.item() for n, a in alphas.items()}
        rec["loss"].append(loss.item())
        rec["lr"].append(opt.param_groups[0]["lr"])
        opt.step(); sched.step()
        if step == 0: rec["alpha1"] = {n: a.item() for n, a in alphas.items()}
        if log and (step % log == 0 or step == steps - 1): print(f"step {step}: loss {loss.item():.6g}", flush=True)
    rec["alpha"] = {n: a.item() for n, a in alphas.items()}
    return rec


def fixtures(args):
    torch.manual_seed(0)
    for i, name in enumerate(golden.MODELS):
        base = golden.load(os.path.join(args.fixtures, name))
        ft = golden.load(os.path.join(args.bitdelta, name))
        student, alphas = student_of(base, ft)
        g = torch.Generator().manual_seed(11 + i)
        ids = torch.randint(3, ft.config.vocab_size, (args.steps * args.batch, args.seq), generator=g)
        ids[:, 0] = 1
        rec = distill(ft, student, alphas, ids, args.steps, args.batch, args.lr, "cpu")
        out = {"calib_ids": ids.to(torch.int32), "loss": torch.tensor(rec["loss"]), "lr": torch.tensor(rec["lr"])}
        for key in ("alpha0", "grad0", "alpha1", "alpha"):
            for n, v in rec[key].items(): out[f"{key}.{n}"] = torch.tensor([v], dtype=torch.float32)
        folder = os.path.join(args.out, name)
        os.makedirs(folder, exist_ok=True)
        save_file(out, os.path.join(folder, "distill.safetensors"), metadata={
            "steps": str(args.steps), "batch": str(args.batch), "seq": str(args.seq), "lr": repr(args.lr),
            "torch": torch.__version__, "compute": "float32, eager attention, CPU"})
        moved = max(abs(rec["alpha"][n] - rec["alpha0"][n]) / rec["alpha0"][n] for n in alphas)
        print(f"{name}: loss {rec['loss'][0]:.6g} -> {rec['loss'][-1]:.6g}; scales moved up to {moved:.1%}")


def demo(args):
    import sentencepiece as spm
    import demo_pair as dp
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    sp = spm.SentencePieceProcessor(model_file=os.path.join(args.demo, "base", "tokenizer.model"))
    qa = [json.loads(l) for l in open(os.path.join(args.demo, "data", "arithmetic.qa.jsonl"))]
    base, ft = dp.load(os.path.join(args.demo, "base")), dp.load(os.path.join(args.demo, "finetuned"))
    result = {"steps": args.steps, "batch": args.batch, "seq": args.seq, "lr": args.lr, "torch": torch.__version__,
              "compute": "float32 on CUDA, TF32 off", "context": 256, "stride": 128, "runs": {}}
    for calib in ("calib.stories.txt", "calib.mixed.txt"):
        t0 = time.time()
        ids = torch.tensor([1] + sp.encode(open(os.path.join(args.demo, "data", calib)).read()))
        samples = windows(ids, args.seq)
        student, alphas = student_of(base, ft)
        rec = distill(ft, student, alphas, samples, args.steps, args.batch, args.lr, "cuda", log=50)
        took = time.time() - t0
        # Evaluate the distilled model as a plain f32 Llama: W_base + alpha * sign, like bitdelta_compressed.
        model = dp.bitdelta_compressed(base, ft)
        with torch.no_grad():
            for n, p in model.named_parameters():
                if n in alphas:
                    m = student.get_submodule(n[: -len(".weight")])
                    p.copy_(m.base + m.alpha * m.sign)
        r = {"calibration tokens": len(ids), "samples": len(samples), "seconds": took, "loss": rec["loss"],
             "alpha0": rec["alpha0"], "alpha": rec["alpha"]}
        for f in ("stories.valid.txt", "arithmetic.valid.txt"):
            eids = torch.tensor([1] + sp.encode(open(os.path.join(args.demo, "data", f)).read()))
            r[f] = {"perplexity": dp.perplexity(model, eids, 256, 128)[0]}
        r["arithmetic.qa.jsonl accuracy"] = dp.accuracy(model, sp, qa)
        result["runs"][calib] = r
        print(calib, {k: v for k, v in r.items() if k not in ("loss", "alpha0", "alpha")}, flush=True)
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "oracle-distill.json"), "w") as f: json.dump(result, f, indent=1)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("job", choices=("fixtures", "demo"))
    ap.add_argument("--out", required=True)
    ap.add_argument("--fixtures", default="tests/fixtures/models")
    ap.add_argument("--bitdelta", default="tests/fixtures/bitdelta")
    ap.add_argument("--demo", default="demo")
    ap.add_argument("--steps", type=int)
    ap.add_argument("--batch", type=int)
    ap.add_argument("--seq", type=int)
    ap.add_argument("--lr", type=float, default=1e-4)
    args = ap.parse_args()
    # Fixture defaults: a ragged sequence (not a multiple of 8 or 32) past Mistral's sliding window of 8.
    d = {"fixtures": (10, 3, 21), "demo": (200, 4, 128)}[args.job]
    args.steps, args.batch, args.seq = args.steps or d[0], args.batch or d[1], args.seq or d[2]
    print(f"torch {torch.__version__}; {args.job}: {args.steps} steps, batch {args.batch} x {args.seq}, lr {args.lr}")
    fixtures(args) if args.job == "fixtures" else demo(args)


if __name__ == "__main__":
    main()
