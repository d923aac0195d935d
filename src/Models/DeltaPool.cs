using BitDeltaNative.Kernels;

namespace BitDeltaNative.Models;

/// <summary>
/// Many compressed fine-tunes of one base on a device, each in a slot, laid out for the multi-tenant kernels
/// (<see cref="TenantLinear"/>): per decoder linear one Sign1 tensor [capacity, out, in] holding every slot's
/// signs and one f32 [capacity] of scales, so a batch mixing tenants runs each linear in one launch. Norm weights
/// sit in f32 tables [1 + capacity, hidden] (row 0 the base's, row 1 + s slot s's: the fine-tune's when its delta
/// stores them, else the base's), read by <see cref="RmsNorm"/>'s picked form. Embedding and lm_head, which a
/// delta may store whole (BitDelta compresses only the decoder's linears), are kept per slot.
/// The signs of every slot are allocated up front: <see cref="Capacity"/> is the number of fine-tunes that can be
/// resident at once; <see cref="Load"/> fills a free slot and <see cref="Unload"/> frees it.
/// A slot may instead hold a lowrank-mp or sparse-lowbit delta (DeltaFile.cs): its factors per linear sit beside the
/// pool (<see cref="LowRank"/>, <see cref="Sparse"/>), its scales stay 0, and the forward adds their terms after the
/// multi-tenant launch, one launch for up to 8 tenants of a codec (LlamaModel.cs), so tenants of every codec share one batch.
/// </summary>
public sealed class DeltaPool : IDisposable
{
    public LlamaConfig Config { get; }
    public Device Device { get; }
    public int Capacity { get; }
    /// <summary>[layer][linear in <see cref="LayerWeights.LinearNames"/> order]: Sign1 [capacity, out, in].</summary>
    public Tensor[][] Signs { get; }
    /// <summary>[layer][linear]: f32 [capacity]; a free slot's scales are 0.</summary>
    public Tensor[][] Scales { get; }
    /// <summary>[layer]: the q, k and v pools of <see cref="Signs"/> one after another, Sign1 [capacity·(q + 2·kv rows), in]:
    /// what TenantLinear.RunParts reads to run the three in one launch over <see cref="LayerWeights.QkvStore"/>.</summary>
    public Tensor[] QkvSigns { get; }
    /// <summary>[layer]: the gate and up pools one after another, as <see cref="QkvSigns"/>.</summary>
    public Tensor[] GateUpSigns { get; }
    /// <summary>[layer]: f32 [linears·capacity], linear k's <see cref="Scales"/> at k·capacity.</summary>
    public Tensor[] ScaleTables { get; }
    /// <summary>[layer]: f32 [1 + capacity, hidden], the input_layernorm weights; row 0 is the base's.</summary>
    public Tensor[] InputNorms { get; }
    /// <summary>[layer]: f32 [1 + capacity, hidden], the post_attention_layernorm weights.</summary>
    public Tensor[] PostNorms { get; }
    /// <summary>f32 [1 + capacity, hidden], model.norm.</summary>
    public Tensor FinalNorms { get; }

    readonly LlamaWeights baseWeights;
    readonly string?[] names;
    readonly string?[] paths;
    readonly Tensor?[] embeddings, heads;
    readonly bool[] ownNorms;
    readonly long[] wholeBytes;
    readonly string?[] codecs;
    readonly LowRankFactors?[][][] lowRank;
    readonly SparseFactors?[][][] sparse;

    /// <summary>Slot <paramref name="slot"/>'s codec (bitdelta for random and sign tenants; null when free).</summary>
    public string? CodecOf(int slot) => codecs[slot];

    /// <summary>The lowrank-mp factors of a slot's linear, if that slot holds such a delta.</summary>
    public LowRankFactors? LowRank(int slot, int layer, int linear) => lowRank[slot][layer][linear];

    /// <summary>The sparse-lowbit factors of a slot's linear, if that slot holds such a delta.</summary>
    public SparseFactors? Sparse(int slot, int layer, int linear) => sparse[slot][layer][linear];

    /// <summary>Whether the slot's linears are the pool's signs (bitdelta), not factors beside it.</summary>
    public bool UsesSigns(int slot) => codecs[slot] is null or BitDelta.Codec;

