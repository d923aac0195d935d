using BitDeltaNative.Kernels;
using BitDeltaNative.Models;

namespace BitDeltaNative.Tests.Models;

/// <summary>
/// A multi-tenant batch runs a layer's q/k/v as one launch and gate/up as one (<see cref="LlamaModel.TenantPartsInOne"/>:
/// TenantLinear.RunParts over <see cref="LayerWeights.QkvStore"/> and the pool's <see cref="DeltaPool.QkvSigns"/>). The
/// fixtures' hidden size (64) is under the streamed form's 256 inputs for tenant rows, so a model of random weights at
/// 256 with grouped k/v heads (q 256 rows, k and v 128) and random tenants: logits against the same step with each
/// linear its own launch, and the launches that saves (3 a layer); and a prompt chunk beside decode rows (serve's step).
/// </summary>
[Collection(IlgpuCpuCollection.Name)]
public class TenantPartsTests
{
    [Theory]
    [MemberData(nameof(TestDevices.Names), MemberType = typeof(TestDevices))]
    public void A_batch_of_tenants_takes_qkv_and_gate_up_in_one_launch_each_with_the_same_logits(string device)
    {
        var dev = Device.Parse(device);
        var config = new LlamaConfig
        {
            Architecture = Architecture.Llama, HiddenSize = 256, IntermediateSize = 288, NumLayers = 1, NumHeads = 4,
            NumKvHeads = 2, HeadDim = 64, VocabSize = 96, MaxPositionEmbeddings = 80, RmsNormEps = 1e-5, RopeTheta = 10000,
            TieWordEmbeddings = false, DType = DType.F16, BosTokenId = 1, EosTokenIds = [2],
        };
        using var model = new LlamaModel(LlamaWeights.Random(config, DType.F16, dev, seed: 3), dev, 80);
        var layer = model.Weights.Layers[0];
        Assert.Equal([512, 256], layer.QkvStore!.Shape);   // q, k, v are its rows
        using var pool = new DeltaPool(model.Weights, 4, dev);
        for (int t = 0; t < 3; t++) pool.LoadRandom($"t{t}", (ulong)t + 1, 0.02f);
        Assert.Equal(4 * 512L * 256 / 8, pool.QkvSigns[0].ByteLength);
        int[] ids = [5, 17, 33, 60], tenants = [2, -1, 0, 1], rows = [0, 1, 2, 3];

        (float[] Logits, long Launches) Step(bool inOne)
        {
            LlamaModel.TenantPartsInOne = inOne;
            try
            {
                using var cache = model.NewCache(4, 4);
                using var logits = Tensor.Empty([4, config.VocabSize], DType.F32, dev);
                long before = dev.Launches;
                model.Forward(ids, rows, new int[4], rows, cache, logits, pool, tenants);
                return (logits.ToFloatArray(), dev.Launches - before);
            }
            finally
            {
                LlamaModel.TenantPartsInOne = true;
            }
        }
        Step(false);   // kernels loaded on first use (both ways run the same ones) count in neither run below
        var apart = Step(false);
        var inOne = Step(true);
        double err = Check.RelativeError(inOne.Logits, apart.Logits);
        Assert.True(err < 1e-5, $"{device}: logits with q/k/v and gate/up in one launch off by {err:G3}");
        Assert.Equal(3L * config.NumLayers, apart.Launches - inOne.Launches);
        Assert.All(inOne.Logits, v => Assert.True(float.IsFinite(v)));

        // serve's steps: a 64-token prompt chunk of one tenant beside three decode rows; the parts' forms run decode rows
        // only, so such a batch keeps each linear's launch, and its prompt rows get their logits all the same
        int n = TenantLinear.PrefillMinRows;
        int[] mixIds = [.. Enumerable.Range(0, n).Select(i => (7 * i + 3) % config.VocabSize), 11, 22, 44];
        int[] mixSlots = [.. Enumerable.Repeat(0, n), 1, 2, 3], mixPos = [.. Enumerable.Range(0, n), 0, 0, 0];
        int[] mixTenants = [.. Enumerable.Repeat(1, n), 2, -1, 0], mixRows = [n - 1, n, n + 1, n + 2];
        float[] Mixed(bool inOne)
        {
            LlamaModel.TenantPartsInOne = inOne;
            try
            {
                using var cache = model.NewCache(4, 80);
                using var logits = Tensor.Empty([4, config.VocabSize], DType.F32, dev);
                model.Forward(mixIds, mixSlots, mixPos, mixRows, cache, logits, pool, mixTenants);
                return logits.ToFloatArray();
            }
            finally
            {
                LlamaModel.TenantPartsInOne = true;
            }
        }
        var mixedApart = Mixed(false);
        var mixedInOne = Mixed(true);
        Assert.True(Check.RelativeError(mixedInOne, mixedApart) < 1e-5, $"{device}: a prompt chunk beside decode rows changed its logits");
        Assert.All(mixedInOne, v => Assert.True(float.IsFinite(v)));
    }
}
