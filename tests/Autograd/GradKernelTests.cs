using BitDeltaNative.Autograd;
using BitDeltaNative.Kernels;
using FsCheck;
using FsCheck.Fluent;
using Check = BitDeltaNative.Kernels.Check;

namespace BitDeltaNative.Tests.Autograd;

/// <summary>
/// Every backward op on tensors against its twin (the cases of <see cref="GradAudit"/>, the ones `bitdelta audit`
/// runs): on every ILGPU test device, i.e. the CUDA backward against the CPU spec where a GPU is present, and on
/// <see cref="Device.Cpu"/>, whose host paths the CPU demo trains with. FsCheck properties over the seed that draws
/// shape and values, as <see cref="Kernels.KernelTests"/>.
/// </summary>
[Collection(IlgpuCpuCollection.Name)]
public class GradKernelTests
{
    public static TheoryData<string> Cases
    {
        get
        {
            var d = new TheoryData<string>();
            foreach (var c in GradAudit.Cases) d.Add(c.Kernel);
            return d;
        }
    }

    /// <summary>Random cases per op per device: ILGPU's CPU accelerator is slow (a case of the attention or the
    /// BitDelta linear backward takes 1–2 s there on two cores), CUDA and the host paths are not.</summary>
    static int Count(Device dev) => dev.Kind == DeviceKind.IlgpuCpu ? 10 : 100;

    static void Holds(AuditCase c, Device dev)
    {
        Prop.ForAll(ArbMap.Default.ArbFor<int>(), seed =>
        {
            var (err, shape) = c.Run(dev, new Random(seed));
            return (err <= c.Bound).Label($"{c.Kernel} on {dev}: seed {seed}, shape {shape}, relative error {err:E3} > {c.Bound:E1}");
        }).Check(Config.QuickThrowOnFailure.WithMaxTest(Count(dev)));
    }

    [Theory]
    [MemberData(nameof(Cases))]
    public void Backward_kernel_matches_its_twin(string op)
    {
        var c = GradAudit.Cases.Single(a => a.Kernel == op);
        foreach (var dev in TestDevices.All) Holds(c, dev);
    }

    [Theory]
    [MemberData(nameof(Cases))]
    public void Backward_host_path_matches_its_twin(string op) => Holds(GradAudit.Cases.Single(a => a.Kernel == op), Device.Cpu);

    /// <summary>The building blocks the backward composes, on the host paths (the kernel tests cover them on ILGPU).</summary>
    [Theory]
    [InlineData("transpose")]
    [InlineData("bitlinear signs-t")]
    [InlineData("axpy")]
    [InlineData("dot")]
    public void Building_block_host_path_matches_its_twin(string op) => Holds(Audit.All.Single(a => a.Kernel == op), Device.Cpu);

    /// <summary>Sizes past the host paths' serial thresholds, so their Parallel.For branches run.</summary>
    [Fact]
    public void Host_paths_split_over_cores_match_their_twins()
    {
        var rng = new Random(7);
        foreach (var dt in new[] { DType.F16, DType.BF16, DType.F32 })
        {
            int a = 301, b = 517;
            var w = Check.Rounded(Check.Values(rng, a * b), dt);
            using var tw = Tensor.From(w, [a, b], Device.Cpu, dt);
            using var tt = Check.Poisoned([b, a], DType.F32, Device.Cpu);
            Transpose.Run(tw, tt);
            var want = new float[w.Length];
            Transpose.Twin(w, want, a, b);
            Assert.Equal(want, tt.ToFloatArray());
        }

        int outDim = 129, inDim = 1000, words = DTypes.SignWordsPerRow(inDim);
        var signs = new uint[outDim * words];
        for (int i = 0; i < signs.Length; i++) signs[i] = (uint)rng.NextInt64(0, 1L << 32);
        using var ts = Tensor.From(signs, [outDim, inDim], Device.Cpu);
        using var tst = Check.Poisoned([inDim, outDim], DType.F32, Device.Cpu);
        BitLinear.SignsT(ts, inDim, tst);
        var st = new float[inDim * outDim];
        BitLinear.SignsTTwin(signs, st, outDim, inDim);
        Assert.Equal(st, tst.ToFloatArray());

        int n = 300_001;
        var x = Check.Values(rng, n);
        var y = Check.Values(rng, n);
        using var tx = Tensor.From(x, [n], Device.Cpu);
        using var ty = Tensor.From(y, [n], Device.Cpu);
        using var tr = Tensor.From(new float[] { 0.5f, 0.25f }, [2], Device.Cpu);
        Dot.Run(tx, ty, tr, 1, accumulate: true);
        var r = new float[] { 0.5f, 0.25f };
        Dot.Twin(x, y, r, 1, accumulate: true);
        Assert.True(Dot.Error(tr.ToFloatArray(), r, 1, 0.25 + Dot.AbsDot(x, y)) < 1e-6);
    }