    public DeltaPool(LlamaWeights baseWeights, int capacity, Device device)
    {
        if (capacity < 1) throw new BitDeltaException($"delta pool: capacity must be at least 1, got {capacity}");
        var c = baseWeights.Config;
        Config = c;
        Device = device;
        Capacity = capacity;
        this.baseWeights = baseWeights;
        names = new string?[capacity];
        paths = new string?[capacity];
        embeddings = new Tensor?[capacity];
        heads = new Tensor?[capacity];
        ownNorms = new bool[capacity];
        wholeBytes = new long[capacity];
        codecs = new string?[capacity];
        int linears = LayerWeights.LinearNames.Length;
        lowRank = Enumerable.Range(0, capacity).Select(_ => Enumerable.Range(0, c.NumLayers).Select(_ => new LowRankFactors?[linears]).ToArray()).ToArray();
        sparse = Enumerable.Range(0, capacity).Select(_ => Enumerable.Range(0, c.NumLayers).Select(_ => new SparseFactors?[linears]).ToArray()).ToArray();
        var made = new List<Tensor>();
        try
        {
            Tensor Make(int[] shape, DType dtype)
            {
                var t = Tensor.Empty(shape, dtype, device);
                made.Add(t);
                return t;
            }
            // A view of a store's rows as one linear's pool, Sign1 [capacity, out, in]; views own nothing (the stores are made)
            Tensor Pool(Tensor store, ref int row, Tensor weight)
            {
                using var rows = store.Slice(row, capacity * weight.Dim(0));
                row += capacity * weight.Dim(0);
                return rows.Reshape(capacity, weight.Dim(0), weight.Dim(1));
            }
            Signs = new Tensor[c.NumLayers][];
            Scales = new Tensor[c.NumLayers][];
            QkvSigns = new Tensor[c.NumLayers];
            GateUpSigns = new Tensor[c.NumLayers];
            ScaleTables = new Tensor[c.NumLayers];
            InputNorms = new Tensor[c.NumLayers];
            PostNorms = new Tensor[c.NumLayers];
            for (int l = 0; l < c.NumLayers; l++)
            {
                var lw = baseWeights.Layers[l];
                var qkv = QkvSigns[l] = Make([capacity * (lw.Q.Dim(0) + lw.K.Dim(0) + lw.V.Dim(0)), lw.Q.Dim(1)], DType.Sign1);
                var gateUp = GateUpSigns[l] = Make([capacity * (lw.Gate.Dim(0) + lw.Up.Dim(0)), lw.Gate.Dim(1)], DType.Sign1);
                int atQkv = 0, atGateUp = 0;
                Signs[l] =
                [
                    Pool(qkv, ref atQkv, lw.Q), Pool(qkv, ref atQkv, lw.K), Pool(qkv, ref atQkv, lw.V),
                    Make([capacity, lw.O.Dim(0), lw.O.Dim(1)], DType.Sign1),
                    Pool(gateUp, ref atGateUp, lw.Gate), Pool(gateUp, ref atGateUp, lw.Up),
                    Make([capacity, lw.Down.Dim(0), lw.Down.Dim(1)], DType.Sign1),
                ];
                var table = ScaleTables[l] = Make([linears * capacity], DType.F32);
                table.Fill(0);
                Scales[l] = Enumerable.Range(0, linears).Select(k => table.Slice(k * capacity, capacity)).ToArray();
                InputNorms[l] = NormTable(lw.InputNorm, Make);
                PostNorms[l] = NormTable(lw.PostAttentionNorm, Make);
            }
            FinalNorms = NormTable(baseWeights.FinalNorm, Make);
        }
        catch
        {
            foreach (var t in made) t.Dispose();
            throw;
        }
        owned = made;
    }

    readonly List<Tensor> owned;

    /// <summary>A table of 1 + capacity rows, each the base's norm weight in f32.</summary>
    Tensor NormTable(Tensor baseNorm, Func<int[], DType, Tensor> make)
    {
        var table = make([1 + Capacity, baseNorm.Dim(0)], DType.F32);
        for (int r = 0; r <= Capacity; r++) SetRow(table, r, baseNorm);
        return table;
    }

    static void SetRow(Tensor table, int row, Tensor weight)
    {
        using var f = weight.DType == DType.F32 ? null : weight.Cast(DType.F32);
        using var src = (f ?? weight).Reshape(1, weight.Dim(0));
        using var dst = table.Slice(row, 1);
        dst.CopyFrom(src);
    }

    /// <summary>Device bytes of one slot: its signs, scales and norm rows (what a compressed fine-tune costs resident,
    /// before any embedding or lm_head it stores whole).</summary>
    public long BytesPerSlot =>
        Signs.Sum(l => l.Sum(t => t.ByteLength)) / Capacity + 4L * Scales.Sum(l => l.Length)
        + 4L * Config.HiddenSize * (2 * Config.NumLayers + 1);

