namespace BitDeltaNative.Charts;

/// <summary>An sRGB colour, 8 bits a channel.</summary>
public readonly record struct Rgb(byte R, byte G, byte B)
{
    /// <summary>From 0xRRGGBB, the way colours are written in palettes.</summary>
    public static Rgb Hex(int rgb) => new((byte)(rgb >> 16), (byte)(rgb >> 8), (byte)rgb);

    public static readonly Rgb White = Hex(0xFFFFFF), Black = Hex(0x000000), LightGrey = Hex(0xE6E6E6), DarkGrey = Hex(0x404040);

    /// <summary>The colour a fraction <paramref name="t"/> of the way from this one to <paramref name="to"/>.</summary>
    public Rgb Mix(Rgb to, double t) => new(Lerp(R, to.R, t), Lerp(G, to.G, t), Lerp(B, to.B, t));

    static byte Lerp(byte a, byte b, double t) => (byte)Math.Round(a + (b - a) * Math.Clamp(t, 0, 1));

    /// <summary>Relative luminance (Rec. 709 weights on the encoded values, close enough to pick black or white text).</summary>
    public double Luma => (0.2126 * R + 0.7152 * G + 0.0722 * B) / 255;
}

/// <summary>
/// An RGB pixel canvas, row-major from the top-left, 3 bytes a pixel (what <see cref="Png.Encode"/> takes).
/// Everything drawn is clipped to the canvas, so callers need not check bounds.
/// </summary>
public sealed class Canvas
{
    public int Width { get; }
    public int Height { get; }
    public byte[] Pixels { get; }

    public Canvas(int width, int height, Rgb background)
    {
        if (width < 1 || height < 1) throw new ArgumentException($"canvas size {width}x{height}");
        Width = width;
        Height = height;
        Pixels = new byte[checked(width * height * 3)];
        FillRect(0, 0, width, height, background);
    }

    public Rgb this[int x, int y]
    {
        get { int i = (y * Width + x) * 3; return new(Pixels[i], Pixels[i + 1], Pixels[i + 2]); }
    }

    public void Set(int x, int y, Rgb c)
    {
        if ((uint)x >= (uint)Width || (uint)y >= (uint)Height) return;
        int i = (y * Width + x) * 3;
        Pixels[i] = c.R; Pixels[i + 1] = c.G; Pixels[i + 2] = c.B;
    }

    public void FillRect(int x, int y, int w, int h, Rgb c)
    {
        int x0 = Math.Max(x, 0), y0 = Math.Max(y, 0), x1 = Math.Min(x + w, Width), y1 = Math.Min(y + h, Height);
        for (int yy = y0; yy < y1; yy++)
            for (int xx = x0; xx < x1; xx++) Set(xx, yy, c);
    }

    /// <summary>A one-pixel rectangle outline.</summary>
    public void StrokeRect(int x, int y, int w, int h, Rgb c)
    {
        FillRect(x, y, w, 1, c); FillRect(x, y + h - 1, w, 1, c);
        FillRect(x, y, 1, h, c); FillRect(x + w - 1, y, 1, h, c);
    }

    /// <summary>Bresenham's line (integer error term, all octants); <paramref name="thick"/> 2 also sets the pixel
    /// below and to the right of each one, a 2×2 pen.</summary>
    public void Line(int x0, int y0, int x1, int y1, Rgb c, int thick = 1)
    {
        int dx = Math.Abs(x1 - x0), sx = x0 < x1 ? 1 : -1, dy = -Math.Abs(y1 - y0), sy = y0 < y1 ? 1 : -1, err = dx + dy;
        while (true)
        {
            if (thick > 1) FillRect(x0, y0, thick, thick, c); else Set(x0, y0, c);
            if (x0 == x1 && y0 == y1) break;
            int e2 = 2 * err;
            if (e2 >= dy) { err += dy; x0 += sx; }
            if (e2 <= dx) { err += dx; y0 += sy; }
        }
    }

    /// <summary>A filled disc: every pixel whose centre is within <paramref name="r"/> + 0.5 of (cx, cy).</summary>
    public void FillCircle(int cx, int cy, int r, Rgb c)
    {
        double rr = (r + 0.5) * (r + 0.5);
        for (int y = -r; y <= r; y++)
            for (int x = -r; x <= r; x++)
                if (x * x + y * y <= rr) Set(cx + x, cy + y, c);
    }

