using BitDeltaNative.Kernels;

namespace BitDeltaNative.Tests.Kernels;

/// <summary>Hand-checked cases and edge semantics of the row ops (embedding, softmax, argmax, cross-entropy);
/// their random comparisons with the twins are in <see cref="KernelTests"/>.</summary>
public class RowOpTests
{
    public static TheoryData<string> Devices => new() { "cpu", "ilgpu-cpu" };

    static Device On(string name) => Device.Parse(name);

    [Theory]
    [MemberData(nameof(Devices))]
    public void Softmax_by_hand(string device)
    {
        // softmax([0, ln 3]) = [1/4, 3/4]; adding a constant to a row changes nothing.
        var dev = On(device);
        using var x = Tensor.From(new[] { 0f, MathF.Log(3), 1000f, 1000f + MathF.Log(3) }, [2, 2], dev);
        using var y = Tensor.Empty([2, 2], DType.F32, dev);
        Softmax.Run(x, y);
        var got = y.ToFloatArray();
        Assert.Equal(0.25, got[0], 1e-6);
        Assert.Equal(0.75, got[1], 1e-6);
        Assert.Equal(0.25, got[2], 1e-3);
        Assert.Equal(0.75, got[3], 1e-3);
    }

    [Theory]
    [MemberData(nameof(Devices))]
    public void Argmax_ties_go_to_the_lowest_index_and_nan_wins(string device)
    {
        var dev = On(device);
        using var x = Tensor.From(new[] { 1f, 3f, 2f, 3f, -1f, float.NaN, 5f, float.NaN }, [2, 4], dev);
        using var i = Tensor.Empty([2], DType.I32, dev);
        Argmax.Run(x, i);
        Assert.Equal([1, 1], i.ToArray<int>());
    }

    [Theory]
    [MemberData(nameof(Devices))]
    public void Cross_entropy_by_hand_and_ignore_index(string device)
    {
        // logits [0, ln 3]: logsumexp = ln 4, so nll(0) = ln 4 and nll(1) = ln 4 − ln 3; −100 is ignored.
        var dev = On(device);
        float l3 = MathF.Log(3);
        using var x = Tensor.From(new[] { 0f, l3, 0f, l3, 0f, l3 }, [3, 2], dev);
        using var t = Tensor.From(new[] { 0, 1, CrossEntropy.IgnoreIndex }, [3], dev);
        using var nll = Check.Poisoned([3], DType.F32, dev);
        CrossEntropy.Run(x, t, nll);
        var got = nll.ToFloatArray();
        Assert.Equal(Math.Log(4), got[0], 1e-6);
        Assert.Equal(Math.Log(4.0 / 3), got[1], 1e-6);
        Assert.Equal(0f, got[2]);
    }

    [Theory]
    [MemberData(nameof(Devices))]
    public void Cross_entropy_of_a_confident_right_answer_keeps_its_relative_accuracy(string device)
    {
        // nll = log(1 + e^-20 + e^-23) ≈ 2.16e-9: in f32, 1 + 2e-9 is 1, so a plain log Σ gives 0.
        var dev = On(device);
        using var x = Tensor.From(new[] { 20f, 0f, -3f }, [1, 3], dev);
        using var t = Tensor.From(new[] { 0 }, [1], dev);
        using var nll = Check.Poisoned([1], DType.F32, dev);
        CrossEntropy.Run(x, t, nll);
        double y = Math.Exp(-20) + Math.Exp(-23), want = y - y * y / 2;
        Assert.True(Math.Abs(nll.ToFloatArray()[0] - want) / want < 1e-6, $"{nll.ToFloatArray()[0]} vs {want}");
    }

    [Fact]
    public void Out_of_range_ids_and_targets_throw_on_the_host_and_are_nan_on_a_device()
    {
        using var table = Tensor.From(new[] { 1f, 2f, 3f, 4f }, [2, 2]);
        Assert.Throws<ArgumentException>(() => Embedding.Run(Tensor.From(new[] { 0, 2 }, [2]), table, Tensor.Empty([2, 2], DType.F32, Device.Cpu)));
        Assert.Throws<ArgumentException>(() => CrossEntropy.Run(table, Tensor.From(new[] { 0, -1 }, [2]), Tensor.Empty([2], DType.F32, Device.Cpu)));

        var dev = Device.IlgpuCpu();
        using var dt = Tensor.From(new[] { 1f, 2f, 3f, 4f }, [2, 2], dev, DType.BF16);
        using var ids = Tensor.From(new[] { 1, 2, -5, 0 }, [4], dev);
        using var y = Check.Poisoned([4, 2], DType.F32, dev);
        Embedding.Run(ids, dt, y);
        var got = y.ToFloatArray();
        Assert.Equal([3f, 4f], got[..2]);
        Assert.All(got[2..6], v => Assert.True(float.IsNaN(v)));
        Assert.Equal([1f, 2f], got[6..]);

        using var logits = Tensor.From(new[] { 1f, 2f, 3f, 4f }, [2, 2], dev);
        using var targets = Tensor.From(new[] { 7, 1 }, [2], dev);
        using var nll = Check.Poisoned([2], DType.F32, dev);
        CrossEntropy.Run(logits, targets, nll);
        var n = nll.ToFloatArray();
        Assert.True(float.IsNaN(n[0]));
        Assert.Equal(Math.Log(Math.Exp(3) + Math.Exp(4)) - 4, n[1], 1e-6);
    }

    [Fact]
    public void Embedding_widens_f16_rows_exactly_on_the_host()
    {
        var values = Check.Rounded(Check.Values(new Random(2), 12), DType.F16);
        using var table = Tensor.From(values, [4, 3], Device.Cpu, DType.F16);
        using var y = Tensor.Empty([2, 3], DType.F32, Device.Cpu);
        Embedding.Run(Tensor.From(new[] { 3, 0 }, [2]), table, y);
        Assert.Equal(values[9..12].Concat(values[0..3]).ToArray(), y.ToFloatArray());
    }
}
