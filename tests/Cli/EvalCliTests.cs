using System.Text.Json.Nodes;
using BitDeltaNative.Tests.Tensors;

namespace BitDeltaNative.Tests.Cli;

/// <summary><c>bitdelta eval</c> and <c>bitdelta demo</c> on the shipped demo pair (demo/), on the managed CPU.</summary>
[Collection(IlgpuCpuCollection.Name)]   // redirects the process-wide console
public class EvalCliTests
{
    static string Compress(TempDir dir)
    {
        string outDir = dir.File("out");
        var r = CliRunner.Run("compress", "--base", Fixtures.Demo("base"), "--finetuned", Fixtures.Demo("finetuned"), "--out", outDir);
        Assert.True(r.Code == 0, r.Err);
        return Path.Combine(outDir, "delta.safetensors");
    }

    [Fact]
    public void Eval_puts_base_finetune_and_compressed_side_by_side_and_writes_json()
    {
        using var dir = new TempDir();
        string delta = Compress(dir);
        File.WriteAllText(dir.File("text.txt"), File.ReadAllText(Fixtures.Demo("data", "arithmetic.valid.txt"))[..1500]);
        File.WriteAllLines(dir.File("qa.jsonl"), File.ReadLines(Fixtures.Demo("data", "arithmetic.qa.jsonl")).Take(8));
        var r = CliRunner.Run("eval", "--base", Fixtures.Demo("base"), "--model", Fixtures.Demo("finetuned"), "--delta", delta,
                              "--data", dir.File("text.txt"), "--task", dir.File("qa.jsonl"), "--context", "64", "--stride", "32",
                              "--max-new-tokens", "6", "--device", "cpu", "--json", dir.File("eval.json"));
        Assert.True(r.Code == 0, r.Err);
        Assert.Contains("fine-tune", r.Out);
        Assert.Contains("compressed", r.Out);
        Assert.Contains("perplexity text.txt", r.Out);
        var json = JsonNode.Parse(File.ReadAllText(dir.File("eval.json")))!;
        double Ppl(string m) => (double)json["models"]![m]!["text.txt"]!["perplexity"]!;
        double Acc(string m) => (double)json["models"]![m]!["qa.jsonl accuracy"]!;
        // The base never saw arithmetic; the fine-tune learned it (100% in PyTorch on all 200 questions).
        Assert.True(Ppl("base") > 100 * Ppl("finetuned"), $"base {Ppl("base")}, fine-tune {Ppl("finetuned")}");
        Assert.True(Ppl("compressed") < Ppl("base") / 100, $"compressed {Ppl("compressed")}");
        Assert.Equal(0.0, Acc("base"));
        Assert.Equal(1.0, Acc("finetuned"));

        var again = CliRunner.Run("eval", "--base", Fixtures.Demo("base"), "--data", dir.File("text.txt"), "--json", dir.File("eval.json"));
        Assert.Equal(1, again.Code);
        Assert.Contains("exists", again.Err);
    }

    [Fact]
    public void Generate_with_a_delta_runs_the_compressed_finetune_over_the_base()
    {
        using var dir = new TempDir();
        string delta = Compress(dir);
        const string prompt = "Question: What is 23 + 45?\nAnswer:";
        var plain = CliRunner.Run("generate", "--model", Fixtures.Demo("base"), "--prompt", prompt, "--max-tokens", "12", "--device", "cpu");
        var compressed = CliRunner.Run("generate", "--model", Fixtures.Demo("base"), "--delta", delta, "--prompt", prompt, "--max-tokens", "12", "--device", "cpu");
        Assert.True(plain.Code == 0 && compressed.Code == 0, plain.Err + compressed.Err);
        // The base goes on with a story; the compressed fine-tune answers in the fine-tune's format (PyTorch gives
        // " 104" and then the next question: demo/oracle.json).
        Assert.DoesNotContain("Question", plain.Out[prompt.Length..]);
        Assert.StartsWith(prompt + " 104\n\nQuestion:", compressed.Out);
        Assert.Contains("with delta", compressed.Err);
        var wrongBase = CliRunner.Run("generate", "--model", Fixtures.Model("llama-f16"), "--delta", delta, "--prompt", "x");
        Assert.Equal(1, wrongBase.Code);
        Assert.Contains("another architecture", wrongBase.Err);
    }

