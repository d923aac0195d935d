using System.Text.Json.Nodes;
using BitDeltaNative.Models;
using BitDeltaNative.Tests.Tensors;

namespace BitDeltaNative.Tests.Cli;

/// <summary><c>bitdelta compress --calib</c> on the shipped demo pair (demo/), a few steps on the managed CPU.</summary>
[Collection(IlgpuCpuCollection.Name)]   // redirects the process-wide console
public class DistillCliTests
{
    [Fact]
    public void Compress_with_calib_distils_the_scales_and_writes_the_loss_curve_beside_the_delta()
    {
        using var dir = new TempDir();
        string outDir = dir.File("out"), plainDir = dir.File("plain");
        File.WriteAllText(dir.File("calib.txt"), File.ReadAllText(Fixtures.Demo("data", "calib.mixed.txt"))[..6000]);
        var plain = CliRunner.Run("compress", "--base", Fixtures.Demo("base"), "--finetuned", Fixtures.Demo("finetuned"), "--out", plainDir);
        Assert.True(plain.Code == 0, plain.Err);
        var r = CliRunner.Run("compress", "--base", Fixtures.Demo("base"), "--finetuned", Fixtures.Demo("finetuned"), "--out", outDir,
                              "--calib", dir.File("calib.txt"), "--steps", "6", "--batch", "2", "--seq-len", "48", "--lr", "1e-3", "--device", "cpu");
        Assert.True(r.Code == 0, r.Err);
        Assert.Contains("scales distilled", r.Out);
        Assert.Contains("step 6/6: loss", r.Out);

        // Only the delta, the CSV and the PNG: no scratch files left behind.
        Assert.Equal(["delta.safetensors", "distill-loss.csv", "distill-loss.png"], Directory.GetFiles(outDir).Select(Path.GetFileName).Order(StringComparer.Ordinal));
        var csv = File.ReadAllLines(Path.Combine(outDir, "distill-loss.csv"));
        Assert.Equal("step,lr,loss", csv[0]);
        Assert.Equal(7, csv.Length);
        var loss = csv.Skip(1).Select(l => double.Parse(l.Split(',')[2], System.Globalization.CultureInfo.InvariantCulture)).ToArray();
        Assert.All(loss, v => Assert.True(v > 0 && double.IsFinite(v)));
        Assert.Equal(1e-3, double.Parse(csv[1].Split(',')[1], System.Globalization.CultureInfo.InvariantCulture), 12);
        var png = PngDecoder.Decode(File.ReadAllBytes(Path.Combine(outDir, "distill-loss.png")));
        Assert.True(png.Width >= 800 && png.Height >= 400);

        // Same signs and whole tensors as plain compression; every scale trained; the run recorded in the metadata.
        using var d = DeltaFile.Open(Path.Combine(outDir, "delta.safetensors"));
        using var p = DeltaFile.Open(Path.Combine(plainDir, "delta.safetensors"));
        Assert.Equal(p.Replaced, d.Replaced);
        var before = p.Scales();
        var after = d.Scales();
        Assert.Equal(before.Keys.Order(), after.Keys.Order());
        foreach (var (name, a) in after)
        {
            Assert.NotEqual(before[name], a);
            var (s1, _) = d.BitDeltaLinear(name);
            var (s0, _) = p.BitDeltaLinear(name);
            using (s1) using (s0) Assert.Equal(s0.ToArray<uint>(), s1.ToArray<uint>());
        }
        using var f = SafetensorsFile.Open(Path.Combine(outDir, "delta.safetensors"));
        var meta = JsonNode.Parse(f.Metadata["distillation"])!;
        Assert.Equal(6, (int)meta["steps"]!);
        Assert.Equal("calib.txt", (string)meta["calibration"]!);

        var inspect = CliRunner.Run("inspect", Path.Combine(outDir, "delta.safetensors"));
        Assert.True(inspect.Code == 0, inspect.Err);
        Assert.Contains("scales distilled: 6 steps of 2 x 48 tokens of calib.txt, lr 0.001, loss ", inspect.Out);
        Assert.Contains("scales mean |W_ft - W_base| per matrix (not distilled)", CliRunner.Run("inspect", Path.Combine(plainDir, "delta.safetensors")).Out);

        var again = CliRunner.Run("compress", "--base", Fixtures.Demo("base"), "--finetuned", Fixtures.Demo("finetuned"), "--out", outDir,
                                  "--calib", dir.File("calib.txt"), "--steps", "2");
        Assert.Equal(1, again.Code);
        Assert.Contains("exists already", again.Err);
    }

    [Fact]
    public void Bad_distillation_options_are_one_line_errors()
    {
        using var dir = new TempDir();
        File.WriteAllText(dir.File("short.txt"), "Once upon a time.");
        string[] Args(params string[] more) => ["compress", "--base", Fixtures.Demo("base"), "--finetuned", Fixtures.Demo("finetuned"), "--out", dir.File("o"), .. more];
        foreach (var (args, says) in new (string[], string)[]
        {
            (Args("--steps", "5"), "needs calibration text"),
            (Args("--calib", dir.File("missing.txt")), "no such file"),
            (Args("--calib", dir.File("short.txt"), "--batch", "0"), "--batch must be positive"),
            (Args("--calib", dir.File("short.txt"), "--lr", "-1"), "--lr must be a positive number"),
            (Args("--calib", dir.File("short.txt"), "--device", "cpu"), "shorter than one sample"),
        })
        {
            var r = CliRunner.Run(args);
            Assert.True(r.Code == 1, $"{string.Join(' ', args)}: exit {r.Code}, {r.Err}");
            Assert.Contains(says, r.Err);
            Assert.Single(r.Err.Trim().Split('\n'));
        }
        // Nothing half-written: the binarized scratch delta of the failed run is gone too.
        Assert.Empty(Directory.Exists(dir.File("o")) ? Directory.GetFiles(dir.File("o")) : []);
    }

    [Fact]
    public void Bench_distill_times_steps_of_a_delta_over_its_base()
    {
        using var dir = new TempDir();
        string delta = dir.File("delta.safetensors");
        BitDeltaNative.Models.Compressor.Compress(Fixtures.Model("llama-f16"), Fixtures.Dir("bitdelta", "llama-f16"), delta);
        var r = CliRunner.Run("bench", "distill", "--base", Fixtures.Model("llama-f16"), "--delta", delta, "--finetuned", Fixtures.Dir("bitdelta", "llama-f16"),
                              "--batch", "2", "--seq-len", "16", "--steps", "2", "--device", "cpu");
        Assert.True(r.Code == 0, r.Err);
        Assert.Contains("teacher logits:", r.Out);
        Assert.Contains("step 1:", r.Out);
        Assert.Contains("distillation step: median", r.Out);
    }
}
