using System.Buffers.Binary;
using System.Text;
using System.Text.Json;

namespace BitDeltaNative;

/// <summary>Where one tensor lies in a safetensors file. Offsets are relative to the data buffer
/// that follows the header.</summary>
public sealed record TensorEntry(string Name, DType DType, int[] Shape, long Begin, long End)
{
    public long ByteLength => End - Begin;
    public string ShapeString => "[" + string.Join(", ", Shape) + "]";
}

/// <summary>
/// One safetensors file, memory-mapped (format: https://github.com/huggingface/safetensors, "Format"):
/// an 8-byte little-endian header length N, N bytes of JSON header, then the data buffer. Every check
/// the reference implementation makes is made here before any tensor is read, so that a bad file is
/// a one-line error naming the file and the tensor, never an out-of-range read.
/// </summary>
public sealed class SafetensorsFile : IDisposable
{
    /// <summary>The reference implementation refuses headers over 100 MB.</summary>
    public const long MaxHeaderBytes = 100_000_000;

    readonly MappedFile file;
    readonly Dictionary<string, TensorEntry> byName;
    public string Path => file.Path;
    public long DataStart { get; }
    public IReadOnlyDictionary<string, string> Metadata { get; }
    /// <summary>Entries in the order of their offsets.</summary>
    public IReadOnlyList<TensorEntry> Entries { get; }

    SafetensorsFile(MappedFile file, long dataStart, Dictionary<string, string> metadata, List<TensorEntry> entries)
    {
        this.file = file;
        DataStart = dataStart;
        Metadata = metadata;
        Entries = entries;
        byName = entries.ToDictionary(e => e.Name);
    }

