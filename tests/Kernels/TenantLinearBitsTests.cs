using System.Reflection;
using System.Text.RegularExpressions;
using BitDeltaNative.Kernels;
using Check = BitDeltaNative.Kernels.Check;

namespace BitDeltaNative.Tests.Kernels;

/// <summary>
/// The bit-serial tenant term (TenantLinearBits.cs) and the base form beside it (TenantLinearBase.cs), beyond their
/// audit case "tenant linear bits" (KernelTests): which rows the host sends there, what their PTX must hold, and the
/// edges of the exact-integer scheme (rows of zeros, rows whose values span many orders of magnitude, a NaN that
/// must stay in its row).
/// </summary>
[Collection(IlgpuCpuCollection.Name)]
public class TenantLinearBitsTests
{
    [Fact]
    public void Tenants_of_few_rows_go_bit_serial_and_leave_the_groups_tenant_lists()
    {
        // Slot 0 has 3 rows (too many), slots 1, 2 and 3 one or two, −1 the base.
        int[] slots = [1, 0, -1, 2, 0, 2, 0, 3];
        using var rows = new TenantRows(slots, Device.Cpu);
        Assert.Equal(4, rows.BitsCount);
        Assert.Equal([0, 1, 3, 2, 5, 2, 7, 3], rows.BitsList!.Host<int>().ToArray());
        Assert.False(rows.DecodeTenantsAllBits);
        var table = rows.MmaGroupsBits!.Host<int>().ToArray();
        Assert.Equal([0, -1, -1, -1, -1, -1, -1, -1], table[16..24]);   // slot 0 alone keeps its f16 tenant term
        var full = rows.MmaGroups!.Host<int>().ToArray();
        Assert.Equal([0, 1, 2, 3], full[16..24].Where(u => u >= 0).Order());

        using var allFew = new TenantRows([1, -1, 2, 2, 3], Device.Cpu);
        Assert.True(allFew.DecodeTenantsAllBits);
        using var one = new TenantRows([4, -1, 5], Device.Cpu);   // two tenants: under BitsMinTenants
        Assert.Equal(0, one.BitsCount);
        Assert.False(one.DecodeTenantsAllBits);
        using var baseOnly = new TenantRows([-1, -1], Device.Cpu);
        Assert.True(baseOnly.DecodeTenantsAllBits);
    }

    [Fact]
    public void Ptx_has_binary_tensor_core_products_16_byte_loads_and_integer_atomics()
    {
        var bits = Ptx.Compile(Kernel("BitsKernel"));
        Assert.Contains("mma.sync.aligned.m16n8k256.row.col.s32.b1.b1.s32.and.popc", bits);
        Assert.True(bits.Split("m16n8k256").Length - 1 >= 16, "fewer than 4 tiles × 4 binary products a chunk");
        Assert.Contains("ld.global.v4.b32", bits);
        Assert.Contains("red.max.global.s32", Ptx.Compile(Kernel("BitsMaxKernel")));   // an atomic whose result is unused
        Assert.Contains("red.add.global.u64", Ptx.Compile(Kernel("BitPlanesKernel")));
        var end = Ptx.Compile(Kernel("BitsEndKernel"));
        Assert.True(end.Split("m16n8k256").Length - 1 >= 16, "the three-launch form's products: fewer than 16 binary products a chunk");
        Assert.Contains("ld.global.v4.b32", end);
        var deep = Ptx.Compile(Kernel("BitsEndDeepKernel"));   // 6 chunks unrolled (3 sign buffers × 2 plane buffers)
        Assert.True(deep.Split("m16n8k256").Length - 1 >= 6 * 16, "the deep form's loop: fewer than 6 chunks of 16 binary products");
        Assert.Contains(".minnctapersm 3", deep);   // its 168 registers: 3 blocks a multiprocessor
        var prep = Ptx.Compile(Kernel("BitsPrepKernel"));
        Assert.Contains("cvt.rn.f16.f32", prep);   // x's split for the base form
        Assert.DoesNotContain("atom.global", prep);   // maxima found per block: nothing to clear before the launch
        Assert.DoesNotContain("red.global", prep);
        var based = Ptx.Compile(Kernel("BaseKernel"));
        Assert.Contains("mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32", based);
        Assert.Contains("ld.global.v4.b32", based);
        Assert.DoesNotContain("cvt.rn.f16.f32", based);   // x comes split already (SplitXKernel)
        foreach (var name in new[] { "BaseRingKernel", "BaseRing2Kernel", "BaseRing3Kernel", "BaseRing4Kernel" })
        {
            var ring = Ptx.Compile(Kernel(name));
            Assert.Contains("cp.async.cg.shared.global", ring);   // x into the ring, a chunk of every group per stage
            Assert.Contains("ld.shared.v4", ring);                // and out of it, 16 bytes a load
            Assert.Contains("mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32", ring);
            Assert.DoesNotContain(".local", ring);                // the asm operands promoted to registers (PtxPasses.cs)
        }
        // the second form's 4-group kernel: 3 chunks unrolled × 4 steps × 4 groups × 2 products (hi and lo), none branched around
        Assert.Equal(96, Regex.Count(Ptx.Compile(Kernel("BaseRing4Kernel")), @"mma\.sync\.aligned\.m16n8k16"));
    }

