using BitDeltaNative.Tests.Tensors;

namespace BitDeltaNative.Tests.Cli;

/// <summary>`bench --record FILE` and `bench report FILE`: a bench run's figures land in the file and come back as one
/// table (terminal and Markdown); a missing or malformed record file is a one-line error naming it.</summary>
[Collection(IlgpuCpuCollection.Name)]
public class BenchReportCliTests
{
    [Fact]
    public void A_recorded_bench_comes_back_as_one_table()
    {
        using var dir = new TempDir();
        string file = dir.File("figures.jsonl");
        var gemv = CliRunner.Run("bench", "gemv", "--device", "ilgpu-cpu", "--shapes", "64x64,32x96", "--iters", "1", "--launches", "1", "--record", file);
        Assert.True(gemv.Code == 0, gemv.Err);
        var gemm = CliRunner.Run("bench", "gemm", "--device", "ilgpu-cpu", "--rows", "16", "--shapes", "64x64", "--iters", "1", "--record", file);
        Assert.True(gemm.Code == 0, gemm.Err);
        var figures = BitDeltaNative.Cli.ReadFigures([file]);
        // gemv: 2 shapes; gemm: the f32-x GEMM, f16 and bf16 operands through GemmHalf and through GemmWgmma (which the
        // CPU accelerator runs as its emulation)
        Assert.Equal(7, figures.Count);
        Assert.Contains(figures, f => f.Bench == "gemm" && f.What.EndsWith("bf16 x and W, wgmma"));
        Assert.All(figures, f => Assert.True(f.Value > 0 && f.Date.Length == 10 && f.Device.Length > 0, f.ToString()));
        Assert.Contains(figures, f => f.Bench == "gemv" && f.What.StartsWith("32×96") && f.Unit == "fraction");
        Assert.Contains(figures, f => f.Bench == "gemm" && f.Unit == "TFLOP/s" && f.Goal!.Contains("cuBLAS"));

        var report = CliRunner.Run("bench", "report", file);
        Assert.True(report.Code == 0, report.Err);
        Assert.Contains("64×64, 1 row(s), F16: of copy", report.Out);
        Assert.Contains("7 figures", report.Out);
        var md = CliRunner.Run("bench", "report", file, "--markdown");
        Assert.Contains("| gemm | 16 rows × 64×64, f16 tensor cores |", md.Out);
    }

    [Fact]
    public void Half_prefill_and_bench_model_refuse_what_they_cannot_run()
    {
        var model = CliRunner.Run("bench", "model", "--device", "cpu");
        Assert.Equal(1, model.Code);
        Assert.Contains("--model DIR or --random-7b", model.Err);
        var eval = CliRunner.Run("eval", "--base", Fixtures.Model("llama-f16"), "--data", Fixtures.Model("llama-f16") + "/config.json", "--half-prefill", "--device", "cpu");
        Assert.Equal(1, eval.Code);
        Assert.Contains("--half-prefill", eval.Err);
    }

    /// <summary>Decode after a long prompt: the model's positions are made for it, and the line says the context.</summary>
    [Fact]
    public void Bench_model_decodes_at_the_context_asked()
    {
        var run = CliRunner.Run("bench", "model", "--device", "cpu", "--model", Fixtures.Model("llama-f16"), "--batches", "1,2", "--prefill", "8",
                                "--new-tokens", "3", "--decode-context", "40", "--split-keys", "256");
        Assert.True(run.Code == 0, run.Err);
        Assert.Contains("decode batch 1 at 40+ positions:", run.Out);
        Assert.Contains("decode batch 2 at 40+ positions:", run.Out);
    }

    [Fact]
    public void Bench_model_refuses_two_models_a_bad_window_a_profile_off_cuda_and_bf16_of_a_checkpoint()
    {
        var both = CliRunner.Run("bench", "model", "--device", "cpu", "--random-7b", "--random-mistral-7b");
        Assert.Equal(1, both.Code);
        Assert.Contains("--random-mistral-7b (exactly one of them)", both.Err);
        var dirAndRandom = CliRunner.Run("bench", "model", "--device", "cpu", "--model", Fixtures.Model("llama-f16"), "--random-mistral-7b");
        Assert.Equal(1, dirAndRandom.Code);
        Assert.Contains("exactly one of them", dirAndRandom.Err);
        foreach (var w in new[] { "0", "-3" })
        {
            var window = CliRunner.Run("bench", "model", "--device", "cpu", "--random-mistral-7b", "--window", w);
            Assert.Equal(1, window.Code);
            Assert.Contains($"--window: expected a sliding window of at least 1 token, got {w}", window.Err);
        }
        var profile = CliRunner.Run("bench", "model", "--device", "cpu", "--random-mistral-7b", "--profile-prefill", "--half-prefill");
        Assert.Equal(1, profile.Code);
        Assert.Contains("--profile-prefill: needs --device cuda", profile.Err);
        var bf16 = CliRunner.Run("bench", "model", "--device", "cpu", "--model", Fixtures.Model("llama-f16"), "--bf16");
        Assert.Equal(1, bf16.Code);
        Assert.Contains("--bf16: only for --random-7b or --random-mistral-7b", bf16.Err);
        foreach (var (option, value, error) in new[] { ("--split-keys", "0", "a positive multiple of 32, got 0"), ("--split-keys", "48", "a positive multiple of 32, got 48"),
                                                        ("--split-keys", "-32", "a positive multiple of 32, got -32"), ("--decode-context", "0", "at least 1 prompt token, got 0") })
        {
            var bad = CliRunner.Run("bench", "model", "--device", "cpu", "--random-mistral-7b", option, value);
            Assert.Equal(1, bad.Code);
            Assert.Contains($"{option}: expected {error}", bad.Err);
        }
    }

    [Fact]
    public void Step_profile_and_launch_bench_refuse_what_they_cannot_measure()
    {
        var profile = CliRunner.Run("bench", "multitenant", "--device", "ilgpu-cpu", "--random-7b", "--step-profile", "--no-kernel-table");
        Assert.Equal(1, profile.Code);
        Assert.Contains("--step-profile: needs --device cuda", profile.Err);
        var launch = CliRunner.Run("bench", "launch", "--device", "cpu");
        Assert.Equal(1, launch.Code);
        Assert.Contains("bench launch: needs an ILGPU device", launch.Err);
        var calls = CliRunner.Run("bench", "launch", "--device", "ilgpu-cpu", "--calls", "0");
        Assert.Equal(1, calls.Code);
        Assert.Contains("--calls: at least 1", calls.Err);
    }

    [Fact]
    public void Bad_record_files_are_refused_naming_them()
    {
        using var dir = new TempDir();
        var missing = CliRunner.Run("bench", "report", dir.File("none.jsonl"));
        Assert.Equal(1, missing.Code);
        Assert.Contains("none.jsonl: no such record file", missing.Err);
        string bad = dir.File("bad.jsonl");
        File.WriteAllText(bad, "{\"Bench\":\"gemv\",\"What\":\"x\",\"Value\":1,\"Unit\":\"u\",\"Goal\":null,\"Met\":null,\"Device\":\"d\",\"Date\":\"2026-12-02\"}\n{not json\n");
        var r = CliRunner.Run("bench", "report", bad);
        Assert.Equal(1, r.Code);
        Assert.Contains("bad.jsonl:2: not a bench figure", r.Err);
    }
}
