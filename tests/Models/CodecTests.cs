using System.Text.Json;
using BitDeltaNative.Models;
using BitDeltaNative.Models.Codecs;
using BitDeltaNative.Tests.Cli;
using BitDeltaNative.Tests.Tensors;
using Check = BitDeltaNative.Kernels.Check;

namespace BitDeltaNative.Tests.Models;

/// <summary>
/// The lowrank-mp and sparse-lowbit codecs end to end on the golden fine-tunes of the three tiny architectures
/// (tests/fixtures/bitdelta): the file they write reads back, its Δ is near the fine-tune's, a forward pass with it equals
/// the model it stands for, calibration turns GPTQ on, the CLI and inspect speak for them, and bad files are refused
/// with a one-line error naming the file and the field.
/// </summary>
[Collection(IlgpuCpuCollection.Name)]
public class CodecTests
{
    static string FineTune(string model) => Fixtures.Dir("bitdelta", model);

    static readonly string[] CodecNames = [LowRankMp.Codec, SparseLowBit.Codec];

    public static TheoryData<string, string> Cases
    {
        get
        {
            var d = new TheoryData<string, string>();
            foreach (var m in Fixtures.Models)
                foreach (var c in CodecNames) d.Add(m, c);
            return d;
        }
    }

    static CompressionReport Compress(string model, string codec, string path, IReadOnlyDictionary<(int, int), double[]>? h = null) =>
        CodecCompressor.Compress(Fixtures.Model(model), FineTune(model), path, new CodecOptions { Codec = codec, Group = 32 }, h, h != null ? "test stream" : null);

    [Theory]
    [MemberData(nameof(Cases))]
    public void The_file_reads_back_and_its_delta_is_near_the_fine_tunes(string model, string codec)
    {
        using var dir = new TempDir();
        string path = dir.File("delta.safetensors");
        var report = Compress(model, codec, path);
        using var d = DeltaFile.Open(path);
        Assert.Equal(codec, d.Codec);
        Assert.Equal(report.Compressed, d.Compressed.Count);
        Assert.Equal("rtn", d.Params!.Quantizer);
        using var baseCk = Checkpoint.Open(Fixtures.Model(model));
        using var ftCk = Checkpoint.Open(FineTune(model));
        foreach (var (name, shape) in d.Compressed)
        {
            var ft = ftCk.Get(name).ToFloatArray();
            var b = baseCk.Get(name).ToFloatArray();
            var want = ft.Select((v, i) => v - b[i]).ToArray();
            var got = d.DenseDelta(name);
            double err = Check.RelativeError(got, want);
            // 2:4 at 2 bits keeps most of the energy. These fine-tunes' deltas are noise-like, full rank, so at 1 bit a
            // weight the low-rank codec keeps only their top few directions: it must come near the best that rank can do
            // (the truncated SVD's error), which a wrong factor, sign or scale would miss by far.
            if (codec == SparseLowBit.Codec) Assert.True(err < 0.75, $"{name}: relative error {err:F3}");
            else
            {
                using var f = d.LowRankLinear(name);
                var svd = Svd.Full(want.Select(v => (double)v).ToArray(), shape[0], shape[1]);
                double tail = Math.Sqrt(svd.S.Skip(f.Rank).Sum(s => s * s) / svd.S.Sum(s => s * s));
                Assert.True(f.Rank > 0 && err < tail + 0.02, $"{name}: {err:F4} against the best rank-{f.Rank} error {tail:F4}");
            }
        }
    }

    [Theory]
    [MemberData(nameof(Cases))]
    public void A_forward_pass_with_the_delta_equals_the_full_model_it_stands_for(string model, string codec)
    {
        using var dir = new TempDir();
        string path = dir.File("delta.safetensors"), full = dir.File("model");
        Compress(model, codec, path);
        FullModel.Save(Fixtures.Model(model), path, FineTune(model), full);
        int[] ids = [1, 17, 5, 99, 23, 8, 41, 3, 77, 12, 30, 2, 64, 9];
        int n = ids.Length;
        float[] Logits(Device dev, string weights, string? delta)
        {
            using var m = LlamaModel.Load(weights, dev);
            using var dw = delta != null ? DeltaWeights.Load(delta, weights, m.Config, dev) : null;
            using var cache = m.NewCache(1, n);
            using var logits = Tensor.Empty([n, m.Config.VocabSize], DType.F32, dev);
            m.Forward(ids, new int[n], Enumerable.Range(0, n).ToArray(), Enumerable.Range(0, n).ToArray(), cache, logits, dw);
            return logits.ToFloatArray();
        }
        var want = Logits(Device.Cpu, full, null);
        foreach (var dev in new[] { Device.Cpu }.Concat(TestDevices.All))
        {
            var got = Logits(dev, Fixtures.Model(model), path);
            // the full model holds W_base + Δ rounded to the checkpoint's 16-bit dtype
            Assert.True(Check.RelativeError(got, want) < 1e-2, $"{model} {codec} on {dev}: {Check.RelativeError(got, want):E2}");
        }
    }