    /// <summary>The three launches against the seven they replace, bit for bit: two row groups (the four-group base kernel),
    /// base rows among the tenants' (their split sums by <c>SumSplitsKernel</c> alone), y accumulated into.</summary>
    [Theory]
    [MemberData(nameof(TestDevices.Names), MemberType = typeof(TestDevices))]
    public void Three_launches_give_the_seven_launches_bits(string device)
    {
        var dev = Device.Parse(device);
        int[] slots = [-1, 0, 1, -1, 2, 3, -1, 1, 4, -1, 2, 0];
        using var tenants = new TenantRows(slots, dev);
        Assert.True(tenants.DecodeTenantsAllBits && tenants.BitsCount == 8 && tenants.MmaGroupCount == 2);
        ThreeAgainstSeven(dev, 5, slots, tenants, 96, 768, 5, 0);
    }

    /// <summary>The three launches' bit-serial products with K split 1, 2 and 4 at ragged widths, against the seven launches
    /// bit for bit (the same integer counts), with the signs two and three chunks ahead, and against the twin: in = 9·512 + 256 (10 chunks, the last a half: with split
    /// 4 the warps take 3, 3, 3 and 1 chunks, with split 2 five each) and in = 3·512 (split 4 leaves the fourth warp no
    /// chunk, split 2 gives 2 and 1); 96 outputs, so with split 1 a block's fourth warp has none and with split 2 the second
    /// block's second group. On ILGPU's CPU accelerator, whose emulated binary products take ~50 s a case on CI's cores,
    /// three of the six cases (between them: the half chunk, a warp without chunks, one without outputs, split 2).</summary>
    public static TheoryData<string, int, int> DevicesSplitsAndWidths()
    {
        var data = new TheoryData<string, int, int>();
        foreach (var d in TestDevices.Names.Select(n => n.Data))
            foreach (var split in new[] { 1, 2, 4 })
                foreach (var inDim in new[] { 9 * 512 + 256, 3 * 512 })
                    if (d == "cuda" || (split == 1 && inDim > 2048) || (split != 1 && inDim < 2048)) data.Add(d, split, inDim);
        return data;
    }

    [Theory]
    [MemberData(nameof(DevicesSplitsAndWidths))]
    public void Splits_1_2_and_4_at_ragged_widths_give_the_seven_launches_bits(string device, int split, int inDim)
    {
        var dev = Device.Parse(device);
        int[] slots = [2, -1, 0, 3, 1, 2];
        using var tenants = new TenantRows(slots, dev);
        Assert.True(tenants.DecodeTenantsAllBits && tenants.BitsCount == 5);
        ThreeAgainstSeven(dev, 17 + split + inDim, slots, tenants, 96, inDim, 4, split, deep: true);
    }

