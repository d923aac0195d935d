using System.Text.Json.Nodes;
using BitDeltaNative.Models;
using BitDeltaNative.Tests.Tensors;

namespace BitDeltaNative.Tests.Models;

/// <summary>
/// The demo pair (demo/) measured by us against what PyTorch + transformers measured on the same files when the pair
/// was trained (demo/oracle.json, tools/oracle/demo_pair.py, f32 on CUDA): perplexity of base, fine-tune and the
/// BitDelta-compressed fine-tune on both held-out texts, and exact-match accuracy on the 200 arithmetic questions.
/// </summary>
public class DemoOracleTests
{
    /// <summary>f32 against f32 in another summation order: the window NLLs agree to ~1e-6; 1e-4 leaves room.</summary>
    const double PerplexityBound = 1e-4;

    [Fact]
    public void Perplexity_and_accuracy_of_base_finetune_and_compressed_equal_pytorchs()
    {
        var oracle = JsonNode.Parse(File.ReadAllText(Fixtures.Demo("oracle.json")))!;
        int context = (int)oracle["context"]!, stride = (int)oracle["stride"]!;
        string baseDir = Fixtures.Demo("base");
        var config = LlamaConfig.Load(baseDir);
        var tokenizer = Tokenizer.Load(baseDir, config);
        var items = ExactMatch.Read(Fixtures.Demo("data", "arithmetic.qa.jsonl"));
        using var dir = new TempDir();
        string deltaPath = dir.File("delta.safetensors");
        Compressor.Compress(baseDir, Fixtures.Demo("finetuned"), deltaPath);

        void Check(string name, LlamaModel m, DeltaWeights? delta)
        {
            var want = oracle["models"]![name]!;
            foreach (var file in new[] { "stories.valid.txt", "arithmetic.valid.txt" })
            {
                var ids = tokenizer.Encode(Perplexity.ReadText(Fixtures.Demo("data", file)));
                Assert.Equal((int)want[file]!["tokens"]!, ids.Length);
                var r = Perplexity.Evaluate(m, delta, ids, context, stride);
                Assert.Equal((int)want[file]!["windows"]!, r.Windows);
                double p = (double)want[file]!["perplexity"]!;
                Assert.True(Math.Abs(r.Perplexity - p) <= PerplexityBound * p, $"{name} {file}: perplexity {r.Perplexity:R}, PyTorch {p:R}");
            }
            var acc = ExactMatch.Evaluate(m, delta, tokenizer, items, maxNewTokens: 6);
            Assert.Equal((double)want["arithmetic.qa.jsonl accuracy"]!, acc.Accuracy, 2);
        }

        using (var m = LlamaModel.Load(baseDir, Device.Cpu, 512))
        {
            Check("base", m, null);
            using var delta = DeltaWeights.Load(deltaPath, baseDir, config, Device.Cpu);
            Check("compressed", m, delta);
        }
        using (var ft = LlamaModel.Load(Fixtures.Demo("finetuned"), Device.Cpu, 512))
            Check("finetuned", ft, null);
    }
}
