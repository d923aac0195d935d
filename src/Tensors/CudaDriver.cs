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

    /// <summary>CUlaunchConfig (cuda.h, CUDA 12): grid and block sizes, dynamic shared bytes, stream, attributes.</summary>
    [StructLayout(LayoutKind.Sequential)]
    struct LaunchConfig
    {
        public uint GridX, GridY, GridZ, BlockX, BlockY, BlockZ, SharedBytes;
        public IntPtr Stream;
        public LaunchAttribute* Attributes;
        public uint AttributeCount;
    }

    /// <summary>CUlaunchAttribute: an id, padding to 8 bytes, then a 64-byte value union whose first int is the flag.</summary>
    [StructLayout(LayoutKind.Explicit, Size = 72)]
    struct LaunchAttribute
    {
        [FieldOffset(0)] public int Id;
        [FieldOffset(8)] public int Value;
    }

    /// <summary>CU_LAUNCH_ATTRIBUTE_PROGRAMMATIC_STREAM_SERIALIZATION (CUlaunchAttributeID, cuda.h).</summary>
    const int ProgrammaticStreamSerialization = 6;

    static readonly Lazy<IntPtr> LaunchEx = new(() =>
        NativeLibrary.TryGetExport(Library.Value, "cuLaunchKernelEx", out var f) ? f
            : throw new BitDeltaException("the CUDA driver has no cuLaunchKernelEx (needs a CUDA 12 driver or newer)"));

    /// <summary>Launches <paramref name="function"/> with its parameters packed in <paramref name="args"/>
    /// (CU_LAUNCH_PARAM_BUFFER_POINTER, as ILGPU's own launcher passes them) on <paramref name="stream"/>, allowed to
    /// start before the kernel ahead of it in the stream has finished (programmatic dependent launch, CUDA Programming
    /// Guide §"Programmatic Dependent Launch and Synchronization"): its blocks may run once every block of the one ahead
    /// has executed <c>griddepcontrol.launch_dependents</c> or exited, and must execute <c>griddepcontrol.wait</c> before
    /// they touch anything that kernel writes. <paramref name="kernel"/> names it in the error.</summary>
    public static void LaunchDependent(IntPtr function, (int X, int Y, int Z) grid, (int X, int Y, int Z) block, int sharedBytes,
                                       IntPtr stream, byte* args, int argBytes, string kernel)
    {
        var attribute = new LaunchAttribute { Id = ProgrammaticStreamSerialization, Value = 1 };
        var config = new LaunchConfig
        {
            GridX = (uint)grid.X, GridY = (uint)grid.Y, GridZ = (uint)grid.Z,
            BlockX = (uint)block.X, BlockY = (uint)block.Y, BlockZ = (uint)block.Z,
            SharedBytes = (uint)sharedBytes, Stream = stream, Attributes = &attribute, AttributeCount = 1,
        };
        IntPtr size = argBytes;
        var extra = stackalloc void*[5];
        extra[0] = (void*)1;   // CU_LAUNCH_PARAM_BUFFER_POINTER
        extra[1] = args;
        extra[2] = (void*)2;   // CU_LAUNCH_PARAM_BUFFER_SIZE
        extra[3] = &size;
        extra[4] = null;       // CU_LAUNCH_PARAM_END
        var launch = (delegate* unmanaged<LaunchConfig*, IntPtr, void**, void**, int>)LaunchEx.Value;
        int err = launch(&config, function, null, extra);
        if (err != 0) throw new BitDeltaException($"{kernel}: the driver refused a dependent launch (CUresult {err})");
    }

    /// <summary>Lets <paramref name="function"/> (a loaded kernel's CUfunction) take <paramref name="bytes"/> of dynamic
    /// shared memory a block (cuFuncSetAttribute); <paramref name="kernel"/> names it in the error.</summary>
    public static void AllowDynamicShared(IntPtr function, int bytes, string kernel)
    {
        var set = (delegate* unmanaged<IntPtr, int, int, int>)NativeLibrary.GetExport(Library.Value, "cuFuncSetAttribute");
        int err = set(function, MaxDynamicSharedSizeBytes, bytes);
        if (err != 0) throw new BitDeltaException($"{kernel}: the driver refused {bytes} bytes of dynamic shared memory a block (CUresult {err})");
    }
}