    /// <summary>y (+)= the tenant linear of random operands in three launches and in seven (K split <paramref name="split"/>
    /// ways, 0: as the batch's size picks) for the rows <paramref name="tenants"/> of <paramref name="slots"/>, equal bit
    /// for bit and within f32's bound of the twin; with <paramref name="deep"/> also the three launches with the signs
    /// three chunks ahead (<see cref="TenantLinear.BitsSignsAhead"/>), equal bit for bit.</summary>
    static void ThreeAgainstSeven(Device dev, int seed, int[] slots, TenantRows tenants, int outDim, int inDim, int cap, int split, bool deep = false)
    {
        var rng = new Random(seed);
        int rows = slots.Length;
        var x = Check.Values(rng, (long)rows * inDim, 2f);
        var w = Check.Rounded(Check.Values(rng, (long)outDim * inDim), DType.F16);
        var signs = Check.Signs(rng, cap * outDim, inDim);
        var scales = Enumerable.Range(0, cap).Select(_ => Check.Value(rng, 0.05f)).ToArray();
        var y0 = Check.Values(rng, (long)rows * outDim, 3f);
        using var tx = Tensor.From(x, [rows, inDim], dev);
        using var tw = Tensor.From(w, [outDim, inDim], dev, DType.F16);
        using var ts = Tensor.From(signs, [cap, outDim, inDim], dev);
        using var ta = Tensor.From(scales, [cap], dev);

        float[] Run(bool fuse, int ahead = 2) => RunAccumulating(tx, tw, ts, ta, tenants, y0, rows, outDim,
            () => { TenantLinear.FuseBits = fuse; TenantLinear.BitsSplitOverride = split; TenantLinear.BitsSignsAhead = ahead; },
            () => { TenantLinear.FuseBits = true; TenantLinear.BitsSplitOverride = 0; TenantLinear.BitsSignsAhead = 2; });

        var three = Run(true);
        Assert.Equal(Run(false), three);
        if (deep) Assert.Equal(three, Run(true, ahead: 3));   // the signs three chunks ahead, the loop unrolled by 6
        var want = y0.ToArray();
        TenantLinear.Twin(x, w, signs, scales, slots, want, rows, inDim, outDim, true);
        double err = Check.RelativeError(three, want);
        Assert.True(err <= Check.F32Bound, $"{dev}, split {split}, in {inDim}: relative error {err:E2}");
    }

    /// <summary>The base products of two to four row groups through the shared-memory ring (TenantLinearBaseRing.cs)
    /// against the register form, bit for bit (the same products in the same order), and against the twin: base rows only,
    /// 9, 17, 24, 32 and 40 of them (2, 3, 3 and 4 groups; 5 groups run as 4 + 1), K of one chunk, of two (fewer than the
    /// ring's stages) and of 13 chunks, cut into ranges of 5, 5 and 3 or as one block a multiprocessor asks; 80 and
    /// 144 outputs (a block's last tiles without rows).</summary>
    [Theory]
    [MemberData(nameof(TestDevices.Names), MemberType = typeof(TestDevices))]
    public void Base_products_through_the_ring_give_the_register_forms_bits(string device)
    {
        var dev = Device.Parse(device);
        var rng = new Random(11);
        foreach (var (rows, outDim, inDim, perSm) in new (int, int, int, int)[]
                 { (9, 80, 64, 4), (24, 144, 128, 4), (32, 80, 13 * 64, 64), (40, 144, 13 * 64, 64), (17, 144, 13 * 64, 1) })
        {
            int[] slots = Enumerable.Repeat(-1, rows).ToArray();
            using var tenants = new TenantRows(slots, dev);
            Assert.Equal((rows + 7) / 8, tenants.MmaGroupCount);
            var x = Check.Values(rng, (long)rows * inDim, 2f);
            var w = Check.Rounded(Check.Values(rng, (long)outDim * inDim), DType.F16);
            var y0 = Check.Values(rng, (long)rows * outDim, 3f);
            using var tx = Tensor.From(x, [rows, inDim], dev);
            using var tw = Tensor.From(w, [outDim, inDim], dev, DType.F16);
            using var ts = Tensor.From(Check.Signs(rng, outDim, inDim), [1, outDim, inDim], dev);
            using var ta = Tensor.From([0.5f], [1], dev);

            int perSmWas = TenantLinear.BaseBlocksPerSm;
            float[] Run(bool ring, int form) => RunAccumulating(tx, tw, ts, ta, tenants, y0, rows, outDim,
                () => { TenantLinear.BaseRing = ring; TenantLinear.BaseRingForm = form; TenantLinear.BaseBlocksPerSm = perSm; },
                () => { TenantLinear.BaseRing = true; TenantLinear.BaseRingForm = 1; TenantLinear.BaseBlocksPerSm = perSmWas; });

            var ringed = Run(true, 1);
            Assert.Equal(Run(false, 1), ringed);
            Assert.Equal(ringed, Run(true, 2));   // the second form: one kernel a group count, its loop unrolled by 3
            var want = y0.ToArray();
            TenantLinear.Twin(x, w, new uint[outDim * inDim / 32], [0f], slots, want, rows, inDim, outDim, true);
            double err = Check.RelativeError(ringed, want);
            Assert.True(err <= Check.F32Bound, $"{dev}, {rows} rows, {outDim}×{inDim}: relative error {err:E2}");
        }
    }

