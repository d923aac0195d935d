using BitDeltaNative.Models;
using BitDeltaNative.Tests.Serving;
using BitDeltaNative.Tests.Tensors;
using FsCheck.Xunit;
using RandomFill = BitDeltaNative.Kernels.RandomFill;

namespace BitDeltaNative.Tests.Models;

/// <summary>
/// The delta pool's bookkeeping (<see cref="DeltaPool"/>): what <see cref="DeltaPool.Load"/> puts in a slot (the
/// file's signs word for word, its scales, its norms in the slot's rows of the norm tables, its whole embedding or
/// lm_head), what <see cref="DeltaPool.Unload"/> takes away (scales back to 0, the base's norms back), and that
/// <see cref="DeltaPool.LoadRandom"/> is a function of its seed. On the managed CPU device and on ILGPU's CPU
/// accelerator (copies, fills and one small kernel: cheap there).
/// </summary>
[Collection(IlgpuCpuCollection.Name)]
public class DeltaPoolTests(EngineDeltas deltas) : IClassFixture<EngineDeltas>
{
    public static TheoryData<string, string> Cases
    {
        get
        {
            var d = new TheoryData<string, string>();
            foreach (var m in Fixtures.Models)
                foreach (var dev in new[] { "cpu", "ilgpu-cpu" })
                    d.Add(m, dev);
            return d;
        }
    }

    static uint[] Words(Tensor pooled, int slot)
    {
        using var s = pooled.Slice(slot, 1);
        return s.ToArray<uint>();
    }

    static float[] Row(Tensor table, int row)
    {
        using var r = table.Slice(row, 1);
        return r.ToFloatArray();
    }

    static float ScaleOf(DeltaPool pool, int layer, int linear, int slot) => pool.Scales[layer][linear].ToFloatArray()[slot];

    static string Name(int layer, int linear) => LlamaWeights.LayerPrefix(layer) + LayerWeights.LinearNames[linear] + ".weight";

    /// <summary>Every norm row of a slot: the file's weight where it stores one, else the base's.</summary>
    static void AssertNorms(DeltaPool pool, LlamaWeights w, int slot, DeltaFile? file)
    {
        float[] Want(string name, Tensor baseWeight)
        {
            if (file != null && file.Replaced.Contains(name)) { using var t = file.ReplacedTensor(name); return t.ToFloatArray(); }
            return baseWeight.ToFloatArray();
        }
        var c = pool.Config;
        for (int l = 0; l < c.NumLayers; l++)
        {
            string p = LlamaWeights.LayerPrefix(l);
            Assert.Equal(Want(p + "input_layernorm.weight", w.Layers[l].InputNorm), Row(pool.InputNorms[l], 1 + slot));
            Assert.Equal(Want(p + "post_attention_layernorm.weight", w.Layers[l].PostAttentionNorm), Row(pool.PostNorms[l], 1 + slot));
        }
        Assert.Equal(Want(LlamaWeights.FinalNormName, w.FinalNorm), Row(pool.FinalNorms, 1 + slot));
    }

    static void AssertBaseRows(DeltaPool pool, LlamaWeights w)
    {
        for (int l = 0; l < pool.Config.NumLayers; l++)
        {
            Assert.Equal(w.Layers[l].InputNorm.ToFloatArray(), Row(pool.InputNorms[l], 0));
            Assert.Equal(w.Layers[l].PostAttentionNorm.ToFloatArray(), Row(pool.PostNorms[l], 0));
        }
        Assert.Equal(w.FinalNorm.ToFloatArray(), Row(pool.FinalNorms, 0));
    }