    public static SafetensorsFile Open(string path)
    {
        MappedFile file;
        try { file = new MappedFile(path); }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            throw new BitDeltaException($"{path}: cannot open: {e.Message}", e);
        }
        try { return Parse(file); }
        catch { file.Dispose(); throw; }
    }

    static SafetensorsFile Parse(MappedFile file)
    {
        string path = file.Path;
        BitDeltaException Bad(string what) => new($"{path}: {what}");
        if (file.Length < 8) throw Bad($"truncated: {file.Length} bytes, but a safetensors file starts with an 8-byte header length");
        ulong n = BinaryPrimitives.ReadUInt64LittleEndian(file.Span(0, 8));
        if (n > (ulong)(file.Length - 8)) throw Bad($"header length {n} runs past the end of the file ({file.Length} bytes)");
        if (n > MaxHeaderBytes) throw Bad($"header length {n} is over the 100 MB limit of the format");
        var header = file.Span(8, (long)n);
        if (header.Length == 0 || header[0] != (byte)'{') throw Bad("header does not start with '{'");
        if (!System.Text.Unicode.Utf8.IsValid(header)) throw Bad("header is not valid UTF-8");
        long dataStart = 8 + (long)n, dataLength = file.Length - dataStart;

        var metadata = new Dictionary<string, string>();
        var entries = new List<TensorEntry>();
        var seen = new HashSet<string>();
        JsonDocument doc;
        try { doc = JsonDocument.Parse(header.ToArray()); }
        catch (JsonException e) { throw Bad($"header is not valid JSON ({OneLine(e.Message)})"); }
        using (doc)
        {
            if (doc.RootElement.ValueKind != JsonValueKind.Object) throw Bad("header is not a JSON object");
            foreach (var prop in doc.RootElement.EnumerateObject())
            {
                if (!seen.Add(prop.Name)) throw Bad($"tensor '{prop.Name}': name appears twice in the header");
                if (prop.Name == "__metadata__")
                {
                    if (prop.Value.ValueKind != JsonValueKind.Object) throw Bad("__metadata__ is not an object");
                    foreach (var m in prop.Value.EnumerateObject())
                    {
                        if (m.Value.ValueKind != JsonValueKind.String) throw Bad($"__metadata__ '{m.Name}' is not a string");
                        if (!metadata.TryAdd(m.Name, m.Value.GetString()!)) throw Bad($"__metadata__ '{m.Name}' appears twice");
                    }
                    continue;
                }
                entries.Add(ParseEntry(path, prop.Name, prop.Value, dataLength));
            }
        }

        // The data buffer must be covered exactly: no overlap, no hole, nothing after the last tensor.
        entries.Sort((a, b) => a.Begin != b.Begin ? a.Begin.CompareTo(b.Begin) : a.End.CompareTo(b.End));
        long end = 0;
        TensorEntry? prev = null;
        foreach (var e in entries)
        {
            if (e.Begin < end) throw Bad($"tensor '{e.Name}': data_offsets [{e.Begin}, {e.End}] overlap tensor '{prev!.Name}' [{prev.Begin}, {prev.End}]");
            if (e.Begin > end) throw Bad($"tensor '{e.Name}': data_offsets start at {e.Begin}, leaving a hole after byte {end} of the data buffer");
            end = e.End;
            prev = e;
        }
        if (end != dataLength)
            throw Bad(end < dataLength
                ? $"data buffer is {dataLength} bytes but the tensors cover only {end} (trailing bytes)"
                : $"truncated: tensors need {end} bytes of data but the file holds {dataLength}");
        return new SafetensorsFile(file, dataStart, metadata, entries);
    }

    static TensorEntry ParseEntry(string path, string name, JsonElement v, long dataLength)
    {
        BitDeltaException Bad(string what) => new($"{path}: tensor '{name}': {what}");
        if (v.ValueKind != JsonValueKind.Object) throw Bad("entry is not an object");
        if (!v.TryGetProperty("dtype", out var dt) || dt.ValueKind != JsonValueKind.String) throw Bad("missing dtype");
        if (!DTypes.TryParseSafetensors(dt.GetString()!, out var dtype)) throw Bad($"unknown dtype '{dt.GetString()}'");
        if (!v.TryGetProperty("shape", out var sh) || sh.ValueKind != JsonValueKind.Array) throw Bad("missing shape");
        var shape = new int[sh.GetArrayLength()];
        int i = 0;
        foreach (var d in sh.EnumerateArray())
        {
            if (d.ValueKind != JsonValueKind.Number || !d.TryGetInt32(out shape[i]) || shape[i] < 0)
                throw Bad($"shape {sh.GetRawText()} is not a list of non-negative 32-bit integers");
            i++;
        }
        if (!v.TryGetProperty("data_offsets", out var off) || off.ValueKind != JsonValueKind.Array || off.GetArrayLength() != 2)
            throw Bad("data_offsets is not a pair [begin, end]");
        if (off[0].ValueKind != JsonValueKind.Number || !off[0].TryGetInt64(out long begin) ||
            off[1].ValueKind != JsonValueKind.Number || !off[1].TryGetInt64(out long end) || begin < 0 || end < begin)
            throw Bad($"data_offsets {off.GetRawText()} are not 0 <= begin <= end");
        if (end > dataLength) throw Bad($"data_offsets [{begin}, {end}] run past the end of the data buffer ({dataLength} bytes)");
        long bytes;
        try { bytes = dtype.ByteCount(shape); }
        catch (OverflowException) { throw Bad($"shape {sh.GetRawText()} is too large"); }
        if (bytes != end - begin)
            throw Bad($"shape {sh.GetRawText()} of {dtype.SafetensorsName()} needs {bytes} bytes but data_offsets [{begin}, {end}] hold {end - begin}");
        return new TensorEntry(name, dtype, shape, begin, end);
    }

    static string OneLine(string s) => s.ReplaceLineEndings(" ");

    public bool Contains(string name) => byName.ContainsKey(name);

    public TensorEntry Entry(string name) =>
        byName.TryGetValue(name, out var e) ? e : throw new BitDeltaException($"{Path}: no tensor '{name}'");

    /// <summary>The raw bytes of a tensor, straight from the mapping.</summary>
    public ReadOnlySpan<byte> Bytes(string name)
    {
        var e = Entry(name);
        return file.Span(DataStart + e.Begin, e.ByteLength);
    }

    /// <summary>A host tensor over the mapped bytes: no copy. It keeps the mapping alive and must not
    /// be written to. <paramref name="as"/> reinterprets U32 words as packed signs, for example.</summary>
    public Tensor Get(string name, DType? @as = null, int[]? shape = null)
    {
        var e = Entry(name);
        var t = Tensor.FromHostMemory(file.Memory(DataStart + e.Begin, e.ByteLength), shape ?? e.Shape, @as ?? e.DType, file);
        return t;
    }

    public void Dispose() => file.Dispose();
}

/// <summary>Writes safetensors files to a temporary name in the same folder and renames it when
/// complete, so a reader never sees half a file and an interrupted write leaves the old file as it was.</summary>
public static class SafetensorsWriter
{
    public static void Write(string path, IReadOnlyList<(string Name, Tensor Tensor)> tensors,
                             IReadOnlyDictionary<string, string>? metadata = null)
    {
        var byName = new Dictionary<string, Tensor>();
        foreach (var (name, t) in tensors) byName.TryAdd(name, t);
        Write(path, tensors.Select(t => (t.Name, t.Tensor.DType, t.Tensor.Shape.ToArray())).ToList(), name => byName[name], metadata, owned: false);
    }

