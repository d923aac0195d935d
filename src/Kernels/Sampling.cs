using ILGPU;
using ILGPU.Runtime;

namespace BitDeltaNative.Kernels;

/// <summary>
/// Next-token sampling per row of logits, in the order of Hugging Face's warpers
/// (generation/utils.py _get_logits_processor; generation/logits_process.py):
/// <list type="number">
/// <item>temperature (TemperatureLogitsWarper): z = logits / T in f32; T = 0 means greedy, the argmax
/// (HF's do_sample=False);</item>
/// <item>top-k (TopKLogitsWarper), 0 = off: keep z ≥ the k-th largest z; every token tied with it is
/// kept, as HF's <c>scores &lt; topk(...)[..., -1]</c> removes only strictly smaller ones;</item>
/// <item>top-p (TopPLogitsWarper), 1 = off: with p_i ∝ exp(z_i − max z) over the tokens top-k kept,
/// keep token i iff the mass of the tokens strictly more probable than i is &lt; top_p — HF's
/// "cumulative probability of the ascending sort > 1 − top_p" read from the other end — and always the
/// most probable token (min_tokens_to_keep = 1). Tokens of equal probability are kept or dropped
/// together (HF's sort order among equal scores is unspecified);</item>
/// <item>renormalise over the kept tokens and, with u = uniforms[row] in [0, 1), pick the first token in
/// vocabulary order whose cumulative probability exceeds u (inverse-CDF sampling; HF draws with
/// torch.multinomial, whose random stream we do not reproduce).</item>
/// </list>
/// Probabilities are e_i = f32(exp(f64(z_i) − max z)) and every sum over them is in f64, in the twin and
/// the kernel alike, so the two pick the same token except when u falls within about 1e-16 of a boundary:
/// an f32 sum would differ from the twin's once in ~10³ rows of a 32K vocabulary.
/// </summary>
public static class Sampling
{
    /// <summary>The largest float below 1: uniforms are clamped into [0, this] (NaN to 0).</summary>
    const float BelowOne = 1f - 1f / (1 << 24);
    const int OneBits = 0x3F80_0000;

    /// <summary>
    /// Uniform floats in [0, 1) for one decode step: a counter-based generator, so (seed, step, row) always
    /// gives the same draw, on any device, whatever was drawn before. The counter is hashed with
    /// SplitMix64's finaliser (Steele, Lea and Flood, "Fast splittable pseudorandom number generators",
    /// OOPSLA 2014): h = mix(mix(seed) ⊕ step), u_row = top 24 bits of mix(h ⊕ row) · 2⁻²⁴ (exact in f32,
    /// the resolution of torch's f32 uniform).
    /// </summary>
    public static float[] Uniforms(ulong seed, long step, int rows)
    {
        var u = new float[rows];
        ulong h = Mix(Mix(seed) ^ (ulong)step);
        for (int r = 0; r < rows; r++) u[r] = (Mix(h ^ (ulong)r) >> 40) * (1f / (1 << 24));
        return u;
    }

    static ulong Mix(ulong z)
    {
        z += 0x9E37_79B9_7F4A_7C15;
        z = (z ^ (z >> 30)) * 0xBF58_476D_1CE4_E5B9;
        z = (z ^ (z >> 27)) * 0x94D0_49BB_1331_11EB;
        return z ^ (z >> 31);
    }