    [Theory]
    [MemberData(nameof(Cases))]
    public void Load_copies_the_files_signs_scales_norms_and_whole_tensors_into_its_slot(string model, string device)
    {
        var (pathA, _) = deltas.For(model);
        var dev = Device.Parse(device);
        using var w = LlamaWeights.Load(Fixtures.Model(model), dev);
        var c = w.Config;
        using var pool = new DeltaPool(w, 3, dev);
        Assert.Equal(0, pool.LoadRandom("r", 5, 0.25f));
        var before = Enumerable.Range(0, c.NumLayers).Select(l => Enumerable.Range(0, 7).Select(k => Words(pool.Signs[l][k], 0)).ToArray()).ToArray();

        using var file = DeltaFile.Open(pathA);
        Assert.Equal(1, pool.Load(file, "a"));
        Assert.Equal("a", pool.Name(1));
        Assert.Equal(pathA, pool.PathOf(1));
        Assert.Equal(1, pool.SlotOf("a"));
        Assert.Equal(2, pool.FreeSlot);
        Assert.Equal(2, pool.Loaded);
        Assert.Equal(7 * c.NumLayers, file.Compressed.Count);
        for (int l = 0; l < c.NumLayers; l++)
            for (int k = 0; k < 7; k++)
            {
                var (signs, scale) = file.BitDeltaLinear(Name(l, k));
                using (signs)
                    Assert.Equal(signs.ToArray<uint>(), Words(pool.Signs[l][k], 1));
                var scales = pool.Scales[l][k].ToFloatArray();
                Assert.Equal([0.25f, scale, 0f], scales);
                Assert.True(scale > 0);
                Assert.Equal(before[l][k], Words(pool.Signs[l][k], 0));   // the neighbour slot is untouched
            }

        // Norms: slot 1's rows are the fine-tune's where the file stores them; the base's row 0 and the other slots' stay.
        AssertBaseRows(pool, w);
        AssertNorms(pool, w, 1, file);
        AssertNorms(pool, w, 0, null);
        AssertNorms(pool, w, 2, null);
        bool ownNorms = file.Replaced.Any(n => n.EndsWith("norm.weight", StringComparison.Ordinal));
        Assert.Equal(ownNorms, pool.AnyOwnNorms);
        Assert.Equal(model != "mistral-bf16", ownNorms);   // the fixtures' fine-tunes: llama's final norm, llama3's layer norm

        // Embedding and lm_head: copied whole when the file stores them, and counted.
        long whole = 0;
        foreach (var (name, got) in new[] { (LlamaWeights.EmbeddingName, pool.Embedding(1)), (LlamaWeights.LmHeadName, pool.LmHead(1)) })
        {
            if (!file.Replaced.Contains(name)) { Assert.Null(got); continue; }
            using var want = file.ReplacedTensor(name);
            Assert.NotNull(got);
            Assert.Equal(want.DType, got.DType);
            Assert.Equal(want.ToArray<byte>(), got.ToArray<byte>());
            Assert.Equal(dev, got.Device);
            whole += want.ByteLength;
        }
        Assert.Equal(whole, pool.WholeBytes(1));
        Assert.Equal(model != "mistral-bf16", whole > 0);
        Assert.Equal(0, pool.WholeBytes(0));
        Assert.Null(pool.Embedding(0));
    }

    [Theory]
    [MemberData(nameof(Cases))]
    public void Unload_zeros_the_slots_scales_and_restores_the_base_norms(string model, string device)
    {
        var (pathA, pathB) = deltas.For(model);
        var dev = Device.Parse(device);
        using var w = LlamaWeights.Load(Fixtures.Model(model), dev);
        var c = w.Config;
        using var pool = new DeltaPool(w, 2, dev);
        using var fa = DeltaFile.Open(pathA);
        using var fb = DeltaFile.Open(pathB);
        Assert.Equal(0, pool.Load(fa, "a"));
        Assert.Equal(1, pool.Load(fb, "b"));
        long bytes = pool.ByteLength;
        long whole = pool.WholeBytes(0);

        pool.Unload(0);
        Assert.Null(pool.Name(0));
        Assert.Null(pool.PathOf(0));
        Assert.Null(pool.SlotOf("a"));
        Assert.Equal(0, pool.FreeSlot);
        Assert.Equal(1, pool.Loaded);
        Assert.Null(pool.Embedding(0));
        Assert.Null(pool.LmHead(0));
        Assert.Equal(0, pool.WholeBytes(0));
        Assert.Equal(bytes - whole, pool.ByteLength);
        var scalesB = fb.Scales();
        for (int l = 0; l < c.NumLayers; l++)
            for (int k = 0; k < 7; k++)
                Assert.Equal([0f, scalesB[Name(l, k)]], pool.Scales[l][k].ToFloatArray());
        AssertNorms(pool, w, 0, null);   // the base's norms again
        AssertNorms(pool, w, 1, fb);     // b keeps its own
        AssertBaseRows(pool, w);
        Assert.Equal(model != "mistral-bf16", pool.AnyOwnNorms);   // b's

        pool.Unload(0);   // twice: nothing happens
        Assert.Equal(1, pool.Loaded);
        pool.Unload(1);
        Assert.Equal(0, pool.Loaded);
        Assert.False(pool.AnyOwnNorms);
        AssertNorms(pool, w, 1, null);
        Assert.All(pool.Scales.SelectMany(s => s), s => Assert.All(s.ToFloatArray(), v => Assert.Equal(0f, v)));

        // Loaded again, a slot is as good as new.
        Assert.Equal(0, pool.Load(fb, "b"));
        AssertNorms(pool, w, 0, fb);
        for (int l = 0; l < c.NumLayers; l++)
            for (int k = 0; k < 7; k++)
            {
                var (signs, _) = fb.BitDeltaLinear(Name(l, k));
                using (signs) Assert.Equal(signs.ToArray<uint>(), Words(pool.Signs[l][k], 0));
            }
    }

