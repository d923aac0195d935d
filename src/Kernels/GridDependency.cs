using ILGPU.Runtime.Cuda;

namespace BitDeltaNative.Kernels;

/// <summary>
/// The device side of a dependent launch (DependentLaunch.cs; PTX ISA §9.7.13.13 <c>griddepcontrol</c>). A kernel that
/// calls <see cref="Wait"/> is launched so by Device.GroupedKernel on sm_90 and newer, and may start before the kernel
/// ahead of it has finished: everything before <see cref="Wait"/> must read only what no kernel writes (weights, signs,
/// scales), and nothing before it may write. <see cref="Release"/> lets the kernel after this one start its blocks as
/// this one's finish. On a GPU older than sm_90 the PTX passes take both out; on ILGPU's CPU accelerator kernels run one
/// after another and both do nothing.
/// </summary>
public static class GridDependency
{
    /// <summary>Waits until the kernel ahead has finished and its writes are visible (at once when launched the plain
    /// way). Once a kernel, before its loops: run in every batch of GemvOne's loop it cost ~10% of a 7B step
    /// (bench/NOTES.md).</summary>
    public static void Wait()
    {
        if (CudaAsm.IsSupported) CudaAsm.Emit("griddepcontrol.wait;");
    }

    /// <summary>Lets the next kernel in the stream, if it is launched dependent, start its blocks once every block of
    /// this one has run this or exited. It does not make this kernel's writes visible: the next kernel's
    /// <see cref="Wait"/> waits for this whole grid.</summary>
    public static void Release()
    {
        if (CudaAsm.IsSupported) CudaAsm.Emit("griddepcontrol.launch_dependents;");
    }
}
