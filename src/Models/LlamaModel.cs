using BitDeltaNative.Kernels;

namespace BitDeltaNative.Models;

/// <summary>
/// The Llama/Mistral decoder (transformers, modeling_llama.py / modeling_mistral.py) over one device.
/// One <see cref="Forward"/> call runs any batch of tokens: each token names its sequence's cache slot and its
/// position, so prefill (many tokens of a sequence), decode (one token per sequence) and a mix of both across
/// sequences of different lengths are the same call. Activations are f32; weights stay in checkpoint dtype.
/// </summary>
public sealed class LlamaModel : IDisposable
{
    public LlamaConfig Config { get; }
    public LlamaWeights Weights { get; }
    public Device Device { get; }
    readonly RopeTable rope;

    public LlamaModel(LlamaWeights weights, Device device, int maxPositions)
    {
        Config = weights.Config;
        Weights = weights;
        Device = device;
        rope = RopeTable.Create(Config.HeadDim, Config.RopeTheta, Config.RopeScaling, maxPositions, device);
    }

    /// <summary>Loads config.json and the safetensors weights of a Hugging Face folder onto <paramref name="device"/>.</summary>
    public static LlamaModel Load(string dir, Device device, int maxPositions = 0, IProgress<(int Done, int Total)>? progress = null)
    {
        var weights = LlamaWeights.Load(dir, device, progress);
        int max = maxPositions > 0 ? maxPositions : Math.Min(weights.Config.MaxPositionEmbeddings, 4096);
        return new LlamaModel(weights, device, max);
    }

    public int MaxPositions => rope.MaxPositions;

    /// <summary>Called with (layer, linear index in <see cref="LayerWeights.LinearNames"/>, input [tokens, in]) before
    /// every decoder linear of a <see cref="Forward"/>: how the codecs' calibration sees each linear's inputs
    /// (Codecs/Hessians.cs).</summary>
    public Action<int, int, Tensor>? LinearInputs { get; set; }

    /// <summary>
    /// Forwards of at least <see cref="HalfPrefillMinRows"/> tokens (prefill, perplexity windows) run their decoder linears
    /// on x rounded to the weights' half type (f16 or bf16), one tensor-core product per step (<see cref="GemmHalf"/>), as
    /// transformers does for a half model; off, and for smaller steps (decode), x stays f32 (two products a step in the
    /// prefill GEMM). Only the base weights' term changes: a delta's BitDelta term and the codecs' terms keep f32 x, and
    /// the multi-tenant batch (<see cref="TenantLinear"/>) is unchanged. Off by default.
    /// </summary>
    public bool HalfPrefill { get; set; }

    /// <summary>The fewest tokens in a forward for <see cref="HalfPrefill"/> to apply: below one 128-row tile the GEMM
    /// wastes most of its products.</summary>
    public const int HalfPrefillMinRows = 64;

    /// <summary>y (+)= round(x)·Wᵀ on <see cref="GemmHalf"/> when W is f16 or bf16 and the GEMM takes the shapes; false
    /// (nothing done) otherwise.</summary>
    static bool HalfBase(Tensor x, Tensor w, Tensor y, bool accumulate)
    {
        if (w.DType != DType.F16 && w.DType != DType.BF16) return false;
        using var xh = x.Cast(w.DType);
        if (!GemmHalf.Applies(xh, w)) return false;
        GemmHalf.Run(xh, w, y, accumulate);
        return true;
    }

    /// <summary>
    /// Decode rows with a BitDelta delta (at most <see cref="TenantLinear.BitsMaxRows"/> tokens in a forward) run each
    /// linear as the multi-tenant engine runs a tenant's rows: the delta as a one-slot pool, base and sign terms in one
    /// launch (GemvOne for one row, TenantLinear's streamed form for two), not the base product and then the signs'
    /// product: on the H200 at 7B shapes one token took 6.20 ms a step this way (7.20 through the streamed form) against
    /// 57.5 ms (`bench model --random-7b --random-delta`, bench/NOTES.md). The tests run both against PyTorch's logits;
    /// the bench turns it off to compare.
    /// </summary>
    public static bool DeltaDecodeAsPool { get; set; } = true;