    [Theory]
    [InlineData("cpu")]
    [InlineData("ilgpu-cpu")]
    public void LoadRandom_is_a_function_of_the_seed(string device)
    {
        var dev = Device.Parse(device);
        var c = LlamaConfig.Load(Fixtures.Model("mistral-bf16"));
        using var w = LlamaWeights.Random(c, DType.BF16, dev, 3);
        using var pool = new DeltaPool(w, 3, dev);
        Assert.Equal(0, pool.LoadRandom("x", 7));
        Assert.Equal(1, pool.LoadRandom("y", 8, 0.5f));
        Assert.Equal(2, pool.LoadRandom("z", 7));
        Assert.Equal("(random)", pool.PathOf(0));
        Assert.False(pool.AnyOwnNorms);
        Assert.Equal(0, pool.WholeBytes(0));
        for (int l = 0; l < c.NumLayers; l++)
            for (int k = 0; k < 7; k++)
            {
                var x = Words(pool.Signs[l][k], 0);
                // The spec: word i of slot x's matrix is RandomFill's hash of (seed·7919 + l·16 + k, i).
                var want = new uint[x.Length];
                RandomFill.Twin(System.Runtime.InteropServices.MemoryMarshal.AsBytes(want.AsSpan()), DType.Sign1, 7UL * 7919 + (ulong)(l * 16 + k), 0);
                Assert.Equal(want, x);
                Assert.Equal(x, Words(pool.Signs[l][k], 2));
                Assert.NotEqual(x, Words(pool.Signs[l][k], 1));
                if (k > 0) Assert.NotEqual(Words(pool.Signs[l][k - 1], 0).Take(16), x.Take(16));   // each linear its own stream
                Assert.Equal([1e-3f, 0.5f, 1e-3f], pool.Scales[l][k].ToFloatArray());
            }
        Assert.Contains("already loaded", Assert.Throws<BitDeltaException>(() => pool.LoadRandom("x", 9)).Message);
        Assert.Contains("all 3 delta slots are in use", Assert.Throws<BitDeltaException>(() => pool.LoadRandom("w", 9)).Message);
    }

    [Fact]
    public void Deltas_the_pool_cannot_batch_are_refused_before_anything_is_copied()
    {
        using var dir = new TempDir();
        const string model = "llama-f16";
        var (pathA, _) = deltas.For(model);
        using var w = LlamaWeights.Load(Fixtures.Model(model), Device.Cpu);
        var c = w.Config;
        Assert.Contains("capacity must be at least 1", Assert.Throws<BitDeltaException>(() => new DeltaPool(w, 0, Device.Cpu)).Message);
        using var pool = new DeltaPool(w, 1, Device.Cpu);
        using var fa = DeltaFile.Open(pathA);

        // One linear left out (a delta may store it whole, or not change it): the batched kernels need them all.
        string partial = dir.File("partial.safetensors");
        var kept = fa.Compressed.Keys.Where(n => n != Name(1, 3)).Select(n => { var (s, a) = fa.BitDeltaLinear(n); return (n, s, a); }).ToList();
        DeltaFile.Write(partial, BitDelta.Codec, c, fa.BaseWeightsFingerprint, kept, []);
        using (var fp = DeltaFile.Open(partial))
        {
            var e = Assert.Throws<BitDeltaException>(() => pool.Load(fp, "p"));
            Assert.Contains($"'{Name(1, 3)}' is not compressed", e.Message);
            Assert.StartsWith(partial, e.Message);
        }
        Assert.Equal(0, pool.FreeSlot);
        Assert.All(pool.Scales.SelectMany(s => s), s => Assert.Equal(0f, s.ToFloatArray()[0]));

        // A whole tensor with no place in a Llama.
        string extra = dir.File("extra.safetensors");
        var all = fa.Compressed.Keys.Select(n => { var (s, a) = fa.BitDeltaLinear(n); return (n, s, a); }).ToList();
        using (var t = Tensor.From(new float[] { 1, 2 }, [2]))
            DeltaFile.Write(extra, BitDelta.Codec, c, fa.BaseWeightsFingerprint, all, [("model.layers.0.self_attn.rotary.weight", t)]);
        using (var fe = DeltaFile.Open(extra))
            Assert.Contains("is not a tensor of this base's architecture", Assert.Throws<BitDeltaException>(() => pool.Load(fe, "e")).Message);
        Assert.Equal(0, pool.Loaded);

        // A whole norm of the wrong length: found while copying; the slot is given back.
        string badNorm = dir.File("badnorm.safetensors");
        using (var t = Tensor.From(new float[c.HiddenSize + 1], [c.HiddenSize + 1]))
            DeltaFile.Write(badNorm, BitDelta.Codec, c, fa.BaseWeightsFingerprint, all, [(LlamaWeights.FinalNormName, t)]);
        using (var fn = DeltaFile.Open(badNorm))
            Assert.Contains("expected shape", Assert.Throws<BitDeltaException>(() => pool.Load(fn, "n")).Message);
        Assert.Equal(0, pool.FreeSlot);
        Assert.Null(pool.SlotOf("n"));
        Assert.All(pool.Scales.SelectMany(s => s), s => Assert.Equal(0f, s.ToFloatArray()[0]));
        AssertNorms(pool, w, 0, null);

        Assert.Equal(0, pool.Load(fa, "a"));   // and the slot still works
    }

