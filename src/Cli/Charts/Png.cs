using System.Buffers.Binary;
using System.IO.Compression;
using System.Text;

namespace BitDeltaNative.Charts;

/// <summary>
/// A PNG encoder for 8-bit truecolour images (W3C PNG 3rd edition; RFC 2083 is the same format): the signature,
/// IHDR, the zlib-compressed scanlines in IDAT chunks, IEND. Non-interlaced, filter method 0, with the filter
/// type chosen per row by the heuristic the spec suggests (section "Filter selection": the type whose output has
/// the smallest sum of absolute values, bytes read as signed).
/// </summary>
public static class Png
{
    static readonly byte[] Signature = [137, 80, 78, 71, 13, 10, 26, 10];

    /// <summary>IDAT payloads are split at this size; the zlib stream is the concatenation of all IDAT chunks
    /// (section "IDAT Image data"), so any split is valid.</summary>
    const int IdatChunkBytes = 1 << 16;

    /// <summary>The PNG bytes of a <paramref name="width"/>×<paramref name="height"/> image whose pixels are
    /// row-major, top row first, <paramref name="channels"/> bytes each: 3 (RGB, colour type 2) or 4 (RGBA,
    /// colour type 6, alpha not premultiplied).</summary>
    public static byte[] Encode(int width, int height, ReadOnlySpan<byte> pixels, int channels = 3)
    {
        if (channels is not (3 or 4)) throw new ArgumentException($"channels must be 3 (RGB) or 4 (RGBA), got {channels}");
        // IHDR: width and height are 1 .. 2^31-1; we also keep a row within an int.
        if (width < 1 || height < 1 || (long)width * channels > int.MaxValue - 1) throw new ArgumentException($"bad image size {width}x{height}");
        if (pixels.Length != (long)width * height * channels) throw new ArgumentException($"{pixels.Length} bytes of pixels for {width}x{height}x{channels}");

        var png = new MemoryStream();
        png.Write(Signature);
        var ihdr = new byte[13];
        BinaryPrimitives.WriteInt32BigEndian(ihdr.AsSpan(0), width);
        BinaryPrimitives.WriteInt32BigEndian(ihdr.AsSpan(4), height);
        ihdr[8] = 8;                              // bit depth
        ihdr[9] = (byte)(channels == 3 ? 2 : 6);  // colour type: truecolour, or truecolour with alpha
        ihdr[10] = 0;                             // compression method 0: zlib deflate
        ihdr[11] = 0;                             // filter method 0: the five adaptive filter types
        ihdr[12] = 0;                             // no interlace
        WriteChunk(png, "IHDR", ihdr);

        var zdata = new MemoryStream();
        using (var z = new ZLibStream(zdata, CompressionLevel.SmallestSize, leaveOpen: true))
        {
            int stride = width * channels;
            var prior = new byte[stride];  // §9.2: the row above the first is taken as zeros
            var filtered = new byte[1 + stride];
            var best = new byte[1 + stride];
            for (int y = 0; y < height; y++)
            {
                var row = pixels.Slice(y * stride, stride);
                long bestCost = long.MaxValue;
                for (byte type = 0; type <= 4; type++)
                {
                    filtered[0] = type;
                    Filter(type, row, prior, channels, filtered.AsSpan(1));
                    long cost = 0;
                    for (int i = 1; i < filtered.Length; i++) cost += Math.Abs((int)(sbyte)filtered[i]);
                    if (cost < bestCost) { bestCost = cost; filtered.CopyTo(best, 0); }
                }
                z.Write(best);
                row.CopyTo(prior);
            }
        }
        var compressed = zdata.GetBuffer().AsSpan(0, (int)zdata.Length);
        for (int at = 0; at < compressed.Length; at += IdatChunkBytes)
            WriteChunk(png, "IDAT", compressed.Slice(at, Math.Min(IdatChunkBytes, compressed.Length - at)));
        WriteChunk(png, "IEND", []);
        return png.ToArray();
    }

