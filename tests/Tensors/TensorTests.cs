namespace BitDeltaNative.Tests.Tensors;

[Collection(IlgpuCpuCollection.Name)]
public class TensorTests
{
    public static TheoryData<string> Devices => TestDevices.Names;

    /// <summary>StagedUpload (how CUDA loads checkpoints): tensors larger than a staging buffer and smaller, ragged sizes,
    /// both buffers reused many times, every byte where it belongs once the upload is finished; what it refuses.</summary>
    [Theory]
    [MemberData(nameof(Devices))]
    public void Staged_upload_puts_every_byte_in_place(string device)
    {
        var dev = Device.Parse(device);
        var rng = new Random(3);
        int[][] shapes = [[1000, 1037], [3, 5], [5 << 20], [1, 1], [777, 2049]];
        var sources = shapes.Select(sh =>
        {
            var b = new byte[DType.U8.ByteCount(sh)];
            rng.NextBytes(b);
            return b;
        }).ToArray();
        var targets = shapes.Select(sh => Tensor.Empty(sh, DType.U8, dev)).ToArray();
        try
        {
            using (var up = new StagedUpload(dev, chunkBytes: 1 << 20))
            {
                for (int i = 0; i < shapes.Length; i++)
                {
                    using var h = Tensor.FromHostMemory(sources[i], shapes[i], DType.U8);
                    up.Copy(h, targets[i]);
                }
                Assert.Equal(sources.Sum(b => (long)b.Length), up.Bytes);
            }
            for (int i = 0; i < shapes.Length; i++) Assert.Equal(sources[i], targets[i].ToArray<byte>());

            using var wrong = Tensor.FromHostMemory(new byte[15], [3, 5], DType.U8);
            using var up2 = new StagedUpload(dev, chunkBytes: 1 << 20);
            Assert.Throws<ArgumentException>(() => up2.Copy(wrong, targets[0]));   // shapes differ
            Assert.Throws<ArgumentException>(() => new StagedUpload(Device.Cpu));
        }
        finally
        {
            foreach (var t in targets) t.Dispose();
        }
    }

    [Theory]
    [MemberData(nameof(Devices))]
    public void Host_device_round_trip_keeps_every_byte(string device)
    {
        var dev = Device.Parse(device);
        var rng = new Random(7);
        foreach (var dt in new[] { DType.F32, DType.F16, DType.BF16, DType.I32, DType.U8 })
        {
            int[] shape = [3, 17, 5];
            var bytes = new byte[dt.ByteCount(shape)];
            rng.NextBytes(bytes);
            using var h = Tensor.FromHostMemory(bytes, shape, dt);
            using var d = h.To(dev);
            Assert.Equal(dev, d.Device);
            using var back = d.To(Device.Cpu);
            Assert.Equal(bytes, back.HostBytes.ToArray());
        }
    }

    [Theory]
    [MemberData(nameof(Devices))]
    public void Every_kernel_launch_is_counted_once(string device)
    {
        // the speed issue's launches per decode step (bench model, bench multitenant) come from this count
        var dev = Device.Parse(device);
        using var t = Tensor.Empty([1000], DType.F32, dev);
        using var u = Tensor.Empty([1000], DType.F32, dev);
        BitDeltaNative.Kernels.RandomFill.Run(t, 1);   // compiles the kernel: counted from its first launch
        long before = dev.Launches;
        BitDeltaNative.Kernels.RandomFill.Run(t, 2);
        BitDeltaNative.Kernels.RandomFill.Run(u, 3);
        BitDeltaNative.Kernels.Add.Run(t, u, t);
        Assert.Equal(before + 3, dev.Launches);
    }

    [Theory]
    [MemberData(nameof(Devices))]
    public void Slice_is_a_view_that_shares_storage(string device)
    {
        var dev = Device.Parse(device);
        var data = Enumerable.Range(0, 5 * 3).Select(i => (float)i + 0.5f).ToArray();
        using var t = Tensor.From(data, [5, 3], dev);
        using var rows = t.Slice(1, 2);
        Assert.Equal([2, 3], rows.Shape.ToArray());
        Assert.Equal(data[3..9], rows.ToFloatArray());
        rows.CopyFrom(Tensor.From(new float[] { -1, -2, -3, -4, -5, -6 }, [2, 3]));
        var all = t.ToFloatArray();
        Assert.Equal(new float[] { -1, -2, -3, -4, -5, -6 }, all[3..9]);
        Assert.Equal(data[..3], all[..3]);
        Assert.Equal(data[9..], all[9..]);
        using var flat = t.Reshape(15);
        Assert.Equal(all, flat.ToFloatArray());
        Assert.Throws<ArgumentException>(() => t.Reshape(4, 4));
        Assert.Throws<ArgumentOutOfRangeException>(() => t.Slice(4, 2));
    }

    [Fact]
    public void Sign1_packs_32_per_word_with_rows_padded()
    {
        Assert.Equal(4, DType.Sign1.ByteCount([1, 1]));
        Assert.Equal(4, DType.Sign1.ByteCount([1, 32]));
        Assert.Equal(8, DType.Sign1.ByteCount([1, 33]));
        Assert.Equal(3 * 2 * 4, DType.Sign1.ByteCount([3, 40]));
        using var t = Tensor.From(new uint[] { 1, 2, 3, 4, 5, 6 }, [3, 40]);
        using var row = t.Slice(1, 1);
        Assert.Equal(new uint[] { 3, 4 }, row.ToArray<uint>());
    }

    [Fact]
    public void Pool_reuses_buffers_so_a_loop_allocates_nothing_new()
    {
        var dev = Device.IlgpuCpu();
        var pool = dev.Pool!;
        using (Tensor.Empty([123, 45], DType.F32, dev)) { }
        using (Tensor.Empty([7], DType.F16, dev)) { }
        long before = pool.DriverAllocations;
        for (int step = 0; step < 100; step++)
        {
            using var a = Tensor.Empty([123, 45], DType.F32, dev);
            using var b = Tensor.Empty([7], DType.F16, dev);
        }
        Assert.Equal(before, pool.DriverAllocations);
    }

    [Fact]
    public void Asking_for_cuda_without_a_gpu_is_a_clear_error()
    {
        if (Device.CudaAvailable) { Assert.Equal(DeviceKind.Cuda, Device.Parse("auto").Kind); return; }
        var e = Assert.Throws<BitDeltaException>(() => Device.Parse("cuda"));
        Assert.Contains("no NVIDIA GPU", e.Message);
        Assert.DoesNotContain('\n', e.Message);
        Assert.Equal(DeviceKind.Cpu, Device.Parse("auto").Kind);
        var u = Assert.Throws<BitDeltaException>(() => Device.Parse("tpu"));
        Assert.Contains("'tpu'", u.Message);
    }

    static void Iota(ILGPU.Index1D i, ILGPU.ArrayView<float> a) => a[i] = i * 0.5f + 1f;

    [Fact]
    public void Kernels_compile_once_per_device()
    {
        var dev = Device.IlgpuCpu();
        var first = dev.Kernel<Action<ILGPU.Index1D, ILGPU.ArrayView<float>>>(Iota);
        var again = dev.Kernel<Action<ILGPU.Index1D, ILGPU.ArrayView<float>>>(Iota);
        Assert.Same(first, again);
        using var t = Tensor.Empty([5], DType.F32, dev);
        again(5, t.View<float>());
        Assert.Equal(new float[] { 1, 1.5f, 2, 2.5f, 3 }, t.ToFloatArray());
    }
}
