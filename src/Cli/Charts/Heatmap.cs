using System.Globalization;

namespace BitDeltaNative.Charts;

/// <summary>
/// A grid of values drawn as coloured cells (rows labelled at the left, columns numbered 0.. below) with a colour
/// bar at the right. Missing values (NaN) are grey. Colours run through viridis, which is perceptually uniform and
/// reads in grey-scale and for the common colour-vision deficiencies.
/// </summary>
public sealed class Heatmap
{
    public string Title { get; init; } = "";
    public string XLabel { get; init; } = "";
    /// <summary>Values by [row, column].</summary>
    public required double[,] Values { get; init; }
    public required IReadOnlyList<string> RowLabels { get; init; }
    /// <summary>Colours by log10 of the value (every value &gt; 0), for values orders of magnitude apart.</summary>
    public bool Log { get; init; }

    /// <summary>matplotlib's viridis at ten evenly spaced points (its colours at 0, 1/9, …, 1); between them we
    /// interpolate linearly.</summary>
    static readonly Rgb[] Viridis =
        [.. new[] { 0x440154, 0x482878, 0x3E4989, 0x31688E, 0x26828E, 0x1F9E89, 0x35B779, 0x6ECE58, 0xB5DE2B, 0xFDE725 }.Select(Rgb.Hex)];

    public static Rgb Colormap(double t)
    {
        t = Math.Clamp(double.IsNaN(t) ? 0 : t, 0, 1) * (Viridis.Length - 1);
        int i = Math.Min((int)t, Viridis.Length - 2);
        return Viridis[i].Mix(Viridis[i + 1], t - i);
    }

    const int Gap = 4, Tick = 4, BarWidth = 14;

    /// <summary>Room the row labels need left of the grid.</summary>
    public int LabelWidth => RowLabels.Max(l => Canvas.TextWidth(l)) + 2 * Gap;

    /// <summary>Draws the cells in <paramref name="grid"/> (column j centred where a line chart with x extent
    /// [-0.5, columns - 0.5] over the same pixels puts x = j), the title above, labels around, and the colour bar
    /// from <paramref name="barX"/>.</summary>
    public void Draw(Canvas c, Rect grid, int barX)
    {
        int rows = Values.GetLength(0), cols = Values.GetLength(1);
        var finite = Values.Cast<double>().Where(double.IsFinite).ToList();
        double lo = finite.Count > 0 ? finite.Min() : 0, hi = finite.Count > 0 ? finite.Max() : 1;
        if (Log && lo <= 0) throw new ArgumentException($"heatmap '{Title}': a log colour scale needs values > 0, the least is {lo}");
        double F(double v) => Log ? Math.Log10(v) : v;
        double T(double v) => hi > lo ? (F(v) - F(lo)) / (F(hi) - F(lo)) : 0.5;

        if (Title.Length > 0) c.Text(grid.X + (grid.W - Canvas.TextWidth(Title)) / 2, grid.Y - Font.CellHeight - 2 * Gap, Title, Rgb.Black);
        int X(int j) => grid.X + (int)Math.Round((double)j * grid.W / cols);
        int Y(int i) => grid.Y + (int)Math.Round((double)i * grid.H / rows);
        for (int i = 0; i < rows; i++)
        {
            c.Text(grid.X - Gap - Canvas.TextWidth(RowLabels[i]), (Y(i) + Y(i + 1) - Font.Ascent) / 2, RowLabels[i], Rgb.DarkGrey);
            for (int j = 0; j < cols; j++)
            {
                double v = Values[i, j];
                var colour = double.IsFinite(v) ? Colormap(T(v)) : Rgb.LightGrey;
                c.FillRect(X(j), Y(i), X(j + 1) - X(j), Y(i + 1) - Y(i), colour);
                // Where a cell is wide enough, its value too, in black or white for contrast.
                string text = double.IsFinite(v) ? ValueLabel(v) : "";
                if (text.Length > 0 && Canvas.TextWidth(text) + 2 * Gap <= X(j + 1) - X(j) && Font.CellHeight + 2 <= Y(i + 1) - Y(i))
                    c.Text((X(j) + X(j + 1) - Canvas.TextWidth(text)) / 2, (Y(i) + Y(i + 1) - Font.Ascent) / 2, text, colour.Luma > 0.5 ? Rgb.Black : Rgb.White);
            }
        }
        // Thin white separators between cells where the cells are big enough to keep them apart.
        if (grid.W / cols >= 6) for (int j = 1; j < cols; j++) c.FillRect(X(j), grid.Y, 1, grid.H, Rgb.White);
        if (grid.H / rows >= 6) for (int i = 1; i < rows; i++) c.FillRect(grid.X, Y(i), grid.W, 1, Rgb.White);

        // Column numbers below, thinned to nice steps where columns are narrow.
        var colTicks = Ticks.Linear(0, Math.Max(cols - 1, 0), Math.Max(1, Math.Min(cols - 1, grid.W / 40)), 1);
        foreach (var (v, label) in colTicks.Values.Zip(colTicks.Labels))
        {
            if (v < 0 || v > cols - 1) continue;
            int x = (X((int)v) + X((int)v + 1)) / 2;
            c.FillRect(x, grid.Bottom, 1, Tick, Rgb.DarkGrey);
            c.Text(x - Canvas.TextWidth(label) / 2, grid.Bottom + Tick + Gap, label, Rgb.DarkGrey);
        }
        if (XLabel.Length > 0)
            c.Text(grid.X + (grid.W - Canvas.TextWidth(XLabel)) / 2, grid.Bottom + Tick + 2 * Gap + Font.CellHeight, XLabel, Rgb.Black);

        // Colour bar: low values at the bottom; its ends labelled with the lowest and highest value, and nice
        // ticks between them where they keep clear of the end labels.
        for (int y = 0; y < grid.H; y++)
            c.FillRect(barX, grid.Bottom - 1 - y, BarWidth, 1, Colormap(grid.H > 1 ? (double)y / (grid.H - 1) : 0.5));
        c.StrokeRect(barX - 1, grid.Y - 1, BarWidth + 2, grid.H + 2, Rgb.DarkGrey);
        if (finite.Count == 0) return;
        int BarY(double v) => grid.Bottom - 1 - (int)Math.Round(T(v) * (grid.H - 1));
        void BarLabel(int y, string label)
        {
            c.FillRect(barX + BarWidth, y, Tick, 1, Rgb.DarkGrey);
            c.Text(barX + BarWidth + Tick + Gap, y - Font.Ascent / 2, label, Rgb.DarkGrey);
        }
        BarLabel(BarY(hi), ValueLabel(hi));
        if (hi > lo) BarLabel(BarY(lo), ValueLabel(lo));
        var inner = Log ? Ticks.Log(lo, hi) : Ticks.Linear(lo, hi, 4);
        for (int k = 0; k < inner.Values.Length; k++)
        {
            int y = BarY(inner.Values[k]);
            if (y > BarY(hi) + 2 * Font.CellHeight && y < BarY(lo) - 2 * Font.CellHeight) BarLabel(y, ValueLabel(inner.Values[k]));
        }
    }

    /// <summary>A value as the cells and the colour bar show it: three significant digits.</summary>
    static string ValueLabel(double v) => v.ToString("0.00e0", CultureInfo.InvariantCulture);
}
