using BitDeltaNative.Kernels;


namespace BitDeltaNative;

/// <summary>`bench multitenant --timeline`: where one streamed call's time goes, block by block. Nsight Compute gives a
/// kernel's time and its counters over the whole grid; the streamed form's grid holds four kinds of blocks that wait on
/// each other (TenantLinearStream.cs), and what sets its end (preparation, W's reads, the tenant rows, the finishing
/// sums, a second wave) only shows in when each block ran. Each block stamps the GPU's %globaltimer
/// (<see cref="TenantLinear.TraceStream"/>).</summary>
public static partial class Cli
{
    static readonly string[] TraceKinds = ["x split", "planes", "base", "tenant row"];

    static void Timeline(Device dev, int[] ts, int calls, (int, int)[]? given)
    {
        long l2 = dev.Accelerator is ILGPU.Runtime.Cuda.CudaAccelerator ca ? ca.L2CacheSize : 50L << 20;
        var shapes = given ?? (dev.Kind == DeviceKind.Cuda ? GemvShapes : [(256, 256)]);
        foreach (var (outDim, inDim) in shapes)
            foreach (int T in ts.Distinct())
            {
                long wBytes = DType.F16.ByteCount([outDim, inDim]), sBytes = DType.Sign1.ByteCount([T, outDim, inDim]);
                int nBuf = dev.Kind == DeviceKind.Cuda ? (int)Math.Clamp((2 * l2 + wBytes + sBytes - 1) / (wBytes + sBytes), 3, 64) : 1;
                var (ws, ss) = RotatingWeights(dev, outDim, inDim, T, nBuf);
                var rng = new Random(outDim + inDim);
                using var scales = Tensor.From(Enumerable.Range(0, T).Select(i => 1e-3f * (i + 1)).ToArray(), [T], dev);
                using var tenants = new TenantRows(Enumerable.Range(0, T).ToArray(), dev);
                using var x = Tensor.From(Check.Values(rng, (long)T * inDim), [T, inDim], dev);
                using var y = Tensor.Empty([T, outDim], DType.F32, dev);
                // warm (kernels compiled, buffers pooled), then traced calls one by one; the median call's span is shown
                for (int i = 0; i < 2 * nBuf; i++) TenantLinear.Run(x, ws[i % nBuf], ss[i % nBuf], scales, tenants, y);
                var traces = new List<(long[] Blocks, int PrepSplit, int PrepBits, int Base, int Rows)>();
                TenantLinear.TraceStream = true;
                try
                {
                    for (int i = 0; i < calls; i++)
                    {
                        TenantLinear.LastStreamTrace = null;
                        TenantLinear.Run(x, ws[i % nBuf], ss[i % nBuf], scales, tenants, y);
                        if (TenantLinear.LastStreamTrace is { } t) traces.Add(t);
                    }
                }
                finally
                {
                    TenantLinear.TraceStream = false;
                }
                foreach (var t in ws) t.Dispose();
                foreach (var t in ss) t.Dispose();
                if (traces.Count == 0)
                {
                    Console.WriteLine($"\ntimeline {outDim}×{inDim}, {T} tenant(s): not the streamed form (nothing to trace)");
                    continue;
                }
                var pick = traces.OrderBy(Span).ElementAt(traces.Count / 2);
                PrintTimeline(pick, $"{outDim}×{inDim}, {T} tenant(s) of one row, {wBytes / 1e6:F1} MB of W + {sBytes / 1e6:F1} MB of signs",
                    traces.Select(Span).Order().ToArray(), wBytes);
            }
    }

    static string[] KindCounts((long[] Blocks, int PrepSplit, int PrepBits, int Base, int Rows) t) =>
        [$"{t.PrepSplit} {TraceKinds[0]}", $"{t.PrepBits} {TraceKinds[1]}", $"{t.Base} {TraceKinds[2]}", $"{t.Rows} {TraceKinds[3]}"];

    static double Span((long[] Blocks, int, int, int, int) t)
    {
        long lo = long.MaxValue, hi = long.MinValue;
        for (int b = 0; b < t.Blocks.Length / TenantLinear.TraceLongs; b++)
        {
            lo = Math.Min(lo, t.Blocks[b * TenantLinear.TraceLongs]);
            hi = Math.Max(hi, t.Blocks[b * TenantLinear.TraceLongs + 4]);
        }
        return (hi - lo) / 1e3;
    }

