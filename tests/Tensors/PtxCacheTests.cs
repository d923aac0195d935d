using System.Reflection;
using BitDeltaNative.Kernels;
using ILGPU;
using ILGPU.Backends.EntryPoints;
using ILGPU.Runtime;
using ILGPU.Runtime.Cuda;

namespace BitDeltaNative.Tests.Tensors;

/// <summary>The kernels' PTX cache (start-up): what goes into a file comes back as the same kernel, what does not fit
/// is refused, the key follows what decides the PTX, and on CUDA a kernel read from the cache computes what the
/// compiled one does.</summary>
[Collection(IlgpuCpuCollection.Name)]
public class PtxCacheTests
{
    // two small kernels of this assembly: one explicitly grouped with static shared memory, one auto-grouped
    static void ReverseInGroupKernel(ArrayView<float> x, ArrayView<float> y)
    {
        var sh = SharedMemory.Allocate<float>(64);
        int g = Grid.IdxX * Group.DimX, i = Group.IdxX;
        sh[i] = x[g + i];
        Group.Barrier();
        y[g + i] = sh[Group.DimX - 1 - i] * 2f;
    }

    static void AffineKernel(Index1D i, ArrayView<float> x, float a, ArrayView<float> y) => y[i] = a * x[i] + 1f;

    static MethodInfo Method(string name) => typeof(PtxCacheTests).GetMethod(name, BindingFlags.Static | BindingFlags.NonPublic)!;

    static MethodInfo GemmHalfKernel => typeof(MatMul).Assembly.GetType("BitDeltaNative.Kernels.GemmHalf")!
        .GetMethod("F16Kernel", BindingFlags.Static | BindingFlags.NonPublic)!;

    [Fact]
    public void This_ILGPU_has_what_the_cache_needs() =>
        Assert.True(PtxCache.Supported, "ILGPU's PTXCompiledKernel constructor or CompiledKernel.EntryPoint moved: the kernel cache is off");

    [Fact]
    public void A_file_gives_back_the_kernel_it_was_made_from()
    {
        foreach (var (m, implicitly) in new[] { (Method(nameof(ReverseInGroupKernel)), false), (Method(nameof(AffineKernel)), true), (GemmHalfKernel, false) })
        {
            var compiled = Ptx.CompileKernel(m);
            var entry = implicitly ? EntryPointDescription.FromImplicitlyGroupedKernel(m) : EntryPointDescription.FromExplicitlyGroupedKernel(m);
            var back = PtxCache.Deserialize(PtxCache.Serialize(compiled), Device.IlgpuContext, entry);
            Assert.NotNull(back);
            Assert.Equal(compiled.PTXAssembly, back.PTXAssembly);
            Assert.Equal(compiled.Name, back.Name);
            Assert.Equal(compiled.IndexType, back.IndexType);
            Assert.Equal(compiled.NumParameters, back.NumParameters);
            var sm = SharedMemoryOf(compiled);
            Assert.Equal(sm, SharedMemoryOf(back));
            if (m.Name == nameof(ReverseInGroupKernel)) Assert.Equal((64 * 4, false), sm);
            if (m == GemmHalfKernel) Assert.True(sm.Dynamic, "GemmHalf takes dynamic shared memory");
        }
    }

    static (int Static, bool Dynamic) SharedMemoryOf(ILGPU.Backends.CompiledKernel k)
    {
        var ep = (EntryPoint)typeof(ILGPU.Backends.CompiledKernel).GetProperty("EntryPoint", BindingFlags.Instance | BindingFlags.NonPublic)!.GetValue(k)!;
        return (ep.SharedMemory.StaticSize, ep.SharedMemory.HasDynamicMemory);
    }

    [Fact]
    public void A_file_that_does_not_fit_is_refused()
    {
        var m = Method(nameof(ReverseInGroupKernel));
        var entry = EntryPointDescription.FromExplicitlyGroupedKernel(m);
        string good = PtxCache.Serialize(Ptx.CompileKernel(m));
        Assert.NotNull(PtxCache.Deserialize(good, Device.IlgpuContext, entry));
        // another kernel's file
        var other = Method(nameof(AffineKernel));
        Assert.Null(PtxCache.Deserialize(PtxCache.Serialize(Ptx.CompileKernel(other)), Device.IlgpuContext, entry));
        // cut short, as a full disk leaves it
        Assert.Null(PtxCache.Deserialize(good[..(good.Length * 2 / 3)], Device.IlgpuContext, entry));
        // no header, a header of another version, a bad shared-memory field
        int nl = good.IndexOf('\n');
        Assert.Null(PtxCache.Deserialize(good[(nl + 1)..], Device.IlgpuContext, entry));
        Assert.Null(PtxCache.Deserialize(good.Replace("ptx cache v1", "ptx cache v0"), Device.IlgpuContext, entry));
        var fields = good[..nl].Split(' ');
        fields[^2] = "-4";
        Assert.Null(PtxCache.Deserialize(string.Join(' ', fields) + good[nl..], Device.IlgpuContext, entry));
        Assert.Null(PtxCache.Deserialize("", Device.IlgpuContext, entry));
    }

