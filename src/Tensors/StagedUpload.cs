using ILGPU.Runtime;

namespace BitDeltaNative;

/// <summary>
/// Host bytes onto an ILGPU device through pinned staging buffers: checkpoint loading. An upload from pageable memory
/// (a memory-mapped safetensors file) makes the driver copy the bytes into its own pinned staging memory before its DMA,
/// one buffer at a time, on the calling thread: 7.4 GB/s for a 7B checkpoint on the H200, 56% of the time to the first
/// token (bench/RESULTS.md, start-up). Here the host copies each chunk into one of two pinned buffers of our own with
/// several threads (page faults of the mapping and the copy itself spread over cores) while the other buffer's DMA
/// runs, each buffer on its own stream, so waiting for one buffer's copy does not wait for the other's ("CUDA C++
/// Programming Guide", page-locked host memory: copies from it are asynchronous and overlap host work).
/// Every copy is complete once <see cref="Dispose"/> returns (or <see cref="Finish"/>).
/// </summary>
public sealed class StagedUpload : IDisposable
{
    /// <summary>Bytes a staging buffer holds: large enough that a DMA's set-up is small beside it.</summary>
    public const int ChunkBytes = 32 << 20;

    readonly PageLockedArray1D<byte>[] buffers;
    readonly AcceleratorStream[] streams;
    readonly bool[] inFlight;
    readonly int threads;
    int next;

    /// <summary>Bytes copied so far.</summary>
    public long Bytes { get; private set; }

    public StagedUpload(Device device, int chunkBytes = ChunkBytes)
    {
        if (!device.IsIlgpu) throw new ArgumentException($"staged upload: {device} is not an ILGPU device");
        // page-locking takes the device's context as the thread's current one, which this thread need not have: a
        // thread that last ran another accelerator (the CPU one in tests, so the CUDA tests that loaded a model after it
        // failed with "invalid device context") or a server's worker
        device.BindThread();
        var acc = device.Accelerator;
        buffers = [acc.AllocatePageLocked1D<byte>(chunkBytes), acc.AllocatePageLocked1D<byte>(chunkBytes)];
        streams = [acc.CreateStream(), acc.CreateStream()];
        inFlight = new bool[2];
        threads = Math.Clamp(Environment.ProcessorCount, 1, 8);
    }

    /// <summary>Copies host tensor <paramref name="src"/> into device tensor <paramref name="dst"/> (same dtype and
    /// shape); the copy may still be running when this returns.</summary>
    public unsafe void Copy(Tensor src, Tensor dst)
    {
        if (src.Device.IsIlgpu || !dst.Device.IsIlgpu) throw new ArgumentException($"staged upload: from the host into a device, got {src} into {dst}");
        if (src.DType != dst.DType || !src.Shape.SequenceEqual(dst.Shape))
            throw new ArgumentException($"staged upload of {src} into {dst}: shape or dtype differ");
        var bytes = src.HostBytes;
        int chunk = buffers[0].Span.Length;
        for (int at = 0; at < bytes.Length; at += chunk)
        {
            int n = Math.Min(chunk, bytes.Length - at), s = next;
            next ^= 1;
            if (inFlight[s]) streams[s].Synchronize();   // this buffer's last DMA is done: it may be refilled
            var staging = buffers[s].Span[..n];
            fixed (byte* from = bytes.Slice(at, n))
            fixed (byte* to = staging)
            {
                nint f = (nint)from, t = (nint)to;
                int pieces = n >= 4 << 20 ? threads : 1, per = (n + pieces - 1) / pieces;
                Parallel.For(0, pieces, new ParallelOptions { MaxDegreeOfParallelism = threads }, i =>
                {
                    long start = (long)i * per, len = Math.Min(per, n - start);
                    if (len > 0) Buffer.MemoryCopy((void*)(f + (nint)start), (void*)(t + (nint)start), len, len);
                });
                dst.UploadPinned(streams[s], at, to, n);
            }
            inFlight[s] = true;
            Bytes += n;
        }
    }

    /// <summary>Waits for every copy.</summary>
    public void Finish()
    {
        for (int s = 0; s < streams.Length; s++)
            if (inFlight[s])
            {
                streams[s].Synchronize();
                inFlight[s] = false;
            }
    }

    public void Dispose()
    {
        Finish();
        foreach (var s in streams) s.Dispose();
        foreach (var b in buffers) b.Dispose();
    }
}
