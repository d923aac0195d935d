using System.Buffers.Binary;
using System.IO.Compression;
using System.Text;

namespace BitDeltaNative.Tests.Cli;

/// <summary>A decoded PNG: size, channels (3 RGB, 4 RGBA), pixels row-major from the top, and how many rows used
/// each filter type 0..4.</summary>
public sealed record DecodedPng(int Width, int Height, int Channels, byte[] Pixels, int[] FilterCounts)
{
    public (byte R, byte G, byte B) Rgb(int x, int y)
    {
        int i = (y * Width + x) * Channels;
        return (Pixels[i], Pixels[i + 1], Pixels[i + 2]);
    }
}

/// <summary>
/// A strict PNG decoder for what the encoder may write (8-bit truecolour with or without alpha, not interlaced),
/// written from the W3C PNG specification independently of the encoder: it checks the signature, the chunk
/// order (IHDR first, IDAT consecutive, IEND last and empty), every chunk's CRC with a bit-at-a-time CRC-32
/// (not the encoder's table), inflates the concatenated IDAT data and undoes filter types 0-4.
/// </summary>
public static class PngDecoder
{
    static readonly byte[] Signature = [137, 80, 78, 71, 13, 10, 26, 10];

    /// <summary>CRC-32 straight from its definition: polynomial 0x04C11DB7 reflected (0xEDB88320), one bit at a time.</summary>
    public static uint Crc(ReadOnlySpan<byte> bytes)
    {
        uint c = 0xFFFFFFFF;
        foreach (byte b in bytes)
        {
            c ^= b;
            for (int k = 0; k < 8; k++) c = (c >> 1) ^ (0xEDB88320 & (uint)-(int)(c & 1));
        }
        return ~c;
    }

    public static DecodedPng Decode(byte[] png)
    {
        if (png.Length < 8 || !png.AsSpan(0, 8).SequenceEqual(Signature)) throw new InvalidDataException("bad signature");
        int at = 8;
        var chunks = new List<(string Type, byte[] Data)>();
        while (at < png.Length)
        {
            if (png.Length - at < 12) throw new InvalidDataException($"truncated chunk at {at}");
            int len = BinaryPrimitives.ReadInt32BigEndian(png.AsSpan(at));
            if (len < 0 || len > png.Length - at - 12) throw new InvalidDataException($"chunk length {len} at {at}");
            string type = Encoding.ASCII.GetString(png, at + 4, 4);
            uint crc = BinaryPrimitives.ReadUInt32BigEndian(png.AsSpan(at + 8 + len));
            if (crc != Crc(png.AsSpan(at + 4, 4 + len))) throw new InvalidDataException($"CRC of {type} at {at} is wrong");
            chunks.Add((type, png.AsSpan(at + 8, len).ToArray()));
            at += 12 + len;
        }
        if (chunks.Count < 3 || chunks[0].Type != "IHDR" || chunks[^1].Type != "IEND" || chunks[^1].Data.Length != 0)
            throw new InvalidDataException($"chunk order {string.Join(",", chunks.Select(c => c.Type))}");
        var idat = chunks.Select((c, i) => (c, i)).Where(p => p.c.Type == "IDAT").Select(p => p.i).ToList();
        if (idat.Count == 0 || idat[^1] - idat[0] != idat.Count - 1) throw new InvalidDataException("IDAT chunks missing or not consecutive");

        var h = chunks[0].Data;
        if (h.Length != 13) throw new InvalidDataException("IHDR length");
        int width = BinaryPrimitives.ReadInt32BigEndian(h), height = BinaryPrimitives.ReadInt32BigEndian(h.AsSpan(4));
        if (width < 1 || height < 1) throw new InvalidDataException($"size {width}x{height}");
        if (h[8] != 8 || h[9] is not (2 or 6) || h[10] != 0 || h[11] != 0 || h[12] != 0)
            throw new InvalidDataException($"IHDR depth {h[8]} colour type {h[9]} compression {h[10]} filter {h[11]} interlace {h[12]}");
        int channels = h[9] == 2 ? 3 : 4, stride = width * channels;

        var z = new MemoryStream();
        foreach (int i in idat) z.Write(chunks[i].Data);
        z.Position = 0;
        var raw = new MemoryStream();
        using (var inflate = new ZLibStream(z, CompressionMode.Decompress)) inflate.CopyTo(raw);
        var data = raw.ToArray();
        if (data.Length != (long)height * (1 + stride)) throw new InvalidDataException($"{data.Length} bytes of scanlines, expected {height * (1 + stride)}");

        var pixels = new byte[height * stride];
        var counts = new int[5];
        for (int y = 0; y < height; y++)
        {
            int type = data[y * (1 + stride)];
            if (type > 4) throw new InvalidDataException($"row {y}: filter type {type}");
            counts[type]++;
            for (int i = 0; i < stride; i++)
            {
                int x = data[y * (1 + stride) + 1 + i];
                int a = i >= channels ? pixels[y * stride + i - channels] : 0;
                int b = y > 0 ? pixels[(y - 1) * stride + i] : 0;
                int c = i >= channels && y > 0 ? pixels[(y - 1) * stride + i - channels] : 0;
                int predictor = type switch
                {
                    0 => 0,
                    1 => a,
                    2 => b,
                    3 => (a + b) / 2,
                    _ => PaethPredictor(a, b, c),
                };
                pixels[y * stride + i] = (byte)(x + predictor);
            }
        }
        return new DecodedPng(width, height, channels, pixels, counts);
    }

    static int PaethPredictor(int a, int b, int c)
    {
        int p = a + b - c;
        int pa = Math.Abs(p - a), pb = Math.Abs(p - b), pc = Math.Abs(p - c);
        if (pa <= pb && pa <= pc) return a;
        return pb <= pc ? b : c;
    }
}