    /// <summary>
    /// f32(e^x) computed in f64 with IEEE adds and multiplies only, so the kernel gets the twin's
    /// <c>(float)Math.Exp(x)</c> on every device (ILGPU's own f64 exp for PTX is a slow CORDIC; MathF.Exp
    /// becomes ex2.approx). Cody–Waite reduction x = k·ln2 + r, |r| ≤ ln2/2 (ln2 split in two so k·ln2_hi is
    /// exact; fdlibm's constants), then Taylor to degree 13 (remainder &lt; |r|¹⁴/14! &lt; 5e-18), then 2^k
    /// from its bits. Accurate to about 2 ulp of f64, so the f32 rounding agrees with Math.Exp except when
    /// e^x lies within ~1e-16 relative of an f32 rounding boundary. For x &lt; −110 (e^x far below the
    /// smallest f32) it returns 0.
    /// </summary>
    public static float ExpToFloat(double x)
    {
        if (x < -110.0) return 0f;
        if (x > 89.0) return float.PositiveInfinity;
        double t = x * 1.4426950408889634;
        int k = (int)(t >= 0 ? t + 0.5 : t - 0.5);
        double r = (x - k * 6.93147180369123816490e-01) - k * 1.90821492927058770002e-10;
        double p = 1.0 / 6227020800.0;
        p = p * r + 1.0 / 479001600.0;
        p = p * r + 1.0 / 39916800.0;
        p = p * r + 1.0 / 3628800.0;
        p = p * r + 1.0 / 362880.0;
        p = p * r + 1.0 / 40320.0;
        p = p * r + 1.0 / 5040.0;
        p = p * r + 1.0 / 720.0;
        p = p * r + 1.0 / 120.0;
        p = p * r + 1.0 / 24.0;
        p = p * r + 1.0 / 6.0;
        p = p * r + 0.5;
        p = p * r + 1.0;
        p = p * r + 1.0;
        return (float)(p * Interop.IntAsFloat((ulong)(k + 1023) << 52));
    }

    public static void Twin(ReadOnlySpan<float> logits, int rows, int vocab, float temperature, int topK, float topP,
                            ReadOnlySpan<float> uniforms, Span<int> tokens)
    {
        if (temperature == 0)
        {
            Argmax.Twin(logits, tokens, rows, vocab);
            return;
        }
        var z = new float[vocab];
        var e = new float[vocab];
        var keep = new bool[vocab];
        for (int r = 0; r < rows; r++)
        {
            for (int i = 0; i < vocab; i++) z[i] = logits[r * vocab + i] / temperature;

            float kth = float.NegativeInfinity;
            if (topK > 0 && topK < vocab)
            {
                var sorted = (float[])z.Clone();
                Array.Sort(sorted, (a, b) => b.CompareTo(a));
                kth = sorted[topK - 1];
            }
            float max = z.Max();
            double mass = 0;
            for (int i = 0; i < vocab; i++)
            {
                keep[i] = z[i] >= kth;
                e[i] = keep[i] ? (float)Math.Exp((double)z[i] - max) : 0f;
                mass += e[i];
            }

            if (topP < 1f)
            {
                // Walk tokens from the most probable down; a token's "mass above" counts only strictly
                // more probable tokens, so a run of equal probabilities shares one decision.
                var order = Enumerable.Range(0, vocab).Where(i => keep[i]).OrderByDescending(i => e[i]).ToArray();
                double above = 0, run = 0;
                for (int j = 0; j < order.Length; j++)
                {
                    int i = order[j];
                    if (j > 0 && e[i] < e[order[j - 1]]) { above += run; run = 0; }
                    run += e[i];
                    keep[i] = above < (double)topP * mass || e[i] == e[order[0]];
                }
            }

            double kept = 0;
            for (int i = 0; i < vocab; i++) if (keep[i]) kept += e[i];
            float u = uniforms[r] >= 0f ? MathF.Min(uniforms[r], BelowOne) : 0f;
            double goal = u * kept, cum = 0;
            int pick = -1, last = -1;
            for (int i = 0; i < vocab && pick < 0; i++)
            {
                if (!keep[i] || e[i] == 0f) continue;
                cum += e[i];
                last = i;
                if (cum > goal) pick = i;
            }
            tokens[r] = pick >= 0 ? pick : last;
        }
    }

    /// <summary>Order-preserving int key of a float (−0 taken as +0): a &lt; b ⇔ Key(a) &lt; Key(b).</summary>
    static int OrderedKey(float f)
    {
        int bits = (int)Interop.FloatAsInt(f);
        return f == 0f ? 0 : bits >= 0 ? bits : bits ^ 0x7FFF_FFFF;
    }

