using ILGPU;
using ILGPU.Runtime;

namespace BitDeltaNative.Kernels;

/// <summary>
/// Causal attention of a batch of tokens over the <see cref="KvCache"/>, for Llama and Mistral, batched
/// across sequences. Token t is the query at position <c>pos_t</c> of the sequence in cache slot
/// <c>slot_t</c>; its k and v are already in the cache. It attends to the cached positions j of its slot
/// with
/// <code>j ≤ pos_t                      (causal)
/// j &gt; pos_t − W   when W &gt; 0       (sliding window)</code>
/// which is Hugging Face's mask: <c>causal_mask_function</c> is <c>kv_idx &lt;= q_idx</c> and
/// <c>sliding_window_overlay</c> is <c>kv_idx &gt; q_idx - sliding_window</c> (transformers,
/// src/transformers/masking_utils.py, lines 76 and 95 at commit 00c4411c), AND-ed by
/// <c>sliding_window_causal_mask_function</c>; Mistral takes <c>create_sliding_window_causal_mask</c>
/// whenever <c>config.sliding_window</c> is set (models/mistral/modeling_mistral.py). So a query sees at
/// most W keys, itself included; the flash-attention path agrees (<c>window_size = (W − 1, …)</c>).
/// <para>
/// Grouped-query attention: query head h reads kv head <c>h / (nHeads / nKvHeads)</c>, which is the
/// order of <c>repeat_kv</c> (each kv head repeated for consecutive query heads). Scores are
/// <c>scale · q·k</c> (the caller passes <c>headDim^−½</c>, Hugging Face's <c>scaling</c>); the softmax
/// is f32 with the running maximum subtracted, as is the weighted sum of V.
/// </para>
/// <para>
/// Tokens whose slot or position lies outside the cache are padding and get a zero output.
/// </para>
/// </summary>
public static partial class Attention
{
    /// <summary>Largest head size the kernels take: in the decode kernel each lane holds ⌈headDim/32⌉ ≤ 4
    /// elements of the output accumulator in registers, and the shared-memory tiles of both kernels are
    /// sized for it. Llama and Mistral use 128.</summary>
    public const int MaxHeadDim = 128;

    /// <summary>Run takes the decode kernel for batches of at most this many tokens and the prefill kernel
    /// above. Why: the decode kernel has a group per (token, head), so it fills the GPU whatever the
    /// batch holds, but every query head reads its keys on its own; the prefill kernel shares each key tile
    /// among up to 32 query rows of one sequence, which only pays when the batch holds runs of tokens of the
    /// same sequence (a prompt) and leaves the GPU idle when it holds one token per sequence (decode).
    /// The token count is what Run sees without reading the slots back from the GPU; a scheduler that
    /// knows its batch calls <see cref="Decode"/> or <see cref="Prefill"/> itself. 64 is a first guess,
    /// to be timed on the H100.</summary>
    public const int DecodeMaxTokens = 64;