    [Fact]
    public void The_key_follows_kernel_entry_kind_and_target()
    {
        var a = Method(nameof(ReverseInGroupKernel));
        var b = Method(nameof(AffineKernel));
        string k = PtxCache.Key(a, false, CudaArchitecture.SM_90, CudaInstructionSet.ISA_88);
        Assert.Equal(k, PtxCache.Key(a, false, CudaArchitecture.SM_90, CudaInstructionSet.ISA_88));
        Assert.Matches("^[0-9a-f]{64}$", k);
        Assert.NotEqual(k, PtxCache.Key(b, false, CudaArchitecture.SM_90, CudaInstructionSet.ISA_88));
        Assert.NotEqual(k, PtxCache.Key(a, true, CudaArchitecture.SM_90, CudaInstructionSet.ISA_88));
        Assert.NotEqual(k, PtxCache.Key(a, false, CudaArchitecture.SM_80, CudaInstructionSet.ISA_88));
        Assert.NotEqual(k, PtxCache.Key(a, false, CudaArchitecture.SM_90, CudaInstructionSet.ISA_85));
    }

    [Fact]
    public void Store_then_load_through_a_folder_and_a_folder_that_cannot_be_written()
    {
        string? saved = PtxCache.Folder;
        string dir = Path.Combine(Path.GetTempPath(), "bitdelta-ptxcache-test-" + Guid.NewGuid().ToString("N"));
        try
        {
            var m = Method(nameof(ReverseInGroupKernel));
            var entry = EntryPointDescription.FromExplicitlyGroupedKernel(m);
            var compiled = Ptx.CompileKernel(m);
            string key = PtxCache.Key(m, false, CudaArchitecture.SM_90, CudaInstructionSet.ISA_88);
            PtxCache.Folder = dir;
            Assert.Null(PtxCache.TryLoad(key, Device.IlgpuContext, entry));
            PtxCache.Store(key, compiled);
            Assert.Single(Directory.GetFiles(dir));   // no temporary file left beside it
            Assert.Equal(compiled.PTXAssembly, PtxCache.TryLoad(key, Device.IlgpuContext, entry)!.PTXAssembly);
            PtxCache.Forget(key);
            Assert.Null(PtxCache.TryLoad(key, Device.IlgpuContext, entry));
            // a "folder" that is a file: storing warns and goes on
            File.WriteAllText(Path.Combine(dir, "plain"), "x");
            PtxCache.Folder = Path.Combine(dir, "plain");
            PtxCache.Store(key, compiled);
            Assert.Null(PtxCache.TryLoad(key, Device.IlgpuContext, entry));
            PtxCache.Folder = null;
            PtxCache.Store(key, compiled);
            Assert.Null(PtxCache.TryLoad(key, Device.IlgpuContext, entry));
        }
        finally
        {
            PtxCache.Folder = saved;
            if (Directory.Exists(dir)) Directory.Delete(dir, true);
        }
    }

    /// <summary>On CUDA: the device's loader (private: the launcher table in front of it would hand back the first
    /// launcher) run twice with an empty cache folder; the second load reads the file and its kernel gives the very
    /// floats of the first, for both entry kinds, on a ragged size. Skipped where there is no CUDA device.</summary>
    [Fact]
    public void On_cuda_a_cached_kernel_computes_what_the_compiled_one_does()
    {
        if (!TestDevices.All.Any(d => d.Kind == DeviceKind.Cuda)) Assert.Skip("no CUDA device among the test devices");
        var dev = Device.Cuda();
        var load = typeof(Device).GetMethod("Load", BindingFlags.Instance | BindingFlags.NonPublic)!;
        string? saved = PtxCache.Folder;
        string dir = Path.Combine(Path.GetTempPath(), "bitdelta-ptxcache-cuda-" + Guid.NewGuid().ToString("N"));
        try
        {
            PtxCache.Folder = dir;
            int groups = 37, n = groups * 64;
            var rng = new Random(5);
            var xs = Enumerable.Range(0, n).Select(_ => Check.Value(rng, 1f)).ToArray();
            using var x = Tensor.From(xs, [n], dev);
            float[] Run(bool implicitly, Delegate launcher)
            {
                using var y = Tensor.Empty([n], DType.F32, dev);
                if (implicitly)
                    ((Action<Index1D, ArrayView<float>, float, ArrayView<float>>)launcher)(n - 3, x.View<float>(), 1.5f, y.View<float>());
                else
                    ((Action<KernelConfig, ArrayView<float>, ArrayView<float>>)launcher)(new KernelConfig(groups, 64), x.View<float>(), y.View<float>());
                dev.Synchronize();
                return y.ToFloatArray();
            }
            foreach (bool implicitly in new[] { false, true })
            {
                Delegate kernel = implicitly
                    ? new Action<Index1D, ArrayView<float>, float, ArrayView<float>>(AffineKernel)
                    : new Action<ArrayView<float>, ArrayView<float>>(ReverseInGroupKernel);
                int before = dev.KernelsFromCache;
                var first = (Delegate)load.Invoke(dev, [implicitly, kernel])!;
                Assert.Equal(before, dev.KernelsFromCache);
                var second = (Delegate)load.Invoke(dev, [implicitly, kernel])!;
                Assert.Equal(before + 1, dev.KernelsFromCache);
                int valid = implicitly ? n - 3 : n;   // the auto-grouped launch covers a ragged n − 3
                var a = Run(implicitly, first)[..valid];
                var b = Run(implicitly, second)[..valid];
                Assert.Equal(a, b);
                // the GPU fuses a·x + 1 into one rounding: within an ulp of the host's two
                if (implicitly) Assert.Equal(1.5f * xs[n - 4] + 1f, a[n - 4], 1e-6f * (1f + Math.Abs(a[n - 4])));
                else Assert.Equal(2f * xs[64 + 63], a[64]);
            }
        }
        finally
        {
            PtxCache.Folder = saved;
            if (Directory.Exists(dir)) Directory.Delete(dir, true);
        }
    }
}