    /// <summary>y0 plus the batch's linear (accumulated into a copy of y0), the streamed form off and the engine's other
    /// switches as <paramref name="set"/> leaves them; <paramref name="restore"/> puts them back, also on failure.</summary>
    static float[] RunAccumulating(Tensor tx, Tensor tw, Tensor ts, Tensor ta, TenantRows tenants, float[] y0, int rows, int outDim,
                                   Action set, Action restore)
    {
        using var ty = Tensor.From(y0, [rows, outDim], tx.Device);
        TenantLinear.UseStream = false;
        set();
        try { TenantLinear.Run(tx, tw, ts, ta, tenants, ty, accumulate: true); }
        finally
        {
            TenantLinear.UseStream = true;
            restore();
        }
        return ty.ToFloatArray();
    }

    static MethodInfo Kernel(string name) => typeof(TenantLinear).GetMethod(name, BindingFlags.Static | BindingFlags.NonPublic)!;

    /// <summary>Three tenants of one row each over [64, 768] (a half chunk at the end): a row of zeros (its term must be
    /// exactly 0), a row spanning 1e-6 … 1e4, an ordinary one, and a row with a NaN that must not leak into the others.</summary>
    public static TheoryData<string, string> DevicesAndForms()
    {
        var data = new TheoryData<string, string>();
        foreach (var d in TestDevices.Names.Select(n => n.Data))
            foreach (var form in new[] { "three launches", "seven launches", "streamed" }) data.Add(d, form);
        return data;
    }

    /// <summary><paramref name="form"/>: the streamed form (TenantLinearStream.cs), or the bit-serial and base-only forms,
    /// whose integer scheme it shares, in three launches (<see cref="TenantLinear.FuseBits"/>) or seven.</summary>
    [Theory]
    [MemberData(nameof(DevicesAndForms))]
    public void Edge_rows_match_the_twin_and_a_nan_stays_in_its_row(string device, string form)
    {
        bool stream = form == "streamed";
        var dev = Device.Parse(device);
        var rng = new Random(11);
        int outDim = 64, inDim = 768, cap = 4, rows = 4, words = inDim / 32;
        var x = new float[rows * inDim];
        for (int i = 0; i < inDim; i++)
        {
            x[inDim + i] = (float)(Math.Pow(10, rng.NextDouble() * 10 - 6) * (rng.Next(2) * 2 - 1));
            x[2 * inDim + i] = Check.Value(rng, 2f);
            x[3 * inDim + i] = Check.Value(rng, 2f);
        }
        x[3 * inDim + 100] = float.NaN;
        var w = Check.Rounded(Check.Values(rng, (long)outDim * inDim), DType.F16);
        var signs = new uint[cap * outDim * words];
        for (int i = 0; i < signs.Length; i++) signs[i] = (uint)rng.NextInt64(1L << 32);
        var scales = new[] { 0.01f, 0.02f, 0.03f, 0.04f };
        int[] slots = [0, 1, 2, 3];
        using var tenants = new TenantRows(slots, dev);
        using var tx = Tensor.From(x, [rows, inDim], dev);
        using var tw = Tensor.From(w, [outDim, inDim], dev, DType.F16);
        using var ts = Tensor.From(signs, [cap, outDim, inDim], dev);
        using var ta = Tensor.From(scales, [cap], dev);
        using var ty = Check.Poisoned([rows, outDim], DType.F32, dev);
        TenantLinear.UseStream = stream;
        TenantLinear.FuseBits = form == "three launches";
        try { TenantLinear.Run(tx, tw, ts, ta, tenants, ty); }
        finally
        {
            TenantLinear.UseStream = true;
            TenantLinear.FuseBits = true;
        }
        Assert.Equal(4, tenants.BitsCount);
        Assert.Equal(4, tenants.FewCount);
        var got = ty.ToFloatArray();
        var want = new float[rows * outDim];
        TenantLinear.Twin(x, w, signs, scales, slots, want, rows, inDim, outDim, false);

        // Row 0 (zeros): the base term of zeros and a tenant term of exactly 0.
        Assert.All(got[..outDim], v => Assert.Equal(0f, v));
        for (int r = 1; r <= 2; r++)
        {
            double err = Check.RelativeError(got.AsSpan(r * outDim, outDim), want.AsSpan(r * outDim, outDim));
            Assert.True(err <= Check.F32Bound, $"row {r} on {device} ({form}): relative error {err:E2}");
        }
        Assert.All(got[(3 * outDim)..], v => Assert.True(float.IsNaN(v)));
    }
}

