using System.Diagnostics;
using BitDeltaNative.Kernels;

namespace BitDeltaNative.Models;

/// <summary>How the next token is chosen. Temperature 0 is greedy (argmax); otherwise temperature, then top-k
/// (0 = off), then top-p (1 = off), as Hugging Face's logits warpers apply them. The same seed gives the same text.</summary>
public sealed record SamplingOptions(float Temperature = 0f, int TopK = 0, float TopP = 1f, ulong Seed = 0)
{
    public void Validate()
    {
        if (!(Temperature >= 0) || float.IsInfinity(Temperature)) throw new BitDeltaException($"--temperature must be >= 0, got {Temperature}");
        if (TopK < 0) throw new BitDeltaException($"--top-k must be >= 0, got {TopK}");
        if (!(TopP > 0 && TopP <= 1)) throw new BitDeltaException($"--top-p must be in (0, 1], got {TopP}");
    }
}

/// <summary>Timings of one <see cref="Generator.Generate"/> call. The first token of each sequence comes out
/// of the prefill step; <see cref="DecodeTokens"/> counts those the decode steps produced.</summary>
public sealed record GenerationStats(int PromptTokens, int GeneratedTokens, int DecodeTokens, int DecodeSteps, TimeSpan Prefill, TimeSpan Decode,
                                     long DecodeLaunches = 0)
{
    /// <summary>Kernel launches per decode step (0 on the managed CPU device, which launches none).</summary>
    public double LaunchesPerDecodeStep => DecodeSteps > 0 ? (double)DecodeLaunches / DecodeSteps : 0;

    public double PrefillTokensPerSecond => Prefill.TotalSeconds > 0 ? PromptTokens / Prefill.TotalSeconds : 0;
    public double DecodeTokensPerSecond => Decode.TotalSeconds > 0 ? DecodeTokens / Decode.TotalSeconds : 0;
    public double MsPerDecodeStep => DecodeSteps > 0 ? Decode.TotalMilliseconds / DecodeSteps : 0;
}

/// <summary>
/// Generates continuations of several prompts at once: one prefill step over every prompt token, then one
/// decode step per new token in which every unfinished sequence contributes its last token. A sequence stops
/// at an end-of-sequence id (not emitted) or after <c>maxNewTokens</c>. With <paramref name="delta"/> it generates
/// from the compressed fine-tune over the model's base weights. With <paramref name="pool"/>, each prompt names its
/// tenant (a pool slot, or −1 for the base) and prompts of different tenants share every step: the multi-tenant batch.
/// </summary>
public sealed class Generator(LlamaModel model, DeltaWeights? delta = null, DeltaPool? pool = null)
{
    public GenerationStats? LastStats { get; private set; }

    /// <summary>The KV cache's element type: null keeps f32 (what the golden fixtures were made with); the weights' f16
    /// or bf16 halves the bytes decode attention reads and lets prefill attention take the tensor cores
    /// (AttentionMma.cs, which reads a half cache), as <c>serve</c> keeps it.</summary>
    public DType? KvDType { get; init; }

    /// <summary>Device bytes of the KV cache the last <see cref="Generate"/> allocated.</summary>
    public long LastKvCacheBytes { get; private set; }