    /// <summary><see cref="BytesPerSlot"/> before any pool is made: what one more slot would cost over this base.</summary>
    public static long SlotBytes(LlamaWeights baseWeights) =>
        baseWeights.Layers.Sum(l => l.Linears.Sum(p => DType.Sign1.ByteCount([1, p.Weight.Dim(0), p.Weight.Dim(1)]) + 4L))
        + 4L * baseWeights.Config.HiddenSize * (2 * baseWeights.Config.NumLayers + 1);

    /// <summary>Device bytes slot <paramref name="slot"/> holds beyond <see cref="BytesPerSlot"/> (embedding, lm_head, and
    /// a lowrank-mp or sparse-lowbit delta's factors).</summary>
    public long WholeBytes(int slot) => wholeBytes[slot];

    /// <summary>Device bytes of the pool: every slot's signs (allocated up front), scales and norm tables, plus the
    /// tensors loaded slots store whole.</summary>
    public long ByteLength => owned.Sum(t => t.ByteLength) + wholeBytes.Sum();

    public string? Name(int slot) => names[slot];
    public string? PathOf(int slot) => paths[slot];
    public int? SlotOf(string name) => Array.IndexOf(names, name) is var i and >= 0 ? i : null;
    public int Loaded => names.Count(n => n != null);
    public int? FreeSlot => Array.IndexOf(names, null) is var i and >= 0 ? i : null;
    public Tensor? Embedding(int slot) => embeddings[slot];
    public Tensor? LmHead(int slot) => heads[slot];
    /// <summary>Whether any loaded slot has norm weights of its own (else the batch can use the base's norms directly).</summary>
    public bool AnyOwnNorms => ownNorms.Any(b => b);

    /// <summary>
    /// Copies a delta file, already checked against this pool's base (<see cref="DeltaFile.CheckBase"/>), into a
    /// free slot under <paramref name="name"/>; returns the slot. Only compressed decoder linears, norms, embedding
    /// and lm_head can be batched: a delta that stores a decoder linear whole is refused.
    /// </summary>
    public int Load(DeltaFile file, string name)
    {
        if (SlotOf(name) != null) throw new BitDeltaException($"a tenant named '{name}' is already loaded");
        int slot = FreeSlot ?? throw new BitDeltaException($"all {Capacity} delta slots are in use; unload a tenant first");
        var c = Config;
        var expected = LlamaWeights.ExpectedTensors(c).ToDictionary(e => e.Name, e => e.Shape);
        // Check everything before copying anything.
        var linears = file.Compressed.Select(e => (e.Key, DeltaWeights.CompressedLinear(file.Path, e.Key, e.Value, expected, c.NumLayers))).ToList();
        for (int l = 0; l < c.NumLayers; l++)
            foreach (var n in LayerWeights.LinearNames)
                if (!file.Compressed.ContainsKey(LlamaWeights.LayerPrefix(l) + n + ".weight"))
                    throw new BitDeltaException($"{file.Path}: '{LlamaWeights.LayerPrefix(l)}{n}.weight' is not compressed; the multi-tenant engine batches only deltas that compress every decoder linear");
        var wholes = new List<(string Name, DeltaWeights.Part Part, int Layer)>();
        foreach (var tname in file.Replaced)
        {
            if (!expected.ContainsKey(tname))
                throw new BitDeltaException($"{file.Path}: tensor '{tname}' is not a tensor of this base's architecture");
            if (!file.ReplacedDType(tname).IsFloat()) throw new BitDeltaException($"{file.Path}: tensor '{tname}' is not a float tensor");
            var (part, layer, _) = DeltaWeights.WholePart(file.Path, tname);
            // Every decoder linear is compressed (checked above), so a whole one is stored twice.
            if (part == DeltaWeights.Part.Linear) throw DeltaWeights.BothWholeAndCompressed(file.Path, tname);
            wholes.Add((tname, part, layer));
        }

        names[slot] = name;
        paths[slot] = file.Path;
        codecs[slot] = file.Codec;
        try
        {
            foreach (var (tname, (layer, linear)) in linears)
            {
                if (file.Codec == Codecs.LowRankMp.Codec)
                {
                    wholeBytes[slot] += (lowRank[slot][layer][linear] = file.LowRankLinear(tname).MoveTo(Device)).ByteLength;
                    continue;
                }
                if (file.Codec == Codecs.SparseLowBit.Codec)
                {
                    wholeBytes[slot] += (sparse[slot][layer][linear] = file.SparseLinear(tname).MoveTo(Device)).ByteLength;
                    continue;
                }
                var (signs, scale) = file.BitDeltaLinear(tname);
                using (signs)
                {
                    var pool = Signs[layer][linear];
                    using var dst = pool.Slice(slot, 1);
                    using var src = signs.Reshape(1, pool.Dim(1), pool.Dim(2));
                    dst.CopyFrom(src);
                }
                using var a = Tensor.From(new[] { scale }, [1]);
                using var at = Scales[layer][linear].Slice(slot, 1);
                at.CopyFrom(a);
            }
            foreach (var (tname, part, layer) in wholes)
            {
                using var src = file.ReplacedTensor(tname);
                if (!src.Shape.SequenceEqual(expected[tname]))
                    throw new BitDeltaException($"{file.Path}: tensor '{tname}' is {src.DType}{src.ShapeString}, expected shape [{string.Join(", ", expected[tname])}]");
                switch (part)
                {
                    case DeltaWeights.Part.Embedding: embeddings[slot] = Copy(src, slot); break;
                    case DeltaWeights.Part.LmHead: heads[slot] = Copy(src, slot); break;
                    case DeltaWeights.Part.FinalNorm: SetRow(FinalNorms, 1 + slot, src); ownNorms[slot] = true; break;
                    case DeltaWeights.Part.InputNorm: SetRow(InputNorms[layer], 1 + slot, src); ownNorms[slot] = true; break;
                    case DeltaWeights.Part.PostNorm: SetRow(PostNorms[layer], 1 + slot, src); ownNorms[slot] = true; break;
                }
            }
        }
        catch
        {
            Unload(slot);
            throw;
        }
        return slot;
    }

