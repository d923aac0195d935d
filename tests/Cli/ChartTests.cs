using BitDeltaNative.Charts;
using FsCheck;
using FsCheck.Fluent;
using FsCheck.Xunit;

namespace BitDeltaNative.Tests.Cli;

public class ChartTests
{
    static List<(int X, int Y)> Ink(Canvas c, Rgb background)
    {
        var ink = new List<(int, int)>();
        for (int y = 0; y < c.Height; y++)
            for (int x = 0; x < c.Width; x++)
                if (c[x, y] != background) ink.Add((x, y));
        return ink;
    }

    [Fact]
    public void Every_printable_ascii_glyph_draws_inside_its_cell_and_differs_from_the_others()
    {
        var seen = new Dictionary<string, char>();
        var descenders = new List<char>();
        for (char ch = (char)Font.First; ch <= (char)Font.Last; ch++)
        {
            // The glyph drawn in the middle of a 3x3 block of cells: no ink may land outside the middle cell's glyph box.
            var c = new Canvas(3 * Font.CellWidth, 3 * Font.CellHeight, Rgb.White);
            Assert.Equal(Font.GlyphWidth, c.Text(Font.CellWidth, Font.CellHeight, ch.ToString(), Rgb.Black));
            var ink = Ink(c, Rgb.White);
            Assert.All(ink, p =>
            {
                Assert.InRange(p.X, Font.CellWidth, Font.CellWidth + Font.GlyphWidth - 1);
                Assert.InRange(p.Y, Font.CellHeight, Font.CellHeight + Font.GlyphHeight - 1);
            });
            if (ch == ' ') Assert.Empty(ink);
            else Assert.True(ink.Count > 0, $"'{ch}' draws nothing");
            if (ink.Any(p => p.Y - Font.CellHeight >= Font.Ascent)) descenders.Add(ch);
            string key = string.Join(";", ink);
            Assert.False(seen.TryGetValue(key, out char twin), $"'{ch}' looks the same as '{twin}'");
            seen[key] = ch;
        }
        // Only these reach below the baseline; everything else sits on it, so text lines up.
        Assert.Equal("_gjpqy", new string([.. descenders]));
        Assert.Equal(Font.Glyph('?').ToArray(), Font.Glyph('\u00e9').ToArray());   // outside ASCII: '?'
    }

    [Fact]
    public void Text_advances_one_cell_a_character_and_scales()
    {
        Assert.Equal(0, Canvas.TextWidth(""));
        Assert.Equal(5 * Font.CellWidth - 1, Canvas.TextWidth("1e-4."));
        var c = new Canvas(80, 30, Rgb.White);
        int w = c.Text(1, 1, "Ab", Rgb.Black, scale: 2);
        var ink = Ink(c, Rgb.White);
        Assert.Equal(2 * (2 * Font.CellWidth - 1), w);
        Assert.True(ink.Max(p => p.X) < 1 + w && ink.Max(p => p.Y) < 1 + 2 * Font.GlyphHeight);
        // Scaled ink comes in 2x2 blocks.
        Assert.All(ink, p => Assert.Equal(Rgb.Black, c[p.X % 2 == 1 ? p.X + 1 : p.X - 1, p.Y]));
    }

    [Fact]
    public void Lines_join_their_end_points_and_everything_clips_to_the_canvas()
    {
        var c = new Canvas(20, 10, Rgb.White);
        c.Line(2, 3, 17, 8, Rgb.Black);
        Assert.Equal(Rgb.Black, c[2, 3]);
        Assert.Equal(Rgb.Black, c[17, 8]);
        var ink = Ink(c, Rgb.White);
        Assert.Equal(16, ink.Count);   // x-major: one pixel a column
        Assert.Equal(16, ink.Select(p => p.X).Distinct().Count());
        // Off-canvas drawing does not throw and sets nothing out of place.
        c.Line(-50, -50, 70, 90, Rgb.Black, thick: 2);
        c.FillCircle(-2, 5, 4, Rgb.Black);
        c.FillRect(15, 5, 100, 100, Rgb.Black);
        c.Text(18, -3, "Wg", Rgb.Black, 2);
        c.TextUp(-3, 4, "xyz", Rgb.Black);
    }