    /// <summary>Draws <paramref name="text"/> with its top-left at (x, y), each glyph pixel a
    /// <paramref name="scale"/>×<paramref name="scale"/> square; characters outside ASCII 32..126 draw as '?'.
    /// Returns the width drawn.</summary>
    public int Text(int x, int y, string text, Rgb c, int scale = 1)
    {
        for (int i = 0; i < text.Length; i++)
        {
            var cols = Font.Glyph(text[i]);
            for (int col = 0; col < Font.GlyphWidth; col++)
                for (int row = 0; row < Font.GlyphHeight; row++)
                    if ((cols[col] >> row & 1) != 0) FillRect(x + (i * Font.CellWidth + col) * scale, y + row * scale, scale, scale, c);
        }
        return TextWidth(text, scale);
    }

    /// <summary>Text turned a quarter turn anticlockwise (read bottom to top, as a y-axis label), with the
    /// bottom-left of the first glyph at (x, y + its advance): the text runs upwards from (x, y).</summary>
    public void TextUp(int x, int y, string text, Rgb c)
    {
        for (int i = 0; i < text.Length; i++)
        {
            var cols = Font.Glyph(text[i]);
            for (int col = 0; col < Font.GlyphWidth; col++)
                for (int row = 0; row < Font.GlyphHeight; row++)
                    if ((cols[col] >> row & 1) != 0) Set(x + row, y - i * Font.CellWidth - col, c);
        }
    }

    /// <summary>Width in pixels of <paramref name="text"/> at <paramref name="scale"/>, without the trailing gap.</summary>
    public static int TextWidth(string text, int scale = 1) =>
        text.Length == 0 ? 0 : (text.Length * Font.CellWidth - (Font.CellWidth - Font.GlyphWidth)) * scale;
}

/// <summary>
/// A 5×7 bitmap font for ASCII 32..126 with one row of descender (g, j, p, q, y, _), in a 6×9 cell, written in
/// the layout of the classic 5×7 character-LCD fonts: five bytes a glyph, one a column from left to right, bit 0
/// the top row, bit 6 the baseline row, bit 7 the descender.
/// </summary>
public static class Font
{
    /// <summary><see cref="Ascent"/>: rows from the top to the baseline, inclusive (capitals and digits fill them).</summary>
    public const int GlyphWidth = 5, GlyphHeight = 8, Ascent = 7, CellWidth = 6, CellHeight = 9, First = 32, Last = 126;

    public static ReadOnlySpan<byte> Glyph(char ch)
    {
        int i = ch is >= (char)First and <= (char)Last ? ch - First : '?' - First;
        return Columns.AsSpan(i * GlyphWidth, GlyphWidth);
    }