    /// <summary>
    /// One group per row; no sort. (1) z = logits/T into <paramref name="probs"/> (scratch [rows, vocab]),
    /// with its max and min. (2) top-k: <see cref="Cut"/> over the ordered int keys of z with weight 1 finds
    /// the k-th largest z. (3) e_i = f32(exp(z_i − max)) for the tokens kept, 0 for the rest, written over
    /// z, and their f64 sum Z. (4) top-p: <see cref="Cut"/> over the bits of e (non-negative floats order as
    /// their bits) with weight e and target top_p·Z finds the smallest kept probability. (5) pick: each
    /// thread sums a contiguous chunk of kept e in f64, an exclusive scan over the group gives each chunk's
    /// start, the goal is u·total, and the last thread whose chunk starts at or below the goal (and holds
    /// mass) walks its chunk to the token.
    /// </summary>
    static void SampleKernel(ArrayView<float> logits, ArrayView<float> probs, ArrayView<float> uniforms, ArrayView<int> tokens,
                             int vocab, float temperature, int topK, float topP)
    {
        var fs = SharedMemory.Allocate<float>(33);
        var ds = SharedMemory.Allocate<double>(33);
        var sums = SharedMemory.Allocate<double>(2 * 6 * 32);
        int row = Grid.IdxX, tid = Group.IdxX, threads = Group.DimX;
        long b = (long)row * vocab;

        float hiZ = float.NegativeInfinity, loZ = float.PositiveInfinity;
        for (int i = tid; i < vocab; i += threads)
        {
            float z = logits[b + i] / temperature;
            probs[b + i] = z;
            hiZ = MathF.Max(hiZ, z);
            loZ = MathF.Min(loZ, z);
        }
        float max = Reduce.GroupMax(hiZ, fs);      // its barriers also publish z to the whole group
        float min = -Reduce.GroupMax(-loZ, fs);

        int kCut = int.MinValue;
        if (topK > 0 && topK < vocab)
            kCut = Cut(probs, b, vocab, false, OrderedKey(min), OrderedKey(max) + 1, topK, vocab, 0, sums);

        double part = 0;
        for (int i = tid; i < vocab; i += threads)
        {
            float z = probs[b + i];
            float e = OrderedKey(z) >= kCut ? ExpToFloat((double)z - max) : 0f;
            probs[b + i] = e;
            part += e;
        }
        double mass = GroupSumF64(part, ds);   // its barriers also publish e to the whole group

        int pCut = 0;
        if (topP < 1f)
        {
            double target = (double)topP * mass;
            // The cut c keeps less than top_p·Z strictly above it, so the tokens at or below it hold more
            // than (1 − top_p)·Z, and there are at most vocab of them: c > (1 − top_p)·Z / vocab. Half of
            // that (against rounding) starts the search above the many binades of negligible probability;
            // the count there is unknown, and vocab bounds it.
            int lo = (int)Interop.FloatAsInt((float)(0.5 * (1 - (double)topP) * mass / vocab));
            // top_p = 0: only the most probable (e = 1) survive.
            pCut = target > 0 ? Cut(probs, b, vocab, true, lo, OneBits + 1, target, vocab, 0, sums) : OneBits;
        }

        int chunk = (vocab + threads - 1) / threads;
        int start = Math.Min(tid * chunk, vocab), end = Math.Min(start + chunk, vocab);
        double own = 0;
        for (int i = start; i < end; i++)
        {
            float e = probs[b + i];
            if ((int)Interop.FloatAsInt(e) >= pCut) own += e;
        }
        double before = GroupExclusiveScanF64(own, ds, out double total);
        float u = uniforms[row];
        u = u >= 0f ? MathF.Min(u, BelowOne) : 0f;
        double goal = u * total;
        float owner = Reduce.GroupMax(before <= goal && own > 0 ? tid : -1, fs);
        if (tid == (int)owner)
        {
            double cum = before;
            int pick = -1, last = -1;
            for (int i = start; i < end && pick < 0; i++)
            {
                float e = probs[b + i];
                if (e == 0f || (int)Interop.FloatAsInt(e) < pCut) continue;
                cum += e;
                last = i;
                if (cum > goal) pick = i;
            }
            tokens[row] = pick >= 0 ? pick : last;
        }
    }

