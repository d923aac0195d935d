namespace BitDeltaNative.Tests;

/// <summary>
/// The ILGPU devices every kernel test runs on: ILGPU's CPU accelerator always (that is what CI has),
/// and CUDA when a GPU is present. <c>BITDELTA_TEST_DEVICES=cuda</c> (or <c>ilgpu-cpu</c>, comma-separated)
/// picks explicitly; naming cuda where there is none fails the run instead of skipping it.
/// </summary>
public static class TestDevices
{
    public static IReadOnlyList<Device> All { get; } = Pick();

    static IReadOnlyList<Device> Pick()
    {
        var env = Environment.GetEnvironmentVariable("BITDELTA_TEST_DEVICES");
        if (!string.IsNullOrWhiteSpace(env))
            return env.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries).Select(Device.Parse).ToList();
        var list = new List<Device> { Device.IlgpuCpu() };
        if (Device.CudaAvailable) list.Add(Device.Cuda());
        return list;
    }

    /// <summary>For [Theory] tests: one case per device name.</summary>
    public static TheoryData<string> Names
    {
        get
        {
            var d = new TheoryData<string>();
            foreach (var dev in All) d.Add(dev.Kind == DeviceKind.Cuda ? "cuda" : "ilgpu-cpu");
            return d;
        }
    }
}

/// <summary>
/// Test classes that launch kernels on ILGPU's CPU accelerator. Its launch path is not safe to call from two
/// threads at once (CPUAccelerator.Launch sets up shared group and warp contexts for one task at a time, and
/// only Debug.Asserts against a concurrent one), and xunit runs test classes in parallel: a barrier-heavy
/// kernel of one class then reads another launch's group state and computes garbage now and then. Classes in
/// this collection run one after another. Tests that redirect the process-wide console (the CLI tests) join it
/// for the same reason.
/// </summary>
[CollectionDefinition(Name)]
public sealed class IlgpuCpuCollection
{
    public const string Name = "ILGPU CPU accelerator";
}
