using BitDeltaNative.Models;
using BitDeltaNative.Tests.Tensors;

namespace BitDeltaNative.Tests.Cli;

/// <summary>`bitdelta generate` end to end through the command line: a tiny random Llama with Llama-2's
/// vocabulary and its real tokenizer.model (from ../shared; the test says so and skips where it is absent).</summary>
[Collection(IlgpuCpuCollection.Name)]
public class GenerateCliTests
{

    static void MakeModel(string dir, string tokenizer)
    {
        File.WriteAllText(Path.Combine(dir, "config.json"), """
            {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 32, "intermediate_size": 48,
             "num_hidden_layers": 1, "num_attention_heads": 2, "vocab_size": 32000, "max_position_embeddings": 128,
             "rms_norm_eps": 1e-5, "bos_token_id": 1, "eos_token_id": 2, "torch_dtype": "float16"}
            """);
        var config = LlamaConfig.Load(dir);
        var rng = new Random(5);
        var tensors = LlamaWeights.ExpectedTensors(config)
            .Select(e => (e.Name, Tensor.From(Enumerable.Range(0, e.Shape.Aggregate(1, (a, b) => a * b)).Select(_ => (float)(rng.NextDouble() - 0.5)).ToArray(), e.Shape, Device.Cpu, DType.F16)))
            .ToList();
        SafetensorsWriter.Write(Path.Combine(dir, "model.safetensors"), tensors);
        File.Copy(tokenizer, Path.Combine(dir, "tokenizer.model"));
    }

    [Fact]
    public void Generate_streams_text_and_reports_tokens_per_second()
    {
        SharedFixtures.ReadOrSkip(SharedFixtures.Llama2Tokenizer);
        using var dir = new TempDir();
        MakeModel(dir.Path, SharedFixtures.Find(SharedFixtures.Llama2Tokenizer));
        var (code, output, err) = CliRunner.Run("generate", "--model", dir.Path, "--prompt", "The capital of France is", "--max-tokens", "6", "--device", "cpu");
        Assert.True(code == 0, err);
        Assert.StartsWith("The capital of France is", output);
        Assert.True(output.TrimEnd('\n').Length > "The capital of France is".Length, output);
        Assert.Contains("tokens/s", err);
        // --exact keeps f32 where the default would go half (on a CUDA GPU); on the CPU both are f32: the same text.
        var exact = CliRunner.Run("generate", "--model", dir.Path, "--prompt", "The capital of France is", "--max-tokens", "6", "--device", "cpu", "--exact");
        Assert.True(exact.Code == 0, exact.Err);
        Assert.Equal(output, exact.Out);
        Assert.DoesNotContain("precision:", err);

        // Sampling with a seed is repeatable; two prompts go in one batch.
        var a = CliRunner.Run("generate", "--model", dir.Path, "--prompt", "Hi", "--prompt", "Once upon a time", "--max-tokens", "5", "--temperature", "0.8", "--top-p", "0.9", "--seed", "7", "--device", "cpu");
        var b = CliRunner.Run("generate", "--model", dir.Path, "--prompt", "Hi", "--prompt", "Once upon a time", "--max-tokens", "5", "--temperature", "0.8", "--top-p", "0.9", "--seed", "7", "--device", "cpu");
        Assert.Equal(0, a.Code);
        Assert.Equal(a.Out, b.Out);
        Assert.Contains("[0] Hi", a.Out);
        Assert.Contains("[1] Once upon a time", a.Out);
    }

    [Fact]
    public void Bad_input_is_one_line_and_a_non_zero_exit()
    {
        using var dir = new TempDir();
        var missing = CliRunner.Run("generate", "--model", Path.Combine(dir.Path, "nope"), "--prompt", "x", "--device", "cpu");
        Assert.Equal(1, missing.Code);
        Assert.Contains("nope", missing.Err);
        Assert.Single(missing.Err.Trim().Split('\n'));

        var device = CliRunner.Run("generate", "--model", dir.Path, "--prompt", "x", "--device", "tpu");
        Assert.Equal(1, device.Code);
        Assert.Contains("unknown device 'tpu'", device.Err);

        var temp = CliRunner.Run("generate", "--model", dir.Path, "--prompt", "x", "--temperature", "-1", "--device", "cpu");
        Assert.Equal(1, temp.Code);
        Assert.Contains("--temperature", temp.Err);
    }

