using System.CommandLine;
using System.Diagnostics;

namespace BitDeltaNative;

public static partial class Cli
{
    static Command InspectCommand()
    {
        var path = new Argument<string>("path") { Description = "a .safetensors file or a Hugging Face model folder (single or sharded)" };
        var cmd = new Command("inspect", "Show what a safetensors file or checkpoint holds: tensors, dtypes, shapes, sizes, metadata.");
        cmd.Arguments.Add(path);
        cmd.SetAction(r => Guard(() =>
        {
            var sw = Stopwatch.StartNew();
            using var ck = Checkpoint.Open(r.GetValue(path)!);
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
}
