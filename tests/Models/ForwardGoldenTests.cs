using BitDeltaNative.Models;

namespace BitDeltaNative.Tests.Models;

/// <summary>
/// Our forward pass against Hugging Face transformers (tools/oracle/tiny_models.py): logits of tiny Llama,
/// Mistral (GQA, sliding window 8 shorter than the prompts) and Llama-3-style (llama3 RoPE, tied) models by
/// relative error, computed in f32 from the checkpoints' f16/bf16 weights; greedy continuations token for token
/// up to the first step where HF's top-2 margin is a near-tie. On the managed CPU device (CI) and on every ILGPU
/// test device (ILGPU's CPU accelerator; CUDA when present).
/// </summary>
[Collection(IlgpuCpuCollection.Name)]
public class ForwardGoldenTests
{
    const double LogitBound = 2e-3;
    /// <summary>f32 compute differs from HF's by ~1e-6 relative; a top-2 gap under this is a near-tie.</summary>
    const float NearTie = 1e-3f;

    /// <summary>Every model on the managed CPU device and on every ILGPU test device.</summary>
    public static TheoryData<string, string> Cases => Combine(TestDevices.Names.Select(n => n.Data));

    /// <summary>Generation runs hundreds of steps: on the managed CPU device and CUDA, not on ILGPU's CPU
    /// accelerator, which emulates each GPU thread with an OS thread (the logits test covers its kernels).</summary>
    public static TheoryData<string, string> GenerationCases => Combine(TestDevices.Names.Select(n => n.Data).Where(n => n != "ilgpu-cpu"));

    static TheoryData<string, string> Combine(IEnumerable<string> devices)
    {
        var d = new TheoryData<string, string>();
        var list = devices.ToList();
        foreach (var m in Fixtures.Models)
        {
            d.Add(m, "cpu");
            foreach (var name in list) d.Add(m, name);
        }
        return d;
    }

    sealed record Golden(int[] Ids, float[] Last, float[] First, int FirstRows, int[] Greedy, float[] Margin);

    static List<Golden> Goldens(string model)
    {
        using var f = SafetensorsFile.Open(Path.Combine(Fixtures.Model(model), "goldens.safetensors"));
        var list = new List<Golden>();
        for (int i = 0; f.Contains($"p{i}.ids"); i++)
            list.Add(new Golden(f.Get($"p{i}.ids").ToArray<int>(), f.Get($"p{i}.last_logits").ToFloatArray(),
                f.Get($"p{i}.first_logits").ToFloatArray(), f.Entry($"p{i}.first_logits").Shape[0],
                f.Get($"p{i}.greedy").ToArray<int>(), f.Get($"p{i}.greedy_margin").ToFloatArray()));
        return list;
    }

    [Theory]
    [MemberData(nameof(Cases))]
    public void Logits_match_transformers(string model, string device)
    {
        using var m = LlamaModel.Load(Fixtures.Model(model), Device.Parse(device));
        int vocab = m.Config.VocabSize;
        foreach (var g in Goldens(model))
        {
            int n = g.Ids.Length;
            using var cache = m.NewCache(1, n);
            using var logits = Tensor.Empty([n, vocab], DType.F32, m.Device);
            m.Forward(g.Ids, new int[n], Enumerable.Range(0, n).ToArray(), Enumerable.Range(0, n).ToArray(), cache, logits);
            var all = logits.ToFloatArray();
            double eLast = BitDeltaNative.Kernels.Check.RelativeError(all.AsSpan((n - 1) * vocab, vocab), g.Last);
            double eFirst = BitDeltaNative.Kernels.Check.RelativeError(all.AsSpan(0, g.FirstRows * vocab), g.First);
            Assert.True(eLast < LogitBound, $"{model} on {device}, prompt of {n}: last-token logits relative error {eLast:E2}");
            Assert.True(eFirst < LogitBound, $"{model} on {device}, prompt of {n}: first-rows logits relative error {eFirst:E2}");
        }
    }

    [Theory]
    [MemberData(nameof(GenerationCases))]
    public void Greedy_generation_matches_transformers_alone_and_batched(string model, string device)
    {
        using var m = LlamaModel.Load(Fixtures.Model(model), Device.Parse(device));
        var goldens = Goldens(model);
        var gen = new Generator(m);
        var alone = goldens.Select(g => gen.Generate([g.Ids], g.Greedy.Length, new SamplingOptions(), [])[0]).ToList();
        var batched = gen.Generate(goldens.Select(g => g.Ids).ToList(), 24, new SamplingOptions(), []);
        for (int i = 0; i < goldens.Count; i++)
        {
            var g = goldens[i];
            int compared = 0;
            for (int s = 0; s < g.Greedy.Length; s++)
            {
                if (g.Margin[s] < NearTie) break;   // HF itself is at a near-tie: the two may part from here on
                Assert.True(g.Greedy[s] == alone[i][s], $"{model} on {device}, prompt {i}: step {s} gave {alone[i][s]}, transformers {g.Greedy[s]} (margin {g.Margin[s]:G3})");
                compared++;
            }
            Assert.Equal(alone[i], batched[i]);
        }
    }
}
