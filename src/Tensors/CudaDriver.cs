using System.Runtime.InteropServices;

namespace BitDeltaNative;

/// <summary>
/// The few CUDA driver API calls that ILGPU 1.5.3 does not make for us, bound at run time from the driver library itself
/// (libcuda.so.1, nvcuda.dll): the project needs only the NVIDIA driver, never the CUDA toolkit.
/// </summary>
static unsafe class CudaDriver
{
    /// <summary>CUfunction_attribute CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES (cuda.h).</summary>
    public const int MaxDynamicSharedSizeBytes = 8;

    static readonly delegate* unmanaged<IntPtr, int, int, int> funcSetAttribute = Bind("cuFuncSetAttribute");

    static delegate* unmanaged<IntPtr, int, int, int> Bind(string name)
    {
        foreach (var lib in new[] { "libcuda.so.1", "libcuda.so", "nvcuda.dll" })
            if (NativeLibrary.TryLoad(lib, out var h) && NativeLibrary.TryGetExport(h, name, out var f))
                return (delegate* unmanaged<IntPtr, int, int, int>)f;
        return null;
    }

    /// <summary>cuFuncSetAttribute(f, attribute, value); its CUresult (0 = success).</summary>
    public static int FuncSetAttribute(IntPtr f, int attribute, int value)
    {
        if (funcSetAttribute == null) throw new BitDeltaException("the CUDA driver library (libcuda.so.1) has no cuFuncSetAttribute");
        return funcSetAttribute(f, attribute, value);
    }
}
