using System.CommandLine;
using System.Diagnostics;
using System.Text.Json.Nodes;
using BitDeltaNative.Charts;
using BitDeltaNative.Models;

namespace BitDeltaNative;

public static partial class Cli
{
    /// <summary>The prompts the demo generates from: one for the base's stories, one for the fine-tune's arithmetic.</summary>
    static readonly string[] DemoPrompts = ["Once upon a time,", "Question: What is 23 + 45?\nAnswer:"];

    /// <summary>
    /// The main job on the shipped demo pair (demo/: a 4.7M-parameter Llama base trained on generated stories and
    /// its full fine-tune on arithmetic, made by tools/oracle/demo_pair.py): compress, draw the scales, distil them,
    /// evaluate base / fine-tune / compressed / distilled side by side beside PyTorch's numbers (demo/oracle.json,
    /// demo/oracle-distill.json), generate from each.
    /// </summary>
    static Command DemoCommand()
    {
        var demoDir = new Option<string?>("--demo") { Description = "the demo folder (default: demo/ of the repository, found from here upwards)" };
        var output = new Option<string?>("--out") { Description = "where to write the delta, the scale plot and eval.json (default: a new temporary folder)" };
        var cmd = new Command("demo", "Compress the shipped demo fine-tune, distil its scales, evaluate base / fine-tune / compressed / distilled side by side (perplexity and arithmetic accuracy, beside PyTorch's numbers), and generate from each.");
        cmd.Options.Add(demoDir);
        cmd.Options.Add(output);
        cmd.Options.Add(DeviceOption);
        cmd.SetAction(r => Guard(() =>
        {
            var dev = Device.Parse(r.GetValue(DeviceOption)!);
            string demo = r.GetValue(demoDir) ?? FindDemo();
            string baseDir = Path.Combine(demo, "base"), ftDir = Path.Combine(demo, "finetuned"), data = Path.Combine(demo, "data");
            foreach (var need in new[] { Path.Combine(baseDir, "config.json"), Path.Combine(ftDir, "config.json"), Path.Combine(data, "arithmetic.qa.jsonl") })
                if (!File.Exists(need)) throw new BitDeltaException($"--demo {demo}: {need} is missing");
            string outDir = r.GetValue(output) ?? Directory.CreateTempSubdirectory("bitdelta-demo-").FullName;
            string deltaPath = Path.Combine(outDir, "delta.safetensors");
            if (File.Exists(deltaPath)) throw new BitDeltaException($"--out {outDir}: delta.safetensors exists already; choose another folder");
            Console.WriteLine($"demo pair: {demo} (base trained on stories, fine-tune on arithmetic); device {dev}; output {outDir}");

            Console.WriteLine("\n1. compress (BitDelta: 1 sign bit per weight of every decoder linear, one scale per matrix)");
            var sw = Stopwatch.StartNew();
            var report = Compressor.Compress(baseDir, ftDir, deltaPath, ProgressLine("binarizing tensors"));
            Console.WriteLine($"   {report.DeltaPath}: {report.Compressed} linears binarized, {report.Replaced} tensors kept whole, " +
                              $"{report.DeltaBytes / 1e6:F2} MB against the fine-tune's {report.FineTuneBytes / 1e6:F2} MB ({report.Ratio:F1}x; the kept " +
                              $"embedding and head dominate at this size) in {sw.Elapsed.TotalSeconds:F1} s");
            using (var d = DeltaFile.Open(deltaPath))
            {
                string png = Path.Combine(outDir, "scales.png");
                Png.Write(png, ScalePlot.Draw(Path.GetFileName(deltaPath), d.Codec, d.Scales(), d.Distillation != null));
                Console.WriteLine($"   scales per layer and matrix drawn in {png}");
            }

            string calib = Path.Combine(data, "calib.stories.txt");
            string distilledDir = Path.Combine(outDir, "distilled"), distilledPath = Path.Combine(distilledDir, "delta.safetensors");
            var distill = new DistillOptions();
            Console.WriteLine($"\n1b. distil the scales (BitDelta §3.2): {distill.Steps} steps of {distill.Batch} x {distill.SeqLen} tokens of {Path.GetFileName(calib)} " +
                              "(stories only: generic text, as the paper calibrates on C4), matching the fine-tune's logits");
            Directory.CreateDirectory(distilledDir);
            Distil(baseDir, ftDir, deltaPath, distilledPath, calib, CalibrationStream(baseDir, calib, distill), distill, dev,
                   Path.Combine(distilledDir, "distill-loss.csv"), Path.Combine(distilledDir, "distill-loss.png"));

            Console.WriteLine("\n2. evaluate: perplexity (BitDelta's windows, context 256 + stride 128) and exact-match arithmetic accuracy");
            var spec = new EvalSpec(baseDir, ftDir, deltaPath, [Path.Combine(data, "stories.valid.txt"), Path.Combine(data, "arithmetic.valid.txt")],
                                    Path.Combine(data, "arithmetic.qa.jsonl"), 256, 128, 8, false, dev);
            var columns = RunEval(spec);
            JsonNode? oracle = File.Exists(Path.Combine(demo, "oracle.json")) ? JsonNode.Parse(File.ReadAllText(Path.Combine(demo, "oracle.json"))) : null;
            PrintEval(spec, columns, oracle);
            WriteEvalJson(Path.Combine(outDir, "eval.json"), spec, columns);
            if (oracle != null) Console.WriteLine($"   grey columns: PyTorch {oracle["torch"]} + transformers {oracle["transformers"]} on the same files (demo/oracle.json, {oracle["compute"]})");
            Console.WriteLine("   the distilled delta (the same files; grey: PyTorch's distillation of the same batches, demo/oracle-distill.json):");
            var distilledSpec = spec with { ModelDir = null, DeltaPath = distilledPath, SkipBase = true };
            string oracleDistill = Path.Combine(demo, "oracle-distill.json");
            JsonNode? distilledOracle = File.Exists(oracleDistill) && JsonNode.Parse(File.ReadAllText(oracleDistill))?["runs"]?[Path.GetFileName(calib)] is { } run
                ? new JsonObject { ["models"] = new JsonObject { ["compressed"] = run.DeepClone() } } : null;
            PrintEval(distilledSpec, RunEval(distilledSpec), distilledOracle);

            Console.WriteLine("\n3. generate (greedy, 40 tokens) from each");
            var tokenizer = Tokenizer.Load(baseDir, LlamaConfig.Load(baseDir));
            var prompts = DemoPrompts.Select(p => tokenizer.Encode(p)).ToList();
            void Show(string name, LlamaModel m, DeltaWeights? delta)
            {
                var outs = new Generator(m, delta).Generate(prompts, 40, new SamplingOptions(), tokenizer.EosIds);
                for (int i = 0; i < prompts.Count; i++)
                    Console.WriteLine($"   [{name}] {(DemoPrompts[i] + tokenizer.DecodeContinuation(outs[i])).Replace("\n", "\n   " + new string(' ', name.Length + 3))}");
            }
            using (var baseModel = LlamaModel.Load(baseDir, dev))
            {
                Show("base", baseModel, null);
                using (var delta = DeltaWeights.Load(deltaPath, baseDir, baseModel.Config, dev)) Show("compressed", baseModel, delta);
                using (var delta = DeltaWeights.Load(distilledPath, baseDir, baseModel.Config, dev)) Show("distilled", baseModel, delta);
            }
            using (var ft = LlamaModel.Load(ftDir, dev)) Show("fine-tune", ft, null);
            Console.WriteLine($"\nwrote {deltaPath}, scales.png and eval.json in {outDir}; the distilled delta and its loss curve in {distilledDir}");
            return 0;
        }));
        return cmd;
    }

    static string FindDemo()
    {
        foreach (var start in new[] { Directory.GetCurrentDirectory(), AppContext.BaseDirectory })
            for (var d = new DirectoryInfo(start); d != null; d = d.Parent)
                if (File.Exists(Path.Combine(d.FullName, "demo", "base", "config.json"))) return Path.Combine(d.FullName, "demo");
        throw new BitDeltaException("no demo/ folder found here or above; run from the repository or give --demo DIR");
    }
}
