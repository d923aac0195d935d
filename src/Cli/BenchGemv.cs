using System.CommandLine;
using System.Diagnostics;
using BitDeltaNative.Kernels;
using ILGPU;
using ILGPU.Runtime;
using ILGPU.Runtime.Cuda;

namespace BitDeltaNative;

public static partial class Cli
{
    /// <summary>Llama-2-7B's linear shapes (out × in): q/k/v/o, gate/up, down.</summary>
    static readonly (int Out, int In)[] GemvShapes = [(4096, 4096), (11008, 4096), (4096, 11008)];

    /// <summary>
    /// Decode GEMV against the memory bandwidth it should approach (DESIGN.md: a step reads 13.5 GB of
    /// fp16 weights, so the GEMV's GB/s is the decode speed). Each timed sample is a run of launches
    /// between two synchronisations, so launch latency overlaps with the previous kernel as it does in
    /// a decode step; the sample median is reported. Weights rotate among buffers that together exceed
    /// the L2 twice over, so every call reads W from DRAM.
    /// </summary>
    static Command BenchGemvCommand()
    {
        var dtype = new Option<string>("--dtype") { Description = "weight dtype: f16 or bf16", DefaultValueFactory = _ => "f16" };
        var rows = new Option<int>("--rows") { Description = $"rows of x (decode batch), 1 to {MatMul.GemvMaxRows}", DefaultValueFactory = _ => 1 };
        var iters = new Option<int?>("--iters") { Description = "timed samples per shape (default 100 on CUDA, 3 on ilgpu-cpu)" };
        var launches = new Option<int?>("--launches") { Description = "launches per timed sample (default 20 on CUDA, 1 on ilgpu-cpu)" };
        var shapes = new Option<string?>("--shapes") { Description = "shapes out×in, comma-separated (default: Llama-2-7B's 4096x4096,11008x4096,4096x11008)" };
        var noPdl = new Option<bool>("--no-pdl") { Description = "launch GemvOne the plain way, not as dependent launches that overlap the launch ahead (DependentLaunch.cs), to compare" };
        var cmd = new Command("gemv", "Time the decode GEMV (y = x·Wᵀ, few rows) at Llama-2-7B shapes and compare its bandwidth with a device-to-device copy.");
        cmd.Options.Add(DeviceOption);
        cmd.Options.Add(dtype);
        cmd.Options.Add(rows);
        cmd.Options.Add(iters);
        cmd.Options.Add(launches);
        cmd.Options.Add(shapes);
        cmd.Options.Add(noPdl);
        cmd.SetAction(r => Guard(() =>
        {
            if (r.GetValue(noPdl)) DependentLaunch.Use = false;
            var name = r.GetValue(DeviceOption)!;
            var dev = Device.Parse(name == "auto" && !Device.CudaAvailable ? "ilgpu-cpu" : name);
            if (!dev.IsIlgpu) throw new BitDeltaException("--device cpu: the benchmark times GPU kernels; use cuda, or ilgpu-cpu to run them on ILGPU's CPU accelerator");
            RecordTo(r, dev);
            var dt = r.GetValue(dtype)!.ToLowerInvariant() switch
            {
                "f16" => DType.F16,
                "bf16" => DType.BF16,
                var s => throw new BitDeltaException($"--dtype: expected f16 or bf16, got '{s}'"),
            };
            int nRows = r.GetValue(rows);
            if (nRows < 1 || nRows > MatMul.GemvMaxRows) throw new BitDeltaException($"--rows: expected 1 to {MatMul.GemvMaxRows}, got {nRows}");
            bool cuda = dev.Kind == DeviceKind.Cuda;
            int samples = r.GetValue(iters) ?? (cuda ? 100 : 3);
            int perSample = r.GetValue(launches) ?? (cuda ? 20 : 1);
            if (samples < 1 || perSample < 1) throw new BitDeltaException("--iters and --launches must be at least 1");
            var list = ParseShapes(r.GetValue(shapes)) ?? GemvShapes;
            long l2 = dev.Accelerator is CudaAccelerator ca ? ca.L2CacheSize : 50L << 20;   // H100: 50 MB

            Console.WriteLine($"bench gemv on {dev}: {dt} weights, {nRows} row(s) of x, median of {samples} samples of {perSample} launches; L2 {l2 >> 20} MiB");
            if (!cuda) Console.WriteLine("(ILGPU's CPU accelerator: these numbers only show that the benchmark runs)");
            Console.WriteLine($"{"out×in",-12} {"buffers",7} {"µs/call",9} {"GB/s",8} {"copy µs",9} {"copy GB/s",9} {"memcpy GB/s",11} {"gemv/copy",9} {"gemv/memcpy",11}");
            foreach (var (outDim, inDim) in list)
            {
                long wBytes = dt.ByteCount([outDim, inDim]);
                // At least 3 buffers, and together at least twice the L2, so no call finds W cached
                // (capped for tiny shapes given with --shapes).
                int nBuf = (int)Math.Clamp((2 * l2 + wBytes - 1) / wBytes, 3, 1024);
                var rng = new Random(outDim * 31 + inDim);
                var ws = new Tensor[nBuf];
                ws[0] = Tensor.From(Check.Values(rng, (long)outDim * inDim), [outDim, inDim], dev, dt);
                for (int i = 1; i < nBuf; i++)
                {
                    ws[i] = Tensor.Empty([outDim, inDim], dt, dev);
                    ws[i].CopyFrom(ws[0]);
                }
                using var x = Tensor.From(Check.Values(rng, (long)nRows * inDim), [nRows, inDim], dev);
                using var y = Tensor.Empty([nRows, outDim], DType.F32, dev);
                using var dst = Tensor.Empty([outDim, inDim], dt, dev);
                if (!MatMul.VectorPath(x, ws[0], inDim)) Console.WriteLine($"  note: {outDim}×{inDim} takes the plain (2-byte load) path");

                int next = 0;
                int warm = cuda ? 3 : 1;
                double gemv = Median(dev, warm, samples, perSample, () => MatMul.Gemv(x, ws[next++ % nBuf], y));
                var copy = dev.Kernel<Action<Index1D, ArrayView<MatMul.Vec16>, ArrayView<MatMul.Vec16>>>(Copy16Kernel);
                int units = (int)(wBytes / 16);
                double copyKernel = Median(dev, warm, samples, perSample, () => copy(units, ws[next++ % nBuf].View<MatMul.Vec16>(), dst.View<MatMul.Vec16>()));
                double memcpy = Median(dev, warm, samples, perSample, () => dst.CopyFrom(ws[next++ % nBuf]));
                if (nRows <= 2 && dt == DType.F16 && cuda) FewRowForms(dev, ws, x, y, nRows, warm, samples, perSample, 2.0 * wBytes / copyKernel / 1e3);
                foreach (var w in ws) w.Dispose();

                double gemvBytes = wBytes + 4.0 * nRows * inDim + 4.0 * nRows * outDim;
                double gbGemv = gemvBytes / gemv / 1e3, gbCopy = 2.0 * wBytes / copyKernel / 1e3, gbMemcpy = 2.0 * wBytes / memcpy / 1e3;
                Record("gemv", $"{outDim}×{inDim}, {nRows} row(s), {dt}: of copy", gbGemv / gbCopy, "fraction");
                Console.WriteLine($"{$"{outDim}×{inDim}",-12} {nBuf,7} {gemv,9:F1} {gbGemv,8:F0} {copyKernel,9:F1} {gbCopy,9:F0} {gbMemcpy,11:F0} {gbGemv / gbCopy,9:F2} {gbGemv / gbMemcpy,11:F2}");
            }
            Console.WriteLine("GB/s counts W + x + y for the GEMV and bytes read + written for the copies (a copy of W's size: 16-byte copy kernel, and the driver's memcpy).");
            return 0;
        }));
        return cmd;
    }

