namespace BitDeltaNative.Charts;

/// <summary>A rectangle of pixels: left, top, width, height.</summary>
public readonly record struct Rect(int X, int Y, int W, int H)
{
    public int Right => X + W;
    public int Bottom => Y + H;
}

/// <summary>One line of a chart: its name in the legend, its colour, and its points in the order they are joined
/// (a NaN, or a value ≤ 0 on a log axis, breaks the line).</summary>
public sealed record Series(string Name, Rgb Color, IReadOnlyList<(double X, double Y)> Points);

/// <summary>
/// A line chart: series over x, axes with nice ticks (<see cref="Ticks"/>), light grid lines, optional log y,
/// a title, axis labels and a legend at the right. It draws the BitDelta scales by layer and, later, loss curves
/// (step against loss).
/// </summary>
public sealed class LineChart
{
    public string Title { get; init; } = "";
    public string XLabel { get; init; } = "";
    public string YLabel { get; init; } = "";
    public required IReadOnlyList<Series> Series { get; init; }
    public bool LogY { get; init; }
    /// <summary>A fixed x extent (ticks inside it only); null: the nice ticks around the data.</summary>
    public (double Min, double Max)? XRange { get; init; }
    /// <summary>x is a whole number (a layer, a step): no ticks between integers.</summary>
    public bool IntegerX { get; init; }
    /// <summary>At least this much room left of the plot area, so charts stacked above one another line up.</summary>
    public int MinLeftMargin { get; init; }

    /// <summary>matplotlib's "tab10" qualitative palette, for series.</summary>
    public static readonly Rgb[] Palette =
        [.. new[] { 0x1F77B4, 0xFF7F0E, 0x2CA02C, 0xD62728, 0x9467BD, 0x8C564B, 0xE377C2, 0x7F7F7F, 0xBCBD22, 0x17BECF }.Select(Rgb.Hex)];

    const int Tick = 4, Gap = 4, LineHeight = Font.CellHeight + 4, Swatch = 16;

    /// <summary>The legend's width for these series (0 with none), so a caller can line up what sits beside it.</summary>
    public int LegendWidth => Series.Count == 0 ? 0 : Swatch + Gap + Series.Max(s => Canvas.TextWidth(s.Name)) + 2 * Gap;

