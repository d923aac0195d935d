using System.Text;
using BitDeltaNative.Charts;
using BitDeltaNative.Tests.Tensors;
using FsCheck;
using FsCheck.Fluent;
using FsCheck.Xunit;

namespace BitDeltaNative.Tests.Cli;

public class PngTests
{
    [Fact]
    public void Crc32_of_the_check_string_is_CBF43926()
    {
        Assert.Equal(0xCBF43926u, Crc32.Of(Encoding.ASCII.GetBytes("123456789")));
        Assert.Equal(0xCBF43926u, PngDecoder.Crc(Encoding.ASCII.GetBytes("123456789")));
        Assert.Equal(0u, Crc32.Of([]));
    }

    [Property(MaxTest = 200)]
    public void Crc32_table_matches_the_bitwise_definition(byte[] bytes) =>
        Assert.Equal(PngDecoder.Crc(bytes), Crc32.Of(bytes));

    /// <summary>A canvas with random pixels, flat rectangles, lines and text, so that every filter type has rows
    /// it suits.</summary>
    static Canvas RandomCanvas(int w, int h, int seed)
    {
        var rng = new Random(seed);
        Rgb Any() => new((byte)rng.Next(256), (byte)rng.Next(256), (byte)rng.Next(256));
        var c = new Canvas(w, h, Any());
        for (int k = rng.Next(6); k > 0; k--) c.FillRect(rng.Next(-5, w), rng.Next(-5, h), rng.Next(1, w + 5), rng.Next(1, h + 5), Any());
        for (int k = rng.Next(4); k > 0; k--) c.Line(rng.Next(-3, w + 3), rng.Next(-3, h + 3), rng.Next(-3, w + 3), rng.Next(-3, h + 3), Any(), rng.Next(1, 3));
        for (int k = rng.Next(3); k > 0; k--) c.Set(rng.Next(w), rng.Next(h), Any());
        if (rng.Next(2) == 0) c.Text(rng.Next(-4, w), rng.Next(-4, h), "a1.e-5", Any());
        if (rng.Next(3) == 0) rng.NextBytes(c.Pixels.AsSpan(0, Math.Min(c.Pixels.Length, rng.Next(3 * w * h + 1))));
        if (rng.Next(3) == 0)   // gradients, which the Sub, Up, Average and Paeth filters flatten
            for (int y = 0; y < h; y++) for (int x = 0; x < w; x++) c.Set(x, y, new((byte)(x * 3), (byte)(y * 5), (byte)(x + y)));
        return c;
    }

    [Property(MaxTest = 80)]
    public void Random_canvases_round_trip_through_png(PositiveInt w, PositiveInt h, int seed)
    {
        // Sizes 1..70 by 1..40: odd widths, single rows and columns, and the 1x1 image all come up.
        int width = 1 + (w.Get - 1) % 70, height = 1 + (h.Get - 1) % 40;
        var c = RandomCanvas(width, height, seed);
        var back = PngDecoder.Decode(Png.Encode(c.Width, c.Height, c.Pixels));
        Assert.Equal((width, height, 3), (back.Width, back.Height, back.Channels));
        Assert.Equal(c.Pixels, back.Pixels);
    }

    [Theory]
    [InlineData(1, 1)]
    [InlineData(1, 7)]
    [InlineData(7, 1)]
    [InlineData(33, 5)]
    public void Small_and_odd_sizes_round_trip(int w, int h)
    {
        for (int seed = 0; seed < 5; seed++)
        {
            var c = RandomCanvas(w, h, seed);
            Assert.Equal(c.Pixels, PngDecoder.Decode(Png.Encode(w, h, c.Pixels)).Pixels);
        }
    }

    [Property(MaxTest = 40)]
    public void Rgba_round_trips(PositiveInt w, PositiveInt h, int seed)
    {
        int width = 1 + (w.Get - 1) % 50, height = 1 + (h.Get - 1) % 30;
        var px = new byte[width * height * 4];
        new Random(seed).NextBytes(px);
        var back = PngDecoder.Decode(Png.Encode(width, height, px, channels: 4));
        Assert.Equal(4, back.Channels);
        Assert.Equal(px, back.Pixels);
    }

    [Fact]
    public void Rows_get_the_filter_that_suits_them_and_big_images_split_idat()
    {
        // Flat rows suit None or Up, a horizontal gradient Sub, a smooth 2D field Average or Paeth; big enough that
        // the compressed data spans several IDAT chunks.
        int w = 600, h = 400;
        var c = new Canvas(w, h, Rgb.White);
        var rng = new Random(1);
        for (int y = 0; y < h; y++)
            for (int x = 0; x < w; x++)
                c.Set(x, y, y < 100 ? Rgb.Hex(0x336699)
                    : y < 200 ? new((byte)x, (byte)(2 * x), (byte)(3 * x))
                    : y < 300 ? new((byte)(x + y), (byte)(x * y / 64), (byte)((x ^ y) & 0xF0))
                    : new((byte)rng.Next(256), (byte)rng.Next(256), (byte)rng.Next(256)));
        var png = Png.Encode(w, h, c.Pixels);
        var back = PngDecoder.Decode(png);
        Assert.Equal(c.Pixels, back.Pixels);
        Assert.True(back.FilterCounts.Count(n => n > 0) >= 3, $"filter types used: {string.Join(",", back.FilterCounts)}");
        Assert.True(back.FilterCounts[1] > 0, "no row chose Sub");
        Assert.True(Encoding.ASCII.GetString(png).Split("IDAT").Length - 1 >= 2, "one IDAT chunk only");
    }

    [Fact]
    public void Png_write_is_atomic_and_never_overwrites()
    {
        using var dir = new TempDir();
        var c = RandomCanvas(9, 4, 3);
        string path = dir.File("a.png");
        long n = Png.Write(path, c);
        var bytes = File.ReadAllBytes(path);
        Assert.Equal(n, bytes.Length);
        Assert.Equal(c.Pixels, PngDecoder.Decode(bytes).Pixels);
        var e = Assert.Throws<BitDeltaException>(() => Png.Write(path, RandomCanvas(9, 4, 4)));
        Assert.Contains("exists already", e.Message);
        Assert.Equal(bytes, File.ReadAllBytes(path));
        Assert.Equal(["a.png"], Directory.GetFiles(dir.Path).Select(Path.GetFileName));   // no temporary left behind
    }

    [Fact]
    public void The_decoder_catches_a_flipped_bit_in_any_chunk()
    {
        // So that a passing round trip means the CRCs were right, not unchecked.
        var png = Png.Encode(5, 3, RandomCanvas(5, 3, 9).Pixels);
        for (int at = 8; at < png.Length; at += 7)
        {
            var bad = (byte[])png.Clone();
            bad[at] ^= 0x10;
            Assert.ThrowsAny<Exception>(() => PngDecoder.Decode(bad));
        }
    }

    [Fact]
    public void Bad_encoder_input_is_refused()
    {
        Assert.Throws<ArgumentException>(() => Png.Encode(0, 1, []));
        Assert.Throws<ArgumentException>(() => Png.Encode(2, 2, new byte[11]));
        Assert.Throws<ArgumentException>(() => Png.Encode(1, 1, new byte[2], channels: 2));
    }
}
