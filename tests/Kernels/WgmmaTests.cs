using System.Reflection;
using BitDeltaNative.Kernels;
using Check = BitDeltaNative.Kernels.Check;

namespace BitDeltaNative.Tests.Kernels;

/// <summary>The wgmma probe (Wgmma.cs) beyond its audit case: the PTX the driver gets (sm_90a, one wgmma between its fence
/// and wait, no local memory), and on every test device the product against the twin with the layout's own byte offsets
/// and a large error with them swapped (on CUDA this is what pins the descriptor's fields down; skipped off Hopper).</summary>
[Collection(IlgpuCpuCollection.Name)]
public class WgmmaTests
{
    [Fact]
    public void Ptx_targets_sm_90a_and_holds_one_warpgroup_product()
    {
        var ptx = Ptx.Compile(typeof(Wgmma).GetMethod("ProbeKernel", BindingFlags.Static | BindingFlags.NonPublic)!);
        Assert.Contains("\n.target sm_90a\n", ptx);
        Assert.Contains("wgmma.fence.sync.aligned", ptx);
        Assert.Contains("wgmma.mma_async.sync.aligned.m64n8k16.f32.f16.f16", ptx);
        Assert.Contains("wgmma.wait_group.sync.aligned 0", ptx);
        Assert.Contains("fence.proxy.async.shared::cta", ptx);
        Assert.DoesNotContain("ld.local", ptx);
        Assert.DoesNotContain("st.local", ptx);
    }

    [Theory]
    [MemberData(nameof(TestDevices.Names), MemberType = typeof(TestDevices))]
    public void The_product_matches_the_twin_and_swapped_offsets_do_not(string device)
    {
        var dev = Device.Parse(device);
        if (dev.Kind == DeviceKind.Cuda && dev.Accelerator is ILGPU.Runtime.Cuda.CudaAccelerator cu && cu.Architecture != ILGPU.Runtime.Cuda.CudaArchitecture.SM_90)
            Assert.Skip($"wgmma needs a Hopper GPU, this one is {cu.Architecture}");
        var rng = new Random(17);
        for (int rep = 0; rep < 3; rep++)
        {
            var (err, swapped) = Wgmma.Measure(dev, rng);
            Assert.True(err <= Check.F32Bound, $"relative error {err:E2}");
            Assert.False(swapped <= 0.1, $"with the offsets swapped the product still matched ({swapped:E2}): the layout does not tell the fields apart");
        }
    }

    [Fact]
    public void The_descriptor_packs_its_fields()
    {
        ulong d = Wgmma.Descriptor(0x1_2340u, 128, 256);
        Assert.Equal((0x1_2340u & 0x3FFFFu) >> 4, d & 0x3FFF);
        Assert.Equal(128u >> 4, (d >> 16) & 0x3FFF);
        Assert.Equal(256u >> 4, (d >> 32) & 0x3FFF);
        Assert.Equal(0u, d >> 46);
    }
}