    /// <summary>Draws the chart inside <paramref name="area"/>; returns the plot area (inside the axes).</summary>
    public Rect Draw(Canvas c, Rect area)
    {
        var points = Series.SelectMany(s => s.Points).Where(p => double.IsFinite(p.X) && double.IsFinite(p.Y) && (!LogY || p.Y > 0)).ToList();
        if (points.Count == 0) throw new ArgumentException($"chart '{Title}': no points to draw");
        double yMin = points.Min(p => p.Y), yMax = points.Max(p => p.Y);
        var yTicks = LogY ? Ticks.Log(yMin, yMax) : Ticks.Linear(yMin, yMax, 6);
        var (x0, x1) = XRange ?? (points.Min(p => p.X), points.Max(p => p.X));
        var xTicks = Ticks.Linear(x0, x1, 8, IntegerX ? 1 : 0);
        if (XRange == null) (x0, x1) = (xTicks.Values[0], xTicks.Values[^1]);
        double y0 = yTicks.Values[0], y1 = yTicks.Values[^1];

        int top = area.Y + (Title.Length > 0 ? LineHeight + Gap : Font.CellHeight);
        int bottom = area.Bottom - (Tick + Gap + Font.CellHeight + (XLabel.Length > 0 ? Gap + LineHeight : 0));
        int yLabelWidth = yTicks.Labels.Max(l => Canvas.TextWidth(l));
        int left = area.X + Math.Max(MinLeftMargin, (YLabel.Length > 0 ? Font.CellHeight + 2 * Gap : 0) + yLabelWidth + Gap + Tick);
        int right = area.Right - (LegendWidth > 0 ? LegendWidth + 3 * Gap : Gap);
        var plot = new Rect(left, top, right - left, bottom - top);
        if (plot.W < 20 || plot.H < 20) throw new ArgumentException($"chart '{Title}': {area.W}x{area.H} pixels is too small");

        int Px(double x) => plot.X + (int)Math.Round((x - x0) / (x1 - x0) * (plot.W - 1));
        double Ty(double y) => LogY ? Math.Log10(y) : y;
        int Py(double y) => plot.Bottom - 1 - (int)Math.Round((Ty(y) - Ty(y0)) / (Ty(y1) - Ty(y0)) * (plot.H - 1));

        if (Title.Length > 0) c.Text(plot.X + (plot.W - Canvas.TextWidth(Title)) / 2, area.Y, Title, Rgb.Black);

        // Grid and y ticks: labels right-aligned against the tick marks, centred on their line.
        for (int i = 0; i < yTicks.Values.Length; i++)
        {
            int y = Py(yTicks.Values[i]);
            c.FillRect(plot.X, y, plot.W, 1, Rgb.LightGrey);
            c.FillRect(plot.X - Tick, y, Tick, 1, Rgb.DarkGrey);
            c.Text(plot.X - Tick - Gap - Canvas.TextWidth(yTicks.Labels[i]), y - Font.Ascent / 2, yTicks.Labels[i], Rgb.DarkGrey);
        }
        // x ticks inside the x extent; labels thinned to every n-th where they would touch.
        var xs = Enumerable.Range(0, xTicks.Values.Length).Where(i => xTicks.Values[i] >= x0 - 1e-9 * Math.Abs(x1 - x0) && xTicks.Values[i] <= x1 + 1e-9 * Math.Abs(x1 - x0)).ToList();
        int widest = xs.Max(i => Canvas.TextWidth(xTicks.Labels[i]));
        int spacing = xs.Count > 1 ? Px(xTicks.Values[xs[1]]) - Px(xTicks.Values[xs[0]]) : int.MaxValue;
        int every = Math.Max(1, (int)Math.Ceiling((widest + 2.0 * Gap) / Math.Max(1, spacing)));
        for (int j = 0; j < xs.Count; j++)
        {
            int x = Px(xTicks.Values[xs[j]]);
            c.FillRect(x, plot.Y, 1, plot.H, Rgb.LightGrey);
            c.FillRect(x, plot.Bottom, 1, Tick, Rgb.DarkGrey);
            if (j % every == 0)
            {
                string label = xTicks.Labels[xs[j]];
                c.Text(x - Canvas.TextWidth(label) / 2, plot.Bottom + Tick + Gap, label, Rgb.DarkGrey);
            }
        }
        // Axes: left and bottom.
        c.FillRect(plot.X, plot.Y, 1, plot.H, Rgb.DarkGrey);
        c.FillRect(plot.X, plot.Bottom - 1, plot.W, 1, Rgb.DarkGrey);
        if (XLabel.Length > 0)
            c.Text(plot.X + (plot.W - Canvas.TextWidth(XLabel)) / 2, plot.Bottom + Tick + Gap + LineHeight, XLabel, Rgb.Black);
        if (YLabel.Length > 0)
            c.TextUp(area.X + Gap, plot.Y + (plot.H + Canvas.TextWidth(YLabel)) / 2, YLabel, Rgb.Black);

        // Series: 2-pixel lines, and markers where points are far enough apart to tell them from the line.
        int most = Series.Max(s => s.Points.Count);
        bool markers = most <= plot.W / 8;
        foreach (var s in Series)
        {
            (int X, int Y)? last = null;
            foreach (var (x, y) in s.Points)
            {
                if (!double.IsFinite(x) || !double.IsFinite(y) || (LogY && y <= 0) || x < x0 || x > x1) { last = null; continue; }
                var p = (X: Px(x), Y: Py(y));
                if (last is { } q) c.Line(q.X, q.Y, p.X, p.Y, s.Color, thick: 2);
                if (markers) c.FillCircle(p.X, p.Y, 3, s.Color);
                last = p;
            }
        }

        // Legend: a swatch and the name of each series, top-right beside the plot.
        if (LegendWidth > 0)
        {
            int lx = plot.Right + 2 * Gap, ly = plot.Y;
            c.FillRect(lx, ly, LegendWidth, Series.Count * LineHeight + Gap, Rgb.White);
            c.StrokeRect(lx, ly, LegendWidth, Series.Count * LineHeight + Gap, Rgb.LightGrey);
            for (int i = 0; i < Series.Count; i++)
            {
                int cy = ly + Gap + i * LineHeight + Font.Ascent / 2;
                c.Line(lx + Gap, cy, lx + Gap + Swatch - 4, cy, Series[i].Color, thick: 2);
                if (markers) c.FillCircle(lx + Gap + (Swatch - 4) / 2, cy, 3, Series[i].Color);
                c.Text(lx + Gap + Swatch, ly + Gap + i * LineHeight, Series[i].Name, Rgb.Black);
            }
        }
        return plot;
    }
}
