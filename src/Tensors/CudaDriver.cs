using System.Runtime.InteropServices;

namespace BitDeltaNative;

/// <summary>Marks a kernel that asks for more dynamic shared memory than the 48 KB a block gets without asking
/// (CUDA Programming Guide, "Shared Memory": above 48 KB a kernel must opt in, up to 227 KB a block on Hopper).
/// <see cref="Device"/> opts the kernel in when it loads it on CUDA; ILGPU 1.5.3 has no call for it.</summary>
[AttributeUsage(AttributeTargets.Method)]
public sealed class SharedBytesAttribute(int bytes) : Attribute
{
    public int Bytes { get; } = bytes;
}

/// <summary>The CUDA driver calls ILGPU does not make, from the same driver library it loads (libcuda, nvcuda on
/// Windows).</summary>
public static unsafe class CudaDriver
{
    /// <summary>CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES (cuda.h).</summary>
    const int MaxDynamicSharedSizeBytes = 8;

    static readonly Lazy<IntPtr> Library = new(() =>
    {
        foreach (var name in new[] { "cuda", "libcuda.so.1", "nvcuda" })
            if (NativeLibrary.TryLoad(name, typeof(CudaDriver).Assembly, null, out var h)) return h;
        throw new BitDeltaException("the CUDA driver library (libcuda) could not be loaded");
    });

    /// <summary>Lets <paramref name="function"/> (a loaded kernel's CUfunction) take <paramref name="bytes"/> of dynamic
    /// shared memory a block (cuFuncSetAttribute); <paramref name="kernel"/> names it in the error.</summary>
    public static void AllowDynamicShared(IntPtr function, int bytes, string kernel)
    {
        var set = (delegate* unmanaged<IntPtr, int, int, int>)NativeLibrary.GetExport(Library.Value, "cuFuncSetAttribute");
        int err = set(function, MaxDynamicSharedSizeBytes, bytes);
        if (err != 0) throw new BitDeltaException($"{kernel}: the driver refused {bytes} bytes of dynamic shared memory a block (CUresult {err})");
    }
}
