using System.Reflection;
using BitDeltaNative.Kernels;
using Check = BitDeltaNative.Kernels.Check;

namespace BitDeltaNative.Tests.Kernels;

/// <summary>
/// The tensor-core GEMM (MatMulMma.cs) beyond its audit case "gemm mma": the PTX it must hold, and its signs form, the
/// BitDelta term of many rows (BitLinear.Run, TenantLinear's prefill segments), on fixed shapes that certainly take it:
/// rows past one 64-row tile, in a multiple of 8 but not of 32 (the last sign word's padding bits set, so reading them
/// would show), outputs past one 128-wide tile.
/// </summary>
[Collection(IlgpuCpuCollection.Name)]
public class MatMulMmaTests
{
    [Fact]
    public void Ptx_has_f16_tensor_core_products_and_16_byte_loads()
    {
        var ptx = Ptx.Compile(typeof(MatMul).GetMethod("GemmMmaKernel", BindingFlags.Static | BindingFlags.NonPublic)!);
        Assert.Contains("mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32", ptx);
        Assert.True(ptx.Split("mma.sync").Length - 1 >= 32, "fewer than 2 tiles × 8 outputs × hi and lo products in the loop");
        Assert.Contains("ld.global.v4.b32", ptx);
    }

    /// <summary>1–32 rows of an f16 W take the tenant linear's base forms (W read once) on CUDA, not the GEMV chunk by
    /// chunk: the forms themselves on every ILGPU device, and MatMul.Run, against the twin, plain and accumulating, at 1,
    /// 2 and 3 rows (the streamed form), 4, 8, 9, 17 and 32 (the base form's three launches).</summary>
    [Theory]
    [MemberData(nameof(TestDevices.Names), MemberType = typeof(TestDevices))]
    public void One_to_32_rows_read_w_once_through_the_base_forms(string device)
    {
        var dev = Device.Parse(device);
        var rng = new Random(23);
        int inDim = 128, outDim = 48;
        var w = Check.Rounded(Check.Values(rng, outDim * inDim, 0.5f), DType.F16);
        using var tw = Tensor.From(w, [outDim, inDim], dev, DType.F16);
        foreach (int rows in new[] { 1, 2, 3, 4, 8, 9, 17, 32 })
            foreach (bool accumulate in new[] { false, true })
            {
                var x = Check.Values(rng, rows * inDim, 2f);
                var want = Check.Values(rng, rows * outDim, 3f);
                using var tx = Tensor.From(x, [rows, inDim], dev);
                using var ty = accumulate ? Tensor.From(want, [rows, outDim], dev) : Check.Poisoned([rows, outDim], DType.F32, dev);
                if (dev.IsIlgpu)
                {
                    using var scratch = Check.Poisoned([rows, outDim], DType.F32, dev);
                    Assert.True(TenantLinear.TryBase(tx, tw, scratch, false), $"{rows} rows did not take the base form");
                    var plain = new float[rows * outDim];
                    MatMul.Twin(x, w, plain, rows, inDim, outDim);
                    Assert.InRange(Check.RelativeError(scratch.ToFloatArray(), plain), 0, Check.F32Bound);
                }
                MatMul.Run(tx, tw, ty, accumulate);
                MatMul.Twin(x, w, want, rows, inDim, outDim, accumulate);
                Assert.InRange(Check.RelativeError(ty.ToFloatArray(), want), 0, Check.F32Bound);
            }
    }

    [Theory]
    [MemberData(nameof(TestDevices.Names), MemberType = typeof(TestDevices))]
    public void Signs_form_adds_the_bitdelta_term_of_many_rows(string device)
    {
        var dev = Device.Parse(device);
        var rng = new Random(21);
        int rows = 70, inDim = 72, outDim = 130;
        var x = Check.Values(rng, rows * inDim, 2f);
        var signs = Check.Signs(rng, outDim, inDim);
        var want = Check.Values(rng, rows * outDim, 3f);
        using var tx = Tensor.From(x, [rows, inDim], dev);
        using var ts = Tensor.From(signs, [outDim, inDim], dev);
        using var ty = Tensor.From(want, [rows, outDim], dev);
        Assert.True(MatMul.TakesMmaSigns(tx, rows, inDim));
        BitLinear.Run(tx, ts, 0.037f, ty);
        BitLinear.Twin(x, signs, 0.037f, want, rows, inDim, outDim);
        Assert.InRange(Check.RelativeError(ty.ToFloatArray(), want), 0, Check.F32Bound);
    }

    [Theory]
    [MemberData(nameof(TestDevices.Names), MemberType = typeof(TestDevices))]
    public void Prefill_segments_of_tenants_and_the_base_take_the_tensor_cores(string device)
    {
        var dev = Device.Parse(device);
        var rng = new Random(22);
        int inDim = 40, outDim = 136, capacity = 3;
        // a segment of slot 2, one of the base, one of slot 0: each past the GEMM's 64 rows
        int[] slots = [.. Enumerable.Repeat(2, 65), .. Enumerable.Repeat(-1, 64), .. Enumerable.Repeat(0, 70)];
        int rows = slots.Length;
        var x = Check.Values(rng, rows * inDim, 2f);
        var w = Check.Rounded(Check.Values(rng, outDim * inDim), DType.F16);
        var signs = Check.Signs(rng, capacity * outDim, inDim);
        float[] scales = [0.02f, -0.03f, 0.045f];
        using var tx = Tensor.From(x, [rows, inDim], dev);
        using var tw = Tensor.From(w, [outDim, inDim], dev, DType.F16);
        using var ts = Tensor.From(signs, [capacity, outDim, inDim], dev);
        using var ta = Tensor.From(scales, [capacity], dev);
        using var tenants = new TenantRows(slots, dev);
        using var ty = Check.Poisoned([rows, outDim], DType.F32, dev);
        Assert.True(MatMul.TakesMmaGemm(tx, tw, inDim));
        TenantLinear.Run(tx, tw, ts, ta, tenants, ty);
        var want = new float[rows * outDim];
        TenantLinear.Twin(x, w, signs, scales, slots, want, rows, inDim, outDim, accumulate: false);
        Assert.InRange(Check.RelativeError(ty.ToFloatArray(), want), 0, Check.F32Bound);
    }
}
