using BitDeltaNative.Autograd;
using BitDeltaNative.Models;
using BitDeltaNative.Tests.Tensors;

namespace BitDeltaNative.Tests.Autograd;

/// <summary>The tape's values: gradients of a value used twice add up, and a value lives exactly as long as the
/// forward or a backward rule needs it, so a whole distillation step leaves nothing behind on the device.</summary>
[Collection(IlgpuCpuCollection.Name)]
public class VarTests
{
    [Fact]
    public void Gradients_from_two_uses_add_up_and_release_frees_the_value_but_not_its_gradient()
    {
        var v = new Var(Tensor.From(new[] { 1f, 2f, 3f }, [3]), needsGrad: true);
        v.AddGrad(g => g.CopyFrom(Tensor.From(new[] { 0.5f, -1f, 2f }, [3])));
        v.AddGrad(g => g.CopyFrom(Tensor.From(new[] { 0.25f, 4f, -2f }, [3])));
        Assert.Equal([0.75f, 3f, 0f], v.Grad!.ToFloatArray());
        v.Retain();
        v.Release();
        Assert.NotNull(v.Grad);
        var value = v.Value;
        v.Release();
        Assert.Throws<ObjectDisposedException>(() => value.ToFloatArray());
        // The gradient outlives the value until the rule of the op that made it has passed it on.
        Assert.Equal([0.75f, 3f, 0f], v.Grad!.ToFloatArray());
        v.DropGrad();
        Assert.Null(v.Grad);
        Assert.Throws<InvalidOperationException>(() => v.Release());
        var frozen = new Var(Tensor.From(new[] { 1f }, [1]), needsGrad: false);
        Assert.Throws<InvalidOperationException>(() => frozen.GradBuffer());
    }

    [Theory]
    [MemberData(nameof(TestDevices.Names), MemberType = typeof(TestDevices))]
    public void A_distillation_step_frees_every_activation_and_gradient_it_made(string device)
    {
        var dev = Device.Parse(device);
        using var dir = new TempDir();
        string delta = dir.File("delta.safetensors");
        Compressor.Compress(Fixtures.Model("mistral-bf16"), Fixtures.Dir("bitdelta", "mistral-bf16"), delta);
        using var m = LlamaModel.Load(Fixtures.Model("mistral-bf16"), dev, 16);
        using var d = DeltaWeights.Load(delta, Fixtures.Model("mistral-bf16"), m.Config, dev);
        using var distiller = new ScaleDistiller(m, d, 16);
        var rng = new Random(3);
        var ids = Enumerable.Range(0, 2 * 13).Select(_ => rng.Next(m.Config.VocabSize)).ToArray();
        using var teacher = Tensor.From(ids.SelectMany(_ => Enumerable.Range(0, m.Config.VocabSize).Select(_ => (float)rng.NextDouble())).ToArray(),
                                        [ids.Length, m.Config.VocabSize], dev);
        distiller.Step(ids, 2, teacher, 1e-4);
        long inUse = dev.Pool!.BytesInUse;
        dev.Pool.ResetPeak();
        distiller.Step(ids, 2, teacher, 1e-4);
        Assert.Equal(inUse, dev.Pool.BytesInUse);
        Assert.True(dev.Pool.PeakBytesInUse > inUse, "the step allocated its activations from the pool");
        Assert.All(distiller.Grads, g => Assert.True(g != 0 && float.IsFinite(g)));
    }
}