    /// <summary>The spec, in f64: for each token and head, scores over the allowed positions, softmax,
    /// weighted sum of V. q and output are f32 <c>[T, nHeads, headDim]</c>; the caches are the raw bytes of
    /// <c>[slots, nKvHeads, maxSeq, headDim]</c> tensors of <paramref name="cacheType"/>.</summary>
    public static void Twin(ReadOnlySpan<float> q, ReadOnlySpan<byte> kCache, ReadOnlySpan<byte> vCache, DType cacheType,
                            ReadOnlySpan<int> slots, ReadOnlySpan<int> positions, Span<float> output,
                            int nHeads, int nSlots, int nKvHeads, int maxSeq, int headDim, int slidingWindow, float scale)
    {
        int group = nHeads / nKvHeads;
        var scores = new List<double>();
        var o = new double[headDim];
        for (int t = 0; t < slots.Length; t++)
            for (int h = 0; h < nHeads; h++)
            {
                var qRow = q.Slice((t * nHeads + h) * headDim, headDim);
                var outRow = output.Slice((t * nHeads + h) * headDim, headDim);
                int slot = slots[t], pos = positions[t];
                if (!KvCache.InCache(slot, pos, nSlots, maxSeq))
                {
                    outRow.Clear();
                    continue;
                }
                long head = ((long)slot * nKvHeads + h / group) * maxSeq;
                int first = FirstKey(pos, slidingWindow);
                scores.Clear();
                for (int j = first; j <= pos; j++)
                {
                    double s = 0;
                    for (int d = 0; d < headDim; d++) s += (double)qRow[d] * HostElem.Load(kCache, cacheType, (head + j) * headDim + d);
                    scores.Add(scale * s);
                }
                double max = scores.Max(), sum = 0;
                Array.Clear(o);
                for (int j = first; j <= pos; j++)
                {
                    double p = Math.Exp(scores[j - first] - max);
                    sum += p;
                    for (int d = 0; d < headDim; d++) o[d] += p * HostElem.Load(vCache, cacheType, (head + j) * headDim + d);
                }
                for (int d = 0; d < headDim; d++) outRow[d] = (float)(o[d] / sum);
            }
    }

    /// <summary>The first position a query at <paramref name="pos"/> sees: with a window W, the first j
    /// with j &gt; pos − W.</summary>
    public static int FirstKey(int pos, int slidingWindow) => slidingWindow > 0 ? Math.Max(0, pos - slidingWindow + 1) : 0;

    /// <summary>The run of tokens of one slot that starts at <paramref name="runStart"/> (before <paramref name="t1"/>):
    /// its slot, where it ends, and the keys its tokens see, lo … hi (none, lo &gt; hi, for a slot or positions outside the
    /// cache). The prefill kernels walk a query tile's runs, since a batch mixes prompts and decode steps.</summary>
    static (int Slot, int End, int Lo, int Hi) SlotRun(ArrayView<int> slots, ArrayView<int> positions, int runStart, int t1, Dims s)
    {
        int slot = slots[runStart];
        int runEnd = runStart + 1;
        while (runEnd < t1 && slots[runEnd] == slot) runEnd++;
        int lo = int.MaxValue, hi = -1;
        if (slot >= 0 && slot < s.Slots)
            for (int t = runStart; t < runEnd; t++)
            {
                int pos = positions[t];
                if (pos < 0 || pos >= s.MaxSeq) continue;
                lo = Math.Min(lo, FirstKey(pos, s.Window));
                hi = Math.Max(hi, pos);
            }
        return (slot, runEnd, lo, hi);
    }

    /// <summary>Sizes and scalars a launch shares (one struct keeps the kernels' parameter lists short).
    /// Public because ILGPU's CPU accelerator emits a task type that holds it, in another assembly.</summary>
    public struct Dims
    {
        public int Tokens, Heads, KvHeads, Slots, MaxSeq, HeadDim, Window;
        public float Scale;
        /// <summary>Prefill only: tokens per query tile (<see cref="PrefillRows"/> / heads per kv head).</summary>
        public int TileTokens;
        /// <summary>Decode only: key ranges per (token, head), and keys per range (AttentionDecode.cs).</summary>
        public int Splits, SplitKeys;
        /// <summary>Tensor-core prefill only: stages of K and V tiles (AttentionMma.cs).</summary>
        public int Stages;
    }

    // ---- prefill ----

    /// <summary>Query rows per prefill group: (token, query head) pairs of one kv head.</summary>
    public const int PrefillRows = 32;
    /// <summary>Keys per shared-memory tile.</summary>
    const int KeyTile = 16;
    const int PrefillThreads = 128;
    /// <summary>Row stride of the Q and K/V tiles in shared memory: headDim + 1 floats, so that threads
    /// reading one column of consecutive rows hit different banks.</summary>
    const int PaddedDim = MaxHeadDim + 1;

