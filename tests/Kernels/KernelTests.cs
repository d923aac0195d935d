using BitDeltaNative.Kernels;
using FsCheck;
using FsCheck.Fluent;
using Check = BitDeltaNative.Kernels.Check;

namespace BitDeltaNative.Tests.Kernels;

/// <summary>
/// Every kernel against its CPU twin (the cases of <see cref="Audit"/>, the same ones `bitdelta audit`
/// runs) on every test device, as FsCheck properties over the seed that draws shape and values.
/// </summary>
[Collection(IlgpuCpuCollection.Name)]
public class KernelTests
{
    public static TheoryData<string> Cases
    {
        get
        {
            var d = new TheoryData<string>();
            foreach (var c in Audit.All) d.Add(c.Kernel);
            return d;
        }
    }

    /// <summary>Random cases per kernel per device: ILGPU's CPU accelerator is slow, CUDA is not.</summary>
    static int Count(Device dev) => dev.Kind == DeviceKind.Cuda ? 200 : 25;

    [Theory]
    [MemberData(nameof(Cases))]
    public void Kernel_matches_its_cpu_twin(string kernel)
    {
        var c = Audit.All.Single(a => a.Kernel == kernel);
        foreach (var dev in TestDevices.All)
        {
            Prop.ForAll(ArbMap.Default.ArbFor<int>(), seed =>
            {
                var (err, shape) = c.Run(dev, new Random(seed));
                return (err <= c.Bound).Label($"{kernel} on {dev}: seed {seed}, shape {shape}, relative error {err:E3} > {c.Bound:E1}");
            }).Check(Config.QuickThrowOnFailure.WithMaxTest(Count(dev)));
        }
    }

    public static TheoryData<string> KernelMethods
    {
        get
        {
            var d = new TheoryData<string>();
            foreach (var m in Ptx.AllKernels()) d.Add(Ptx.Name(m));
            return d;
        }
    }

    /// <summary>Every kernel compiles through ILGPU's CUDA backend for SM_90, with no GPU present.</summary>
    [Theory]
    [MemberData(nameof(KernelMethods))]
    public void Kernel_compiles_to_ptx_for_hopper(string name)
    {
        var ptx = Ptx.Compile(Ptx.AllKernels().Single(m => Ptx.Name(m) == name));
        Assert.Contains(".target sm_90", ptx);   // not ILGPU's own sm_80 (Device.TargetOwnArchitecture)
        Assert.Contains(".entry", ptx);
    }

    [Fact]
    public void Every_kernel_class_has_an_audit_case()
    {
        var audited = Audit.All.Select(a => a.Kernel).ToHashSet();
        Assert.True(Ptx.AllKernels().Count >= 10);
        Assert.True(audited.Count >= 8, string.Join(", ", audited));
    }

    [Fact]
    public void Poisoned_output_is_caught()
    {
        // The measure must fail a kernel that leaves an element unwritten.
        var got = new float[] { 1, 2, float.NaN };
        Assert.Equal(double.PositiveInfinity, Check.RelativeError(got, [1, 2, 3]));
    }
}
