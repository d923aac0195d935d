using System.CommandLine;
using System.Diagnostics;
using BitDeltaNative.Models;

namespace BitDeltaNative;

public static partial class Cli
{
    static Command CompressCommand()
    {
        var baseDir = new Option<string>("--base") { Description = "the base model's Hugging Face folder", Required = true };
        var ft = new Option<string>("--finetuned") { Description = "the fine-tune's Hugging Face folder (same architecture and shapes)", Required = true };
        var output = new Option<string>("--out") { Description = "output folder; the delta is written there as delta.safetensors", Required = true };
        var saveFull = new Option<bool>("--save-full-model") { Description = "also write the compressed fine-tune as an ordinary Hugging Face folder, OUT/model (linears W_base + α·sign rounded to the fine-tune's dtype), for tools that cannot read deltas" };
        var calib = new Option<string>("--calib") { Description = "calibration text (.txt, or .jsonl of {\"text\": …}) for scale distillation: the scales α are then trained so the compressed model's logits match the fine-tune's (arXiv 2402.10193 §3.2)" };
        var steps = new Option<int?>("--steps") { Description = "distillation steps (default 200 with --calib; 0 skips distillation)" };
        var batch = new Option<int>("--batch") { Description = "calibration samples per step", DefaultValueFactory = _ => 4 };
        var seqLen = new Option<int>("--seq-len") { Description = "tokens per calibration sample", DefaultValueFactory = _ => 128 };
        var lr = new Option<double>("--lr") { Description = "AdamW learning rate (cosine-annealed to 0 over the steps; torch's other defaults)", DefaultValueFactory = _ => 1e-4 };
        var codec = new Option<string>("--codec") { Description = "bitdelta (1 bit a weight, arXiv 2402.10193), lowrank-mp (SVD, singular vectors at 8/3/2 bits, Delta-CoMe, arXiv 2406.08903) or sparse-lowbit (2:4 sparse, 2 or 4 bits, zstd; DeltaZip, arXiv 2312.05215)", DefaultValueFactory = _ => "bitdelta" };
        var bits = new Option<string?>("--bits") { Description = "lowrank-mp: bits per slice, largest singular values first (default 8,3,2); sparse-lowbit: 2 or 4 (default 2)" };
        var ranks = new Option<string?>("--ranks") { Description = "lowrank-mp: ranks of every slice but the last, which fills the budget of 1 bit a weight (default 2,32)" };
        var group = new Option<int>("--group") { Description = "lowrank-mp, sparse-lowbit: quantization group along each row", DefaultValueFactory = _ => 128 };
        var budget = new Option<double>("--budget") { Description = "lowrank-mp: bits a weight for codes, scales, zeros and singular values together (1: the size of a bitdelta file)", DefaultValueFactory = _ => 1.0 };
        var noZstd = new Option<bool>("--no-zstd") { Description = "sparse-lowbit: store the packed tensors as they are, without the zstd stage (larger; for readers without zstd)" };
        var calibSamples = new Option<int>("--calib-samples") { Description = "lowrank-mp, sparse-lowbit: calibration windows of --seq-len tokens for GPTQ's Hessians", DefaultValueFactory = _ => 128 };
        var cmd = new Command("compress", "Compress a fine-tune into a delta over its base. bitdelta (default, arXiv 2402.10193): packed signs of W_ft − W_base and one scale per linear, mean(|Δ|) (§3.1), then with --calib the scales distilled against the fine-tune's logits (§3.2). lowrank-mp and sparse-lowbit: the codecs of Delta-CoMe and DeltaZip, with --calib quantized by GPTQ / SparseGPT against the fine-tune's activations. Other tensors kept where they differ.");
        foreach (var o in new Option[] { baseDir, ft, output, codec, calib, steps, batch, seqLen, lr, bits, ranks, budget, group, calibSamples, noZstd, saveFull, DeviceOption }) cmd.Options.Add(o);
        cmd.SetAction(r => Guard(() =>
        {
            string codecName = r.GetValue(codec)!;
            if (!DeltaFile.KnownCodecs.Contains(codecName)) throw new BitDeltaException($"--codec {codecName}: expected one of {string.Join(", ", DeltaFile.KnownCodecs)}");
            if (codecName != BitDelta.Codec) return CompressCodec(r, codecName, baseDir, ft, output, calib, steps, seqLen, bits, ranks, budget, group, calibSamples, noZstd, saveFull);
            if (r.GetValue(noZstd)) throw new BitDeltaException("--no-zstd is for --codec sparse-lowbit (bitdelta has no zstd stage)");
            if (r.GetValue(bits) != null || r.GetValue(ranks) != null) throw new BitDeltaException("--bits and --ranks are for --codec lowrank-mp and sparse-lowbit; bitdelta is 1 bit a weight");
            string? calibFile = r.GetValue(calib);
            int nSteps = r.GetValue(steps) ?? (calibFile != null ? 200 : 0);
            if (nSteps < 0) throw new BitDeltaException($"--steps must be 0 or more, got {nSteps}");
            if (nSteps > 0 && calibFile == null) throw new BitDeltaException($"--steps {nSteps}: distillation needs calibration text; give --calib FILE");
            var distill = new DistillOptions { Steps = nSteps, Batch = r.GetValue(batch), SeqLen = r.GetValue(seqLen), Lr = r.GetValue(lr) };
            if (nSteps > 0) distill.Validate();
            if (calibFile != null && !File.Exists(calibFile)) throw new BitDeltaException($"--calib {calibFile}: no such file");
            string b = r.GetValue(baseDir)!, f = r.GetValue(ft)!, outDir = r.GetValue(output)!;
            string outFull = Path.GetFullPath(outDir);
            if (outFull == Path.GetFullPath(b) || outFull == Path.GetFullPath(f))
                throw new BitDeltaException($"--out {outDir}: is an input folder; choose another so nothing you gave is overwritten");
            string path = Path.Combine(outDir, "delta.safetensors");
            if (File.Exists(path)) throw new BitDeltaException($"--out {outDir}: delta.safetensors exists already; remove it or choose another folder");
            string fullDir = Path.Combine(outDir, "model");
            bool full = r.GetValue(saveFull);
            if (full && (Directory.Exists(fullDir) || File.Exists(fullDir))) throw new BitDeltaException($"--out {outDir}: model/ exists already; remove it or choose another folder");
            string lossCsv = Path.Combine(outDir, "distill-loss.csv"), lossPng = Path.Combine(outDir, "distill-loss.png");
            if (nSteps > 0)
                foreach (var p in new[] { lossCsv, lossPng })
                    if (File.Exists(p)) throw new BitDeltaException($"--out {outDir}: {Path.GetFileName(p)} exists already; remove it or choose another folder");
            // The device and the calibration text are checked before the (long) binarization.
            var dev = Device.Parse(r.GetValue(DeviceOption)!);
            int[]? stream = nSteps > 0 ? CalibrationStream(b, calibFile!, distill) : null;
            var sw = Stopwatch.StartNew();
            // With distillation the binarized delta is a scratch file until its scales are trained.
            string binarized = nSteps > 0 ? Path.Combine(outDir, $".delta.binarized-{Environment.ProcessId}.safetensors") : path;
            try
            {
                var report = Compressor.Compress(b, f, binarized, ProgressLine("binarizing tensors"));
                Console.WriteLine($"{(nSteps > 0 ? "binarized" : $"wrote {report.DeltaPath}:")} {report.Compressed} linears, {report.Replaced} other tensors kept, " +
                                  $"{report.DeltaBytes / 1e6:F2} MB against the fine-tune's {report.FineTuneBytes / 1e6:F2} MB: {report.Ratio:F1}x smaller ({sw.Elapsed.TotalSeconds:F1} s)");
                if (stream != null) Distil(b, f, binarized, path, calibFile!, stream, distill, dev, lossCsv, lossPng);
            }
            finally
            {
                if (binarized != path) File.Delete(binarized);
            }
            if (full)
            {
                sw.Restart();
                FullModel.Save(b, path, f, fullDir, ProgressLine("writing the full model"));
                Console.WriteLine($"wrote {fullDir}: the compressed fine-tune as a Hugging Face folder ({sw.Elapsed.TotalSeconds:F1} s)");
            }
            return 0;
        }));
        return cmd;
    }