    [Fact]
    public void Filled_circles_are_round_and_centred()
    {
        var c = new Canvas(11, 11, Rgb.White);
        c.FillCircle(5, 5, 3, Rgb.Black);
        var ink = Ink(c, Rgb.White);
        Assert.Equal(5.0, ink.Average(p => p.X), 6);
        Assert.Equal(5.0, ink.Average(p => p.Y), 6);
        Assert.Equal(7, ink.Max(p => p.X) - ink.Min(p => p.X) + 1);
        Assert.Equal(Rgb.White, c[2, 2]);   // the corner of the bounding square stays out
    }

    /// <summary>A range [lo, hi] from seeds: magnitudes 1e-9 .. 1e9, either sign, spans down to 1e-6 of the value.</summary>
    static (double Lo, double Hi) Range(int a, int b, int e1, int e2)
    {
        var rng = new Random(HashCode.Combine(a, b, e1, e2));
        double lo = (rng.NextDouble() * 2 - 1) * Math.Pow(10, rng.Next(-9, 10));
        double span = rng.Next(8) == 0 ? 0 : Math.Max(Math.Abs(lo) * 1e-6, 1e-12) * Math.Pow(10, rng.NextDouble() * 8);
        return (lo, lo + span);
    }

    [Property(MaxTest = 500)]
    public void Nice_ticks_cover_the_range_with_a_1_2_5_step(int a, int b, int e1, int e2, PositiveInt t)
    {
        var (lo, hi) = Range(a, b, e1, e2);
        int target = 1 + (t.Get - 1) % 12;
        var ticks = Ticks.Linear(lo, hi, target);
        var v = ticks.Values;
        Assert.True(v[0] <= lo && v[^1] >= hi, $"[{v[0]}, {v[^1]}] does not cover [{lo}, {hi}]");
        var (m, k) = Ticks.NiceStep(ticks.Step);
        Assert.Contains(m, new[] { 1, 2, 5 });
        Assert.Equal(ticks.Step, m * Ticks.Pow10(k), ticks.Step * 1e-12);
        for (int i = 1; i < v.Length; i++) Assert.Equal(ticks.Step, v[i] - v[i - 1], ticks.Step * 1e-6 + Math.Abs(v[i]) * 1e-14);
        if (hi > lo) Assert.True(v.Length <= target + 2, $"{v.Length} ticks for target {target}");
        Assert.True(v.Length >= 2);
        Assert.Equal(v.Length, ticks.Labels.Distinct().Count());   // no two ticks read the same
    }

    [Property(MaxTest = 500)]
    public void Nice_step_is_the_least_1_2_5_power_of_ten_multiple_not_below(int seed)
    {
        var rng = new Random(seed);
        double raw = (0.01 + rng.NextDouble()) * Math.Pow(10, rng.Next(-15, 16));
        var (m, k) = Ticks.NiceStep(raw);
        double step = m * Ticks.Pow10(k);
        Assert.Contains(m, new[] { 1, 2, 5 });
        Assert.True(step >= raw * (1 - 1e-12), $"step {step} < {raw}");
        double smaller = m switch { 1 => 5 * Ticks.Pow10(k - 1), 2 => 1 * Ticks.Pow10(k), _ => 2 * Ticks.Pow10(k) };
        Assert.True(smaller < raw, $"{smaller} would do for {raw}");
    }

    [Theory]
    [InlineData(0, 1, 8, 1, "0,1")]
    [InlineData(0, 31, 8, 1, "0,5,10,15,20,25,30,35")]
    [InlineData(0.3, 0.7, 4, 0, "0.3,0.4,0.5,0.6,0.7")]
    [InlineData(8.2e-5, 1.37e-4, 3, 0, "0.8e-4,1.0e-4,1.2e-4,1.4e-4")]
    [InlineData(5, 5, 4, 0, "4.6,4.8,5.0,5.2,5.4")]   // an empty range, widened by 5% each way
    [InlineData(-2, 3, 5, 0, "-2,-1,0,1,2,3")]
    public void Tick_labels_read_as_expected(double lo, double hi, int target, double minStep, string labels) =>
        Assert.Equal(labels, string.Join(",", Ticks.Linear(lo, hi, target, minStep).Labels));