    [Theory]
    [InlineData("lowrank-mp")]
    [InlineData("sparse-lowbit")]
    public void Calibration_turns_gptq_on_and_is_recorded(string codec)
    {
        using var dir = new TempDir();
        string path = dir.File("delta.safetensors");
        using var m = LlamaModel.Load(FineTune("llama-f16"), Device.Cpu);
        var rng = new Random(2);
        var stream = Enumerable.Range(0, 8 * 32).Select(_ => rng.Next(3, m.Config.VocabSize)).ToArray();
        var h = Hessians.Collect(m, stream, samples: 8, seqLen: 32);
        Assert.Equal(2 * 4, h.Count);   // q (for k, v), o, gate (for up), down in each of 2 layers
        Assert.Equal(64 * 64, h[(0, 0)].Length);
        Assert.Equal(160 * 160, h[(1, 6)].Length);
        // H is a sum of x·xᵀ: symmetric with a positive diagonal
        Assert.Equal(h[(0, 3)][1 * 64 + 5], h[(0, 3)][5 * 64 + 1], 6);
        Assert.True(h[(0, 0)][7 * 64 + 7] > 0);
        Compress("llama-f16", codec, path, h);
        using var d = DeltaFile.Open(path);
        Assert.Equal("gptq", d.Params!.Quantizer);
        Assert.Equal("test stream", d.Params.Calibration);
    }

    [Fact]
    public void Sparse_files_are_zstd_frames_that_decompress_to_the_stated_tensors()
    {
        using var dir = new TempDir();
        string path = dir.File("delta.safetensors");
        Compress("llama-f16", SparseLowBit.Codec, path);
        using (var raw = SafetensorsFile.Open(path))
        {
            Assert.True(raw.Metadata.ContainsKey("zstd"));
            Assert.All(raw.Entries, e => Assert.Equal(DType.U8, e.DType));
        }
        using var d = DeltaFile.Open(path);
        using var f = d.SparseLinear("model.layers.0.mlp.down_proj.weight");
        Assert.Equal([64, (160 + 31) / 32], f.Meta.Shape.ToArray());
        Assert.Equal(2, f.Bits);
    }

    /// <summary>Rewrites a delta file with one metadata entry changed (tensors as they are).</summary>
    static void WithMetadata(string from, string to, string key, Func<string, string> change)
    {
        using var f = SafetensorsFile.Open(from);
        var meta = f.Metadata.ToDictionary();
        meta[key] = change(meta[key]);
        SafetensorsWriter.Write(to, f.Entries.Select(e => (e.Name, e.DType, e.Shape.ToArray())).ToList(), n => f.Get(n), meta, owned: true, overwrite: false);
    }

    [Fact]
    public void Bad_codec_files_are_refused_naming_the_file_and_the_field()
    {
        using var dir = new TempDir();
        string lr = dir.File("lr.safetensors"), sp = dir.File("sp.safetensors");
        Compress("llama-f16", LowRankMp.Codec, lr);
        Compress("llama-f16", SparseLowBit.Codec, sp);
        const string q = "model.layers.0.self_attn.q_proj.weight";

        string noSlices = dir.File("a.safetensors");
        WithMetadata(lr, noSlices, "codec_params", v =>
        {
            var p = JsonSerializer.Deserialize<CodecParams>(v, CodecParams.Json)!;
            p.Slices!.Remove(q);
            return JsonSerializer.Serialize(p, CodecParams.Json);
        });
        var e = Assert.Throws<BitDeltaException>(() => DeltaFile.Open(noSlices));
        Assert.Contains(noSlices, e.Message);
        Assert.Contains("slices for 'model.layers.0.self_attn.q_proj.weight'", e.Message);

        string moreRank = dir.File("b.safetensors");
        WithMetadata(lr, moreRank, "codec_params", v =>
        {
            var p = JsonSerializer.Deserialize<CodecParams>(v, CodecParams.Json)!;
            p.Slices![q][0][0] += 1;
            return JsonSerializer.Serialize(p, CodecParams.Json);
        });
        e = Assert.Throws<BitDeltaException>(() => DeltaFile.Open(moreRank));
        Assert.Contains("model.layers.0.self_attn.q_proj.lr.", e.Message);
        Assert.Contains("expected", e.Message);

        string bits3 = dir.File("c.safetensors");
        WithMetadata(sp, bits3, "codec_params", v => v.Replace("\"bits\":2", "\"bits\":3", StringComparison.Ordinal));
        e = Assert.Throws<BitDeltaException>(() => DeltaFile.Open(bits3));
        Assert.Contains("bits is 3", e.Message);

        // The sparse kernel takes a group of inputs as whole groups of four (one scale a group of four).
        string group6 = dir.File("f.safetensors");
        WithMetadata(sp, group6, "codec_params", v =>
        {
            var p = JsonSerializer.Deserialize<CodecParams>(v, CodecParams.Json)!;
            return JsonSerializer.Serialize(p with { Group = 6 }, CodecParams.Json);
        });
        e = Assert.Throws<BitDeltaException>(() => DeltaFile.Open(group6));
        Assert.Contains(group6, e.Message);
        Assert.Contains("group is 6, expected a multiple of 4", e.Message);

        string badZstd = dir.File("d.safetensors");
        WithMetadata(sp, badZstd, "zstd", v => v.Replace("\"U32\"", "\"Q7\"", StringComparison.Ordinal));
        e = Assert.Throws<BitDeltaException>(() => DeltaFile.Open(badZstd));
        Assert.Contains("zstd entry", e.Message);

        string notJson = dir.File("e.safetensors");
        WithMetadata(lr, notJson, "codec_params", _ => "{not json");
        e = Assert.Throws<BitDeltaException>(() => DeltaFile.Open(notJson));
        Assert.Contains("codec_params", e.Message);
    }

