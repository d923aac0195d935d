using BitDeltaNative.Kernels;

namespace BitDeltaNative.Tests.Kernels;

/// <summary>The copy engine's 1-D bulk copies (Bulk.cs): the PTX they compile to, and the read probe on every test
/// device, whose words must all come through its ring once.</summary>
[Collection(IlgpuCpuCollection.Name)]
public class BulkTests
{
    [Fact]
    public void Ptx_has_bulk_copies_on_transaction_barriers_in_the_dynamic_shared_memory()
    {
        var ptx = Ptx.Compile(typeof(Bulk).GetMethod(nameof(Bulk.ReadProbeKernel))!);
        Assert.Contains("cp.async.bulk.shared::cluster.global.mbarrier::complete_tx::bytes", ptx);
        Assert.Contains("mbarrier.arrive.expect_tx.shared::cta.b64", ptx);
        Assert.Contains("mbarrier.try_wait.parity.shared::cta.b64", ptx);
        // Bulk.Dynamic names ILGPU's dynamic shared memory: an ILGPU that called it otherwise would fail here, not on the GPU
        Assert.Contains(".extern .shared .align 16 .b8 __dyn_shared_alloca[];", ptx);
    }

    [Theory]
    [MemberData(nameof(TestDevices.Names), MemberType = typeof(TestDevices))]
    public void Read_probe_passes_every_word_through_its_ring_once(string device)
    {
        var dev = Device.Parse(device);
        var rng = new Random(5);
        // ragged: blocks end inside a stage, and the last block's range is shorter than the others'
        foreach (var (vecs, blocks) in new[] { (1000, 3), (Bulk.ProbeStageVecs * 5 + 17, 2), (4099, 7) })
        {
            var words = new uint[vecs * 4];
            for (int i = 0; i < words.Length; i++) words[i] = (uint)rng.Next() | 1u << 31;
            using var src = Tensor.From(words.Select(w => (int)w).ToArray(), [words.Length], dev);
            using var sink = Tensor.From(Enumerable.Repeat(0x5A5A5A5A, blocks * 128).ToArray(), [blocks * 128], dev);
            Bulk.ReadProbe(src, sink, blocks);
            uint want = words.Aggregate(0u, (a, w) => a ^ w);
            uint got = sink.ToArray<int>().Aggregate(0u, (a, w) => a ^ (uint)w);
            Assert.Equal(want, got);
        }
    }
}
