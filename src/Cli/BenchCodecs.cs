using System.Diagnostics;
using System.CommandLine;
using BitDeltaNative.Kernels;
using ILGPU;
using ILGPU.Runtime;
using ILGPU.Runtime.Cuda;

namespace BitDeltaNative;

public static partial class Cli
{
    /// <summary>
    /// The codecs' delta kernels alone at Llama-2-7B's linear shapes (codecs issue: "speed of each kernel against the
    /// bytes it reads"): lowrank-mp (ranks as compress allocates them at 1 bit a weight: shrink and expand launches) and
    /// sparse-lowbit at 2 and 4 bits, for decode rows; µs per call and GB/s of the factors (+ x, y) against a 16-byte copy
    /// in the same run. Factors rotate among buffers over twice the L2, so every call reads them from DRAM.
    /// </summary>
    static Command BenchCodecsCommand()
    {
        var rows = new Option<string>("--rows") { Description = "rows of x, comma-separated", DefaultValueFactory = _ => "1,8" };
        var tenants = new Option<string>("--tenants")
        {
            Description = "tenants of one row each for the many-tenant lines (one launch for up to 8 of them, against a launch per tenant), comma-separated",
            DefaultValueFactory = _ => "1,8,32",
        };
        var iters = new Option<int?>("--iters") { Description = "timed samples per case (default 30 on CUDA, 1 elsewhere)" };
        var cmd = new Command("codecs", "Time the lowrank-mp and sparse-lowbit delta kernels at Llama-2-7B shapes against the bytes they read.");
        foreach (var o in new Option[] { rows, tenants, iters, DeviceOption }) cmd.Options.Add(o);
        cmd.SetAction(r => Guard(() =>
        {
            var name = r.GetValue(DeviceOption)!;
            var dev = Device.Parse(name == "auto" && !Device.CudaAvailable ? "ilgpu-cpu" : name);
            if (!dev.IsIlgpu) throw new BitDeltaException("--device cpu: the benchmark times GPU kernels; use cuda, or ilgpu-cpu to run them on ILGPU's CPU accelerator");
            RecordTo(r, dev);
            bool cuda = dev.Kind == DeviceKind.Cuda;
            var rs = IntList("--rows", r.GetValue(rows), 1, 64, "1 to 64");
            var ts = IntList("--tenants", r.GetValue(tenants), 1, 64, "1 to 64");
            var many = new List<string>();
            int samples = r.GetValue(iters) ?? (cuda ? 30 : 1), warm = cuda ? 3 : 1, perSample = cuda ? 10 : 1;
            long l2 = dev.Accelerator is CudaAccelerator ca ? ca.L2CacheSize : 50L << 20;
            var shapes = cuda ? GemvShapes : [(256, 256)];
            Console.WriteLine($"bench codecs on {dev}, {DateTime.UtcNow:yyyy-MM-dd}; median of {samples} samples of {perSample} launches");
            if (!cuda) Console.WriteLine("(not CUDA: these numbers only show that the benchmark runs)");
            Console.WriteLine($"{"out×in",-12} {"codec",-22} {"rows",4} {"MB",6} {"µs",8} {"GB/s",6} {"/copy",6} {"host µs",8}");
            var rng = new Random(1);
            foreach (var (outDim, inDim) in shapes)
            {
                double copyGb = CopyRate(dev, outDim, inDim, warm, samples, perSample, l2);
                var ranks = Models.Codecs.LowRankMp.Ranks(outDim, inDim, Models.Codecs.LowRankMp.DefaultBits, Models.Codecs.LowRankMp.DefaultFixedRanks, 128);
                // Many: tenant i's factors on row i of x, all in one call (the many-tenant form).
                var kinds = new (string Name, Func<IDisposable> Make, Action<Tensor, IDisposable, Tensor> Run, Action<Tensor, IDisposable[], Tensor> Many,
                                 Func<IDisposable, long> Bytes)[]
                {
                    ($"lowrank-mp r{ranks.Sum()}", () => LowRankFactors.Random(rng, dev, ranks, Models.Codecs.LowRankMp.DefaultBits, 128, outDim, inDim),
                        (x, f, y) => LowRankLinear.Run(x, (LowRankFactors)f, y),
                        (x, fs, y) => LowRankLinear.Run(x, fs.Select((f, i) => (i, 1, (LowRankFactors)f)).ToList(), y), f => ((LowRankFactors)f).ByteLength),
                    ("sparse-lowbit 2-bit", () => SparseFactors.Random(rng, dev, 2, 128, outDim, inDim), (x, f, y) => SparseLinear.Run(x, (SparseFactors)f, y),
                        (x, fs, y) => SparseLinear.Run(x, fs.Select((f, i) => (i, 1, (SparseFactors)f)).ToList(), y), f => ((SparseFactors)f).ByteLength),
                    ("sparse-lowbit 4-bit", () => SparseFactors.Random(rng, dev, 4, 128, outDim, inDim), (x, f, y) => SparseLinear.Run(x, (SparseFactors)f, y),
                        (x, fs, y) => SparseLinear.Run(x, fs.Select((f, i) => (i, 1, (SparseFactors)f)).ToList(), y), f => ((SparseFactors)f).ByteLength),
                };
                foreach (var (kind, make, run, runMany, bytesOf) in kinds)
                {
                    var first = make();
                    long bytes = bytesOf(first);
                    int nBuf = (int)Math.Clamp((2 * l2 + bytes - 1) / Math.Max(1, bytes), Math.Max(2, ts.Max()), cuda ? 256 : Math.Max(2, ts.Max()));
                    var bufs = new List<IDisposable> { first };
                    for (int i = 1; i < nBuf; i++) bufs.Add(make());
                    foreach (int n in rs)
                    {
                        using var x = Tensor.From(Check.Values(rng, (long)n * inDim), [n, inDim], dev);
                        using var y = Tensor.From(Check.Values(rng, (long)n * outDim), [n, outDim], dev);
                        int next = 0;
                        double us = Median(dev, warm, samples, perSample, () => run(x, bufs[next++ % nBuf], y));
                        double host = HostMedian(dev, samples, perSample, () => run(x, bufs[next++ % nBuf], y));
                        double gb = (bytes + 4.0 * n * (inDim + 2 * outDim)) / us / 1e3;
                        if (n == 1) Record("codecs", $"{kind}, {outDim}×{inDim}, one row: of copy", gb / copyGb, "fraction");
                        Console.WriteLine($"{$"{outDim}×{inDim}",-12} {kind,-22} {n,4} {bytes / 1e6,6:F2} {us,8:F1} {gb,6:F0} {gb / copyGb,6:F2} {host,8:F1}");
                    }
                    foreach (int t in ts)
                    {
                        // T tenants of one row each: the factor sets rotate over the buffers, T at a time.
                        using var x = Tensor.From(Check.Values(rng, (long)t * inDim), [t, inDim], dev);
                        using var y = Tensor.From(Check.Values(rng, (long)t * outDim), [t, outDim], dev);
                        var rowsX = Enumerable.Range(0, t).Select(i => x.Slice(i, 1)).ToArray();
                        var rowsY = Enumerable.Range(0, t).Select(i => y.Slice(i, 1)).ToArray();
                        int next = 0;
                        IDisposable[] Take() => Enumerable.Range(0, t).Select(_ => bufs[next++ % nBuf]).ToArray();
                        double together = Median(dev, warm, samples, perSample, () => runMany(x, Take(), y));
                        double apart = Median(dev, warm, samples, perSample, () =>
                        {
                            var fs = Take();
                            for (int i = 0; i < t; i++) run(rowsX[i], fs[i], rowsY[i]);
                        });
                        foreach (var v in rowsX.Concat(rowsY)) v.Dispose();
                        double gb = t * (bytes + 4.0 * (inDim + 2 * outDim)) / together / 1e3;
                        Record("codecs", $"{kind}, {outDim}×{inDim}, {t} tenants × 1 row in one call", together, "µs");
                        many.Add($"{$"{outDim}×{inDim}",-12} {kind,-22} {t,7} {t * bytes / 1e6,7:F1} {together,9:F1} {apart,9:F1} {gb,6:F0} {gb / copyGb,6:F2}");
                    }
                    foreach (var b in bufs) b.Dispose();
                }
                Console.WriteLine($"  copy of W's size: {copyGb:F0} GB/s");
            }
            if (many.Count > 0)
            {
                Console.WriteLine();
                Console.WriteLine("Many tenants, one row each: one call of the many-tenant form (a launch, or a shrink and expand pair, per 8 tenants) against a call per tenant");
                Console.WriteLine($"{"out×in",-12} {"codec",-22} {"tenants",7} {"MB",7} {"µs",9} {"µs apart",9} {"GB/s",6} {"/copy",6}");
                foreach (var line in many) Console.WriteLine(line);
            }
            Console.WriteLine("GB/s: (factors + x + y read + y written) / time; /copy: against a 16-byte copy kernel over W's bytes in the same run;");
            Console.WriteLine("host µs: the host's own time to issue one call (timed without waiting for the GPU); where it is near µs, the host sets the pace.");
            return 0;
        }));
        return cmd;
    }