    [Fact]
    public void Cli_compresses_with_each_codec_inspects_it_and_refuses_bad_options()
    {
        using var dir = new TempDir();
        string b = Fixtures.Model("llama-f16"), f = FineTune("llama-f16");
        var lr = CliRunner.Run("compress", "--base", b, "--finetuned", f, "--out", dir.File("lr"), "--codec", "lowrank-mp", "--group", "32", "--device", "cpu");
        Assert.True(lr.Code == 0, lr.Err);
        Assert.Contains("round to nearest", lr.Out);
        var ins = CliRunner.Run("inspect", dir.File("lr/delta.safetensors"));
        Assert.Equal(0, ins.Code);
        Assert.Contains("lowrank-mp delta", ins.Out);
        Assert.Contains("at 8 bits", ins.Out);
        Assert.Contains("bits a weight", ins.Out);
        var sp = CliRunner.Run("compress", "--base", b, "--finetuned", f, "--out", dir.File("sp"), "--codec", "sparse-lowbit", "--bits", "4", "--device", "cpu");
        Assert.True(sp.Code == 0, sp.Err);
        var ins2 = CliRunner.Run("inspect", dir.File("sp/delta.safetensors"));
        Assert.Contains("2:4 sparse", ins2.Out);
        Assert.Contains("4-bit values", ins2.Out);
        Assert.Contains("4 bits, zstd", ins2.Out);
        // Without the zstd stage: the same codes stored as they are.
        var plain = CliRunner.Run("compress", "--base", b, "--finetuned", f, "--out", dir.File("plain"), "--codec", "sparse-lowbit", "--bits", "4", "--no-zstd", "--device", "cpu");
        Assert.True(plain.Code == 0, plain.Err);
        Assert.Contains("no zstd stage", plain.Out);
        Assert.Contains("no zstd stage", CliRunner.Run("inspect", dir.File("plain/delta.safetensors")).Out);
        using (var z = DeltaFile.Open(dir.File("sp/delta.safetensors")))
        using (var p = DeltaFile.Open(dir.File("plain/delta.safetensors")))
        {
            Assert.True(z.Zstd);
            Assert.False(p.Zstd);
            foreach (var name in z.Compressed.Keys) Assert.Equal(z.DenseDelta(name), p.DenseDelta(name));
        }
        var plot = CliRunner.Run("inspect", dir.File("sp/delta.safetensors"), "--plot", dir.File("p.png"));
        Assert.Equal(1, plot.Code);
        Assert.Contains("bitdelta delta's scales", plot.Err);

        (string[] Args, string Message)[] bad =
        [
            (["--codec", "lowrank"], "--codec lowrank: expected one of"),
            (["--codec", "sparse-lowbit", "--bits", "3"], "--bits 3: sparse-lowbit takes 2 or 4"),
            (["--codec", "sparse-lowbit", "--ranks", "2"], "--ranks is for --codec lowrank-mp"),
            (["--codec", "sparse-lowbit", "--budget", "2"], "--budget is for --codec lowrank-mp"),
            (["--codec", "sparse-lowbit", "--group", "30"], "--group 30: sparse-lowbit needs a multiple of 4"),
            (["--codec", "lowrank-mp", "--steps", "10"], "--steps: scale distillation is for --codec bitdelta"),
            (["--codec", "lowrank-mp", "--ranks", "2,32,64"], "give one fewer"),
            (["--codec", "lowrank-mp", "--budget", "0"], "--budget must be in (0, 16]"),
            (["--bits", "2"], "--bits and --ranks are for --codec lowrank-mp and sparse-lowbit"),
            (["--no-zstd"], "--no-zstd is for --codec sparse-lowbit"),
            (["--codec", "lowrank-mp", "--no-zstd"], "--no-zstd is for --codec sparse-lowbit"),
        ];
        foreach (var (args, message) in bad)
        {
            var r = CliRunner.Run(["compress", "--base", b, "--finetuned", f, "--out", dir.File("bad"), .. args]);
            Assert.Equal(1, r.Code);
            Assert.Contains(message, r.Err);
            Assert.False(Directory.Exists(dir.File("bad")) && Directory.EnumerateFileSystemEntries(dir.File("bad")).Any(), $"{string.Join(' ', args)} left files behind");
        }
    }
}
