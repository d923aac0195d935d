using System.Buffers;
using System.Runtime.InteropServices;
using ILGPU;
using ILGPU.Runtime;

namespace BitDeltaNative;

/// <summary>
/// Shape + dtype + device + contiguous storage. Host storage is a <see cref="Memory{T}"/> of bytes
/// (a pinned array, or a memory-mapped file region: no copy); device storage is a byte buffer from the
/// device's pool. Views (<see cref="Slice"/>, <see cref="Reshape"/>) share storage and own nothing;
/// disposing the tensor that owns the storage gives it back.
/// </summary>
public sealed class Tensor : IDisposable
{
    readonly int[] shape;
    public DType DType { get; }
    public Device Device { get; }
    public long ElementCount { get; }
    public long ByteLength { get; }

    readonly Memory<byte> host;
    readonly MemoryBuffer1D<byte, Stride1D.Dense>? buffer;
    readonly long byteOffset;
    readonly IDisposable? keepAlive;
    bool owns, disposed;

    Tensor(int[] shape, DType dtype, Device device, Memory<byte> host,
           MemoryBuffer1D<byte, Stride1D.Dense>? buffer, long byteOffset, IDisposable? keepAlive, bool owns)
    {
        foreach (var d in shape)
            if (d < 0) throw new ArgumentException($"negative dimension in shape [{string.Join(", ", shape)}]");
        this.shape = shape;
        DType = dtype;
        Device = device;
        ElementCount = 1;
        foreach (var d in shape) ElementCount = checked(ElementCount * d);
        ByteLength = dtype.ByteCount(shape);
        this.host = host;
        this.buffer = buffer;
        this.byteOffset = byteOffset;
        this.keepAlive = keepAlive;
        this.owns = owns;
        if (buffer == null && host.Length != ByteLength)
            throw new ArgumentException($"storage of {host.Length} bytes for a {dtype} tensor of shape [{string.Join(", ", shape)}] ({ByteLength} bytes)");
    }

    public ReadOnlySpan<int> Shape => shape;
    public int Rank => shape.Length;
    public int Dim(int i) => shape[i < 0 ? shape.Length + i : i];
    public string ShapeString => "[" + string.Join(", ", shape) + "]";
    public override string ToString() => $"{DType}{ShapeString} on {Device}";

    /// <summary>A tensor with uninitialised contents.</summary>
    public static Tensor Empty(ReadOnlySpan<int> shape, DType dtype, Device device)
    {
        var s = shape.ToArray();
        long bytes = dtype.ByteCount(s);
        if (!device.IsIlgpu)
        {
            if (bytes > Array.MaxLength)
                throw new BitDeltaException($"a {dtype} tensor of shape [{string.Join(", ", s)}] is {bytes} bytes, past the 2 GiB limit of one host array");
            return new Tensor(s, dtype, device, GC.AllocateUninitializedArray<byte>((int)bytes, pinned: true), null, 0, null, owns: true);
        }
        var buf = device.Pool!.Rent(bytes);
        return new Tensor(s, dtype, device, default, buf, 0, null, owns: true);
    }

    /// <summary>A host tensor over memory the caller provides (a mapped file, say): no copy.
    /// <paramref name="keepAlive"/> stays referenced for as long as the tensor lives.</summary>
    public static Tensor FromHostMemory(Memory<byte> bytes, ReadOnlySpan<int> shape, DType dtype, IDisposable? keepAlive = null) =>
        new(shape.ToArray(), dtype, Device.Cpu, bytes, null, 0, keepAlive, owns: false);

    /// <summary>Copies an array into a new tensor: float → F32 (or F16/BF16, rounded), int → I32,
    /// ushort → F16/BF16 bits, uint → Sign1 words.</summary>
    public static Tensor From<T>(T[] data, ReadOnlySpan<int> shape, Device? device = null, DType? dtype = null) where T : unmanaged
    {
        device ??= Device.Cpu;
        var dt = dtype ?? (typeof(T) == typeof(float) ? DType.F32 : typeof(T) == typeof(int) ? DType.I32
            : typeof(T) == typeof(uint) ? DType.Sign1 : typeof(T) == typeof(byte) ? DType.U8
            : throw new ArgumentException($"give a dtype for {typeof(T).Name} data"));
        var bytes = MemoryMarshal.AsBytes(data.AsSpan());
        if (typeof(T) == typeof(float) && dt != DType.F32)
        {
            var conv = new byte[dt.ByteCount(shape)];
            Casts.FromF32(MemoryMarshal.Cast<byte, float>(bytes), dt, conv);
            bytes = conv;
        }
        var t = Empty(shape, dt, device);
        if (bytes.Length != t.ByteLength)
        {
            t.Dispose();
            throw new ArgumentException($"{data.Length} {typeof(T).Name} values do not fill a {dt} tensor of shape [{string.Join(", ", shape.ToArray())}]");
        }
        t.Upload(bytes);
        return t;
    }