    /// <summary>1 or 2 rows, the forms a decode linear can take (bench/NOTES.md): GemvOne (one row) or its few-row form
    /// without and with a tenant a row (each its own), and the tenant linear's streamed form without and with them
    /// (GemvOne off), each over the same rotating W.</summary>
    static void FewRowForms(Device dev, Tensor[] ws, Tensor x, Tensor y, int rows, int warm, int samples, int perSample, double copyGbs)
    {
        int outDim = ws[0].Dim(0), inDim = ws[0].Dim(1), nBuf = ws.Length, next = 0;
        var rng = new Random(7);
        using var signs = Tensor.From(Check.Signs(rng, rows * outDim, inDim), [rows, outDim, inDim], dev);
        using var scales = Tensor.From(Enumerable.Range(1, rows).Select(i => 0.01f * i).ToArray(), [rows], dev);
        using var none = TenantRows.All(rows, -1, dev);
        using var own = new TenantRows(Enumerable.Range(0, rows).ToArray(), dev);
        double bitsBytes = signs.ByteLength;
        void Line(string form, double us, double bytes)
        {
            double gb = (ws[0].ByteLength + bytes + 4.0 * rows * (inDim + outDim)) / us / 1e3;
            Record("gemv", $"{outDim}×{inDim}, {rows} row(s), {form}: of copy", gb / copyGbs, "fraction");
            Console.WriteLine($"  {form,-22} {us,9:F1} µs {gb,8:F0} GB/s {gb / copyGbs,6:F2} of copy");
        }
        bool was = GemvOne.Use;
        try
        {
            // the kernels called directly: the tenant linear sends two rows with tenants to the streamed form, where this lost
            GemvOne.Use = true;
            Line("gemv one", Median(dev, warm, samples, perSample, () =>
            {
                if (rows == 1) GemvOne.Run(x, ws[next++ % nBuf], null, null, -1, y, false);
                else GemvOne.RunFew(x, ws[next++ % nBuf], null, null, null, y, false);
            }), 0);
            Line("gemv one + tenants", Median(dev, warm, samples, perSample, () =>
            {
                if (rows == 1) GemvOne.Run(x, ws[next++ % nBuf], signs, scales, 0, y, false);
                else GemvOne.RunFew(x, ws[next++ % nBuf], signs, scales, own.DeviceSlots, y, false);
            }), bitsBytes);
            GemvOne.Use = false;
            Line("streamed", Median(dev, warm, samples, perSample, () => TenantLinear.Run(x, ws[next++ % nBuf], signs, scales, none, y)), 0);
            Line("streamed + tenants", Median(dev, warm, samples, perSample, () => TenantLinear.Run(x, ws[next++ % nBuf], signs, scales, own, y)), bitsBytes);
        }
        finally { GemvOne.Use = was; }
    }