    /// <param name="onToken">called with (prompt index, token id) as soon as each token is chosen</param>
    /// <param name="tenants">with a pool: per prompt, its pool slot or −1 (the base); all −1 when null</param>
    public int[][] Generate(IReadOnlyList<int[]> prompts, int maxNewTokens, SamplingOptions options,
                            IReadOnlyCollection<int> eos, Action<int, int>? onToken = null, IReadOnlyList<int>? tenants = null)
    {
        options.Validate();
        int B = prompts.Count;
        if (B == 0) return [];
        if (tenants != null && pool == null) throw new ArgumentException("tenants without a delta pool");
        if (tenants != null && tenants.Count != B) throw new ArgumentException($"{tenants.Count} tenants for {B} prompts");
        var tenant = tenants?.ToArray() ?? new int[B];
        if (tenants == null) Array.Fill(tenant, -1);
        if (maxNewTokens < 0) throw new BitDeltaException($"--max-tokens must be >= 0, got {maxNewTokens}");
        foreach (var p in prompts)
            if (p.Length == 0) throw new BitDeltaException("a prompt must have at least one token (the BOS token counts)");
        int longest = prompts.Max(p => p.Length);
        int maxSeq = longest + maxNewTokens;
        if (maxSeq > model.MaxPositions)
            throw new BitDeltaException($"prompt ({longest} tokens) plus --max-tokens {maxNewTokens} is past the context of {model.MaxPositions} tokens");

        var dev = model.Device;
        int vocab = model.Config.VocabSize;
        using var cache = model.NewCache(B, maxSeq, KvDType);
        LastKvCacheBytes = cache.ByteLength;
        var outputs = Enumerable.Range(0, B).Select(_ => new List<int>()).ToArray();
        var length = prompts.Select(p => p.Length).ToArray();
        var done = new bool[B];
        var eosSet = eos.ToHashSet();

        // Sequences in tenant order (stable), so each step's rows form one run per tenant; a sequence's cache slot
        // is its prompt index. Prefill: all prompt tokens of all sequences in one forward pass.
        var active = Enumerable.Range(0, B).OrderBy(i => tenant[i]).ToArray();
        var ids = active.SelectMany(i => prompts[i]).ToArray();
        var slots = active.SelectMany(i => Enumerable.Repeat(i, prompts[i].Length)).ToArray();
        var positions = active.SelectMany(i => Enumerable.Range(0, prompts[i].Length)).ToArray();
        var lastRows = new int[B];
        for (int a = 0, at = 0; a < B; a++) { at += prompts[active[a]].Length; lastRows[a] = at - 1; }

        var sw = Stopwatch.StartNew();
        int[] next;
        using (var logits = Tensor.Empty([B, vocab], DType.F32, dev))
        {
            Forward(ids, slots, positions, lastRows, cache, logits, tenant);
            next = Choose(logits, options, step: 0, active);
        }
        var prefill = sw.Elapsed;
        long launches = dev.IsIlgpu ? dev.Launches : 0;
        sw.Restart();
        int generated = 0, decodeTokens = 0, steps = 0;
        for (int step = 0; ; step++)
        {
            // Record what the last step chose; retire finished sequences.
            var still = new List<int>();
            for (int a = 0; a < active.Length; a++)
            {
                int s = active[a], tok = next[a];
                if (maxNewTokens == 0 || eosSet.Contains(tok)) { done[s] = true; continue; }
                outputs[s].Add(tok);
                generated++;
                if (step > 0) decodeTokens++;
                onToken?.Invoke(s, tok);
                if (outputs[s].Count >= maxNewTokens) done[s] = true;
                else still.Add(s);
            }
            active = still.ToArray();
            if (active.Length == 0) break;

            int A = active.Length;
            var stepIds = active.Select(s => outputs[s][^1]).ToArray();
            var stepPos = active.Select(s => length[s] + outputs[s].Count - 1).ToArray();
            using var logits = Tensor.Empty([A, vocab], DType.F32, dev);
            Forward(stepIds, active, stepPos, Enumerable.Range(0, A).ToArray(), cache, logits, tenant);
            next = Choose(logits, options, step + 1, active);
            steps++;
        }
        LastStats = new GenerationStats(ids.Length, generated, decodeTokens, steps, prefill, sw.Elapsed, dev.IsIlgpu ? dev.Launches - launches : 0);
        return outputs.Select(o => o.ToArray()).ToArray();
    }

    /// <summary>One step; token t belongs to the sequence in cache slot <paramref name="slots"/>[t].</summary>
    void Forward(int[] ids, int[] slots, int[] positions, int[] logitRows, KvCacheMemory cache, Tensor logits, int[] tenant)
    {
        if (pool == null) model.Forward(ids, slots, positions, logitRows, cache, logits, delta);
        else model.Forward(ids, slots, positions, logitRows, cache, logits, pool, slots.Select(s => tenant[s]).ToArray());
    }

    /// <summary>Next token per row. The uniform draws depend on (seed, step, sequence), so a sequence's text
    /// does not depend on which other sequences share its batch.</summary>
    int[] Choose(Tensor logits, SamplingOptions o, int step, int[]? sequences = null)
    {
        int rows = logits.Dim(0);
        var dev = logits.Device;
        using var tokens = Tensor.Empty([rows], DType.I32, dev);
        if (o.Temperature == 0) Argmax.Run(logits, tokens);
        else
        {
            // Draw by sequence index, not batch row, so a sequence's text does not depend on its batch mates.
            var seqs = sequences ?? Enumerable.Range(0, rows).ToArray();
            var all = Sampling.Uniforms(o.Seed, step, seqs.Max() + 1);
            using var tu = Tensor.From(seqs.Select(s => all[s]).ToArray(), [rows], dev);
            Sampling.Run(logits, o.Temperature, o.TopK, o.TopP, tu, tokens);
        }
        return tokens.ToArray<int>();
    }
}