    /// <summary>
    /// One group per (tile of consecutive tokens, kv head). The tile's rows are its tokens × the query heads
    /// that share the kv head (≤ 32 rows), so a K/V tile read once serves all of them. Tokens of a tile may
    /// belong to several sequences (a batch mixes prompts and decode steps): the group walks the tile's runs
    /// of equal slot, and for each run loops over key tiles of 16 positions from the run's first visible key
    /// to its last position. Per key tile: stage K (f32, padded rows) in shared memory; every thread computes
    /// scores for some (row, key) pairs, masked to −∞ outside the row's run, causal limit and window; one
    /// thread per row updates its online softmax (max, sum, rescale factor) and turns scores into weights
    /// while the others stage V over K; then each thread updates its (row, element) slice of the output
    /// accumulator O ← O·corr + P·V. The score matrix lives only as a 32 × 16 tile in shared memory.
    /// Shared memory: Q 32×129 + K/V 16×129 + O 32×128 + P 32×16 + 3×32 floats = 43.6 KB, under the 48 KB
    /// of static shared memory a CUDA block gets.
    /// </summary>
    static void PrefillKernel(ArrayView<float> q, ArrayView<ushort> kCache, ArrayView<ushort> vCache, int code,
                              ArrayView<int> slots, ArrayView<int> positions, ArrayView<float> output, Dims s)
    {
        var qS = SharedMemory.Allocate<float>(PrefillRows * PaddedDim);
        var kvS = SharedMemory.Allocate<float>(KeyTile * PaddedDim);
        var oS = SharedMemory.Allocate<float>(PrefillRows * MaxHeadDim);
        var pS = SharedMemory.Allocate<float>(PrefillRows * KeyTile);
        var mS = SharedMemory.Allocate<float>(PrefillRows);
        var lS = SharedMemory.Allocate<float>(PrefillRows);
        var cS = SharedMemory.Allocate<float>(PrefillRows);

        int tid = Group.IdxX, nt = Group.DimX;
        int hk = Grid.IdxX % s.KvHeads, tile = Grid.IdxX / s.KvHeads;
        int G = s.Heads / s.KvHeads, D = s.HeadDim, ds = D + 1;
        int t0 = tile * s.TileTokens, t1 = Math.Min(s.Tokens, t0 + s.TileTokens);
        int rows = (t1 - t0) * G;

        // Row r is token t0 + r / G, query head hk·G + r % G: the rows of a token are adjacent in q.
        for (int i = tid; i < rows * D; i += nt)
        {
            int r = i / D, d = i % D;
            qS[r * ds + d] = q[((long)(t0 + r / G) * s.Heads + hk * G + r % G) * D + d] * s.Scale;
            oS[i] = 0f;
        }
        for (int r = tid; r < rows; r += nt) { mS[r] = float.NegativeInfinity; lS[r] = 0f; }
        Group.Barrier();

        int runStart = t0;
        while (runStart < t1)
        {
            var (slot, runEnd, lo, hi) = SlotRun(slots, positions, runStart, t1, s);
            long head = ((long)slot * s.KvHeads + hk) * s.MaxSeq;

            for (int k0 = lo; k0 <= hi; k0 += KeyTile)
            {
                int nk = Math.Min(KeyTile, hi + 1 - k0);
                for (int i = tid; i < nk * D; i += nt)
                {
                    int kk = i / D, d = i % D;
                    kvS[kk * ds + d] = Elem.Load(kCache, (head + k0 + kk) * D + d, code);
                }
                Group.Barrier();

                for (int i = tid; i < rows * KeyTile; i += nt)
                {
                    int r = i / KeyTile, kk = i % KeyTile, t = t0 + r / G, j = k0 + kk;
                    float score = float.NegativeInfinity;
                    if (t >= runStart && t < runEnd && kk < nk)
                    {
                        int pos = positions[t];
                        int first = s.Window > 0 ? Math.Max(0, pos - s.Window + 1) : 0;
                        if (j <= pos && j >= first && pos < s.MaxSeq)
                        {
                            float dot = 0f;
                            for (int d = 0; d < D; d++) dot += qS[r * ds + d] * kvS[kk * ds + d];
                            score = dot;
                        }
                    }
                    pS[i] = score;
                }
                Group.Barrier();

                for (int r = tid; r < rows; r += nt)
                {
                    float mOld = mS[r], mNew = mOld;
                    for (int kk = 0; kk < KeyTile; kk++) mNew = MathF.Max(mNew, pS[r * KeyTile + kk]);
                    float corr = 1f, sum = 0f;
                    if (mNew != float.NegativeInfinity)   // else the row has seen no key yet: nothing to add
                    {
                        corr = MathF.Exp(mOld - mNew);
                        for (int kk = 0; kk < KeyTile; kk++)
                        {
                            float p = MathF.Exp(pS[r * KeyTile + kk] - mNew);
                            pS[r * KeyTile + kk] = p;
                            sum += p;
                        }
                    }
                    else
                        for (int kk = 0; kk < KeyTile; kk++) pS[r * KeyTile + kk] = 0f;
                    mS[r] = mNew;
                    lS[r] = lS[r] * corr + sum;
                    cS[r] = corr;
                }
                // K is no longer read (the scores are done), so V goes over it.
                for (int i = tid; i < nk * D; i += nt)
                {
                    int kk = i / D, d = i % D;
                    kvS[kk * ds + d] = Elem.Load(vCache, (head + k0 + kk) * D + d, code);
                }
                Group.Barrier();

                for (int i = tid; i < rows * D; i += nt)
                {
                    int r = i / D, d = i % D;
                    float acc = 0f;
                    for (int kk = 0; kk < nk; kk++) acc += pS[r * KeyTile + kk] * kvS[kk * ds + d];
                    oS[i] = oS[i] * cS[r] + acc;
                }
                Group.Barrier();
            }
            runStart = runEnd;
        }

        for (int i = tid; i < rows * D; i += nt)
        {
            int r = i / D, d = i % D;
            float l = lS[r];
            output[((long)(t0 + r / G) * s.Heads + hk * G + r % G) * D + d] = l > 0f ? oS[i] / l : 0f;
        }
    }

