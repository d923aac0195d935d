using BitDeltaNative.Models;
using BitDeltaNative.Tests.Tensors;

namespace BitDeltaNative.Tests.Models;

/// <summary>
/// Scale distillation against PyTorch (tools/oracle/distill_golden.py, tests/fixtures/bitdelta/NAME/distill.safetensors):
/// the same student (base + α·sign(Δ), only α trained), teacher (the fine-tune), loss (F.mse_loss of f32 logits),
/// optimizer (torch.optim.AdamW defaults, CosineAnnealingLR) and calibration batches in the same order, on each tiny
/// model (GQA, Mistral's sliding window of 8 under 21-token samples, a tied and replaced embedding).
/// <para>Tolerances. The gradients dα at step 0 come out of a whole backward pass in f32 whose sums run in another
/// order than torch's; our logits equal torch's to about 1e-6 of their size, so the loss agrees to ~1e-6 and each
/// dα, a sum over ~10⁴ products, to ~1e-4 of the largest (bound 1e-3 relative to the largest |dα|). Adam's update is
/// m̂/(√v̂ + eps): its first step is lr·g/(|g| + eps), ±lr for any |g| ≫ eps = 1e-8, so α after one step must agree to
/// f32 rounding, ~1e-9 here (bound 1e-3·lr). Later updates are smooth functions of the gradients, so over N steps
/// the scales drift apart by at most ~N·lr times the gradients' relative error: bound 1e-3·N·lr absolute, against
/// changes of about N·lr (≈1e-3) that distillation makes. The loss curve is checked step by step to 1e-4 relative.</para>
/// </summary>
[Collection(IlgpuCpuCollection.Name)]
public class DistillationTests
{
    sealed record Golden(DistillOptions Options, int[] Stream, SafetensorsFile File) : IDisposable
    {
        public float Get(string key, string name) => File.Get($"{key}.{name}").ToFloatArray()[0];
        public float[] Loss => File.Get("loss").ToFloatArray();
        public float[] Lr => File.Get("lr").ToFloatArray();
        public void Dispose() => File.Dispose();
    }

    static Golden Load(string model)
    {
        var f = SafetensorsFile.Open(Fixtures.Dir("bitdelta", model, "distill.safetensors"));
        var o = new DistillOptions
        {
            Steps = int.Parse(f.Metadata["steps"]), Batch = int.Parse(f.Metadata["batch"]), SeqLen = int.Parse(f.Metadata["seq"]),
            Lr = double.Parse(f.Metadata["lr"], System.Globalization.CultureInfo.InvariantCulture),
        };
        // The oracle's samples are rows of calib_ids used in order: as one stream they are exactly our windows.
        return new Golden(o, f.Get("calib_ids").ToArray<int>(), f);
    }

    /// <summary>
    /// The managed CPU and CUDA (when present) run every model. ILGPU's CPU accelerator, which CI has for checking
    /// kernels, takes minutes per backward pass (each GEMM tile's barriers are thread switches there), so it runs one
    /// model for one step: Mistral's GQA and sliding window; every backward kernel is checked on it case by case in
    /// GradKernelTests besides.
    /// </summary>
    static TheoryData<string, string> Devices(bool oneStep)
    {
        var d = new TheoryData<string, string>();
        foreach (var m in Fixtures.Models)
        {
            d.Add(m, "cpu");
            foreach (var n in TestDevices.Names)
                if (n.Data == "cuda" || (oneStep && m == "mistral-bf16")) d.Add(m, n.Data);
        }
        return d;
    }

    public static TheoryData<string, string> FirstStepCases => Devices(oneStep: true);
    public static TheoryData<string, string> Cases => Devices(oneStep: false);

    static string Compress(TempDir dir, string model)
    {
        string path = dir.File("delta.safetensors");
        Compressor.Compress(Fixtures.Model(model), Fixtures.Dir("bitdelta", model), path);
        return path;
    }

    [Theory]
    [MemberData(nameof(FirstStepCases))]
    public void First_step_loss_and_scale_gradients_equal_pytorchs(string model, string device)
    {
        using var g = Load(model);
        using var dir = new TempDir();
        var dev = Device.Parse(device);
        string path = Compress(dir, model);
        var o = g.Options;
        var ids = Calibration.Batch(g.Stream, o.SeqLen, o.Batch, 0);
        using var teacherModel = LlamaModel.Load(Fixtures.Dir("bitdelta", model), dev, o.SeqLen);
        using var teacher = TeacherLogits.Compute(teacherModel, s => Calibration.Batch(g.Stream, o.SeqLen, o.Batch, s), o with { Steps = 1 }, dir.File("t.tmp"));
        using var m = LlamaModel.Load(Fixtures.Model(model), dev, o.SeqLen);
        using var delta = DeltaWeights.Load(path, Fixtures.Model(model), m.Config, dev);
        using var distiller = new ScaleDistiller(m, delta, o.SeqLen);
        using var target = Tensor.Empty([ids.Length, m.Config.VocabSize], DType.F32, dev);
        teacher.Read(0, target, teacher.NewScratch());
        float loss = distiller.LossAndGrads(ids, o.Batch, target);

        Assert.True(Math.Abs(loss - g.Loss[0]) <= 1e-5 * g.Loss[0], $"loss {loss:R}, torch {g.Loss[0]:R}");
        double largest = distiller.Names.Max(n => Math.Abs(g.Get("grad0", n)));
        for (int i = 0; i < distiller.Names.Length; i++)
        {
            string n = distiller.Names[i];
            Assert.True(Math.Abs(distiller.Scales[i] - g.Get("alpha0", n)) <= 2e-7 * g.Get("alpha0", n), $"{n}: α0 {distiller.Scales[i]:R}, torch {g.Get("alpha0", n):R}");
            double want = g.Get("grad0", n), got = distiller.Grads[i];
            Assert.True(Math.Abs(got - want) <= 1e-3 * largest, $"{n}: dα {got:R}, torch {want:R} (largest |dα| {largest:G3})");
        }
    }

