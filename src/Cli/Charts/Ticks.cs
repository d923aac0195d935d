using System.Globalization;

namespace BitDeltaNative.Charts;

/// <summary>Tick positions on an axis and their labels; <see cref="Step"/> is 0 on a log axis.</summary>
public sealed record TickSet(double[] Values, string[] Labels, double Step);

/// <summary>
/// "Nice" axis ticks: steps of 1, 2 or 5 × 10^k, the loose labelling of Heckbert's "Nice numbers for graph
/// labels" (Graphics Gems, 1990): the first tick at or below the low end, the last at or above the high end.
/// </summary>
public static class Ticks
{
    /// <summary>The smallest step m × 10^k (m ∈ {1, 2, 5}) that is at least <paramref name="raw"/> (&gt; 0).</summary>
    public static (int Mantissa, int Exponent) NiceStep(double raw)
    {
        if (!(raw > 0) || double.IsInfinity(raw)) throw new ArgumentException($"tick step {raw}");
        int k = (int)Math.Floor(Math.Log10(raw));
        // Log10 can be off by one near powers of ten; settle k so that 10^k <= raw < 10^(k+1).
        if (Pow10(k) > raw) k--;
        if (Pow10(k + 1) <= raw) k++;
        foreach (int m in new[] { 1, 2, 5 })
            if (Value(1, m, k) >= raw) return (m, k);
        return (1, k + 1);
    }

    /// <summary>10^k, exact for the integer powers a double holds exactly (|k| ≤ 22).</summary>
    public static double Pow10(int k) => k >= 0 ? Math.Pow(10, k) : 1 / Math.Pow(10, -k);

    /// <summary>i × m × 10^k, divided rather than multiplied for k &lt; 0 so that 3 × 0.1 comes out as 0.3.</summary>
    static double Value(long i, int m, int k) => k >= 0 ? i * m * Math.Pow(10, k) : i * m / Math.Pow(10, -k);

    /// <summary>About <paramref name="target"/> intervals of a nice step covering [lo, hi], the step at least
    /// <paramref name="minStep"/> (1 for an axis of whole numbers such as layer indices). An empty range is
    /// widened a little around its value.</summary>
    public static TickSet Linear(double lo, double hi, int target = 5, double minStep = 0)
    {
        if (!double.IsFinite(lo) || !double.IsFinite(hi) || lo > hi) throw new ArgumentException($"axis range [{lo}, {hi}]");
        if (target < 1) throw new ArgumentException($"target {target} ticks");
        if (hi - lo <= 1e-12 * Math.Max(Math.Abs(lo), Math.Abs(hi)))
        {
            double pad = lo == 0 ? 1 : Math.Abs(lo) * 0.05;
            (lo, hi) = (lo - pad, hi + pad);
        }
        var (m, k) = NiceStep(Math.Max((hi - lo) / target, minStep));
        double step = Value(1, m, k);
        long first = (long)Math.Floor(lo / step), last = (long)Math.Ceiling(hi / step);
        // The divisions round (0.3 / 0.1 is 2.9999999999999996): settle each end on the tick nearest the range
        // that still covers it.
        while (Value(first, m, k) > lo) first--;
        while (Value(first + 1, m, k) <= lo) first++;
        while (Value(last, m, k) < hi) last++;
        while (Value(last - 1, m, k) >= hi) last--;
        var values = new double[last - first + 1];
        for (long i = first; i <= last; i++) values[i - first] = Value(i, m, k);
        return new(values, LinearLabels(values, k), step);
    }

    /// <summary>Labels for ticks k digits apart: plain decimals with just enough places for the step, or, for
    /// values below 10^-3 or from 10^6, one shared exponent ("0.8e-4", "1.0e-4", "1.2e-4").</summary>
    static string[] LinearLabels(double[] values, int k)
    {
        double big = values.Max(Math.Abs);
        int e = big == 0 ? 0 : (int)Math.Floor(Math.Log10(big) + 1e-9);
        bool sci = e < -3 || e > 5;
        var inv = CultureInfo.InvariantCulture;
        return values.Select(v =>
        {
            if (Math.Abs(v) < Pow10(k) * 1e-6) return "0";
            return sci ? (v / Pow10(e)).ToString("F" + Math.Max(0, e - k), inv) + "e" + e
                       : v.ToString("F" + Math.Max(0, -k), inv);
        }).ToArray();
    }

    /// <summary>Ticks for a log axis over [lo, hi] (lo &gt; 0): the powers of ten from the one at or below lo
    /// to the one at or above hi, and 2 and 5 × 10^k between them when that spans fewer than three decades
    /// (then trimmed to the ticks that just cover the range).</summary>
    public static TickSet Log(double lo, double hi)
    {
        if (!(lo > 0) || !double.IsFinite(hi) || lo > hi) throw new ArgumentException($"log axis range [{lo}, {hi}]");
        int k0 = (int)Math.Floor(Math.Log10(lo) + 1e-9), k1 = (int)Math.Ceiling(Math.Log10(hi) - 1e-9);
        if (k1 == k0) k1++;
        int[] mantissas = k1 - k0 < 3 ? [1, 2, 5] : [1];
        var values = new List<double>();
        var labels = new List<string>();
        var exps = new List<(int M, int K)>();
        for (int k = k0; k <= k1; k++)
            foreach (int m in mantissas)
            {
                if (k == k1 && m > 1) break;
                values.Add(Value(1, m, k));
                exps.Add((m, k));
            }
        // Plain numbers where all are between 0.001 and 100000, else all as m e k, so the axis reads one way.
        bool plain = k0 >= -3 && k1 <= 5;
        labels.AddRange(exps.Select(e => plain ? Value(1, e.M, e.K).ToString("0.###", CultureInfo.InvariantCulture) : $"{e.M}e{e.K}"));
        // Keep only the ticks from the last one at or below lo to the first at or above hi.
        int a = Math.Max(0, values.FindLastIndex(v => v <= lo * (1 + 1e-9))), b = values.FindIndex(v => v >= hi * (1 - 1e-9));
        if (b < a) b = values.Count - 1;
        return new(values[a..(b + 1)].ToArray(), labels[a..(b + 1)].ToArray(), 0);
    }
}