    /// <summary>
    /// Random sequences of loads (two files, random tenants), unloads and refused loads (a name already there, a
    /// full pool) against a model of the pool (slot → name and scales): after every operation the names, free slot,
    /// count and every slot's scales are as the model says; a refused load changes nothing.
    /// </summary>
    [Property(MaxTest = 25)]
    public void Loads_and_unloads_keep_the_pool_as_a_model_of_it_says(int seed)
    {
        var rng = new Random(seed);
        const string model = "mistral-bf16";
        var (pathA, pathB) = deltas.For(model);
        using var w = LlamaWeights.Load(Fixtures.Model(model), Device.Cpu);
        var c = w.Config;
        int capacity = rng.Next(1, 5);
        using var pool = new DeltaPool(w, capacity, Device.Cpu);
        using var fa = DeltaFile.Open(pathA);
        using var fb = DeltaFile.Open(pathB);
        var scalesA = fa.Scales();
        var scalesB = fb.Scales();
        var names = new string?[capacity];
        var scaleOf = new Func<int, int, float>?[capacity];   // (layer, linear) → α of the slot's tenant

        for (int step = 0; step < 12; step++)
        {
            int op = rng.Next(4);
            string name = "t" + rng.Next(6);
            int free = Array.IndexOf(names, null);
            if (op == 0)
            {
                int s = rng.Next(capacity);
                pool.Unload(s);
                names[s] = null;
                scaleOf[s] = null;
            }
            else if (names.Contains(name) || free < 0)
            {
                var e = op == 3 ? Assert.Throws<BitDeltaException>(() => pool.LoadRandom(name, 1)) : Assert.Throws<BitDeltaException>(() => pool.Load(fa, name));
                Assert.Contains(names.Contains(name) ? "already loaded" : "in use", e.Message);
            }
            else
            {
                int got;
                if (op == 3) { float a = rng.Next(1, 100) / 64f; got = pool.LoadRandom(name, (ulong)rng.Next(), a); scaleOf[free] = (_, _) => a; }
                else
                {
                    var (f, sc) = op == 1 ? (fa, scalesA) : (fb, scalesB);
                    got = pool.Load(f, name);
                    scaleOf[free] = (l, k) => sc[Name(l, k)];
                }
                Assert.Equal(free, got);   // the lowest free slot
                names[free] = name;
            }
            for (int s = 0; s < capacity; s++)
            {
                Assert.Equal(names[s], pool.Name(s));
                if (names[s] != null) Assert.Equal(s, pool.SlotOf(names[s]!));
            }
            Assert.Equal(names.Count(n => n != null), pool.Loaded);
            Assert.Equal(Array.IndexOf(names, null) is var f0 and >= 0 ? f0 : null, pool.FreeSlot);
            for (int l = 0; l < c.NumLayers; l++)
                for (int k = 0; k < 7; k++)
                {
                    var got = pool.Scales[l][k].ToFloatArray();
                    for (int s = 0; s < capacity; s++)
                        Assert.Equal(scaleOf[s]?.Invoke(l, k) ?? 0f, got[s]);
                }
        }
    }
}