/// <summary>
/// The bit-serial and base-only forms inside a whole forward: a random model whose linears they take (hidden 256,
/// intermediate 512), four tenants of one row each and a base row in one decode step through the delta pool; logits
/// within 1e-5 of the same step through the fused tensor-core form, which EngineTests checks against each tenant's
/// own forward. The fixtures' tiny models (64–224 wide) are too narrow for these forms. Flips the forms' switches, so
/// it runs in the collection that the kernel tests (which need them on) run in. CUDA only: on ILGPU's CPU accelerator
/// two forward steps through the emulated tensor-core products take over ten minutes on CI's two cores (the kernels
/// themselves are checked there by the audit case "tenant linear bits").
/// </summary>
[Collection(IlgpuCpuCollection.Name)]
public class TenantLinearBitsForwardTests
{
    [Theory]
    [MemberData(nameof(TestDevices.Names), MemberType = typeof(TestDevices))]
    public void Decode_step_through_the_bit_serial_and_streamed_forms_equals_the_fused_form(string device)
    {
        if (device != "cuda") Assert.Skip("CUDA only: through the emulated tensor-core products a forward step takes minutes");
        var dev = Device.Parse(device);
        var config = new BitDeltaNative.Models.LlamaConfig
        {
            Architecture = BitDeltaNative.Models.Architecture.Llama, HiddenSize = 256, IntermediateSize = 512, NumLayers = 2, NumHeads = 4,
            NumKvHeads = 4, HeadDim = 64, VocabSize = 320, MaxPositionEmbeddings = 64, RmsNormEps = 1e-5, RopeTheta = 10000,
            TieWordEmbeddings = false, DType = DType.F16, BosTokenId = 1, EosTokenIds = [2],
        };
        using var model = new BitDeltaNative.Models.LlamaModel(BitDeltaNative.Models.LlamaWeights.Random(config, DType.F16, dev, seed: 5), dev, 64);
        using var engine = new BitDeltaNative.Serving.Engine(model, 4);
        for (int t = 0; t < 4; t++) engine.AddRandom($"t{t}", (ulong)t + 1);
        int[] ids = [5, 17, 33, 200, 91], tenants = [2, 0, -1, 3, 1], rows = [0, 1, 2, 3, 4];

        float[] Step(bool bits, bool stream, bool fuse = true)
        {
            TenantLinear.FuseBits = fuse;
            TenantLinear.UseBits = bits;
            TenantLinear.UseBase = bits;
            TenantLinear.UseStream = stream;
            try
            {
                using var cache = model.NewCache(5, 4);
                using var logits = Tensor.Empty([5, config.VocabSize], DType.F32, dev);
                model.Forward(ids, rows, new int[5], rows, cache, logits, engine.Pool, tenants);
                return logits.ToFloatArray();
            }
            finally
            {
                TenantLinear.FuseBits = true;
                TenantLinear.UseBits = true;
                TenantLinear.UseBase = true;
                TenantLinear.UseStream = true;
            }
        }

        using (var check = new TenantRows(tenants, dev)) Assert.True(check.DecodeTenantsAllBits && check.BitsCount == 4);
        var fused = Step(false, false);
        var bitSerial = Step(true, false);
        var streamed = Step(true, true);
        var sevenLaunches = Step(true, false, fuse: false);
        double err = Check.RelativeError(bitSerial, fused), errStream = Check.RelativeError(streamed, fused);
        Assert.Equal(sevenLaunches, bitSerial);   // the same operations in the same order as the three launches
        Assert.True(err <= Check.F32Bound, $"{device}: logits relative error {err:E2}");
        Assert.True(errStream <= Check.F32Bound, $"{device}: streamed form's logits relative error {errStream:E2}");
        // Not vacuous: the tenants' rows differ from what the base gives them.
        Assert.True(Check.RelativeError(bitSerial.AsSpan(0, config.VocabSize), bitSerial.AsSpan(2 * config.VocabSize, config.VocabSize)) > 1e-3);
    }
}