    static readonly byte[] Columns =
    [
        0x00, 0x00, 0x00, 0x00, 0x00, // ' '
        0x00, 0x00, 0x5F, 0x00, 0x00, // !
        0x00, 0x07, 0x00, 0x07, 0x00, // "
        0x14, 0x7F, 0x14, 0x7F, 0x14, // #
        0x24, 0x2A, 0x7F, 0x2A, 0x12, // $
        0x23, 0x13, 0x08, 0x64, 0x62, // %
        0x36, 0x49, 0x55, 0x22, 0x50, // &
        0x00, 0x05, 0x03, 0x00, 0x00, // '
        0x00, 0x1C, 0x22, 0x41, 0x00, // (
        0x00, 0x41, 0x22, 0x1C, 0x00, // )
        0x14, 0x08, 0x3E, 0x08, 0x14, // *
        0x08, 0x08, 0x3E, 0x08, 0x08, // +
        0x00, 0x50, 0x30, 0x00, 0x00, // ,
        0x08, 0x08, 0x08, 0x08, 0x08, // -
        0x00, 0x60, 0x60, 0x00, 0x00, // .
        0x20, 0x10, 0x08, 0x04, 0x02, // /
        0x3E, 0x51, 0x49, 0x45, 0x3E, // 0
        0x00, 0x42, 0x7F, 0x40, 0x00, // 1
        0x42, 0x61, 0x51, 0x49, 0x46, // 2
        0x21, 0x41, 0x45, 0x4B, 0x31, // 3
        0x18, 0x14, 0x12, 0x7F, 0x10, // 4
        0x27, 0x45, 0x45, 0x45, 0x39, // 5
        0x3C, 0x4A, 0x49, 0x49, 0x30, // 6
        0x01, 0x71, 0x09, 0x05, 0x03, // 7
        0x36, 0x49, 0x49, 0x49, 0x36, // 8
        0x06, 0x49, 0x49, 0x29, 0x1E, // 9
        0x00, 0x36, 0x36, 0x00, 0x00, // :
        0x00, 0x56, 0x36, 0x00, 0x00, // ;
        0x08, 0x14, 0x22, 0x41, 0x00, // <
        0x14, 0x14, 0x14, 0x14, 0x14, // =
        0x00, 0x41, 0x22, 0x14, 0x08, // >
        0x02, 0x01, 0x51, 0x09, 0x06, // ?
        0x32, 0x49, 0x79, 0x41, 0x3E, // @
        0x7E, 0x11, 0x11, 0x11, 0x7E, // A
        0x7F, 0x49, 0x49, 0x49, 0x36, // B
        0x3E, 0x41, 0x41, 0x41, 0x22, // C
        0x7F, 0x41, 0x41, 0x22, 0x1C, // D
        0x7F, 0x49, 0x49, 0x49, 0x41, // E
        0x7F, 0x09, 0x09, 0x09, 0x01, // F
        0x3E, 0x41, 0x49, 0x49, 0x7A, // G
        0x7F, 0x08, 0x08, 0x08, 0x7F, // H
        0x00, 0x41, 0x7F, 0x41, 0x00, // I
        0x20, 0x40, 0x41, 0x3F, 0x01, // J
        0x7F, 0x08, 0x14, 0x22, 0x41, // K
        0x7F, 0x40, 0x40, 0x40, 0x40, // L
        0x7F, 0x02, 0x0C, 0x02, 0x7F, // M
        0x7F, 0x04, 0x08, 0x10, 0x7F, // N
        0x3E, 0x41, 0x41, 0x41, 0x3E, // O
        0x7F, 0x09, 0x09, 0x09, 0x06, // P
        0x3E, 0x41, 0x51, 0x21, 0x5E, // Q
        0x7F, 0x09, 0x19, 0x29, 0x46, // R
        0x46, 0x49, 0x49, 0x49, 0x31, // S
        0x01, 0x01, 0x7F, 0x01, 0x01, // T
        0x3F, 0x40, 0x40, 0x40, 0x3F, // U
        0x1F, 0x20, 0x40, 0x20, 0x1F, // V
        0x3F, 0x40, 0x38, 0x40, 0x3F, // W
        0x63, 0x14, 0x08, 0x14, 0x63, // X
        0x07, 0x08, 0x70, 0x08, 0x07, // Y
        0x61, 0x51, 0x49, 0x45, 0x43, // Z
        0x00, 0x7F, 0x41, 0x41, 0x00, // [
        0x02, 0x04, 0x08, 0x10, 0x20, // backslash
        0x00, 0x41, 0x41, 0x7F, 0x00, // ]
        0x04, 0x02, 0x01, 0x02, 0x04, // ^
        0x80, 0x80, 0x80, 0x80, 0x80, // _
        0x00, 0x01, 0x02, 0x04, 0x00, // `
        0x20, 0x54, 0x54, 0x54, 0x78, // a
        0x7F, 0x48, 0x44, 0x44, 0x38, // b
        0x38, 0x44, 0x44, 0x44, 0x20, // c
        0x38, 0x44, 0x44, 0x48, 0x7F, // d
        0x38, 0x54, 0x54, 0x54, 0x18, // e
        0x08, 0x7E, 0x09, 0x01, 0x02, // f
        0x98, 0xA4, 0xA4, 0xA4, 0x7C, // g
        0x7F, 0x08, 0x04, 0x04, 0x78, // h
        0x00, 0x44, 0x7D, 0x40, 0x00, // i
        0x40, 0x80, 0x84, 0x7D, 0x00, // j
        0x7F, 0x10, 0x28, 0x44, 0x00, // k
        0x00, 0x41, 0x7F, 0x40, 0x00, // l
        0x7C, 0x04, 0x18, 0x04, 0x78, // m
        0x7C, 0x08, 0x04, 0x04, 0x78, // n
        0x38, 0x44, 0x44, 0x44, 0x38, // o
        0xFC, 0x24, 0x24, 0x24, 0x18, // p
        0x18, 0x24, 0x24, 0x24, 0xFC, // q
        0x7C, 0x08, 0x04, 0x04, 0x08, // r
        0x48, 0x54, 0x54, 0x54, 0x20, // s
        0x04, 0x3F, 0x44, 0x40, 0x20, // t
        0x3C, 0x40, 0x40, 0x20, 0x7C, // u
        0x1C, 0x20, 0x40, 0x20, 0x1C, // v
        0x3C, 0x40, 0x30, 0x40, 0x3C, // w
        0x44, 0x28, 0x10, 0x28, 0x44, // x
        0x9C, 0xA0, 0xA0, 0xA0, 0x7C, // y
        0x44, 0x64, 0x54, 0x4C, 0x44, // z
        0x00, 0x08, 0x36, 0x41, 0x00, // {
        0x00, 0x00, 0x7F, 0x00, 0x00, // |
        0x00, 0x41, 0x36, 0x08, 0x00, // }
        0x08, 0x04, 0x08, 0x10, 0x08, // ~
    ];
}
