using System.Reflection;
using BitDeltaNative.Kernels;
using ILGPU;
using ILGPU.Runtime;
using Expr = System.Linq.Expressions.Expression;

namespace BitDeltaNative.Tests.Tensors;

/// <summary>
/// Dependent launches (DependentLaunch.cs) pack a kernel's parameters themselves, as ILGPU packs them for its PTX. What CI
/// can check without a GPU: the packing puts every parameter where the kernel's PTX entry declares it, for every kernel of
/// the engine whose parameter types it takes; the bytes written are the views' addresses and lengths and the numbers'
/// values; the PTX passes take <c>griddepcontrol</c> out for GPUs older than sm_90. That the GPU runs the packed launch
/// as ILGPU's own is GemvNormRouteTests' CUDA case.
/// </summary>
[Collection(IlgpuCpuCollection.Name)]
public class DependentLaunchTests
{
    static readonly Type[] Launched = [typeof(GemvOne), typeof(GemvNorm), typeof(RmsNorm), typeof(Attention), typeof(TenantLinear), typeof(RopeCache), typeof(SwiGlu), typeof(Embedding)];

    [Fact]
    public void The_packing_matches_the_ptx_parameter_list_of_every_explicitly_grouped_kernel_it_takes()
    {
        int matched = 0;
        var refused = new List<string>();
        foreach (var m in Ptx.AllKernels())
        {
            var types = m.GetParameters().Select(p => p.ParameterType).ToArray();
            if (types[0] == typeof(Index1D) || types[0] == typeof(Index2D) || types[0] == typeof(Index3D)) continue;   // implicitly grouped
            DependentLaunch.Layout layout;
            try { layout = DependentLaunch.Of(types.Select(t => (Expr)Expr.Parameter(t)).ToArray()); }
            catch (NotSupportedException) { refused.Add(Ptx.Name(m)); continue; }
            var ptx = Ptx.Compile(m);
            Assert.Equal(DependentLaunch.PtxParameters(ptx), layout.Parameters);
            matched++;
        }
        // the kernels launched dependent are among those matched
        foreach (var t in Launched)
            Assert.DoesNotContain(refused, r => r.StartsWith(t.Name + ".", StringComparison.Ordinal));
        Assert.True(matched >= 40, $"only {matched} kernels packed (refused: {string.Join(", ", refused)})");
    }

    public struct Inner
    {
        public ArrayView<float> A;
        public byte B;
        public long C;
    }

    [Fact]
    public void The_packed_bytes_are_each_views_address_and_length_and_each_numbers_value()
    {
        var dev = Device.IlgpuCpu();
        using var f = Tensor.From(new float[] { 1, 2, 3, 4, 5 }, [5], dev);
        using var h = Tensor.Empty([6], DType.F16, dev);
        var fv = f.View<float>().SubView(2, 3);
        var hv = h.View<ushort>();
        var inner = new Inner { A = fv, B = 7, C = -5_000_000_000 };
        // a stand-in PTX entry with the parameter list ILGPU would declare (ints at 4, views and structs at 8)
        const string ptx = ".visible .entry K(\n\t.param .b32 a,\n\t.param .align 8 .b8 v[16],\n\t.param .b8 b,\n\t.param .align 8 .b8 s[32],\n\t.param .f64 d\n)\n{\n\tgriddepcontrol.wait;\n}";
        byte[]? seen = null;
        var launchType = typeof(Action<,,,,,>).MakeGenericType(typeof(KernelConfig), typeof(int), typeof(ArrayView<ushort>), typeof(byte), typeof(Inner), typeof(double));
        int counted = 0;
        var launch = DependentLaunch.Launcher(launchType, (c, args) => seen = [.. args], ptx, "K", () => counted++);
        launch.DynamicInvoke(new KernelConfig(1, 32), 42, hv, (byte)9, inner, 2.5);
        Assert.Equal(1, counted);
        Assert.NotNull(seen);
        Assert.Equal(72, seen!.Length);
        Assert.Equal(42, BitConverter.ToInt32(seen, 0));
        Assert.Equal(hv.LoadEffectiveAddressAsPtr().ToInt64(), BitConverter.ToInt64(seen, 8));
        Assert.Equal(6L, BitConverter.ToInt64(seen, 16));
        Assert.Equal(9, seen[24]);
        Assert.Equal(fv.LoadEffectiveAddressAsPtr().ToInt64(), BitConverter.ToInt64(seen, 32));   // the sub-view's first element
        Assert.Equal(f.View<float>().LoadEffectiveAddressAsPtr().ToInt64() + 8, BitConverter.ToInt64(seen, 32));
        Assert.Equal(3L, BitConverter.ToInt64(seen, 40));
        Assert.Equal(7, seen[48]);
        Assert.Equal(-5_000_000_000L, BitConverter.ToInt64(seen, 56));
        Assert.Equal(2.5, BitConverter.ToDouble(seen, 64));
    }