    // ---- storage access ----

    /// <summary>The bytes of a host tensor.</summary>
    public Span<byte> HostBytes
    {
        get
        {
            CheckAlive();
            if (Device.IsIlgpu) throw new InvalidOperationException($"{this}: host bytes of a device tensor; copy it with To(Device.Cpu)");
            return host.Span;
        }
    }

    public Span<T> Host<T>() where T : unmanaged => MemoryMarshal.Cast<byte, T>(HostBytes);

    /// <summary>The storage of a device tensor as an ILGPU view of <typeparamref name="T"/>.</summary>
    public ArrayView<T> View<T>() where T : unmanaged
    {
        CheckAlive();
        if (buffer == null) throw new InvalidOperationException($"{this}: ILGPU view of a host tensor; copy it with To(device)");
        return buffer.View.SubView(byteOffset, ByteLength).AsContiguous().Cast<T>();
    }

    /// <summary>The device address of a device tensor's first byte (what inline PTX that addresses global memory itself,
    /// such as the copy engine's bulk copies, takes as a kernel argument).</summary>
    public long DeviceAddress
    {
        get
        {
            CheckAlive();
            if (buffer == null) throw new InvalidOperationException($"{this}: device address of a host tensor");
            return buffer.NativePtr.ToInt64() + byteOffset;
        }
    }

    ArrayView<byte> ByteView => buffer!.View.SubView(byteOffset, ByteLength).AsContiguous();

    /// <summary>
    /// Host bytes into the device buffer, in stream order and without waiting for the stream. ILGPU's CopyFromCPU
    /// waits for the whole stream after its copy, so an upload between launches (a decode step's row tables) held the
    /// host until the GPU had drained, and the GPU then idled while the host launched again. The driver takes pageable
    /// bytes into its staging memory before an asynchronous host-to-device copy returns (CUDA runtime API, "API
    /// synchronization behavior"), so <paramref name="src"/> is free to change once this returns; it is pinned for the call.
    /// </summary>
    unsafe void Upload(ReadOnlySpan<byte> src)
    {
        if (buffer == null) src.CopyTo(host.Span);
        else if (src.Length > 0)
            fixed (byte* p = src) ByteView.CopyFromCPUUnsafeAsync(ref *p, src.Length);
    }

    /// <summary>Bytes at <paramref name="src"/> (pinned host memory: the driver copies them by DMA after this returns, so
    /// they must stay until <paramref name="stream"/> is synchronised) into this device tensor at byte
    /// <paramref name="offset"/>, on <paramref name="stream"/> (<see cref="StagedUpload"/>).</summary>
    internal unsafe void UploadPinned(AcceleratorStream stream, long offset, byte* src, long length)
    {
        CheckAlive();
        if (buffer == null) throw new InvalidOperationException($"{this}: pinned upload into a host tensor");
        if (offset < 0 || offset + length > ByteLength) throw new ArgumentOutOfRangeException(nameof(offset), $"{this}: bytes {offset}+{length} past its {ByteLength}");
        if (length > 0) ByteView.SubView(offset, length).CopyFromCPUUnsafeAsync(stream, ref *src, length);
    }

    /// <summary>Copies this tensor's bytes into <paramref name="dst"/> (host memory).</summary>
    public void CopyTo(Span<byte> dst)
    {
        CheckAlive();
        if (buffer == null) host.Span.CopyTo(dst);
        else if (ByteLength > 0) ByteView.CopyToCPU(dst[..(int)ByteLength]);
    }

