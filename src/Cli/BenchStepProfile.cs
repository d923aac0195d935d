using System.Diagnostics;
using BitDeltaNative.Kernels;
using BitDeltaNative.Models;
using BitDeltaNative.Serving;

namespace BitDeltaNative;

public static partial class Cli
{
    /// <summary>
    /// Where one decode step's time goes (speed issue: "count the launches", "no host synchronisation inside a step"):
    /// for T tenants × one request, the host's time to enqueue a step (the forward pass without waiting), the step's wall
    /// time to its logits, and a timing event after every launch, summed per kernel. An event's interval is its kernel's run
    /// plus the gap before it, so launch gaps and a GPU left waiting on the host show up in the kernels they delay.
    /// </summary>
    /// <summary>A trace's launches summed per kernel, largest first: launches, µs, µs each and share of the span.</summary>
    static void PrintTrace(List<(string Kernel, double Us)> trace, double spanMs)
    {
        Console.WriteLine($"{"kernel",-44} {"launches",8} {"µs",9} {"µs each",8} {"share",6}");
        foreach (var g in trace.GroupBy(t => t.Kernel).OrderByDescending(g => g.Sum(t => t.Us)))
        {
            double us = g.Sum(t => t.Us);
            Console.WriteLine($"{g.Key,-44} {g.Count(),8} {us,9:F0} {us / g.Count(),8:F1} {us / 1e3 / spanMs,6:P0}");
        }
    }

    static void StepProfile(LlamaModel model, Device dev, int[] ts, int nPrompt)
    {
        int maxT = ts.Max();
        using var engine = new Engine(model, maxT);
        for (int t = 0; t < maxT; t++) engine.AddRandom($"t{t}", (ulong)t + 1);
        var c = model.Config;
        var rng = new Random(5);
        Console.WriteLine($"\nstep profile: one decode step at position {nPrompt}, T tenants × 1 request (timing events after every launch)");
        foreach (int nT in ts.Prepend(0))
        {
            // 0: one request on the base alone.
            int T = Math.Max(nT, 1);
            var tenants = nT == 0 ? [-1] : Enumerable.Range(0, T).ToArray();
            var slots = Enumerable.Range(0, T).ToArray();
            using var cache = model.NewCache(T, nPrompt + 8);
            using var logits = Tensor.Empty([T, c.VocabSize], DType.F32, dev);
            // Prefill by single positions (the decode form throughout), then time steps at position nPrompt.
            int[] Ids() => Enumerable.Range(0, T).Select(_ => rng.Next(3, c.VocabSize)).ToArray();
            for (int p = 0; p < nPrompt; p++)
                model.Forward(Ids(), slots, Enumerable.Repeat(p, T).ToArray(), slots, cache, logits, engine.Pool, tenants);
            dev.Synchronize();
            var pos = Enumerable.Repeat(nPrompt, T).ToArray();
            double enqueue = double.MaxValue, wall = double.MaxValue;
            for (int rep = 0; rep < 5; rep++)
            {
                var ids = Ids();
                var sw = Stopwatch.StartNew();
                model.Forward(ids, slots, pos, slots, cache, logits, engine.Pool, tenants);
                double e = sw.Elapsed.TotalMilliseconds;
                dev.Synchronize();
                enqueue = Math.Min(enqueue, e);
                wall = Math.Min(wall, sw.Elapsed.TotalMilliseconds);
            }
            dev.BeginTrace();
            model.Forward(Ids(), slots, pos, slots, cache, logits, engine.Pool, tenants);
            var trace = dev.EndTrace();
            double span = trace.Sum(t => t.Us) / 1e3;
            string who = nT == 0 ? "base alone, 1 request" : $"{T} tenants × 1 request";
            Console.WriteLine($"\n{who}: {trace.Count} launches; host enqueue {enqueue:F2} ms, step to logits {wall:F2} ms, traced GPU span {span:F2} ms");
            PrintTrace(trace, span);
            Record("step profile", $"7B, {who}: host enqueue", enqueue, "ms");
            Record("step profile", $"7B, {who}: traced GPU span", span, "ms");
        }
    }
}