    // ---- ops ----

    /// <summary>
    /// Attention of tokens (q f32 <c>[T, nHeads, headDim]</c>) over the cache (<see cref="KvCache"/>) into
    /// output (f32 <c>[T, nHeads, headDim]</c>); slots and positions are I32 <c>[T]</c>; slidingWindow 0 means
    /// none. Picks the decode kernel for T ≤ <see cref="DecodeMaxTokens"/>, else the prefill kernel.
    /// </summary>
    /// <paramref name="keys"/>, when given, bounds the keys any token sees (the largest position + 1): the decode kernel
    /// sizes its split of the keys by it rather than by the cache's length.
    public static void Run(Tensor q, Tensor kCache, Tensor vCache, Tensor slots, Tensor positions, Tensor output, int slidingWindow, float scale, int keys = 0) =>
        Launch(q, kCache, vCache, slots, positions, output, slidingWindow, scale, prefill: q.Rank == 3 && q.Dim(0) > DecodeMaxTokens, keys, 0);

    /// <summary><see cref="Run"/> with the decode kernel, whatever T.</summary>
    /// <paramref name="splitKeys"/>: keys per range of the decode kernel (0: <see cref="DecodeSplitKeys"/>).
    public static void Decode(Tensor q, Tensor kCache, Tensor vCache, Tensor slots, Tensor positions, Tensor output, int slidingWindow, float scale, int keys = 0,
                              int splitKeys = 0) =>
        Launch(q, kCache, vCache, slots, positions, output, slidingWindow, scale, prefill: false, keys, splitKeys);

    /// <summary><see cref="Run"/> with the prefill kernel, whatever T.</summary>
    public static void Prefill(Tensor q, Tensor kCache, Tensor vCache, Tensor slots, Tensor positions, Tensor output, int slidingWindow, float scale) =>
        Launch(q, kCache, vCache, slots, positions, output, slidingWindow, scale, prefill: true, 0, 0);

