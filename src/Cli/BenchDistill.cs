using System.CommandLine;
using System.Diagnostics;
using BitDeltaNative.Models;

namespace BitDeltaNative;

public static partial class Cli
{
    /// <summary>
    /// Seconds per scale-distillation step and peak device memory at a given batch (the 7B measurement): the
    /// student (base + delta) runs forward and backward on random calibration ids against random teacher logits
    /// (their values do not change the work); with --finetuned the teacher's logit pass is timed too.
    /// </summary>
    static Command BenchDistillCommand()
    {
        var baseDir = new Option<string>("--base") { Description = "the base model's Hugging Face folder", Required = true };
        var delta = new Option<string>("--delta") { Description = "a delta file of that base (bitdelta compress)", Required = true };
        var ft = new Option<string>("--finetuned") { Description = "also time the teacher pass of this fine-tune" };
        var batch = new Option<int>("--batch") { Description = "calibration samples per step", DefaultValueFactory = _ => 4 };
        var seqLen = new Option<int>("--seq-len") { Description = "tokens per sample", DefaultValueFactory = _ => 128 };
        var steps = new Option<int>("--steps") { Description = "timed steps (after one warm-up step)", DefaultValueFactory = _ => 5 };
        var cmd = new Command("distill", "Time scale-distillation steps (forward + backward + AdamW) and measure peak device memory.");
        foreach (var o in new Option[] { baseDir, delta, ft, batch, seqLen, steps, DeviceOption }) cmd.Options.Add(o);
        cmd.SetAction(r => Guard(() =>
        {
            var dev = Device.Parse(r.GetValue(DeviceOption)!);
            var o = new DistillOptions { Steps = r.GetValue(steps), Batch = r.GetValue(batch), SeqLen = r.GetValue(seqLen) };
            o.Validate();
            string b = r.GetValue(baseDir)!;
            var rng = new Random(1);
            var config = LlamaConfig.Load(b);
            int rows = o.Batch * o.SeqLen;
            int[] Ids(int _) => Enumerable.Range(0, rows).Select(_ => rng.Next(config.VocabSize)).ToArray();
            Console.WriteLine($"device {dev}; batch {o.Batch} x {o.SeqLen} tokens; {o.Steps} timed steps");
            if (r.GetValue(ft) is { } ftDir)
            {
                using var teacherModel = LlamaModel.Load(ftDir, dev, o.SeqLen, ProgressLine("loading the fine-tune"));
                var sw = Stopwatch.StartNew();
                using var t = TeacherLogits.Compute(teacherModel, Ids, o, Path.Combine(Path.GetTempPath(), $"bitdelta-bench-teacher-{Environment.ProcessId}.tmp"));
                Console.WriteLine($"teacher logits: {sw.Elapsed.TotalSeconds / o.Steps:F3} s a step, {(long)rows * config.VocabSize * 4 / 1e6:F0} MB each (f32)");
            }
            dev.Pool?.Trim();
            var load = Stopwatch.StartNew();
            using var model = LlamaModel.Load(b, dev, o.SeqLen, ProgressLine("loading the base"));
            using var d = DeltaWeights.Load(r.GetValue(delta)!, b, model.Config, dev);
            Console.WriteLine($"loaded base + delta in {load.Elapsed.TotalSeconds:F1} s; device memory in use {(dev.Pool?.BytesInUse ?? 0) / 1e9:F2} GB");
            using var distiller = new ScaleDistiller(model, d, o.SeqLen);
            var logits = new float[(long)rows * config.VocabSize];
            for (long i = 0; i < logits.Length; i++) logits[i] = (float)(rng.NextDouble() * 4 - 2);
            using var teacher = Tensor.From(logits, [rows, config.VocabSize], dev);
            distiller.Step(Ids(0), o.Batch, teacher, 1e-4);   // warm-up: kernel compilation, pool fill
            dev.Synchronize();
            dev.Pool?.ResetPeak();
            var times = new List<double>();
            for (int s = 0; s < o.Steps; s++)
            {
                var sw = Stopwatch.StartNew();
                float loss = distiller.Step(Ids(s), o.Batch, teacher, 1e-4);   // reads the loss back: the step is complete
                times.Add(sw.Elapsed.TotalSeconds);
                Console.WriteLine($"step {s}: {times[^1]:F3} s, loss {loss:G4}");
            }
            Console.WriteLine($"distillation step: median {Median(times):F3} s ({rows / Median(times):F0} tokens/s); " +
                              (dev.Pool is { } p ? $"peak device memory in use {p.PeakBytesInUse / 1e9:F2} GB (weights, delta, activations, gradients, teacher block); " +
                                                   $"held from the driver {(p.BytesInUse + p.BytesCached) / 1e9:F2} GB" : "host run"));
            return 0;
        }));
        return cmd;
    }
}
