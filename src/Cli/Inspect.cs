using System.CommandLine;
using System.Diagnostics;
using BitDeltaNative.Charts;

namespace BitDeltaNative;

public static partial class Cli
{
    static Command InspectCommand()
    {
        var path = new Argument<string>("path") { Description = "a .safetensors file or a Hugging Face model folder (single or sharded)" };
        var plot = new Option<string?>("--plot") { Description = "for a delta file: also draw its per-matrix scales as a PNG picture at this path (a new file; nothing is overwritten)" };
        var cmd = new Command("inspect", "Show what a safetensors file or checkpoint holds: tensors, dtypes, shapes, sizes, metadata.");
        cmd.Arguments.Add(path);
        cmd.Options.Add(plot);
        cmd.SetAction(r => Guard(() =>
        {
            string target = r.GetValue(path)!;
            string? png = r.GetValue(plot);
            bool delta = File.Exists(target) && IsDelta(target);
            if (png != null)
            {
                if (!delta) throw new BitDeltaException($"--plot: {target} is not a delta file (one written by bitdelta compress); only a delta's scales can be plotted");
                CheckNewPng(png);
            }
            if (delta) return InspectDelta(target, png);
            var sw = Stopwatch.StartNew();
            using var ck = Checkpoint.Open(target);
            double openMs = sw.Elapsed.TotalMilliseconds;
            foreach (var f in ck.Files)
            {
                Console.WriteLine($"{f.Path}: {f.Entries.Count} tensors, header {f.DataStart - 8} bytes");
                foreach (var (k, v) in f.Metadata) Console.WriteLine($"  metadata {k} = {v}");
            }
            foreach (var name in ck.Names.Order(StringComparer.Ordinal))
            {
                var e = ck.Entry(name);
                Console.WriteLine($"  {name,-60} {e.DType.SafetensorsName(),-5} {e.ShapeString,-20} {e.ByteLength,14:N0} B");
            }
            Console.WriteLine($"total {ck.TotalBytes / (1024.0 * 1024):N1} MiB in {ck.Files.Count} file(s); opened (memory-mapped) in {openMs:F1} ms");
            return 0;
        }));
        return cmd;
    }

    static bool IsDelta(string file)
    {
        using var f = SafetensorsFile.Open(file);
        return f.Metadata.TryGetValue("format", out var v) && v == Models.DeltaFile.FormatName;
    }

    /// <summary>A delta file: its codec, the base it belongs to, every compressed matrix with its scale, and
    /// what it keeps uncompressed.</summary>
    static int InspectDelta(string file, string? png)
    {
        using var d = Models.DeltaFile.Open(file);
        Console.WriteLine($"{file}: {d.Codec} delta, {d.ByteLength / 1e6:F2} MB");
        Console.WriteLine($"  base config hash {d.BaseConfigHash}");
        Console.WriteLine($"  base weights fingerprint {d.BaseWeightsFingerprint}");
        if (d.Codec != Models.BitDelta.Codec) return InspectCodec(d, file, png);
        Console.WriteLine($"  scales {d.ScalesOrigin()}");
        long dense = 0, signBytes = 0, kept = 0;
        foreach (var (name, shape) in d.Compressed.OrderBy(k => k.Key, StringComparer.Ordinal))
        {
            var (signs, scale) = d.BitDeltaLinear(name);
            using var _ = signs;
            dense += 2L * shape[0] * shape[1];
            signBytes += signs.ByteLength;
            Console.WriteLine($"  {name,-50} [{shape[0]}, {shape[1]}]  scale {scale:E4}  {signs.ByteLength,12:N0} B of signs");
        }
        kept = PrintKept(d);
        Console.WriteLine($"{d.Compressed.Count} matrices binarized: {signBytes / 1e6:F2} MB of signs for {dense / 1e6:F2} MB of 16-bit weights " +
                          $"({(signBytes > 0 ? (double)dense / signBytes : 0):F1}x); {d.Replaced.Count} tensors kept whole, {kept / 1e6:F2} MB; " +
                          $"file {d.ByteLength / 1e6:F2} MB against {(dense + kept) / 1e6:F2} MB for the same tensors uncompressed ({(double)(dense + kept) / d.ByteLength:F1}x)");
        if (png != null)
        {
            var canvas = ScalePlot.Draw(Path.GetFileName(file), d.Codec, d.Scales(), d.Distillation != null);
            long bytes = Png.Write(png, canvas);
            Console.WriteLine($"wrote {png}: {canvas.Width}x{canvas.Height} PNG of the scales, {bytes / 1024.0:F1} KiB");
        }
        return 0;
    }