    static void Launch(Tensor q, Tensor kCache, Tensor vCache, Tensor slots, Tensor positions, Tensor output, int slidingWindow, float scale, bool prefill, int keys, int splitKeys)
    {
        Need.SameDevice(q, kCache, vCache, slots, positions, output);
        var (nSlots, nKv, maxSeq, headDim) = KvCache.CheckCache(kCache, vCache);
        Need.F32("attention q", q);
        Need.F32("attention output", output);
        if (q.Rank != 3) throw new ArgumentException($"attention q: expected [T, nHeads, headDim], got {q}");
        int tokens = q.Dim(0), nHeads = q.Dim(1);
        Need.Shape("attention q", q, tokens, nHeads, headDim);
        Need.Shape("attention output", output, tokens, nHeads, headDim);
        KvCache.CheckTokens(slots, positions, tokens);
        if (nKv == 0 || nHeads % nKv != 0)
            throw new ArgumentException($"attention: {nHeads} query heads are not a multiple of the cache's {nKv} kv heads");
        if (nHeads / nKv > PrefillRows)
            throw new ArgumentException($"attention: {nHeads / nKv} query heads per kv head; the kernels take at most {PrefillRows}");
        if (headDim > MaxHeadDim) throw new ArgumentException($"attention: head size {headDim}; the kernels take at most {MaxHeadDim}");
        if (slidingWindow < 0) throw new ArgumentException($"attention: sliding window {slidingWindow} < 0");
        if (output.ElementCount == 0) return;
        if (!q.Device.IsIlgpu && kCache.DType == DType.F32)
        {
            Host(q.Host<float>(), kCache.Host<float>(), vCache.Host<float>(), slots.Host<int>(), positions.Host<int>(), output.Host<float>(),
                 nHeads, nSlots, nKv, maxSeq, headDim, slidingWindow, scale);
            return;
        }
        if (!q.Device.IsIlgpu)
        {
            Twin(q.Host<float>(), kCache.HostBytes, vCache.HostBytes, kCache.DType, slots.Host<int>(), positions.Host<int>(), output.Host<float>(),
                 nHeads, nSlots, nKv, maxSeq, headDim, slidingWindow, scale);
            return;
        }
        var shape = new Dims
        {
            Tokens = tokens, Heads = nHeads, KvHeads = nKv, Slots = nSlots, MaxSeq = maxSeq, HeadDim = headDim,
            Window = slidingWindow, Scale = scale, TileTokens = PrefillRows / (nHeads / nKv),
        };
        var dev = q.Device;
        if (prefill && TakesPrefillMma(kCache, headDim)) LaunchPrefillMma(q, kCache, vCache, slots, positions, output, shape);
        else if (prefill)
            dev.GroupedKernel<Action<KernelConfig, ArrayView<float>, ArrayView<ushort>, ArrayView<ushort>, int, ArrayView<int>, ArrayView<int>, ArrayView<float>, Dims>>(PrefillKernel)(
                new KernelConfig((tokens + shape.TileTokens - 1) / shape.TileTokens * nKv, PrefillThreads),
                q.View<float>(), Elem.View(kCache), Elem.View(vCache), Elem.Code(kCache.DType), slots.View<int>(), positions.View<int>(), output.View<float>(), shape);
        else LaunchDecode(q, kCache, vCache, slots, positions, output, shape, keys, splitKeys > 0 ? splitKeys : DecodeSplitKeys);
    }

    // ---- audit ----

