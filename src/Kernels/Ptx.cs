using System.Reflection;
using ILGPU;
using ILGPU.Backends.EntryPoints;
using ILGPU.Backends.PTX;
using ILGPU.Runtime.Cuda;

namespace BitDeltaNative.Kernels;

/// <summary>
/// Compiles kernels to PTX for Hopper (SM_90) without a GPU, so CI proves every kernel gets through
/// ILGPU's CUDA backend (the CPU accelerator accepts things the PTX backend rejects) and tests can
/// assert on the PTX (vector loads, no local memory in hot loops, mma.sync).
/// </summary>
public static class Ptx
{
    /// <summary>Every kernel in the engine: static methods named <c>Kernel</c> or <c>…Kernel</c> in the
    /// Tensors and Kernels assemblies.</summary>
    public static IReadOnlyList<MethodInfo> AllKernels() => KernelsIn(typeof(Tensor).Assembly, typeof(Ptx).Assembly);

    /// <summary>The kernels of the given assemblies, by the same naming rule (the backward ops' assembly lists its own
    /// through this).</summary>
    public static IReadOnlyList<MethodInfo> KernelsIn(params Assembly[] assemblies) =>
        assemblies
            .SelectMany(a => a.GetTypes())
            .SelectMany(t => t.GetMethods(BindingFlags.Static | BindingFlags.Public | BindingFlags.NonPublic | BindingFlags.DeclaredOnly))
            .Where(m => m.Name.EndsWith("Kernel", StringComparison.Ordinal) && m.ReturnType == typeof(void)
                        && !m.IsGenericMethodDefinition && m.GetParameters().Length > 0
                        && !m.Name.StartsWith('<'))
            .OrderBy(m => m.DeclaringType!.Name + "." + m.Name, StringComparer.Ordinal)
            .ToList();

    public static string Name(MethodInfo m) => $"{m.DeclaringType!.Name}.{m.Name}";

    static bool ImplicitlyGrouped(MethodInfo m) =>
        m.GetParameters()[0].ParameterType is var t && (t == typeof(Index1D) || t == typeof(Index2D) || t == typeof(Index3D));

    public static string Compile(MethodInfo kernel) => CompileKernel(kernel).PTXAssembly;

    /// <summary>The kernel as ILGPU's PTX backend compiles it for the H100/H200, without a GPU, then the PTX passes it
    /// asks for (<see cref="PtxPasses"/>) unless <paramref name="passes"/> is false.</summary>
    public static PTXCompiledKernel CompileKernel(MethodInfo kernel, bool passes = true)
    {
        var capabilities = new CudaCapabilityContext(CudaArchitecture.SM_90);
        Device.TargetOwnArchitecture(capabilities, CudaArchitecture.SM_90);   // as on the GPU (Device.Cuda)
        var backend = new PTXBackend(Device.IlgpuContext, capabilities, CudaArchitecture.SM_90, CudaInstructionSet.ISA_88, null);
        var entry = ImplicitlyGrouped(kernel)
            ? EntryPointDescription.FromImplicitlyGroupedKernel(kernel)
            : EntryPointDescription.FromExplicitlyGroupedKernel(kernel);
        var compiled = (PTXCompiledKernel)backend.Compile(entry, default);
        return passes ? PtxPasses.Apply(compiled, kernel) : compiled;
    }
}