    [Fact]
    public void A_packing_that_disagrees_with_the_ptx_is_refused_at_load()
    {
        const string ptx = ".visible .entry K(\n\t.param .b32 a,\n\t.param .b32 b\n)\n{\n\tgriddepcontrol.wait;\n}";
        var launchType = typeof(Action<,,>).MakeGenericType(typeof(KernelConfig), typeof(int), typeof(long));
        var e = Assert.Throws<NotSupportedException>(() => DependentLaunch.Launcher(launchType, (_, _) => { }, ptx, "K", () => { }));
        Assert.Contains("K: dependent launch packs", e.Message);
    }

    [Fact]
    public void A_kernel_without_a_wait_is_refused_at_load()
    {
        const string ptx = ".visible .entry K(\n\t.param .b32 a\n)\n{\n}";
        var launchType = typeof(Action<,>).MakeGenericType(typeof(KernelConfig), typeof(int));
        var e = Assert.Throws<NotSupportedException>(() => DependentLaunch.Launcher(launchType, (_, _) => { }, ptx, "K", () => { }));
        Assert.Contains("no griddepcontrol.wait", e.Message);
    }

    [Fact]
    public void Every_kernel_launched_dependent_waits_before_it_reads_and_releases_the_next()
    {
        var kernels = new[] { (typeof(GemvOne), "GemvOneKernel"), (typeof(GemvOne), "GemvFewKernel"), (typeof(GemvNorm), "Kernel"),
                              (typeof(GemvNorm), "TenantKernel"), (typeof(GemvNorm), "TenantPlainKernel"), (typeof(RmsNorm), "Kernel"), (typeof(Attention), "DecodeKernel"),
                              (typeof(Attention), "CombineKernel"), (typeof(TenantLinear), "StreamKernel"), (typeof(TenantLinear), "StreamOneKernel"),
                              (typeof(TenantLinear), "BitsPrepKernel"), (typeof(TenantLinear), "BitsEndKernel"), (typeof(TenantLinear), "BaseKernel"),
                              (typeof(TenantLinear), "BaseOneKernel"), (typeof(TenantLinear), "SumSplitsKernel"), (typeof(TenantLinear), "SplitXKernel"),
                              (typeof(RopeCache), "Kernel"), (typeof(SwiGlu), "Kernel"), (typeof(Embedding), "Kernel") };
        foreach (var (type, name) in kernels)
        {
            var ptx = Ptx.Compile(type.GetMethod(name, BindingFlags.Static | BindingFlags.NonPublic)!);
            Assert.True(ptx.Contains("griddepcontrol.wait", StringComparison.Ordinal), $"{type.Name}.{name}: no wait");
            Assert.True(ptx.Contains("griddepcontrol.launch_dependents", StringComparison.Ordinal), $"{type.Name}.{name}: no release");
        }
    }

    [Fact]
    public void The_ptx_passes_take_grid_dependency_out_below_sm_90_and_keep_it_from_sm_90()
    {
        var ptx = Ptx.Compile(typeof(GemvOne).GetMethod("GemvOneKernel", BindingFlags.Static | BindingFlags.NonPublic)!);
        Assert.Contains(".target sm_90", ptx);
        int count = ptx.Split('\n').Count(l => l.Contains("griddepcontrol", StringComparison.Ordinal));
        Assert.True(count >= 2, $"{count} griddepcontrol lines");   // release and wait
        Assert.Same(ptx, PtxPasses.WithoutGridDependency(ptx));
        var older = PtxPasses.WithoutGridDependency(ptx.Replace(".target sm_90", ".target sm_80"));
        Assert.DoesNotContain("griddepcontrol", older);
        Assert.Equal(ptx.Split('\n').Length - count, older.Split('\n').Length);
    }
}