    /// <summary>The tensors a delta keeps as the fine-tune has them, a line each; their bytes.</summary>
    static long PrintKept(Models.DeltaFile d)
    {
        long kept = 0;
        foreach (var name in d.Replaced)
        {
            using var t = d.ReplacedTensor(name);
            kept += t.ByteLength;
            Console.WriteLine($"  {name,-50} kept as in the fine-tune ({t.DType} {t.ShapeString}, {t.ByteLength,12:N0} B)");
        }
        return kept;
    }

    /// <summary>A lowrank-mp or sparse-lowbit delta: the codec's settings, each matrix's ranks and bits (or sparsity and
    /// bits) and bytes, and the bits a weight they come to.</summary>
    static int InspectCodec(Models.DeltaFile d, string file, string? png)
    {
        if (png != null) throw new BitDeltaException($"--plot draws a bitdelta delta's scales; {file} is a {d.Codec} delta");
        var ps = d.Params!;
        bool lowRank = d.Codec == Models.Codecs.LowRankMp.Codec;
        Console.WriteLine($"  quantizer {ps.Quantizer}{(ps.Calibration != null ? $" (calibration {ps.Calibration})" : " (round to nearest: no calibration)")}, " +
                          $"group {ps.Group}{(lowRank ? "" : $", 2:4 sparse at {ps.Bits} bits{(d.Zstd ? ", zstd" : ", no zstd stage")}")}");
        long weights = 0, factorBytes = 0, kept = 0;
        foreach (var (name, shape) in d.Compressed.OrderBy(k => k.Key, StringComparer.Ordinal))
        {
            weights += (long)shape[0] * shape[1];
            string what;
            long bytes;
            if (lowRank)
            {
                using var f = d.LowRankLinear(name);
                bytes = f.ByteLength;
                what = $"rank {f.Rank} of {Math.Min(shape[0], shape[1])}: {string.Join(" + ", f.Ranks.Select((r, s) => $"{r} at {f.Bits[s]} bits"))}";
            }
            else
            {
                using var f = d.SparseLinear(name);
                bytes = f.ByteLength;
                what = $"2:4 sparse ({shape[0] * (shape[1] / 2):N0} of {(long)shape[0] * shape[1]:N0} kept), {f.Bits}-bit values";
            }
            factorBytes += bytes;
            Console.WriteLine($"  {name,-50} [{shape[0]}, {shape[1]}]  {what}  {bytes,12:N0} B ({8.0 * bytes / ((long)shape[0] * shape[1]):F2} bits a weight)");
        }
        kept = PrintKept(d);
        Console.WriteLine($"{d.Compressed.Count} matrices compressed: {factorBytes / 1e6:F2} MB of codes and scales for {2 * weights / 1e6:F2} MB of 16-bit weights " +
                          $"({(factorBytes > 0 ? 8.0 * factorBytes / weights : 0):F2} bits a weight{(lowRank ? "" : ", before zstd")}); {d.Replaced.Count} tensors kept whole, " +
                          $"{kept / 1e6:F2} MB; file {d.ByteLength / 1e6:F2} MB against {(2 * weights + kept) / 1e6:F2} MB uncompressed ({(double)(2 * weights + kept) / d.ByteLength:F1}x)");
        return 0;
    }

    /// <summary>The --plot path must be a new .png file in a folder that exists: nothing the user has is
    /// overwritten, and no folder is made on a typo's behalf.</summary>
    static void CheckNewPng(string png)
    {
        if (!png.EndsWith(".png", StringComparison.OrdinalIgnoreCase)) throw new BitDeltaException($"--plot {png}: the picture is a PNG; give a path ending in .png");
        if (File.Exists(png) || Directory.Exists(png)) throw new BitDeltaException($"--plot {png}: exists already; choose another path (nothing is overwritten)");
        string dir = Path.GetDirectoryName(Path.GetFullPath(png))!;
        if (!Directory.Exists(dir)) throw new BitDeltaException($"--plot {png}: folder {dir} does not exist");
    }
}