    [Theory]
    [InlineData(0.02, 2.5, "0.01,0.1,1,10")]
    [InlineData(0.12, 0.4, "0.1,0.2,0.5")]
    [InlineData(5.5e-5, 2.7e-2, "1e-5,1e-4,1e-3,1e-2,1e-1")]
    public void Log_ticks_are_decades_or_1_2_5_steps_covering_the_range(double lo, double hi, string labels)
    {
        var t = Ticks.Log(lo, hi);
        Assert.Equal(labels, string.Join(",", t.Labels));
        Assert.True(t.Values[0] <= lo && t.Values[^1] >= hi);
    }

    [Fact]
    public void Viridis_runs_from_dark_purple_to_yellow_getting_lighter()
    {
        Assert.Equal(Rgb.Hex(0x440154), Heatmap.Colormap(0));
        Assert.Equal(Rgb.Hex(0xFDE725), Heatmap.Colormap(1));
        for (int i = 1; i <= 100; i++) Assert.True(Heatmap.Colormap(i / 100.0).Luma >= Heatmap.Colormap((i - 1) / 100.0).Luma);
    }

    [Fact]
    public void A_loss_chart_draws_inside_its_area_with_each_series_colour()
    {
        // Step against loss on a log axis, the way distillation will plot it; the chart must keep to its area.
        var outside = Rgb.Hex(0x123456);
        var c = new Canvas(700, 420, outside);
        var area = new Rect(20, 10, 640, 390);
        c.FillRect(area.X, area.Y, area.W, area.H, Rgb.White);
        var train = Enumerable.Range(0, 200).Select(s => ((double)s * 5, 3 * Math.Exp(-s / 40.0) + 0.01)).ToList();
        var eval = Enumerable.Range(0, 20).Select(s => ((double)s * 50, 3 * Math.Exp(-s / 4.0) + 0.02)).ToList();
        var chart = new LineChart
        {
            Title = "scale distillation", XLabel = "step", YLabel = "loss", LogY = true,
            Series = [new("train", LineChart.Palette[0], train), new("eval", LineChart.Palette[1], eval)],
        };
        var plot = chart.Draw(c, area);
        Assert.True(plot.X > area.X && plot.Right < area.Right && plot.Y > area.Y && plot.Bottom < area.Bottom);
        var ink = Ink(c, Rgb.White);
        // Nothing outside the area was drawn over: every pixel of the outside colour is still there.
        Assert.Equal(c.Width * c.Height - area.W * area.H, ink.Count(p => c[p.X, p.Y] == outside));
        int Count(Rgb colour) => ink.Count(p => c[p.X, p.Y] == colour);
        Assert.True(Count(LineChart.Palette[0]) > 200, "train line missing");
        Assert.True(Count(LineChart.Palette[1]) > 100, "eval line missing");
        Assert.Throws<ArgumentException>(() => new LineChart { Series = [new("empty", Rgb.Black, [])] }.Draw(c, area));
    }

    [Fact]
    public void The_scale_plot_needs_decoder_layer_linears()
    {
        var e = Assert.Throws<BitDeltaException>(() => ScalePlot.Draw("x.safetensors", "bitdelta", new Dictionary<string, float> { ["lm_head.weight"] = 1 }));
        Assert.Contains("no scales", e.Message);
        // One layer, some linears missing (drawn grey), equal scales: still a picture.
        var c = ScalePlot.Draw("x.safetensors", "bitdelta", new Dictionary<string, float>
        {
            ["model.layers.0.self_attn.q_proj.weight"] = 0.01f,
            ["model.layers.0.mlp.down_proj.weight"] = 0.01f,
        });
        Assert.True(Ink(c, Rgb.White).Count > 1000);
    }
}