    /// <summary>The distillation loss over many elements (a [64, 4000] slice of a step's logits) matches the f64
    /// sum to 1e-6 on every device: Partials' f32 group sums and f64 finish, as MseRun promises.</summary>
    [Fact]
    public void Mse_loss_over_many_elements_matches_the_f64_sum()
    {
        var rng = new Random(11);
        int n = 64 * 4000;
        var s = Check.Values(rng, n, 3f);
        var t = Check.Values(rng, n, 3f);
        double want = 0;
        for (int i = 0; i < n; i++) want += ((double)s[i] - t[i]) * ((double)s[i] - t[i]);
        want /= n;
        foreach (var dev in TestDevices.All.Append(Device.Cpu))
        {
            using var ts = Tensor.From(s, [64, 4000], dev);
            using var tt = Tensor.From(t, [64, 4000], dev);
            using var tds = Tensor.Empty([64, 4000], DType.F32, dev);
            using var tl = Tensor.Empty([1], DType.F32, dev);
            LossGrad.MseRun(ts, tt, tds, tl);
            double err = Math.Abs(tl.ToFloatArray()[0] - want) / want;
            Assert.True(err < 1e-6, $"{dev}: mse {tl.ToFloatArray()[0]} vs f64 {want}, relative error {err:E2}");
        }
    }

    [Fact]
    public void Outputs_that_share_storage_with_inputs_are_refused()
    {
        foreach (var dev in TestDevices.All.Append(Device.Cpu))
        {
            using var a = Tensor.From(new float[] { 1, 2, 3 }, [3, 1], dev);
            using var b = Tensor.From(new float[] { 1, 2 }, [2, 1], dev);
            using var c = Tensor.From(new float[] { 1, 2 }, [2, 1], dev);
            using var d = Tensor.From(new float[] { 1, 2 }, [2, 1], dev);
            using var head = a.Slice(0, 2);   // elements 0, 1
            using var tail = a.Slice(1, 2);   // elements 1, 2: one shared with head
            Assert.Throws<ArgumentException>(() => SwiGluGrad.Run(head, b, c, tail, d));
            Assert.Throws<ArgumentException>(() => SwiGluGrad.Run(b, c, head, d, tail));
            Assert.Throws<ArgumentException>(() => SwiGluGrad.Run(b, c, d, head, head));
            // Inputs may share storage with each other; outputs apart from them are fine.
            using var last = a.Slice(2, 1);
            using var dg = Tensor.From(new float[] { 0 }, [1, 1], dev);
            using var du = Tensor.From(new float[] { 0 }, [1, 1], dev);
            SwiGluGrad.Run(last, last, last, dg, du);
        }
    }

    public static TheoryData<string> KernelMethods
    {
        get
        {
            var d = new TheoryData<string>();
            foreach (var m in GradAudit.Kernels) d.Add(Ptx.Name(m));
            return d;
        }
    }

    /// <summary>Every backward kernel compiles through ILGPU's CUDA backend for SM_90, with no GPU present.</summary>
    [Theory]
    [MemberData(nameof(KernelMethods))]
    public void Backward_kernel_compiles_to_ptx_for_hopper(string name)
    {
        var ptx = Ptx.Compile(GradAudit.Kernels.Single(m => Ptx.Name(m) == name));
        Assert.Contains(".entry", ptx);
    }

    [Fact]
    public void Every_backward_op_has_a_check()
    {
        var names = GradAudit.Cases.Select(c => c.Kernel).ToHashSet();
        foreach (var op in new[] { "linear", "bitlinear", "rmsnorm", "rope", "swiglu", "attention", "mse", "cross-entropy", "embedding", "softmax" })
            Assert.Contains("grad " + op, names);
        Assert.True(GradAudit.Kernels.Count >= 10, string.Join(", ", GradAudit.Kernels.Select(Ptx.Name)));
    }
}