    /// <summary>Writes a canvas as an RGB PNG, atomically (a temporary name in the same folder, then a rename),
    /// and refuses to replace a file that exists, even one that appeared while we were encoding.</summary>
    public static long Write(string path, Canvas canvas)
    {
        var bytes = Encode(canvas.Width, canvas.Height, canvas.Pixels);
        try { AtomicFile.Write(path, s => s.Write(bytes), overwrite: false); }
        catch (IOException) when (File.Exists(path)) { throw new BitDeltaException($"{path}: exists already; nothing was overwritten"); }
        return bytes.Length;
    }

    /// <summary>§9.2 "Filter types for filter method 0", with a = the byte one pixel to the left, b = the byte above, c = above-left
    /// (zero outside the image); arithmetic is modulo 256.</summary>
    static void Filter(byte type, ReadOnlySpan<byte> row, ReadOnlySpan<byte> prior, int bpp, Span<byte> output)
    {
        for (int i = 0; i < row.Length; i++)
        {
            int x = row[i], a = i >= bpp ? row[i - bpp] : 0, b = prior[i], c = i >= bpp ? prior[i - bpp] : 0;
            output[i] = (byte)(type switch
            {
                0 => x,
                1 => x - a,
                2 => x - b,
                3 => x - ((a + b) >> 1),
                _ => x - Paeth(a, b, c),
            });
        }
    }

    /// <summary>§9.4 "Filter type 4: Paeth": the neighbour (a, b or c, ties in that order) closest to a + b − c.</summary>
    public static int Paeth(int a, int b, int c)
    {
        int p = a + b - c, pa = Math.Abs(p - a), pb = Math.Abs(p - b), pc = Math.Abs(p - c);
        return pa <= pb && pa <= pc ? a : pb <= pc ? b : c;
    }

    /// <summary>§5.3 "Chunk layout": length (of the data only), type, data, CRC over type and data.</summary>
    static void WriteChunk(Stream s, string type, ReadOnlySpan<byte> data)
    {
        Span<byte> head = stackalloc byte[8];
        BinaryPrimitives.WriteInt32BigEndian(head, data.Length);
        Encoding.ASCII.GetBytes(type, head[4..]);
        s.Write(head);
        s.Write(data);
        uint crc = Crc32.Update(Crc32.Update(Crc32.Init, head[4..]), data);
        Span<byte> tail = stackalloc byte[4];
        BinaryPrimitives.WriteUInt32BigEndian(tail, crc ^ Crc32.Init);
        s.Write(tail);
    }
}

/// <summary>
/// CRC-32 of ISO 3309 / ITU-T V.42 as PNG uses it (§5.5 "CRC algorithm", sample code in Annex D): polynomial 0x04C11DB7, bits
/// processed least significant first (so the table uses the reflected 0xEDB88320), register preset to all ones
/// and complemented at the end. The check value of "123456789" is 0xCBF43926.
/// </summary>
public static class Crc32
{
    public const uint Init = 0xFFFFFFFF;

    static readonly uint[] Table = MakeTable();

    static uint[] MakeTable()
    {
        var t = new uint[256];
        for (uint n = 0; n < 256; n++)
        {
            uint c = n;
            for (int k = 0; k < 8; k++) c = (c & 1) != 0 ? 0xEDB88320 ^ (c >> 1) : c >> 1;
            t[n] = c;
        }
        return t;
    }

    /// <summary>Runs the register over more bytes; start from <see cref="Init"/>, complement when done.</summary>
    public static uint Update(uint crc, ReadOnlySpan<byte> bytes)
    {
        foreach (byte b in bytes) crc = Table[(crc ^ b) & 0xFF] ^ (crc >> 8);
        return crc;
    }

    public static uint Of(ReadOnlySpan<byte> bytes) => Update(Init, bytes) ^ Init;
}
