using System.CommandLine;
using BitDeltaNative.Kernels;

namespace BitDeltaNative;

public static partial class Cli
{
    /// <summary>
    /// The prefill GEMM (y = x·Wᵀ, many rows, f16 W, f32 x and y) at Llama-2-7B's shapes: the tensor-core form
    /// (MatMulMma.cs) against the FMA GEMM it replaces, in TFLOP/s (2·rows·out·in over the time), with each one's relative
    /// error against the f64 twin on the first rows. cuBLAS's figures for the same shapes come from
    /// tools/oracle/bench_torch_gemm.py in the same GPU call (speed issue: at least 60% of cuBLAS).
    /// </summary>
    static Command BenchGemmCommand()
    {
        var rows = new Option<string>("--rows") { Description = "rows of x (prefill tokens), comma-separated", DefaultValueFactory = _ => "512,2048" };
        var shapes = new Option<string?>("--shapes") { Description = "shapes out×in, comma-separated (default: Llama-2-7B's 4096x4096,11008x4096,4096x11008)" };
        var iters = new Option<int?>("--iters") { Description = "timed samples per case (default 20 on CUDA, 1 elsewhere)" };
        var cmd = new Command("gemm", "Time the prefill GEMM on tensor cores against the FMA GEMM at Llama-2-7B shapes (f16 weights).");
        foreach (var o in new Option[] { rows, shapes, iters, DeviceOption }) cmd.Options.Add(o);
        cmd.SetAction(r => Guard(() =>
        {
            var name = r.GetValue(DeviceOption)!;
            var dev = Device.Parse(name == "auto" && !Device.CudaAvailable ? "ilgpu-cpu" : name);
            RecordTo(r, dev);
            if (!dev.IsIlgpu) throw new BitDeltaException("--device cpu: the benchmark times GPU kernels; use cuda, or ilgpu-cpu to run them on ILGPU's CPU accelerator");
            bool cuda = dev.Kind == DeviceKind.Cuda;
            var ms = IntList("--rows", r.GetValue(rows), 1, 1 << 20, "positive integers");
            var list = ParseShapes(r.GetValue(shapes)) ?? (cuda ? GemvShapes : [(256, 256)]);
            int samples = r.GetValue(iters) ?? (cuda ? 20 : 1);
            if (samples < 1) throw new BitDeltaException("--iters must be at least 1");
            Console.WriteLine($"bench gemm on {dev}, {DateTime.UtcNow:yyyy-MM-dd}: f16 W, f32 x and y; median of {samples} samples");
            if (!cuda) Console.WriteLine("(not CUDA: these numbers only show that the benchmark runs)");
            Console.WriteLine($"{"rows",6} {"out×in",-12} {"mma µs",10} {"mma TFLOP/s",11} {"fma µs",10} {"fma TFLOP/s",11} {"speedup",7} {"mma err",9} {"fma err",9}"
                              + $" {"f16 µs",9} {"f16 TF/s",9} {"f16 err",9} {"bf16 µs",9} {"bf16 TF/s",9} {"bf16 err",9} {"64×32 TF/s",10} {"staged f16",10} {"staged bf16",11} {"staged err",10} {"wgmma f16",9} {"wgmma bf16",10} {"wgmma err",9} {"wg 32-wide",11} {"32w err",9} {"wg 1 range",10}");
            var rng = new Random(3);
            foreach (int m in ms)
                foreach (var (outDim, inDim) in list)
                {
                    using var x = Tensor.From(Check.Values(rng, (long)m * inDim), [m, inDim], dev);
                    using var w = Tensor.From(Check.Values(rng, (long)outDim * inDim, 0.05f), [outDim, inDim], dev, DType.F16);
                    using var yMma = Tensor.Empty([m, outDim], DType.F32, dev);
                    using var yFma = Tensor.Empty([m, outDim], DType.F32, dev);
                    if (!MatMul.TakesMmaGemm(x, w, inDim)) throw new BitDeltaException($"{outDim}×{inDim}: not a tensor-core shape (in a multiple of 8)");
                    double Time(bool mma, Tensor y)
                    {
                        MatMul.UseMmaGemm = mma;
                        try { return Median(dev, 1, samples, 1, () => MatMul.Gemm(x, w, y)); }
                        finally { MatMul.UseMmaGemm = true; }
                    }
                    double usMma = Time(true, yMma), usFma = Time(false, yFma);
                    double flop = 2.0 * m * outDim * inDim;
                    // both against the f64 twin on the first rows (the twin over all of them would take minutes on the host)
                    int check = Math.Min(m, 4);
                    var want = new float[check * outDim];
                    MatMul.Twin(x.ToFloatArray().AsSpan(0, check * inDim), w.ToFloatArray(), want, check, inDim, outDim);
                    double ErrOf(Tensor y) => Check.RelativeError(y.ToFloatArray().AsSpan(0, check * outDim), want);
                    Record("gemm", $"{m} rows × {outDim}×{inDim}, f16 tensor cores", flop / usMma / 1e6, "TFLOP/s", "≥ 60% of cuBLAS (tools/oracle/bench_torch_gemm.py)");
                    // the half-operand GEMM (GemmHalf.cs): x and W both f16, then both bf16, as cuBLAS runs them for
                    // transformers' half models; its error against the f64 twin over the rounded operands
                    (double Us, double Err) Half(DType dt, bool? wide = null, bool? async = null, bool wgmma = false, bool swizzled = true, int split = 0)
                    {
                        using var xh = x.Cast(dt);
                        using var wh = w.Cast(dt);
                        using var yh = Tensor.Empty([m, outDim], DType.F32, dev);
                        double us;
                        us = wgmma ? Median(dev, 1, samples, 1, () => GemmWgmma.Run(xh, wh, yh, swizzled: swizzled, split: split))
                                   : Median(dev, 1, samples, 1, () => GemmHalf.Run(xh, wh, yh, async: async, wide: wide));
                        var wantH = new float[check * outDim];
                        MatMul.Twin(xh.ToFloatArray().AsSpan(0, check * inDim), wh.ToFloatArray(), wantH, check, inDim, outDim);
                        return (us, Check.RelativeError(yh.ToFloatArray().AsSpan(0, check * outDim), wantH));
                    }
                    // GemmHalf's mma.sync form explicitly (its Run picks the wgmma one on Hopper), then the wgmma one
                    var f16 = Half(DType.F16, wide: true, async: true);
                    var bf16 = Half(DType.BF16, wide: true, async: true);
                    bool hopper = GemmWgmma.Runs(dev);
                    var wgF16 = hopper ? Half(DType.F16, wgmma: true) : (Us: double.NaN, Err: double.NaN);
                    var wgBf16 = hopper ? Half(DType.BF16, wgmma: true) : (Us: double.NaN, Err: double.NaN);
                    var wgCore = hopper ? Half(DType.F16, wgmma: true, swizzled: false) : (Us: double.NaN, Err: double.NaN);
                    var wgOne = hopper ? Half(DType.F16, wgmma: true, split: 1) : (Us: double.NaN, Err: double.NaN);
                    var narrow = Half(DType.F16, wide: false);
                    var stagedF16 = Half(DType.F16, wide: false, async: false);
                    var stagedBf16 = Half(DType.BF16, wide: false, async: false);
                    Record("gemm", $"{m} rows × {outDim}×{inDim}, f16 x and W", flop / f16.Us / 1e6, "TFLOP/s", "≥ 60% of cuBLAS f16 (tools/oracle/bench_torch_gemm.py)");
                    Record("gemm", $"{m} rows × {outDim}×{inDim}, bf16 x and W", flop / bf16.Us / 1e6, "TFLOP/s", "≥ 60% of cuBLAS bf16 (tools/oracle/bench_torch_gemm.py)");
                    if (hopper)
                    {
                        Record("gemm", $"{m} rows × {outDim}×{inDim}, f16 x and W, wgmma", flop / wgF16.Us / 1e6, "TFLOP/s", "≥ 60% of cuBLAS f16 (tools/oracle/bench_torch_gemm.py)");
                        Record("gemm", $"{m} rows × {outDim}×{inDim}, bf16 x and W, wgmma", flop / wgBf16.Us / 1e6, "TFLOP/s", "≥ 60% of cuBLAS bf16 (tools/oracle/bench_torch_gemm.py)");
                    }
                    Console.WriteLine($"{m,6} {$"{outDim}×{inDim}",-12} {usMma,10:F1} {flop / usMma / 1e6,11:F1} {usFma,10:F1} {flop / usFma / 1e6,11:F1} {usFma / usMma,7:F1} {ErrOf(yMma),9:E1} {ErrOf(yFma),9:E1}"
                                      + $" {f16.Us,9:F1} {flop / f16.Us / 1e6,9:F1} {f16.Err,9:E1} {bf16.Us,9:F1} {flop / bf16.Us / 1e6,9:F1} {bf16.Err,9:E1} {flop / narrow.Us / 1e6,10:F1}"
                                      + $" {flop / stagedF16.Us / 1e6,10:F1} {flop / stagedBf16.Us / 1e6,11:F1} {Math.Max(stagedF16.Err, stagedBf16.Err),10:E1}"
                                      + $" {flop / wgF16.Us / 1e6,9:F1} {flop / wgBf16.Us / 1e6,10:F1} {Math.Max(wgF16.Err, wgBf16.Err),9:E1} {flop / wgCore.Us / 1e6,10:F1} {wgCore.Err,9:E1} {flop / wgOne.Us / 1e6,10:F1}");
                }
            Console.WriteLine("err: ‖y − y_f64‖ / ‖y_f64‖ over the first 4 rows, against the f64 twin (x split into f16 hi + lo for the tensor cores).");
            Console.WriteLine("f16 / bf16: GemmHalf, x and W both rounded to that type (one product a step), y f32; err against the f64 twin of the rounded operands.");
            Console.WriteLine("f16, bf16: GemmHalf's mma.sync form (GemmHalf.Run's pick off Hopper), tiles through a 3-stage cp.async ring (GemmHalf.Async; its PTX's locals made registers) and 4 warps of 64 × 64 (GemmHalf.Wide);");
            Console.WriteLine("wgmma: GemmWgmma, the same operands on Hopper's warpgroup products (wgmma.mma_async m64n64k16), 64-wide steps, tiles in the 128-byte swizzle:");
            Console.WriteLine("GemmHalf.Run's pick on sm_90 (NaN elsewhere), K in as many ranges as GemmWgmma.SplitFor picks; wg 32-wide: GemmWgmma's 32-wide steps, W in core matrices without swizzle, f16;");
            Console.WriteLine("wg 1 range: the wgmma f16 with K whole (no partial sums).");
            Console.WriteLine("64×32: the same in f16 with 8 warps of 64 × 32; staged: 8 warps of 64 × 32, tiles staged through registers (two stages), the default until 2026-12-03.");
            return 0;
        }));
        return cmd;
    }
}