    /// <summary>
    /// Writes tensors one at a time as <paramref name="produce"/> makes them, in the order of <paramref name="layout"/>
    /// (name, dtype, shape), so a file larger than memory can be written; each produced tensor is disposed after it
    /// is written when <paramref name="owned"/>. A tensor that does not match its layout entry is an error.
    /// </summary>
    public static void Write(string path, IReadOnlyList<(string Name, DType DType, int[] Shape)> layout, Func<string, Tensor> produce,
                             IReadOnlyDictionary<string, string>? metadata = null, bool owned = true, bool overwrite = true)
    {
        var names = new HashSet<string>();
        foreach (var (name, _, _) in layout)
        {
            if (name == "__metadata__") throw new ArgumentException($"{path}: '__metadata__' is not a tensor name");
            if (!names.Add(name)) throw new ArgumentException($"{path}: tensor '{name}' given twice");
        }
        byte[] header = Header(layout, metadata);
        AtomicFile.Write(path, stream =>
        {
            Span<byte> len = stackalloc byte[8];
            BinaryPrimitives.WriteUInt64LittleEndian(len, (ulong)header.Length);
            stream.Write(len);
            stream.Write(header);
            foreach (var (name, dtype, shape) in layout)
            {
                var t = produce(name);
                try
                {
                    if (t.DType != dtype || !t.Shape.SequenceEqual(shape))
                        throw new ArgumentException($"{path}: tensor '{name}' is {t}, the header says {dtype} [{string.Join(", ", shape)}]");
                    if (!t.Device.IsIlgpu) stream.Write(t.HostBytes);
                    else
                    {
                        var bytes = new byte[t.ByteLength];
                        t.CopyTo(bytes);
                        stream.Write(bytes);
                    }
                }
                finally
                {
                    if (owned) t.Dispose();
                }
            }
        }, overwrite);
    }

    static byte[] Header(IReadOnlyList<(string Name, DType DType, int[] Shape)> layout, IReadOnlyDictionary<string, string>? metadata)
    {
        var ms = new MemoryStream();
        using (var w = new Utf8JsonWriter(ms))
        {
            w.WriteStartObject();
            if (metadata is { Count: > 0 })
            {
                w.WriteStartObject("__metadata__");
                foreach (var (k, v) in metadata) w.WriteString(k, v);
                w.WriteEndObject();
            }
            long offset = 0;
            foreach (var (name, dtype, shape) in layout)
            {
                w.WriteStartObject(name);
                w.WriteString("dtype", dtype.SafetensorsName());
                w.WriteStartArray("shape");
                // Packed signs are stored as their U32 words: [..., ceil(columns / 32)].
                var stored = shape.ToArray();
                if (dtype == DType.Sign1 && stored.Length > 0) stored[^1] = DTypes.SignWordsPerRow(stored[^1]);
                foreach (var d in stored) w.WriteNumberValue(d);
                w.WriteEndArray();
                w.WriteStartArray("data_offsets");
                w.WriteNumberValue(offset);
                w.WriteNumberValue(offset += dtype.ByteCount(shape));
                w.WriteEndArray();
                w.WriteEndObject();
            }
            w.WriteEndObject();
        }
        // Pad with spaces so the data buffer starts 8-byte aligned, as the reference writer does.
        int pad = (int)((8 - ms.Length % 8) % 8);
        for (int i = 0; i < pad; i++) ms.WriteByte((byte)' ');
        return ms.ToArray();
    }
}

/// <summary>Write-to-temporary-then-rename, used for every file the project writes.</summary>
public static class AtomicFile
{
    /// <summary>With <paramref name="overwrite"/> false the rename itself refuses a file that exists (an
    /// <see cref="IOException"/>), so one that appeared while we wrote is not replaced either.</summary>
    public static void Write(string path, Action<Stream> write, bool overwrite = true)
    {
        string full = System.IO.Path.GetFullPath(path);
        string dir = System.IO.Path.GetDirectoryName(full)!;
        Directory.CreateDirectory(dir);
        string tmp = System.IO.Path.Combine(dir, $".{System.IO.Path.GetFileName(full)}.tmp-{Environment.ProcessId}-{Guid.NewGuid():N}");
        try
        {
            using (var fs = new FileStream(tmp, FileMode.CreateNew, FileAccess.Write, FileShare.None, 1 << 20))
            {
                write(fs);
                fs.Flush(flushToDisk: true);
            }
            File.Move(tmp, full, overwrite);
        }
        catch
        {
            try { File.Delete(tmp); } catch (IOException) { }
            throw;
        }
    }

    public static void WriteAllText(string path, string text) =>
        Write(path, s => s.Write(Encoding.UTF8.GetBytes(text)));
}