    /// <summary>compress --codec lowrank-mp | sparse-lowbit: GPTQ's Hessians from the fine-tune on --calib (when given),
    /// then every linear through the codec.</summary>
    static int CompressCodec(ParseResult r, string codecName, Option<string> baseDir, Option<string> ft, Option<string> output, Option<string> calib,
                             Option<int?> steps, Option<int> seqLen, Option<string?> bits, Option<string?> ranks, Option<double> budget, Option<int> group,
                             Option<int> calibSamples, Option<bool> noZstd, Option<bool> saveFull)
    {
        if (r.GetValue(steps) is int st && st != 0) throw new BitDeltaException($"--steps: scale distillation is for --codec bitdelta; {codecName} is training-free");
        bool lowRank = codecName == Models.Codecs.LowRankMp.Codec;
        var o = new CodecOptions { Codec = codecName, Group = r.GetValue(group), Budget = r.GetValue(budget) };
        if (o.Group < 1) throw new BitDeltaException($"--group must be positive, got {o.Group}");
        if (o.Codec == Models.Codecs.SparseLowBit.Codec && o.Group % 4 != 0)
            throw new BitDeltaException($"--group {o.Group}: sparse-lowbit needs a multiple of 4 (its groups of inputs hold whole groups of four)");
        if (!(o.Budget > 0) || o.Budget > 16) throw new BitDeltaException($"--budget must be in (0, 16] bits a weight, got {o.Budget}");
        if (!lowRank && r.GetResult(budget) is { Implicit: false }) throw new BitDeltaException("--budget is for --codec lowrank-mp (sparse-lowbit's size follows from 2:4 and --bits)");
        if (r.GetValue(noZstd))
        {
            if (codecName != Models.Codecs.SparseLowBit.Codec) throw new BitDeltaException($"--no-zstd is for --codec sparse-lowbit ({codecName} has no zstd stage)");
            o = o with { Zstd = false };
        }
        if (r.GetValue(bits) is { } bt)
        {
            var list = IntList("--bits", bt, 1, 8, "bit widths 1 to 8");
            if (lowRank) o = o with { SliceBits = list.Length > 0 ? list : throw new BitDeltaException("--bits: give at least one bit width") };
            else if (list.Length != 1 || (list[0] != 2 && list[0] != 4)) throw new BitDeltaException($"--bits {bt}: sparse-lowbit takes 2 or 4");
            else o = o with { Bits = list[0] };
        }
        if (r.GetValue(ranks) is { } rk)
        {
            if (!lowRank) throw new BitDeltaException("--ranks is for --codec lowrank-mp");
            o = o with { FixedRanks = IntList("--ranks", rk, 0, 1 << 20, "ranks 0 or more") };
        }
        if (lowRank && o.FixedRanks.Length >= o.SliceBits.Length)
            throw new BitDeltaException($"--ranks gives {o.FixedRanks.Length} ranks for {o.SliceBits.Length} slices of --bits; the last slice's rank fills the budget, so give one fewer");
        string? calibFile = r.GetValue(calib);
        if (calibFile != null && !File.Exists(calibFile)) throw new BitDeltaException($"--calib {calibFile}: no such file");
        int samples = r.GetValue(calibSamples), seq = r.GetValue(seqLen);
        if (samples < 1 || seq < 2) throw new BitDeltaException("--calib-samples must be positive and --seq-len at least 2");
        string b = r.GetValue(baseDir)!, f = r.GetValue(ft)!, outDir = r.GetValue(output)!;
        string outFull = Path.GetFullPath(outDir);
        if (outFull == Path.GetFullPath(b) || outFull == Path.GetFullPath(f))
            throw new BitDeltaException($"--out {outDir}: is an input folder; choose another so nothing you gave is overwritten");
        string path = Path.Combine(outDir, "delta.safetensors"), fullDir = Path.Combine(outDir, "model");
        if (File.Exists(path)) throw new BitDeltaException($"--out {outDir}: delta.safetensors exists already; remove it or choose another folder");
        bool full = r.GetValue(saveFull);
        if (full && (Directory.Exists(fullDir) || File.Exists(fullDir))) throw new BitDeltaException($"--out {outDir}: model/ exists already; remove it or choose another folder");
        var dev = Device.Parse(r.GetValue(DeviceOption)!);
        var sw = Stopwatch.StartNew();
        Dictionary<(int, int), double[]>? hessians = null;
        string? calibDesc = null;
        if (calibFile != null)
        {
            var stream = CalibrationStream(b, calibFile, new DistillOptions { SeqLen = seq });
            using var model = LlamaModel.Load(f, dev, seq, ProgressLine("loading the fine-tune"));
            hessians = Models.Codecs.Hessians.Collect(model, stream, samples, seq, ProgressLine("calibration"));
            int used = Math.Min(samples, Calibration.Samples(stream.Length, seq));
            calibDesc = $"{Path.GetFileName(calibFile)}: {used} windows of {seq} tokens through the fine-tune";
            Console.WriteLine($"calibration: {calibDesc} on {dev} ({sw.Elapsed.TotalSeconds:F1} s)");
        }
        else Console.WriteLine($"no --calib: {codecName} rounds to nearest per group (GPTQ needs calibration activations)");
        Directory.CreateDirectory(outDir);
        sw.Restart();
        var report = CodecCompressor.Compress(b, f, path, o, hessians, calibDesc, ProgressLine($"compressing ({codecName})"));
        Console.WriteLine($"wrote {report.DeltaPath}: {report.Compressed} linears ({codecName}{(lowRank ? $", bits {string.Join("/", o.SliceBits)} within {o.Budget:G3} bits a weight" : $", 2:4 at {o.Bits} bits{(o.Zstd ? ", zstd" : ", no zstd stage")}")}, group {o.Group}, " +
                          $"{(hessians != null ? "GPTQ" : "round to nearest")}), {report.Replaced} other tensors kept, {report.DeltaBytes / 1e6:F2} MB against the fine-tune's " +
                          $"{report.FineTuneBytes / 1e6:F2} MB: {report.Ratio:F1}x smaller ({sw.Elapsed.TotalSeconds:F1} s)");
        if (full)
        {
            sw.Restart();
            FullModel.Save(b, path, f, fullDir, ProgressLine("writing the full model"));
            Console.WriteLine($"wrote {fullDir}: the compressed fine-tune as a Hugging Face folder ({sw.Elapsed.TotalSeconds:F1} s)");
        }
        return 0;
    }