    /// <summary>A random batch for one kernel. Decode: one token per draw, random slots and positions.
    /// Prefill: runs of consecutive positions of a few sequences (a prompt from 0, a chunk continuing a
    /// sequence), with decode tokens between them, so query tiles straddle sequences. The whole cache is
    /// random, so keys past a query's position or before its window would change the result if read.</summary>
    static AuditCase Case(string name, bool prefill) => new(name, Check.F32Bound, (dev, rng) =>
    {
        // Sizes are kept small because ILGPU's CPU accelerator pays for every group barrier with OS thread
        // switches; T up to 40 still gives several query tiles (32 rows) and tiles that straddle sequences.
        int nKv = Check.Size(rng, 3), group = rng.Next(3) switch { 0 => 1, 1 => rng.Next(1, 5), _ => Check.Size(rng, 8) };
        int nHeads = nKv * group, headDim = HeadDims.Draw(rng);
        int nSlots = Check.Size(rng, 4), maxSeq = Check.Size(rng, prefill ? 80 : 140);
        int window = rng.Next(2) == 0 ? 0 : Check.Size(rng, maxSeq + 5);
        var ct = Check.FloatType(rng);
        var slots = new List<int>();
        var positions = new List<int>();
        int budget = prefill ? Check.Size(rng, 40) : Check.Size(rng, 4);
        while (slots.Count < budget)
        {
            int slot = rng.Next(8) == 0 ? -1 : rng.Next(nSlots);
            if (!prefill || rng.Next(3) == 0) { slots.Add(slot); positions.Add(rng.Next(maxSeq)); continue; }
            int start = rng.Next(2) == 0 ? 0 : rng.Next(maxSeq);
            int len = Math.Min(rng.Next(1, budget - slots.Count + 1), maxSeq - start);
            for (int i = 0; i < len; i++) { slots.Add(slot); positions.Add(start + i); }
        }
        int tokens = slots.Count;
        float qScale = rng.Next(2) == 0 ? 1f : 4f;   // 4: peaked softmax, where the max subtraction matters
        // Decode: small key ranges too, so that caches of ≤ 140 positions are also split and merged.
        int splitKeys = DecodeKeysPerStep * (rng.Next(2) == 0 ? 8 : rng.Next(1, 4));
        var q = Check.Values(rng, (long)tokens * nHeads * headDim, qScale);
        long cacheCount = (long)nSlots * nKv * maxSeq * headDim;
        var kc = HostElem.Bytes(Check.Values(rng, cacheCount), ct);
        var vc = HostElem.Bytes(Check.Values(rng, cacheCount), ct);
        float scale = 1f / MathF.Sqrt(headDim);
        int[] cacheShape = [nSlots, nKv, maxSeq, headDim];
        using var tq = Tensor.From(q, [tokens, nHeads, headDim], dev);
        using var tkc = Tensor.From(HostElem.Floats(kc, ct, cacheCount), cacheShape, dev, ct);
        using var tvc = Tensor.From(HostElem.Floats(vc, ct, cacheCount), cacheShape, dev, ct);
        using var ts = Tensor.From(slots.ToArray(), [tokens], dev);
        using var tp = Tensor.From(positions.ToArray(), [tokens], dev);
        using var to = Check.Poisoned([tokens, nHeads, headDim], DType.F32, dev);
        if (prefill) Prefill(tq, tkc, tvc, ts, tp, to, window, scale);
        else Decode(tq, tkc, tvc, ts, tp, to, window, scale, splitKeys: splitKeys);
        var want = new float[q.Length];
        Twin(q, kc, vc, ct, slots.ToArray(), positions.ToArray(), want, nHeads, nSlots, nKv, maxSeq, headDim, window, scale);
        return (Check.RelativeError(to.ToFloatArray(), want),
                $"T {tokens}, heads {nHeads}/{nKv}, cache [{nSlots}, {nKv}, {maxSeq}, {headDim}] {ct}, window {window}, q×{qScale}" +
                (prefill ? (dev.IsIlgpu && TakesPrefillMma(tkc, headDim) ? ", tensor cores" : "") : $", {splitKeys} keys a range"));
    });

    public static IEnumerable<AuditCase> Cases => [Case("attention decode", prefill: false), Case("attention prefill", prefill: true)];
}
