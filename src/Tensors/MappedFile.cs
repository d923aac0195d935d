using System.Buffers;
using System.IO.MemoryMappedFiles;

namespace BitDeltaNative;

/// <summary>A read-only memory map of a whole file. Tensors read from it are views of the mapping,
/// so opening a 13 GB checkpoint copies nothing: pages come in when a tensor is first touched.</summary>
public sealed unsafe class MappedFile : IDisposable
{
    readonly MemoryMappedFile? map;
    readonly MemoryMappedViewAccessor? view;
    readonly byte* ptr;
    public string Path { get; }
    public long Length { get; }

    public MappedFile(string path)
    {
        Path = path;
        Length = new FileInfo(path).Length;
        if (Length == 0) return;   // an empty file cannot be mapped; callers see Length 0
        map = MemoryMappedFile.CreateFromFile(path, FileMode.Open, null, 0, MemoryMappedFileAccess.Read);
        view = map.CreateViewAccessor(0, 0, MemoryMappedFileAccess.Read);
        byte* p = null;
        view.SafeMemoryMappedViewHandle.AcquirePointer(ref p);
        ptr = p + view.PointerOffset;
    }

    /// <summary>Bytes [offset, offset+length) of the file; bounds are checked.</summary>
    public ReadOnlySpan<byte> Span(long offset, long length)
    {
        Check(offset, length);
        return new ReadOnlySpan<byte>(ptr + offset, (int)length);
    }

    /// <summary>A <see cref="Memory{T}"/> over bytes [offset, offset+length), for tensors. The memory is
    /// mapped read-only: writing through it faults.</summary>
    public Memory<byte> Memory(long offset, long length)
    {
        Check(offset, length);
        return new Region(ptr + offset, (int)length).Memory;
    }

    void Check(long offset, long length)
    {
        if (offset < 0 || length < 0 || offset > Length - length || length > int.MaxValue)
            throw new ArgumentOutOfRangeException(nameof(offset), $"{Path}: bytes {offset}..{offset + length} of a {Length}-byte file");
    }

    public void Dispose()
    {
        if (view != null)
        {
            view.SafeMemoryMappedViewHandle.ReleasePointer();
            view.Dispose();
        }
        map?.Dispose();
    }

    sealed class Region(byte* p, int length) : MemoryManager<byte>
    {
        public override Span<byte> GetSpan() => new(p, length);
        public override MemoryHandle Pin(int elementIndex = 0) => new(p + elementIndex);
        public override void Unpin() { }
        protected override void Dispose(bool disposing) { }
    }
}
