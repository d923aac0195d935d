namespace BitDeltaNative.Models;

/// <summary>One question of a task file: the model is given <see cref="Prompt"/> and must continue with <see cref="Answer"/>.</summary>
public sealed record TaskItem(string Prompt, string Answer);

/// <summary>What <see cref="ExactMatch.Evaluate"/> found: how many greedy answers matched, and each answer given.</summary>
public sealed record ExactMatchResult(int Right, int Total, string[] Said)
{
    public double Accuracy => Total == 0 ? 0 : (double)Right / Total;
}

/// <summary>
/// A task measure beside perplexity: greedy continuation of each prompt, cut at the first line break, compared with
/// the expected answer after trimming spaces (exact match, as lm-eval-harness's generate-until tasks score with a
/// newline stop). Task files are JSON lines: {"prompt": "Question: What is 48 + 27?\nAnswer:", "answer": " 75"}.
/// </summary>
public static class ExactMatch
{
    public static List<TaskItem> Read(string path)
    {
        var items = JsonLines.Read(path, "--task", "an object with string fields \"prompt\" and \"answer\"",
            e => JsonLines.String(e, "prompt") is { } p && JsonLines.String(e, "answer") is { } a ? new TaskItem(p, a) : null);
        if (items.Count == 0) throw new BitDeltaException($"{path}: no questions in the file");
        return items;
    }

    /// <summary>Answers every item greedily, <paramref name="batch"/> prompts per generation batch.</summary>
    public static ExactMatchResult Evaluate(LlamaModel model, DeltaWeights? delta, Tokenizer tokenizer, IReadOnlyList<TaskItem> items,
                                            int maxNewTokens = 16, int batch = 64, IProgress<(int Done, int Total)>? progress = null)
    {
        var gen = new Generator(model, delta);
        var said = new string[items.Count];
        int right = 0;
        for (int at = 0; at < items.Count; at += batch)
        {
            progress?.Report((at, items.Count));
            var part = items.Skip(at).Take(batch).ToList();
            var outs = gen.Generate(part.Select(i => tokenizer.Encode(i.Prompt)).ToList(), maxNewTokens, new SamplingOptions(), tokenizer.EosIds);
            for (int i = 0; i < part.Count; i++)
            {
                string text = tokenizer.DecodeContinuation(outs[i]);
                int nl = text.IndexOf('\n');
                said[at + i] = nl >= 0 ? text[..nl] : text;
                if (said[at + i].Trim() == part[i].Answer.Trim()) right++;
            }
        }
        progress?.Report((items.Count, items.Count));
        return new ExactMatchResult(right, items.Count, said);
    }
}
