using System.Globalization;
using BitDeltaNative.Models;

namespace BitDeltaNative.Charts;

/// <summary>The loss curve of a scale-distillation run (what <c>compress --calib</c> writes beside the delta).</summary>
public static class LossPlot
{
    public static Canvas Draw(string fileName, IReadOnlyList<float> loss, DistillOptions o)
    {
        var points = loss.Select((v, i) => ((double)i, (double)v)).ToList();
        double lo = loss.Min(), hi = loss.Max();
        bool log = lo > 0 && hi / lo > 30;
        var series = new List<Series> { new("loss", LineChart.Palette[0], points) };
        // A running mean over a tenth of the run shows the trend under the step-to-step noise of small batches.
        int w = Math.Max(1, loss.Count / 10);
        if (w > 1)
        {
            var mean = new List<(double, double)>();
            double sum = 0;
            for (int i = 0; i < loss.Count; i++)
            {
                sum += loss[i];
                if (i >= w) sum -= loss[i - w];
                if (i >= w - 1) mean.Add((i, sum / w));
            }
            series.Add(new Series($"mean of {w}", LineChart.Palette[1], mean));
        }
        var chart = new LineChart
        {
            Title = "distillation loss by step",
            XLabel = "step",
            YLabel = "MSE of logits" + (log ? " (log scale)" : ""),
            Series = series,
            LogY = log,
            IntegerX = true,
        };
        const int Width = 1000, Height = 560, Margin = 16;
        var c = new Canvas(Width, Height, Rgb.White);
        string title = $"BitDelta scale distillation: {fileName}";
        c.Text(Margin, Margin, title, Rgb.Black, scale: Canvas.TextWidth(title, 2) <= Width - 2 * Margin ? 2 : 1);
        string subtitle = string.Create(CultureInfo.InvariantCulture,
            $"{o.Steps} steps of {o.Batch} x {o.SeqLen} tokens, AdamW lr {o.Lr:G3} cosine; loss {loss[0]:G4} at step 0, {loss[^1]:G4} at the last");
        c.Text(Margin, Margin + 2 * Font.CellHeight + 6, subtitle, Rgb.DarkGrey);
        chart.Draw(c, new Rect(Margin, 70, Width - 2 * Margin, Height - 70 - Margin));
        return c;
    }
}
