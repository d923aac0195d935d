using BitDeltaNative.Models;
using BitDeltaNative.Tests.Cli;
using BitDeltaNative.Tests.Tensors;
using Check = BitDeltaNative.Kernels.Check;

namespace BitDeltaNative.Tests.Models;

[Collection(IlgpuCpuCollection.Name)]   // its CLI test redirects the process-wide console
public class CompressTests
{
    /// <summary>A "fine-tune" of the tiny Llama fixture: every linear and layer 0's input norm moved a little.</summary>
    internal static string MakeFineTune(TempDir dir)
    {
        string baseDir = Fixtures.Model("llama-f16");
        string ft = Path.Combine(dir.Path, "ft");
        Directory.CreateDirectory(ft);
        File.Copy(Path.Combine(baseDir, "config.json"), Path.Combine(ft, "config.json"));
        var rng = new Random(4);
        using var ck = Checkpoint.Open(baseDir);
        var tensors = new List<(string, Tensor)>();
        foreach (var name in ck.Names.Order(StringComparer.Ordinal))
        {
            var t = ck.Get(name);
            bool move = name.EndsWith("_proj.weight", StringComparison.Ordinal) || name == "model.layers.0.input_layernorm.weight";
            tensors.Add((name, move ? Tensor.From(t.ToFloatArray().Select(v => v + Check.Value(rng, 0.01f)).ToArray(), t.Shape, Device.Cpu, t.DType) : t));
        }
        SafetensorsWriter.Write(Path.Combine(ft, "model.safetensors"), tensors);
        return ft;
    }

    [Fact]
    public void Compress_binarizes_every_linear_and_keeps_only_changed_tensors()
    {
        using var dir = new TempDir();
        string baseDir = Fixtures.Model("llama-f16"), ft = MakeFineTune(dir);
        string path = Path.Combine(dir.Path, "out", "delta.safetensors");
        var report = Compressor.Compress(baseDir, ft, path);
        Assert.Equal(14, report.Compressed);
        Assert.Equal(1, report.Replaced);
        Assert.True(report.Ratio > 3, $"ratio {report.Ratio}");

        using var d = DeltaFile.Open(path);
        Assert.Equal(["model.layers.0.input_layernorm.weight"], d.Replaced);
        using var baseCk = Checkpoint.Open(baseDir);
        using var ftCk = Checkpoint.Open(ft);
        d.CheckBase(baseDir, LlamaConfig.Load(baseDir), WeightsFingerprint.Of(baseCk));
        const string q = "model.layers.1.self_attn.q_proj.weight";
        var (signs, scale) = d.BitDeltaLinear(q);
        var (want, wantScale) = BitDelta.Binarize(ftCk.Get(q), baseCk.Get(q), q);
        Assert.Equal(want.ToArray<uint>(), signs.ToArray<uint>());
        Assert.Equal(wantScale, scale);
    }

    [Fact]
    public void Cli_compress_reports_the_ratio_and_overwrites_nothing()
    {
        using var dir = new TempDir();
        string baseDir = Fixtures.Model("llama-f16"), ft = MakeFineTune(dir), outDir = Path.Combine(dir.Path, "out");
        var first = CliRunner.Run("compress", "--base", baseDir, "--finetuned", ft, "--out", outDir);
        Assert.Equal(0, first.Code);
        Assert.Contains("x smaller", first.Out);
        var before = File.ReadAllBytes(Path.Combine(outDir, "delta.safetensors"));
        var inspect = CliRunner.Run("inspect", Path.Combine(outDir, "delta.safetensors"));
        Assert.Equal(0, inspect.Code);
        Assert.Contains("bitdelta delta", inspect.Out);
        Assert.Contains("model.layers.1.mlp.down_proj.weight", inspect.Out);
        Assert.Contains("14 matrices binarized", inspect.Out);
        Assert.Contains("16.0x", inspect.Out);   // 64 and 160 inputs: whole words, 1 bit against 16
        var again = CliRunner.Run("compress", "--base", baseDir, "--finetuned", ft, "--out", outDir);
        Assert.Equal(1, again.Code);
        Assert.Contains("exists already", again.Err);
        Assert.Equal(before, File.ReadAllBytes(Path.Combine(outDir, "delta.safetensors")));
        var mismatch = CliRunner.Run("compress", "--base", baseDir, "--finetuned", Fixtures.Model("mistral-bf16"), "--out", Path.Combine(dir.Path, "o2"));
        Assert.Equal(1, mismatch.Code);
        Assert.Contains("is not a fine-tune of", mismatch.Err);
        var intoInput = CliRunner.Run("compress", "--base", baseDir, "--finetuned", ft, "--out", ft);
        Assert.Equal(1, intoInput.Code);
        Assert.Contains("is an input folder", intoInput.Err);
    }
}