    [Theory]
    [MemberData(nameof(Cases))]
    public void Scales_and_loss_curve_after_all_steps_match_pytorchs(string model, string device)
    {
        using var g = Load(model);
        using var dir = new TempDir();
        var dev = Device.Parse(device);
        string path = Compress(dir, model);
        var o = g.Options;
        var steps = new List<(int, float)>();
        var r = Distillation.Run(Fixtures.Model(model), Fixtures.Dir("bitdelta", model), path, g.Stream, o, dev, dir.File("teacher.tmp"),
                                 onStep: (s, l) => steps.Add((s, l)));
        Assert.Equal(Enumerable.Range(0, o.Steps), steps.Select(s => s.Item1));
        Assert.False(File.Exists(dir.File("teacher.tmp")), "the teacher's logits file is scratch and must be gone");
        for (int s = 0; s < o.Steps; s++)
        {
            Assert.True(Math.Abs(r.Loss[s] - g.Loss[s]) <= 1e-4 * g.Loss[s], $"step {s}: loss {r.Loss[s]:R}, torch {g.Loss[s]:R}");
            Assert.True(Math.Abs(r.Lr[s] - g.Lr[s]) <= 1e-6 * o.Lr, $"step {s}: lr {r.Lr[s]:R}, torch {g.Lr[s]:R}");
        }
        double bound = 1e-3 * o.Steps * o.Lr;
        double moved = 0;
        foreach (var (n, a) in r.After)
        {
            float want = g.Get("alpha", n), start = g.Get("alpha0", n);
            moved = Math.Max(moved, Math.Abs(want - start));
            Assert.True(Math.Abs(a - want) <= bound, $"{n}: α {a:R}, torch {want:R} (started at {start:R}; bound {bound:G2})");
        }
        Assert.True(moved > 20 * bound, $"the scales barely moved ({moved:G3}): the comparison would show nothing");
        Assert.True(r.Loss[^1] < r.Loss[0], "distillation must lower the loss");
    }

    [Fact]
    public void One_step_moves_each_scale_by_the_learning_rate_as_torch_does()
    {
        // Adam's first step is lr·g/(|g| + eps): with the same gradient sign as torch, α1 = α0·(1 − lr·wd) ∓ lr exactly.
        using var g = Load("llama-f16");
        using var dir = new TempDir();
        string path = Compress(dir, "llama-f16");
        var o = g.Options with { Steps = 1 };
        var r = Distillation.Run(Fixtures.Model("llama-f16"), Fixtures.Dir("bitdelta", "llama-f16"), path, g.Stream, o, Device.Cpu, dir.File("t.tmp"));
        foreach (var (n, a) in r.After)
        {
            // With Steps = 1 the cosine schedule still runs step 0 at the full lr, as torch's first step did.
            float want = g.Get("alpha1", n);
            Assert.True(Math.Abs(a - want) <= 1e-3 * o.Lr, $"{n}: α after one step {a:R}, torch {want:R}");
        }
    }

    [Fact]
    public void Demo_calibration_text_gives_pytorchs_first_losses()
    {
        // demo/oracle-distill.json: PyTorch distilled the demo pair on calib.stories.txt tokenized by sentencepiece and
        // packed into 128-token windows. Our tokenizer and packing must give the same batches: the first two losses
        // (the second after one update at the full lr, which a 2-step cosine run also uses) agree.
        var oracle = System.Text.Json.Nodes.JsonNode.Parse(File.ReadAllText(Fixtures.Demo("oracle-distill.json")))!;
        var run = oracle["runs"]!["calib.stories.txt"]!;
        var config = LlamaConfig.Load(Fixtures.Demo("base"));
        var stream = Tokenizer.Load(Fixtures.Demo("base"), config).Encode(Perplexity.ReadText(Fixtures.Demo("data", "calib.stories.txt")));
        Assert.Equal((int)run["calibration tokens"]!, stream.Length);
        using var dir = new TempDir();
        string path = dir.File("delta.safetensors");
        Compressor.Compress(Fixtures.Demo("base"), Fixtures.Demo("finetuned"), path);
        var o = new DistillOptions { Steps = 2, Batch = (int)oracle["batch"]!, SeqLen = (int)oracle["seq"]!, Lr = (double)oracle["lr"]! };
        var r = Distillation.Run(Fixtures.Demo("base"), Fixtures.Demo("finetuned"), path, stream, o, Device.Cpu, dir.File("t.tmp"));
        for (int s = 0; s < 2; s++)
        {
            double want = (double)run["loss"]![s]!;
            Assert.True(Math.Abs(r.Loss[s] - want) <= 1e-4 * want, $"step {s}: loss {r.Loss[s]:R}, torch {want:R}");
        }
    }
}