    /// <summary>The multi-tenant form on the demo pair: two compressed fine-tunes (the delta, and the same delta with
    /// its scales × 3, a different model) and the base in one batch; each line must equal, token for token, what that
    /// tenant gives alone (`--delta FILE`, or no delta for the base).</summary>
    [Fact]
    public void Generate_with_named_deltas_batches_tenants_and_matches_each_alone()
    {
        using var dir = new TempDir();
        string baseDir = Fixtures.Demo("base"), a = dir.File("a.safetensors"), b = dir.File("b.safetensors");
        Compressor.Compress(baseDir, Fixtures.Demo("finetuned"), a);
        using (var f = DeltaFile.Open(a))
            f.WriteWithScales(b, f.Scales().ToDictionary(kv => kv.Key, kv => kv.Value * 3f), new Dictionary<string, string>());
        const string math = "Question: What is 23 + 35?\nAnswer:", story = "Once upon a time";
        string[] common = ["--max-tokens", "10", "--device", "cpu"];

        var multi = CliRunner.Run(["generate", "--base", baseDir, "--delta", $"a={a}", "--delta", $"b={b}",
                                   "--prompt", $"a:{math}", "--prompt", $"base:{story}", "--prompt", $"b:{math}", "--prompt", $"a:{story}", "--prompt", story, .. common]);
        Assert.True(multi.Code == 0, multi.Err);
        string Alone(string? delta, string prompt)
        {
            string[] d = delta == null ? [] : ["--delta", delta];
            var r = CliRunner.Run(["generate", "--model", baseDir, .. d, "--prompt", prompt, .. common]);
            Assert.True(r.Code == 0, r.Err);
            return r.Out.TrimEnd('\n');
        }
        var lines = multi.Out.TrimEnd('\n').Split("\n[").Select((l, i) => i == 0 ? l : "[" + l).ToArray();
        Assert.Equal(5, lines.Length);
        string[] want = [Alone(a, math), Alone(null, story), Alone(b, math), Alone(a, story), Alone(null, story)];
        string[] tenants = ["a", "base", "b", "a", "base"];
        for (int i = 0; i < 5; i++)
            Assert.Equal($"[{i}] ({tenants[i]}) {want[i]}", lines[i]);
        // Not vacuous: the tenants differ from each other and from the base on the same prompt.
        Assert.NotEqual(want[0], want[2]);
        Assert.NotEqual(want[1], want[3]);
        Assert.Contains("tenant a:", multi.Err);
        Assert.Contains("memory: base", multi.Err);

        // Bad input: one line, non-zero exit.
        foreach (var (args, what) in new (string[], string)[]
        {
            (["--delta", a, "--delta", b], "name each one"),
            (["--delta", $"a={a}", "--delta", $"a={b}"], "'a' is given twice"),
            (["--delta", $"base={a}"], "reserved"),
            (["--delta", $"a={dir.File("missing.safetensors")}"], "missing.safetensors"),
        })
        {
            var r = CliRunner.Run(["generate", "--base", baseDir, .. args, "--prompt", "x", .. common]);
            Assert.Equal(1, r.Code);
            Assert.Contains(what, r.Err);
            Assert.Single(r.Err.Trim().Split('\n'));
        }
    }
}

/// <summary>Runs the bitdelta command in-process and captures what it prints. The console is process-wide, so
/// test classes that use this belong to <see cref="IlgpuCpuCollection"/> (run one at a time).</summary>
public static class CliRunner
{
    public static (int Code, string Out, string Err) Run(params string[] args)
    {
        var (o, e) = (Console.Out, Console.Error);
        var so = new StringWriter();
        var se = new StringWriter();
        Console.SetOut(so);
        Console.SetError(se);
        try { return (BitDeltaNative.Cli.Run(args), so.ToString(), se.ToString()); }
        finally { Console.SetOut(o); Console.SetError(e); }
    }
}