    static void PrintTimeline((long[] Blocks, int PrepSplit, int PrepBits, int Base, int Rows) t, string what, double[] spans, long wBytes)
    {
        const int L = TenantLinear.TraceLongs;
        int n = t.Blocks.Length / L;
        long t0 = long.MaxValue;
        for (int b = 0; b < n; b++) t0 = Math.Min(t0, t.Blocks[b * L]);
        double At(int b, int k) => t.Blocks[b * L + k] == 0 ? double.NaN : (t.Blocks[b * L + k] - t0) / 1e3;
        // the timer's step: the smallest nonzero gap between stamps
        var stamps = t.Blocks.Where((v, i) => i % L < 5 && v != 0).Distinct().Order().ToArray();
        long step = Enumerable.Range(1, Math.Max(0, stamps.Length - 1)).Select(i => stamps[i] - stamps[i - 1]).DefaultIfEmpty(0).Min();
        int sms = t.Blocks.Where((v, i) => i % L == 5).Distinct().Count();
        if (step == 0)
        {
            Console.WriteLine($"\ntimeline {what}: {n} blocks ({string.Join(", ", KindCounts(t))}); this device has no timer, so no times");
            return;
        }
        Console.WriteLine($"\ntimeline {what}: {n} blocks on {sms} multiprocessors; span {Span(t):F1} µs (of {spans.Length} calls: {spans[0]:F1}–{spans[^1]:F1}); timer step {step} ns");
        Console.WriteLine($"  {"kind",-10} {"blocks",6} {"start: first",12} {"median",7} {"last",6} {"waited to",10} {"products: first",15} {"median",7} {"last",6} {"arrived: last",13} {"end: last",9} {"finishing",9}");
        int[] counts = [t.PrepSplit, t.PrepBits, t.Base, t.Rows];
        int from = 0;
        for (int k = 0; k < 4; k++)
        {
            var ids = Enumerable.Range(from, counts[k]).ToArray();
            from += counts[k];
            if (ids.Length == 0) continue;
            double[] Col(int f) => ids.Select(b => At(b, f)).Where(v => !double.IsNaN(v)).Order().ToArray();
            string S(double[] v, int q) => v.Length == 0 ? "–" : (q < 0 ? v[0] : q > 0 ? v[^1] : v[v.Length / 2]).ToString("F1");
            var start = Col(0); var wait = Col(1); var prod = Col(2); var arrived = Col(3); var end = Col(4);
            int finishing = ids.Count(b => t.Blocks[b * L + 6] >= 4);
            Console.WriteLine($"  {TraceKinds[k],-10} {ids.Length,6} {S(start, -1),12} {S(start, 0),7} {S(start, 1),6} {S(wait, 1),10} {S(prod, -1),15} {S(prod, 0),7} {S(prod, 1),6} {S(arrived, 1),13} {S(end, 1),9} {finishing,9}");
        }
        // the base blocks' own read rate: W's bytes over the time from their first start to their last products
        var baseIds = Enumerable.Range(t.PrepSplit + t.PrepBits, t.Base).ToArray();
        if (baseIds.Length > 0)
        {
            double first = baseIds.Min(b => At(b, 0)), lastProducts = baseIds.Max(b => At(b, 2));
            Console.WriteLine($"  W read by the base blocks at {wBytes / (lastProducts - first) / 1e3:F0} GB/s between their first start and their last products");
        }
        // blocks running per µs, by kind: where the grid runs short of blocks
        int width = (int)Math.Ceiling(Span(t));
        for (int k = 0, lo = 0; k < 4; lo += counts[k], k++)
        {
            if (counts[k] == 0) continue;
            var line = new int[width + 1];
            for (int b = lo; b < lo + counts[k]; b++)
            {
                double s = At(b, 0), e = At(b, 4);
                for (int u = (int)Math.Floor(s); u <= Math.Min(width, (int)Math.Floor(e)); u++) line[u]++;
            }
            Console.WriteLine($"  running {TraceKinds[k],-10} per µs: {string.Join(' ', line)}");
        }
    }
}
