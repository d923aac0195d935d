using System.CommandLine;
using System.Diagnostics;
using BitDeltaNative.Kernels;
using ILGPU;
using ILGPU.Runtime;

namespace BitDeltaNative;

public static partial class Cli
{
    static void Nop(Index1D i, ArrayView<float> a)
    {
        if (i == 0) a[0] += 1f;
    }

    /// <summary>
    /// The host's cost of a launch, piece by piece (speed issue: a decode step whose host enqueue takes as long as the step
    /// leaves the GPU waiting). Each case runs n calls back to back with no wait and one at the end: host µs a call (until
    /// the last call returns) and wall µs a call (until the GPU is done). Host ≈ wall: the host is what bounds it.
    /// </summary>
    static Command BenchLaunchCommand()
    {
        var n = new Option<int>("--calls") { Description = "calls per case", DefaultValueFactory = _ => 2000 };
        var cmd = new Command("launch", "The host's time per kernel launch, piece by piece: ILGPU's launcher, our tensor checks, the pool, a few kernels' Run.");
        cmd.Options.Add(n);
        cmd.Options.Add(DeviceOption);
        cmd.SetAction(r => Guard(() =>
        {
            var name = r.GetValue(DeviceOption)!;
            var dev = Device.Parse(name == "auto" && !Device.CudaAvailable ? "ilgpu-cpu" : name);
            if (!dev.IsIlgpu) throw new BitDeltaException("bench launch: needs an ILGPU device (cuda or ilgpu-cpu)");
            int calls = r.GetValue(n);
            if (calls < 1) throw new BitDeltaException("--calls: at least 1");
            Console.WriteLine($"bench launch on {dev}, {DateTime.UtcNow:yyyy-MM-dd}: {calls} calls a case, one wait at the end");
            Console.WriteLine($"{"case",-48} {"host µs",8} {"wall µs",8}");
            void Case(string what, Action call)
            {
                call();
                dev.Synchronize();
                var sw = Stopwatch.StartNew();
                for (int i = 0; i < calls; i++) call();
                double host = sw.Elapsed.TotalMilliseconds * 1e3 / calls;
                dev.Synchronize();
                double wall = sw.Elapsed.TotalMilliseconds * 1e3 / calls;
                Console.WriteLine($"{what,-48} {host,8:F2} {wall,8:F2}");
                Record("launch", $"{what}: host µs a call", host, "µs");
            }
            using var a = Tensor.Empty([4096], DType.F32, dev);
            RandomFill.Run(a, 1, 1f);
            var view = a.View<float>();
            var nop = dev.Kernel<Action<Index1D, ArrayView<float>>>(Nop);
            Case("nop kernel, launcher held", () => nop(1, view));
            Case("nop kernel, launcher looked up each call", () => dev.Kernel<Action<Index1D, ArrayView<float>>>(Nop)(1, a.View<float>()));
            Case("Tensor.Empty [1, 4096] + Dispose (pool)", () => Tensor.Empty([1, 4096], DType.F32, dev).Dispose());
            using var x = Tensor.Empty([1, 4096], DType.F32, dev);
            using var y = Tensor.Empty([1, 4096], DType.F32, dev);
            using var w = Tensor.Empty([4096], DType.F16, dev);
            RandomFill.Run(x, 2, 1f);
            RandomFill.Run(w, 3, 1f);
            Case("RmsNorm.Run 1 × 4096", () => RmsNorm.Run(x, w, y, 1e-5f));
            using var g = Tensor.Empty([1, 11008], DType.F32, dev);
            using var u = Tensor.Empty([1, 11008], DType.F32, dev);
            RandomFill.Run(g, 4, 1f);
            RandomFill.Run(u, 5, 1f);
            Case("SwiGlu.Run 1 × 11008", () => SwiGlu.Run(g, u, g));
            foreach (int T in new[] { 1, 8 })
            {
                using var tw = Tensor.Empty([256, 4096], DType.F16, dev);
                using var ts = Tensor.Empty([T, 256, 4096], DType.Sign1, dev);
                using var ta = Tensor.Empty([T], DType.F32, dev);
                using var tx = Tensor.Empty([T, 4096], DType.F32, dev);
                using var ty = Tensor.Empty([T, 256], DType.F32, dev);
                RandomFill.Run(tw, 6, 0.05f);
                RandomFill.Run(ts, 7);
                RandomFill.Run(ta, 8, 0.01f);
                RandomFill.Run(tx, 9, 1f);
                using var rows = new TenantRows(Enumerable.Range(0, T).ToArray(), dev);
                Case($"TenantLinear.Run {T} tenant(s) × 1 row, 256 × 4096", () => TenantLinear.Run(tx, tw, ts, ta, rows, ty));
            }
            Case("Device.Synchronize", dev.Synchronize);
            return 0;
        }));
        return cmd;
    }
}