    /// <summary>
    /// The cut of top-k and top-p: the largest key v in [lo, hi) with W(≥ v) ≥ target, where W(≥ v) sums
    /// the weights of the row's values whose key is ≥ v. For top-k (<paramref name="byProbability"/> false)
    /// keys are <see cref="OrderedKey"/> of z and the weight is 1, so v is the k-th largest z; for top-p keys
    /// are the bits of e and the weight is e. Needs W(≥ lo) ≥ target &gt; W(≥ hi); cLo and cHi count the
    /// values at or above lo and hi.
    /// <para>A four-way search: each pass splits [lo, hi) at three keys and measures W and the count above
    /// each in one strided (coalesced) pass and one 6-value group reduction, so a 31-bit key range takes at
    /// most 16 passes. It stops early once a single value lies in [lo, hi) (then {key ≥ lo} is already the
    /// kept set), and for top-k once exactly k values lie at or above lo (the same set, as no tie straddles
    /// the cut).</para>
    /// </summary>
    static int Cut(ArrayView<float> values, long b, int n, bool byProbability, int lo, int hi, double target,
                   double cLo, double cHi, ArrayView<double> sums)
    {
        int tid = Group.IdxX, threads = Group.DimX, pass = 0;
        while ((long)hi - lo > 1 && cLo - cHi > 1)
        {
            long w = (long)hi - lo;
            int t1 = (int)(lo + (w + 3) / 4), t2 = (int)(lo + (2 * w + 3) / 4), t3 = (int)(lo + (3 * w + 3) / 4);
            var s = new Sums6();
            for (int i = tid; i < n; i += threads)
            {
                float x = values[b + i];
                int key = byProbability ? (int)Interop.FloatAsInt(x) : OrderedKey(x);
                double weight = byProbability ? x : 1.0;
                if (key >= t1)
                {
                    s.C1 += 1; s.W1 += weight;
                    if (key >= t2)
                    {
                        s.C2 += 1; s.W2 += weight;
                        if (key >= t3) { s.C3 += 1; s.W3 += weight; }
                    }
                }
            }
            s = GroupSum(s, sums, pass++ & 1);
            if (s.W3 >= target) { lo = t3; cLo = s.C3; }
            else if (s.W2 >= target) { lo = t2; cLo = s.C2; hi = t3; cHi = s.C3; }
            else if (s.W1 >= target) { lo = t1; cLo = s.C1; hi = t2; cHi = s.C2; }
            else { hi = t1; cHi = s.C1; }
            if (!byProbability && cLo == target) break;
        }
        return lo;
    }

    struct Sums6
    {
        public double W1, W2, W3, C1, C2, C3;
    }