    /// <summary>
    /// One-row steps of a tenant (a pool's tenant row, one delta as a one-slot pool) also take the norms inside
    /// <see cref="GemvNorm"/>'s launches. Off: on the H200 at 7B shapes those launches with a tenant's signs were no
    /// faster than the separate ones (a 7B step of one delta 6.5 against 6.1 ms, bench/NOTES.md), while a row of the base
    /// alone gained 12%; so a tenant's row runs each norm as its own launch, then q/k/v in one and gate/up with SwiGLU in
    /// one (GemvNorm's kernel without the norm). The bench turns it on to compare.
    /// </summary>
    public static bool FuseTenantRows { get; set; }

    /// <summary>A tenant's one-row step (norms apart, <see cref="FuseTenantRows"/> off) runs q/k/v in one launch and
    /// gate/up with SwiGLU in one (GemvNorm's kernel without the norm); off, each linear is a GemvOne launch of its own
    /// and SwiGLU another, as before (the bench turns it off to compare).</summary>
    public static bool TenantLinearsInOne { get; set; } = true;

    /// <summary>A multi-tenant batch of several rows runs q/k/v as one launch and gate/up as one
    /// (TenantLinear.RunParts over <see cref="LayerWeights.QkvStore"/> and the pool's <see cref="DeltaPool.QkvSigns"/>),
    /// where its decode forms take the batch (the streamed one, or past its rows the three launches): at 7B shapes on the
    /// H200, 8 tenants' q/k/v took 61 µs in one launch against 3 × 32 apart, and the step 9.1–9.3 ms against 11.1–11.3
    /// (bench/NOTES.md). Off, each linear is its own launch, as before (the bench turns it off to compare).</summary>
    public static bool TenantPartsInOne { get; set; } = true;

    /// <summary>Elements [start, start + rows·cols) of a flat tensor as [rows, cols], sharing its storage.</summary>
    static Tensor Rows(Tensor flat, int start, int rows, int cols)
    {
        using var part = flat.Slice(start, rows * cols);
        return part.Reshape(rows, cols);
    }

    public KvCacheMemory NewCache(int slots, int maxSeq, DType? dtype = null) =>
        new(Config, slots, Math.Min(maxSeq, MaxPositions), dtype ?? DType.F32, Device);

    /// <summary>
    /// One step over a batch of tokens. Token t is <paramref name="ids"/>[t] at position
    /// <paramref name="positions"/>[t] of the sequence in cache slot <paramref name="slots"/>[t]; its keys and
    /// values are written to the cache before attention, so tokens of one sequence in the same batch must come in
    /// position order. <paramref name="logits"/> [rows, vocab] receives the logits of the tokens listed in
    /// <paramref name="logitRows"/> (the last token of each sequence when generating; every token for perplexity).
    /// With <paramref name="delta"/>, the step runs the compressed fine-tune: every linear is the base's matmul plus
    /// the delta's α·x·signᵀ (<see cref="BitLinear"/>), and the tensors the delta stores whole replace the base's.
    /// </summary>
    public void Forward(ReadOnlySpan<int> ids, ReadOnlySpan<int> slots, ReadOnlySpan<int> positions,
                        ReadOnlySpan<int> logitRows, KvCacheMemory cache, Tensor logits, DeltaWeights? delta = null)
    {
        if (delta != null && delta.Layers.Length != Config.NumLayers)
            throw new ArgumentException($"{delta.Path}: {delta.Layers.Length} layers, the model has {Config.NumLayers}");
        Step(ids, slots, positions, logitRows, cache, logits, delta, null, null);
    }

    /// <summary>
    /// One step over a batch whose tokens belong to different tenants: token t runs the compressed fine-tune in
    /// pool slot <paramref name="tenants"/>[t] (−1: the base alone). Every linear is one multi-tenant launch
    /// (<see cref="TenantLinear"/>) that reads the base weights once for the batch and each tenant's bits once; norms
    /// take each tenant's weights in one launch; embedding and lm_head go per run of tokens of a tenant that stores
    /// its own. Tokens grouped by tenant make the fewest runs. Otherwise as <see cref="Forward"/>.
    /// </summary>
    public void Forward(ReadOnlySpan<int> ids, ReadOnlySpan<int> slots, ReadOnlySpan<int> positions,
                        ReadOnlySpan<int> logitRows, KvCacheMemory cache, Tensor logits, DeltaPool pool, ReadOnlySpan<int> tenants)
    {
        if (pool.Config.ConfigHash != Config.ConfigHash) throw new ArgumentException("the delta pool was made for another base");
        if (tenants.Length != ids.Length) throw new ArgumentException("ids and tenants differ in length");
        foreach (var t in tenants)
            if (t < -1 || t >= pool.Capacity || (t >= 0 && pool.Name(t) == null))
                throw new ArgumentException($"tenant slot {t} is not loaded in the pool");
        Step(ids, slots, positions, logitRows, cache, logits, null, pool, tenants.ToArray());
    }

