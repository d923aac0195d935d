using BitDeltaNative.Kernels;

namespace BitDeltaNative.Models;

/// <summary>What <see cref="Perplexity.Evaluate"/> measured: exp of the mean of the windows' mean NLL.</summary>
public sealed record PerplexityResult(double Perplexity, int Windows, long ScoredTokens, int StreamTokens, double[] WindowNll)
{
    public double MeanNll => WindowNll.Length == 0 ? double.NaN : WindowNll.Average();
}

/// <summary>
/// Perplexity as the BitDelta reference computes it (bitdelta/eval_ppl.py, after Hugging Face's "perplexity of
/// fixed-length models" guide): the text is tokenized as one stream (one BOS at the start); the stream length is
/// cut down to a multiple of the stride; windows of context + stride tokens start at 0, stride, 2·stride, … and each
/// is run from position 0 on its own; only its last stride tokens are scored (each predicted from everything
/// before it in the window); the loop stops after the first window that reaches the cut length. A window taken
/// from the stream may run past the cut (the reference slices the full stream), and a window of at most stride
/// tokens scores all but its first. Perplexity = exp(mean over windows of the window's mean NLL), not a
/// token-weighted mean: the reference averages the windows' losses.
/// </summary>
public static class Perplexity
{
    /// <summary>The windows of a stream of <paramref name="length"/> tokens: (start, tokens in the window,
    /// tokens scored: the last ones of the window).</summary>
    public static List<(int Start, int Length, int Scored)> Windows(int length, int context, int stride)
    {
        if (context < 0) throw new BitDeltaException($"--context must be >= 0, got {context}");
        if (stride < 1) throw new BitDeltaException($"--stride must be >= 1, got {stride}");
        int maxLength = context + stride;
        int cut = length - length % stride;
        var windows = new List<(int, int, int)>();
        for (int begin = 0; begin < cut; begin += stride)
        {
            int end = begin + maxLength;
            int n = Math.Min(end, length) - begin;
            windows.Add((begin, n, n > stride ? stride : n - 1));
            if (end >= cut) break;
        }
        return windows;
    }

    /// <summary>Runs every window through <paramref name="model"/> (with <paramref name="delta"/> when given) and
    /// averages. <paramref name="progress"/> hears (windows done, windows).</summary>
    public static PerplexityResult Evaluate(LlamaModel model, DeltaWeights? delta, int[] stream, int context, int stride,
                                            IProgress<(int Done, int Total)>? progress = null)
    {
        var windows = Windows(stream.Length, context, stride);
        if (windows.Count == 0 || windows.All(w => w.Scored == 0))
            throw new BitDeltaException($"the text is {stream.Length} tokens: too short for one window with --stride {stride}");
        int maxLength = context + stride;
        if (maxLength > model.MaxPositions && windows.Any(w => w.Length > model.MaxPositions))
            throw new BitDeltaException($"--context {context} + --stride {stride} = {maxLength} tokens is past the model's context of {model.MaxPositions}");
        var dev = model.Device;
        int vocab = model.Config.VocabSize;
        using var cache = model.NewCache(1, Math.Min(maxLength, model.MaxPositions));
        var nlls = new List<double>();
        long scored = 0;
        int done = 0;
        foreach (var (start, length, n) in windows)
        {
            progress?.Report((done++, windows.Count));
            if (n == 0) continue;
            var ids = stream.AsSpan(start, length);
            var positions = Enumerable.Range(0, length).ToArray();
            // Rows length−n−1 … length−2 predict the scored tokens length−n … length−1.
            var rows = Enumerable.Range(length - n - 1, n).ToArray();
            using var logits = Tensor.Empty([n, vocab], DType.F32, dev);
            model.Forward(ids, new int[length], positions, rows, cache, logits, delta);
            using var targets = Tensor.From(stream.AsSpan(start + length - n, n).ToArray(), [n], dev);
            using var nll = Tensor.Empty([n], DType.F32, dev);
            CrossEntropy.Run(logits, targets, nll);
            double sum = 0;
            foreach (var v in nll.ToFloatArray()) sum += v;
            nlls.Add(sum / n);
            scored += n;
        }
        progress?.Report((windows.Count, windows.Count));
        return new PerplexityResult(Math.Exp(nlls.Average()), nlls.Count, scored, stream.Length, nlls.ToArray());
    }

    /// <summary>
    /// The text of an evaluation file. A .jsonl file holds one document per line as {"text": …}; each document is
    /// followed by a blank line ("\n\n"), as the reference joins dataset samples. Any other file is taken as it is
    /// (documents already separated by blank lines).
    /// </summary>
    public static string ReadText(string path, string option = "--data")
    {
        if (!path.EndsWith(".jsonl", StringComparison.OrdinalIgnoreCase))
            return File.Exists(path) ? File.ReadAllText(path) : throw new BitDeltaException($"{option} {path}: no such file");
        var docs = JsonLines.Read(path, option, "an object with a string field \"text\"", e => JsonLines.String(e, "text"));
        return string.Concat(docs.Select(d => d + "\n\n"));
    }
}