    /// <summary>Median host time to issue one call, each sample's calls timed up to their last issue (the GPU queue emptied
    /// between samples, and deep enough for 10 calls).</summary>
    static double HostMedian(Device dev, int samples, int perSample, Action launch)
    {
        var times = new double[samples];
        var sw = new Stopwatch();
        for (int s = 0; s < samples; s++)
        {
            dev.Synchronize();
            sw.Restart();
            for (int l = 0; l < perSample; l++) launch();
            times[s] = sw.Elapsed.TotalMicroseconds / perSample;
        }
        dev.Synchronize();
        Array.Sort(times);
        return times[samples / 2];
    }

    /// <summary>A 16-byte copy kernel's GB/s (bytes read + written) over buffers of an f16 [out, in] matrix's size.</summary>
    static double CopyRate(Device dev, int outDim, int inDim, int warm, int samples, int perSample, long l2)
    {
        long wBytes = DType.F16.ByteCount([outDim, inDim]);
        int nBuf = (int)Math.Clamp((2 * l2 + wBytes - 1) / wBytes, 3, 64);
        var src = Enumerable.Range(0, nBuf).Select(_ => Tensor.Empty([outDim, inDim], DType.F16, dev)).ToList();
        using var dst = Tensor.Empty([outDim, inDim], DType.F16, dev);
        var copy = dev.Kernel<Action<Index1D, ArrayView<MatMul.Vec16>, ArrayView<MatMul.Vec16>>>(Copy16Kernel);
        int next = 0;
        double us = Median(dev, warm, samples, perSample, () => copy((int)(wBytes / 16), src[next++ % nBuf].View<MatMul.Vec16>(), dst.View<MatMul.Vec16>()));
        foreach (var t in src) t.Dispose();
        return 2.0 * wBytes / us / 1e3;
    }
}