    /// <summary>The reference: one thread per 16 bytes, 16-byte loads and stores, the simplest copy
    /// that should run at the device's streaming bandwidth.</summary>
    static void Copy16Kernel(Index1D i, ArrayView<MatMul.Vec16> src, ArrayView<MatMul.Vec16> dst) =>
        dst.AsAligned(16)[i] = src.AsAligned(16)[i];

    /// <summary>Median over <paramref name="samples"/> of the time per launch in µs, after
    /// <paramref name="warm"/> warm-up samples (the first compiles the kernel).</summary>
    static double Median(Device dev, int warm, int samples, int perSample, Action launch)
    {
        var times = new double[samples];
        var sw = new Stopwatch();
        for (int s = -warm; s < samples; s++)
        {
            dev.Synchronize();
            sw.Restart();
            for (int l = 0; l < perSample; l++) launch();
            dev.Synchronize();
            if (s >= 0) times[s] = sw.Elapsed.TotalMicroseconds / perSample;
        }
        Array.Sort(times);
        return samples % 2 == 1 ? times[samples / 2] : (times[samples / 2 - 1] + times[samples / 2]) / 2;
    }

    static (int, int)[]? ParseShapes(string? s)
    {
        if (string.IsNullOrWhiteSpace(s)) return null;
        return s.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries).Select(p =>
        {
            var d = p.Split('x', '×');
            if (d.Length != 2 || !int.TryParse(d[0], out int o) || !int.TryParse(d[1], out int i) || o < 1 || i < 1)
                throw new BitDeltaException($"--shapes: expected out×in like 4096x11008, got '{p}'");
            return (o, i);
        }).ToArray();
    }
}