    /// <summary>Copies <paramref name="src"/> (same shape and dtype, any device) into this tensor.</summary>
    public void CopyFrom(Tensor src)
    {
        CheckAlive();
        if (src.DType != DType || !src.Shape.SequenceEqual(Shape))
            throw new ArgumentException($"copy from {src} into {this}: shape or dtype differ");
        if (src.buffer == null) Upload(src.HostBytes);
        else if (buffer == null) src.CopyTo(host.Span);
        else if (ByteLength > 0) src.ByteView.CopyTo(ByteView);
    }

    /// <summary>Sets every byte to <paramref name="value"/>. Tests poison outputs with it so that an
    /// element a kernel forgot to write is caught.</summary>
    public void Fill(byte value)
    {
        CheckAlive();
        if (buffer == null) host.Span.Fill(value);
        else if (ByteLength > 0) ByteView.MemSet(value);
    }

    // ---- copies, casts, views ----

    /// <summary>A copy on <paramref name="device"/> (this tensor itself if it is there already).</summary>
    public Tensor To(Device device)
    {
        if (device == Device) return this;
        var t = Empty(Shape, DType, device);
        t.CopyFrom(this);
        return t;
    }

    /// <summary>A new tensor of another float dtype, rounded to nearest even; on the same device.</summary>
    public Tensor Cast(DType dtype)
    {
        CheckAlive();
        if (!DType.IsFloat() || !dtype.IsFloat()) throw new NotSupportedException($"cast {DType} → {dtype}");
        var t = Empty(Shape, dtype, Device);
        if (dtype == DType) t.CopyFrom(this);
        else if (Device.IsIlgpu) Casts.OnDevice(this, t);
        else if (DType == DType.F32) Casts.FromF32(Host<float>(), dtype, t.HostBytes);
        else if (dtype == DType.F32) Casts.ToF32(HostBytes, DType, t.Host<float>());
        else
        {
            var tmp = new float[ElementCount];
            Casts.ToF32(HostBytes, DType, tmp);
            Casts.FromF32(tmp, dtype, t.HostBytes);
        }
        return t;
    }

    /// <summary>Rows <paramref name="start"/> .. start+count along the first dimension, sharing storage.</summary>
    public Tensor Slice(int start, int count)
    {
        CheckAlive();
        if (Rank == 0) throw new ArgumentException("slice of a scalar");
        if (start < 0 || count < 0 || start + count > shape[0])
            throw new ArgumentOutOfRangeException(nameof(start), $"rows {start}..{start + count} of {this}");
        var s = (int[])shape.Clone();
        s[0] = count;
        long rowBytes = shape[0] == 0 ? 0 : ByteLength / shape[0];
        long off = start * rowBytes, len = count * rowBytes;
        return buffer == null
            ? new Tensor(s, DType, Device, host.Slice((int)off, (int)len), null, 0, keepAlive, owns: false)
            : new Tensor(s, DType, Device, default, buffer, byteOffset + off, null, owns: false);
    }

    /// <summary>The same storage under another shape with the same element count. Sign1 tensors keep
    /// their last dimension (the packing runs along it).</summary>
    public Tensor Reshape(params int[] newShape)
    {
        CheckAlive();
        var t = buffer == null
            ? new Tensor(newShape, DType, Device, host, null, 0, keepAlive, owns: false)
            : new Tensor(newShape, DType, Device, default, buffer, byteOffset, null, owns: false);
        if (t.ElementCount != ElementCount || t.ByteLength != ByteLength)
            throw new ArgumentException($"reshape {this} to [{string.Join(", ", newShape)}]");
        return t;
    }

    /// <summary>The values as f32 on the host, from any float dtype on any device.</summary>
    public float[] ToFloatArray()
    {
        CheckAlive();
        var bytes = new byte[ByteLength];
        CopyTo(bytes);
        var f = new float[ElementCount];
        Casts.ToF32(bytes, DType, f);
        return f;
    }

    public T[] ToArray<T>() where T : unmanaged
    {
        CheckAlive();
        var bytes = new byte[ByteLength];
        CopyTo(bytes);
        return MemoryMarshal.Cast<byte, T>(bytes).ToArray();
    }

    void CheckAlive()
    {
        ObjectDisposedException.ThrowIf(disposed, this);
    }

    public void Dispose()
    {
        if (disposed) return;
        disposed = true;
        if (owns && buffer != null) Device.Pool!.Return(buffer);
        owns = false;
        GC.KeepAlive(keepAlive);
    }
}
