using ILGPU;
using ILGPU.Runtime;

namespace BitDeltaNative;

/// <summary>
/// Recycles device buffers by exact byte size. A decode loop asks for the same sizes every step, so
/// after the first step every request is served from the free lists and nothing new is allocated.
/// Exact sizes waste nothing (a 13.5 GB base must not be rounded up). When the device is out of
/// memory, the free lists are released and the allocation is tried once more.
/// </summary>
public sealed class MemoryPool(Accelerator accelerator)
{
    readonly Dictionary<long, Stack<MemoryBuffer1D<byte, Stride1D.Dense>>> free = [];
    readonly object gate = new();

    public long BytesInUse { get; private set; }
    public long BytesCached { get; private set; }
    public long PeakBytesInUse { get; private set; }

    /// <summary>Starts a new peak from what is in use now (to measure one phase of a run).</summary>
    public void ResetPeak()
    {
        lock (gate) PeakBytesInUse = BytesInUse;
    }
    /// <summary>Allocations that went to the driver (not served from the free lists).</summary>
    public long DriverAllocations { get; private set; }

    public MemoryBuffer1D<byte, Stride1D.Dense> Rent(long bytes)
    {
        bytes = Math.Max(bytes, 1);
        lock (gate)
        {
            if (free.TryGetValue(bytes, out var stack) && stack.Count > 0)
            {
                BytesCached -= bytes;
                return Use(stack.Pop(), bytes);
            }
        }
        MemoryBuffer1D<byte, Stride1D.Dense> buf;
        try { buf = accelerator.Allocate1D<byte>(bytes); }
        catch (Exception e) when (e is AcceleratorException or OutOfMemoryException)
        {
            Trim();
            try { buf = accelerator.Allocate1D<byte>(bytes); }
            catch (Exception e2) when (e2 is AcceleratorException or OutOfMemoryException)
            {
                throw new BitDeltaException($"out of device memory: could not allocate {bytes / (1024.0 * 1024):F1} MiB on {accelerator.Name} ({BytesInUse / (1024.0 * 1024 * 1024):F2} GiB in use)", e2);
            }
        }
        lock (gate)
        {
            DriverAllocations++;
            return Use(buf, bytes);
        }
    }

    MemoryBuffer1D<byte, Stride1D.Dense> Use(MemoryBuffer1D<byte, Stride1D.Dense> buf, long bytes)
    {
        BytesInUse += bytes;
        PeakBytesInUse = Math.Max(PeakBytesInUse, BytesInUse);
        return buf;
    }

    public void Return(MemoryBuffer1D<byte, Stride1D.Dense> buf)
    {
        lock (gate)
        {
            BytesInUse -= buf.Length;
            BytesCached += buf.Length;
            if (!free.TryGetValue(buf.Length, out var stack)) free[buf.Length] = stack = new();
            stack.Push(buf);
        }
    }

    /// <summary>Gives every cached buffer back to the driver.</summary>
    public void Trim()
    {
        lock (gate)
        {
            foreach (var stack in free.Values)
                while (stack.Count > 0) stack.Pop().Dispose();
            free.Clear();
            BytesCached = 0;
        }
    }
}