    void Step(ReadOnlySpan<int> ids, ReadOnlySpan<int> slots, ReadOnlySpan<int> positions, ReadOnlySpan<int> logitRows,
              KvCacheMemory cache, Tensor logits, DeltaWeights? delta, DeltaPool? pool, int[]? tenants)
    {
        var c = Config;
        int T = ids.Length;
        if (slots.Length != T || positions.Length != T) throw new ArgumentException("ids, slots and positions differ in length");
        for (int t = 0; t < T; t++)
        {
            if ((uint)ids[t] >= (uint)c.VocabSize) throw new BitDeltaException($"token id {ids[t]} is outside the vocabulary (0..{c.VocabSize - 1})");
            if ((uint)slots[t] >= (uint)cache.Slots) throw new ArgumentException($"slot {slots[t]} outside the cache's {cache.Slots}");
            if ((uint)positions[t] >= (uint)Math.Min(cache.MaxSeq, MaxPositions))
                throw new BitDeltaException($"position {positions[t]} is past the context of {Math.Min(cache.MaxSeq, MaxPositions)} tokens");
        }
        foreach (var r in logitRows)
            if ((uint)r >= (uint)T) throw new ArgumentException($"logit row {r} outside the batch of {T}");
        Need(logits, [logitRows.Length, c.VocabSize]);
        if (T == 0) return;

        var dev = Device;
        using var tIds = Tensor.From(ids.ToArray(), [T], dev);
        using var tSlots = Tensor.From(slots.ToArray(), [T], dev);
        using var tPos = Tensor.From(positions.ToArray(), [T], dev);
        // Every upload of the step comes first: ILGPU's copy from host waits for the stream, so one after the layers were
        // enqueued would hold the host until the GPU had run them all (speed issue: no host synchronisation inside a step).
        var lr = logitRows.ToArray();
        using var rows = lr.Length > 0 ? Tensor.From(lr, [lr.Length], dev) : null;
        using var x = Tensor.Empty([T, c.HiddenSize], DType.F32, dev);
        using var h = Tensor.Empty([T, c.HiddenSize], DType.F32, dev);
        // q, k, v one after another, and gate, up: a multi-tenant launch of the pair or three writes them so (RunParts)
        using var qkv = Tensor.Empty([T * (c.QDim + 2 * c.KvDim)], DType.F32, dev);
        using var gateUp = Tensor.Empty([T * 2 * c.IntermediateSize], DType.F32, dev);
        using var q = Rows(qkv, 0, T, c.QDim);
        using var k = Rows(qkv, T * c.QDim, T, c.KvDim);
        using var v = Rows(qkv, T * (c.QDim + c.KvDim), T, c.KvDim);
        using var attn = Tensor.Empty([T, c.QDim], DType.F32, dev);
        using var gate = Rows(gateUp, 0, T, c.IntermediateSize);
        using var up = Rows(gateUp, T * c.IntermediateSize, T, c.IntermediateSize);
        using var q3 = q.Reshape(T, c.NumHeads, c.HeadDim);
        using var k3 = k.Reshape(T, c.NumKvHeads, c.HeadDim);
        using var v3 = v.Reshape(T, c.NumKvHeads, c.HeadDim);
        using var attn3 = attn.Reshape(T, c.NumHeads, c.HeadDim);
        float eps = (float)c.RmsNormEps;
        float scale = 1f / MathF.Sqrt(c.HeadDim);
        int window = c.SlidingWindow ?? 0;
        int keys = 0;   // the most keys a token sees: decode attention splits them by this, not by the cache's length
        foreach (var p in positions) keys = Math.Max(keys, p + 1);

        // Rows of tenants whose deltas are factors (lowrank-mp, sparse-lowbit) take the base in the multi-tenant launch; their
        // terms follow, all tenants of a codec together.
        using var rowsT = tenants != null ? new TenantRows(tenants.Select(t => t >= 0 && !pool!.UsesSigns(t) ? -1 : t).ToArray(), dev) : null;
        var runs = tenants == null ? [] : TenantRows.Runs(tenants);
        var factorRuns = runs.Where(r => r.Slot >= 0 && !pool!.UsesSigns(r.Slot)).ToList();
        // Norm weights per token: row 1 + slot of the pool's tables (row 0 the base's), when some tenant has its own.
        using var pick = pool != null && pool.AnyOwnNorms ? Tensor.From(tenants!.Select(t => t + 1).ToArray(), [T], dev) : null;
        using var rowPick = pick != null && lr.Length > 0 ? Tensor.From(lr.Select(r => tenants![r] + 1).ToArray(), [lr.Length], dev) : null;

        bool half = HalfPrefill && T >= HalfPrefillMinRows && dev.IsIlgpu && tenants == null;
        using var oneSlot = delta != null && T <= TenantLinear.BitsMaxRows && dev.IsIlgpu && DeltaDecodeAsPool
            ? TenantRows.All(T, 0, dev) : null;
        int linears = LayerWeights.LinearNames.Length;
        // One row on the GPU: each RMSNorm goes into the linears that read it, q/k/v in one launch, gate/up and SwiGLU in
        // another, the final norm into the head (GemvNorm.cs): 6 launches a layer, not 12 (a tenant's row: 8, its norms
        // apart). Factor codecs' terms and the linears' input hook need h itself.
        bool fuseRow = T == 1 && dev.IsIlgpu && LinearInputs == null && factorRuns.Count == 0;
        int rowTenant = tenants != null ? tenants[0] : -1;
        var embedding = delta?.Embedding ?? Weights.Embedding;
        Embedding.Run(tIds, embedding, x);
        if (rowsT != null)
            foreach (var (start, count, slot) in runs)
                if (slot >= 0 && pool!.Embedding(slot) is { } own)
                {
                    using var si = tIds.Slice(start, count);
                    using var sx = x.Slice(start, count);
                    Embedding.Run(si, own, sx);
                }
        for (int l = 0; l < c.NumLayers; l++)
        {
            var w = Weights.Layers[l];
            var d = delta?.Layers[l];
            // y (+)= x·Wᵀ for linear k (LayerWeights.LinearNames order), with the delta's term when there is one.
            void Linear(Tensor input, int k, Tensor baseWeight, Tensor output, bool accumulate = false)
            {
                LinearInputs?.Invoke(l, k, input);
                if (rowsT != null)
                {
                    TenantLinear.Run(input, baseWeight, pool!.Signs[l][k], pool.Scales[l][k], rowsT, output, accumulate);
                    if (factorRuns.Count > 0)
                    {
                        // One launch (pair) for up to 8 tenants of each codec: LowRankLinear's and SparseLinear's many-tenant forms.
                        var lowRank = factorRuns.Where(r => pool.LowRank(r.Slot, l, k) != null).Select(r => (r.Start, r.Count, pool.LowRank(r.Slot, l, k)!)).ToList();
                        var sparse = factorRuns.Where(r => pool.Sparse(r.Slot, l, k) != null).Select(r => (r.Start, r.Count, pool.Sparse(r.Slot, l, k)!)).ToList();
                        LowRankLinear.Run(input, lowRank, output);
                        SparseLinear.Run(input, sparse, output);
                    }
                }
                else if (d?.Bits[k] is { } bits && oneSlot != null)
                {
                    using var s1 = bits.Signs.Reshape(1, bits.Signs.Dim(0), bits.Signs.Dim(1));
                    using var a1 = delta!.Scales(dev).Slice(l * linears + k, 1);
                    TenantLinear.Run(input, baseWeight, s1, a1, oneSlot, output, accumulate);
                }
                else if (d?.Bits[k] is { } b)
                {
                    if (half && HalfBase(input, baseWeight, output, accumulate)) BitLinear.Run(input, b.Signs, b.Scale, output);
                    else BitLinear.Apply(input, baseWeight, b.Signs, b.Scale, output, accumulate);
                }
                else
                {
                    if (!(half && HalfBase(input, d?.Whole[k] ?? baseWeight, output, accumulate)))
                        MatMul.Run(input, d?.Whole[k] ?? baseWeight, output, accumulate);
                    if (d?.LowRank[k] is { } lr) LowRankLinear.Run(input, lr, output);
                    if (d?.Sparse[k] is { } sp) SparseLinear.Run(input, sp, output);
                }
            }
            void Norm(Tensor? own, Tensor baseWeight, Tensor? table)
            {
                if (pick != null) RmsNorm.Run(x, table!, h, eps, pick);
                else RmsNorm.Run(x, own ?? baseWeight, h, eps);
            }
            // Linear k of a fused call as the unfused path would run it (W, its slot's signs and scales, the slot), or null
            // where that path is not one of W + α·S (a factor codec's term).
            (GemvNorm.Linear L, int Slot)? Plan(int k, Tensor baseWeight, List<Tensor> temps)
            {
                if (rowsT != null)
                    return rowTenant < 0 ? (new(baseWeight, null, null), -1) : (new(baseWeight, pool!.Signs[l][k], pool.Scales[l][k]), rowTenant);
                if (d == null) return (new(baseWeight, null, null), -1);
                if (d.LowRank[k] != null || d.Sparse[k] != null) return null;
                if (d.Bits[k] is not { } bits) return (new(d.Whole[k] ?? baseWeight, null, null), -1);
                if (oneSlot == null) return null;
                var alpha = delta!.Scales(dev).Slice(l * linears + k, 1);
                temps.Add(alpha);
                return (new(baseWeight, bits.Signs, alpha), 0);
            }
            // rmsnorm(x) through linears ks (with SwiGLU: gate and up into outs[0]) in one launch, where it applies
            bool Fused(int[] ks, Tensor[] weights, Tensor? own, Tensor baseNorm, Tensor? table, Tensor[] outs, bool swiGlu)
            {
                if (!fuseRow) return false;
                var temps = new List<Tensor>();
                try
                {
                    var plans = ks.Select((k, i) => Plan(k, weights[i], temps)).ToArray();
                    if (plans.Any(p => p == null) || plans.Any(p => p!.Value.Slot != plans[0]!.Value.Slot)) return false;
                    var ls = plans.Select(p => p!.Value.L).ToArray();
                    int slot = plans[0]!.Value.Slot;
                    if (slot >= 0 && !FuseTenantRows)
                    {
                        if (!TenantLinearsInOne) return false;
                        // a tenant's row: the norm its own launch (with the fold, the norm's work in every warp made the
                        // fused loop issue-bound), then its linears in one launch all the same (GemvNorm.TenantPlainKernel)
                        if (!GemvNorm.Takes(h, null, ls.Select(p => p.W).ToArray())) return false;
                        Norm(own, baseNorm, table);
                        if (swiGlu) GemvNorm.RunSwiGlu(h, null, eps, ls[0], ls[1], slot, outs[0]);
                        else GemvNorm.Run(h, null, eps, ls, slot, outs);
                        return true;
                    }
                    var g = NormRow(own ?? baseNorm, table, rowTenant, temps);
                    if (!GemvNorm.Takes(x, g, ls.Select(p => p.W).ToArray())) return false;
                    if (swiGlu) GemvNorm.RunSwiGlu(x, g, eps, ls[0], ls[1], plans[0]!.Value.Slot, outs[0]);
                    else GemvNorm.Run(x, g, eps, ls, plans[0]!.Value.Slot, outs);
                    return true;
                }
                finally
                {
                    foreach (var t in temps) t.Dispose();
                }
            }
            // Linears first … first + n − 1 of a multi-tenant batch in one launch, where it applies (TenantPartsInOne)
            bool Parts(Tensor? store, Tensor? signs, int first, int[] ends, Tensor y)
            {
                if (rowsT == null || !TenantPartsInOne || store == null || signs == null || factorRuns.Count > 0 || LinearInputs != null) return false;
                using var scales = pool!.ScaleTables[l].Slice(first * pool.Capacity, ends.Length * pool.Capacity);
                return TenantLinear.RunParts(h, store, signs, scales, ends, rowsT, y);
            }
            // Attention block: x += o(attention(rope(q(h)), rope(k(h)), v(h))), h = rmsnorm(x).
            if (!Fused([0, 1, 2], [w.Q, w.K, w.V], d?.InputNorm, w.InputNorm, pool?.InputNorms[l], [q, k, v], swiGlu: false))
            {
                Norm(d?.InputNorm, w.InputNorm, pool?.InputNorms[l]);
                if (!Parts(w.QkvStore, pool?.QkvSigns[l], 0, [c.QDim, c.QDim + c.KvDim, c.QDim + 2 * c.KvDim], qkv))
                {
                    Linear(h, 0, w.Q, q);
                    Linear(h, 1, w.K, k);
                    Linear(h, 2, w.V, v);
                }
            }
            RopeCache.Run(q3, k3, v3, tSlots, tPos, rope, cache.K[l], cache.V[l]);
            Attention.Run(q3, cache.K[l], cache.V[l], tSlots, tPos, attn3, window, scale, keys);
            Linear(attn, 3, w.O, x, accumulate: true);
            // MLP block: x += down(silu(gate(h)) · up(h)), h = rmsnorm(x).
            if (!Fused([4, 5], [w.Gate, w.Up], d?.PostAttentionNorm, w.PostAttentionNorm, pool?.PostNorms[l], [gate], swiGlu: true))
            {
                Norm(d?.PostAttentionNorm, w.PostAttentionNorm, pool?.PostNorms[l]);
                if (!Parts(w.GateUpStore, pool?.GateUpSigns[l], 4, [c.IntermediateSize, 2 * c.IntermediateSize], gateUp))
                {
                    Linear(h, 4, w.Gate, gate);
                    Linear(h, 5, w.Up, up);
                }
                SwiGlu.Run(gate, up, gate);
            }
            Linear(gate, 6, w.Down, x, accumulate: true);
        }

        // Only the requested rows go through the final norm and the (large) lm_head.
        int R = logitRows.Length;
        if (R == 0) return;
        using var xr = Tensor.Empty([R, c.HiddenSize], DType.F32, dev);
        using var hr = Tensor.Empty([R, c.HiddenSize], DType.F32, dev);
        Embedding.Run(rows!, x, xr);
        // Tied embeddings: the head is the (possibly replaced) embedding.
        var head = Weights.LmHeadIsEmbedding ? embedding : delta?.LmHead ?? Weights.LmHead;
        // Per run of logit rows that share a head: the base's, or a tenant's own (lm_head, or embedding when tied).
        Tensor HeadOf(int slot) => slot < 0 ? head : (Weights.LmHeadIsEmbedding ? pool!.Embedding(slot) : pool!.LmHead(slot)) ?? head;
        if (R == 1 && dev.IsIlgpu)
        {
            // one row: the final norm inside the head's launch (GemvNorm.cs)
            int slot = tenants != null ? tenants[lr[0]] : -1;
            var temps = new List<Tensor>();
            try
            {
                var g = NormRow(delta?.FinalNorm ?? Weights.FinalNorm, pick != null ? pool!.FinalNorms : null, slot, temps);
                var hd = HeadOf(slot);
                if (GemvNorm.Takes(xr, g, hd))
                {
                    GemvNorm.Run(xr, g, eps, [new(hd, null, null)], -1, [logits]);
                    return;
                }
            }
            finally
            {
                foreach (var t in temps) t.Dispose();
            }
        }
        if (pick != null) RmsNorm.Run(xr, pool!.FinalNorms, hr, eps, rowPick!);
        else RmsNorm.Run(xr, delta?.FinalNorm ?? Weights.FinalNorm, hr, eps);
        if (tenants == null)
        {
            MatMul.Run(hr, head, logits);
            return;
        }
        for (int a = 0; a < R;)
        {
            var hd = HeadOf(tenants[logitRows[a]]);
            int e = a + 1;
            while (e < R && ReferenceEquals(HeadOf(tenants[logitRows[e]]), hd)) e++;
            using var hs = hr.Slice(a, e - a);
            using var ls = logits.Slice(a, e - a);
            MatMul.Run(hs, hd, ls);
            a = e;
        }
    }

