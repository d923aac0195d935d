"""cuBLAS through PyTorch at the prefill GEMM's shapes, for `bitdelta bench gemm` to be read against (speed issue:
the tensor-core GEMM at >= 60% of cuBLAS's TFLOP/s). Runs on the GPU machine:

    python3 tools/oracle/bench_torch_gemm.py [--rows 512,2048]

y = x @ W.T for W [out, in] at Llama-2-7B's linear shapes: f16 x and W (what transformers runs for an f16 model; f32
accumulation), f32 x and W with TF32 off (our GEMM's accuracy class), and bf16. Median of 20 timed products (CUDA
events) after 3 warm-ups, random normal inputs (never zeros)."""
import argparse
import torch

SHAPES = [(4096, 4096), (11008, 4096), (4096, 11008)]


def median_us(fn, reps=20):
    for _ in range(3):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(reps):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        fn()
        b.record()
        b.synchronize()
        times.append(a.elapsed_time(b) * 1e3)
    times.sort()
    return times[len(times) // 2]


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--rows", default="512,2048")
    args = p.parse_args()
    torch.backends.cuda.matmul.allow_tf32 = False
    print(f"torch {torch.__version__} on {torch.cuda.get_device_name()}; TFLOP/s = 2*rows*out*in / time")
    print(f"{'rows':>6} {'out×in':<12} {'f16 µs':>9} {'f16 TF/s':>9} {'bf16 µs':>9} {'bf16 TF/s':>9} {'f32 µs':>9} {'f32 TF/s':>9}")
    g = torch.Generator(device="cuda").manual_seed(0)
    for m in [int(r) for r in args.rows.split(",")]:
        for n, k in SHAPES:
            flop = 2.0 * m * n * k
            row = [f"{m:>6} {f'{n}×{k}':<12}"]
            for dt in (torch.float16, torch.bfloat16, torch.float32):
                x = torch.randn(m, k, device="cuda", generator=g).to(dt)
                w = (0.05 * torch.randn(n, k, device="cuda", generator=g)).to(dt)
                us = median_us(lambda: x @ w.T)
                row.append(f"{us:>9.1f} {flop / us / 1e6:>9.1f}")
            print(" ".join(row))


if __name__ == "__main__":
    main()