    /// <summary>
    /// A tenant of pseudo-random signs (<see cref="Kernels.RandomFill"/>) and scale <paramref name="scale"/> on every
    /// linear, made on the device, with the base's norms and heads: what a BitDelta tenant costs to hold and to run,
    /// for benchmarks at real shapes without delta files.
    /// </summary>
    public int LoadRandom(string name, ulong seed, float scale = 1e-3f)
    {
        if (SlotOf(name) != null) throw new BitDeltaException($"a tenant named '{name}' is already loaded");
        int slot = FreeSlot ?? throw new BitDeltaException($"all {Capacity} delta slots are in use; unload a tenant first");
        names[slot] = name;
        paths[slot] = "(random)";
        codecs[slot] = BitDelta.Codec;
        for (int l = 0; l < Config.NumLayers; l++)
            for (int k = 0; k < Signs[l].Length; k++)
            {
                using var dst = Signs[l][k].Slice(slot, 1);
                Kernels.RandomFill.Run(dst, seed * 7919UL + (ulong)(l * 16 + k));
                using var a = Tensor.From(new[] { scale }, [1]);
                using var at = Scales[l][k].Slice(slot, 1);
                at.CopyFrom(a);
            }
        return slot;
    }

    Tensor Copy(Tensor src, int slot)
    {
        var t = Tensor.Empty(src.Shape, src.DType, Device);
        t.CopyFrom(src);
        wholeBytes[slot] += t.ByteLength;
        return t;
    }

    /// <summary>Frees a slot: its scales become 0, its norm rows the base's again, its whole tensors are released.</summary>
    public void Unload(int slot)
    {
        if (names[slot] == null && paths[slot] == null) return;
        names[slot] = null;
        paths[slot] = null;
        codecs[slot] = null;
        foreach (var layer in lowRank[slot])
            for (int k = 0; k < layer.Length; k++) { layer[k]?.Dispose(); layer[k] = null; }
        foreach (var layer in sparse[slot])
            for (int k = 0; k < layer.Length; k++) { layer[k]?.Dispose(); layer[k] = null; }
        foreach (var layer in Scales)
            foreach (var s in layer)
            {
                using var at = s.Slice(slot, 1);
                at.Fill(0);
            }
        if (ownNorms[slot])
        {
            for (int l = 0; l < Config.NumLayers; l++)
            {
                SetRow(InputNorms[l], 1 + slot, baseWeights.Layers[l].InputNorm);
                SetRow(PostNorms[l], 1 + slot, baseWeights.Layers[l].PostAttentionNorm);
            }
            SetRow(FinalNorms, 1 + slot, baseWeights.FinalNorm);
            ownNorms[slot] = false;
        }
        embeddings[slot]?.Dispose();
        heads[slot]?.Dispose();
        embeddings[slot] = heads[slot] = null;
        wholeBytes[slot] = 0;
    }

    public void Dispose()
    {
        for (int s = 0; s < Capacity; s++)
        {
            embeddings[s]?.Dispose();
            heads[s]?.Dispose();
            foreach (var f in lowRank[s].SelectMany(l => l)) f?.Dispose();
            foreach (var f in sparse[s].SelectMany(l => l)) f?.Dispose();
        }
        foreach (var t in owned) t.Dispose();
        owned.Clear();
    }
}
