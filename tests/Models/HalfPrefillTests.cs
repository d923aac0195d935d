using BitDeltaNative.Models;
using BitDeltaNative.Kernels;
using Check = BitDeltaNative.Kernels.Check;

namespace BitDeltaNative.Tests.Models;

/// <summary>
/// <see cref="LlamaModel.HalfPrefill"/>: a forward of at least 64 tokens runs its decoder linears on x rounded to the
/// weights' half type (GemmHalf). On the f16 and bf16 fixtures its logits must differ from the f32-activation forward
/// (the path was taken) by about the half type's rounding, no more; a shorter forward keeps f32's accuracy.
/// </summary>
[Collection(IlgpuCpuCollection.Name)]
public class HalfPrefillTests
{
    public static TheoryData<string, string> Cases
    {
        get
        {
            var d = new TheoryData<string, string>();
            foreach (var dev in TestDevices.Names.Select(n => n.Data))
            {
                d.Add("llama-f16", dev);
                d.Add("mistral-bf16", dev);
            }
            return d;
        }
    }

    static float[] Logits(LlamaModel m, int[] ids)
    {
        int n = ids.Length, vocab = m.Config.VocabSize;
        using var cache = m.NewCache(1, n);
        using var logits = Tensor.Empty([n, vocab], DType.F32, m.Device);
        m.Forward(ids, new int[n], Enumerable.Range(0, n).ToArray(), Enumerable.Range(0, n).ToArray(), cache, logits);
        return logits.ToFloatArray();
    }

    [Theory]
    [MemberData(nameof(Cases))]
    public void Long_forwards_round_x_to_the_weights_half_type_and_short_ones_do_not(string model, string device)
    {
        // the f32 reference on the managed CPU device (host matmuls: fast, where ILGPU's CPU accelerator emulates every
        // tensor-core product with barriers)
        using var reference = LlamaModel.Load(Fixtures.Model(model), Device.Cpu);
        using var m = LlamaModel.Load(Fixtures.Model(model), Device.Parse(device));
        m.HalfPrefill = true;
        var rng = new Random(5);
        int[] Ids(int n) => Enumerable.Range(0, n).Select(_ => rng.Next(3, m.Config.VocabSize)).ToArray();
        var longIds = Ids(LlamaModel.HalfPrefillMinRows + 6);
        var shortIds = Ids(16);
        double err = Check.RelativeError(Logits(m, longIds), Logits(reference, longIds));
        // bf16 keeps 8 bits (2^-9 relative rounding), f16 11 bits; the error over two layers stays near that size
        double bound = model.Contains("bf16") ? 2e-2 : 3e-3;
        Assert.True(err > 1e-5 && err < bound, $"{model} on {device}: half-prefill logits differ from f32 by {err:E2} (want (1e-5, {bound:E0}))");
        // a short forward keeps f32 x: it agrees with the host's f32 forward to f32's rounding, not the half type's
        double errShort = Check.RelativeError(Logits(m, shortIds), Logits(reference, shortIds));
        Assert.True(errShort < 1e-5, $"{model} on {device}: a 16-token forward differs from f32 by {errShort:E2}");
    }
}
