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
        var steps = new Option<int>("--steps") { Description = "scale-distillation steps (distillation is not built yet: only 0 is accepted)", DefaultValueFactory = _ => 0 };
        var cmd = new Command("compress", "Compress a fine-tune into a 1-bit delta over its base (BitDelta, arXiv 2402.10193 §3.1): packed signs of W_ft − W_base and one scale mean(|Δ|) per linear; other tensors kept where they differ.");
        foreach (var o in new Option[] { baseDir, ft, output, steps, saveFull }) cmd.Options.Add(o);
        cmd.SetAction(r => Guard(() =>
        {
            if (r.GetValue(steps) != 0) throw new BitDeltaException("--steps: scale distillation is not built yet; use --steps 0");
            string b = r.GetValue(baseDir)!, f = r.GetValue(ft)!, outDir = r.GetValue(output)!;
            string outFull = Path.GetFullPath(outDir);
            if (outFull == Path.GetFullPath(b) || outFull == Path.GetFullPath(f))
                throw new BitDeltaException($"--out {outDir}: is an input folder; choose another so nothing you gave is overwritten");
            string path = Path.Combine(outDir, "delta.safetensors");
            if (File.Exists(path)) throw new BitDeltaException($"--out {outDir}: delta.safetensors exists already; remove it or choose another folder");
            string fullDir = Path.Combine(outDir, "model");
            bool full = r.GetValue(saveFull);
            if (full && (Directory.Exists(fullDir) || File.Exists(fullDir))) throw new BitDeltaException($"--out {outDir}: model/ exists already; remove it or choose another folder");
            var sw = Stopwatch.StartNew();
            var report = Compressor.Compress(b, f, path, ProgressLine("binarizing tensors"));
            Console.WriteLine($"wrote {report.DeltaPath}: {report.Compressed} linears binarized, {report.Replaced} other tensors kept, " +
                              $"{report.DeltaBytes / 1e6:F2} MB against the fine-tune's {report.FineTuneBytes / 1e6:F2} MB: {report.Ratio:F1}x smaller ({sw.Elapsed.TotalSeconds:F1} s)");
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
}