    /// <summary>One row's norm weights in f32 for <see cref="GemvNorm"/>: row 1 + <paramref name="tenant"/> of a pool's
    /// table when there is one (each tenant may bring its own), else <paramref name="weight"/> in f32, cast once and kept
    /// for the model's life (norm weights are a few KB; a delta's own ones are kept too).</summary>
    Tensor NormRow(Tensor weight, Tensor? table, int tenant, List<Tensor> temps)
    {
        if (table != null)
        {
            var row = table.Slice(tenant + 1, 1);
            temps.Add(row);
            return row;
        }
        if (weight.DType == DType.F32) return weight;
        lock (normsF32)
        {
            if (!normsF32.TryGetValue(weight, out var f))
                normsF32[weight] = f = weight.Cast(DType.F32);
            return f;
        }
    }

    readonly Dictionary<Tensor, Tensor> normsF32 = new(ReferenceEqualityComparer.Instance);

    static void Need(Tensor t, int[] shape)
    {
        if (t.DType != DType.F32 || !t.Shape.SequenceEqual(shape))
            throw new ArgumentException($"logits: expected F32[{string.Join(", ", shape)}], got {t}");
    }

    public void Dispose()
    {
        rope.Dispose();
        foreach (var f in normsF32.Values) f.Dispose();
        Weights.Dispose();
    }
}
