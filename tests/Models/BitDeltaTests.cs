using BitDeltaNative.Models;
using BitDeltaNative.Tests.Tensors;
using FsCheck;
using FsCheck.Fluent;
using FsCheck.Xunit;
using BitLinear = BitDeltaNative.Kernels.BitLinear;
using Check = BitDeltaNative.Kernels.Check;

namespace BitDeltaNative.Tests.Models;

public class BitDeltaTests
{
    [Property(MaxTest = 60)]
    public void Binarize_packs_the_sign_of_the_delta_and_scales_by_its_mean_magnitude(int seed)
    {
        var rng = new Random(seed);
        int rows = Check.Size(rng, 40), cols = Check.Size(rng, 150);
        var b = Check.Values(rng, rows * cols);
        var ft = b.Select((v, i) => i % 17 == 3 ? v : v + Check.Value(rng, 0.01f)).ToArray();   // some exact zeros
        int words = DTypes.SignWordsPerRow(cols);
        var signs = new uint[rows * words];
        float scale = BitDelta.Binarize(ft, b, rows, cols, signs);

        double sum = 0;
        for (int i = 0; i < ft.Length; i++) sum += Math.Abs((double)(ft[i] - b[i]));
        Assert.Equal((float)(sum / ft.Length), scale);
        for (int r = 0; r < rows; r++)
        {
            for (int c = 0; c < cols; c++)
                Assert.Equal(ft[r * cols + c] - b[r * cols + c] >= 0 ? 1f : -1f, BitLinear.Sign(signs, words, r, c));
            if (cols % 32 != 0) Assert.Equal(0u, signs[r * words + words - 1] >> (cols % 32));   // padding bits stay 0
        }
        var w = new float[ft.Length];
        BitLinear.MaterializeTwin(b, signs, scale, w, rows, cols);
        for (int i = 0; i < w.Length; i++) Assert.Equal(b[i] + scale * (ft[i] - b[i] >= 0 ? 1f : -1f), w[i]);
    }

    [Fact]
    public void An_exact_zero_delta_counts_as_plus_one_and_bits_run_lsb_first()
    {
        var signs = new uint[2];
        float scale = BitDelta.Binarize([1f, 2f, 3f, 0f, 5f], [1f, 1f, 4f, 0f, 5f], 1, 5, signs.AsSpan(0, 1));
        Assert.Equal(0b11011u, signs[0]);   // +0, +1, −1, +0, +0 → bits 1,1,0,1,1 from the least significant
        Assert.Equal(2f / 5, scale);
        var e = Assert.Throws<BitDeltaException>(() => BitDelta.Binarize([float.NaN], [0f], 1, 1, new uint[1], "model.layers.0.mlp.up_proj.weight"));
        Assert.Contains("model.layers.0.mlp.up_proj.weight", e.Message);
    }

    static (string Name, Tensor Signs, float Scale) Compressed(string name, int rows, int cols, Random rng)
    {
        var b = Check.Values(rng, rows * cols);
        var f = b.Select(v => v + Check.Value(rng, 0.02f)).ToArray();
        var (s, a) = BitDelta.Binarize(Tensor.From(f, [rows, cols]), Tensor.From(b, [rows, cols]), name);
        return (name, s, a);
    }