    /// <summary>Sums six values over the group with one barrier: warps reduce by shuffles, lane 0 of each
    /// warp posts its partials, every thread adds the posts. Alternate <paramref name="half"/> between
    /// consecutive calls: a call's posts then cannot overwrite the ones a slower thread is still reading.</summary>
    static Sums6 GroupSum(Sums6 s, ArrayView<double> sums, int half)
    {
        for (int o = Warp.WarpSize / 2; o > 0; o /= 2)
        {
            // One shuffle of the struct (ILGPU splits it into 32-bit shuffles): the same instructions on
            // the GPU as six shuffles, but one warp synchronisation instead of six on the CPU accelerator.
            var t = Warp.ShuffleDown(s, o);
            s.W1 += t.W1; s.W2 += t.W2; s.W3 += t.W3;
            s.C1 += t.C1; s.C2 += t.C2; s.C3 += t.C3;
        }
        int at = half * 6 * 32, warps = Group.DimX / Warp.WarpSize;
        if (Warp.LaneIdx == 0)
        {
            int w = Warp.WarpIdx;
            sums[at + w] = s.W1;
            sums[at + 32 + w] = s.W2;
            sums[at + 64 + w] = s.W3;
            sums[at + 96 + w] = s.C1;
            sums[at + 128 + w] = s.C2;
            sums[at + 160 + w] = s.C3;
        }
        Group.Barrier();
        var r = new Sums6();
        for (int w = 0; w < warps; w++)
        {
            r.W1 += sums[at + w];
            r.W2 += sums[at + 32 + w];
            r.W3 += sums[at + 64 + w];
            r.C1 += sums[at + 96 + w];
            r.C2 += sums[at + 128 + w];
            r.C3 += sums[at + 160 + w];
        }
        return r;
    }

    static double WarpSumF64(double v)
    {
        for (int o = Warp.WarpSize / 2; o > 0; o /= 2) v += Warp.ShuffleDown(v, o);
        return Warp.Shuffle(v, 0);
    }

    /// <summary><see cref="Reduce.GroupSum"/> in f64; <paramref name="scratch"/> holds at least 33 doubles.</summary>
    static double GroupSumF64(double v, ArrayView<double> scratch)
    {
        v = WarpSumF64(v);
        int warps = (Group.DimX + Warp.WarpSize - 1) / Warp.WarpSize;
        if (Warp.LaneIdx == 0) scratch[Warp.WarpIdx] = v;
        Group.Barrier();
        if (Warp.WarpIdx == 0)
        {
            double s = Warp.LaneIdx < warps ? scratch[Warp.LaneIdx] : 0.0;
            s = WarpSumF64(s);
            if (Warp.LaneIdx == 0) scratch[32] = s;
        }
        Group.Barrier();
        double r = scratch[32];
        Group.Barrier();
        return r;
    }

    /// <summary>Exclusive prefix sum over the group in thread order (the group is whole warps), and the
    /// total. Hillis–Steele within each warp, then over the warp totals in warp 0.</summary>
    static double GroupExclusiveScanF64(double v, ArrayView<double> scratch, out double total)
    {
        int lane = Warp.LaneIdx, warp = Warp.WarpIdx, warps = Group.DimX / Warp.WarpSize;
        double inc = v;
        for (int o = 1; o < Warp.WarpSize; o *= 2)
        {
            double n = Warp.ShuffleUp(inc, o);
            if (lane >= o) inc += n;
        }
        double prev = Warp.ShuffleUp(inc, 1);
        if (lane == Warp.WarpSize - 1) scratch[warp] = inc;
        Group.Barrier();
        if (warp == 0)
        {
            double w = lane < warps ? scratch[lane] : 0.0;
            for (int o = 1; o < Warp.WarpSize; o *= 2)
            {
                double n = Warp.ShuffleUp(w, o);
                if (lane >= o) w += n;
            }
            if (lane < warps) scratch[lane] = w;
        }
        Group.Barrier();
        double offset = warp > 0 ? scratch[warp - 1] : 0.0;
        total = scratch[warps - 1];
        Group.Barrier();
        return lane > 0 ? offset + prev : offset;
    }