    /// <summary>The calibration text as tokens of the base's tokenizer (BOS first, as eval reads text).</summary>
    static int[] CalibrationStream(string baseDir, string calibFile, DistillOptions o)
    {
        var config = LlamaConfig.Load(baseDir);
        if (o.SeqLen > config.MaxPositionEmbeddings)
            throw new BitDeltaException($"--seq-len {o.SeqLen} is past {baseDir}/config.json's max_position_embeddings of {config.MaxPositionEmbeddings}");
        var stream = Tokenizer.Load(baseDir, config).Encode(Perplexity.ReadText(calibFile, "--calib"));
        if (Calibration.Samples(stream.Length, o.SeqLen) == 0)
            throw new BitDeltaException($"--calib {calibFile}: {stream.Length} tokens, shorter than one sample of --seq-len {o.SeqLen}");
        return stream;
    }

    /// <summary>Scale distillation of the binarized delta at <paramref name="binarized"/> into <paramref name="path"/>,
    /// with the loss curve beside it as CSV and PNG.</summary>
    static void Distil(string baseDir, string ftDir, string binarized, string path, string calibFile, int[] stream, DistillOptions o, Device dev,
                       string lossCsv, string lossPng)
    {
        int samples = Calibration.Samples(stream.Length, o.SeqLen);
        int needed = o.Steps * o.Batch;
        Console.WriteLine($"distilling on {calibFile}: {stream.Length} tokens, {samples} samples of {o.SeqLen}" +
                          (samples < needed ? $" (the {needed} that {o.Steps} steps × {o.Batch} use go round them {(double)needed / samples:F1} times)" : "") +
                          $"; {o.Steps} steps, lr {o.Lr:G3}, on {dev}");
        string scratch = Path.Combine(Path.GetDirectoryName(Path.GetFullPath(path))!, $".teacher-logits-{Environment.ProcessId}.tmp");
        var line = new LossLine(o.Steps);
        var report = Distillation.Run(baseDir, ftDir, binarized, stream, o, dev, scratch, ProgressLine("teacher logits"), line.Step);
        int last = o.Steps - 1;
        var meta = new Dictionary<string, string>
        {
            ["distillation"] = System.Text.Json.JsonSerializer.Serialize(new
            {
                calibration = Path.GetFileName(calibFile), tokens = stream.Length, steps = o.Steps, batch = o.Batch, seq_len = o.SeqLen, lr = o.Lr,
                optimizer = "AdamW (torch defaults), cosine annealing", loss_first = report.Loss[0], loss_last = report.Loss[last],
            }),
        };
        using (var d = DeltaFile.Open(binarized)) d.WriteWithScales(path, report.After, meta);
        AtomicFile.WriteAllText(lossCsv, "step,lr,loss\n" + string.Concat(Enumerable.Range(0, o.Steps).Select(s =>
            FormattableString.Invariant($"{s},{report.Lr[s]:R},{report.Loss[s]:R}\n"))));
        Charts.Png.Write(lossPng, Charts.LossPlot.Draw(Path.GetFileName(path), report.Loss, o));
        double mean10 = report.Loss.TakeLast(Math.Max(1, o.Steps / 10)).Average();
        Console.WriteLine($"wrote {path}: scales distilled; loss {report.Loss[0]:G4} at step 0, {mean10:G4} over the last {Math.Max(1, o.Steps / 10)} steps " +
                          $"(teacher {report.TeacherSeconds:F1} s, training {report.TrainSeconds:F1} s = {report.TrainSeconds / o.Steps:F3} s a step" +
                          (report.PeakDeviceBytes > 0 ? $", peak device memory {report.PeakDeviceBytes / 1e9:F2} GB" : "") + ")");
        Console.WriteLine($"wrote {lossCsv} and {lossPng}");
    }

    /// <summary>The distillation progress line: steps done and the last loss, on stderr when it is a terminal.</summary>
    sealed class LossLine(int steps)
    {
        readonly Line bar = new("distilling");

        public void Step(int step, float loss)
        {
            if (Console.IsErrorRedirected)
            {
                // A log, not a terminal: a line every tenth of the run.
                if (step % Math.Max(1, steps / 10) == 0 || step == steps - 1)
                    Console.WriteLine($"step {step + 1}/{steps}: loss {loss:G5} ({bar.Elapsed.TotalSeconds:F1} s)");
                return;
            }
            bar.Report((step + 1, steps), $"loss {loss:G5} ");
        }
    }
}
