using BitDeltaNative.Models;
using BitDeltaNative.Tests.Tensors;
using FsCheck;
using FsCheck.Fluent;
using FsCheck.Xunit;

namespace BitDeltaNative.Tests.Models;

public class PerplexityTests
{
    [Fact]
    public void Windows_follow_the_reference_loop_on_a_worked_example()
    {
        // 1000 tokens, context 256, stride 128: cut to 896; windows of 384 at 0, 128, …, 512 (512 + 384 = 896
        // reaches the cut, so the loop stops); each scores its last 128 tokens: 256..383, 384..511, …, 768..895.
        var w = Perplexity.Windows(1000, 256, 128);
        Assert.Equal([(0, 384, 128), (128, 384, 128), (256, 384, 128), (384, 384, 128), (512, 384, 128)], w);
        // Shorter than one window: a single window of the whole stream, scoring its last stride tokens.
        Assert.Equal([(0, 200, 128)], Perplexity.Windows(200, 256, 128));
        // A window of exactly stride tokens: all but the first are scored (the first has nothing before it).
        Assert.Equal([(0, 64, 63)], Perplexity.Windows(64, 256, 64));
        // No context: each window is stride tokens and scores all but its first, so one token a window goes unscored.
        Assert.Equal([(0, 3, 2), (3, 3, 2), (6, 3, 2)], Perplexity.Windows(10, 0, 3));
        // Under one stride: the cut leaves nothing (the reference's mean over no windows is NaN; we refuse).
        Assert.Empty(Perplexity.Windows(100, 256, 128));
        // The last window may take tokens past the cut from the stream, as the reference's slice does; cut short by
        // the stream's end, its last stride tokens then overlap the window before (tokens 22..29 count twice there too).
        Assert.Equal([(0, 30, 20), (20, 22, 20)], Perplexity.Windows(42, 10, 20));
    }

    [Property(MaxTest = 300)]
    public void Scored_tokens_are_consecutive_until_the_stream_ends_and_windows_fit(PositiveInt length, NonNegativeInt context, PositiveInt stride)
    {
        int n = length.Get % 5000, c = 1 + context.Get % 600, s = 1 + stride.Get % 300;   // context 0: worked example
        var w = Perplexity.Windows(n, c, s);
        int cut = n - n % s;
        if (cut == 0) { Assert.Empty(w); return; }
        int next = -1;
        foreach (var (start, len, scored) in w)
        {
            Assert.True(len <= c + s && start + len <= n && scored <= len - 1 && scored >= 0);
            int first = start + len - scored;          // the window's first scored token
            // No token scored twice and none skipped, except a last window cut short by the stream's end.
            if (next >= 0 && len == c + s) Assert.Equal(next, first);
            if (next >= 0 && len < c + s) Assert.True(start + len == n && first <= next);
            next = start + len;
        }
        Assert.True(w[^1].Start + c + s >= cut, "the loop stops only once a window reaches the cut");
        Assert.True(w.Count == 1 || w[^2].Start + c + s < cut, "and not before");
    }

    /// <summary>Evaluate's per-window NLL against a log-softmax in f64 over the logits of every window position.</summary>
    [Fact]
    public void Window_losses_are_the_mean_nll_of_the_scored_tokens()
    {
        using var m = LlamaModel.Load(Fixtures.Model("llama-f16"), Device.Cpu);
        var rng = new Random(5);
        var stream = Enumerable.Range(0, 70).Select(_ => rng.Next(3, m.Config.VocabSize)).ToArray();
        var r = Perplexity.Evaluate(m, null, stream, context: 16, stride: 8);
        var windows = Perplexity.Windows(stream.Length, 16, 8);
        Assert.Equal(windows.Count, r.Windows);
        int vocab = m.Config.VocabSize;
        for (int k = 0; k < windows.Count; k++)
        {
            var (start, len, scored) = windows[k];
            using var cache = m.NewCache(1, len);
            using var logits = Tensor.Empty([len, vocab], DType.F32, Device.Cpu);
            m.Forward(stream.AsSpan(start, len), new int[len], Enumerable.Range(0, len).ToArray(), Enumerable.Range(0, len).ToArray(), cache, logits);
            var all = logits.ToFloatArray();
            double sum = 0;
            for (int p = len - scored - 1; p < len - 1; p++)
            {
                var row = all.AsSpan(p * vocab, vocab);
                double max = double.NegativeInfinity;
                foreach (var v in row) max = Math.Max(max, v);
                double z = 0;
                foreach (var v in row) z += Math.Exp(v - max);
                sum += max + Math.Log(z) - row[stream[start + p + 1]];
            }
            Assert.Equal(sum / scored, r.WindowNll[k], 1e-4);
        }
        Assert.Equal(Math.Exp(r.WindowNll.Average()), r.Perplexity, 1e-9);
    }

    [Fact]
    public void Bad_settings_and_inputs_are_one_line_errors()
    {
        Assert.Contains("--stride", Assert.Throws<BitDeltaException>(() => Perplexity.Windows(10, 4, 0)).Message);
        Assert.Contains("--context", Assert.Throws<BitDeltaException>(() => Perplexity.Windows(10, -1, 4)).Message);
        using var m = LlamaModel.Load(Fixtures.Model("llama-f16"), Device.Cpu, maxPositions: 32);
        Assert.Contains("too short", Assert.Throws<BitDeltaException>(() => Perplexity.Evaluate(m, null, [1, 5, 6], 16, 8)).Message);
        Assert.Contains("past the model's context", Assert.Throws<BitDeltaException>(() => Perplexity.Evaluate(m, null, new int[100], 40, 8)).Message);
        using var dir = new TempDir();
        File.WriteAllText(dir.File("d.jsonl"), "{\"text\": \"a\"}\n\n{\"text\": \"b\"}\n");
        Assert.Equal("a\n\nb\n\n", Perplexity.ReadText(dir.File("d.jsonl")));
        File.WriteAllText(dir.File("bad.jsonl"), "{\"text\": \"a\"}\n{\"txt\": 1}\n");
        Assert.Contains("bad.jsonl:2", Assert.Throws<BitDeltaException>(() => Perplexity.ReadText(dir.File("bad.jsonl"))).Message);
        File.WriteAllText(dir.File("q.jsonl"), "{\"prompt\": \"x\"}\n");
        Assert.Contains("q.jsonl:1", Assert.Throws<BitDeltaException>(() => ExactMatch.Read(dir.File("q.jsonl"))).Message);
    }
}