    /// <summary>
    /// tokens[r] = a token drawn from row r of logits (f32 [rows, vocab]) with uniforms[r] (f32 [rows], in
    /// [0, 1), e.g. from <see cref="Uniforms"/>); tokens is I32 [rows]. temperature ≥ 0 (0 = greedy),
    /// topK ≥ 0 (0 = off), topP in [0, 1] (1 = off).
    /// </summary>
    public static void Run(Tensor logits, float temperature, int topK, float topP, Tensor uniforms, Tensor tokens)
    {
        Need.SameDevice(logits, uniforms, tokens);
        Need.F32("sampling logits", logits);
        if (logits.Rank != 2) throw new ArgumentException($"sampling logits: expected [rows, vocab], got {logits}");
        int rows = logits.Dim(0), vocab = logits.Dim(1);
        Need.F32("sampling uniforms", uniforms);
        Need.Shape("sampling uniforms", uniforms, rows);
        if (tokens.DType != DType.I32) throw new ArgumentException($"sampling tokens: expected I32, got {tokens}");
        Need.Shape("sampling tokens", tokens, rows);
        if (!(temperature >= 0) || float.IsInfinity(temperature)) throw new ArgumentException($"sampling: temperature must be finite and ≥ 0, got {temperature}");
        if (topK < 0) throw new ArgumentException($"sampling: top-k must be ≥ 0 (0 = off), got {topK}");
        if (!(topP >= 0 && topP <= 1)) throw new ArgumentException($"sampling: top-p must be in [0, 1] (1 = off), got {topP}");
        if (vocab == 0 || vocab >= 1 << 24) throw new ArgumentException($"sampling: vocabulary of {vocab} (counts are exact f32 below 2^24)");
        if (rows == 0) return;
        if (temperature == 0)
        {
            Argmax.Run(logits, tokens);
            return;
        }
        var dev = tokens.Device;
        if (!dev.IsIlgpu)
        {
            Twin(logits.Host<float>(), rows, vocab, temperature, topK, topP, uniforms.Host<float>(), tokens.Host<int>());
            return;
        }
        // Scratch from the pool; launches on the device's stream run in order, so returning it to the pool
        // right after the launch is safe (as Casts.OnDevice does).
        using var probs = Tensor.Empty([rows, vocab], DType.F32, dev);
        dev.GroupedKernel<Action<KernelConfig, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<int>, int, float, int, float>>(SampleKernel)(
            new KernelConfig(rows, Softmax.GroupSize(vocab, dev)), logits.View<float>(), probs.View<float>(), uniforms.View<float>(), tokens.View<int>(),
            vocab, temperature, topK, topP);
    }

    /// <summary>Random settings: greedy, temperatures 0.2–1.5, top-k off / small / up to past the vocabulary,
    /// top-p off / any / 0; logits sometimes on a coarse grid so that ties occur. The tokens must equal
    /// the twin's (error 0, else +∞).</summary>
    public static AuditCase Case => new("sampling", 0, (dev, rng) =>
    {
        int rows = Check.Size(rng, 5), vocab = Check.Size(rng, 3000);
        float t = rng.Next(6) == 0 ? 0f : 0.2f + 1.3f * (float)rng.NextDouble();
        int k = rng.Next(3) switch { 0 => 0, 1 => rng.Next(1, 60), _ => rng.Next(1, vocab + 3) };
        float p = rng.Next(4) switch { 0 => 1f, 1 => (float)rng.NextDouble(), 2 => 0.8f + 0.2f * (float)rng.NextDouble(), _ => rng.Next(8) == 0 ? 0f : 0.95f };
        var x = Check.Values(rng, (long)rows * vocab, 6f);
        bool grid = rng.Next(4) == 0;
        if (grid) for (int i = 0; i < x.Length; i++) x[i] = MathF.Round(x[i] * 4) / 4;
        var u = Uniforms((ulong)rng.NextInt64(), rng.Next(), rows);
        using var tx = Tensor.From(x, [rows, vocab], dev);
        using var tu = Tensor.From(u, [rows], dev);
        using var tk = Tensor.Empty([rows], DType.I32, dev);
        tk.Fill(Check.Poison);
        Run(tx, t, k, p, tu, tk);
        var want = new int[rows];
        Twin(x, rows, vocab, t, k, p, u, want);
        return (tk.ToArray<int>().SequenceEqual(want) ? 0 : double.PositiveInfinity,
            $"[{rows}, {vocab}] T {t:G3} top-k {k} top-p {p:G3}{(grid ? " grid" : "")}");
    });
}