    [Fact]
    public void Eval_refuses_bad_input_in_one_line()
    {
        using var dir = new TempDir();
        string b = Fixtures.Demo("base");
        File.WriteAllText(dir.File("t.txt"), "Once upon a time.");
        (string[] Args, string Says)[] cases =
        [
            (["eval", "--base", b], "give --data"),
            (["eval", "--base", b, "--data", dir.File("t.txt"), "--stride", "0"], "--stride must be >= 1"),
            (["eval", "--base", b, "--data", dir.File("none.txt")], "no such file"),
            (["eval", "--base", b, "--data", dir.File("t.txt"), "--context", "8", "--stride", "64"], "too short"),
            (["eval", "--base", b, "--data", dir.File("t.txt"), "--model", Fixtures.Model("llama-f16")], "is not a fine-tune of"),
            (["eval", "--base", b, "--data", dir.File("t.txt"), "--skip-base"], "leaves nothing"),
        ];
        foreach (var (args, says) in cases)
        {
            var r = CliRunner.Run(args);
            Assert.True(r.Code == 1, $"{string.Join(' ', args)}: exit {r.Code}");
            Assert.Contains(says, r.Err);
            Assert.Single(r.Err.Trim().Split('\n'));
        }
        // A delta made from another base is refused before anything runs.
        string other = dir.File("other");
        Assert.Equal(0, CliRunner.Run("compress", "--base", Fixtures.Model("llama-f16"), "--finetuned", Fixtures.Dir("bitdelta", "llama-f16"), "--out", other).Code);
        var wrong = CliRunner.Run("eval", "--base", b, "--delta", Path.Combine(other, "delta.safetensors"), "--data", dir.File("t.txt"), "--context", "2", "--stride", "2");
        Assert.Equal(1, wrong.Code);
        Assert.Contains("another architecture", wrong.Err);
    }

    [Fact]
    public void Compress_save_full_model_writes_a_loadable_folder_with_the_tokenizer()
    {
        using var dir = new TempDir();
        string outDir = dir.File("out");
        var r = CliRunner.Run("compress", "--base", Fixtures.Demo("base"), "--finetuned", Fixtures.Demo("finetuned"), "--out", outDir, "--save-full-model");
        Assert.True(r.Code == 0, r.Err);
        foreach (var f in new[] { "config.json", "model.safetensors", "tokenizer.model", "tokenizer_config.json" })
            Assert.True(File.Exists(Path.Combine(outDir, "model", f)), f);
        var gen = CliRunner.Run("generate", "--model", Path.Combine(outDir, "model"), "--prompt", "Once upon a time,", "--max-tokens", "8", "--device", "cpu");
        Assert.True(gen.Code == 0, gen.Err);
        var again = CliRunner.Run("compress", "--base", Fixtures.Demo("base"), "--finetuned", Fixtures.Demo("finetuned"), "--out", dir.File("out2"), "--save-full-model");
        Assert.Equal(0, again.Code);
        Directory.Delete(dir.File("out2") + "/model", true);
        File.Delete(dir.File("out2") + "/delta.safetensors");
        Directory.CreateDirectory(dir.File("out2") + "/model");
        var refused = CliRunner.Run("compress", "--base", Fixtures.Demo("base"), "--finetuned", Fixtures.Demo("finetuned"), "--out", dir.File("out2"), "--save-full-model");
        Assert.Equal(1, refused.Code);
        Assert.Contains("model/ exists already", refused.Err);
    }
}