    [Fact]
    public void Delta_file_round_trips_and_knows_its_base()
    {
        using var dir = new TempDir();
        string model = Fixtures.Model("llama-f16");
        var config = LlamaConfig.Load(model);
        string fp;
        using (var ck = Checkpoint.Open(model)) fp = WeightsFingerprint.Of(ck);
        var rng = new Random(3);
        var lin = new[] { Compressed("model.layers.0.self_attn.q_proj.weight", 64, 64, rng), Compressed("model.layers.1.mlp.down_proj.weight", 64, 160, rng) };
        using var norm = Tensor.From(Check.Values(rng, 64), [64]);
        string path = dir.File("tenant.delta.safetensors");
        DeltaFile.Write(path, BitDelta.Codec, config, fp, lin, [("model.norm.weight", norm)]);

        using var d = DeltaFile.Open(path);
        Assert.Equal(BitDelta.Codec, d.Codec);
        Assert.Equal(["model.norm.weight"], d.Replaced);
        foreach (var (name, signs, scale) in lin)
        {
            var (s, a) = d.BitDeltaLinear(name);
            Assert.Equal(signs.Shape.ToArray(), s.Shape.ToArray());
            Assert.Equal(signs.ToArray<uint>(), s.ToArray<uint>());
            Assert.Equal(scale, a);
        }
        Assert.Equal(norm.ToFloatArray(), d.ReplacedTensor("model.norm.weight").ToFloatArray());
        d.CheckBase(model, config, fp);

        var other = LlamaConfig.Load(Fixtures.Model("mistral-bf16"));
        var e1 = Assert.Throws<BitDeltaException>(() => d.CheckBase("other", other, fp));
        Assert.Contains("another architecture", e1.Message);
        string otherFp;
        using (var ck = Checkpoint.Open(Fixtures.Model("mistral-bf16"))) otherFp = WeightsFingerprint.Of(ck);
        Assert.NotEqual(fp, otherFp);
        var e2 = Assert.Throws<BitDeltaException>(() => d.CheckBase("other", config, otherFp));
        Assert.Contains("other base weights", e2.Message);
    }

    [Fact]
    public void Fingerprint_is_stable_and_sees_a_changed_tensor()
    {
        using var dir = new TempDir();
        var rng = new Random(9);
        var big = Check.Values(rng, 100_000);
        using var t = Tensor.From(big, [100_000]);
        SafetensorsWriter.Write(dir.File("a.safetensors"), [("w", t)]);
        for (int i = 0; i < big.Length; i++) big[i] += 1e-3f;
        using var t2 = Tensor.From(big, [100_000]);
        SafetensorsWriter.Write(dir.File("b.safetensors"), [("w", t2)]);
        string Fp(string f) { using var ck = Checkpoint.Open(dir.File(f)); return WeightsFingerprint.Of(ck); }
        Assert.Equal(Fp("a.safetensors"), Fp("a.safetensors"));
        Assert.NotEqual(Fp("a.safetensors"), Fp("b.safetensors"));
    }

    [Theory]
    [InlineData("format", "metadata format is 'x'")]
    [InlineData("codec", "codec 'lowrank-zz' is unknown")]
    [InlineData("scale", "has no model.layers.0.self_attn.q_proj.scale tensor")]   // names the one that is missing
    [InlineData("plain", "metadata 'format' is missing")]
    public void Bad_delta_files_are_one_line_errors_naming_the_file(string what, string expected)
    {
        using var dir = new TempDir();
        string path = dir.File("bad.safetensors");
        using var signs = Tensor.From(new uint[] { 1, 2 }, [2, 20]);
        using var scale = Tensor.From(new[] { 0.5f }, [1]);
        var meta = new Dictionary<string, string>
        {
            ["format"] = what == "format" ? "x" : DeltaFile.FormatName, ["format_version"] = "1",
            ["codec"] = what == "codec" ? "lowrank-zz" : BitDelta.Codec, ["base_config_hash"] = "h", ["base_weights_fingerprint"] = "f",
            ["compressed"] = "{\"model.layers.0.self_attn.q_proj.weight\": [2, 20]}",
        };
        var tensors = new List<(string, Tensor)> { ("model.layers.0.self_attn.q_proj.signs", signs) };
        if (what != "scale") tensors.Add(("model.layers.0.self_attn.q_proj.scale", scale));
        SafetensorsWriter.Write(path, tensors, what == "plain" ? null : meta);
        var e = Assert.Throws<BitDeltaException>(() => DeltaFile.Open(path).Dispose());
        Assert.StartsWith(path + ": ", e.Message);
        Assert.Contains(expected, e.Message);
        Assert.DoesNotContain('\n', e.Message);
    }
}
