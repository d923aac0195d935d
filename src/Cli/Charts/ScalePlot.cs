using System.Globalization;
using System.Text.RegularExpressions;
using BitDeltaNative.Models;

namespace BitDeltaNative.Charts;

/// <summary>
/// The picture of a delta file's BitDelta scales (α, one per compressed linear, arXiv 2402.10193 §3.1): a
/// heatmap of layers × the seven linears above a line chart of α by layer, one line per linear, sharing the
/// layer axis so a column of the heatmap sits over the points of that layer.
/// </summary>
public static partial class ScalePlot
{
    [GeneratedRegex(@"^model\.layers\.(\d+)\.(.+)\.weight$")]
    private static partial Regex LayerLinear();

    /// <summary>The short names the picture uses for <see cref="LayerWeights.LinearNames"/>.</summary>
    static string Short(string linear) => linear[(linear.LastIndexOf('.') + 1)..];

    public static Canvas Draw(string fileName, string codec, IReadOnlyDictionary<string, float> scales, bool distilled = false)
    {
        var linears = LayerWeights.LinearNames;
        var byLayer = new Dictionary<(int Layer, int Linear), double>();
        foreach (var (name, alpha) in scales)
        {
            var m = LayerLinear().Match(name);
            int which = m.Success ? Array.IndexOf(linears, m.Groups[2].Value) : -1;
            if (which >= 0 && int.TryParse(m.Groups[1].Value, NumberStyles.None, CultureInfo.InvariantCulture, out int layer))
                byLayer[(layer, which)] = alpha;
        }
        if (byLayer.Count == 0) throw new BitDeltaException($"{fileName}: no scales of decoder-layer linears (model.layers.N.*_proj.weight) to plot");
        int layers = byLayer.Keys.Max(k => k.Layer) + 1;
        int others = scales.Count - byLayer.Count;
        var values = new double[linears.Length, layers];
        for (int i = 0; i < linears.Length; i++)
            for (int l = 0; l < layers; l++)
                values[i, l] = byLayer.TryGetValue((l, i), out double v) ? v : double.NaN;
        double lo = byLayer.Values.Min(), hi = byLayer.Values.Max();
        bool log = lo > 0 && hi / lo > 30;   // scales more than an order of magnitude apart: a log scale shows them all

        var series = linears.Select((name, i) => new Series(Short(name), LineChart.Palette[i],
            Enumerable.Range(0, layers).Select(l => ((double)l, values[i, l])).ToList())).ToList();
        var heat = new Heatmap
        {
            Title = "alpha per layer (columns) and linear (rows)" + (log ? ", log colour scale" : ""),
            XLabel = "layer",
            Values = values,
            RowLabels = [.. linears.Select(Short)],
            Log = log,
        };
        var chart = new LineChart
        {
            Title = "alpha by layer, one line per linear",
            XLabel = "layer",
            YLabel = "alpha" + (log ? " (log scale)" : ""),
            Series = series,
            LogY = log,
            XRange = (-0.5, layers - 0.5),
            IntegerX = true,
            MinLeftMargin = heat.LabelWidth,
        };

        const int Width = 1000, Margin = 16, RowHeight = 20;
        int gridTop = 96, gridHeight = RowHeight * linears.Length;
        int chartTop = gridTop + gridHeight + 52, chartHeight = 420;
        var c = new Canvas(Width, chartTop + chartHeight + Margin, Rgb.White);

        string title = $"BitDelta scales: {fileName}";
        c.Text(Margin, Margin, title, Rgb.Black, scale: Canvas.TextWidth(title, 2) <= Width - 2 * Margin ? 2 : 1);
        string subtitle = $"codec {codec}, {scales.Count} matrices ({layers} layer{(layers == 1 ? "" : "s")} x {linears.Length} linears" +
                          (others > 0 ? $"; {others} not in a decoder layer, not drawn" : "") +
                          $"); alpha = {(distilled ? "distilled" : "mean |W_ft - W_base|")}, from {lo.ToString("0.000e0", CultureInfo.InvariantCulture)} to {hi.ToString("0.000e0", CultureInfo.InvariantCulture)}";
        c.Text(Margin, Margin + 2 * Font.CellHeight + 6, subtitle, Rgb.DarkGrey);

        // The chart first: its plot area fixes the x pixels of the heatmap's columns. Its left margin leaves room
        // for the heatmap's row labels; its legend column holds the colour bar above it.
        var plot = chart.Draw(c, new Rect(Margin, chartTop, Width - 2 * Margin, chartHeight));
        heat.Draw(c, new Rect(plot.X, gridTop, plot.W, gridHeight), plot.Right + 8);
        return c;
    }
}
